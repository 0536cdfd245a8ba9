"""How well whole-photo analysis (:mod:`~neuralimaging.experiments.analysis`) works: photos with a manipulated
region, shared through the real codec, analysed as an analyst would.

For every image of a split, the run's NIP develops the whole RAW image (the pre-trained NIP of an F run, the
jointly trained one of an F+N run), and one photo is made per class: ``native`` as developed, every other
class applied to the whole image and pasted back inside a random rectangle (10-50% of the area, aspect ratio
1:2 to 2:1, corners on the channel's down-sampling grid). Each photo then goes through the run's channel with
the real codecs (Pillow's resize and libjpeg, :class:`~neuralimaging.distribution.channel.Channel` with
``codec="libjpeg"``) and is analysed with :func:`~neuralimaging.experiments.analysis.analyze_photo`'s steps.

Figures (definitions in ``docs/analysis.md``): image-level accuracy over the C-way decision and over native vs
manipulated, negative log-likelihood and expected calibration error of the confidence, the window-level
accuracy inside the photos (windows wholly inside or outside the region), and localization on the
manipulated photos: pixel-level ROC AUC of ``P(manipulated)``, F1 and IoU of the map thresholded at 0.5, and
the best F1 over thresholds. The temperature and per-class offsets are fitted on photos of another split (the
training split by default).

    >>> result = evaluate_analysis("runs/fn", images="test")   # doctest: +SKIP
    >>> result["aggregations"]["mixture"]["accuracy"]          # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from neuralimaging.errors import InputError
from neuralimaging.experiments.analysis import (
    AGGREGATIONS,
    Analyzer,
    Calibration,
    analyze_photo,
    analyze_windows,
    cell_map,
    class_evidence,
    fit_calibration,
    load_analyzer,
    overlay_png,
    window_log_probs,
    write_overlay,
)

__all__ = [
    "REGION_FRACTION",
    "SharedPhoto",
    "Record",
    "resolve_images",
    "shared_photos",
    "collect_records",
    "roc_auc",
    "localization_scores",
    "score_records",
    "fit_run_calibration",
    "evaluate_analysis",
    "example_overlays",
]

REGION_FRACTION = (0.1, 0.5)
"""Range of the manipulated rectangle's area as a fraction of the photo (uniform)."""


@dataclass
class SharedPhoto:
    """A test photo as the analyst receives it.

    Attributes:
        name: ``<image>_<class>``.
        label: class index (0: native).
        pixels: ``uint8 (H, W, 3)`` after the channel.
        mask: bool ``(H, W)``: pixels of the manipulated region (all False for native photos).
    """

    name: str
    label: int
    pixels: np.ndarray
    mask: np.ndarray


@dataclass
class Record:
    """What evaluation keeps of one analysed photo: its label, mask and window log-posteriors ``(ny, nx, C)``."""

    name: str
    label: int
    mask: np.ndarray
    log_probs: np.ndarray


def resolve_images(data_dir: str | os.PathLike[str], images: str | Sequence[Any]) -> tuple[list[Any], str]:
    """The images to use and the name of their split.

    Args:
        data_dir: the run's prepared dataset.
        images: a split name (``"test"`` falls back to ``"val"`` for datasets without a test split) or a list of
            :class:`~neuralimaging.data.dataset.Sample`.

    Returns:
        ``(samples, split)``; ``split`` is ``"given"`` for a list.
    """
    if not isinstance(images, str):
        samples = list(images)
        if not samples:
            raise InputError("no images given to evaluate on")
        return samples, "given"
    from neuralimaging.data.dataset import Dataset

    dataset = Dataset.load(data_dir)
    if images == "test" and not getattr(dataset, "test", None):
        return dataset.split("val"), "val"
    return dataset.split(images), images


def _rectangle(height: int, width: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """``(top, left, h, w)`` in shared-photo pixels: area ``U(REGION_FRACTION)``, aspect ``exp(U(-log 2, log 2))``."""
    area = rng.uniform(*REGION_FRACTION) * height * width
    aspect = math.exp(rng.uniform(-math.log(2.0), math.log(2.0)))
    h = int(min(height, max(1, round(math.sqrt(area * aspect)))))
    w = int(min(width, max(1, round(area / h))))
    top = int(rng.integers(0, height - h + 1))
    left = int(rng.integers(0, width - w + 1))
    return top, left, h, w


@torch.no_grad()
def shared_photos(workflow: Any, samples: Sequence[Any], *, seed: int = 0) -> Iterator[SharedPhoto]:
    """Photos of every class for every sample, developed by the workflow's NIP and sent through its channel.

    Args:
        workflow: a :class:`~neuralimaging.experiments.workflow.Workflow` whose channel is the one to share
            through (use a ``codec="libjpeg"`` channel for the real codec).
        samples: prepared images (:class:`~neuralimaging.data.dataset.Sample`).
        seed: seed of the rectangles (photo ``i``, class ``c`` uses ``default_rng([seed, i, c])``).

    Yields:
        :class:`SharedPhoto` in sample-major, class-minor order.
    """
    from neuralimaging.acquisition.nip import develop_tiled
    from neuralimaging.io import to_uint

    channel = workflow.channel
    factor = int(getattr(channel, "factor", 1)) if getattr(channel, "method", "none") != "none" else 1
    device = next(workflow.fan.parameters()).device
    for index, sample in enumerate(samples):
        rgb = develop_tiled(workflow.nip, torch.from_numpy(sample.rggb)[None], device=device).clamp_(0.0, 1.0)
        height, width = rgb.shape[-2] // factor, rgb.shape[-1] // factor
        for label, manipulation in enumerate(workflow.manipulations):
            mask = np.zeros((height, width), dtype=bool)
            image = rgb
            if label:
                top, left, h, w = _rectangle(height, width, np.random.default_rng([seed, index, label]))
                mask[top : top + h, left : left + w] = True
                full = torch.zeros(rgb.shape[-2:], dtype=torch.bool)
                full[top * factor : (top + h) * factor, left * factor : (left + w) * factor] = True
                image = torch.where(full, manipulation(rgb.to(device)).cpu().clamp(0.0, 1.0), rgb)
            shared = channel(image.to(device)).cpu()[0]
            yield SharedPhoto(f"{sample.name}_{workflow.class_names[label]}", label, to_uint(shared), mask)


def collect_records(
    analyzer: Analyzer,
    workflow: Any,
    samples: Sequence[Any],
    *,
    seed: int = 0,
    batch: int = 256,
    examples: int = 0,
    examples_dir: str | os.PathLike[str] | None = None,
) -> list[Record]:
    """Window log-posteriors of every :func:`shared_photos` photo; the first ``examples`` photos (all their
    classes) are also written to ``examples_dir`` as overlays and shared photos (PNG)."""
    from neuralimaging.io import save_image

    records = []
    for number, photo in enumerate(shared_photos(workflow, samples, seed=seed)):
        log_probs = window_log_probs(analyzer, photo.pixels, batch=batch)
        records.append(Record(photo.name, photo.label, photo.mask, log_probs))
        if examples_dir is not None and number < examples * len(analyzer.classes):
            result = analyze_windows(analyzer, log_probs, photo.pixels.shape[:2])
            save_image(Path(examples_dir) / f"{photo.name}.png", photo.pixels.transpose(2, 0, 1) / 255.0)
            write_overlay(Path(examples_dir) / f"{photo.name}_overlay.png", photo.pixels, result)
    return records


# ---------------------------------------------------------------------------------------------- figures


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for boolean ``labels`` (Mann-Whitney U, ties counted half).

    Returns NaN when ``labels`` holds only one class.
    """
    from scipy.stats import rankdata

    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(labels, dtype=bool).reshape(-1)
    if s.shape != y.shape:
        raise InputError(f"roc_auc: scores and labels differ in size, {s.shape} vs {y.shape}")
    positives, negatives = int(y.sum()), int((~y).sum())
    if positives == 0 or negatives == 0:
        return float("nan")
    ranks = rankdata(s)
    return float((ranks[y].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def localization_scores(score: np.ndarray, mask: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """Pixel-level localization figures of a ``P(manipulated)`` map against the true region.

    Returns:
        ``auc`` (:func:`roc_auc`), ``f1`` and ``iou`` of ``score > threshold``, ``best_f1`` over thresholds
        (:func:`~neuralimaging.forensics.localization.best_f1`), ``flagged`` (fraction of pixels above the
        threshold).
    """
    from neuralimaging.forensics.localization import best_f1

    s = np.asarray(score, dtype=np.float64)
    m = np.asarray(mask, dtype=bool)
    if s.shape != m.shape:
        raise InputError(f"localization_scores: map {s.shape} and mask {m.shape} differ in shape")
    predicted = s > threshold
    tp = float((predicted & m).sum())
    union = float((predicted | m).sum())
    denominator = float(predicted.sum() + m.sum())
    return {
        "auc": roc_auc(s, m),
        "f1": 2 * tp / denominator if denominator else 1.0,
        "iou": tp / union if union else 1.0,
        "best_f1": best_f1(s, m)[0] if m.any() else float("nan"),
        "flagged": float(predicted.mean()),
    }


def _ece(confidence: np.ndarray, correct: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error over equal-width confidence bins."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    total = 0.0
    for low, high in zip(edges[:-1], edges[1:], strict=True):
        inside = (confidence > low) & (confidence <= high)
        if inside.any():
            total += inside.mean() * abs(float(correct[inside].mean()) - float(confidence[inside].mean()))
    return float(total)


def _window_accuracy(analyzer: Analyzer, records: Sequence[Record]) -> dict[str, float]:
    """Accuracy of the windows lying wholly inside (label c) or wholly outside (native) the region."""
    correct = total = 0
    patch, stride = analyzer.patch, analyzer.stride
    for record in records:
        ny, nx, _ = record.log_probs.shape
        inside = np.lib.stride_tricks.sliding_window_view(record.mask, (patch, patch))[::stride, ::stride][:ny, :nx]
        share = inside.mean(axis=(-2, -1))
        predicted = record.log_probs.argmax(axis=-1)
        for keep, label in ((share == 1.0, record.label), (share == 0.0, 0)):
            correct += int((predicted[keep] == label).sum())
            total += int(keep.sum())
    return {"window_accuracy": correct / total if total else float("nan"), "windows": total}


def score_records(analyzer: Analyzer, records: Sequence[Record], calibration: Calibration) -> dict[str, Any]:
    """Image-level and localization figures of analysed photos under one calibration.

    Returns:
        ``accuracy`` (C-way), ``binary_accuracy`` (native vs manipulated), ``per_class``, ``confusion``
        (rows: true class), ``nll``, ``ece`` (10 bins), ``mean_confidence``, ``photos``; ``localization``: means
        over the manipulated photos of :func:`localization_scores` and ``native_flagged`` (mean fraction of
        pixels of native photos above 0.5); ``window_accuracy`` and ``windows``.
    """
    n_classes = len(analyzer.classes)
    labels = np.array([r.label for r in records])
    evidence = np.stack([class_evidence(r.log_probs, calibration, analyzer.overlap) for r in records])
    probabilities = calibration.probabilities(evidence)
    predicted = probabilities.argmax(axis=1)
    confidence = probabilities.max(axis=1)
    confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    local: dict[str, list[float]] = {"auc": [], "f1": [], "iou": [], "best_f1": [], "flagged": []}
    native_flagged = []
    for record in records:
        shape = record.mask.shape
        cells = cell_map(np.exp(record.log_probs), shape, analyzer.patch, analyzer.stride)
        full = np.repeat(np.repeat(cells[..., 0], analyzer.stride, axis=0), analyzer.stride, axis=1)
        score = 1.0 - full[: shape[0], : shape[1]]
        if record.label:
            for key, value in localization_scores(score, record.mask).items():
                local[key].append(value)
        else:
            native_flagged.append(float((score > 0.5).mean()))
    return {
        "aggregation": calibration.aggregation,
        "temperature": calibration.temperature,
        "bias": calibration.bias,
        "accuracy": float((predicted == labels).mean()),
        "binary_accuracy": float(((predicted > 0) == (labels > 0)).mean()),
        "per_class": [float(confusion[c, c] / max(1, confusion[c].sum())) for c in range(n_classes)],
        "confusion": confusion.tolist(),
        "nll": float(-np.log(np.clip(probabilities[np.arange(len(labels)), labels], 1e-300, None)).mean()),
        "ece": _ece(confidence, predicted == labels),
        "mean_confidence": float(confidence.mean()),
        "photos": len(records),
        "localization": {
            **{key: float(np.nanmean(values)) if values else float("nan") for key, values in local.items()},
            "native_flagged": float(np.mean(native_flagged)) if native_flagged else float("nan"),
            "photos": len(local["auc"]),
        },
        **_window_accuracy(analyzer, records),
    }


def _setup(run_dir: str | os.PathLike[str], stride: int | None, device: str | torch.device) -> tuple[Any, Analyzer, dict, str]:
    """The run's workflow with the real-codec channel, its analyzer, config and config hash."""
    from neuralimaging.experiments.rundir import RunDir, config_hash
    from neuralimaging.experiments.train_manipulation import _channel_twin, load_workflow

    config = RunDir(run_dir).read_config()
    channel = _channel_twin(str(config["channel"]), "libjpeg", None)
    workflow, config = load_workflow(run_dir, channel=channel, device=device)
    analyzer = load_analyzer(run_dir, stride=stride, device=device)
    return workflow, analyzer, config, config_hash(config)


def _fit(
    analyzer: Analyzer, records: Sequence[Record], aggregation: str, what: str, digest: str, offsets: bool = False
) -> Calibration:
    base = Calibration(aggregation=aggregation)
    evidence = np.stack([class_evidence(r.log_probs, base, analyzer.overlap) for r in records])
    return fit_calibration(evidence, [r.label for r in records], aggregation=aggregation,
                           fitted=f"{what}, {len(records)} photos", run_hash=digest, bias=offsets)


def fit_run_calibration(
    run_dir: str | os.PathLike[str],
    images: str | Sequence[Any] = "train",
    *,
    aggregation: str = "mixture",
    stride: int | None = None,
    seed: int = 1,
    limit: int | None = None,
    batch: int = 256,
    device: str | torch.device = "cpu",
    offsets: bool = True,
) -> Calibration:
    """Fit the image-level temperature of a run on :func:`shared_photos` of its own images.

    Args:
        run_dir: a ``train manipulation`` run whose dataset and NIP run are at hand.
        images: split name (default ``"train"``: more scenes than the validation split, and measured
            better on held-out photos, ``docs/analysis.md``) or a list of samples.
        aggregation: one of :data:`~neuralimaging.experiments.analysis.AGGREGATIONS`.
        stride: as for :func:`~neuralimaging.experiments.analysis.load_analyzer`.
        batch: as for :func:`~neuralimaging.experiments.analysis.load_analyzer`.
        device: as for :func:`~neuralimaging.experiments.analysis.load_analyzer`.
        seed: seed of the rectangles (:func:`evaluate_analysis` fits with its ``seed + 1``: 1 by default).
        limit: at most this many images (in turn per source photo).
        offsets: fit per-class offsets with the temperature (:func:`~neuralimaging.experiments.analysis.fit_calibration`).

    Returns:
        The calibration, tied to the run by its config hash (``save_calibration`` writes it).
    """
    from neuralimaging.experiments.fidelity import fidelity_images

    workflow, analyzer, config, digest = _setup(run_dir, stride, device)
    samples, split = resolve_images(config["data"], images)
    if limit is not None:
        samples = fidelity_images(samples, limit)
    records = collect_records(analyzer, workflow, samples, seed=seed, batch=batch)
    return _fit(analyzer, records, aggregation, f"{split} split", digest, offsets)


def evaluate_analysis(
    run_dir: str | os.PathLike[str],
    images: str | Sequence[Any] = "test",
    *,
    calibration_images: str | Sequence[Any] | None = "train",
    stride: int | None = None,
    seed: int = 0,
    limit: int | None = None,
    batch: int = 256,
    device: str | torch.device = "cpu",
    examples: int = 0,
    examples_dir: str | os.PathLike[str] | None = None,
    offsets: bool = True,
) -> dict[str, Any]:
    """Measure whole-photo analysis of a run on photos with a manipulated region, shared through libjpeg.

    Args:
        run_dir: a ``train manipulation`` run whose dataset and NIP run are at hand.
        images: a split name (``"test"``, falling back to ``"val"`` without a test split) or a list of
            :class:`~neuralimaging.data.dataset.Sample`.
        calibration_images: images to fit the calibration on (split name or samples; default the training
            split); ``"val"`` becomes ``"train"`` when the evaluation itself fell back to the validation
            images. None keeps the default temperature.
        stride: window stride (default: :func:`~neuralimaging.experiments.analysis.default_stride`).
        seed: seed of the manipulated rectangles (the calibration photos use ``seed + 1``).
        limit: use at most this many images of each set (in turn per source photo).
        batch: windows per FAN pass.
        device: where to compute.
        examples: write this many test images' photos (every class) with their overlays to ``examples_dir``.
        offsets: fit per-class offsets with the temperature.

    Returns:
        ``run``, ``mode``, ``split``, ``calibration_split``, ``patch``, ``stride``, ``channel``, ``classes``,
        ``region_fraction``, ``images``, and per aggregation (``aggregations``) :func:`score_records`' figures
        with the fitted calibration.
    """
    from neuralimaging.experiments.fidelity import fidelity_images

    workflow, analyzer, config, digest = _setup(run_dir, stride, device)
    samples, split = resolve_images(config["data"], images)
    if limit is not None:
        samples = fidelity_images(samples, limit)
    calibration_split = None
    fitting: list[Record] = []
    if calibration_images is not None:
        wanted = "train" if calibration_images == "val" and split == "val" else calibration_images
        fit_samples, calibration_split = resolve_images(config["data"], wanted)
        if limit is not None:
            fit_samples = fidelity_images(fit_samples, limit)
        fitting = collect_records(analyzer, workflow, fit_samples, seed=seed + 1, batch=batch)
    calibrations = {
        aggregation: _fit(analyzer, fitting, aggregation, f"{calibration_split} split", digest, offsets)
        if fitting else Calibration(aggregation=aggregation)
        for aggregation in AGGREGATIONS
    }
    analyzer.calibration = calibrations["mixture"]  # the examples' overlays show the default aggregation
    records = collect_records(analyzer, workflow, samples, seed=seed, batch=batch, examples=examples,
                              examples_dir=examples_dir)
    results = {
        aggregation: {**score_records(analyzer, records, calibration), "calibration": calibration.__dict__}
        for aggregation, calibration in calibrations.items()
    }
    return {
        "run": analyzer.run,
        "mode": config["train"],
        "split": split,
        "calibration_split": calibration_split,
        "patch": analyzer.patch,
        "stride": analyzer.stride,
        "channel": getattr(workflow.channel, "spec", str(workflow.channel)),
        "classes": list(analyzer.classes),
        "region_fraction": list(REGION_FRACTION),
        "images": len(samples),
        "aggregations": results,
    }


def example_overlays(
    run_dir: str | os.PathLike[str],
    images: str | Sequence[Any] = "val",
    *,
    count: int = 1,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> list[tuple[str, bytes, str]]:
    """Overlays of :func:`shared_photos` photos (every class) of a run's first ``count`` images, analysed with
    the default calibration.

    Args:
        run_dir: a ``train manipulation`` run whose dataset and NIP run are at hand.
        images: split name (default ``"val"``) or a list of samples.
        count: images to show (in turn per source photo).
        seed: seed of the manipulated rectangles.
        device: where to compute.

    Returns:
        ``(photo name, overlay PNG, caption)`` per photo, sample-major, class-minor.
    """
    from neuralimaging.experiments.fidelity import fidelity_images

    if count < 1:
        raise InputError(f"example_overlays: count must be at least 1, got {count}")
    workflow, analyzer, config, _ = _setup(run_dir, None, device)
    samples, _ = resolve_images(config["data"], images)
    overlays = []
    for photo in shared_photos(workflow, fidelity_images(samples, count), seed=seed):
        result = analyze_photo(analyzer, photo.pixels)
        truth = analyzer.classes[photo.label]
        region = f", region {photo.mask.mean():.0%} of the photo" if photo.label else ""
        caption = f"{photo.name}: true {truth}{region}; decision {result.decision} ({result.confidence:.2f})"
        overlays.append((photo.name, overlay_png(photo.pixels, result), caption))
    return overlays
