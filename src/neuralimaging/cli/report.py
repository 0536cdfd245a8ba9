"""``neuralimaging report RUNS_DIR --out report.html``: one self-contained HTML report with every figure."""

from __future__ import annotations

import argparse
import sys

from neuralimaging.device import resolve_device
from neuralimaging.experiments.report import write_report


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "report", parents=[common], help="write one self-contained HTML report (tables + figures) of a runs folder",
    )
    parser.add_argument("runs_dir", metavar="RUNS_DIR")
    parser.add_argument("--out", default="report.html", metavar="FILE", help="the HTML file (default report.html)")
    parser.add_argument("--title", help="heading of the report")
    parser.add_argument("--no-artifacts", action="store_true", help="skip the learned-artifacts figures (Fig. 10)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    device = str(resolve_device(args.device))
    facts = write_report(args.runs_dir, args.out, title=args.title, artifacts=not args.no_artifacts, device=device)
    for note in facts["notes"]:
        print(f"note: {note}", file=sys.stderr)
    print(f"report: {facts['path']} ({facts['runs']} runs, {facts['done']} done, {facts['figures']} figures)")
    return 0
