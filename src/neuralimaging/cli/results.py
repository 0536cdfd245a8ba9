"""``neuralimaging results RUNS_DIR``: every run as one tidy table, and its aggregates over repetitions."""

from __future__ import annotations

import argparse

import pandas as pd

from neuralimaging.experiments import results as results_lib


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "results", parents=[common], help="the runs of a folder as one table (CSV / Parquet), with aggregates",
        description="One row per run (grid axes + summary figures); --aggregate prints mean/std over repetitions.",
    )
    parser.add_argument("runs_dir", metavar="RUNS_DIR")
    parser.add_argument("--csv", metavar="FILE", help="write the per-run table as CSV")
    parser.add_argument("--parquet", metavar="FILE", help="write the per-run table as Parquet")
    parser.add_argument("--aggregate", action="store_true", help="print (and write) the aggregates over repetitions instead")
    parser.add_argument("--done-only", action="store_true", help="leave out unfinished runs")
    parser.add_argument("--json", action="store_true", help="print the table (or the aggregates) as a JSON list of rows")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    table = results_lib.collect(args.runs_dir, include_unfinished=not args.done_only)
    shown = results_lib.aggregate(table) if args.aggregate else table
    results_lib.save_table(shown, csv=args.csv, parquet=args.parquet)
    if args.json:
        print(shown.to_json(orient="records", indent=2, double_precision=15))
        return 0
    if table.empty:
        print(f"no runs in {args.runs_dir}")
        return 0
    if not (args.csv or args.parquet):
        with pd.option_context("display.max_rows", 500, "display.max_columns", 50, "display.width", 200,
                               "display.float_format", "{:.4g}".format):
            print(shown.to_string(index=False))
    else:
        written = [f for f in (args.csv, args.parquet) if f]
        print(f"{len(shown)} rows -> {', '.join(written)}")
    return 0
