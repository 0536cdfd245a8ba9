"""Pieces shared by the CLI commands: the common options, the log's configuration and the batch runner."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

from tqdm import tqdm

from neuralimaging.device import DEVICE_CHOICES
from neuralimaging.errors import NeuralImagingError

__all__ = ["LOG_FORMAT", "add_verbose", "common_parent", "logging_to_stderr", "report_failures", "run_batch"]

LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"
"""How a log line of the library looks on stderr."""

T = TypeVar("T")


def add_verbose(parser: argparse.ArgumentParser, default: object = 0) -> None:
    """Add ``-v/--verbose`` (count): warnings only by default, ``-v`` info lines, ``-vv`` debug lines."""
    parser.add_argument(
        "-v", "--verbose", action="count", default=default,
        help="show the library's log on stderr: -v info, -vv debug (default: warnings only)",
    )


@contextlib.contextmanager
def logging_to_stderr(verbose: int) -> Iterator[logging.Logger]:
    """Send the ``neuralimaging`` loggers' records to stderr for the duration of a command.

    ``verbose`` 0 shows warnings and errors, 1 adds info, 2 or more debug. Lines go through tqdm, so they do
    not break a progress bar. The handler is removed afterwards (the CLI can be called again in one process).
    """
    from tqdm.contrib.logging import logging_redirect_tqdm

    logger = logging.getLogger("neuralimaging")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    level = logging.WARNING if verbose <= 0 else logging.INFO if verbose == 1 else logging.DEBUG
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(level)
    try:
        with logging_redirect_tqdm([logger]):
            yield logger
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


def common_parent() -> argparse.ArgumentParser:
    """Options every command takes (pass as ``parents=[common]`` to ``add_parser``).

    ``-v/--verbose`` is accepted after the command too (then it replaces a count given before the command).
    """
    parent = argparse.ArgumentParser(add_help=False)
    add_verbose(parent, default=argparse.SUPPRESS)
    parent.add_argument(
        "--device",
        choices=DEVICE_CHOICES,
        default="auto",
        help="where to compute: auto (CUDA when present, else CPU), cpu or cuda (default: auto)",
    )
    return parent


def run_batch(
    items: Sequence[T],
    work: Callable[[T], object],
    *,
    desc: str,
    name: Callable[[T], str] = str,
) -> list[tuple[T, str]]:
    """Apply ``work`` to every item, carrying on past failures; returns ``(item, reason)`` for each failure.

    A progress bar is shown on stderr when there is more than one item. Failures are the toolkit's own
    errors and OS errors (missing or unreadable files); anything else is a bug and propagates.
    """
    failures: list[tuple[T, str]] = []
    bar: Iterable[T] = tqdm(items, desc=desc, unit="file", disable=len(items) <= 1, file=sys.stderr)
    for item in bar:
        try:
            work(item)
        except (NeuralImagingError, OSError, ValueError) as error:
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            failures.append((item, reason))
            tqdm.write(f"failed: {name(item)}: {reason}", file=sys.stderr)
    return failures


def report_failures(failures: Sequence[tuple[object, str]], total: int, what: str = "file") -> int:
    """Print the list of failed inputs at the end of a batch; returns the exit code (0 or 1)."""
    if not failures:
        return 0
    print(f"{len(failures)} of {total} {what}s failed:", file=sys.stderr)
    for item, reason in failures:
        label = item.name if isinstance(item, Path) else str(item)
        print(f"  {label}: {reason}", file=sys.stderr)
    return 1
