"""The main job end to end on the offline default data (what ``make demo`` runs).

virtual camera (bundled photos -> DNG) -> dataset (RGGB stacks + ``python``-ISP targets) -> NIP pre-training
(quick preset) -> F and F+N joint runs after the sharing channel (quick preset) -> summary -> HTML report.

Every step is resumable: rerunning skips what is done (synthesized shots, prepared files, finished runs) and
resumes interrupted runs from their checkpoints. The runs are driven by the demo sweep
(``experiments/sweeps/demo.yaml``), so ``neuralimaging sweep status``, ``results`` and ``report`` work on
``OUT/runs`` like on any sweep.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

from neuralimaging.acquisition.virtual_camera import synthesize
from neuralimaging.data.dataset import prepare
from neuralimaging.experiments.report import write_report
from neuralimaging.experiments.results import collect
from neuralimaging.experiments.sweep import TASKS, load_sweep, run_sweep

__all__ = ["DEMO_CAMERA", "demo_sweep_path", "run_demo", "summarize"]

DEMO_CAMERA = "nikon-d90"
"""The virtual camera of the demo (GBRG, like the paper's Nikon D90)."""


_TASK_WORDS = {TASKS["nip"]: "NIP pre-training", TASKS["manipulation"]: "FAN / joint training"}


def demo_sweep_path() -> Path:
    """Path of the demo sweep file shipped with the package."""
    return Path(str(resources.files("neuralimaging.experiments") / "sweeps" / "demo.yaml"))


def summarize(runs_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The demo's headline figures from its runs: pre-trained NIP fidelity, F and F+N accuracy and PSNR."""
    table = collect(runs_dir)
    done = table[table["state"] == "done"]

    def figure(row: Any, key: str) -> float:
        value = row.get(key) if key in row else None
        return float(value) if value is not None and not (isinstance(value, float) and math.isnan(value)) else math.nan

    summary: dict[str, Any] = {"pretrain": [], "joint": []}
    for _, row in done.iterrows():
        entry = {"run": row["run"], "psnr": figure(row, "psnr"), "ssim": figure(row, "ssim")}
        if row["task"] == "nip":
            summary["pretrain"].append(entry)
        else:
            entry.update(
                mode=row.get("mode"),
                lambda_nip=figure(row, "lambda_nip") if row.get("mode") != "F" else None,
                accuracy=figure(row, "accuracy"),
                wall_time_s=figure(row, "wall_time_s"),
            )
            summary["joint"].append(entry)
    summary["failed"] = [str(r) for r in table.loc[table["state"] == "failed", "run"]]
    return summary


def run_demo(
    out_dir: str | os.PathLike[str],
    *,
    camera: str = DEMO_CAMERA,
    photos: str = "default",
    device: str = "auto",
    sweep_file: str | os.PathLike[str] | None = None,
    shots_per_photo: int = 16,
    size: str | tuple[int, int] | None = None,
    log: Callable[[str], None] = lambda message: None,
) -> dict[str, Any]:
    """Run the demo into ``out_dir`` and return its summary (see :func:`summarize`) plus paths and timings.

    Args:
        out_dir: output folder: ``raw/`` (DNGs), ``data/`` (dataset), ``runs/`` (sweep), ``report.html``.
        camera: virtual camera profile name.
        photos: ``"default"`` (bundled photos) or a folder of photos.
        device: ``auto``, ``cpu`` or ``cuda``.
        sweep_file: another sweep file to run instead of the packaged demo sweep (its ``data`` is expected at
            ``{runs}/../data``).
        shots_per_photo: virtual-camera shots per photo.
        size: sensor size ``(H, W)`` or ``"HxW"`` (default: the camera profile's).
        log: called with one line per step (the CLI prints them).
    """
    out = Path(out_dir)
    timings: dict[str, float] = {}

    start = time.perf_counter()
    log(f"1/4 virtual camera {camera}: synthesizing RAW shots from {photos} photos into {out / 'raw'}")
    shots = synthesize(photos, camera, out / "raw", shots_per_photo=shots_per_photo, size=size)
    log(f"    {len(shots)} DNG shots")
    timings["synthesize_s"] = time.perf_counter() - start

    start = time.perf_counter()
    log(f"2/4 preparing the dataset (RGGB stacks + python-ISP targets) in {out / 'data'}")
    report = prepare(out / "raw", out / "data", camera=camera)
    log(f"    {report.summary()}")
    timings["prepare_s"] = time.perf_counter() - start

    start = time.perf_counter()
    sweep_path = Path(sweep_file) if sweep_file else demo_sweep_path()
    runs_dir = out / "runs"
    sweep = load_sweep(sweep_path, runs_dir=runs_dir)
    log(f"3/4 training: {len(sweep.runs)} runs of {sweep_path.name} into {runs_dir}")
    run_sweep(
        sweep,
        runs_dir,
        device=device,
        on_outcome=lambda outcome: log(f"    run {outcome.name}: {outcome.status}"),
        on_start=lambda spec: log(f"    run {spec.name}: started ({_TASK_WORDS.get(spec.task, spec.task)})"),
    )
    timings["train_s"] = time.perf_counter() - start

    start = time.perf_counter()
    log("4/4 writing the report")
    html = write_report(runs_dir, out / "report.html")
    timings["report_s"] = time.perf_counter() - start

    summary = summarize(runs_dir)
    summary.update(
        shots=len(shots),
        dataset={"train": report.train, "val": report.val, "megapixels": report.megapixels, "failed": report.failed},
        report=html["path"],
        runs_dir=str(runs_dir),
        timings=timings,
    )
    return summary
