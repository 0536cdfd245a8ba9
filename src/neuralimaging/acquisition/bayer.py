"""Colour filter arrays: any 2x2 Bayer pattern <-> the canonical RGGB stack ``(..., 4, H/2, W/2)``.

A CFA pattern is written as four letters giving the colour of the 2x2 block's sites in row-major order:
``"RGGB"`` has red at (0, 0), green at (0, 1) and (1, 0), blue at (1, 1). The four patterns of Bayer sensors
are ``RGGB``, ``BGGR``, ``GRBG`` and ``GBRG`` (the paper's Nikon D90 is GBRG).

Two operations are kept apart on purpose:

* :func:`to_rggb` / :func:`from_rggb` gather / scatter the sites of every 2x2 block into the channel order
  R, G (red row), G (blue row), B. They are exact inverses for every pattern and work on numpy arrays and
  torch tensors alike, but for a pattern other than RGGB the four samples of a channel position do not sit
  where an RGGB sensor would have them.
* :func:`crop_to_rggb` crops one row and/or column at each end of a mosaic so that it starts on a red site:
  the cropped mosaic *is* an RGGB mosaic (two pixels smaller in that direction). :func:`normalize` uses it,
  so that the stacks fed to the neural pipelines are geometrically RGGB whatever the camera.
  :func:`pad_to_rggb` instead mirrors one row and/or column at each end (each site keeps its colour), for
  an RGGB mosaic that covers every sensor pixel (``normalize(..., pad=True)``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

import numpy as np
import torch

from neuralimaging.errors import InputError

if TYPE_CHECKING:
    from neuralimaging.acquisition.raw import RawImage

__all__ = [
    "CFA_PATTERNS",
    "cfa_offset",
    "check_cfa",
    "crop_to_rggb",
    "from_rggb",
    "mosaic_rgb",
    "normalize",
    "normalize_mosaic",
    "pad_to_rggb",
    "to_rggb",
]

CFA_PATTERNS: tuple[str, ...] = ("RGGB", "BGGR", "GRBG", "GBRG")

Array = TypeVar("Array", np.ndarray, torch.Tensor)

# RGGB channel order -> (row, col) offsets of that channel's site inside the 2x2 block, per pattern.
_SITES: dict[str, tuple[tuple[int, int], ...]] = {
    "RGGB": ((0, 0), (0, 1), (1, 0), (1, 1)),
    "BGGR": ((1, 1), (1, 0), (0, 1), (0, 0)),
    "GRBG": ((0, 1), (0, 0), (1, 1), (1, 0)),
    "GBRG": ((1, 0), (1, 1), (0, 0), (0, 1)),
}


def check_cfa(cfa: str) -> str:
    """Return the pattern in upper case, or raise :class:`InputError` if it is not one of the four Bayer patterns."""
    pattern = str(cfa).upper()
    if pattern not in _SITES:
        raise InputError(f"CFA pattern must be one of {', '.join(CFA_PATTERNS)}, got {cfa!r}")
    return pattern


def cfa_offset(cfa: str) -> tuple[int, int]:
    """(row, col) of the red site inside the 2x2 block of ``cfa``; ``(0, 0)`` for RGGB."""
    return _SITES[check_cfa(cfa)][0]


def _check_even(height: int, width: int) -> None:
    if height % 2 or width % 2 or height < 2 or width < 2:
        raise InputError(f"a Bayer mosaic needs an even height and width >= 2, got {height}x{width}")


def to_rggb(mosaic: Array, cfa: str) -> Array:
    """Gather the sites of every 2x2 block into the channels R, G (red row), G (blue row), B.

    Args:
        mosaic: ``(..., H, W)`` numpy array or tensor with even ``H`` and ``W``, laid out in pattern ``cfa``.
        cfa: one of ``RGGB``, ``BGGR``, ``GRBG``, ``GBRG``.

    Returns:
        ``(..., 4, H/2, W/2)`` of the same type and dtype. Exact inverse: :func:`from_rggb`.
    """
    sites = _SITES[check_cfa(cfa)]
    _check_even(mosaic.shape[-2], mosaic.shape[-1])
    planes = [mosaic[..., dy::2, dx::2] for dy, dx in sites]
    if isinstance(mosaic, torch.Tensor):
        return torch.stack(planes, dim=-3)
    return np.stack(planes, axis=-3)


def from_rggb(stack: Array, cfa: str) -> Array:
    """Scatter an ``(..., 4, h, w)`` stack (channels R, G, G, B) back into a ``(..., 2h, 2w)`` mosaic of ``cfa``."""
    sites = _SITES[check_cfa(cfa)]
    if stack.ndim < 3 or stack.shape[-3] != 4:
        raise InputError(f"expected an RGGB stack of shape (..., 4, h, w), got {tuple(stack.shape)}")
    *lead, _, h, w = stack.shape
    if isinstance(stack, torch.Tensor):
        mosaic = stack.new_empty((*lead, 2 * h, 2 * w))
    else:
        mosaic = np.empty((*lead, 2 * h, 2 * w), dtype=stack.dtype)
    for channel, (dy, dx) in enumerate(sites):
        mosaic[..., dy::2, dx::2] = stack[..., channel, :, :]
    return mosaic


def crop_to_rggb(mosaic: Array, cfa: str) -> Array:
    """Crop a ``(..., H, W)`` mosaic so that it is an RGGB mosaic with even size.

    The first row (column) is dropped when red sits on the second row (column) of the pattern, and the
    last row (column) when the remaining size is odd. For RGGB with even size nothing changes.
    """
    dy, dx = cfa_offset(cfa)
    height, width = mosaic.shape[-2], mosaic.shape[-1]
    h, w = (height - dy) // 2 * 2, (width - dx) // 2 * 2
    if h < 2 or w < 2:
        raise InputError(f"mosaic of {height}x{width} is too small for a 2x2 Bayer pattern")
    return mosaic[..., dy : dy + h, dx : dx + w]


def pad_to_rggb(mosaic: Array, cfa: str) -> Array:
    """Mirror-pad a ``(..., H, W)`` mosaic so that it is an RGGB mosaic of even size covering every pixel.

    Where red sits on the second row (column) of the pattern, one row (column) is added before the first by
    reflection (row -1 takes row 1's values, which have the colour row -1 would have), and one after the last
    when the size is then odd; for RGGB with even size nothing changes. Sensor pixel ``(y, x)`` is then at
    ``(y + dy, x + dx)`` with ``(dy, dx) = cfa_offset(cfa)``. The counterpart of :func:`crop_to_rggb`, which
    drops those rows and columns instead.
    """
    dy, dx = cfa_offset(cfa)
    height, width = mosaic.shape[-2], mosaic.shape[-1]
    if height < 2 or width < 2:
        raise InputError(f"mosaic of {height}x{width} is too small for a 2x2 Bayer pattern")
    bottom, right = (height + dy) % 2, (width + dx) % 2
    if not (dy or dx or bottom or right):
        return mosaic
    if isinstance(mosaic, torch.Tensor):
        flat = mosaic.reshape(-1, height, width)
        padded = torch.nn.functional.pad(flat, (dx, right, dy, bottom), mode="reflect")
        return padded.reshape(*mosaic.shape[:-2], *padded.shape[-2:])
    widths = [(0, 0)] * (mosaic.ndim - 2) + [(dy, bottom), (dx, right)]
    return np.pad(mosaic, widths, mode="reflect")


def mosaic_rgb(rgb: Array, cfa: str) -> Array:
    """Sample an RGB image with a Bayer CFA.

    Args:
        rgb: ``(..., 3, H, W)`` (channels-first), even ``H`` and ``W``.
        cfa: pattern of the sensor.

    Returns:
        ``(..., H, W)`` mosaic, each site keeping the colour its filter passes.
    """
    sites = _SITES[check_cfa(cfa)]
    _check_even(rgb.shape[-2], rgb.shape[-1])
    colour_of_channel = (0, 1, 1, 2)
    if isinstance(rgb, torch.Tensor):
        mosaic = rgb.new_empty((*rgb.shape[:-3], *rgb.shape[-2:]))
    else:
        mosaic = np.empty((*rgb.shape[:-3], *rgb.shape[-2:]), dtype=rgb.dtype)
    for channel, (dy, dx) in enumerate(sites):
        mosaic[..., dy::2, dx::2] = rgb[..., colour_of_channel[channel], dy::2, dx::2]
    return mosaic


def normalize_mosaic(
    mosaic: np.ndarray,
    cfa: str,
    black_level: np.ndarray,
    white_level: float,
    wb_gains: np.ndarray | None = None,
) -> np.ndarray:
    """Black/white-normalize and white-balance a mosaic in place of its CFA (full size, same pattern).

    Steps 1-2 of the paper's python ISP: ``(x - black) / (white - black)`` clipped to [0, 1], then the red and
    blue sites multiplied by the as-shot gains (green = 1), clipped to [0, 1] again.

    Args:
        mosaic: ``(H, W)`` raw values.
        cfa: pattern of ``mosaic``.
        black_level: ``(4,)`` black level per site of the 2x2 pattern (row-major).
        white_level: saturation value.
        wb_gains: ``(3,)`` RGB gains with G = 1, or None for no white balance.

    Returns:
        ``float32 (H, W)`` in [0, 1].
    """
    pattern = check_cfa(cfa)
    black = np.asarray(black_level, dtype=np.float32).reshape(2, 2)
    height, width = mosaic.shape
    black_map = np.tile(black, ((height + 1) // 2, (width + 1) // 2))[:height, :width]
    scale = np.float32(white_level) - black_map
    if np.any(scale <= 0):
        raise InputError(f"white level {white_level} must be above the black level {black.ravel().tolist()}")
    out = (mosaic.astype(np.float32) - black_map) / scale
    if wb_gains is not None:
        gains = np.asarray(wb_gains, dtype=np.float32)
        colour_index = {"R": 0, "G": 1, "B": 2}
        gain_map = np.array([gains[colour_index[c]] for c in pattern], dtype=np.float32).reshape(2, 2)
        out *= np.tile(gain_map, ((height + 1) // 2, (width + 1) // 2))[:height, :width]
    return np.clip(out, 0.0, 1.0, out=out)


def normalize(raw: RawImage, *, white_balance: bool = True, pad: bool = False) -> np.ndarray:
    """The canonical NIP input of a RAW file: ``float32 (4, h, w)`` in [0, 1], channels R, G, G, B.

    Black/white normalization and as-shot white balance (paper's python ISP steps 1-2) of the mosaic, cropped
    to an RGGB mosaic by :func:`crop_to_rggb` (so ``h = H/2 - 1`` when red is on the second row) and stacked.
    With ``pad=True`` it is mirror-padded by :func:`pad_to_rggb` instead (``h = H/2 + 1`` then), so a NIP's
    output covers every sensor pixel: sensor row ``y`` is output row ``y + dy``.
    """
    gains = raw.wb_gains if white_balance else None
    norm = normalize_mosaic(raw.mosaic, raw.cfa, raw.black_level, raw.white_level, gains)
    rggb = pad_to_rggb(norm, raw.cfa) if pad else crop_to_rggb(norm, raw.cfa)
    return np.ascontiguousarray(to_rggb(rggb, "RGGB"))
