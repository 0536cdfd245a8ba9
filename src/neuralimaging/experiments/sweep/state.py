"""The state of a run folder (done, interrupted, failed, running, pending) and of a runs folder."""

from __future__ import annotations

import json
import os
import re
import socket
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from neuralimaging.errors import InputError
from neuralimaging.experiments.live import read_progress
from neuralimaging.experiments.sweep.spec import (
    ERROR_FILE,
    LOCK_FILE,
    PLAN_FILE,
    RUN_FILE,
    STALE_AFTER_S,
)
from neuralimaging.fsutil import inside, manifest_problem

__all__ = ["RunState", "find_runs", "run_state", "sweep_status"]


_SHOWN = ("accuracy", "psnr", "ssim", "val_loss")
"""Validation figures shown in progress lines and ``sweep status``."""


# -- state of a run ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunState:
    """Where one run stands: ``state`` is done, running, failed or pending; ``resumable`` when a checkpoint
    exists; ``error`` is the last line of the failure; ``step`` of ``total`` steps and the ``metrics`` of the
    last validation as its ``progress.json`` (or ``metrics.jsonl``) has them (0, 0 and empty without)."""

    name: str
    state: str
    resumable: bool = False
    error: str = ""
    step: int = 0
    total: int = 0
    metrics: dict[str, float] = field(default_factory=dict)


_STEP_NAME = re.compile(r"step-\d{9}")


def _has_checkpoint(run_dir: Path) -> bool:
    """Whether the run saved a checkpoint (intact or not: a damaged one makes the task fall back or refuse)."""
    folder = run_dir / "checkpoints"
    return (folder / "LATEST").is_file() or (
        folder.is_dir() and any(_STEP_NAME.fullmatch(p.name) and p.is_dir() for p in folder.iterdir())
    )


def _resumable(run_dir: Path) -> bool:
    """Whether the run has a checkpoint whose files have the sizes its manifest lists."""
    folder = run_dir / "checkpoints"
    if not folder.is_dir():
        return False
    return any(_STEP_NAME.fullmatch(p.name) and p.is_dir() and manifest_problem(p, deep=False) is None
               for p in folder.iterdir())


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
    except OSError:
        return ""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # another user's process (or a value this system cannot check): assume alive
    return True


def _owner_gone(info: Any) -> bool:
    """Whether a lock's owner is known to be gone: written on this host since its last boot by a process that
    no longer exists, or on this host before a reboot."""
    if not isinstance(info, dict) or info.get("host") != socket.gethostname():
        return False
    boot = info.get("boot_id")
    if boot and _boot_id() and boot != _boot_id():
        return True
    pid = info.get("pid")
    return bool(boot) and isinstance(pid, int) and not isinstance(pid, bool) and not _pid_alive(pid)


def _lock_fresh(run_dir: Path, stale_after: float = STALE_AFTER_S) -> bool:
    lock = run_dir / LOCK_FILE
    try:
        if time.time() - lock.stat().st_mtime >= stale_after:
            return False
    except FileNotFoundError:
        return False
    return not _owner_gone(_read_json(lock))


def _summary_problem(run_dir: Path) -> str | None:
    """None when ``summary.json`` is a readable JSON object, else what is wrong ("missing" when absent)."""
    path = run_dir / "summary.json"
    if not path.is_file():
        return "missing"
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        return f"summary.json is damaged ({type(error).__name__})"
    return None if isinstance(summary, dict) else "summary.json is damaged (not a JSON object)"


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def _progress(run_dir: Path) -> dict[str, Any]:
    """``step``, ``total`` and ``metrics`` of a run from ``progress.json``, else the last line of
    ``metrics.jsonl``."""
    progress = read_progress(run_dir)
    if progress is not None:
        metrics = progress.get("metrics") if isinstance(progress.get("metrics"), dict) else {}
        return {"step": int(progress.get("step", 0) or 0), "total": int(progress.get("total", 0) or 0),
                "metrics": {k: metrics[k] for k in _SHOWN if k in metrics}}
    try:
        lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
        last = json.loads(lines[-1]) if lines else None
    except (OSError, ValueError):
        last = None
    if not isinstance(last, dict):
        return {}
    step = last.get("step", 0)
    return {"step": int(step) if isinstance(step, (int, float)) else 0,
            "metrics": {k: last[k] for k in _SHOWN if isinstance(last.get(k), (int, float))}}


def run_state(run_dir: str | os.PathLike[str], name: str | None = None) -> RunState:
    """The state of the run in ``run_dir`` (see the module docstring for the rules), with its progress."""
    run_dir = Path(run_dir)
    name = name if name is not None else run_dir.name
    return replace(_state(run_dir, name), **_progress(run_dir))


def _state(run_dir: Path, name: str) -> RunState:
    summary = _summary_problem(run_dir)
    if summary is None:
        return RunState(name, "done")
    resumable = _resumable(run_dir)
    if _lock_fresh(run_dir):
        return RunState(name, "running", resumable)
    error_file = run_dir / ERROR_FILE
    if error_file.is_file():
        return RunState(name, "failed", resumable, _last_line(error_file.read_text(encoding="utf-8", errors="replace")))
    if _has_checkpoint(run_dir) and not resumable:
        return RunState(name, "pending", False, "no intact checkpoint")
    return RunState(name, "pending", resumable, "" if summary == "missing" else summary)


def _read_json(path: Path) -> Any:
    """The JSON in ``path``, or None when it is missing, unreadable or not (yet) valid JSON."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def _planned_names(runs_dir: Path) -> list[str]:
    """Run names of ``sweep-plan.json`` (none without a plan), each checked to stay inside ``runs_dir``.

    Raises:
        InputError: when the plan is not a sweep plan or names a run outside ``runs_dir``.
    """
    path = runs_dir / PLAN_FILE
    if not path.exists():
        return []
    plan = _read_json(path)
    runs = plan.get("runs") if isinstance(plan, dict) else None
    if not isinstance(runs, list) or not all(isinstance(r, dict) and isinstance(r.get("name"), str) for r in runs):
        raise InputError(f"{path}: not a sweep plan (expected {{\"runs\": [{{\"name\": ...}}, ...]}})")
    names = [r["name"] for r in runs]
    for name in names:
        inside(runs_dir, name, f"{path}: run name")
    return names


def find_runs(runs_dir: str | os.PathLike[str]) -> list[str]:
    """Names (relative paths) of every run folder under ``runs_dir``: planned ones first, in plan order.

    Raises:
        NotADirectoryError: when ``runs_dir`` is not a folder.
        InputError: when its ``sweep-plan.json`` is damaged or names runs outside it.
    """
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise NotADirectoryError(f"{runs_dir}: not a runs folder")
    names: list[str] = _planned_names(runs_dir)
    markers = ("summary.json", "config.yaml", RUN_FILE)
    found = sorted({p.parent for m in markers for p in runs_dir.rglob(m)})
    for folder in found:
        if folder == runs_dir or "checkpoints" in folder.relative_to(runs_dir).parts:
            continue
        name = folder.relative_to(runs_dir).as_posix()
        if name not in names:
            names.append(name)
    if (runs_dir / "summary.json").is_file() and "." not in names:
        names.append(".")  # runs_dir is itself a run
    return names


def sweep_status(runs_dir: str | os.PathLike[str]) -> list[RunState]:
    """The state of every run in ``runs_dir``: the sweep's planned runs first, then any other run folder found.

    Raises:
        NotADirectoryError: when ``runs_dir`` is not a folder.
    """
    return [run_state(Path(runs_dir) / name, name) for name in find_runs(runs_dir)]


