"""Device selection shared by the library and the CLI (``--device auto|cpu|cuda``), and the CPU allocator setting."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import platform
from typing import TYPE_CHECKING

from neuralimaging.errors import InputError

if TYPE_CHECKING:  # torch is imported where a device is resolved: `neuralimaging --help` starts without it
    import torch

__all__ = ["DEVICE_CHOICES", "keep_freed_memory", "resolve_device"]

_log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc mallopt parameters (malloc.h)
_allocator_tuned: bool | None = None

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """Turn ``auto``, ``cpu``, ``cuda`` (or ``cuda:1``) into a ``torch.device``.

    ``auto`` picks CUDA when it is available, else the CPU. Asking for CUDA where there is none is an error.
    """
    import torch

    if isinstance(name, torch.device):
        return name
    if name == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        _log.info("device auto: %s", device)
        return device
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise InputError(f"device {name!r} was asked for but CUDA is not available here; use --device cpu or auto")
        return torch.device(name)
    raise InputError(f"device must be one of auto, cpu, cuda, got {name!r}")


def keep_freed_memory() -> bool:
    """Have glibc's malloc keep freed memory for reuse instead of mapping and unmapping every large tensor.

    By default glibc serves allocations above its mmap threshold (at most 32 MiB) with fresh ``mmap`` pages and
    returns them on ``free``, so every training step page-faults its large activations and gradients in anew
    (the kernel zeroes each page). This sets ``M_MMAP_MAX = 0`` (allocations come from the heap) and
    ``M_TRIM_THRESHOLD = 1 GiB`` (freed heap memory is kept), the effect of a caching allocator such as jemalloc.
    Training runs faster by the page faults saved (``docs/benchmarks.md``, "CPU op choices").
    The process keeps its peak memory afterwards. Called by the CLI and the training functions; a no-op
    (``False``) where the C library is not glibc or ``NEURALIMAGING_SYSTEM_MALLOC=1`` is set. Idempotent.

    Returns:
        Whether the setting is in effect.
    """
    global _allocator_tuned
    if _allocator_tuned is None:
        _allocator_tuned = False
        if os.environ.get("NEURALIMAGING_SYSTEM_MALLOC", "") not in ("", "0") or platform.libc_ver()[0] != "glibc":
            return False
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _allocator_tuned = bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30))
        except (OSError, AttributeError):
            _allocator_tuned = False
    return _allocator_tuned
