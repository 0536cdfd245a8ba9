"""YAML reading for configs, sweep files and ``--set`` values.

PyYAML follows YAML 1.1, where ``1e-4`` (no dot) is a string; researchers write learning rates that way.
:func:`load` reads such scalars as floats (the YAML 1.2 rule) and is otherwise ``yaml.safe_load``.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

__all__ = ["load"]


class _Loader(yaml.SafeLoader):
    """``SafeLoader`` that also resolves ``1e-4``, ``5E3``, ``-2e+1`` as floats."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def load(text: str) -> Any:
    """Parse YAML ``text`` like ``yaml.safe_load``, with exponent floats (``1e-4``) read as numbers."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
