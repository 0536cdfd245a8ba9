"""Whole-photo manipulation analysis: a trained FAN slid over a shared photograph of any size.

The FAN of a ``train manipulation`` run classifies square windows of the photo as it arrives from the sharing
channel: the window side is the FAN's training input (the run's RAW ``patch`` x 2 / the channel's
down-sampling factor), windows start on a grid of ``stride`` pixels (a multiple of 8, so that every window
sees the photo's JPEG blocks at the phase it was trained on). Windows are cut from bands of rows and
classified in batches, so memory is bounded by the band and the batch, not by the photo (a 24 Mpx photo
needs its 8-bit pixels plus a few MB).

Per photo the analysis gives

- a class-probability map: the windows' posteriors averaged over the windows covering each ``stride x
  stride`` cell (``cells (rows, cols, C)``), written as an ``.npz`` array and as a PNG overlay on the photo;
- an image-level decision over the hypotheses "native" and "a region manipulated with class c": the windows
  are treated as a mixture, each in the manipulated region with prior probability :data:`REGION_PRIOR`, so
  the evidence for class c is ``sum_i log(1 - pi + pi p_i(c) / p_i(native))``; it is scaled by the window
  overlap (``(stride / patch)^2``) and by a temperature fitted on held-out photos
  (:func:`fit_calibration`), and turned into probabilities by a softmax. ``docs/analysis.md`` explains the
  choice and measures it.

    >>> analyzer = load_analyzer("runs/fn")                                        # doctest: +SKIP
    >>> result = analyze_photo(analyzer, load_image("photo.jpg"))                  # doctest: +SKIP
    >>> result.decision, result.confidence                                         # doctest: +SKIP
    ('sharpen', 0.93)
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from neuralimaging.device import resolve_device
from neuralimaging.errors import InputError
from neuralimaging.experiments.rundir import RunDir, atomic_write_bytes, atomic_write_text, config_hash

__all__ = [
    "AGGREGATIONS",
    "BIAS_BOUND",
    "DEFAULT_TEMPERATURE",
    "REGION_PRIOR",
    "SMOOTHING",
    "Analyzer",
    "Calibration",
    "PhotoAnalysis",
    "analyze_file",
    "analyze_photo",
    "analyze_windows",
    "cell_map",
    "class_evidence",
    "default_stride",
    "fit_calibration",
    "load_analyzer",
    "load_calibration",
    "overlay_png",
    "posterior",
    "save_calibration",
    "window_log_probs",
    "write_overlay",
]

AGGREGATIONS = ("mixture", "mean")
"""Image-level aggregations of window posteriors: ``mixture`` (the default: a manipulated region among native
windows) and ``mean`` (mean log-probability: every window assumed to show the image's class)."""

REGION_PRIOR = 0.25
"""Prior probability that a window lies in the manipulated region (the ``pi`` of the mixture)."""

SMOOTHING = 0.01
"""Each window posterior is mixed with the uniform distribution by this weight before taking logarithms, so
that no single over-confident window can decide a photo (a log ratio is bounded by ``log(1 + C / 0.01)``)."""

BIAS_BOUND = 20.0
"""Largest magnitude of a fitted per-class offset (log-odds): a class the fitting photos never show cannot
drift without bound."""

DEFAULT_TEMPERATURE = 0.30
"""Evidence temperature used without a calibration file (fitted on the validation photos of the demo's F+N
run; ``docs/analysis.md``). A run's own calibration (:func:`fit_calibration`) should replace it."""

_PALETTE = (
    (228, 26, 28), (55, 126, 184), (255, 200, 0), (152, 78, 163), (255, 127, 0), (77, 175, 74),
    (166, 86, 40), (247, 129, 191), (0, 200, 200), (153, 153, 153),
)  # fmt: skip
"""Overlay colours of the manipulated classes, in class order after ``native`` (ColorBrewer Set1, cyan)."""


# ------------------------------------------------------------------------------------------------ model


@dataclass
class Calibration:
    """Parameters that turn window posteriors into an image-level posterior.

    Attributes:
        temperature: scale of the (overlap-corrected) evidence before the softmax.
        aggregation: one of :data:`AGGREGATIONS`.
        region_prior: ``pi`` of the mixture.
        smoothing: weight of the uniform distribution mixed into each window posterior.
        fitted: where the temperature comes from (``"default"`` or a description of the photos it was fitted on).
        run_hash: config hash of the run it was fitted for (None for the default).
        nll: mean negative log-likelihood of the image-level decisions on the fitting photos (None if unknown).
        bias: per-class offsets added after the temperature, ``native`` first and 0 (None: all 0): the prior
            log-odds of each hypothesis against native, as fitted (:func:`fit_calibration`).
    """

    temperature: float = DEFAULT_TEMPERATURE
    aggregation: str = "mixture"
    region_prior: float = REGION_PRIOR
    smoothing: float = SMOOTHING
    fitted: str = "default"
    run_hash: str | None = None
    nll: float | None = None
    bias: list[float] | None = None

    def __post_init__(self) -> None:
        if self.aggregation not in AGGREGATIONS:
            raise InputError(f"aggregation must be one of {', '.join(AGGREGATIONS)}, got {self.aggregation!r}")
        if not (self.temperature > 0 and math.isfinite(self.temperature)):
            raise InputError(f"calibration temperature must be a positive number, got {self.temperature!r}")
        if not 0.0 < self.region_prior < 1.0:
            raise InputError(f"region prior must be in (0, 1), got {self.region_prior!r}")
        if not 0.0 < self.smoothing < 1.0:
            raise InputError(f"smoothing must be in (0, 1), got {self.smoothing!r}")
        if self.bias is not None:
            values = np.asarray(self.bias, dtype=np.float64)
            if values.ndim != 1 or len(values) < 2 or not np.isfinite(values).all() or values[0] != 0.0:
                raise InputError(f"calibration bias must be a list of finite numbers, native's (first) 0, got {self.bias!r}")
            self.bias = [float(v) for v in values]

    def probabilities(self, evidence: np.ndarray) -> np.ndarray:
        """The image-level posterior of :func:`class_evidence` values ``(..., C)``: :func:`posterior`."""
        return posterior(evidence, self.temperature, self.bias)


def save_calibration(path: str | os.PathLike[str], calibration: Calibration) -> Path:
    """Write a calibration as JSON (atomically); returns the path."""
    path = Path(path)
    atomic_write_text(path, json.dumps(calibration.__dict__, indent=1) + "\n")
    return path


def load_calibration(path: str | os.PathLike[str]) -> Calibration:
    """Read a calibration written by :func:`save_calibration`.

    Raises:
        InputError: the file is missing, not JSON or holds unknown or bad values (one line naming the file).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such calibration file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError("expected a JSON object")
        return Calibration(**data)
    except (ValueError, TypeError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise InputError(f"{path}: not a calibration file ({reason})") from error


@dataclass
class Analyzer:
    """A trained FAN ready to slide over photos.

    Attributes:
        fan: the FAN (eval mode) on ``device``.
        classes: class names in label order, ``native`` first.
        patch: window side in pixels of the shared photo (the FAN's training input).
        stride: distance between window origins (a multiple of 8 dividing ``patch``).
        calibration: how window posteriors become an image-level decision.
        run: the run folder.
        device: where the FAN runs.
    """

    fan: torch.nn.Module
    classes: list[str]
    patch: int
    stride: int
    calibration: Calibration = field(default_factory=Calibration)
    run: str = ""
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def overlap(self) -> float:
        """Windows per pixel, ``(patch / stride)^2``: the evidence of overlapping windows is divided by it."""
        return (self.patch / self.stride) ** 2


def _fan_patch(config: Mapping[str, Any]) -> int:
    """Side of the FAN's input: the RAW patch developed to ``2 patch`` and reduced by the channel's factor."""
    from neuralimaging.distribution.channel import Channel

    channel = Channel.parse(str(config.get("channel", "none")))
    factor = channel.factor if channel.method != "none" else 1
    return 2 * int(config["patch"]) // factor


def default_stride(patch: int) -> int:
    """Half the window when that is a multiple of 8, else the window itself."""
    return patch // 2 if (patch // 2) % 8 == 0 and patch // 2 > 0 else patch


def load_analyzer(
    run_dir: str | os.PathLike[str],
    *,
    stride: int | None = None,
    calibration: Calibration | str | os.PathLike[str] | None = None,
    device: str | torch.device = "cpu",
) -> Analyzer:
    """The FAN of a ``train manipulation`` run (newest checkpoint), its classes and window geometry.

    Only the FAN's weights and the run's ``config.yaml`` are read: the run's dataset and NIP need not exist.

    Args:
        run_dir: a run folder of :func:`~neuralimaging.experiments.train_manipulation.train_manipulation`.
        stride: window stride in pixels (default: half the window when that is a multiple of 8).
        calibration: a :class:`Calibration`, the path of one (:func:`save_calibration`), or None for the
            default temperature.
        device: where to run the FAN.

    Raises:
        InputError: not a manipulation run, no checkpoint, a stride that is not a multiple of 8 dividing the
            window, a calibration fitted for another run.
    """
    from neuralimaging.distribution import manipulations
    from neuralimaging.forensics.fan import FAN

    run = RunDir(run_dir)
    config = run.read_config()
    if "manipulations" not in config or "patch" not in config:
        raise InputError(f"{run.path}: not a `train manipulation` run (its config has no manipulations or patch)")
    classes = [m.name for m in manipulations.parse(str(config["manipulations"]))]
    patch = _fan_patch(config)
    stride = default_stride(patch) if stride is None else int(stride)
    if stride < 8 or stride % 8 or patch % stride:
        raise InputError(
            f"stride must be a multiple of 8 (the JPEG grid) that divides the window of {patch} pixels, got {stride}"
        )
    if isinstance(calibration, (str, os.PathLike)):
        calibration = load_calibration(calibration)
    calibration = calibration or Calibration()
    digest = config_hash(config)
    if calibration.run_hash is not None and calibration.run_hash != digest:
        raise InputError(
            f"{run.path}: the calibration was fitted for another run (config hash {calibration.run_hash} != {digest})"
        )
    device = resolve_device(device)
    fan = FAN(n_classes=len(classes), **dict(config.get("fan") or {}))
    fan.load_state_dict(run.load_weights("fan", device="cpu"))
    return Analyzer(fan.to(device).eval(), classes, patch, stride, calibration, str(run.path), device)


# ------------------------------------------------------------------------------------------ the windows


def _origins(length: int, patch: int, stride: int) -> np.ndarray:
    return np.arange(0, length - patch + 1, stride)


def _bands(pixels: np.ndarray, patch: int, stride: int, rows: int) -> Iterator[tuple[int, torch.Tensor]]:
    """Bands of ``rows`` window rows: ``(first window row, float32 windows (rows * nx, 3, patch, patch))``."""
    height = pixels.shape[0]
    scale = 255.0 if pixels.dtype == np.uint8 else 65535.0
    ys = _origins(height, patch, stride)
    for first in range(0, len(ys), rows):
        last = min(first + rows, len(ys)) - 1
        band = pixels[ys[first] : ys[last] + patch]
        tensor = torch.from_numpy(np.ascontiguousarray(band.transpose(2, 0, 1))).float().div_(scale)[None]
        windows = F.unfold(tensor, kernel_size=patch, stride=stride)  # (1, 3 p p, rows * nx)
        yield first, windows[0].T.reshape(-1, 3, patch, patch)


@torch.inference_mode()
def window_log_probs(analyzer: Analyzer, pixels: np.ndarray, *, batch: int = 256) -> np.ndarray:
    """Log-posteriors of every window of a photo.

    Args:
        analyzer: from :func:`load_analyzer`.
        pixels: the photo as stored, ``uint8`` or ``uint16 (H, W, 3)`` (:func:`~neuralimaging.io.read_pixels`).
        batch: windows per FAN forward pass.

    Returns:
        float32 ``(ny, nx, C)``: window ``(j, i)`` has its origin at ``(j * stride, i * stride)``.

    Raises:
        InputError: a photo smaller than one window.
    """
    height, width = pixels.shape[:2]
    patch, stride = analyzer.patch, analyzer.stride
    if pixels.ndim != 3 or pixels.shape[2] != 3:
        raise InputError(f"expected an RGB photo (H, W, 3), got shape {pixels.shape}")
    if height < patch or width < patch:
        raise InputError(f"a {height}x{width} photo is smaller than the FAN's {patch}x{patch} window")
    if batch < 1:
        raise InputError(f"batch must be a positive number of windows, got {batch}")
    ny, nx = len(_origins(height, patch, stride)), len(_origins(width, patch, stride))
    out = np.empty((ny * nx, len(analyzer.classes)), dtype=np.float32)
    rows = max(1, batch // nx)  # window rows per band: about one batch of windows
    for first, windows in _bands(pixels, patch, stride, rows):
        start = first * nx
        for offset in range(0, windows.shape[0], batch):
            chunk = windows[offset : offset + batch].to(analyzer.device)
            logits = analyzer.fan(chunk).float()
            out[start + offset : start + offset + chunk.shape[0]] = F.log_softmax(logits, dim=1).cpu().numpy()
    return out.reshape(ny, nx, -1)


def cell_map(window_probs: np.ndarray, shape: tuple[int, int], patch: int, stride: int) -> np.ndarray:
    """Average the posteriors of the windows covering each ``stride x stride`` cell of the photo.

    Args:
        window_probs: ``(ny, nx, C)`` window posteriors (probabilities, not logs).
        shape: ``(H, W)`` of the photo.
        patch: window side (a multiple of ``stride``).
        stride: window step.

    Returns:
        float32 ``(ceil(H / stride), ceil(W / stride), C)``; the cells of the last partial row and column,
        which no window covers whole, repeat their neighbours.
    """
    ny, nx, n_classes = window_probs.shape
    m = patch // stride
    sums = np.zeros((ny + m - 1, nx + m - 1, n_classes), dtype=np.float64)
    counts = np.zeros((ny + m - 1, nx + m - 1, 1), dtype=np.float64)
    for dy in range(m):
        for dx in range(m):
            sums[dy : dy + ny, dx : dx + nx] += window_probs
            counts[dy : dy + ny, dx : dx + nx] += 1
    cells = sums / counts
    rows, cols = -(-shape[0] // stride), -(-shape[1] // stride)
    pad = ((0, max(0, rows - cells.shape[0])), (0, max(0, cols - cells.shape[1])), (0, 0))
    return np.pad(cells, pad, mode="edge")[:rows, :cols].astype(np.float32)


# ------------------------------------------------------------------------------------- the decision


def class_evidence(log_probs: np.ndarray, calibration: Calibration, overlap: float = 1.0) -> np.ndarray:
    """Evidence for each image-level hypothesis, before the temperature: ``(C,)`` float64, ``native`` first.

    ``mixture``: ``e_c = sum_i log(1 - pi + pi q_i(c) / q_i(native)) / overlap`` (``e_native = 0``), with
    ``q_i`` the window posteriors smoothed by :data:`SMOOTHING`; ``mean``: ``e_c = mean_i log q_i(c)``.

    Args:
        log_probs: window log-posteriors ``(..., C)`` (any leading shape).
        calibration: aggregation, region prior and smoothing.
        overlap: windows per pixel (:attr:`Analyzer.overlap`); the mixture's sum is divided by it.
    """
    logp = np.asarray(log_probs, dtype=np.float64).reshape(-1, np.shape(log_probs)[-1])
    n_classes = logp.shape[1]
    eps = calibration.smoothing
    smoothed = np.logaddexp(np.log1p(-eps) + logp, math.log(eps / n_classes))
    if calibration.aggregation == "mean":
        return smoothed.mean(axis=0)
    pi = calibration.region_prior
    ratio = smoothed - smoothed[:, :1]
    evidence = np.logaddexp(math.log1p(-pi), math.log(pi) + ratio).sum(axis=0) / overlap
    evidence[0] = 0.0
    return evidence


def posterior(evidence: np.ndarray, temperature: float, bias: Sequence[float] | None = None) -> np.ndarray:
    """Softmax of ``temperature * evidence + bias`` over the last axis (``bias`` None: equal prior odds)."""
    z = temperature * np.asarray(evidence, dtype=np.float64)
    if bias is not None:
        if len(bias) != z.shape[-1]:
            raise InputError(f"calibration bias has {len(bias)} classes, the evidence {z.shape[-1]}")
        z = z + np.asarray(bias, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(axis=-1, keepdims=True)


def fit_calibration(
    evidence: np.ndarray,
    labels: Sequence[int] | np.ndarray,
    *,
    aggregation: str = "mixture",
    fitted: str = "",
    run_hash: str | None = None,
    bias: bool = False,
) -> Calibration:
    """Temperature scaling of the evidence (Guo et al., "On calibration of modern neural networks", 2017),
    with per-class offsets (their "vector scaling" with one shared scale).

    The offsets are the prior log-odds of each manipulation against ``native``: the mixture's evidence sums
    one bounded term per window, so on a pristine photo the windows a FAN misreads add up to evidence for
    some manipulation; the offsets learn how much of it pristine photos show.

    Args:
        evidence: ``(N, C)`` :func:`class_evidence` of N photos (computed with ``aggregation``).
        labels: true class index of each photo.
        aggregation: the aggregation the evidence was computed with.
        fitted: what the photos were (recorded in the calibration).
        run_hash: config hash of the run.
        bias: fit the offsets too (default: the temperature alone, equal prior odds; offsets fitted on a
            few photos of one scene do not carry to others, ``docs/analysis.md``).

    Returns:
        The calibration whose temperature (and offsets) minimize the mean negative log-likelihood of the true
        classes.
    """
    from scipy.optimize import minimize, minimize_scalar

    e = np.asarray(evidence, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    if e.ndim != 2 or e.shape[0] != y.shape[0] or e.shape[0] < 2:
        raise InputError(f"fit_calibration: need (N, C) evidence and N labels with N >= 2, got {e.shape} and {y.shape}")
    rows = np.arange(len(y))

    def nll(log_t: float, offsets: np.ndarray | None = None) -> float:
        p = posterior(e, math.exp(log_t), None if offsets is None else np.concatenate([[0.0], offsets]))
        return float(-np.log(np.clip(p[rows, y], 1e-300, None)).mean())

    log_t_bounds = (math.log(1e-6), math.log(1e3))
    best = minimize_scalar(nll, bounds=log_t_bounds, method="bounded", options={"xatol": 1e-4})
    log_t, loss, offsets = float(best.x), float(best.fun), None
    if bias:
        start = np.concatenate([[log_t], np.zeros(e.shape[1] - 1)])
        bounds = [log_t_bounds] + [(-BIAS_BOUND, BIAS_BOUND)] * (e.shape[1] - 1)
        joint = minimize(lambda v: nll(v[0], v[1:]), start, method="L-BFGS-B", bounds=bounds)
        if float(joint.fun) <= loss:
            log_t, loss, offsets = float(joint.x[0]), float(joint.fun), [0.0, *map(float, joint.x[1:])]
    return Calibration(temperature=math.exp(log_t), aggregation=aggregation, fitted=fitted, run_hash=run_hash,
                       nll=loss, bias=offsets)


# -------------------------------------------------------------------------------------------- a photo


@dataclass
class PhotoAnalysis:
    """What :func:`analyze_photo` finds in one photo.

    Attributes:
        classes: class names, ``native`` first.
        probabilities: image-level posterior ``(C,)``.
        decision: the most probable class.
        confidence: its probability.
        evidence: :func:`class_evidence` ``(C,)`` (before the temperature).
        window_log_probs: ``(ny, nx, C)`` window log-posteriors.
        cells: ``(rows, cols, C)`` class-probability map, one cell per ``stride x stride`` pixels.
        shape: ``(H, W)`` of the photo.
        patch: window side.
        stride: window step.
    """

    classes: list[str]
    probabilities: np.ndarray
    decision: str
    confidence: float
    evidence: np.ndarray
    window_log_probs: np.ndarray
    cells: np.ndarray
    shape: tuple[int, int]
    patch: int
    stride: int

    @property
    def manipulated_fraction(self) -> float:
        """Fraction of the photo's cells whose most probable class is not ``native``."""
        return float((self.cells.argmax(axis=-1) != 0).mean())

    def pixel_map(self) -> np.ndarray:
        """The class-probability map at the photo's resolution: float32 ``(H, W, C)``."""
        full = np.repeat(np.repeat(self.cells, self.stride, axis=0), self.stride, axis=1)
        return np.ascontiguousarray(full[: self.shape[0], : self.shape[1]])

    def summary(self) -> dict[str, Any]:
        """The decision as plain JSON-able values."""
        return {
            "decision": self.decision,
            "manipulated": self.decision != self.classes[0],
            "confidence": self.confidence,
            "probabilities": dict(zip(self.classes, (float(p) for p in self.probabilities), strict=True)),
            "manipulated_fraction": self.manipulated_fraction,
            "size": list(self.shape),
            "windows": int(self.window_log_probs.shape[0] * self.window_log_probs.shape[1]),
            "patch": self.patch,
            "stride": self.stride,
        }


def analyze_photo(analyzer: Analyzer, pixels: np.ndarray, *, batch: int = 256) -> PhotoAnalysis:
    """Slide the FAN over a photo: window posteriors, class-probability map and image-level decision.

    Args:
        analyzer: from :func:`load_analyzer`.
        pixels: ``uint8``/``uint16 (H, W, 3)`` as read (:func:`~neuralimaging.io.read_pixels`), or float
            ``(3, H, W)`` in [0, 1] (quantized to 8 bits first, as a shared photo is).
        batch: windows per FAN forward pass (memory grows with it).
    """
    if pixels.dtype not in (np.uint8, np.uint16):
        from neuralimaging.io import to_uint

        pixels = to_uint(pixels, 8)
    return analyze_windows(analyzer, window_log_probs(analyzer, pixels, batch=batch), pixels.shape[:2])


def analyze_windows(analyzer: Analyzer, log_probs: np.ndarray, shape: Sequence[int]) -> PhotoAnalysis:
    """The class-probability map and image-level decision (with ``analyzer.calibration``) of a photo of
    ``shape`` ``(H, W)`` from its :func:`window_log_probs` ``(ny, nx, C)``."""
    evidence = class_evidence(log_probs, analyzer.calibration, analyzer.overlap)
    probabilities = analyzer.calibration.probabilities(evidence)
    best = int(np.argmax(probabilities))
    size = (int(shape[0]), int(shape[1]))
    cells = cell_map(np.exp(log_probs), size, analyzer.patch, analyzer.stride)
    return PhotoAnalysis(list(analyzer.classes), probabilities, analyzer.classes[best], float(probabilities[best]),
                         evidence, log_probs, cells, size, analyzer.patch, analyzer.stride)


def write_overlay(path: str | os.PathLike[str], pixels: np.ndarray, result: PhotoAnalysis, *, max_side: int = 2048) -> Path:
    """Write :func:`overlay_png` of the photo to ``path`` (atomically); returns the path."""
    atomic_write_bytes(path, overlay_png(pixels, result, max_side=max_side))
    return Path(path)


def overlay_png(pixels: np.ndarray, result: PhotoAnalysis, *, max_side: int = 2048) -> bytes:
    """A PNG of the photo with the map laid over it: each cell tinted with its most probable manipulated
    class, opacity ``0.6 x P(manipulated)``, and a legend strip below. Photos longer than ``max_side`` pixels
    are shown reduced to it."""
    from PIL import Image, ImageDraw

    photo = pixels if pixels.dtype == np.uint8 else (pixels.astype(np.float64) / 257.0).round().astype(np.uint8)
    image = Image.fromarray(np.ascontiguousarray(photo), "RGB")
    scale = min(1.0, max_side / max(image.size))
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    if scale < 1.0:
        image = image.resize(size, Image.Resampling.BOX)
    base = np.asarray(image, dtype=np.float32)
    cells = result.cells
    manipulated = 1.0 - cells[..., 0]
    colours = np.array([(0, 0, 0), *(_PALETTE[i % len(_PALETTE)] for i in range(cells.shape[-1] - 1))], np.float32)
    kind = cells[..., 1:].argmax(axis=-1) + 1
    # cell -> overlay pixel: the cell under each pixel's centre
    ys = np.minimum(((np.arange(size[1]) + 0.5) / scale / result.stride).astype(int), cells.shape[0] - 1)
    xs = np.minimum(((np.arange(size[0]) + 0.5) / scale / result.stride).astype(int), cells.shape[1] - 1)
    alpha = (0.6 * manipulated[np.ix_(ys, xs)])[..., None]
    tint = colours[kind[np.ix_(ys, xs)]]
    blended = (base * (1 - alpha) + tint * alpha).round().clip(0, 255).astype(np.uint8)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    items = [(f"{result.decision} {result.confidence:.2f} |", None)]
    items += [(name, tuple(int(v) for v in colours[index + 1])) for index, name in enumerate(result.classes[1:])]
    places, x, line = [], 4, 0
    for text, colour in items:  # legend entries left to right, wrapped to the photo's width
        width = int(measure.textlength(text)) + (13 if colour else 0) + 8
        if x > 4 and x + width > size[0]:
            x, line = 4, line + 1
        places.append((x, line, text, colour))
        x += width
    canvas = Image.new("RGB", (size[0], size[1] + 15 * (line + 1) + 3), (255, 255, 255))
    canvas.paste(Image.fromarray(blended, "RGB"), (0, 0))
    draw = ImageDraw.Draw(canvas)
    for x, line, text, colour in places:
        top = size[1] + 3 + 15 * line
        if colour is not None:
            draw.rectangle((x, top + 1, x + 10, top + 11), fill=colour)
            x += 13
        draw.text((x, top), text, fill=(0, 0, 0))
    import io

    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _npz_bytes(result: PhotoAnalysis, calibration: Calibration) -> bytes:
    import io

    buffer = io.BytesIO()
    np.savez_compressed(
        buffer,
        cells=result.cells,
        window_log_probs=result.window_log_probs,
        probabilities=result.probabilities.astype(np.float64),
        evidence=result.evidence,
        classes=np.array(result.classes),
        shape=np.array(result.shape),
        patch=np.array(result.patch),
        stride=np.array(result.stride),
        temperature=np.array(calibration.temperature),
        aggregation=np.array(calibration.aggregation),
    )
    return buffer.getvalue()


def analyze_file(
    analyzer: Analyzer,
    path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    batch: int = 256,
    overlay: bool = True,
) -> dict[str, Any]:
    """Analyze one photo file and write ``OUT/<stem>.npz`` (map and decision) and ``OUT/<stem>_overlay.png``.

    Returns:
        :meth:`PhotoAnalysis.summary` plus ``photo``, ``map``, ``overlay`` (paths), ``calibration`` (where
        its temperature comes from) and ``aggregation``.

    Raises:
        InputError: an unreadable file or a photo smaller than one window (the message names the file).
    """
    from neuralimaging.io import read_pixels

    path = Path(path)
    out = Path(out_dir)
    pixels = read_pixels(path)
    try:
        result = analyze_photo(analyzer, pixels, batch=batch)
    except InputError as error:
        raise InputError(f"{path}: {error}") from None
    map_path = out / f"{path.stem}.npz"
    atomic_write_bytes(map_path, _npz_bytes(result, analyzer.calibration))
    overlay_path = write_overlay(out / f"{path.stem}_overlay.png", pixels, result) if overlay else None
    return {
        "photo": str(path),
        **result.summary(),
        "aggregation": analyzer.calibration.aggregation,
        "calibration": analyzer.calibration.fitted,
        "map": str(map_path),
        "overlay": None if overlay_path is None else str(overlay_path),
    }
