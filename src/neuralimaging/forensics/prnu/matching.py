"""Matching an image to a fingerprint: normalized cross-correlation and peak-to-correlation energy (PCE)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.fft

from neuralimaging.errors import InputError
from neuralimaging.forensics.prnu.images import SATURATION, Color, ImageLike, _check_image, _to_numpy, to_gray
from neuralimaging.forensics.prnu.residuals import DEFAULT_SIGMA, noise_residual

__all__ = [
    "PCE_THRESHOLD",
    "WEIGHTING_BLOCK",
    "WEIGHTING_FLOOR",
    "MatchResult",
    "PCEResult",
    "crosscorr",
    "match",
    "ncc",
    "pce",
    "weight_residual",
]

PCE_THRESHOLD = 60.0
"""The usual decision threshold on PCE for camera identification (Goljan et al. 2009)."""

WEIGHTING_BLOCK = 8
"""Tile side of :func:`weight_residual` in :func:`match`: the JPEG block."""

WEIGHTING_FLOOR = 0.3
"""Floor of :func:`weight_residual`'s variance, as a fraction of the median tile's mean square."""


def _check_pair(a: np.ndarray, b: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(_to_numpy(a), dtype=np.float32), np.asarray(_to_numpy(b), dtype=np.float32)
    if a.ndim != 2 or b.ndim != 2:
        raise InputError(f"{what}: expected two (H, W) arrays, got {a.shape} and {b.shape}")
    if a.shape != b.shape:
        raise InputError(f"{what}: sizes differ, {a.shape[0]}x{a.shape[1]} vs {b.shape[0]}x{b.shape[1]}")
    return a, b


def ncc(a: ImageLike, b: ImageLike) -> float:
    """Normalized cross-correlation (Pearson correlation at zero shift) of two ``(H, W)`` arrays."""
    x, y = _check_pair(a, b, "ncc")
    x = x.astype(np.float64) - x.mean(dtype=np.float64)
    y = y.astype(np.float64) - y.mean(dtype=np.float64)
    norm = math.sqrt(float((x * x).sum()) * float((y * y).sum()))
    return float((x * y).sum() / norm) if norm > 0 else 0.0


def crosscorr(a: ImageLike, b: ImageLike) -> np.ndarray:
    """Circular cross-correlation ``c[s] = sum_p a'[p] b'[p - s]`` of zero-mean copies, via the FFT.

    Returns float32 ``(H, W)``; ``c[0, 0]`` is the zero-shift term, negative shifts wrap to the end. The
    inputs are not modified.
    """
    x, y = _check_pair(a, b, "crosscorr")
    x = x - x.mean()
    y = y - y.mean()
    fx = scipy.fft.rfft2(x, workers=-1)
    fy = scipy.fft.rfft2(y, workers=-1)
    return scipy.fft.irfft2(fx * np.conj(fy), s=x.shape, workers=-1).astype(np.float32)


@dataclass(frozen=True)
class PCEResult:
    """PCE of a cross-correlation: the value, the peak's shift ``(dy, dx)`` and correlation at the peak."""

    pce: float
    peak: tuple[int, int]
    peak_value: float


def pce(cc: np.ndarray, *, radius: int = 5, search: int | None = 0, grid: int | None = None) -> PCEResult:
    """Peak-to-correlation energy ``sign(c_p) c_p^2 / mean(c^2 outside the peak's neighbourhood)``.

    Goljan, Fridrich & Filler, "Large scale test of sensor fingerprint camera identification" (2009).

    Args:
        cc: circular cross-correlation ``(H, W)`` from :func:`crosscorr` (zero shift at ``[0, 0]``).
        radius: the excluded neighbourhood is the ``(2 radius + 1)^2`` square centred on the peak, wrapped
            around the edges (the correlation is circular).
        search: the peak is searched over shifts ``|dy|, |dx| <= search`` (0: aligned images, the peak is at
            zero shift); None, or a search as large as the image, searches every shift.
        grid: take the energy only over shifts whose signed difference from the peak's is a multiple of
            ``grid`` in both axes (8: the JPEG grid; ``docs/analysis.md``). None: every shift (the standard
            PCE, the one :data:`PCE_THRESHOLD` is for).

    Returns:
        :class:`PCEResult` with the shift as signed ``(dy, dx)``.
    """
    c = np.asarray(_to_numpy(cc), dtype=np.float64)
    if c.ndim != 2:
        raise InputError(f"pce: expected a 2-D cross-correlation, got shape {c.shape}")
    h, w = c.shape
    if radius < 0 or (2 * radius + 1) >= min(h, w):
        raise InputError(f"pce: neighbourhood radius must be in [0, {(min(h, w) - 2) // 2}], got {radius}")
    if grid is not None and not 1 <= grid <= min(h, w) // 4:
        raise InputError(f"pce: grid must be in [1, {min(h, w) // 4}] for a {h}x{w} correlation, got {grid}")
    if search is None:
        flat = int(np.argmax(c))
        py, px = divmod(flat, w)
    else:
        if search < 0:
            raise InputError(f"pce: search must be >= 0 or None, got {search}")
        # shifts wrap around (the correlation is circular): beyond half the size they repeat
        rows = np.arange(-min(search, h // 2), min(search, (h - 1) // 2) + 1) % h
        cols = np.arange(-min(search, w // 2), min(search, (w - 1) // 2) + 1) % w
        window = c[np.ix_(rows, cols)]
        iy, ix = np.unravel_index(int(np.argmax(window)), window.shape)
        py, px = int(rows[iy]), int(cols[ix])
    peak = float(c[py, px])
    keep = np.ones((h, w), dtype=bool)
    keep[np.ix_((py + np.arange(-radius, radius + 1)) % h, (px + np.arange(-radius, radius + 1)) % w)] = False
    if grid is not None:  # signed circular offsets from the peak, so that wrapped shifts keep their phase
        dy = (np.arange(h) - py + h // 2) % h - h // 2
        dx = (np.arange(w) - px + w // 2) % w - w // 2
        keep &= (dy % grid == 0)[:, None] & (dx % grid == 0)[None, :]
        if not keep.any():
            raise InputError(f"pce: no shift on the grid of {grid} lies outside the peak's neighbourhood of radius {radius}")
    energy = float(np.mean(c[keep] ** 2))
    value = math.copysign(peak * peak, peak) / energy if energy > 0 else 0.0
    shift = (py - h if py > h // 2 else py, px - w if px > w // 2 else px)
    return PCEResult(pce=value, peak=shift, peak_value=peak)


def weight_residual(
    residual: ImageLike,
    *,
    block: int = WEIGHTING_BLOCK,
    floor: float = WEIGHTING_FLOOR,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """The residual divided by its variance, estimated tile by tile: ``W / (v_tile + floor median(v))``.

    ``v_tile`` is the mean of ``W^2`` over ``block x block`` tiles from the top-left pixel (the JPEG grid of an
    uncropped photo; the last row and column of tiles may be smaller). Why and how much it helps:
    ``docs/analysis.md``.

    Args:
        residual: ``(H, W)`` noise residual from :func:`noise_residual`.
        block: tile side in pixels (>= 1).
        floor: the floor as a fraction of the median tile variance (> 0).
        mask: ``(H, W)`` bool, the pixels to use (e.g. not clipped); the others are left out of the tile
            variances and the median and set to zero. None uses every pixel.

    Returns:
        float32 ``(H, W)``.
    """
    w = np.asarray(_to_numpy(residual), dtype=np.float64)
    if w.ndim != 2:
        raise InputError(f"weight_residual: expected an (H, W) residual, got shape {w.shape}")
    if block < 1 or floor <= 0:
        raise InputError(f"weight_residual: block must be >= 1 and floor > 0, got block {block}, floor {floor}")
    valid = np.ones(w.shape, bool) if mask is None else np.asarray(mask, dtype=bool)
    if valid.shape != w.shape:
        raise InputError(f"weight_residual: mask shape {valid.shape} differs from the residual's {w.shape}")
    w = np.where(valid, w, 0.0)
    starts = [np.arange(0, n, block) for n in w.shape]
    sizes = [np.diff(np.append(s, n)) for s, n in zip(starts, w.shape, strict=True)]
    sums = np.add.reduceat(np.add.reduceat(w * w, starts[0], axis=0), starts[1], axis=1)
    counts = np.add.reduceat(np.add.reduceat(valid.astype(np.float64), starts[0], axis=0), starts[1], axis=1)
    variance = sums / np.maximum(counts, 1.0)
    used = variance[counts > 0]
    variance += floor * (float(np.median(used)) if used.size else 0.0) + 1e-30
    return (w / np.repeat(np.repeat(variance, sizes[0], axis=0), sizes[1], axis=1)).astype(np.float32)


@dataclass(frozen=True)
class MatchResult:
    """How well an image's residual matches a fingerprint: PCE (with peak shift) and NCC at zero shift.

    Both are of the residual as correlated (weighted unless ``weighting=None``) against ``I K``.
    """

    pce: float
    ncc: float
    peak: tuple[int, int]

    @property
    def same_camera(self) -> bool:
        """PCE above the usual threshold of 60."""
        return self.pce > PCE_THRESHOLD


def match(
    k: ImageLike,
    image: ImageLike,
    *,
    sigma: float = DEFAULT_SIGMA,
    color: Color = "gray",
    radius: int = 5,
    search: int | None = 0,
    residual: np.ndarray | None = None,
    saturation: float | None = SATURATION,
    weighting: int | None = WEIGHTING_BLOCK,
    grid: int | None = None,
) -> MatchResult:
    """Test whether ``image`` carries fingerprint ``k``: correlate its weighted residual ``W`` with ``I K``.

    Args:
        k: fingerprint ``(H, W)`` from :func:`fingerprint`.
        image: ``(3, H, W)`` / ``(H, W)`` in [0, 1] of the same size.
        sigma: denoiser noise level (use the fingerprint's).
        color: residual colour mode (use the fingerprint's).
        radius: PCE neighbourhood (see :func:`pce`).
        search: PCE peak search (see :func:`pce`).
        grid: PCE energy on a grid (see :func:`pce`).
        residual: the image's residual if already computed (:func:`noise_residual`), before weighting.
        saturation: leave pixels at or above this intensity in any channel out of ``I K`` (clipped pixels carry
            no PRNU); None keeps every pixel.
        weighting: tile side of :func:`weight_residual`, applied to ``W`` before the correlation, with the
            pixels at or above ``saturation`` (:data:`SATURATION` when that is None) left out of it; None correlates
            ``W`` as it is (the Goljan toolbox's detector).
    """
    kk = np.asarray(_to_numpy(k), dtype=np.float32)
    checked = _check_image(image)
    if kk.shape != checked.shape[-2:]:
        raise InputError(f"match: image size {checked.shape[-2]}x{checked.shape[-1]} differs from the fingerprint's {kk.shape[0]}x{kk.shape[1]}")
    w = noise_residual(checked, sigma=sigma, color=color) if residual is None else residual
    keep = checked.max(axis=0) < saturation if saturation is not None else None
    if weighting is not None:  # clipped areas carry no residual: left in, they would pull the floor to zero
        w = weight_residual(w, block=weighting, mask=keep if keep is not None else checked.max(axis=0) < SATURATION)
    signal = to_gray(checked) * kk
    if keep is not None:
        signal *= keep
    result = pce(crosscorr(w, signal), radius=radius, search=search, grid=grid)
    return MatchResult(pce=result.pce, ncc=ncc(w, signal), peak=result.peak)
