"""NIPs pre-trained by the toolkit itself that ship with the package: weights (safetensors) and provenance.

Each entry is ``weights/<name>.safetensors`` (the NIP's ``state_dict``) with ``weights/<name>.json``: the NIP
and its options, the training config, the dataset it learned from (camera, split, the command that makes
it), its validation fidelity, and the command that re-creates it. Nothing is downloaded. How the shipped
entries were made is in ``docs/pretrained.md``.

    >>> from neuralimaging.acquisition import pretrained
    >>> pretrained.names()                                  # doctest: +SKIP
    ['dnet-nikon-d90']
    >>> model = pretrained.load("dnet-nikon-d90")           # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from neuralimaging.errors import InputError

__all__ = ["PREFIX", "WEIGHTS_DIR", "names", "provenance", "weights_path", "load_state", "load", "resolve"]

_log = logging.getLogger(__name__)

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
"""Folder of the shipped weights."""

PREFIX = "pretrained:"
"""How configs name a shipped NIP (``init: pretrained:dnet-nikon-d90``)."""


def names() -> list[str]:
    """Names of the shipped NIPs, sorted."""
    return sorted(p.stem for p in WEIGHTS_DIR.glob("*.safetensors") if p.with_suffix(".json").is_file())


def weights_path(name: str) -> Path:
    """The safetensors file of a shipped NIP."""
    path = WEIGHTS_DIR / f"{name}.safetensors"
    if "/" in name or "\\" in name or not path.is_file() or not path.with_suffix(".json").is_file():
        shipped = ", ".join(names()) or "none"
        raise InputError(f"no pre-trained NIP named {name!r} ships with neuralimaging (shipped: {shipped})")
    return path


def provenance(name: str) -> dict[str, Any]:
    """How a shipped NIP was made (its JSON sidecar)."""
    path = weights_path(name).with_suffix(".json")
    try:
        return json.loads(path.read_text())
    except ValueError as error:
        raise InputError(f"{path}: corrupt provenance file ({error})") from error


def load_state(source: str | Path) -> dict[str, torch.Tensor]:
    """A NIP ``state_dict`` from a shipped name or a safetensors file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(source)
    if not path.is_file():
        raise InputError(f"{path}: no such weights file (expected a .safetensors file)")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise InputError(f"{path}: not a readable safetensors file ({error})") from error


def resolve(init: str) -> Path:
    """The weights file an ``init`` setting names: ``pretrained:<name>`` or a path to a safetensors file."""
    return weights_path(init[len(PREFIX):]) if init.startswith(PREFIX) else Path(init)


def load(name: str, device: str | torch.device = "cpu") -> torch.nn.Module:
    """A shipped NIP, built with its recorded options and weights, in eval mode."""
    from neuralimaging.acquisition import nip

    record = provenance(name)
    _log.info("pre-trained NIP %s: %s %s from %s", name, record["nip"], record.get("nip_options") or {},
              weights_path(name))
    model = nip.create(record["nip"], **dict(record.get("nip_options") or {}))
    model.load_state_dict(load_state(weights_path(name)))
    return model.to(device).eval()
