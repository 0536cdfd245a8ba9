"""PRNU tampering localization: windowed correlation, a correlation predictor and best-F1 scoring.

The protocol of Chen, Fridrich, Goljan & Lukas, "Determining image origin and integrity using sensor noise"
(IEEE TIFS 2008), with the settings of Korus & Memon (section 3.3): a 129x129 window slides with stride 8
over the image; the correlation ``rho`` between the noise residual ``W`` and the expected PRNU term ``I K``
inside it is attributed to the window's central pixel. A linear predictor, trained on untampered images of
the camera, gives the correlation ``rho_hat`` expected from local content (intensity, texture, flat/saturated
area, and their products). The tampering probability weighs the two hypotheses with equal priors::

    p = N(rho; 0, s0) / (N(rho; 0, s0) + N(rho; rho_hat, s1))

(``s0``: spread of correlations with a mismatched fingerprint, ``s1``: the predictor's error). Localization
is scored by the best F1 over decision thresholds against the ground-truth mask at the window centres.

All windowed sums come from integral images (float64), so a 1-Mpx image takes milliseconds, not a Python
loop per window.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import uniform_filter

from neuralimaging.errors import InputError
from neuralimaging.forensics.prnu import DEFAULT_SIGMA, SATURATION, noise_residual, to_gray
from neuralimaging.forensics.prnu.images import _check_image

__all__ = [
    "CorrelationPredictor",
    "LocalizationResult",
    "best_f1",
    "centres",
    "load_camera_model",
    "save_camera_model",
    "content_features",
    "localize",
    "tamper_flip",
    "windowed_correlation",
]


# ------------------------------------------------------------------------------------------ tampering


def tamper_flip(
    image: np.ndarray | torch.Tensor, size: int = 256, *, center: tuple[int, int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Flip a square region horizontally, the synthetic forgery of Korus & Memon (section 3.3).

    Args:
        image: ``(C, H, W)`` or ``(H, W)`` (not modified).
        size: side of the flipped square (256 in the paper).
        center: ``(y, x)`` of the square's centre; default the image centre.

    Returns:
        ``(tampered copy, mask)`` with ``mask`` bool ``(H, W)``, True inside the flipped square.
    """
    array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    h, w = array.shape[-2:]
    if size < 2 or size > min(h, w):
        raise InputError(f"tamper size must be in [2, {min(h, w)}] for a {h}x{w} image, got {size}")
    cy, cx = center if center is not None else (h // 2, w // 2)
    top, left = cy - size // 2, cx - size // 2
    if top < 0 or left < 0 or top + size > h or left + size > w:
        raise InputError(f"a {size}x{size} region centred at ({cy}, {cx}) does not fit in a {h}x{w} image")
    out = array.copy()
    out[..., top : top + size, left : left + size] = array[..., top : top + size, left : left + size][..., ::-1]
    mask = np.zeros((h, w), dtype=bool)
    mask[top : top + size, left : left + size] = True
    return out, mask


# ------------------------------------------------------------------------------------- windowed sums


def centres(length: int, window: int, stride: int) -> np.ndarray:
    """Centres of the windows that fit entirely inside ``length`` pixels: ``r, r + stride, ...``."""
    r = window // 2
    if window > length:
        raise InputError(f"window {window} is larger than the image side {length}")
    return np.arange(r, length - r, stride)


def _check_window(window: int, stride: int) -> None:
    if window < 3 or window % 2 == 0:
        raise InputError(f"window must be an odd size >= 3, got {window}")
    if stride < 1:
        raise InputError(f"stride must be >= 1, got {stride}")


def _integral(x: np.ndarray) -> np.ndarray:
    s = np.zeros((x.shape[0] + 1, x.shape[1] + 1), dtype=np.float64)
    np.cumsum(x, axis=0, dtype=np.float64, out=s[1:, 1:])
    np.cumsum(s[1:, 1:], axis=1, out=s[1:, 1:])
    return s


def _window_sums(x: np.ndarray, ys: np.ndarray, xs: np.ndarray, r: int) -> np.ndarray:
    s = _integral(x)
    y0, y1 = ys - r, ys + r + 1
    x0, x1 = xs - r, xs + r + 1
    return s[np.ix_(y1, x1)] - s[np.ix_(y0, x1)] - s[np.ix_(y1, x0)] + s[np.ix_(y0, x0)]


def windowed_correlation(
    a: np.ndarray, b: np.ndarray, *, window: int = 129, stride: int = 8
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pearson correlation of ``a`` and ``b`` (both ``(H, W)``) in every ``window`` x ``window`` square.

    Returns ``(rho (gh, gw) float32, ys, xs)``: the correlation attributed to each window's central pixel
    and the centre coordinates (see :func:`centres`).
    """
    _check_window(window, stride)
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise InputError(f"windowed_correlation: expected two (H, W) arrays of one size, got {a.shape} and {b.shape}")
    ys, xs = centres(a.shape[0], window, stride), centres(a.shape[1], window, stride)
    r, n = window // 2, float(window * window)
    sa, sb = _window_sums(a, ys, xs, r), _window_sums(b, ys, xs, r)
    sab, saa, sbb = _window_sums(a * b, ys, xs, r), _window_sums(a * a, ys, xs, r), _window_sums(b * b, ys, xs, r)
    cov = sab - sa * sb / n
    var = np.maximum(saa - sa * sa / n, 0.0) * np.maximum(sbb - sb * sb / n, 0.0)
    rho = np.divide(cov, np.sqrt(var), out=np.zeros_like(cov), where=var > 0)
    return rho.astype(np.float32), ys, xs


# ------------------------------------------------------------------------------------------ predictor

_N_FEATURES = 10


def content_features(
    intensity: np.ndarray, ys: np.ndarray, xs: np.ndarray, window: int, *, saturation: float = SATURATION
) -> np.ndarray:
    """Features of the content in every window, for predicting the PRNU correlation (Chen et al. 2008).

    Per window: mean intensity ``f_i``, texture ``f_t`` (mean of ``1 / (1 + var5(high-pass)/0.01^2)``, near 1
    in smooth areas where the residual is clean), flatness ``f_f`` (share of saturated or near-constant
    pixels, where the PRNU is lost), and the quadratic terms of the three.

    Args:
        intensity: ``(H, W)`` grey image in [0, 1].
        ys: window centre rows.
        xs: window centre columns.
        window: window size.

    Returns:
        float64 ``(gh, gw, 10)``: ``[1, f_i, f_t, f_f, f_i^2, f_t^2, f_f^2, f_i f_t, f_i f_f, f_t f_f]``.
    """
    image = np.asarray(intensity, dtype=np.float32)
    high = image - uniform_filter(image, 3, mode="reflect")
    local = uniform_filter(high * high, 5, mode="reflect")
    texture = 1.0 / (1.0 + local / np.float32(0.01**2))
    local_std = np.sqrt(np.maximum(uniform_filter(image * image, 3, mode="reflect") - uniform_filter(image, 3, mode="reflect") ** 2, 0))
    flat = ((image >= saturation) | (local_std < 0.5 / 255.0)).astype(np.float32)
    n = float(window * window)
    r = window // 2
    fi = _window_sums(image, ys, xs, r) / n
    ft = _window_sums(texture, ys, xs, r) / n
    ff = _window_sums(flat, ys, xs, r) / n
    one = np.ones_like(fi)
    return np.stack([one, fi, ft, ff, fi * fi, ft * ft, ff * ff, fi * ft, fi * ff, ft * ff], axis=-1)


def _gauss(x: np.ndarray, mean: np.ndarray | float, sigma: float) -> np.ndarray:
    return np.exp(-0.5 * ((x - mean) / sigma) ** 2) / sigma


@dataclass
class CorrelationPredictor:
    """Linear predictor of the windowed PRNU correlation of untampered content, with the two spreads.

    Attributes:
        coef: float (10,) weights of :func:`content_features`.
        sigma_h1: standard deviation of ``rho - rho_hat`` on untampered windows.
        sigma_h0: standard deviation of ``rho`` against a mismatched (shifted) fingerprint.
        window: the analysis window it was trained with.
        stride: the analysis stride it was trained with.
        sigma: the denoiser noise level (:func:`~neuralimaging.forensics.prnu.noise_residual`).
        color: the residual colour mode.
    """

    coef: np.ndarray
    sigma_h1: float
    sigma_h0: float
    window: int = 129
    stride: int = 8
    sigma: float = DEFAULT_SIGMA
    color: str = "gray"
    stats: dict = field(default_factory=dict)

    @classmethod
    def fit(
        cls,
        images: list,
        k: np.ndarray,
        *,
        window: int = 129,
        stride: int = 8,
        sigma: float = DEFAULT_SIGMA,
        color: str = "gray",
        ridge: float = 1e-6,
        residuals: list[np.ndarray] | None = None,
    ) -> CorrelationPredictor:
        """Fit by least squares on untampered images of the camera whose fingerprint is ``k``.

        Args:
            images: untampered ``(3, H, W)`` / ``(H, W)`` images in [0, 1], all the fingerprint's size (at
                least 1; the paper uses 30).
            k: fingerprint ``(H, W)``.
            window: analysis window (129 in the paper).
            stride: analysis stride (8 in the paper).
            sigma: denoiser noise level.
            color: residual colour mode.
            ridge: Tikhonov regularisation of the normal equations (relative to their trace).
            residuals: precomputed :func:`noise_residual` of the images.
        """
        _check_window(window, stride)
        if len(images) < 1:
            raise InputError("the correlation predictor needs at least 1 untampered image, got 0")
        k = np.asarray(k, dtype=np.float32)
        features, targets, mismatched = [], [], []
        for index, item in enumerate(images):
            image = _check_image(item, f"predictor image {index}")
            if image.shape[-2:] != k.shape:
                raise InputError(f"predictor image {index}: size {image.shape[-2]}x{image.shape[-1]} differs from the fingerprint's {k.shape[0]}x{k.shape[1]}")
            w = residuals[index] if residuals is not None else noise_residual(image, sigma=sigma, color=color)
            intensity = to_gray(image)
            rho, ys, xs = windowed_correlation(w, intensity * k, window=window, stride=stride)
            shifted = np.roll(k, (k.shape[0] // 2 + 1, k.shape[1] // 2 + 1), axis=(0, 1))
            rho0, _, _ = windowed_correlation(w, intensity * shifted, window=window, stride=stride)
            features.append(content_features(intensity, ys, xs, window).reshape(-1, _N_FEATURES))
            targets.append(rho.reshape(-1).astype(np.float64))
            mismatched.append(rho0.reshape(-1))
        x, y = np.concatenate(features), np.concatenate(targets)
        gram = x.T @ x
        gram += ridge * np.trace(gram) / _N_FEATURES * np.eye(_N_FEATURES)
        coef = np.linalg.solve(gram, x.T @ y)
        error = y - x @ coef
        sigma_h1 = float(max(error.std(), 1e-6))
        sigma_h0 = float(max(np.concatenate(mismatched).std(), 1e-6))
        stats = {"windows": int(len(y)), "images": len(images), "mean_rho": float(y.mean()), "r2": float(1 - error.var() / max(y.var(), 1e-30))}
        return cls(coef=coef, sigma_h1=sigma_h1, sigma_h0=sigma_h0, window=window, stride=stride, sigma=sigma, color=color, stats=stats)

    def predict(self, intensity: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        """Expected correlation ``(gh, gw)`` for a grey image ``(H, W)`` at the window centres."""
        return (content_features(intensity, ys, xs, self.window) @ self.coef).astype(np.float32)

    def to_dict(self) -> dict:
        """A JSON-able dict (``from_dict`` reads it back)."""
        data = asdict(self)
        data["coef"] = [float(c) for c in self.coef]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> CorrelationPredictor:
        """Rebuild from :meth:`to_dict` output."""
        data = dict(data)
        coef = np.asarray(data.pop("coef"), dtype=np.float64)
        if coef.shape != (_N_FEATURES,):
            raise InputError(f"predictor: expected {_N_FEATURES} coefficients, got {coef.shape}")
        return cls(coef=coef, **data)


# ------------------------------------------------------------------------------------------- localize


@dataclass
class LocalizationResult:
    """Maps at the window centres ``ys x xs`` of an image of ``shape``."""

    correlation: np.ndarray
    expected: np.ndarray
    probability: np.ndarray
    ys: np.ndarray
    xs: np.ndarray
    shape: tuple[int, int]

    def full(self, grid: np.ndarray | None = None) -> np.ndarray:
        """A grid map (default: the tampering probability) at full resolution, nearest window centre."""
        grid = self.probability if grid is None else grid
        h, w = self.shape
        step_y = self.ys[1] - self.ys[0] if len(self.ys) > 1 else 1
        step_x = self.xs[1] - self.xs[0] if len(self.xs) > 1 else 1
        iy = np.clip(np.rint((np.arange(h) - self.ys[0]) / step_y).astype(int), 0, len(self.ys) - 1)
        ix = np.clip(np.rint((np.arange(w) - self.xs[0]) / step_x).astype(int), 0, len(self.xs) - 1)
        return grid[np.ix_(iy, ix)]

    def mask_at_centres(self, mask: np.ndarray) -> np.ndarray:
        """The ground-truth ``(H, W)`` mask sampled at the window centres (central-pixel attribution)."""
        return np.asarray(mask, dtype=bool)[np.ix_(self.ys, self.xs)]


def localize(
    image: np.ndarray | torch.Tensor,
    k: np.ndarray,
    predictor: CorrelationPredictor,
    *,
    residual: np.ndarray | None = None,
) -> LocalizationResult:
    """Tampering probability map of ``image`` against the camera model ``(k, predictor)``.

    Args:
        image: ``(3, H, W)`` / ``(H, W)`` in [0, 1], the fingerprint's size.
        k: fingerprint ``(H, W)``.
        predictor: trained :class:`CorrelationPredictor` (its window, stride and residual settings are used).
        residual: precomputed :func:`noise_residual` of the image.
    """
    checked = _check_image(image)
    k = np.asarray(k, dtype=np.float32)
    if checked.shape[-2:] != k.shape:
        raise InputError(f"localize: image size {checked.shape[-2]}x{checked.shape[-1]} differs from the fingerprint's {k.shape[0]}x{k.shape[1]}")
    w = residual if residual is not None else noise_residual(checked, sigma=predictor.sigma, color=predictor.color)  # type: ignore[arg-type]
    intensity = to_gray(checked)
    rho, ys, xs = windowed_correlation(w, intensity * k, window=predictor.window, stride=predictor.stride)
    expected = predictor.predict(intensity, ys, xs)
    h0 = _gauss(rho, 0.0, predictor.sigma_h0)
    h1 = _gauss(rho, expected, predictor.sigma_h1)
    probability = np.divide(h0, h0 + h1, out=np.full_like(h0, 0.5), where=(h0 + h1) > 0).astype(np.float32)
    return LocalizationResult(rho, expected, probability, ys, xs, (int(checked.shape[-2]), int(checked.shape[-1])))


def best_f1(scores: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """Best F1 score over every decision threshold ``scores >= t`` against a boolean ``mask``.

    Returns ``(f1, threshold)``; an empty mask gives ``(0.0, inf)``.
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    m = np.asarray(mask, dtype=bool).reshape(-1)
    if s.shape != m.shape:
        raise InputError(f"best_f1: scores and mask differ in size, {np.shape(scores)} vs {np.shape(mask)}")
    positives = int(m.sum())
    if positives == 0:
        return 0.0, float("inf")
    order = np.argsort(-s, kind="stable")
    s_sorted, m_sorted = s[order], m[order]
    tp = np.cumsum(m_sorted)
    predicted = np.arange(1, len(s) + 1)
    last = np.r_[s_sorted[1:] != s_sorted[:-1], True]  # thresholds only where the score changes
    f1 = np.where(last, 2.0 * tp / (predicted + positives), -1.0)
    best = int(np.argmax(f1))
    return float(f1[best]), float(s_sorted[best])


# ------------------------------------------------------------------------------------- camera models


def save_camera_model(path: str | os.PathLike, k: np.ndarray, predictor: CorrelationPredictor | None = None, **meta: object) -> Path:
    """Write a camera model (fingerprint, optional predictor, JSON-able ``meta``) to an ``.npz`` file atomically."""
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_suffix(".npz")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.npz")
    info = json.dumps({"predictor": predictor.to_dict() if predictor is not None else None, "meta": meta})
    np.savez(tmp, k=np.asarray(k, dtype=np.float32), info=np.array(info))
    os.replace(tmp, path)
    return path


def load_camera_model(path: str | os.PathLike) -> tuple[np.ndarray, CorrelationPredictor | None, dict]:
    """Read :func:`save_camera_model` output: ``(k, predictor or None, meta)``."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such camera model file (expected an .npz written by 'prnu fingerprint')")
    try:
        with np.load(path, allow_pickle=False) as data:
            k = np.asarray(data["k"], dtype=np.float32)
            info = json.loads(str(data["info"]))
        predictor = CorrelationPredictor.from_dict(info["predictor"]) if info.get("predictor") else None
        meta = info.get("meta", {})
    except (OSError, ValueError, KeyError, TypeError, AttributeError, EOFError, zipfile.BadZipFile) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise InputError(f"{path}: not a camera model file ({reason})") from None
    if k.ndim != 2 or not isinstance(meta, dict):
        raise InputError(f"{path}: not a camera model file (expected a 2-D fingerprint, got shape {k.shape})")
    return k, predictor, meta
