"""Matching an image to a fingerprint: normalized cross-correlation and peak-to-correlation energy (PCE)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.fft

from neuralimaging.errors import InputError
from neuralimaging.forensics.prnu.images import Color, ImageLike, _check_image, _to_numpy, to_gray
from neuralimaging.forensics.prnu.residuals import DEFAULT_SIGMA, noise_residual

__all__ = ["PCE_THRESHOLD", "MatchResult", "PCEResult", "crosscorr", "match", "ncc", "pce"]

PCE_THRESHOLD = 60.0
"""The usual decision threshold on PCE for camera identification (Goljan et al. 2009)."""


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


def pce(cc: np.ndarray, *, radius: int = 5, search: int | None = 0) -> PCEResult:
    """Peak-to-correlation energy ``sign(c_p) c_p^2 / mean(c^2 outside the peak's neighbourhood)``.

    Goljan, Fridrich & Filler, "Large scale test of sensor fingerprint camera identification" (2009).

    Args:
        cc: circular cross-correlation ``(H, W)`` from :func:`crosscorr` (zero shift at ``[0, 0]``).
        radius: the excluded neighbourhood is the ``(2 radius + 1)^2`` square centred on the peak, wrapped
            around the edges (the correlation is circular).
        search: the peak is searched over shifts ``|dy|, |dx| <= search`` (0: aligned images, the peak is at
            zero shift); None, or a search as large as the image, searches every shift.

    Returns:
        :class:`PCEResult` with the shift as signed ``(dy, dx)``.
    """
    c = np.asarray(_to_numpy(cc), dtype=np.float64)
    if c.ndim != 2:
        raise InputError(f"pce: expected a 2-D cross-correlation, got shape {c.shape}")
    h, w = c.shape
    if radius < 0 or (2 * radius + 1) >= min(h, w):
        raise InputError(f"pce: neighbourhood radius must be in [0, {(min(h, w) - 2) // 2}], got {radius}")
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
    energy = float(np.mean(c[keep] ** 2))
    value = math.copysign(peak * peak, peak) / energy if energy > 0 else 0.0
    shift = (py - h if py > h // 2 else py, px - w if px > w // 2 else px)
    return PCEResult(pce=value, peak=shift, peak_value=peak)


@dataclass(frozen=True)
class MatchResult:
    """How well an image's residual matches a fingerprint: PCE (with peak shift) and NCC at zero shift."""

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
    saturation: float | None = None,
) -> MatchResult:
    """Test whether ``image`` carries fingerprint ``k``: correlate its residual ``W`` with ``I K``.

    Args:
        k: fingerprint ``(H, W)`` from :func:`fingerprint`.
        image: ``(3, H, W)`` / ``(H, W)`` in [0, 1] of the same size.
        sigma, color: residual settings (use the fingerprint's).
        radius, search: PCE settings (see :func:`pce`).
        residual: the image's residual if already computed (:func:`noise_residual`).
        saturation: leave pixels at or above this intensity in any channel out of ``I K`` (clipped pixels carry
            no PRNU); None keeps every pixel.
    """
    kk = np.asarray(_to_numpy(k), dtype=np.float32)
    checked = _check_image(image)
    if kk.shape != checked.shape[-2:]:
        raise InputError(f"match: image size {checked.shape[-2]}x{checked.shape[-1]} differs from the fingerprint's {kk.shape[0]}x{kk.shape[1]}")
    w = noise_residual(checked, sigma=sigma, color=color) if residual is None else residual
    signal = to_gray(checked) * kk
    if saturation is not None:
        signal *= checked.max(axis=0) < saturation
    result = pce(crosscorr(w, signal), radius=radius, search=search)
    return MatchResult(pce=result.pce, ncc=ncc(w, signal), peak=result.peak)
