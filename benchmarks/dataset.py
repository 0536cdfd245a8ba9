"""Time the default dataset: virtual-camera synthesis + preparation, for one camera or all four.

Run by hand:  .venv/bin/python benchmarks/dataset.py [--cameras nikon-d90 ...] [--workers N] [--out DIR]
Prints, per camera: shots, megapixels, synth and prepare seconds (wall) and CPU seconds, and the PSNR between
the python and libraw pipelines on the first shot of every photo; then the totals.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from neuralimaging.acquisition.isp import develop
from neuralimaging.acquisition.virtual_camera import CAMERAS, shots_megapixels, synthesize
from neuralimaging.data.dataset import prepare
from neuralimaging.metrics import psnr


def _cpu() -> float:
    """CPU seconds of this process and its finished children (the preparation workers)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cameras", nargs="+", default=list(CAMERAS), choices=list(CAMERAS))
    parser.add_argument("--shots", type=int, default=8, help="shots per photo (default: 8, as make demo)")
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    parser.add_argument("--out", type=Path, default=None, help="keep the data here (default: a temporary folder)")
    parser.add_argument("--psnr-shots", type=int, default=1, metavar="K",
                        help="python vs libraw PSNR on the first K shots of every photo (0: skip)")
    args = parser.parse_args()
    root = args.out or Path(tempfile.mkdtemp(prefix="ni-dataset-"))
    print(f"load average before: {os.getloadavg()[0]:.2f}; workers: {args.workers}")
    totals = [0, 0.0, 0.0, 0.0, 0.0]
    psnrs: list[float] = []
    for name in args.cameras:
        cpu = _cpu()
        start = time.perf_counter()
        paths = synthesize("default", name, root / "raw" / name, shots_per_photo=args.shots, seed=0, overwrite=True)
        synth = time.perf_counter() - start
        shutil.rmtree(root / "prepared" / name, ignore_errors=True)
        start = time.perf_counter()
        report = prepare(root / "raw" / name, root / "prepared" / name, camera=name, workers=args.workers)
        prep = time.perf_counter() - start
        cpu = _cpu() - cpu
        mp = shots_megapixels(root / "raw" / name, paths)
        print(f"{name}: {len(paths)} shots, {mp:.1f} MP, synth {synth:.1f} s, prepare {prep:.1f} s "
              f"({report.train}/{report.val} split); CPU {cpu:.1f} s")
        if args.psnr_shots:
            chosen = [p for p in paths if int(p.stem.rsplit("_", 1)[1]) < args.psnr_shots]
            values = [psnr(torch.from_numpy(develop(p, "python")), torch.from_numpy(develop(p, "libraw"))) for p in chosen]
            psnrs += values
            print(f"  python vs libraw on {len(chosen)} shots: {min(values):.1f}-{max(values):.1f} dB, "
                  f"mean {np.mean(values):.1f} dB")
        totals = [totals[0] + len(paths), totals[1] + mp, totals[2] + synth, totals[3] + prep, totals[4] + cpu]
    print(f"total: {totals[0]} shots, {totals[1]:.1f} MP, synth {totals[2]:.1f} s, prepare {totals[3]:.1f} s, CPU {totals[4]:.1f} s; "
          f"load average after: {os.getloadavg()[0]:.2f}")
    if psnrs:
        print(f"python vs libraw, all cameras: {min(psnrs):.1f}-{max(psnrs):.1f} dB, mean {np.mean(psnrs):.1f} dB "
              f"(median {np.median(psnrs):.1f})")
    if args.out is None:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
