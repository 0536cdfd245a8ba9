"""``neuralimaging prnu fingerprint|match|localize|cross-pipeline``: PRNU sensor forensics."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from neuralimaging.cli._common import report_failures, run_batch
from neuralimaging.data.dataset import RAW_SUFFIXES, find_raw_files
from neuralimaging.photos import PHOTO_SUFFIXES, find_photos
from neuralimaging.errors import InputError
from neuralimaging.forensics.prnu import DEFAULT_SIGMA, RAW_WEIGHTS


def _images(sources: list[str], *, raw: bool = False) -> list[Path]:
    """Image files (JPEG/PNG/TIFF) or, with ``raw``, RAW files, from files and folders."""
    paths: list[Path] = []
    suffixes = RAW_SUFFIXES if raw else PHOTO_SUFFIXES
    what = "a RAW file (DNG, NEF, CR2, ...)" if raw else "an image file (JPEG/PNG/TIFF)"
    for source in sources:
        path = Path(source)
        if path.is_dir():
            paths.extend(find_raw_files(path) if raw else find_photos(path))
        elif path.suffix.lower() in suffixes:
            paths.append(path)
        else:
            raise InputError(f"{path}: expected {what} or a folder of them")
    if not paths:
        raise InputError("no RAW files given" if raw else "no images given")
    return paths


def _is_raw(sources: list[str]) -> bool:
    """Whether the first source is a RAW file or a folder holding RAW files (and no photos)."""
    path = Path(sources[0])
    if path.is_dir():
        return bool(find_raw_files(path)) and not any(p.suffix.lower() in PHOTO_SUFFIXES for p in path.iterdir())
    return path.suffix.lower() in RAW_SUFFIXES


def _residual_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--sigma", type=float, default=DEFAULT_SIGMA, help=f"denoiser noise level in 8-bit units (default: {DEFAULT_SIGMA:g}; the MATLAB toolbox uses 5)"
    )
    parser.add_argument("--color", choices=("gray", "rgb"), default="gray", help="denoise the luminance (fast) or each channel")


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser("prnu", parents=[common], help="PRNU fingerprints, matching, tampering localization")
    sub = parser.add_subparsers(dest="prnu_command", metavar="TASK", required=True)

    fp = sub.add_parser(
        "fingerprint", parents=[common], help="estimate a camera fingerprint (and correlation predictor)",
        description="Estimate a camera's PRNU fingerprint from developed images, or, given RAW files, on the "
        "Bayer mosaic itself (best from flat-field shots: 'neuralimaging data synth --flat-field 30').",
    )
    fp.add_argument("images", nargs="+", help="images of one camera (files or folders), all of one size; RAW files "
                    "(DNG, NEF, ...) give a RAW-domain fingerprint")
    fp.add_argument("--weights", choices=RAW_WEIGHTS, default="auto",
                    help="RAW files: weight each shot by the inverse noise variance of its DNG NoiseProfile (auto: "
                    "where the file has one; default)")
    fp.add_argument("--out", required=True, help="camera model file to write (.npz)")
    fp.add_argument("--predictor-images", nargs="+", default=None, help="other untampered images of the camera to train the localization predictor")
    fp.add_argument("--window", type=int, default=129, help="localization window (default: 129)")
    fp.add_argument("--stride", type=int, default=8, help="localization stride (default: 8)")
    _residual_options(fp)
    fp.set_defaults(func=run_fingerprint)

    mt = sub.add_parser("match", parents=[common], help="PCE and NCC of images against a camera fingerprint")
    mt.add_argument("images", nargs="+", help="images (files or folders) of the fingerprint's size; RAW files for a "
                    "RAW-domain fingerprint")
    mt.add_argument("--model", required=True, help="camera model (.npz from 'prnu fingerprint')")
    mt.add_argument("--search", type=int, default=0, help="search the PCE peak over shifts up to this (default: 0, aligned)")
    mt.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    mt.add_argument("--no-weighting", action="store_true",
                    help="correlate the residual as it is, as the Goljan toolbox does (default for developed images: "
                         "divided by its variance in 8x8 tiles, clipped pixels left out; RAW matching is never weighted)")
    mt.add_argument("--grid-pce", action="store_true",
                    help="PCE energy over shifts on the 8x8 JPEG grid only (see docs/analysis.md); the threshold of 60 "
                         "was set for the standard PCE")
    mt.set_defaults(func=run_match)

    lz = sub.add_parser("localize", parents=[common], help="tampering probability maps from a camera model")
    lz.add_argument("images", nargs="+", help="images (files or folders) of the fingerprint's size")
    lz.add_argument("--model", required=True, help="camera model with a predictor (.npz from 'prnu fingerprint --predictor-images')")
    lz.add_argument("--out", required=True, help="folder for the probability maps (PNG)")
    lz.add_argument("--tamper", type=int, default=None, help="first flip the central square of this size and report the best F1")
    lz.set_defaults(func=run_localize)

    cp = sub.add_parser("cross-pipeline", parents=[common], help="the paper's cross-pipeline study (Fig. 5)")
    cp.add_argument("--raw-dir", required=True, help="folder of RAW files of one camera")
    cp.add_argument("--pipelines", required=True, help="comma-separated: python, libraw, NAME:RUN_DIR (a trained NIP)")
    cp.add_argument("--out", required=True, help="output folder for tables and figures")
    cp.add_argument("--crop", type=int, default=1024, help="side of the central crop (default: 1024, about 1 Mpx)")
    cp.add_argument("--split", default="90,30,30", help="relative sizes of fingerprint,predictor,evaluation sets (default: 90,30,30)")
    cp.add_argument("--seed", type=int, default=0, help="seed of the split (default: 0)")
    cp.add_argument("--window", type=int, default=129, help="localization window (default: 129)")
    cp.add_argument("--stride", type=int, default=8, help="localization stride (default: 8)")
    cp.add_argument("--tamper", type=int, default=256, help="side of the flipped square (default: 256)")
    _residual_options(cp)
    cp.set_defaults(func=run_cross_pipeline)


def run_fingerprint(args: argparse.Namespace) -> int:
    from neuralimaging.forensics import localization, prnu

    if _is_raw(args.images):
        if args.predictor_images:
            raise InputError("--predictor-images: tampering localization works on developed images; build the model "
                             "from developed images of the camera, or leave out --predictor-images")
        paths = _images(args.images, raw=True)
        k = prnu.raw_fingerprint(paths, sigma=args.sigma, weights=args.weights, progress=True)
        path = localization.save_camera_model(args.out, k, None, images=len(paths), sigma=args.sigma, domain="raw",
                                              weights=args.weights)
        print(f"RAW-domain fingerprint {k.shape[0]}x{k.shape[1]} (Bayer mosaic) from {len(paths)} RAW files -> {path}")
        return 0
    paths = _images(args.images)
    k = prnu.fingerprint(paths, sigma=args.sigma, color=args.color, progress=True)
    predictor = None
    if args.predictor_images:
        extra = [prnu.load_image(p) for p in _images(args.predictor_images)]
        predictor = localization.CorrelationPredictor.fit(extra, k, window=args.window, stride=args.stride, sigma=args.sigma, color=args.color)
    path = localization.save_camera_model(args.out, k, predictor, images=len(paths), sigma=args.sigma, color=args.color)
    what = f", predictor from {len(extra)} images (R^2 {predictor.stats['r2']:.2f})" if predictor is not None else ""
    print(f"fingerprint {k.shape[0]}x{k.shape[1]} from {len(paths)} images{what} -> {path}")
    return 0


def run_match(args: argparse.Namespace) -> int:
    from neuralimaging.forensics import localization, prnu

    k, _, meta = localization.load_camera_model(args.model)
    raw = meta.get("domain") == "raw"
    paths = _images(args.images, raw=raw)
    sigma = meta.get("sigma", prnu.DEFAULT_SIGMA)
    if not args.json:
        print(f"{'image':<32}{'PCE':>12}{'NCC':>10}  verdict")

    def work(path: Path) -> None:
        if raw:
            result = prnu.match_raw(k, path, sigma=sigma, search=args.search, grid=8 if args.grid_pce else None)
        else:
            weighting = {"weighting": None, "saturation": None} if args.no_weighting else {}
            result = prnu.match(k, prnu.load_image(path), sigma=sigma, color=meta.get("color", "gray"), search=args.search,
                                grid=8 if args.grid_pce else None, **weighting)
        verdict = "same camera" if result.same_camera else "no match"
        if args.json:
            print(json.dumps({"image": str(path), "pce": result.pce, "ncc": result.ncc, "peak": result.peak, "same_camera": result.same_camera}))
        else:
            print(f"{path.name:<32}{result.pce:>12.1f}{result.ncc:>10.4f}  {verdict}")

    return report_failures(run_batch(paths, work, desc="match", name=lambda p: p.name), len(paths), "image")


def run_localize(args: argparse.Namespace) -> int:
    from neuralimaging.forensics import localization, prnu
    from neuralimaging.io import save_image

    k, predictor, meta = localization.load_camera_model(args.model)
    if meta.get("domain") == "raw":
        raise InputError(f"{args.model}: a RAW-domain fingerprint; tampering localization needs a model made from developed images")
    if predictor is None:
        raise InputError(f"{args.model}: the model has no correlation predictor; build it with 'prnu fingerprint --predictor-images'")
    paths = _images(args.images)
    out = Path(args.out)
    scores: list[float] = []

    def work(path: Path) -> None:
        image = prnu.load_image(path)
        mask = None
        if args.tamper:
            image, mask = localization.tamper_flip(image, args.tamper)
        result = localization.localize(image, k, predictor)
        full = result.full()
        save_image(out / f"{path.stem}_tampering.png", np.repeat(full[None], 3, axis=0))
        line = f"{path.name}: tampered area {float((full > 0.5).mean()) * 100:.1f}% of the image"
        if mask is not None:
            f1, _ = localization.best_f1(result.probability, result.mask_at_centres(mask))
            scores.append(f1)
            line += f", best F1 {f1:.3f}"
        print(line)

    failures = run_batch(paths, work, desc="localize", name=lambda p: p.name)
    if scores:
        print(f"mean best F1 over {len(scores)} images: {np.mean(scores):.3f}")
    return report_failures(failures, len(paths), "image")


def run_cross_pipeline(args: argparse.Namespace) -> int:
    from neuralimaging.device import resolve_device
    from neuralimaging.experiments.prnu_study import cross_pipeline

    try:
        split = [float(s) for s in args.split.split(",")]
    except ValueError:
        raise InputError(f"--split: expected three numbers like 90,30,30, got {args.split!r}") from None
    summary = cross_pipeline(
        args.raw_dir,
        args.pipelines,
        args.out,
        crop=args.crop,
        split=split,
        seed=args.seed,
        window=args.window,
        stride=args.stride,
        tamper=args.tamper,
        sigma=args.sigma,
        color=args.color,
        device=str(resolve_device(args.device)),
        progress=sys.stderr.isatty(),
    )
    labels = [p["label"] for p in summary["pipelines"]]
    width = max(10, *(len(l) + 2 for l in labels))
    print("fingerprint correlation:")
    print(" " * width + "".join(f"{l:>{width}}" for l in labels))
    rows = list(zip(labels, summary["correlation"], strict=True))
    if summary["correlation_with_true_k"] is not None:
        rows.append(("true K", summary["correlation_with_true_k"]))
    for label, row in rows:
        print(f"{label:<{width}}" + "".join(f"{v:>{width}.3f}" for v in row))
    print("localization best F1 (rows: camera model, columns: images):")
    for label, row in zip(labels, summary["f1"], strict=True):
        print(f"{label:<{width}}" + "".join(f"{v:>{width}.3f}" for v in row))
    print("mean PCE: " + ", ".join(f"{l} {summary['pce'][l]['mean']:.0f}" for l in labels))
    print(f"results in {args.out} ({summary['wall_time_s']:.1f} s)")
    return 0
