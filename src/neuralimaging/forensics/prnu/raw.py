"""PRNU in the RAW domain: residuals, fingerprints and matching on the Bayer mosaic of RAW files.

The estimate works on the mosaic read by LibRaw, before demosaicing spreads K over neighbouring sites; each
of the four CFA sub-planes is denoised on its own and the ML sums are optionally weighted by the inverse
noise variance of the file's DNG NoiseProfile (the ML estimate under Poisson-Gaussian noise). Not in the
paper, whose toolbox works on developed images; best from flat-field shots
(``virtual_camera.synthesize_flat_fields``).
"""

from __future__ import annotations

import sys
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import numpy as np
from tqdm import tqdm

from neuralimaging.errors import InputError
from neuralimaging.forensics.prnu.images import ImageLike, _to_numpy
from neuralimaging.forensics.prnu.matching import MatchResult, match
from neuralimaging.forensics.prnu.residuals import (
    DEFAULT_SIGMA,
    _default_workers,
    wavelet_residual,
    wiener_dft,
    zero_mean,
)

__all__ = [
    "RAW_WEIGHTS",
    "Mosaic",
    "match_raw",
    "mosaic_residual",
    "raw_fingerprint",
    "raw_noise_residual",
    "read_mosaic",
]

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
    grid: int | None = None,
) -> MatchResult:
    """:func:`match` for a RAW file against a :func:`raw_fingerprint`: the mosaic's residual ``W`` against
    ``I K`` on the sensor's sites, unweighted (``radius``, ``search``, ``grid``: see :func:`pce`)."""
    mosaic = read_mosaic(path)
    kk = np.asarray(_to_numpy(k), dtype=np.float32)
    if kk.shape != mosaic.values.shape:
        raise InputError(
            f"{mosaic.path}: mosaic {mosaic.values.shape[0]}x{mosaic.values.shape[1]} differs from the "
            f"fingerprint's {kk.shape[0]}x{kk.shape[1]}"
        )
    return match(kk, mosaic.values, radius=radius, search=search, grid=grid,
                 residual=raw_noise_residual(mosaic, sigma=sigma), saturation=None, weighting=None)
