"""The maximum-likelihood PRNU fingerprint of one camera from its developed images."""

from __future__ import annotations

import math
import sys
from collections import deque
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from neuralimaging.errors import InputError
from neuralimaging.forensics.prnu.images import SATURATION, Color, ImageLike, _check_image, _iter_items, load_image, to_gray
from neuralimaging.forensics.prnu.residuals import (
    DEFAULT_SIGMA,
    _check_color,
    _default_workers,
    wavelet_residual,
    wiener_dft,
    zero_mean,
)

__all__ = ["fingerprint"]


def _fingerprint_image(item: ImageLike | str | Path, index: int, color: Color, shape: tuple[int, ...] | None) -> np.ndarray:
    """One fingerprint image read (if a path) and checked: C-contiguous float32 ``(C, H, W)`` of ``shape``.

    Images made from ``(H, W, 3)`` arrays by a transposing view (as photo readers give them) are copied into
    planes first: the per-pixel maximum over channels of such a view is far slower than of planes.
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
    saturation: float | None = SATURATION,
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
