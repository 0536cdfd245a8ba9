"""``neuralimaging <command>``: a thin layer that parses arguments, calls the library and prints.

Every module in this package has a ``register(subparsers, common)`` function that adds its command, and an
entry in :data:`COMMANDS`; each command sets ``func`` (``args -> exit code``) on its parser. Errors the
library raises for bad input (:class:`~neuralimaging.errors.NeuralImagingError`, missing, existing or
forbidden files) become one line on stderr and exit code 2.

``-v/--verbose`` (before or after the command) shows the library's log on stderr: info lines, and with
``-vv`` debug lines; without it, only warnings.

Only the module of the command being run is imported (:data:`COMMANDS` names them, with their one-line
help): ``neuralimaging --help`` and ``--version`` start without torch, and a command does not pay for the
others' libraries (colour and matplotlib, pandas, Ray).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from neuralimaging import __version__
from neuralimaging.cli._common import add_verbose, common_parent, logging_to_stderr
from neuralimaging.device import keep_freed_memory
from neuralimaging.errors import NeuralImagingError

__all__ = ["COMMANDS", "build_parser", "main"]

COMMANDS: dict[str, tuple[str, str]] = {
    "analyze": (
        "analyze", "slide a trained FAN over whole photos: class-probability maps and image-level decisions"
    ),
    "compare-pipelines": (
        "compare_pipelines", "PSNR/SSIM of the python, libraw and NIP pipelines against the python-ISP target"
    ),
    "data": ("data", "virtual-camera RAW files and training datasets"),
    "demo": ("demo", "virtual camera -> dataset -> pre-trained NIP -> F and F+N -> test split, summary and HTML report"),
    "develop": ("develop", "develop RAW files into PNG images with a standard pipeline"),
    "evaluate": ("evaluate", "manipulation-detection accuracy of a trained run under libjpeg or another JPEG quality"),
    "jpeg": ("jpeg", "differentiable JPEG tools"),
    "models": ("models", "list registered models with their parameter counts"),
    "prnu": ("prnu", "PRNU fingerprints, matching, tampering localization"),
    "report": ("report", "write one self-contained HTML report (tables + figures) of a runs folder"),
    "results": ("results", "the runs of a folder as one table (CSV / Parquet), with aggregates"),
    "sweep": ("sweep", "run a grid of training runs (locally or on Ray)"),
    "train": ("train", "train models (train nip: pre-train a neural imaging pipeline)"),
}
"""Command -> (module of this package that registers it, its one-line help as the module registers it)."""


def _requested(argv: Sequence[str]) -> str | None:
    """The command named on the command line (its first word that is not an option), if it is a known one."""
    word = next((a for a in argv if not a.startswith("-")), None)
    return word if word in COMMANDS else None


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The argument parser: every command's full parser, or with ``argv``, only that of the command it names.

    The other commands are listed (for ``--help``) with their help line but without their options, so their
    modules are not imported.
    """
    parser = argparse.ArgumentParser(
        prog="neuralimaging",
        description="Model and optimize the life of a photograph: acquisition, distribution and forensics.",
    )
    parser.add_argument("--version", action="version", version=f"neuralimaging {__version__}")
    add_verbose(parser)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    common = common_parent()
    wanted = None if argv is None else _requested(argv)
    for command, (module_name, help_line) in COMMANDS.items():
        if argv is None or command == wanted:
            module = importlib.import_module(f"{__name__}.{module_name}")
            module.register(subparsers, common)
        else:
            subparsers.add_parser(command, help=help_line)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    args.argv = argv  # the command line, for records of how a file was made
    keep_freed_memory()
    try:
        with logging_to_stderr(args.verbose):
            return int(args.func(args) or 0)
    except (NeuralImagingError, FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError,
            PermissionError) as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        print(f"neuralimaging {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"neuralimaging {args.command}: interrupted", file=sys.stderr)
        return 130
