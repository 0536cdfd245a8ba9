"""``neuralimaging data``: virtual-camera RAW files (``synth``), training sets (``prepare``), ``cameras``."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from tqdm import tqdm

from neuralimaging.acquisition.isp import GAMMAS
from neuralimaging.acquisition.virtual_camera import (
    CAMERAS,
    ISO_SETTINGS,
    get_camera,
    shots_megapixels,
    synthesize,
    synthesize_flat_fields,
)
from neuralimaging.cli._common import report_failures
from neuralimaging.data.dataset import prepare
from neuralimaging.photos import find_photos

__all__ = ["register", "run_cameras", "run_prepare", "run_synth"]


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser("data", parents=[common], help="virtual-camera RAW files and training datasets")
    commands = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)

    synth = commands.add_parser(
        "synth",
        parents=[common],
        help="turn RGB photos into RAW (DNG) files of a virtual camera",
        description="Unprocess RGB photos (Brooks et al. 2019) into DNG files of a virtual camera: photos framed "
        "at their own pixel pitch (never resampled), lens blur and optical low-pass filter, real colour matrix, "
        "CFA, white balance, fixed PRNU, Poisson-Gaussian noise, black/white level. Rerunning keeps existing "
        "files.",
    )
    synth.add_argument("--camera", required=True, choices=[*CAMERAS, "all"], help="camera profile, or all")
    synth.add_argument("--photos", default="default", metavar="DIR|default",
                       help="folder of JPEG/PNG/TIFF photos, or default (photos bundled with installed packages)")
    synth.add_argument("--out", type=Path, default=None, metavar="DIR",
                       help="output folder (default: data/raw/CAMERA; with --camera all, DIR/CAMERA)")
    synth.add_argument("--shots", type=int, default=16, metavar="N", help="shots per photo (default: 16)")
    synth.add_argument("--seed", type=int, default=0, help="seed of the per-shot randomness (default: 0)")
    synth.add_argument("--size", default=None, metavar="HxW", help="every shot exactly this size, e.g. 480x640 (default: the profile's sensor, each shot as large as "
                       "its photo allows)")
    synth.add_argument("--iso", choices=ISO_SETTINGS, default=None,
                       help="noise level: random per shot, or base (the profile's lowest); default: random, "
                       "base with --flat-field")
    synth.add_argument("--flat-field", type=int, default=None, metavar="N",
                       help="write N flat-field shots (bright, smooth scenes: PRNU reference images) instead of "
                       "photo shots (default folder: data/flat/CAMERA)")
    synth.add_argument("--overwrite", action="store_true", help="rewrite existing files")
    synth.set_defaults(func=run_synth)

    prep = commands.add_parser(
        "prepare",
        parents=[common],
        help="turn a folder of RAW files into a training set (RGGB stacks + python-ISP targets)",
        description="Normalize RAW files into RGGB stacks, develop python-ISP targets, write metadata and a "
        "deterministic train/validation/test split by scene. Resumable: finished files are skipped; broken files are reported "
        "and skipped (exit code 1).",
    )
    prep.add_argument("--raw-dir", type=Path, required=True, metavar="DIR", help="folder of RAW files")
    prep.add_argument("--camera", default=None, help="camera name recorded in the dataset (default: from the files)")
    prep.add_argument(
        "--out", type=Path, default=None, metavar="DIR", help="output folder (default: data/prepared/CAMERA)"
    )
    prep.add_argument("--bits", type=int, choices=(8, 16), default=8, help="target PNG bits (default: 8, rounded)")
    prep.add_argument("--rggb-dtype", choices=("float32", "uint16"), default="float32", help="storage of the stacks")
    prep.add_argument("--gamma", choices=GAMMAS, default="2.2", help="target tone curve (default: 2.2)")
    prep.add_argument("--val-fraction", type=float, default=0.15, help="validation share by scene (default: 0.15)")
    prep.add_argument("--test-fraction", type=float, default=0.2, help="test share by scene (default: 0.2)")
    prep.add_argument("--seed", type=int, default=0, help="seed of the split (default: 0)")
    prep.add_argument(
        "--workers", type=int, default=0, metavar="N", help="processes (default: 0 = number of CPUs, max 4)"
    )
    prep.set_defaults(func=run_prepare)

    cams = commands.add_parser("cameras", parents=[common], help="list the virtual camera profiles")
    cams.set_defaults(func=run_cameras)


def run_synth(args: argparse.Namespace) -> int:
    names = list(CAMERAS) if args.camera == "all" else [args.camera]
    flat = args.flat_field is not None
    sources = [] if flat else find_photos(args.photos)
    failures: dict[Path, str] = {}  # unreadable photos: reported, skipped, listed at the end (exit code 1)
    for name in names:
        if args.out is None:
            out = Path("data") / ("flat" if flat else "raw") / name
        else:
            out = args.out / name if args.camera == "all" else args.out
        profile = get_camera(name).with_size(args.size)
        size = None if flat else args.size
        start = time.perf_counter()
        with tqdm(desc=f"synth {name}", unit="shot", file=sys.stderr, disable=None) as bar:

            def progress(done: int, total: int) -> None:
                bar.total = total
                bar.update(done - bar.n)

            def skip(photo: Path, reason: str) -> None:
                if photo not in failures:
                    tqdm.write(f"failed: {photo.name}: {reason}", file=sys.stderr)
                failures[photo] = reason

            if flat:
                paths = synthesize_flat_fields(
                    profile, out, args.flat_field, seed=args.seed, iso=args.iso or "base", overwrite=args.overwrite,
                    progress=progress,
                )
            else:
                paths = synthesize(
                    sources, get_camera(name), out, shots_per_photo=args.shots, seed=args.seed, size=size,
                    overwrite=args.overwrite, progress=progress, on_error=skip, iso=args.iso or "random",
                )
        seconds = time.perf_counter() - start
        print(f"{name}: {len(paths)} DNG files ({shots_megapixels(out, paths):.2f} MP) in {seconds:.1f} s -> {out}")
    return report_failures(list(failures.items()), len(sources), "photo")


def run_prepare(args: argparse.Namespace) -> int:
    workers = args.workers if args.workers > 0 else min(4, os.cpu_count() or 1)
    with tqdm(desc="prepare", unit="file", file=sys.stderr, disable=None) as bar:

        def progress(done: int, total: int, name: str, error: str | None) -> None:
            bar.total = total
            bar.update(done - bar.n)
            if error:
                tqdm.write(f"failed: {name}: {error}", file=sys.stderr)

        camera = args.camera
        out = args.out
        if out is None:
            out = Path("data") / "prepared" / (camera or args.raw_dir.name)
        report = prepare(
            args.raw_dir, out, camera=camera, target_bits=args.bits, rggb_dtype=args.rggb_dtype, gamma=args.gamma,
            val_fraction=args.val_fraction, test_fraction=args.test_fraction, seed=args.seed, workers=workers, progress=progress,
        )
    print(report.summary())
    return report_failures(report.failed, report.total)


def run_cameras(args: argparse.Namespace) -> int:
    print(f"{'name':<12}{'colour matrix of':<26}{'CFA':<6}{'bits':>5}{'black':>7}{'white':>7}{'size':>10}{'PRNU':>7}")
    for profile in CAMERAS.values():
        size = f"{profile.size[0]}x{profile.size[1]}"
        print(
            f"{profile.name:<12}{profile.make + ' ' + profile.model:<26}{profile.cfa:<6}{profile.bits:>5}"
            f"{profile.black_level:>7}{profile.white_level:>7}{size:>10}{profile.prnu_sigma:>7.3f}"
        )
    return 0
