"""Shared PRNU test data: two synthetic cameras with known K, and camera A's fingerprint."""

from __future__ import annotations

import numpy as np
import pytest

from neuralimaging.acquisition.virtual_camera import synthetic_shots
from neuralimaging.forensics import prnu

SIZE = 256


@pytest.fixture(scope="package")
def cameras(photos):
    """Two synthetic cameras with known K; camera A's shots use photos 0-5, camera B's photos 6-8."""
    rng = np.random.default_rng(7)
    k_a = rng.normal(0, 0.01, (SIZE, SIZE)).astype(np.float32)
    k_b = rng.normal(0, 0.01, (SIZE, SIZE)).astype(np.float32)
    shots_a = synthetic_shots(photos[:6], k_a, 24, seed=1)
    shots_b = synthetic_shots(photos[6:], k_b, 4, seed=2)
    return {"k_a": k_a, "k_b": k_b, "train": shots_a[:20], "test_a": shots_a[20:], "test_b": shots_b}


@pytest.fixture(scope="package")
def fingerprint_a(cameras):
    return prnu.fingerprint(cameras["train"])
