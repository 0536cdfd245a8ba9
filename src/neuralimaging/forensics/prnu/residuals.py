"""Noise residuals ``W = I - F(I)`` with the wavelet denoiser of Mihcak, Kozintsev & Ramchandran (1999).

4-level db4 decomposition (PyWavelets), every detail coefficient shrunk by a local Wiener filter whose signal
variance is the minimum of the local estimates over 3x3, 5x5, 7x7 and 9x9 windows; for matching, zero-mean
rows and columns on the 2x2 lattice and Wiener filtering in the DFT domain.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pywt
import scipy.fft
import torch
from tqdm import tqdm

from neuralimaging.errors import InputError
from neuralimaging.forensics.prnu.images import Color, ImageLike, _check_image, _iter_images, to_gray

__all__ = ["DEFAULT_SIGMA", "noise_residual", "noise_residuals", "wavelet_residual", "wiener_dft", "zero_mean"]

DEFAULT_SIGMA = 3.0
"""The denoiser's default noise level in 8-bit units (3/255).

The Goljan MATLAB toolbox and prnu-python use 5; 3 gives a fingerprint closer to the true K on the synthetic
and the virtual camera (``benchmarks/prnu.py``; figures in ``docs/benchmarks.md``). Pass ``sigma=5`` for the
toolboxes' setting.
"""

_WINDOWS = (3, 5, 7, 9)


def _box_min_mean(energy: np.ndarray, windows: Sequence[int]) -> np.ndarray:
    """Minimum over ``windows`` of the zero-padded local means of ``energy (..., h, w)``.

    Each square box sum is built from running sums of shifted slices (two adds per radius horizontally,
    ``w`` adds vertically): less CPU than four ``scipy.ndimage.uniform_filter`` calls.
    """
    radii = sorted(w // 2 for w in windows)
    big = radii[-1]
    h, w = energy.shape[-2:]
    padded = np.zeros(energy.shape[:-2] + (h + 2 * big, w + 2 * big), dtype=np.float32)
    padded[..., big : big + h, big : big + w] = energy
    rows = padded[..., :, big : big + w].copy()  # horizontal running sum, radius 0
    result: np.ndarray | None = None
    current = 0
    for radius in radii:
        while current < radius:
            current += 1
            rows += padded[..., :, big - current : big - current + w]
            rows += padded[..., :, big + current : big + current + w]
        box = rows[..., big - radius : big - radius + h, :].copy()
        for dy in range(-radius + 1, radius + 1):
            box += rows[..., big + dy : big + dy + h, :]
        box *= 1.0 / (2 * radius + 1) ** 2
        result = box if result is None else np.minimum(result, box, out=result)
    assert result is not None
    return result


def _wiener_noise(coefficients: np.ndarray, noise_var: float, windows: Sequence[int] = _WINDOWS) -> np.ndarray:
    """The noise part ``c * s^2 / (v + s^2)`` of coefficients, ``v`` the local signal variance (Mihcak et al.)."""
    local = _box_min_mean(coefficients * coefficients, windows)
    # max(mean - s^2, 0) is monotone in the mean, so the minimum over windows commutes with it.
    np.subtract(local, noise_var, out=local)
    np.maximum(local, 0.0, out=local)
    local += noise_var
    np.divide(noise_var, local, out=local)
    local *= coefficients
    return local


def _swap(planes: np.ndarray) -> np.ndarray:
    """Contiguous transpose of the last two axes of float32 ``(B, h, w)``: ``(B, w, h)``.

    Through torch's blocked 2-D transposing copy, faster than numpy's for 1-Mpx planes.
    """
    out = np.empty(planes.shape[:-2] + planes.shape[:-3:-1], dtype=np.float32)
    source, target = torch.from_numpy(np.ascontiguousarray(planes, dtype=np.float32)), torch.from_numpy(out)
    for index in range(len(planes)):
        target[index].copy_(source[index].t())
    return out


def _wavedec2_lines(stack: np.ndarray, levels: int, wavelet: str) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Detail bands of ``pywt.wavedec2(stack, mode="periodization")``, finest level first.

    Every 1-D transform runs along the contiguous last axis: a level transforms the rows, transposes, then
    transforms the (former) columns, which takes less CPU than PyWavelets' strided ``axes=(-2, -1)``.
    So the orientation flips from level to level: the finest level's bands come out transposed, the next
    level's in place but in the order (vertical, horizontal, diagonal), and so on. The shrinkage, symmetric
    in the two axes, does not mind; :func:`_waverec2_lines` undoes it. Needs ``h`` and ``w`` divisible by
    ``2**levels``.
    """
    details = []
    approx = np.ascontiguousarray(stack, dtype=np.float32)
    for _ in range(levels):
        low, high = pywt.dwt(approx, wavelet, mode="periodization", axis=-1)
        approx, low_high = pywt.dwt(_swap(low), wavelet, mode="periodization", axis=-1)
        high_low, high_high = pywt.dwt(_swap(high), wavelet, mode="periodization", axis=-1)
        details.append((low_high, high_low, high_high))
    return details


def _waverec2_lines(details: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], wavelet: str) -> np.ndarray:
    """Inverse of :func:`_wavedec2_lines` with the approximation band set to zero."""
    approx: np.ndarray | None = None
    for low_high, high_low, high_high in reversed(details):
        low = _swap(pywt.idwt(approx, low_high, wavelet, mode="periodization", axis=-1))
        high = _swap(pywt.idwt(high_low, high_high, wavelet, mode="periodization", axis=-1))
        approx = pywt.idwt(low, high, wavelet, mode="periodization", axis=-1)
    assert approx is not None
    return approx


def _wavelet_residual_chunk(stack: np.ndarray, noise_var: float, levels: int, wavelet: str) -> np.ndarray:
    h, w = stack.shape[-2:]
    step = 2**levels
    pad_h, pad_w = (-h) % step, (-w) % step
    if pad_h or pad_w:
        stack = np.pad(stack, ((0, 0), (0, pad_h), (0, pad_w)), mode="symmetric")
    details = _wavedec2_lines(stack, levels, wavelet)
    shrunk = [tuple(_wiener_noise(band, noise_var) for band in bands) for bands in details]
    residual = _waverec2_lines(shrunk, wavelet)  # type: ignore[arg-type]
    return np.ascontiguousarray(residual[:, :h, :w], dtype=np.float32)


def _default_workers() -> int:
    return max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


def wavelet_residual(
    stack: np.ndarray,
    *,
    sigma: float = DEFAULT_SIGMA,
    levels: int = 4,
    wavelet: str = "db4",
    workers: int | None = None,
) -> np.ndarray:
    """Noise residual ``I - F(I)`` of grey planes with the Mihcak wavelet denoiser.

    Args:
        stack: ``(B, H, W)`` or ``(H, W)`` float planes in [0, 1] (not modified).
        sigma: standard deviation of the noise assumed by the denoiser, in 8-bit units (3 = 3/255).
        levels: decomposition levels (4 in the reference toolboxes).
        wavelet: PyWavelets wavelet name (db4).
        workers: threads working on slices of the stack (default: the usable cores, at most 4).

    Returns:
        float32 array shaped like ``stack``: the residual, approximation band set to zero.
    """
    array = np.asarray(stack, dtype=np.float32)
    single = array.ndim == 2
    if single:
        array = array[None]
    if array.ndim != 3:
        raise InputError(f"wavelet_residual: expected (B, H, W) or (H, W) planes, got shape {array.shape}")
    if sigma <= 0:
        raise InputError(f"wavelet_residual: sigma must be positive, got {sigma}")
    noise_var = float((sigma / 255.0) ** 2)
    workers = workers or _default_workers()
    if workers <= 1 or len(array) == 1:
        result = _wavelet_residual_chunk(array, noise_var, levels, wavelet)
    else:
        chunks = np.array_split(array, min(workers, len(array)))
        with ThreadPoolExecutor(len(chunks)) as pool:
            parts = list(pool.map(lambda c: _wavelet_residual_chunk(c, noise_var, levels, wavelet), chunks))
        result = np.concatenate(parts)
    return result[0] if single else result


def zero_mean(x: np.ndarray, *, lattice: bool = True) -> np.ndarray:
    """Remove the mean of every row and column of ``(..., H, W)`` (a new array).

    With ``lattice=True`` this is done separately on each of the four 2x2 lattice positions, which removes
    the row/column patterns left by the colour filter array and by column-wise read-out (Goljan toolbox's
    ``ZeroMeanTotal``).
    """
    out = np.array(x, dtype=np.float32, copy=True)
    views = [out[..., i::2, j::2] for i in (0, 1) for j in (0, 1)] if lattice else [out]
    for view in views:
        view -= view.mean(axis=(-2, -1), keepdims=True)
        view -= view.mean(axis=-1, keepdims=True)
        view -= view.mean(axis=-2, keepdims=True)
    return out


def wiener_dft(x: np.ndarray, sigma: float | None = None) -> np.ndarray:
    """Suppress periodic components of ``(..., H, W)`` by Wiener filtering its DFT magnitude.

    The magnitude spectrum (scaled by ``1/sqrt(HW)``) is treated as a signal whose flat, noise-like part of
    variance ``sigma^2`` is kept and whose local peaks are removed; the phase is kept. ``sigma`` defaults to
    the standard deviation of ``x`` (per plane). Returns a new float32 array.
    """
    array = np.asarray(x, dtype=np.float32)
    h, w = array.shape[-2:]
    spectrum = scipy.fft.fft2(array, axes=(-2, -1), workers=-1)
    magnitude = np.abs(spectrum).astype(np.float32) / np.float32(math.sqrt(h * w))
    if sigma is None:
        std = array.reshape(array.shape[:-2] + (-1,)).std(axis=-1)
    else:
        std = np.full(array.shape[:-2], sigma, dtype=np.float32)
    flat = magnitude.reshape((-1, h, w))
    filtered = np.empty_like(flat)
    for index, (plane, s) in enumerate(zip(flat, np.reshape(std, -1), strict=True)):
        filtered[index] = _wiener_noise(plane[None], float(s) ** 2 + 1e-30)[0]
    filtered = filtered.reshape(magnitude.shape)
    ratio = np.divide(filtered, magnitude, out=np.zeros_like(magnitude), where=magnitude > 0)
    return scipy.fft.ifft2(spectrum * ratio, axes=(-2, -1), workers=-1).real.astype(np.float32)


def _residual_planes(image: np.ndarray, sigma: float, color: Color, workers: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(intensity I (C', H, W), wavelet residual W (C', H, W)) for one checked image; C' = 1 for grey."""
    planes = to_gray(image)[None] if color == "gray" else image
    return planes, wavelet_residual(planes, sigma=sigma, workers=workers)


def _check_color(color: str) -> None:
    if color not in ("gray", "rgb"):
        raise InputError(f"color must be 'gray' or 'rgb', got {color!r}")


def noise_residual(
    image: ImageLike,
    *,
    sigma: float = DEFAULT_SIGMA,
    color: Color = "gray",
    workers: int | None = None,
) -> np.ndarray:
    """The full PRNU noise residual of one image, ready for matching.

    Wavelet residual (of the luminance for ``color="gray"``, of each channel then combined for ``"rgb"``, as
    in the Goljan toolbox), zero-mean rows/columns on the 2x2 lattice, Wiener filtering in the DFT domain.

    Args:
        image: ``(3, H, W)``, ``(1, H, W)`` or ``(H, W)`` in [0, 1].
        sigma: denoiser noise level in 8-bit units.
        color: ``"gray"`` (denoise the luminance; fast) or ``"rgb"`` (denoise each channel).
        workers: threads for the wavelet step.

    Returns:
        float32 ``(H, W)``.
    """
    _check_color(color)
    checked = _check_image(image)
    _, residual = _residual_planes(checked, sigma, color, workers)
    residual = to_gray(residual) if residual.shape[0] == 3 else residual[0]
    return wiener_dft(zero_mean(residual))


def noise_residuals(
    images: Iterable[ImageLike | str | Path] | ImageLike,
    *,
    sigma: float = DEFAULT_SIGMA,
    color: Color = "gray",
    workers: int | None = None,
    progress: bool = False,
) -> list[np.ndarray]:
    """:func:`noise_residual` of every image (arrays, tensors or file paths); a progress bar when asked."""
    items = list(_iter_images(images))
    bar = tqdm(items, desc="residuals", unit="img", disable=not progress, file=sys.stderr)
    return [noise_residual(item, sigma=sigma, color=color, workers=workers) for item in bar]
