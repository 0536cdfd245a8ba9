"""Fixtures shared across the suite: real bundled photographs and a fixed seed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neuralimaging.data.photos import bundled_photos, load_photo


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
    np.random.seed(0)


@pytest.fixture(scope="session")
def photo_paths():
    """Paths of the natural photographs bundled with scikit-image, scikit-learn and matplotlib."""
    return bundled_photos()


@pytest.fixture(scope="session")
def photos(photo_paths) -> list[np.ndarray]:
    """The bundled photographs as ``uint8 (H, W, 3)`` arrays."""
    return [load_photo(p) for p in photo_paths]
