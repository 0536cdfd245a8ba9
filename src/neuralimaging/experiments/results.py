"""Run directories -> one tidy pandas table, and its aggregates over repetitions (supplement Table 1).

Every run folder under a runs folder (those a sweep planned, and any folder holding ``config.yaml`` or
``summary.json``) becomes one row: its name, stage, task, state, one column per grid axis (``camera``,
``nip``, ``mode``, ``lambda_nip``, ``repetition``, ...) and one column per scalar figure of its
``summary.json`` (``accuracy``, ``psnr``, ``ssim``, ``wall_time_s``, ...; nested mappings flatten to
``a.b``; lists such as the confusion matrix stay in the run folder). Runs made by hand (no sweep) get their
axes from ``config.yaml`` (``nip``, ``lambda_nip``, ``train`` -> ``mode``, ``seed``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from neuralimaging import yamlio
from neuralimaging.errors import InputError
from neuralimaging.experiments.sweep import MODES, RUN_FILE, TASKS, find_runs, run_state
from neuralimaging.experiments.sweep.state import _read_json
from neuralimaging.fsutil import replacing

__all__ = ["AXIS_ORDER", "METRICS", "aggregate", "collect", "find_runs", "paper_table", "save_table"]

AXIS_ORDER = ("camera", "nip", "mode", "lambda_nip", "repetition")
"""Grid axes in the order tables show them (other axes follow)."""

METRICS = ("accuracy", "psnr", "ssim")
"""The figures the paper reports per configuration; listed first among metric columns."""

_ID_COLUMNS = ("run", "stage", "task", "state")
_TASK_NAMES = {path: name for name, path in TASKS.items()}
_TRAIN_TO_MODE = {train: mode for mode, (train, _) in MODES.items()}


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, Mapping):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    elif isinstance(value, bool) or isinstance(value, (int, float, str)) or value is None:
        out[prefix] = value


def _axes_from_config(config: Mapping[str, Any]) -> dict[str, Any]:
    axes: dict[str, Any] = {}
    if isinstance(config.get("nip"), str):
        axes["nip"] = config["nip"]
    elif isinstance(config.get("nip_run"), str):  # a manipulation run: the NIP its pre-trained run names
        nip_config = Path(config["nip_run"]) / "config.yaml"
        try:
            nip = yamlio.load(nip_config.read_text(encoding="utf-8")).get("nip")
        except (OSError, AttributeError, yaml.YAMLError):
            nip = None
        if isinstance(nip, str):
            axes["nip"] = nip
    train = config.get("train")
    if isinstance(train, str):
        axes["mode"] = _TRAIN_TO_MODE.get(train.replace(" ", ""), train)
    if axes.get("mode") != "F" and isinstance(config.get("lambda_nip"), (int, float)):
        axes["lambda_nip"] = float(config["lambda_nip"])
    if isinstance(config.get("seed"), int):
        axes["repetition"] = config["seed"]
    return axes


def collect(runs_dir: str | os.PathLike[str], *, include_unfinished: bool = True) -> pd.DataFrame:
    """One row per run under ``runs_dir`` with its grid axes and scalar summary figures.

    Args:
        runs_dir: a sweep's runs folder (or any folder of run folders).
        include_unfinished: keep runs without ``summary.json`` (their metric columns are NaN).

    Returns:
        Columns ``run, stage, task, state``, the axes (:data:`AXIS_ORDER` first), then the metrics
        (:data:`METRICS` first). Empty (with those id columns) when there is no run.
    """
    runs_dir = Path(runs_dir)
    rows = []
    summaries: list[dict[str, Any]] = []
    axis_names: list[str] = []
    for name in find_runs(runs_dir):
        folder = runs_dir / name
        state = run_state(folder, name)
        if state.state != "done" and not include_unfinished:
            continue
        row: dict[str, Any] = {"run": name, "stage": "", "task": "", "state": state.state}
        spec = _read_json(folder / RUN_FILE)
        if isinstance(spec, dict):
            task = spec.get("task", "")
            row["stage"], row["task"] = spec.get("stage", ""), _TASK_NAMES.get(task, task)
            axes = dict(spec.get("axes", {}))
        else:
            config_path = folder / "config.yaml"
            config = yamlio.load(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
            config = config if isinstance(config, dict) else {}
            axes = _axes_from_config(config)
            row["task"] = "manipulation" if "nip_run" in config else "nip" if "nip" in config else ""
        for axis, value in axes.items():
            row[axis] = value
            if axis not in axis_names:
                axis_names.append(axis)
        flat: dict[str, Any] = {}
        summary = _read_json(folder / "summary.json")
        if isinstance(summary, dict):
            _flatten("", summary, flat)
        rows.append(row)
        summaries.append(flat)
    # summary figures named like an axis or an id column (e.g. a run's own "lambda_nip") get a prefix
    taken = set(axis_names) | set(AXIS_ORDER) | set(_ID_COLUMNS)
    metric_names: list[str] = []
    for row, flat in zip(rows, summaries):
        for key, value in flat.items():
            key = f"summary.{key}" if key in taken else key
            row[key] = value
            if key not in metric_names:
                metric_names.append(key)
    axes_sorted = [a for a in AXIS_ORDER if a in axis_names] + [a for a in axis_names if a not in AXIS_ORDER]
    metrics_sorted = [m for m in METRICS if m in metric_names] + [m for m in metric_names if m not in METRICS]
    columns = list(_ID_COLUMNS) + axes_sorted + metrics_sorted
    table = pd.DataFrame(rows, columns=columns)
    table.attrs["axes"] = axes_sorted
    table.attrs["metrics"] = metrics_sorted
    return table


def aggregate(
    table: pd.DataFrame, *, by: Sequence[str] | None = None, metrics: Sequence[str] | None = None
) -> pd.DataFrame:
    """Mean, standard deviation and count of each metric over repetitions (paper supplement Table 1).

    Args:
        table: :func:`collect`'s table.
        by: grouping columns (default: stage and every axis but ``repetition``; for a table read back from
            CSV/Parquet, the known axes of :data:`AXIS_ORDER`: pass ``by`` for others).
        metrics: numeric columns to aggregate (default: every numeric metric column except ``seed``-like ones).

    Returns:
        One row per configuration: the grouping columns, ``n`` (finished runs) and ``<metric>_mean``,
        ``<metric>_std`` for each metric (std is NaN for a single run).
    """
    done = table[table["state"] == "done"] if "state" in table else table
    axes, metric_cols = _split_columns(table)
    if by is None:
        by = ["stage"] + [a for a in axes if a != "repetition"]
    by = [c for c in by if c in table.columns]
    if metrics is None:
        metrics = [c for c in metric_cols if pd.api.types.is_numeric_dtype(done[c]) and not done[c].isna().all()]
    missing = [m for m in metrics if m not in table.columns]
    if missing:
        raise InputError(f"no column {missing[0]!r} in the results table; columns: {', '.join(table.columns)}")
    if done.empty:
        return pd.DataFrame(columns=[*by, "n", *(f"{m}_{s}" for m in metrics for s in ("mean", "std"))])
    keyed = done.copy()
    for col in by:  # NaN keys (e.g. lambda_nip of F runs) would drop rows from groupby
        keyed[col] = keyed[col].astype(object).where(keyed[col].notna(), "-")
    grouped = keyed.groupby(list(by), sort=False, dropna=False)
    out = grouped.size().rename("n").to_frame()
    for m in metrics:
        values = grouped[m]
        out[f"{m}_mean"] = values.mean()
        out[f"{m}_std"] = values.std(ddof=1)
    return out.reset_index()


def _split_columns(table: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(axis columns, metric columns): from :func:`collect`'s ``attrs``; for a table read back from a file,
    the known axes (:data:`AXIS_ORDER`) and every other numeric column as a metric."""
    if "axes" in table.attrs and "metrics" in table.attrs:
        return list(table.attrs["axes"]), list(table.attrs["metrics"])
    axes = [c for c in table.columns if c in AXIS_ORDER]
    metrics = [c for c in table.columns if c not in axes and c not in _ID_COLUMNS and pd.api.types.is_numeric_dtype(table[c])]
    return axes, metrics


def paper_table(agg: pd.DataFrame, *, metrics: Sequence[str] = METRICS) -> pd.DataFrame:
    """Supplement Table 1's layout: rows (camera, lambda_nip), columns (nip, metric mean).

    F runs appear as lambda ``-`` (the paper's last row per camera). Only metrics present are shown.
    """
    if agg.empty or "nip" not in agg:
        return pd.DataFrame()
    present = [m for m in metrics if f"{m}_mean" in agg]
    rows = [c for c in ("camera", "lambda_nip") if c in agg]
    frame = agg.copy()
    if "lambda_nip" in frame:
        frame["lambda_nip"] = frame["lambda_nip"].astype(object)
    pivot = frame.pivot_table(index=rows or None, columns="nip", values=[f"{m}_mean" for m in present], aggfunc="first")
    pivot = pivot.swaplevel(0, 1, axis=1).sort_index(axis=1, level=0)
    pivot.columns = pd.MultiIndex.from_tuples([(nip, m.removesuffix("_mean")) for nip, m in pivot.columns])
    return pivot


def save_table(table: pd.DataFrame, *, csv: str | os.PathLike[str] | None = None, parquet: str | os.PathLike[str] | None = None) -> None:
    """Write the table as CSV and/or Parquet (Parquet needs pyarrow: ``pip install 'neuralimaging[ray]'``).

    Each file is written whole or not at all (a failure leaves an existing file as it was).
    """
    if csv is not None:
        with replacing(csv) as tmp:
            table.to_csv(tmp, index=False)
    if parquet is not None:
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise InputError("--parquet needs pyarrow: pip install pyarrow") from None
        frame = table.copy()
        for col in frame.columns:  # mixed object columns (e.g. "-" and floats) -> strings for Arrow
            if frame[col].dtype == object:
                frame[col] = frame[col].map(lambda v: v if v is None or isinstance(v, str) else str(v))
        with replacing(parquet) as tmp:
            frame.to_parquet(tmp, index=False)
