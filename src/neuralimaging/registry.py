"""One registry of models by name: NIPs, the FAN and codecs, so the CLI, configs and sweeps share names.

Modules register their builders with :func:`register`; :func:`create` builds by name::

    >>> from neuralimaging import registry
    >>> net = registry.create("inet")                     # doctest: +SKIP
    >>> [e.name for e in registry.entries(kind="nip")]    # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch.nn as nn

from neuralimaging.errors import InputError

__all__ = ["Entry", "register", "create", "entries", "count_parameters"]

# Modules that register models when imported. Listed here so that `entries()` sees every model.
_PROVIDERS = (
    "neuralimaging.acquisition.nip",
    "neuralimaging.forensics.fan",
    "neuralimaging.distribution.jpeg",
)


@dataclass(frozen=True)
class Entry:
    """A registered model: its name, kind (``nip``, ``fan``, ``codec``), builder and one-line description."""

    name: str
    kind: str
    builder: Callable[..., nn.Module]
    description: str = ""


_REGISTRY: dict[str, Entry] = {}


def register(name: str, kind: str, description: str = "") -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator that registers a model builder (a class or a function returning an ``nn.Module``)."""

    def wrap(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        key = name.lower()
        if key in _REGISTRY and _REGISTRY[key].builder is not builder:
            raise ValueError(f"model name {name!r} is registered twice")
        _REGISTRY[key] = Entry(key, kind, builder, description)
        return builder

    return wrap


def _load_providers() -> None:
    for module in _PROVIDERS:
        importlib.import_module(module)


def entries(kind: str | None = None) -> list[Entry]:
    """Every registered model, optionally only those of one kind, sorted by kind then name."""
    _load_providers()
    found = [e for e in _REGISTRY.values() if kind is None or e.kind == kind]
    return sorted(found, key=lambda e: (e.kind, e.name))


def create(name: str, kind: str | None = None, **kwargs: Any) -> nn.Module:
    """Build a registered model by name (case-insensitive); ``kind`` restricts the lookup."""
    _load_providers()
    entry = _REGISTRY.get(name.lower())
    if entry is None or (kind is not None and entry.kind != kind):
        known = ", ".join(e.name for e in entries(kind))
        what = f"{kind} model" if kind else "model"
        raise InputError(f"unknown {what} {name!r}; expected one of: {known}")
    return entry.builder(**kwargs)


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters of a model."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
