"""PRNU sensor fingerprints: noise residuals, maximum-likelihood fingerprints, NCC and PCE matching.

The standard Lukas-Fridrich-Goljan pipeline (Lukas, Fridrich & Goljan, "Digital camera identification from
sensor pattern noise", IEEE TIFS 2006; Chen, Fridrich, Goljan & Lukas, "Determining image origin and
integrity using sensor noise", IEEE TIFS 2008), as used by Korus & Memon (section 3.3):

- noise residual ``W = I - F(I)`` with the wavelet denoiser ``F`` of Mihcak, Kozintsev & Ramchandran (1999):
  4-level db4 decomposition (PyWavelets), every detail coefficient shrunk by a local Wiener filter whose
  signal variance is the minimum of the local estimates over 3x3, 5x5, 7x7 and 9x9 windows;
- the fingerprint as the maximum-likelihood estimate ``K = sum(W_i I_i) / sum(I_i^2)`` over saturated-free
  pixels (the same mask in the numerator and the denominator), then zero-mean rows and columns (on each of
  the four 2x2 lattice positions) and Wiener filtering in the DFT domain to remove periodic artifacts;
- matching by normalized cross-correlation and by the peak-to-correlation energy (PCE), with the peak's
  neighbourhood excluded as a square centred on the peak that wraps around the image edges;
- in the RAW domain (:func:`raw_fingerprint`, :func:`match_raw`): the same estimate on the Bayer mosaic of RAW
  files read by LibRaw, before demosaicing spreads K over neighbouring sites, each of the four CFA sub-planes
  denoised on its own, the ML sums optionally weighted by the inverse noise variance of the file's DNG
  NoiseProfile (the ML estimate under Poisson-Gaussian noise). Not in the paper, whose toolbox works on
  developed images; best from flat-field shots (``virtual_camera.synthesize_flat_fields``).

Images are float arrays in [0, 1]: one image is ``(3, H, W)`` RGB or ``(H, W)`` grey, a batch is
``(N, 3, H, W)`` / ``(N, 1, H, W)`` or a sequence of single images (numpy arrays or torch tensors). The
denoiser's ``sigma`` is given in 8-bit units as in the reference toolboxes: 3 (3/255, :data:`DEFAULT_SIGMA`)
by default, where the toolboxes use 5. No function modifies its inputs.

Example:
    >>> K = fingerprint(flat_field_images)               # (H, W) float32
    >>> match(K, image).pce > 60                          # same camera?
"""

from __future__ import annotations

import math
import os
import sys
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import pywt
import scipy.fft
import torch
from tqdm import tqdm

from neuralimaging.errors import InputError

__all__ = [
    "DEFAULT_SIGMA",
    "GRAY_WEIGHTS",
    "PCE_THRESHOLD",
    "RAW_WEIGHTS",
    "MatchResult",
    "Mosaic",
    "PCEResult",
    "crosscorr",
    "fingerprint",
    "load_image",
    "match",
    "match_raw",
    "mosaic_residual",
    "ncc",
    "noise_residual",
    "noise_residuals",
    "pce",
    "raw_fingerprint",
    "raw_noise_residual",
    "read_mosaic",
    "synthetic_shots",
    "to_gray",
    "wavelet_residual",
    "wiener_dft",
    "zero_mean",
]

GRAY_WEIGHTS = (0.29893602, 0.58704307, 0.11402090)
"""RGB to grey weights (ITU-R BT.601, as in the Goljan toolbox's ``rgb2gray1``)."""

DEFAULT_SIGMA = 3.0
"""The denoiser's default noise level in 8-bit units (3/255).

The Goljan MATLAB toolbox and prnu-python use 5; 3 gives a fingerprint closer to the true K on the synthetic
and the virtual camera (``benchmarks/prnu.py``; figures in ``docs/benchmarks.md``). Pass ``sigma=5`` for the
toolboxes' setting.
"""

PCE_THRESHOLD = 60.0
"""The usual decision threshold on PCE for camera identification (Goljan et al. 2009)."""

_WINDOWS = (3, 5, 7, 9)
Color = Literal["gray", "rgb"]
ImageLike = np.ndarray | torch.Tensor


# --------------------------------------------------------------------------------------------- helpers


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


def load_image(path: str | Path) -> np.ndarray:
    """Read an image file as float32 ``(3, H, W)`` in [0, 1] (16-bit PNG/TIFF keep their precision)."""
    try:
        from neuralimaging.io import load_image as _load  # helper A's reader (16-bit aware)
    except ImportError:  # pragma: no cover - before neuralimaging.io exists
        from neuralimaging.data.photos import load_photo

        return load_photo(path).transpose(2, 0, 1).astype(np.float32) / 255.0
    return np.asarray(_load(path), dtype=np.float32)


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


def _box_min_mean(energy: np.ndarray, windows: Sequence[int]) -> np.ndarray:
    """Minimum over ``windows`` of the zero-padded local means of ``energy (..., h, w)``.

    Each square box sum is built from running sums of shifted slices (two adds per radius horizontally,
    ``w`` adds vertically): about 2.7x less CPU than four ``scipy.ndimage.uniform_filter`` calls.
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

    Through torch's blocked 2-D transposing copy, about twice as fast as numpy's for 1-Mpx planes.
    """
    out = np.empty(planes.shape[:-2] + planes.shape[:-3:-1], dtype=np.float32)
    source, target = torch.from_numpy(np.ascontiguousarray(planes, dtype=np.float32)), torch.from_numpy(out)
    for index in range(len(planes)):
        target[index].copy_(source[index].t())
    return out


def _wavedec2_lines(stack: np.ndarray, levels: int, wavelet: str) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Detail bands of ``pywt.wavedec2(stack, mode="periodization")``, finest level first.

    Every 1-D transform runs along the contiguous last axis: a level transforms the rows, transposes, then
    transforms the (former) columns, which is 2-3x less CPU than PyWavelets' strided ``axes=(-2, -1)``.
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


# ------------------------------------------------------------------------------------------ residuals


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


# ---------------------------------------------------------------------------------------- fingerprint


def _fingerprint_image(item: ImageLike | str | Path, index: int, color: Color, shape: tuple[int, ...] | None) -> np.ndarray:
    """One fingerprint image read (if a path) and checked: C-contiguous float32 ``(C, H, W)`` of ``shape``.

    Images made from ``(H, W, 3)`` arrays by a transposing view (as photo readers give them) are copied into
    planes first: the per-pixel maximum over channels of such a view is about 60x slower than of planes.
    """
    image = _check_image(load_image(item) if isinstance(item, (str, Path)) else item, f"image {index}")
    if color == "rgb" and image.shape[0] != 3:
        raise InputError(f"image {index}: color='rgb' needs (3, H, W) images, got {image.shape}")
    if shape is not None and image.shape != shape:
        raise InputError(
            f"image {index}: size {image.shape[-2]}x{image.shape[-1]} differs from the first image's "
            f"{shape[-2]}x{shape[-1]}; crop all images to one size"
        )
    return np.ascontiguousarray(image)


def _ml_sums(
    items: Sequence[tuple[int, ImageLike | str | Path]],
    shape: tuple[int, ...],
    sigma: float,
    color: Color,
    saturation: float | None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """``(sum(W_i I_i), sum(I_i^2), count)`` over a few images, float64 ``(C', H, W)``; runs in a worker thread."""
    images = [_fingerprint_image(item, index, color, shape) for index, item in items]
    planes = np.stack([to_gray(image)[None] if color == "gray" else image for image in images])  # (B, C', H, W)
    residual = wavelet_residual(planes.reshape((-1,) + planes.shape[-2:]), sigma=sigma, workers=1)
    residual = residual.reshape(planes.shape)
    if saturation is not None:
        planes *= np.stack([image.max(axis=0, keepdims=True) < saturation for image in images])
    residual *= planes
    numerator = residual.sum(axis=0, dtype=np.float64)
    np.square(planes, out=planes)
    return numerator, planes.sum(axis=0, dtype=np.float64), len(images)


def fingerprint(
    images: Iterable[ImageLike | str | Path] | ImageLike,
    *,
    sigma: float = DEFAULT_SIGMA,
    color: Color = "gray",
    saturation: float | None = 254.0 / 255.0,
    min_images: int = 2,
    batch_size: int = 8,
    workers: int | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Maximum-likelihood PRNU fingerprint ``K = sum(W_i I_i) / sum(I_i^2)`` of one camera.

    Chen, Fridrich, Goljan & Lukas (2008), eq. 3. Pixels at or above ``saturation`` in any channel are left
    out of both sums (the reference MATLAB toolbox does the same; prnu-python masks only the denominator).
    The estimate is then made zero-mean (rows/columns per 2x2 lattice position) and Wiener-filtered in the
    DFT domain. Images are read, checked, denoised and summed by ``workers`` threads, a few at a time, so
    any number of them fits in memory.

    Args:
        images: sequence of ``(3, H, W)`` / ``(H, W)`` images in [0, 1] (arrays, tensors or file paths) or
            a ``(N, C, H, W)`` batch; all of one size.
        sigma: denoiser noise level in 8-bit units (3 by default; the MATLAB toolbox and prnu-python use 5,
            which gives a slightly weaker fingerprint: see ``docs/benchmarks.md``).
        color: ``"gray"`` estimates K from the luminance (fast); ``"rgb"`` per channel, then combined.
        saturation: intensity at which a pixel counts as saturated; None keeps every pixel.
        min_images: fewer images than this is an error.
        batch_size: images in flight at once (split among the workers; more uses more memory).
        workers: threads (default: the usable cores, at most 4).
        progress: show a progress bar (stderr).

    Returns:
        float32 ``(H, W)``: the fingerprint K.

    Raises:
        InputError: too few images, images of different sizes, values outside [0, 1].
    """
    _check_color(color)
    if sigma <= 0:
        raise InputError(f"fingerprint: sigma must be positive, got {sigma}")
    workers = workers or _default_workers()
    per_task = max(1, math.ceil(batch_size / workers))
    numerator: np.ndarray | None = None
    denominator: np.ndarray | None = None
    shape: tuple[int, ...] | None = None
    count = 0
    chunk: list[tuple[int, ImageLike | str | Path]] = []
    pending: deque[Future] = deque()
    pool = ThreadPoolExecutor(workers) if workers > 1 else None
    bar = tqdm(desc="fingerprint", unit="img", disable=not progress, file=sys.stderr)

    def add(sums: tuple[np.ndarray, np.ndarray, int]) -> None:
        nonlocal numerator, denominator
        num, den, done = sums
        numerator = num if numerator is None else np.add(numerator, num, out=numerator)
        denominator = den if denominator is None else np.add(denominator, den, out=denominator)
        bar.update(done)

    def dispatch() -> None:
        assert shape is not None
        if pool is None:
            add(_ml_sums(chunk, shape, sigma, color, saturation))
        else:
            pending.append(pool.submit(_ml_sums, list(chunk), shape, sigma, color, saturation))
            while len(pending) > workers:  # bounded memory: at most workers + 1 chunks in flight
                add(pending.popleft().result())
        chunk.clear()

    try:
        for index, item in enumerate(_iter_items(images)):
            if shape is None:  # the first image sets the size the others must have
                item = _fingerprint_image(item, index, color, None)
                shape = item.shape
            chunk.append((index, item))
            count += 1
            if len(chunk) >= per_task:
                dispatch()
        if count < min_images:
            raise InputError(f"a fingerprint needs at least {min_images} images, got {count}")
        if chunk:
            dispatch()
        while pending:
            add(pending.popleft().result())
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
    assert numerator is not None and denominator is not None
    k = (numerator / (denominator + 1e-12)).astype(np.float32)
    k = to_gray(k) if k.shape[0] == 3 else k[0]
    k = zero_mean(k)
    return wiener_dft(k)


# ------------------------------------------------------------------------------------------ RAW domain

RawWeights = Literal["auto", "profile", "none"]
RAW_WEIGHTS: tuple[str, ...] = get_args(RawWeights)
"""Values of :func:`raw_fingerprint`'s ``weights``."""
_SITES = ((0, 0), (0, 1), (1, 0), (1, 1))  # the four positions of the 2x2 CFA lattice


@dataclass(frozen=True)
class Mosaic:
    """A Bayer mosaic read for PRNU work: ``values`` float32 ``(H, W)``, normalized to [0, 1] between each
    site's black level and the white level; ``cfa``; ``noise_profile`` ``(S, O)`` from the DNG, or None."""

    path: Path
    values: np.ndarray
    cfa: str
    noise_profile: tuple[float, float] | None


def read_mosaic(path: str | Path) -> Mosaic:
    """Read the visible Bayer mosaic of a RAW file (LibRaw via :func:`~neuralimaging.acquisition.raw.read_raw`).

    Raises:
        InputError: not a Bayer RAW file (one line naming the file), or a mosaic with odd sides.
    """
    from neuralimaging.acquisition.bayer import normalize_mosaic
    from neuralimaging.acquisition.raw import read_raw

    raw = read_raw(path)
    if raw.mosaic.shape[0] % 2 or raw.mosaic.shape[1] % 2 or min(raw.mosaic.shape) < 32:
        raise InputError(f"{raw.path}: expected a Bayer mosaic with even sides of at least 32, got {raw.mosaic.shape}")
    values = normalize_mosaic(raw.mosaic, raw.cfa, raw.black_level, raw.white_level)  # no white balance
    return Mosaic(raw.path, values, raw.cfa, raw.noise_profile)


def mosaic_residual(mosaic: np.ndarray, *, sigma: float = DEFAULT_SIGMA, workers: int | None = None) -> np.ndarray:
    """Wavelet noise residual of a Bayer mosaic ``(H, W)`` (even sides), each of its four CFA sub-planes
    (one colour each, half the size) denoised on its own, so that no colour's signal leaks into another's.

    Returns:
        float32 ``(H, W)``, laid out like the mosaic.
    """
    values = np.asarray(mosaic, dtype=np.float32)
    if values.ndim != 2 or values.shape[0] % 2 or values.shape[1] % 2:
        raise InputError(f"mosaic_residual: expected an (H, W) mosaic with even sides, got shape {values.shape}")
    planes = np.stack([values[i::2, j::2] for i, j in _SITES])
    residual = wavelet_residual(planes, sigma=sigma, workers=workers)
    out = np.empty_like(values)
    for plane, (i, j) in zip(residual, _SITES, strict=True):
        out[i::2, j::2] = plane
    return out


def raw_noise_residual(mosaic: Mosaic | np.ndarray, *, sigma: float = DEFAULT_SIGMA, workers: int | None = None) -> np.ndarray:
    """The full matching residual of a mosaic: :func:`mosaic_residual`, zero-mean rows/columns on the 2x2
    lattice, Wiener filtering in the DFT domain. float32 ``(H, W)``."""
    values = mosaic.values if isinstance(mosaic, Mosaic) else mosaic
    return wiener_dft(zero_mean(mosaic_residual(values, sigma=sigma, workers=workers)))


def _raw_ml_sums(
    path: str | Path, shape: tuple[int, int] | None, sigma: float, weights: RawWeights, saturation: float
) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    mosaic = read_mosaic(path)
    values = mosaic.values
    if shape is not None and values.shape != shape:
        raise InputError(
            f"{mosaic.path}: mosaic {values.shape[0]}x{values.shape[1]} differs from the first file's "
            f"{shape[0]}x{shape[1]}; use RAW files of one camera and size"
        )
    if weights == "profile" and mosaic.noise_profile is None:
        raise InputError(f"{mosaic.path}: no DNG NoiseProfile tag; use weights='auto' or 'none'")
    residual = mosaic_residual(values, sigma=sigma, workers=1)
    signal = np.clip(values - residual, 0.0, None)  # the denoised mosaic: the I of the ML sums
    signal *= values < saturation
    weight: np.ndarray | float = 1.0
    if weights != "none" and mosaic.noise_profile is not None:
        s, o = mosaic.noise_profile
        weight = 1.0 / (np.float32(s) * signal + np.float32(max(o, 1e-12)))
    numerator = (residual * signal * weight).astype(np.float64)
    denominator = (signal * signal * weight).astype(np.float64)
    return numerator, denominator, values.shape


def raw_fingerprint(
    paths: Sequence[str | Path],
    *,
    sigma: float = DEFAULT_SIGMA,
    weights: RawWeights = "auto",
    saturation: float = 0.99,
    min_images: int = 2,
    workers: int | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Maximum-likelihood PRNU fingerprint on the Bayer mosaic of RAW files (LibRaw; DNG and camera formats).

    ``K = sum(w_i W_i I_i) / sum(w_i I_i^2)`` with ``W_i`` the :func:`mosaic_residual` of shot ``i``, ``I_i``
    its denoised mosaic and ``w_i = 1 / (S_i I_i + O_i)`` the inverse Poisson-Gaussian noise variance of its DNG
    NoiseProfile ``(S_i, O_i)``: the ML estimate when the noise level varies between shots and with the signal
    (Chen et al. 2008 derive the unweighted form for a constant noise level). Pixels at or above ``saturation``
    (normalized) are left out; then zero-mean rows/columns per lattice position and DFT-domain Wiener
    filtering, as for :func:`fingerprint`. Flat-field shots give the best estimate (no scene in the residual).

    Args:
        paths: RAW files of one camera, all of one size.
        sigma: denoiser noise level in 8-bit units of the normalized mosaic.
        weights: ``"auto"`` (each file's NoiseProfile when it has one, else unweighted), ``"profile"``
            (required: a file without one is an error) or ``"none"``.
        saturation: normalized value at which a site counts as clipped.
        min_images: fewer files than this is an error.
        workers: threads, one file each (default: the usable cores, at most 4).
        progress: show a progress bar (stderr).

    Returns:
        float32 ``(H, W)``: K on the sensor's sites, aligned with the mosaic (compare it with
        ``virtual_camera.CameraProfile.prnu()`` for virtual-camera shots).

    Raises:
        InputError: too few files, files that are not Bayer RAW files, mosaics of different sizes, a missing
            NoiseProfile with ``weights="profile"``; the message names the file.
    """
    if weights not in RAW_WEIGHTS:
        raise InputError(f"weights must be 'auto', 'profile' or 'none', got {weights!r}")
    if sigma <= 0:
        raise InputError(f"raw_fingerprint: sigma must be positive, got {sigma}")
    files = [Path(p) for p in paths]
    if len(files) < min_images:
        raise InputError(f"a fingerprint needs at least {min_images} RAW files, got {len(files)}")
    numerator, denominator, shape = _raw_ml_sums(files[0], None, sigma, weights, saturation)
    workers = workers or _default_workers()
    bar = tqdm(total=len(files), initial=1, desc="raw fingerprint", unit="img", disable=not progress, file=sys.stderr)

    def add(future: Future) -> None:
        num, den, _ = future.result()
        np.add(numerator, num, out=numerator)
        np.add(denominator, den, out=denominator)
        bar.update(1)

    try:
        with ThreadPoolExecutor(workers) as pool:
            pending: deque[Future] = deque()
            for path in files[1:]:
                pending.append(pool.submit(_raw_ml_sums, path, shape, sigma, weights, saturation))
                while len(pending) > workers:  # bounded memory
                    add(pending.popleft())
            while pending:
                add(pending.popleft())
    finally:
        bar.close()
    k = (numerator / (denominator + 1e-12)).astype(np.float32)
    return wiener_dft(zero_mean(k))


def match_raw(
    k: ImageLike,
    path: str | Path,
    *,
    sigma: float = DEFAULT_SIGMA,
    radius: int = 5,
    search: int | None = 0,
) -> MatchResult:
    """:func:`match` for a RAW file against a :func:`raw_fingerprint`: the mosaic's residual ``W`` against
    ``I K`` on the sensor's sites."""
    mosaic = read_mosaic(path)
    kk = np.asarray(_to_numpy(k), dtype=np.float32)
    if kk.shape != mosaic.values.shape:
        raise InputError(
            f"{mosaic.path}: mosaic {mosaic.values.shape[0]}x{mosaic.values.shape[1]} differs from the "
            f"fingerprint's {kk.shape[0]}x{kk.shape[1]}"
        )
    return match(kk, mosaic.values, radius=radius, search=search, residual=raw_noise_residual(mosaic, sigma=sigma))


# ------------------------------------------------------------------------------------------- matching


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


# ------------------------------------------------------------------------------------ synthetic camera


def synthetic_shots(
    photos: Sequence[np.ndarray],
    k: np.ndarray,
    n: int,
    *,
    noise: float = 0.01,
    zoom: float = 1.5,
    seed: int = 0,
) -> list[np.ndarray]:
    """Shots of a synthetic camera with PRNU ``k``: ``clip(X (1 + K) + N(0, noise^2))`` (Chen et al. 2008, eq. 1).

    Every shot frames its scene anew, as a hand-held camera does: the photos are used in turn (a fresh
    random order for every round), each enlarged (bicubic) by a random factor between the smallest that
    covers ``k`` (1 for photos that already do) and ``zoom`` times that, cropped at a random place, turned by
    a random multiple of 90 degrees (square ``k``; 0 or 180 otherwise) and mirrored at random. So shots
    practically never share pixel-aligned content, which would make the denoiser's content leak add up
    coherently in a fingerprint. This tests estimators where the true K is known without a RAW pipeline;
    :mod:`neuralimaging.acquisition.virtual_camera` does the same through a sensor model.

    Args:
        photos: ``uint8 (H, W, 3)`` photographs (e.g. :func:`neuralimaging.data.photos.load_photo`).
        k: true PRNU factor ``(S, S')``, typically ``N(0, 0.01^2)``.
        n: number of shots.
        noise: standard deviation of the additive noise (image units).
        zoom: largest extra enlargement (>= 1; 1 keeps the covering size).
        seed: seed of the framing and the noise.

    Returns:
        ``n`` float32 ``(3, S, S')`` images in [0, 1].
    """
    from PIL import Image

    if not photos:
        raise InputError("synthetic_shots: needs at least one photo")
    if zoom < 1.0:
        raise InputError(f"synthetic_shots: zoom must be >= 1, got {zoom}")
    k = np.asarray(k, dtype=np.float32)
    size_y, size_x = k.shape
    rng = np.random.default_rng(seed)
    order = np.concatenate([rng.permutation(len(photos)) for _ in range(n // len(photos) + 1)])[:n]
    shots = []
    for index in order:
        photo = photos[int(index)]
        h, w = photo.shape[:2]
        scale = max(size_y / h, size_x / w, 1.0) * float(rng.uniform(1.0, zoom))
        h, w = max(size_y, math.ceil(h * scale)), max(size_x, math.ceil(w * scale))
        if (h, w) != photo.shape[:2]:
            photo = np.asarray(Image.fromarray(photo).resize((w, h), Image.BICUBIC))
        top, left = int(rng.integers(h - size_y + 1)), int(rng.integers(w - size_x + 1))
        crop = photo[top : top + size_y, left : left + size_x].transpose(2, 0, 1).astype(np.float32) / 255.0
        turns = int(rng.integers(4)) if size_y == size_x else 2 * int(rng.integers(2))
        crop = np.rot90(crop, turns, axes=(1, 2))
        if rng.random() < 0.5:
            crop = crop[:, :, ::-1]
        shot = crop * (1.0 + k) + rng.normal(0.0, noise, crop.shape).astype(np.float32)
        shots.append(np.clip(shot, 0.0, 1.0).astype(np.float32))
    return shots
