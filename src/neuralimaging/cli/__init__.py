"""``neuralimaging <command>``: a thin layer that parses arguments, calls the library and prints.

Every module in this package with a ``register(subparsers, common)`` function adds its commands; each
command sets ``func`` (``args -> exit code``) on its parser. Errors the library raises for bad input
(:class:`~neuralimaging.errors.NeuralImagingError`, missing files) become one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

from neuralimaging import __version__
from neuralimaging.cli._common import common_parent
from neuralimaging.device import keep_freed_memory
from neuralimaging.errors import NeuralImagingError

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every command found in this package."""
    parser = argparse.ArgumentParser(
        prog="neuralimaging",
        description="Model and optimize the life of a photograph: acquisition, distribution and forensics.",
    )
    parser.add_argument("--version", action="version", version=f"neuralimaging {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    common = common_parent()
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        module.register(subparsers, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    keep_freed_memory()
    try:
        return int(args.func(args) or 0)
    except (NeuralImagingError, FileNotFoundError, NotADirectoryError, IsADirectoryError) as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        print(f"neuralimaging {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"neuralimaging {args.command}: interrupted", file=sys.stderr)
        return 130
