"""Device selection shared by the library and the CLI (``--device auto|cpu|cuda``)."""

from __future__ import annotations

import torch

from neuralimaging.errors import InputError

__all__ = ["DEVICE_CHOICES", "resolve_device"]

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """Turn ``auto``, ``cpu``, ``cuda`` (or ``cuda:1``) into a ``torch.device``.

    ``auto`` picks CUDA when it is available, else the CPU. Asking for CUDA where there is none is an error.
    """
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise InputError(f"device {name!r} was asked for but CUDA is not available here; use --device cpu or auto")
        return torch.device(name)
    raise InputError(f"device must be one of auto, cpu, cuda, got {name!r}")
