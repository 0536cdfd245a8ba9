"""Differentiable JPEG benchmark: fidelity against libjpeg (Pillow) and speed, next to kornia's dJPEG.

Fidelity: PSNR of each codec's decode against Pillow's decode of Pillow's encode at the same quality and
subsampling, on the bundled natural photos (centre crops of at most 512x512), for every quality in
{10, 30, 50, 75, 80, 90, 95}, both subsamplings, our rounding modes none/sin/soft/harmonic, ``float`` (exact
rounding but real-valued arithmetic: float DCT, no 8-bit sample rounding), and kornia's
``jpeg_codec_differentiable`` (which always uses 4:2:0, so it is compared with 4:2:0 only). "exact" in the
table means identical 8-bit decodes (infinite PSNR).

Speed: forward+backward on a 20x3x128x128 batch at quality 50 (median over repeats, interleaved, same run).

    python benchmarks/jpeg.py                  # full table and timing
    python benchmarks/jpeg.py --json out.json  # also save the numbers
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from kornia.enhance import jpeg_codec_differentiable

from neuralimaging.photos import find_photos, load_photo
from neuralimaging.distribution.jpeg import jpeg_compress, libjpeg_compress
from neuralimaging.metrics import psnr_per_image

QUALITIES = (10, 30, 50, 75, 80, 90, 95)
SUBSAMPLINGS = ("4:4:4", "4:2:0")
MODES = ("none", "sin", "soft", "harmonic")


def _crop(a: np.ndarray, size: int) -> torch.Tensor:
    h, w = min(size, a.shape[0]), min(size, a.shape[1])
    top, left = (a.shape[0] - h) // 2, (a.shape[1] - w) // 2
    return torch.from_numpy(a[top : top + h, left : left + w].copy()).permute(2, 0, 1)[None].float() / 255.0


def _kornia(x: torch.Tensor, quality: int) -> torch.Tensor:
    return jpeg_codec_differentiable(x, torch.tensor([float(quality)], dtype=x.dtype))


def fidelity(images: list[torch.Tensor]) -> list[dict[str, object]]:
    """Mean and minimum PSNR (dB) against libjpeg for every codec, quality and subsampling."""
    rows = []
    for subsampling in SUBSAMPLINGS:
        for quality in QUALITIES:
            refs = [libjpeg_compress(x, quality, subsampling=subsampling) for x in images]
            codecs = {m: (lambda x, m=m: jpeg_compress(x, quality, rounding=m, subsampling=subsampling)) for m in MODES}
            codecs["float"] = lambda x: jpeg_compress(x, quality, rounding="none", subsampling=subsampling, exact=False)
            if subsampling == "4:2:0":
                codecs["kornia"] = lambda x: _kornia(x, quality)
            for name, codec in codecs.items():
                with torch.no_grad():
                    values = [float(psnr_per_image(codec(x), ref)[0]) for x, ref in zip(images, refs)]
                rows.append(
                    {"subsampling": subsampling, "quality": quality, "codec": name,
                     "mean_psnr": statistics.fmean(values), "min_psnr": min(values)}
                )
    return rows


def timing(repeats: int, batch: int = 20, size: int = 128) -> dict[str, float]:
    """Median forward+backward seconds at quality 50 for each codec (interleaved, after 3 warm-ups)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 3, size, size, generator=gen)
    codecs = {"kornia (4:2:0)": lambda t: _kornia(t, 50)}
    for mode in ("sin", "soft", "harmonic"):
        for subsampling in SUBSAMPLINGS:
            codecs[f"ours {mode} {subsampling}"] = lambda t, m=mode, s=subsampling: jpeg_compress(
                t, 50, rounding=m, subsampling=s
            )
    times: dict[str, list[float]] = {name: [] for name in codecs}
    for i in range(repeats + 3):
        for name, codec in codecs.items():
            t = x.clone().requires_grad_()
            start = time.perf_counter()
            codec(t).square().sum().backward()
            if i >= 3:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(v) for name, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", default="default", help="folder of photos (default: the bundled ones)")
    parser.add_argument("--size", type=int, default=512, help="centre crop side (default: 512)")
    parser.add_argument("--repeats", type=int, default=20, help="timed repeats (default: 20)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default: 2)")
    parser.add_argument("--json", type=Path, help="also write the numbers to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    images = [_crop(load_photo(p), args.size) for p in find_photos(args.photos)]
    print(f"{len(images)} photos, centre crops <= {args.size}x{args.size}, torch {torch.__version__}, "
          f"{args.threads} threads")
    rows = fidelity(images)
    print("\nPSNR (dB) against Pillow libjpeg, mean over photos (min in brackets)")
    codecs = [*MODES, "float", "kornia"]
    print(f"{'sub':<7}{'q':>4}" + "".join(f"{c:>17}" for c in codecs))
    for subsampling in SUBSAMPLINGS:
        for quality in QUALITIES:
            cells = []
            for codec in codecs:
                row = next((r for r in rows if r["subsampling"] == subsampling and r["quality"] == quality
                            and r["codec"] == codec), None)
                if row is None:
                    cells.append("-")
                elif math.isinf(row["min_psnr"]):
                    cells.append("exact")
                else:
                    cells.append(f"{row['mean_psnr']:>8.2f} ({row['min_psnr']:5.2f})")
            print(f"{subsampling:<7}{quality:>4}" + "".join(f"{c:>17}" for c in cells))

    times = timing(args.repeats)
    print(f"\nforward+backward, 20x3x128x128, quality 50, median of {args.repeats} (seconds; ratio to kornia)")
    base = times["kornia (4:2:0)"]
    for name, seconds in times.items():
        print(f"{name:<24}{seconds:>9.4f}{seconds / base:>8.2f}x")
    if args.json:
        clean = [{k: ("inf" if isinstance(v, float) and math.isinf(v) else v) for k, v in r.items()} for r in rows]
        args.json.write_text(json.dumps({"fidelity": clean, "timing_s": times}, indent=2))


if __name__ == "__main__":
    main()
