"""Menon 2007 demosaicing benchmark: torch (:func:`menon2007`) against colour-demosaicing, speed and agreement.

Speed: a 20x1x128x128 float32 batch (the NIP training batch as a mosaic): our forward (no autograd), our
forward+backward, and colour-demosaicing on the same 20 mosaics one by one, in float32 (as the python ISP
runs it) and float64. Median over repeats, the methods interleaved in each repeat, after one warm-up.

Agreement: largest absolute difference to colour-demosaicing on the bundled photos (float64 against float64,
float32 against colour-demosaicing in float32), over all four CFA patterns.

    python benchmarks/demosaic.py                      # 2 threads, 7 repeats
    python benchmarks/demosaic.py --threads 1 --repeats 11 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from colour_demosaicing import demosaicing_CFA_Bayer_Menon2007

from neuralimaging.acquisition.bayer import CFA_PATTERNS, mosaic_rgb
from neuralimaging.acquisition.demosaic import menon2007
from neuralimaging.acquisition.isp import demosaic as isp_demosaic
from neuralimaging.photos import bundled_photos, load_photo


def timing(repeats: int, batch: int = 20, size: int = 128) -> dict[str, float]:
    """Median milliseconds per batch for each method (interleaved)."""
    x = torch.rand(batch, 1, size, size, generator=torch.Generator().manual_seed(0))

    def forward() -> None:
        with torch.no_grad():
            menon2007(x)

    def forward_backward() -> None:
        t = x.clone().requires_grad_()
        menon2007(t).sum().backward()

    def colour32() -> None:
        for mosaic in x[:, 0].numpy():
            isp_demosaic(mosaic, "RGGB")

    def colour64() -> None:
        for mosaic in x[:, 0].double().numpy():
            demosaicing_CFA_Bayer_Menon2007(mosaic, "RGGB")

    methods = {"ours forward": forward, "ours forward+backward": forward_backward,
               "colour-demosaicing float32": colour32, "colour-demosaicing float64": colour64}
    times: dict[str, list[float]] = {name: [] for name in methods}
    for i in range(repeats + 1):
        for name, method in methods.items():
            start = time.perf_counter()
            method()
            if i:
                times[name].append(1e3 * (time.perf_counter() - start))
    return {name: statistics.median(values) for name, values in times.items()}


def agreement() -> dict[str, float]:
    """Largest absolute difference to colour-demosaicing over the bundled photos and the four patterns."""
    worst = {"float64": 0.0, "float32": 0.0}
    for path in bundled_photos():
        photo = load_photo(path)
        h, w = photo.shape[0] // 2 * 2, photo.shape[1] // 2 * 2
        rgb = photo[:h, :w].transpose(2, 0, 1) / 255.0
        for pattern in CFA_PATTERNS:
            mosaic = mosaic_rgb(rgb, pattern)
            ref = demosaicing_CFA_Bayer_Menon2007(mosaic, pattern).transpose(2, 0, 1)
            ours = menon2007(torch.from_numpy(mosaic)[None, None], pattern)[0].numpy()
            worst["float64"] = max(worst["float64"], float(np.abs(ours - ref).max()))
            mosaic32 = mosaic.astype(np.float32)
            ours32 = menon2007(torch.from_numpy(mosaic32)[None, None], pattern)[0].numpy()
            worst["float32"] = max(worst["float32"], float(np.abs(ours32 - isp_demosaic(mosaic32, pattern)).max()))
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", type=Path, help="also save the numbers here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result = {"threads": args.threads, "load": os.getloadavg()[0], "timing_ms": timing(args.repeats)}
    result["max_abs_diff"] = agreement()
    for name, ms in result["timing_ms"].items():
        print(f"{name:28s} {ms:8.1f} ms")
    for dtype, diff in result["max_abs_diff"].items():
        print(f"max |ours - colour-demosaicing| {dtype}: {diff:.2e}")
    print(f"load average at start: {result['load']:.2f}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
