"""``neuralimaging models``: every registered model (NIPs, FAN, codecs) with its parameter count."""

from __future__ import annotations

import argparse
import json

from neuralimaging import registry


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "models", parents=[common], help="list registered models with their parameter counts"
    )
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    rows = []
    for entry in registry.entries():
        model = entry.builder()
        rows.append(
            {
                "name": entry.name,
                "kind": entry.kind,
                "trainable_parameters": registry.count_parameters(model),
                "description": entry.description,
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'name':<16}{'kind':<8}{'trainable params':>18}  description")
    for row in rows:
        print(f"{row['name']:<16}{row['kind']:<8}{row['trainable_parameters']:>18,}  {row['description']}")
    return 0
