"""The tiny dataset and NIP run of ``tests/experiments/conftest.py``, for the CLI tests that train on them."""

from __future__ import annotations

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location("_experiments_conftest", Path(__file__).parents[1] / "experiments" / "conftest.py")
_conftest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_conftest)
tiny_dataset = _conftest.tiny_dataset
tiny_nip_run = _conftest.tiny_nip_run
