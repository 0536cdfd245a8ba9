"""``neuralimaging compare-pipelines``: PSNR/SSIM of each pipeline against the python-ISP target, as a table."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from neuralimaging.cli._common import report_failures, run_batch
from neuralimaging.device import resolve_device
from neuralimaging.errors import InputError

__all__ = ["register", "run"]


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "compare-pipelines",
        parents=[common],
        help="PSNR/SSIM of the python, libraw and NIP pipelines against the python-ISP target",
        description="Develop each RAW file with every pipeline and compare with the python ISP applied to its "
        "normalized RGGB stack (the NIPs' training target). Bad files are reported and skipped (exit code 1).",
    )
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE", help="RAW files")
    parser.add_argument("--model", action="append", type=Path, default=[], metavar="RUN_DIR",
                        help="a NIP run directory from `train nip` (repeatable)")
    parser.add_argument("--pipelines", default="python,libraw",
                        help="standard pipelines, comma-separated, or 'none' (default: python,libraw)")
    parser.add_argument("--tile", type=int, default=512, help="NIP tile size in RGGB pixels (default: 512)")
    parser.add_argument("--per-file", action="store_true", help="also print one row per file")
    parser.add_argument("--json", action="store_true", help="print JSON (per-file rows and the means)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from neuralimaging.experiments.pipeline_fidelity import STANDARD, compare_file, summarize
    from neuralimaging.experiments.train_nip import load_nip

    pipelines = [] if args.pipelines.strip().lower() == "none" else [p.strip() for p in args.pipelines.split(",") if p.strip()]
    for name in pipelines:
        if name not in STANDARD:
            raise InputError(f"--pipelines: unknown pipeline {name!r}; expected {', '.join(STANDARD)} or none")
    device = resolve_device(args.device)
    models = {}
    for run_dir in args.model:
        model = load_nip(run_dir, device=device)
        label = f"{type(model).__name__.lower()} ({run_dir.name})"
        models[label] = model
    if not pipelines and not models:
        raise InputError("nothing to compare: give --model RUN_DIR or standard --pipelines")
    rows: list[dict] = []

    def work(path: Path) -> None:
        rows.extend(compare_file(path, models, pipelines, tile=args.tile, device=device))

    failures = run_batch(args.files, work, desc="compare", name=lambda p: p.name)
    table = summarize(rows)
    if args.json:
        print(json.dumps({"files": rows, "mean": table}, indent=2))
    else:
        if args.per_file:
            print(f"{'file':<40}{'pipeline':<28}{'PSNR [dB]':>10}{'SSIM':>8}")
            for row in rows:
                print(f"{row['file']:<40}{row['pipeline']:<28}{row['psnr']:>10.2f}{row['ssim']:>8.4f}")
            print()
        print(f"{'pipeline':<28}{'files':>6}{'PSNR [dB]':>11}{'SSIM':>8}")
        for row in table:
            print(f"{row['pipeline']:<28}{row['files']:>6}{row['psnr']:>11.2f}{row['ssim']:>8.4f}")
    return report_failures(failures, len(args.files))
