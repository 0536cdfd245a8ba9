"""``neuralimaging develop``: RAW files -> PNG with a standard pipeline (one PNG per input, named after it;
existing PNGs are kept unless ``--overwrite``)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np

from neuralimaging.acquisition.isp import GAMMAS, develop
from neuralimaging.cli._common import report_failures, run_batch
from neuralimaging.errors import InputError
from neuralimaging.io import save_image

__all__ = ["PIPELINES", "register", "run"]


def _python(path: Path, args: argparse.Namespace) -> np.ndarray:
    return develop(path, "python", gamma=args.gamma)


def _libraw(path: Path, args: argparse.Namespace) -> np.ndarray:
    return develop(path, "libraw", gamma=args.gamma)


def _nip(path: Path, args: argparse.Namespace) -> np.ndarray:
    """A trained NIP (``--model RUN_DIR`` from ``train nip``), developed in overlapping tiles."""
    from neuralimaging.acquisition.nip import develop_raw

    return develop_raw(_load_nip(args), path, tile=args.tile)


def _load_nip(args: argparse.Namespace):
    from neuralimaging.device import resolve_device
    from neuralimaging.errors import InputError
    from neuralimaging.experiments.train_nip import load_nip

    if getattr(args, "_nip_model", None) is None:
        if args.model is None:
            raise InputError(f"--pipeline {args.pipeline} needs --model RUN_DIR (a run of `neuralimaging train nip`)")
        model = load_nip(args.model, device=resolve_device(args.device))
        if type(model).__name__.lower() != args.pipeline:
            raise InputError(f"{args.model}: holds a {type(model).__name__} run, not {args.pipeline}")
        args._nip_model = model
    return args._nip_model


# name -> function(path, args) -> float (3, H, W) in [0, 1]; neural pipelines add their entries here.
PIPELINES: dict[str, Callable[[Path, argparse.Namespace], np.ndarray]] = {
    "python": _python,
    "libraw": _libraw,
    "inet": _nip,
    "unet": _nip,
    "dnet": _nip,
}


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "develop",
        parents=[common],
        help="develop RAW files into PNG images with a standard pipeline",
        description="Develop RAW files (DNG, NEF, CR2, ...) into one PNG per input, named after it. "
        "python: the paper's pipeline (Menon demosaicing, camera matrix, gamma 1/2.2); libraw: rawpy.postprocess "
        "with camera white balance, sRGB, no auto-brightening. Bad files, and files whose PNG exists already "
        "(without --overwrite), are reported and skipped (exit code 1).",
    )
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE", help="RAW files to develop")
    parser.add_argument("--pipeline", choices=sorted(PIPELINES), default="python", help="pipeline (default: python)")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder (created)")
    parser.add_argument("--bits", type=int, choices=(8, 16), default=8, help="bits per sample of the PNGs (default: 8)")
    parser.add_argument("--overwrite", action="store_true", help="replace PNGs that exist (default: keep them, "
                        "and report those inputs as failed)")
    parser.add_argument("--gamma", choices=GAMMAS, default="2.2", help="tone curve: 2.2 (paper) or srgb (default: 2.2)")
    parser.add_argument("--model", type=Path, metavar="RUN_DIR",
                        help="inet/unet/dnet: run directory of `neuralimaging train nip` (gamma is the NIP's own)")
    parser.add_argument("--tile", type=int, default=512,
                        help="inet/unet/dnet: tile size in RGGB pixels; memory is bounded by it (default: 512)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    pipeline = PIPELINES[args.pipeline]
    if pipeline is _nip:
        _load_nip(args)  # a bad --model is a usage error (exit 2), not a per-file failure
    by_stem: dict[str, Path] = {}
    for path in args.files:  # one PNG per input, named after it: two inputs must not share a name stem
        if path.stem in by_stem and by_stem[path.stem] != path:
            raise InputError(f"{path}: would be written to the same PNG as {by_stem[path.stem]}; develop them apart")
        by_stem[path.stem] = path
    if args.out.exists() and not args.out.is_dir():
        raise InputError(f"--out {args.out}: exists and is not a folder")
    args.out.mkdir(parents=True, exist_ok=True)

    def work(path: Path) -> None:
        if (args.out / f"{path.stem}.png").exists() and not args.overwrite:
            raise InputError(f"{args.out / f'{path.stem}.png'}: exists; pass --overwrite to replace it")
        rgb = pipeline(path, args)
        target = save_image(args.out / f"{path.stem}.png", rgb, bits=args.bits)
        if len(args.files) == 1:
            print(target)

    failures = run_batch(args.files, work, desc=f"develop ({args.pipeline})", name=lambda p: p.name)
    done = len(args.files) - len(failures)
    if len(args.files) > 1:
        print(f"developed {done} of {len(args.files)} files with the {args.pipeline} pipeline -> {args.out}")
    return report_failures(failures, len(args.files))
