"""``neuralimaging jpeg compare``: how close the differentiable JPEG is to libjpeg on given photos."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

from neuralimaging.cli._common import report_failures, run_batch
from neuralimaging.photos import find_photos, load_photo
from neuralimaging.device import resolve_device
from neuralimaging.distribution.jpeg import ROUNDING_MODES, SUBSAMPLING_MODES, compare_with_libjpeg
from neuralimaging.errors import InputError

__all__ = ["register", "run"]


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser("jpeg", parents=[common], help="differentiable JPEG tools")
    commands = parser.add_subparsers(dest="jpeg_command", metavar="JPEG_COMMAND", required=True)
    compare = commands.add_parser(
        "compare",
        parents=[common],
        help="PSNR and max abs difference between dJPEG and libjpeg (Pillow) decodes",
        description="Compress each photo with the differentiable JPEG and with Pillow's libjpeg at the same "
        "quality and subsampling; print the PSNR (dB) and the largest difference (8-bit levels) between "
        "the two decodes, per image and on average. Identical decodes have an infinite PSNR (null in JSON).",
    )
    compare.add_argument("images", nargs="+", help="photo files or folders ('default' = the bundled photos)")
    compare.add_argument("--quality", type=int, default=50, help="JPEG quality 1..100 (default: 50)")
    compare.add_argument("--subsampling", choices=SUBSAMPLING_MODES, default="4:4:4", help="chroma subsampling")
    compare.add_argument("--rounding", choices=ROUNDING_MODES, default="none", help="dJPEG rounding (default: none)")
    compare.add_argument("--json", action="store_true", help="print JSON instead of a table")
    compare.set_defaults(func=run)


def _expand(items: list[str]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """The photos the arguments name, and the arguments that name none (an empty folder, say) with the reason."""
    paths: list[Path] = []
    failures: list[tuple[Path, str]] = []
    for item in items:
        path = Path(item)
        try:
            paths.extend(find_photos(item) if item == "default" or path.is_dir() else [path])
        except InputError as error:
            failures.append((path, str(error).splitlines()[0]))
            print(f"failed: {path}: {failures[-1][1]}", file=sys.stderr)
    return paths, failures


def _number(value: float) -> float | None:
    return None if math.isinf(value) else round(value, 4)


def run(args: argparse.Namespace) -> int:
    if not 1 <= args.quality <= 100:
        raise InputError(f"--quality must be an integer in [1, 100], got {args.quality}")
    device = resolve_device(args.device)
    paths, empty = _expand(args.images)
    rows: list[dict[str, object]] = []

    def work(path: Path) -> None:
        image = torch.from_numpy(load_photo(path)).permute(2, 0, 1)[None].to(device, torch.float32) / 255.0
        result = compare_with_libjpeg(image, args.quality, rounding=args.rounding, subsampling=args.subsampling)
        rows.append(
            {"image": str(path), "psnr": float(result["psnr"][0]), "max_abs": round(float(result["max_abs"][0]), 3)}
        )

    failures = empty + run_batch(paths, work, desc="jpeg compare", name=lambda p: p.name)
    mean_psnr = sum(float(r["psnr"]) for r in rows) / len(rows) if rows else float("nan")  # type: ignore[arg-type]
    settings = {"quality": args.quality, "subsampling": args.subsampling, "rounding": args.rounding}
    if args.json:
        out = {
            **settings,
            "images": [{**r, "psnr": _number(float(r["psnr"]))} for r in rows],  # type: ignore[arg-type]
            "mean_psnr": _number(mean_psnr) if rows else None,
            "max_abs": max((float(r["max_abs"]) for r in rows), default=None),  # type: ignore[arg-type]
            "failed": [str(p) for p, _ in failures],
        }
        print(json.dumps(out, indent=2))
    else:
        print(f"dJPEG ({args.rounding}) vs libjpeg, quality {args.quality}, {args.subsampling}")
        print(f"{'image':<40}{'PSNR dB':>10}{'max abs':>10}")
        for r in rows:
            value, diff = float(r["psnr"]), float(r["max_abs"])  # type: ignore[arg-type]
            print(f"{Path(str(r['image'])).name:<40}{value:>10.2f}{diff:>10.0f}")
        if rows:
            worst = max(float(r["max_abs"]) for r in rows)  # type: ignore[arg-type]
            print(f"{'mean':<40}{mean_psnr:>10.2f}{worst:>10.0f}")
    return report_failures(failures, len(paths) + len(empty), "image")
