"""Fixtures shared across the suite: real bundled photographs, a fixed seed, and an autograd-graph inspector."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

from neuralimaging.photos import bundled_photos, load_photo


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


@pytest.fixture(scope="session")
def graph_ops() -> Callable[[torch.Tensor], set[str]]:
    """A function giving the names of the autograd nodes that produced a tensor (which op a path took)."""

    def names_of(t: torch.Tensor) -> set[str]:
        names, seen, todo = set(), set(), [t.grad_fn]
        while todo:
            node = todo.pop()
            if node is not None and id(node) not in seen:
                seen.add(id(node))
                names.add(type(node).__name__)
                todo.extend(f for f, _ in node.next_functions)
        return names

    return names_of
