"""Pieces shared by the CLI commands: the common options and the batch runner."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TypeVar

from tqdm import tqdm

from neuralimaging.device import DEVICE_CHOICES
from neuralimaging.errors import NeuralImagingError

__all__ = ["common_parent", "report_failures", "run_batch"]

T = TypeVar("T")


def common_parent() -> argparse.ArgumentParser:
    """Options every command takes (pass as ``parents=[common]`` to ``add_parser``)."""
    parent = argparse.ArgumentParser(add_help=False)
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
