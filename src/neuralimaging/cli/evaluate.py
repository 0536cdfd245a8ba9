"""``neuralimaging evaluate RUN_DIR``: a trained NIP + FAN pair under the real codec and other JPEG qualities."""

from __future__ import annotations

import argparse
import json

from neuralimaging.device import resolve_device


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        parents=[common],
        help="manipulation-detection accuracy of a trained run under libjpeg or another JPEG quality",
        description=(
            "Measure a `train manipulation` run on the test split (default) with the channel's codec replaced by "
            "the real libjpeg (Pillow) or the differentiable one, at the trained JPEG quality or others: accuracy "
            "on fixed patches, PSNR/SSIM of the NIP on the whole images."
        ),
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run folder written by `train manipulation`")
    parser.add_argument(
        "--codec",
        choices=("libjpeg", "differentiable"),
        default="libjpeg",
        help="JPEG codec of the channel (default: libjpeg, the real codec)",
    )
    parser.add_argument(
        "--quality",
        type=int,
        action="append",
        metavar="Q",
        help="JPEG quality of the channel, 1-100; repeat for several (default: the trained quality)",
    )
    parser.add_argument("--split", choices=("test", "val", "train"), default="test",
                        help="images to measure on (default: test, held out from training and tuning)")
    parser.add_argument("--patches", type=int, default=None, metavar="N",
                        help="RAW patches to classify (default: the run's val_patches)")
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from neuralimaging.experiments.train_manipulation import evaluate

    device = resolve_device(args.device)
    results = []
    for index, quality in enumerate(args.quality or [None]):
        result = evaluate(args.run_dir, codec=args.codec, quality=quality, device=device, split=args.split,
                          patches=args.patches, fidelity=index == 0)  # the NIP's fidelity: once
        if index:
            result.update({k: results[0][k] for k in ("psnr", "psnr_std", "ssim", "images", "fidelity")})
        results.append(result)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"{args.run_dir}  ({results[0]['mode']}, {args.split} split; PSNR: {results[0]['fidelity']})")
    print(f"{'codec':<15}{'quality':>8}{'accuracy':>10}{'+-se':>7}{'PSNR dB':>9}  per class ({', '.join(results[0]['classes'])})")
    for r in results:
        per_class = " ".join(f"{a:.2f}" for a in r["per_class"])
        print(f"{r['codec']:<15}{str(r['quality']):>8}{r['accuracy']:>10.3f}{r['accuracy_se']:>7.3f}{r['psnr']:>9.2f}  {per_class}")
    return 0
