"""The cross-pipeline PRNU study (Korus & Memon, section 3.3.1 and Fig. 5).

The same RAW images are developed by several pipelines (the python ISP, LibRaw, trained NIPs); every pipeline
gives a camera model (fingerprint from one set of images, correlation predictor from a second) and is tested
on the tampered images of a third set developed by every pipeline. Results:

(a) the correlation between the fingerprints of every pair of pipelines (Fig. 5a), and of each with the true
    sensor K when the RAW folder comes from a virtual camera (``camera.json`` sidecar);
(b) the mean best F1 of tampering localization with the model of pipeline ``i`` on images of pipeline ``j``
    (Fig. 5b);
(c) tampering probability maps of one evaluation image for every pair (Fig. 5c);

plus the mean PCE of each pipeline's evaluation images against its own fingerprint (Table 3). All images are
sensor-aligned central crops, so fingerprints of different pipelines can be compared pixel by pixel.
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from neuralimaging.data.dataset import RAW_SUFFIXES, find_raw_files
from neuralimaging.errors import InputError
from neuralimaging.forensics import localization as loc
from neuralimaging.forensics import prnu

__all__ = ["Pipeline", "cross_pipeline", "develop_crops", "find_raws", "parse_pipelines", "split_counts"]


@dataclass(frozen=True)
class Pipeline:
    """One way of developing RAW images: ``python``, ``libraw`` or a NIP run (``kind`` ``nip``)."""

    label: str
    kind: str
    run: Path | None = None


def parse_pipelines(spec: str | Sequence[str]) -> list[Pipeline]:
    """Parse ``"python,libraw,inet:RUN,unet:RUN2"`` (a NIP is ``name:run_dir``; ``nip:RUN`` works too).

    Labels are unique: a repeated label gets ``#2``, ``#3``, ... (several instances of one NIP).
    """
    items = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    if not items:
        raise InputError("no pipelines given; expected e.g. python,libraw,unet:runs/unet")
    pipelines: list[Pipeline] = []
    seen: dict[str, int] = {}
    for item in items:
        if item in ("python", "libraw"):
            label, kind, run = item, item, None
        elif ":" in item:
            name, _, path = item.partition(":")
            if not path:
                raise InputError(f"pipeline {item!r}: expected name:RUN_DIR with the NIP's training run")
            run = Path(path)
            if not run.is_dir():
                raise InputError(f"pipeline {item!r}: {run} is not a run folder")
            label, kind = name or "nip", "nip"
        else:
            raise InputError(f"pipeline {item!r}: expected python, libraw or NAME:RUN_DIR")
        seen[label] = seen.get(label, 0) + 1
        if seen[label] > 1:
            label = f"{label}#{seen[label]}"
        pipelines.append(Pipeline(label, kind, run))
    return pipelines


def find_raws(raw_dir: str | os.PathLike) -> list[Path]:
    """RAW files (DNG, NEF, CR2, ...) of a folder, sorted by name; an error when there are none."""
    raws = find_raw_files(raw_dir)
    if not raws:
        raise InputError(f"{raw_dir}: no RAW files ({', '.join(RAW_SUFFIXES[:6])}, ...) found")
    return raws


def split_counts(n: int, split: Sequence[float]) -> tuple[int, int, int]:
    """Image counts of the fingerprint / predictor / evaluation sets: fractions of ``n`` (paper 90/30/30)."""
    if len(split) != 3 or any(s <= 0 for s in split):
        raise InputError(f"split must be three positive fractions, got {list(split)}")
    total = float(sum(split))
    n_pred = max(1, int(math.floor(n * split[1] / total)))
    n_eval = max(1, int(math.floor(n * split[2] / total)))
    n_fp = n - n_pred - n_eval
    if n_fp < 2:
        raise InputError(f"the study needs at least 4 RAW images (2 fingerprint, 1 predictor, 1 evaluation), got {n}")
    return n_fp, n_pred, n_eval


def _crop_box(shape: tuple[int, int], crop: int | None) -> tuple[int, int, int]:
    h, w = shape
    side = min(h, w) if crop is None else crop
    side -= side % 2
    if side < 64 or side > min(h, w):
        raise InputError(f"crop must be an even size in [64, {min(h, w)}] for {h}x{w} images, got {crop}")
    top, left = (h - side) // 4 * 2, (w - side) // 4 * 2  # even offsets keep the Bayer phase
    return top, left, side


def develop_crops(
    raw_paths: Sequence[Path],
    pipeline: Pipeline,
    crop: int | None,
    *,
    device: str = "cpu",
    progress: bool = False,
) -> list[np.ndarray]:
    """Develop every RAW file with ``pipeline``; sensor-aligned central ``crop`` x ``crop`` float32 (3, c, c).

    ``python`` and ``libraw`` develop without orientation (sensor coordinates); a NIP develops the
    normalized RGGB stack of the crop's region (plus 16 pixels of context) with ``develop_tiled``, from the
    mosaic mirror-padded to RGGB (``bayer.pad_to_rggb``), so any crop up to the sensor's size fits whatever
    the CFA pattern.
    """
    import torch

    from neuralimaging.acquisition import bayer, isp
    from neuralimaging.acquisition.raw import read_raw

    model = None
    if pipeline.kind == "nip":
        from neuralimaging.acquisition.nip import develop_tiled
        from neuralimaging.experiments.train_nip import load_nip

        model = load_nip(pipeline.run, device=device)  # type: ignore[arg-type]
    out: list[np.ndarray] = []
    for path in tqdm(raw_paths, desc=f"develop {pipeline.label}", unit="raw", disable=not progress, file=sys.stderr):
        raw = read_raw(path)
        top, left, side = _crop_box(raw.mosaic.shape, crop)
        if model is None:
            rgb = isp.develop(raw if pipeline.kind == "python" else raw.path, pipeline.kind, orient=False)  # type: ignore[arg-type]
            if rgb.shape[-2:] != raw.mosaic.shape:
                raise InputError(f"{path}: {pipeline.label} developed {rgb.shape[-2]}x{rgb.shape[-1]}, expected the sensor's {raw.mosaic.shape[0]}x{raw.mosaic.shape[1]}")
            out.append(np.ascontiguousarray(rgb[:, top : top + side, left : left + side]))
            continue
        dy, dx = bayer.cfa_offset(raw.cfa)
        # RGGB stack of the mirror-padded mosaic: it covers every sensor pixel, (y, x) at (y + dy, x + dx)
        stack = bayer.normalize(raw, pad=True)
        margin = 16
        y0, x0 = (top + dy) // 2, (left + dx) // 2  # stack pixel holding the crop's first output pixel
        sy0, sx0 = max(0, y0 - margin), max(0, x0 - margin)
        sy1, sx1 = min(stack.shape[1], y0 + side // 2 + margin + 1), min(stack.shape[2], x0 + side // 2 + margin + 1)
        part = torch.from_numpy(np.ascontiguousarray(stack[:, sy0:sy1, sx0:sx1]))[None]
        rgb = develop_tiled(model, part, device=device)[0].numpy()
        oy, ox = top + dy - 2 * sy0, left + dx - 2 * sx0
        out.append(np.ascontiguousarray(rgb[:, oy : oy + side, ox : ox + side], dtype=np.float32))
    return out


def _developed(
    raws: Sequence[Path], pipeline: Pipeline, crop: int | None, folder: Path, *, device: str, progress: bool
) -> list[Path]:
    """Develop into ``folder`` as 16-bit PNGs (kept between runs: an interrupted study resumes)."""
    from neuralimaging.io import save_image

    source = {"kind": pipeline.kind, "run": str(pipeline.run.resolve()) if pipeline.run else None, "crop": crop}
    marker = folder / "source.json"
    if marker.is_file() and json.loads(marker.read_text()) != source:
        for old in folder.glob("*.png"):
            old.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps(source))
    paths = [folder / f"{raw.stem}.png" for raw in raws]
    todo = [(raw, path) for raw, path in zip(raws, paths, strict=True) if not path.is_file()]
    bar = tqdm(todo, desc=f"develop {pipeline.label}", unit="raw", disable=not progress, file=sys.stderr)
    for raw, path in bar:
        (rgb,) = develop_crops([raw], pipeline, crop, device=device)
        save_image(path, rgb, bits=16)
    return paths


def _true_k(raw_dir: Path, raw_path: Path, crop: int | None) -> np.ndarray | None:
    """The sensor's K (central crop) when the folder holds a virtual camera with a ``camera.json`` sidecar."""
    from neuralimaging.acquisition.raw import read_raw
    from neuralimaging.acquisition.virtual_camera import SIDECAR, CameraProfile

    sidecar = raw_dir / SIDECAR
    if not sidecar.is_file():
        return None
    try:
        profile = json.loads(sidecar.read_text())["profile"]
        camera = CameraProfile(**{k: tuple(v) if isinstance(v, list) else v for k, v in profile.items()})
    except (OSError, ValueError, KeyError, TypeError):
        return None
    k = camera.prnu()
    shape = read_raw(raw_path).mosaic.shape
    if k.shape != shape:
        return None
    top, left, side = _crop_box(shape, crop)
    return k[top : top + side, left : left + side]


def _matrix_figure(matrix: np.ndarray, labels: list[str], title: str, path: Path, *, rows: str, cols: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from neuralimaging.experiments.plots import save_figure

    size = 1.2 + 0.9 * len(labels)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(matrix, vmin=min(0.0, float(np.nanmin(matrix))), vmax=1.0, cmap="viridis")
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", color="w" if matrix[i, j] < 0.6 else "k", fontsize=9)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(matrix.shape[0]), labels[: matrix.shape[0]] if matrix.shape[0] == len(labels) else [*labels, "true K"])
    ax.set_xlabel(cols)
    ax.set_ylabel(rows)
    ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.046)
    save_figure(fig, path)


def _maps_figure(maps: list[list[np.ndarray]], tampered: list[np.ndarray], labels: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from neuralimaging.experiments.plots import save_figure

    n = len(labels)
    fig, axes = plt.subplots(n + 1, n, figsize=(2.2 * n, 2.2 * (n + 1)), squeeze=False)
    for j in range(n):
        axes[0, j].imshow(np.clip(tampered[j].transpose(1, 2, 0), 0, 1))
        axes[0, j].set_title(f"images: {labels[j]}", fontsize=8)
        for i in range(n):
            axes[i + 1, j].imshow(maps[i][j], vmin=0, vmax=1, cmap="magma")
            if j == 0:
                axes[i + 1, j].set_ylabel(f"model: {labels[i]}", fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("tampering probability (flipped central square)")
    save_figure(fig, path)


def _write_csv(path: Path, matrix: np.ndarray, rows: list[str], cols: list[str]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["", *cols])
        for label, row in zip(rows, matrix, strict=True):
            writer.writerow([label, *(f"{v:.4f}" for v in row)])
    os.replace(tmp, path)


def cross_pipeline(
    raw_dir: str | os.PathLike,
    pipelines: str | Sequence[str],
    out_dir: str | os.PathLike,
    *,
    crop: int | None = 1024,
    split: Sequence[float] = (90, 30, 30),
    seed: int = 0,
    window: int = 129,
    stride: int = 8,
    tamper: int = 256,
    sigma: float = prnu.DEFAULT_SIGMA,
    color: str = "gray",
    device: str = "cpu",
    progress: bool = True,
) -> dict:
    """Run the study on the RAW files of ``raw_dir`` and write tables and figures to ``out_dir``.

    Args:
        raw_dir: folder of RAW files of one camera (a virtual camera's folder adds the true-K row).
        pipelines: ``"python,libraw,unet:RUN,..."`` (see :func:`parse_pipelines`).
        out_dir: output folder: ``results.json``, ``correlation.csv``, ``f1.csv``, ``pce.csv``, the figures
            ``fingerprint_correlation.png``, ``localization_f1.png``, ``localization_examples.png``, and the
            developed crops as 16-bit PNGs in ``developed/<pipeline>/`` (reused when the study is rerun).
        crop: side of the sensor-aligned central crop (1024 ~ the paper's 1 Mpx); None: largest square.
        split: relative sizes of the fingerprint / predictor / evaluation sets (paper: 90 / 30 / 30).
        seed: seed of the random split (the same split for every pipeline).
        window: localization window (129).
        stride: localization stride (8).
        tamper: side of the flipped square (256).
        sigma: denoiser noise level (:func:`~neuralimaging.forensics.prnu.noise_residual`).
        color: residual colour mode (:func:`~neuralimaging.forensics.prnu.noise_residual`).
        device: where NIPs run.
        progress: progress bars on stderr.

    Returns:
        The summary written to ``results.json``.
    """
    start = time.perf_counter()
    raw_dir = Path(raw_dir)
    raws = find_raws(raw_dir)
    specs = parse_pipelines(pipelines)
    n_fp, n_pred, n_eval = split_counts(len(raws), split)
    order = np.random.default_rng(seed).permutation(len(raws))
    sets = {"fingerprint": order[:n_fp], "predictor": order[n_fp : n_fp + n_pred], "evaluation": order[n_fp + n_pred :]}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    labels = [p.label for p in specs]

    developed_dir = out / "developed"
    files = {p.label: _developed(raws, p, crop, developed_dir / p.label, device=device, progress=progress) for p in specs}

    def load(label: str, indices: Sequence[int]) -> list[np.ndarray]:
        return [prnu.load_image(files[label][i]) for i in indices]

    side = load(labels[0], [0])[0].shape[-1]
    if tamper > side - window // 2:
        raise InputError(f"tamper size {tamper} is too large for {side}x{side} crops; use a smaller --tamper or larger --crop")

    models: dict[str, tuple[np.ndarray, loc.CorrelationPredictor]] = {}
    residuals: dict[str, list[np.ndarray]] = {}
    masks = None
    for label in tqdm(labels, desc="camera models", disable=not progress, file=sys.stderr):
        k = prnu.fingerprint([files[label][i] for i in sets["fingerprint"]], sigma=sigma, color=color)  # type: ignore[arg-type]
        predictor = loc.CorrelationPredictor.fit(
            load(label, sets["predictor"]), k, window=window, stride=stride, sigma=sigma, color=color
        )
        models[label] = (k, predictor)
        tampered_set = [loc.tamper_flip(image, tamper) for image in load(label, sets["evaluation"])]
        masks = [m for _, m in tampered_set]
        residuals[label] = [prnu.noise_residual(t, sigma=sigma, color=color) for t, _ in tampered_set]  # type: ignore[arg-type]
    assert masks is not None

    p = len(labels)
    correlation = np.array([[prnu.ncc(models[a][0], models[b][0]) for b in labels] for a in labels])
    truth = _true_k(raw_dir, raws[0], crop)
    truth_row = [prnu.ncc(models[a][0], truth) for a in labels] if truth is not None else None

    pce = {}
    for label in labels:
        k = models[label][0]
        values = [prnu.match(k, image, sigma=sigma, color=color).pce for image in load(label, sets["evaluation"])]  # type: ignore[arg-type]
        pce[label] = {"mean": float(np.mean(values)), "median": float(np.median(values)), "min": float(np.min(values))}

    f1 = np.zeros((p, p))
    maps: list[list[np.ndarray]] = [[None] * p for _ in range(p)]  # type: ignore[list-item]
    for i, model_label in enumerate(tqdm(labels, desc="localization", disable=not progress, file=sys.stderr)):
        k, predictor = models[model_label]
        for j, image_label in enumerate(labels):
            scores = []
            for n, image in enumerate(load(image_label, sets["evaluation"])):
                tampered, _ = loc.tamper_flip(image, tamper)
                result = loc.localize(tampered, k, predictor, residual=residuals[image_label][n])
                scores.append(loc.best_f1(result.probability, result.mask_at_centres(masks[n]))[0])
                if n == 0:
                    maps[i][j] = result.full()
            f1[i, j] = float(np.mean(scores))

    _write_csv(out / "correlation.csv", correlation if truth_row is None else np.vstack([correlation, truth_row]), labels if truth_row is None else [*labels, "true K"], labels)
    _write_csv(out / "f1.csv", f1, labels, labels)
    _write_csv(out / "pce.csv", np.array([[pce[l]["mean"], pce[l]["median"], pce[l]["min"]] for l in labels]), labels, ["mean", "median", "min"])
    matrix = correlation if truth_row is None else np.vstack([correlation, truth_row])
    _matrix_figure(matrix, labels, "correlation of PRNU fingerprints", out / "fingerprint_correlation.png", rows="pipeline", cols="pipeline")
    _matrix_figure(f1, labels, "localization: mean best F1", out / "localization_f1.png", rows="camera model from", cols="images from")
    first = sets["evaluation"][0]
    _maps_figure(maps, [loc.tamper_flip(load(l, [first])[0], tamper)[0] for l in labels], labels, out / "localization_examples.png")

    summary = {
        "raw_dir": str(raw_dir),
        "pipelines": [{"label": s.label, "kind": s.kind, "run": str(s.run) if s.run else None} for s in specs],
        "crop": int(side),
        "split": {name: [raws[i].name for i in idx] for name, idx in sets.items()},
        "settings": {"window": window, "stride": stride, "tamper": tamper, "sigma": sigma, "color": color, "seed": seed},
        "correlation": correlation.tolist(),
        "correlation_with_true_k": truth_row,
        "f1": f1.tolist(),
        "pce": pce,
        "predictor_r2": {label: models[label][1].stats["r2"] for label in labels},
        "wall_time_s": time.perf_counter() - start,
    }
    tmp = out / ".results.json.tmp"
    tmp.write_text(json.dumps(summary, indent=1))
    os.replace(tmp, out / "results.json")
    return summary
