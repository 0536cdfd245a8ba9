"""Images as the PRNU functions take them: checks, batches and file paths, and the luminance."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from neuralimaging.errors import InputError
from neuralimaging.io import load_image

__all__ = ["GRAY_WEIGHTS", "SATURATION", "Color", "ImageLike", "load_image", "to_gray"]

GRAY_WEIGHTS = (0.29893602, 0.58704307, 0.11402090)
"""RGB to grey weights (ITU-R BT.601, as in the Goljan toolbox's ``rgb2gray1``)."""

SATURATION = 254.0 / 255.0
"""Intensity in [0, 1] at or above which a pixel of a developed 8-bit image counts as clipped."""

Color = Literal["gray", "rgb"]
ImageLike = np.ndarray | torch.Tensor


def _to_numpy(image: ImageLike) -> np.ndarray:
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    if not isinstance(image, np.ndarray):
        raise InputError(f"expected a numpy array or torch tensor image, got {type(image).__name__}")
    return image


def _check_image(image: ImageLike, what: str = "image") -> np.ndarray:
    """A single image as float32 ``(C, H, W)`` with C in {1, 3}, values checked to lie in [0, 1]."""
    array = _to_numpy(image)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3 or array.shape[0] not in (1, 3):
        raise InputError(f"{what}: expected shape (3, H, W), (1, H, W) or (H, W), got {tuple(array.shape)}")
    if array.shape[1] < 16 or array.shape[2] < 16:
        raise InputError(f"{what}: expected at least 16x16 pixels, got {array.shape[1]}x{array.shape[2]}")
    if array.dtype == np.uint8:
        array = array.astype(np.float32) / 255.0
    elif array.dtype == np.uint16:
        array = array.astype(np.float32) / 65535.0
    else:
        array = np.asarray(array, dtype=np.float32)
        low, high = float(array.min()), float(array.max())
        if not (low >= -1e-3 and high <= 1.0 + 1e-3):  # also false for NaN
            raise InputError(f"{what}: expected finite values in [0, 1], got [{low:.3g}, {high:.3g}]")
    return array


def _iter_items(images: Iterable[ImageLike | str | Path] | ImageLike) -> Iterator[ImageLike | str | Path]:
    """The images of a batch or sequence one by one; file paths are passed on unread."""
    if isinstance(images, (np.ndarray, torch.Tensor)):
        array = _to_numpy(images)
        if array.ndim != 4:
            raise InputError(f"expected a batch of shape (N, C, H, W) or a sequence of images, got {array.shape}")
        yield from array
        return
    yield from images


def _iter_images(images: Iterable[ImageLike | str | Path] | ImageLike) -> Iterator[ImageLike]:
    for item in _iter_items(images):
        yield load_image(item) if isinstance(item, (str, Path)) else item


def to_gray(image: np.ndarray) -> np.ndarray:
    """Luminance of ``(..., 3, H, W)`` RGB (BT.601 weights); ``(..., 1, H, W)`` is squeezed. Returns ``(..., H, W)``."""
    if image.shape[-3] == 1:
        return image[..., 0, :, :]
    r, g, b = GRAY_WEIGHTS
    return (r * image[..., 0, :, :] + g * image[..., 1, :, :] + b * image[..., 2, :, :]).astype(np.float32)
