"""``neuralimaging analyze PHOTOS... --model RUN_DIR --out DIR``: manipulation maps and decisions for whole photos."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from neuralimaging.cli._common import report_failures, run_batch
from neuralimaging.errors import InputError


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "analyze",
        parents=[common],
        help="slide a trained FAN over whole photos: class-probability maps and image-level decisions",
        description=(
            "Slide the FAN of a `train manipulation` run over photos of any size, as they arrive from the sharing "
            "channel (windows of the FAN's training size, batched, a band of rows at a time). For each photo "
            "writes DIR/<stem>.npz (class-probability map per stride x stride cell, window log-posteriors, "
            "image-level posterior) and DIR/<stem>_overlay.png, and prints the image-level decision: native, or "
            "a region manipulated with one class, with its confidence (docs/analysis.md). With --calibrate, "
            "fits the confidence's temperature and per-class offsets on photos made from the run's training "
            "images instead and writes DIR/calibration.json. Bad files are reported and skipped (exit code 1)."
        ),
    )
    parser.add_argument("photos", nargs="*", metavar="PHOTO", help="photos (JPEG/PNG/TIFF) or folders of them")
    parser.add_argument("--model", required=True, metavar="RUN_DIR", help="a run folder of `train manipulation`")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    parser.add_argument("--calibration", metavar="FILE",
                        help="calibration.json from `analyze --calibrate` (default: the built-in temperature)")
    parser.add_argument("--stride", type=int, default=None, metavar="N",
                        help="window stride in pixels, a multiple of 8 dividing the window (default: half the window)")
    parser.add_argument("--batch", type=int, default=256, metavar="N", help="windows per FAN pass (default: 256)")
    parser.add_argument("--no-overlay", action="store_true", help="write only the .npz maps")
    parser.add_argument("--json", action="store_true", help="print one JSON line per photo instead of a table")
    parser.add_argument("--calibrate", action="store_true",
                        help="fit the confidence on the run's own images (needs its dataset and NIP run) and write "
                        "DIR/calibration.json; takes no photos")
    parser.add_argument("--split", default="train", choices=("val", "train", "test"),
                        help="--calibrate: images to fit on (default: train)")
    parser.set_defaults(func=run)


def _photos(sources: list[str]) -> list[Path]:
    from neuralimaging.photos import find_photos

    paths: list[Path] = []
    for source in sources:
        path = Path(source)
        paths.extend(find_photos(path) if path.is_dir() else [path])
    return paths


def _calibrate(args: argparse.Namespace) -> int:
    from neuralimaging.experiments.analysis import save_calibration
    from neuralimaging.experiments.analysis_eval import fit_run_calibration

    if args.photos:
        raise InputError("--calibrate takes no photos: it makes its own from the run's images")
    calibration = fit_run_calibration(args.model, args.split, stride=args.stride, batch=args.batch, device=args.device)
    path = save_calibration(Path(args.out) / "calibration.json", calibration)
    offsets = "" if calibration.bias is None else ", class offsets " + " ".join(f"{b:+.2f}" for b in calibration.bias[1:])
    print(f"temperature {calibration.temperature:.4g}{offsets} ({calibration.fitted}; mean NLL {calibration.nll:.3f}) -> {path}")
    return 0


def run(args: argparse.Namespace) -> int:
    from neuralimaging.device import resolve_device
    from neuralimaging.experiments.analysis import analyze_file, load_analyzer

    args.device = resolve_device(args.device)
    if args.batch < 1:
        raise InputError(f"--batch must be a positive number of windows, got {args.batch}")
    if args.calibrate:
        return _calibrate(args)
    if not args.photos:
        raise InputError("no photos given (or use --calibrate)")
    analyzer = load_analyzer(args.model, stride=args.stride, calibration=args.calibration, device=args.device)
    paths = _photos(args.photos)
    by_stem: dict[str, Path] = {}
    for path in paths:  # outputs are named after the photo: two photos must not share a name stem
        if path.stem in by_stem and by_stem[path.stem] != path:
            raise InputError(f"{path}: would be written to the same files as {by_stem[path.stem]}; analyze them apart")
        by_stem[path.stem] = path
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.json:
        print(f"{'photo':<32}{'decision':>12}{'confidence':>12}{'flagged':>9}  (window {analyzer.patch}, "
              f"stride {analyzer.stride}; calibration: {analyzer.calibration.fitted})")

    def work(path: Path) -> None:
        result = analyze_file(analyzer, path, out, batch=args.batch, overlay=not args.no_overlay)
        if args.json:
            print(json.dumps(result), flush=True)
        else:
            print(f"{path.name:<32}{result['decision']:>12}{result['confidence']:>12.3f}"
                  f"{100 * result['manipulated_fraction']:>8.1f}%", flush=True)

    return report_failures(run_batch(paths, work, desc="analyze", name=lambda p: p.name), len(paths), "photo")
