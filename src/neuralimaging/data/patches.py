"""Training and validation patches, sampled the paper's way.

Korus & Memon (Sec. 3.1) and their toolbox: a patch is taken at a random position of a random image, aligned
so that the RAW patch ``(4, p, p)`` at ``(y, x)`` of the RGGB stack covers exactly the RGB patch
``(3, 2p, 2p)`` at ``(2y, 2x)`` of the target (even RGB positions). Patches whose RGB variance is below 0.01
are rejected; those below 0.02 are kept with probability 0.5. An image with no patch that passes in
:data:`MAX_TRIES` tries (a clear sky, a flat wall) is passed over for another one. Validation patches are drawn
once, from a seed, round-robin over the validation images.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from neuralimaging.data.dataset import Sample
from neuralimaging.errors import InputError

__all__ = ["KEEP_HALF_BELOW", "MAX_TRIES", "REJECT_BELOW", "accept_patch", "sample_patches", "validation_patches"]

REJECT_BELOW = 0.01
KEEP_HALF_BELOW = 0.02
MAX_TRIES = 1000


def accept_patch(variance: float, rng: np.random.Generator) -> bool:
    """The paper's rule: reject below 0.01, keep with probability 0.5 below 0.02, keep otherwise."""
    if variance < REJECT_BELOW:
        return False
    if variance < KEEP_HALF_BELOW:
        return bool(rng.random() < 0.5)
    return True


def _draw(sample: Sample, patch: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray] | None:
    """A patch of ``sample`` that passes the variance rule, or None after :data:`MAX_TRIES` tries."""
    height, width = sample.shape
    if height < patch or width < patch:
        raise InputError(f"image {sample.name} ({height}x{width} RGGB) is smaller than the patch size {patch}")
    for _ in range(MAX_TRIES):
        y = int(rng.integers(0, height - patch + 1))
        x = int(rng.integers(0, width - patch + 1))
        raw, rgb = sample.patch(y, x, patch)
        if accept_patch(float(rgb.var()), rng):
            return raw, rgb
    return None


def _draw_from(
    samples: Sequence[Sample], first: int, patch: int, rng: np.random.Generator, flat: set[int]
) -> tuple[np.ndarray, np.ndarray]:
    """A patch from image ``first``, else from the next images in turn (images found flat are remembered)."""
    for offset in range(len(samples)):
        index = (first + offset) % len(samples)
        if index in flat:
            continue
        pair = _draw(samples[index], patch, rng)
        if pair is not None:
            return pair
        flat.add(index)
    raise InputError(
        f"no image has a patch of {patch}x{patch} with RGB variance >= {REJECT_BELOW} in {MAX_TRIES} tries "
        f"(first: {samples[0].name})"
    )


def _check(samples: Sequence[Sample], n: int, patch: int) -> None:
    if not samples:
        raise InputError("no images to sample patches from")
    if n < 1:
        raise InputError(f"number of patches must be >= 1, got {n}")
    if patch < 1:
        raise InputError(f"patch size must be >= 1, got {patch}")


def _stack(pairs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[torch.Tensor, torch.Tensor]:
    raw = torch.from_numpy(np.stack([p[0] for p in pairs]))
    rgb = torch.from_numpy(np.stack([p[1] for p in pairs]))
    return raw, rgb


def sample_patches(
    samples: Sequence[Sample], n: int, patch: int, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random training patches (random image, random aligned position, variance rule).

    Args:
        samples: images to draw from (e.g. ``Dataset.train``).
        n: number of patches.
        patch: RAW patch size ``p`` (the RGB patch is ``2p``; the paper used 64 -> 128).
        rng: random generator (all randomness comes from it).

    Returns:
        ``rggb`` ``torch.float32 (n, 4, p, p)`` and ``rgb`` ``torch.float32 (n, 3, 2p, 2p)``, both in [0, 1].
    """
    _check(samples, n, patch)
    flat: set[int] = set()
    pairs = [_draw_from(samples, int(rng.integers(0, len(samples))), patch, rng, flat) for _ in range(n)]
    return _stack(pairs)


def validation_patches(
    samples: Sequence[Sample], n: int, patch: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` fixed validation patches: image ``i % len(samples)`` for patch ``i``, positions from ``seed``.

    The same arguments always give the same patches. Shapes as :func:`sample_patches`.
    """
    _check(samples, n, patch)
    rng = np.random.default_rng(seed)
    flat: set[int] = set()
    pairs = [_draw_from(samples, i % len(samples), patch, rng, flat) for i in range(n)]
    return _stack(pairs)
