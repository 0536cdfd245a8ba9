"""The paper's figures from a results table or from run directories (matplotlib, Agg backend).

- :func:`tradeoff_figure`: FAN accuracy vs PSNR and vs SSIM over ``lambda_nip`` (Korus & Memon, Fig. 9;
  supplement Figs. 2-3).
- :func:`progress_figure`: accuracy, PSNR and loss over epochs for F and F+N runs (Fig. 8).
- :func:`confusion_figure`, :func:`confusion_text`, :func:`confusion_latex`: confusion matrices as in
  Table 4 (rows: true class, columns: predicted, in percent; entries ~0 blank, < 3% marked ``*``).
- :func:`artifact_images` / :func:`artifacts_figure`: the learned artifacts (Fig. 10): target, pre-trained
  NIP, optimized NIP, difference, spectra ``log(10 + |F(.)|)`` and ``Delta F = | |F(y0)| - |F(y*)| |``.
- :func:`boxplot_figure`: accuracy and PSNR per configuration.

Every figure function returns a :class:`matplotlib.figure.Figure`; :func:`figure_png` turns one into PNG bytes
and :func:`save_figure` writes it. Nothing is shown on screen.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from neuralimaging.errors import InputError  # noqa: E402
from neuralimaging.fsutil import replacing  # noqa: E402

__all__ = [
    "artifact_images",
    "artifacts_figure",
    "boxplot_figure",
    "confusion_figure",
    "confusion_latex",
    "confusion_percent",
    "confusion_text",
    "config_label",
    "figure_png",
    "progress_figure",
    "save_figure",
    "spectrum",
    "tradeoff_figure",
]

_SHORT = {"native": "nat.", "sharpen": "sha.", "gaussian": "gau.", "jpeg": "jpg", "jpg": "jpg", "resample": "res."}


def figure_png(fig: Figure, dpi: int = 100) -> bytes:
    """The figure as PNG bytes (the figure is closed afterwards)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def save_figure(fig: Figure, path: str | os.PathLike[str], dpi: int = 100) -> Path:
    """Write the figure to ``path`` (format from the suffix; written whole or not at all) and close it."""
    path = Path(path)
    try:
        with replacing(path) as tmp:
            fig.savefig(tmp, dpi=dpi, bbox_inches="tight",
                        format=path.suffix.lstrip(".").lower() or plt.rcParams["savefig.format"])
    finally:
        plt.close(fig)
    return path


def config_label(row: Mapping[str, Any]) -> str:
    """A short name of a configuration row, e.g. ``default/inet F+N l=0.01`` (F runs: ``... F``)."""
    parts = [str(row[k]) for k in ("camera", "nip") if k in row and _present(row[k])]
    mode = row.get("mode")
    if _present(mode):
        parts.append(str(mode))
    lam = row.get("lambda_nip")
    if _present(lam) and mode != "F":
        parts.append(f"λ={float(lam):g}")
    return " ".join(parts) or str(row.get("run", "?"))


def _present(value: Any) -> bool:
    if value is None or value == "-":
        return False
    try:
        return not bool(pd.isna(value))
    except (TypeError, ValueError):
        return True


def _need(table: pd.DataFrame, columns: Sequence[str], what: str) -> pd.DataFrame:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise InputError(f"{what} needs columns {', '.join(columns)}; the table lacks {', '.join(missing)}")
    done = table[table["state"] == "done"] if "state" in table else table
    done = done.dropna(subset=list(columns))
    if done.empty:
        raise InputError(f"{what}: no finished run has {', '.join(columns)}")
    return done


# -- Fig. 9: trade-off -----------------------------------------------------------------------------------
def tradeoff_figure(table: pd.DataFrame, *, x: Sequence[str] = ("psnr", "ssim")) -> Figure:
    """FAN accuracy against image fidelity, one panel per fidelity metric (paper Fig. 9).

    Each finished run is a small dot coloured by ``lambda_nip`` (log scale); the mean of each configuration
    is a large marker, joined across ``lambda_nip`` per (camera, NIP). F runs (no ``lambda_nip``) are grey
    crosses.

    Args:
        table: :func:`~neuralimaging.experiments.results.collect`'s table (needs ``accuracy`` and ``x``).
        x: fidelity columns, one panel each.
    """
    done = _need(table, ["accuracy", x[0]], "the trade-off figure")
    panels = [m for m in x if m in done.columns and done[m].notna().any()]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.2), squeeze=False)
    lam = pd.to_numeric(done["lambda_nip"], errors="coerce") if "lambda_nip" in done else pd.Series(np.nan, index=done.index)
    positive = lam[lam > 0]
    norm = None
    if len(positive):
        low, high = float(positive.min()), float(positive.max())
        if high <= low:  # a single lambda: a decade around it
            low, high = low / 10**0.5, high * 10**0.5
        norm = matplotlib.colors.LogNorm(vmin=low, vmax=high)
    cmap = plt.get_cmap("viridis")
    groups = [c for c in ("camera", "nip") if c in done.columns]
    markers = "os^Dvp*h"
    for ax, metric in zip(axes[0], panels):
        f_mask = lam.isna()
        if f_mask.any():
            ax.scatter(done.loc[f_mask, metric], done.loc[f_mask, "accuracy"], marker="x", color="0.4", label="F (FAN only)")
        fn = done[~f_mask].assign(_lam=lam[~f_mask])
        if norm is not None and not fn.empty:
            ax.scatter(fn[metric], fn["accuracy"], c=fn["_lam"].clip(lower=positive.min()), cmap=cmap, norm=norm, s=12, alpha=0.6)
            keyed = list(fn.groupby(groups, sort=True)) if groups else [((), fn)]
            for i, (key, part) in enumerate(keyed):
                means = part.groupby("_lam")[[metric, "accuracy"]].mean().sort_index()
                name = " ".join(map(str, key if isinstance(key, tuple) else (key,)))
                ax.plot(means[metric], means["accuracy"], "-", color="0.6", lw=0.8, zorder=1)
                ax.scatter(means[metric], means["accuracy"], c=means.index, cmap=cmap, norm=norm, s=60,
                           marker=markers[i % len(markers)], edgecolors="k", label=f"F+N {name}".strip(), zorder=2)
        ax.set_xlabel({"psnr": "PSNR [dB]", "ssim": "SSIM"}.get(metric, metric))
        ax.set_ylabel("FAN accuracy")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    if norm is not None:
        fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap), ax=list(axes[0]), label="λ (lambda_nip)")
    fig.suptitle("Accuracy vs fidelity trade-off (paper Fig. 9)")
    return fig


# -- Fig. 8: training progress ---------------------------------------------------------------------------
def _metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise InputError(f"{run_dir}: no metrics.jsonl (not a training run?)")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def progress_figure(runs: Mapping[str, str | os.PathLike[str]], *, title: str = "Training progress (paper Fig. 8)") -> Figure:
    """Validation accuracy, PSNR and training loss over epochs for several runs (e.g. F and F+N).

    Args:
        runs: legend label -> run folder (with ``metrics.jsonl``).
        title: figure title.

    Panels appear for the series present in the runs' metrics: ``accuracy``, ``psnr``, and the loss
    (``train_loss``, else ``val_loss``). The x axis is ``epoch`` (else ``step``).
    """
    if not runs:
        raise InputError("progress_figure needs at least one run")
    series = {label: _metrics(Path(path)) for label, path in runs.items()}
    wanted = [("accuracy", "validation accuracy"), ("psnr", "PSNR [dB]"), ("loss", "training loss")]
    present = []
    for key, ylabel in wanted:
        if any(_series_key(records, key) for records in series.values()):
            present.append((key, ylabel))
    if not present:
        raise InputError(f"none of the runs' metrics has accuracy, psnr or a loss: {', '.join(map(str, runs.values()))}")
    fig, axes = plt.subplots(1, len(present), figsize=(4.4 * len(present), 3.6), squeeze=False)
    for ax, (key, ylabel) in zip(axes[0], present):
        for label, records in series.items():
            column = _series_key(records, key)
            if column is None:
                continue
            xs = [r.get("epoch", r.get("step")) for r in records if _finite(r.get(column))]
            ys = [r[column] for r in records if _finite(r.get(column))]
            ax.plot(xs, ys, marker="o", ms=3, label=label)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        if key == "loss":
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(title)
    return fig


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)


def _series_key(records: Sequence[Mapping[str, Any]], key: str) -> str | None:
    candidates = ["train_loss", "loss", "val_loss"] if key == "loss" else [key]
    for candidate in candidates:
        if any(_finite(r.get(candidate)) for r in records):
            return candidate
    return None


# -- Table 4: confusion matrices -------------------------------------------------------------------------
def confusion_percent(confusion: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    """Row-normalized confusion matrix in percent (rows: true class; a row without samples stays 0)."""
    matrix = np.asarray(confusion, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] == 0:
        raise InputError(f"a confusion matrix must be square (C, C), got shape {matrix.shape}")
    if (matrix < 0).any():
        raise InputError("a confusion matrix holds counts or rates >= 0")
    totals = matrix.sum(axis=1, keepdims=True)
    return np.divide(100.0 * matrix, totals, out=np.zeros_like(matrix), where=totals > 0)


def _cell(value: float) -> str:
    """Table 4's convention: entries ~0 blank, entries < 3% as ``*``, else the rounded percent."""
    if value < 0.5:
        return ""
    return "*" if value < 3 else f"{value:.0f}"


def _check_classes(matrix: np.ndarray, classes: Sequence[str]) -> None:
    if len(classes) != matrix.shape[0]:
        raise InputError(f"{len(classes)} class names for a {matrix.shape[0]}x{matrix.shape[0]} confusion matrix")


def confusion_text(confusion: Sequence[Sequence[float]] | np.ndarray, classes: Sequence[str]) -> str:
    """A plain-text confusion matrix like paper Table 4 (percent per true class; blank ~0, ``*`` < 3%)."""
    matrix = confusion_percent(confusion)
    _check_classes(matrix, classes)
    width = max(len(c) for c in classes) + 1
    head = " " * width + "".join(f"{_SHORT.get(c, c[:4]):>6}" for c in classes)
    rows = [f"{c:<{width}}" + "".join(f"{_cell(v):>6}" for v in row) for c, row in zip(classes, matrix)]
    accuracy = float(np.trace(np.asarray(confusion, dtype=np.float64)) / max(np.asarray(confusion, dtype=np.float64).sum(), 1e-12))
    return "\n".join([f"True \\ Predicted (accuracy {100 * accuracy:.1f}%)", head, *rows])


def confusion_latex(confusion: Sequence[Sequence[float]] | np.ndarray, classes: Sequence[str], caption: str = "") -> str:
    """A LaTeX ``tabular`` of the confusion matrix in paper Table 4's format."""
    matrix = confusion_percent(confusion)
    _check_classes(matrix, classes)

    def esc(text: str) -> str:
        return text.replace("\\", r"\textbackslash{}").replace("_", r"\_").replace("&", r"\&").replace("%", r"\%")

    lines = [r"\begin{table}", r"\centering"]
    if caption:
        lines.append(rf"\caption{{{esc(caption)}}}")
    lines += [
        r"\begin{tabular}{l" + "r" * len(classes) + "}",
        r"\hline",
        "True / Predicted & " + " & ".join(esc(_SHORT.get(c, c)) for c in classes) + r" \\",
        r"\hline",
    ]
    for name, row in zip(classes, matrix):
        lines.append(esc(name) + " & " + " & ".join(_cell(v) for v in row) + r" \\")
    lines += [r"\hline", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines)


def confusion_figure(confusion: Sequence[Sequence[float]] | np.ndarray, classes: Sequence[str], *, title: str = "") -> Figure:
    """The confusion matrix as a heat map with Table 4's cell labels (percent per true class)."""
    matrix = confusion_percent(confusion)
    _check_classes(matrix, classes)
    n = len(classes)
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * n, 0.8 + 0.7 * n))
    ax.imshow(matrix, cmap="Blues", vmin=0, vmax=100)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, _cell(matrix[i, j]), ha="center", va="center", fontsize=9,
                    color="white" if matrix[i, j] > 60 else "black")
    ax.set_xticks(range(n), [_SHORT.get(c, c) for c in classes], rotation=45)
    ax.set_yticks(range(n), list(classes))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        ax.set_title(title, fontsize=9)
    return fig


# -- Fig. 10: learned artifacts --------------------------------------------------------------------------
def spectrum(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """Centred 2D amplitude spectrum ``|F(x)|`` of an image, channels averaged.

    Args:
        image: ``(3, H, W)`` or ``(H, W)``, any range.

    Returns:
        float64 ``(H, W)`` with the zero frequency in the centre.
    """
    array = image.detach().cpu().double().numpy() if isinstance(image, torch.Tensor) else np.asarray(image, np.float64)
    if array.ndim == 3:
        array = array.mean(axis=0)
    if array.ndim != 2:
        raise InputError(f"spectrum expects (3, H, W) or (H, W), got shape {array.shape}")
    return np.abs(np.fft.fftshift(np.fft.fft2(array)))


def _log_amplitude(amplitude: np.ndarray) -> np.ndarray:
    """The paper's display scale f(x) = log(10 + |x|)."""
    return np.log(10.0 + np.abs(amplitude))


def artifact_images(
    pretrained_run: str | os.PathLike[str],
    optimized_run: str | os.PathLike[str],
    *,
    n: int = 3,
    patch: int = 64,
    data: str | os.PathLike[str] | None = None,
    seed: int = 0,
    device: str = "cpu",
) -> dict[str, torch.Tensor]:
    """Develop validation patches with the pre-trained and the jointly optimized NIP (paper Fig. 10).

    Args:
        pretrained_run: the NIP pre-training run (``train_nip``), giving theta_0.
        optimized_run: an F+N run (``train_manipulation`` with ``train: fan,nip``), whose checkpoint holds
            theta* under ``nip``.
        n: number of patches.
        patch: RAW patch side (the RGB output is ``2 * patch``).
        data: dataset folder (default: the F+N run's ``config.yaml`` ``data``).
        seed: seed of the fixed validation patches.
        device: where to run the NIPs.

    Returns:
        ``target``, ``pretrained``, ``optimized``: float32 ``(n, 3, 2 patch, 2 patch)`` in [0, 1].
    """
    from neuralimaging.data.dataset import Dataset
    from neuralimaging.data.patches import validation_patches
    from neuralimaging.experiments.rundir import RunDir
    from neuralimaging.experiments.train_nip import load_nip

    fn_run = RunDir(optimized_run)
    config = fn_run.read_config()
    if "nip" not in str(config.get("train", "")):
        raise InputError(f"{optimized_run}: not an F+N run (train is {config.get('train')!r}); its NIP was not optimized")
    data = data if data is not None else config.get("data")
    if data is None:
        raise InputError(f"{optimized_run}: config.yaml names no dataset; pass data=")
    dataset = Dataset.load(data)
    samples = dataset.val or dataset.train
    rggb, target = validation_patches(samples, n, patch, seed)
    nip0 = load_nip(pretrained_run, device=device)
    from neuralimaging.experiments.train_manipulation import load_joint_nip  # handles the residual

    nip_star = load_joint_nip(optimized_run, device=device)
    with torch.no_grad():
        x = rggb.to(device)
        y0 = nip0(x).clamp(0, 1).cpu()
        y_star = nip_star(x).clamp(0, 1).cpu()
    return {"target": target.float().cpu(), "pretrained": y0.float(), "optimized": y_star.float()}


def artifacts_figure(images: Mapping[str, torch.Tensor], *, title: str = "Learned artifacts (paper Fig. 10)", gain: float = 5.0) -> Figure:
    """One row per patch: target y, pre-trained y0, optimized y*, ``gain * |y0 - y*|``, the spectrum
    ``f(F(y* - y))`` and ``f(Delta F)`` with ``Delta F = | |F(y0)| - |F(y*)| |``, ``f(x) = log(10 + |x|)``.

    Args:
        images: :func:`artifact_images`'s output (``target``, ``pretrained``, ``optimized``: ``(n, 3, H, W)``).
        gain: amplification of the difference image.
    """
    for key in ("target", "pretrained", "optimized"):
        if key not in images:
            raise InputError(f"artifacts_figure needs images[{key!r}]")
    target, y0, y_star = (images[k].detach().cpu().float() for k in ("target", "pretrained", "optimized"))
    if not (target.shape == y0.shape == y_star.shape) or target.ndim != 4 or target.shape[1] != 3:
        raise InputError(f"artifact images must share one (n, 3, H, W) shape, got {tuple(target.shape)}, {tuple(y0.shape)}, {tuple(y_star.shape)}")
    n = target.shape[0]
    columns = ["target y", "pre-trained ŷ0", "optimized ŷ*", f"|ŷ0 − ŷ*| ×{gain:g}", "f(F(ŷ* − y))", "f(ΔF)"]
    fig, axes = plt.subplots(n, len(columns), figsize=(2.1 * len(columns), 2.2 * n), squeeze=False)
    for i in range(n):
        diff = (y0[i] - y_star[i]).abs()
        panels = [
            target[i].permute(1, 2, 0).numpy(),
            y0[i].permute(1, 2, 0).numpy(),
            y_star[i].permute(1, 2, 0).numpy(),
            (gain * diff).clamp(0, 1).permute(1, 2, 0).numpy(),
            _log_amplitude(spectrum(255.0 * (y_star[i].double() - target[i].double()))),
            _log_amplitude(np.abs(spectrum(255.0 * y0[i].double()) - spectrum(255.0 * y_star[i].double()))),
        ]
        for j, (ax, panel) in enumerate(zip(axes[i], panels)):
            ax.imshow(panel, cmap=None if panel.ndim == 3 else "magma", interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(columns[j], fontsize=8)
    fig.suptitle(title)
    return fig


# -- boxplots --------------------------------------------------------------------------------------------
def boxplot_figure(table: pd.DataFrame, *, metrics: Sequence[str] = ("accuracy", "psnr")) -> Figure:
    """Box plots of each metric per configuration (repetitions as samples), one panel per metric."""
    present = [m for m in metrics if m in table.columns and table[m].notna().any()]
    if not present:
        raise InputError(f"the box plots need one of the columns {', '.join(metrics)}")
    done = _need(table, present[:1], "the box plots")
    labels = done.apply(config_label, axis=1)
    order = list(dict.fromkeys(labels))
    fig, axes = plt.subplots(1, len(present), figsize=(max(5.0, 0.55 * len(order) + 2) * len(present) / 1.4, 4.0), squeeze=False)
    for ax, metric in zip(axes[0], present):
        data = [done.loc[labels == label, metric].dropna().to_numpy() for label in order]
        ax.boxplot(data, showmeans=True)
        ax.set_xticks(range(1, len(order) + 1), order, rotation=60, ha="right", fontsize=7)
        ax.set_ylabel({"psnr": "PSNR [dB]", "accuracy": "FAN accuracy", "ssim": "SSIM"}.get(metric, metric))
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle("Spread over repetitions per configuration")
    return fig
