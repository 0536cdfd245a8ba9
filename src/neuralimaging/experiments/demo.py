"""The main job end to end on the offline default data (what ``make demo`` runs).

virtual camera (bundled photos -> DNG) -> dataset (RGGB stacks + ``python``-ISP targets, split by scene into
training, validation and test images) -> the pre-trained NIP (the shipped DNet, measured on the validation
images) -> F and F+N after the sharing channel (``demo`` preset) -> the test split: accuracy under the
differentiable and the real codec, fidelity of whole images -> ``summary.json`` and the HTML report.

Every step is resumable: rerunning skips what is done (synthesized shots, prepared files, finished runs) and
resumes interrupted runs from their checkpoints. The runs are driven by the demo sweep
(``experiments/sweeps/demo.yaml``), so ``neuralimaging sweep status``, ``results`` and ``report`` work on
``OUT/runs`` like on any sweep. How the demo's protocol differs from the paper's: :data:`PROTOCOL`.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

from neuralimaging.acquisition.virtual_camera import shots_megapixels, synthesize
from neuralimaging.data.dataset import Dataset, prepare
from neuralimaging.experiments.fidelity import BORDER, DEFINITION, nip_fidelity
from neuralimaging.experiments.report import write_report
from neuralimaging.experiments.results import collect
from neuralimaging.experiments.rundir import RunDir
from neuralimaging.experiments.sweep import TASKS, load_sweep, run_sweep

__all__ = ["DEMO_CAMERA", "PROTOCOL", "SUMMARY", "demo_sweep_path", "run_demo", "summarize"]

DEMO_CAMERA = "nikon-d90"
"""The virtual camera of the demo (GBRG, like the paper's Nikon D90)."""

SUMMARY = "summary.json"
"""The demo's headline figures, written in its output folder."""

PROTOCOL = {
    "nip": "DNet (the paper's architecture) pre-trained by the toolkit on the training split on a CPU (the "
           "shipped weights, docs/pretrained.md), not to the paper's stopping rule",
    "data": "9 bundled photos (8 scenes) through the virtual Nikon D90, split by scene; the paper: 150 RAW "
            "photos per camera, 120 for training and 30 for validation, no test split",
    "fan_patch": "the FAN sees 32x32 patches after the channel (64x64 NIP output); the paper: 128x128",
    "schedule": "2,000 steps of 16 patches, Adam 3e-4 x0.85 every 200 steps; the paper: 1,000 epochs of 6 steps of "
                "20 patches, Adam 1e-4 x0.85 every 100 epochs",
    "lambda_nip": "one value, the most accurate within 2 dB of the NIP on the validation split "
                  "(benchmarks/demo_tradeoff.py); the paper reports a grid of ten",
    "repetitions": "1 (the paper: 10)",
    "precision": "bfloat16 autocast where the CPU computes it natively (the paper: float32)",
}
"""Knobs of the demo that differ from the paper's protocol (section 5.2), recorded in the summary."""

_TASK_WORDS = {TASKS["nip"]: "pre-trained NIP", TASKS["manipulation"]: "FAN / joint training"}


def demo_sweep_path() -> Path:
    """Path of the demo sweep file shipped with the package."""
    return Path(str(resources.files("neuralimaging.experiments") / "sweeps" / "demo.yaml"))


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def _groups(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Runs of one mode and ``lambda_nip`` (repetitions) as means and standard deviations."""
    import numpy as np

    groups: dict[tuple, list[dict[str, Any]]] = {}
    for entry in runs:
        groups.setdefault((entry["mode"], entry.get("lambda_nip")), []).append(entry)
    out = []
    for (mode, lambda_nip), entries in groups.items():
        row: dict[str, Any] = {"mode": mode, "lambda_nip": lambda_nip, "repetitions": len(entries)}
        for key in ("accuracy", "accuracy_libjpeg", "psnr_db", "ssim"):
            values = np.array([e[key] for e in entries if e[key] is not None], dtype=float)
            row[f"{key}_mean"] = float(values.mean()) if values.size else None
            row[f"{key}_std"] = float(values.std(ddof=1)) if values.size > 1 else None
        out.append(row)
    return out


def summarize(
    runs_dir: str | os.PathLike[str],
    *,
    device: str = "cpu",
    log: Callable[[str], None] = lambda message: None,
) -> dict[str, Any]:
    """The demo's headline figures, all on the test split: the pre-trained NIP's fidelity, F and F+N accuracy
    under the differentiable codec and under libjpeg at the trained quality, and their fidelity.

    Returns:
        ``split``, ``fidelity`` (the measure in words), ``nip`` (``name``, ``run``, ``psnr_db``, ``ssim``,
        ``patch``, ``val_psnr_db``), ``F`` and ``F+N`` (the first finished run of each mode: ``run``,
        ``accuracy``, ``accuracy_se``, ``accuracy_libjpeg``, ``psnr_db``, ``ssim``; F+N also ``lambda_nip``
        and ``psnr_paid_db``), ``runs`` (every finished joint run alike), ``groups`` (runs of one mode and
        ``lambda_nip``: mean and sample standard deviation over repetitions), ``repetitions``, ``failed``.
    """
    from neuralimaging.experiments.train_manipulation import evaluate
    from neuralimaging.experiments.train_nip import load_nip

    table = collect(runs_dir)
    done = table[table["state"] == "done"]
    summary: dict[str, Any] = {"split": "test", "fidelity": None, "nip": None, "F": None, "F+N": None, "runs": []}
    nips: dict[str, dict[str, Any]] = {}
    for _, row in done[done["task"] == "nip"].iterrows():
        run = Path(runs_dir) / row["run"]
        config = RunDir(run).read_config()
        test = Dataset.load(config["data"]).split("test")
        log(f"    test split: {row['run']} on {len(test)} whole images")
        fidelity = nip_fidelity(load_nip(run, device=device), test, device=device)
        nips[str(run.resolve())] = {
            "name": config["nip"], "run": row["run"], "init": config.get("init"), "psnr_db": fidelity["psnr"],
            "psnr_std_db": fidelity["psnr_std"], "ssim": fidelity["ssim"],
            "patch": f"whole images, {BORDER}-pixel border excluded", "val_psnr_db": _number(row.get("psnr")),
        }
        summary["fidelity"] = f"{DEFINITION}; test split, {fidelity['images']} images"
    summary["nip"] = next(iter(nips.values()), None)
    for _, row in done[done["task"] != "nip"].iterrows():
        run = Path(runs_dir) / row["run"]
        config = RunDir(run).read_config()
        joint = config["train"] == "fan,nip"
        log(f"    test split: {row['run']}")
        shared = evaluate(run, codec="differentiable", split="test", device=device, fidelity=joint)
        real = evaluate(run, codec="libjpeg", split="test", device=device, fidelity=False)
        nip = nips.get(str(Path(config["nip_run"]).resolve()), {})
        entry = {
            "run": row["run"], "mode": "F+N" if joint else "F", "accuracy": shared["accuracy"],
            "accuracy_se": shared["accuracy_se"], "accuracy_libjpeg": real["accuracy"],
            "accuracy_libjpeg_se": real["accuracy_se"], "quality": real["quality"], "patches": shared["n"],
            "psnr_db": shared["psnr"] if joint else nip.get("psnr_db"),
            "ssim": shared["ssim"] if joint else nip.get("ssim"),
            "val_accuracy": _number(row.get("accuracy")), "wall_time_s": _number(row.get("wall_time_s")),
        }
        if joint:
            entry["lambda_nip"] = float(config["lambda_nip"])
            start = nip.get("psnr_db")
            entry["psnr_paid_db"] = None if start is None else start - shared["psnr"]
        summary["runs"].append(entry)
        summary[entry["mode"]] = summary[entry["mode"]] or entry
    summary["groups"] = _groups(summary["runs"])
    summary["repetitions"] = max((g["repetitions"] for g in summary["groups"]), default=0)
    summary["failed"] = [str(r) for r in table.loc[table["state"] == "failed", "run"]]
    return summary


def run_demo(
    out_dir: str | os.PathLike[str],
    *,
    camera: str = DEMO_CAMERA,
    photos: str = "default",
    device: str = "auto",
    sweep_file: str | os.PathLike[str] | None = None,
    shots_per_photo: int = 8,
    size: str | tuple[int, int] | None = None,
    log: Callable[[str], None] = lambda message: None,
    progress_every: float = 20.0,
) -> dict[str, Any]:
    """Run the demo into ``out_dir``; returns its summary (see :func:`summarize`), also written to
    ``out_dir/summary.json`` with the protocol, the dataset, paths and timings.

    Args:
        out_dir: output folder: ``raw/`` (DNGs), ``data/`` (dataset), ``runs/`` (sweep), ``report.html``,
            ``summary.json``.
        camera: virtual camera profile name.
        photos: ``"default"`` (bundled photos) or a folder of photos.
        device: ``auto``, ``cpu`` or ``cuda``.
        sweep_file: another sweep file to run instead of the packaged demo sweep (its ``data`` is expected at
            ``{runs}/../data``).
        shots_per_photo: virtual-camera shots per photo.
        size: every shot exactly this sensor size, ``(H, W)`` or ``"HxW"`` (default: as large as each photo
            allows on the profile's sensor).
        log: called with one line per step (the CLI prints them), and with a progress line of the run in
            training every ``progress_every`` seconds.
        progress_every: seconds between two progress lines.
    """
    from neuralimaging.device import resolve_device

    out = Path(out_dir)
    timings: dict[str, float] = {}

    start = time.perf_counter()
    log(f"1/5 virtual camera {camera}: synthesizing RAW shots from {photos} photos into {out / 'raw'}")
    shots = synthesize(photos, camera, out / "raw", shots_per_photo=shots_per_photo, size=size)
    log(f"    {len(shots)} DNG shots, {shots_megapixels(out / 'raw', shots):.1f} MP")
    timings["synthesize_s"] = time.perf_counter() - start

    start = time.perf_counter()
    log(f"2/5 preparing the dataset (RGGB stacks + python-ISP targets, split by scene) in {out / 'data'}")
    report = prepare(out / "raw", out / "data", camera=camera, workers=min(2, os.cpu_count() or 1))
    log(f"    {report.summary()}")
    timings["prepare_s"] = time.perf_counter() - start

    start = time.perf_counter()
    sweep_path = Path(sweep_file) if sweep_file else demo_sweep_path()
    runs_dir = out / "runs"
    sweep = load_sweep(sweep_path, runs_dir=runs_dir)
    log(f"3/5 training: {len(sweep.runs)} runs of {sweep_path.name} into {runs_dir}")
    run_sweep(
        sweep,
        runs_dir,
        device=device,
        on_outcome=lambda outcome: log(f"    run {outcome.name}: {outcome.status}"),
        on_start=lambda spec: log(f"    run {spec.name}: started ({_TASK_WORDS.get(spec.task, spec.task)})"),
        on_progress=lambda report: log(f"    run {report.name}: {report.line()}"),
        progress_every=progress_every,
    )
    timings["train_s"] = time.perf_counter() - start

    start = time.perf_counter()
    log("4/5 measuring on the test split (differentiable codec and libjpeg; whole images for PSNR/SSIM)")
    summary = summarize(runs_dir, device=str(resolve_device(device)), log=log)
    timings["test_s"] = time.perf_counter() - start

    summary.update(
        camera=camera,
        protocol=PROTOCOL if sweep_file is None else {"sweep": str(sweep_path)},
        shots=len(shots),
        dataset={"train": report.train, "val": report.val, "test": report.test, "megapixels": report.megapixels,
                 "failed": report.failed},
        report=str(out / "report.html"),
        runs_dir=str(runs_dir),
        timings=timings,
    )
    _write_summary(out, summary)  # before the report, which shows it

    start = time.perf_counter()
    log("5/5 writing the report")
    write_report(runs_dir, out / "report.html")
    timings["report_s"] = time.perf_counter() - start
    _write_summary(out, summary)
    return summary


def _write_summary(out: Path, summary: dict[str, Any]) -> None:
    tmp = out / f".{SUMMARY}.tmp"
    tmp.write_text(json.dumps(summary, indent=1, default=str) + "\n")
    os.replace(tmp, out / SUMMARY)
