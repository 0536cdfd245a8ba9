"""Grids of training runs: expansion into stably named run directories, and their execution.

A sweep file (YAML) names the grid of the paper's evidence (cameras x NIPs x modes x ``lambda_nip`` x
repetitions, Korus & Memon, section 5 and supplement Table 1) and the training task each run calls. Runs
execute locally one at a time, in ``workers`` processes, or as Ray tasks on a cluster (each task asks for the
sweep's ``resources``, e.g. one GPU). Worker processes and Ray start a run as soon as the NIP run it needs is
done, with no barrier between stages. Execution is resumable and fault-isolated:

- a run is **done** when its ``summary.json`` exists and reads as a JSON object: rerunning the sweep skips
  it (a damaged summary is moved aside to ``summary.json.damaged`` and the run resumes to write it again);
- a run with a checkpoint but no summary was **interrupted** (killed, or stopped early by a step budget):
  it is pending, and rerunning resumes it (``resume=True``);
- a run that raises is **failed**: the traceback goes to ``error.txt`` in its folder, the others go on; a
  worker process that dies (killed for memory, say) fails only its own run; on Ray, a run whose worker process
  or node dies is run again (``retries``), from its last checkpoint, on another node if need be;
- a run holding a ``.running`` lock of a live executor is **running** (another executor owns it); a lock
  whose owner is gone (same host and boot, dead process id; or no heartbeat for a minute) is taken over, and
  so is one left by an earlier attempt of the same sweep execution (a retry after a lost worker or node);
- a run whose config names a ``nip_run`` that is not done is **blocked**: it does not start, and a later
  execution runs it once its NIP run has finished.

Where runs persist (:mod:`~neuralimaging.experiments.storage`): by default in the runs folder, which on a
Ray cluster must be a disk every node mounts at the same path (a node that does not see it fails the run with
an error saying so); or in a storage URI (``s3://...``, ``file:///shared/...``, any pyarrow filesystem): runs
execute on their node's own disk and sync to storage, and the runs folder is the driver's copy. While runs
train, ``progress.json`` and TensorBoard logs in each run folder show their progress
(:mod:`~neuralimaging.experiments.live`). A cluster's nodes need the package's dependencies installed; the
package itself can travel with the job (:func:`package_runtime_env`). How to run a sweep on a cluster: the
README's cluster section and ``docs/cluster.md``.

Sweep file schema (every key but ``grid``/``stages`` optional)::

    name: demo
    resources: {num_cpus: 1, num_gpus: 0}    # per run: Ray task resources; num_cpus also sets torch threads
    stages:                                  # run in order; or put task/config/grid/repetitions at the top
      - name: pretrain                       # run names get this prefix: pretrain/<camera>/<nip>/000
        task: nip                            # nip | manipulation (default) | an allowed plugin
        config: {preset: quick, data: "{sweep_dir}/data"}
        grid: {camera: [default], nip: [inet]}
      - name: joint
        config: {preset: quick, data: "{sweep_dir}/data", nip_run: "{runs}/pretrain/{camera}/{nip}/000"}
        grid:
          camera: [default]
          nip: [inet]
          mode: [F, F+N]                     # F: config train="fan"; F+N: train="fan,nip"
          lambda_nip: [0.1, 0.01]            # used by F+N runs only (F is the paper's "-" row)
        repetitions: 2                       # seed = config seed (default 0) + repetition

A sweep file is data, not code: ``task`` names one of the toolkit's own tasks (:data:`TASKS`). A task of
another module (``"package.module:function"``) runs only when whoever runs the sweep allows it by name
(``plugins=`` here, ``sweep run --plugin MODULE:FUNCTION`` on the command line), since it imports and calls
whatever the file names.

Grid axes are applied to the run's config: ``mode`` sets ``train``, ``repetition`` sets ``seed``, ``camera``
(and ``nip`` in a manipulation task, whose NIP comes from ``nip_run``) only names runs and fills templates,
any other axis ``a.b`` sets ``config[a][b]``. An axis value may also be a mapping
``{name: LABEL, <config key>: value, ...}``: the label names the run, the other keys are set in the config.
Strings in ``config`` may use ``{runs}`` (the runs folder), ``{sweep_dir}`` (the sweep file's folder) and
``{<axis>}`` placeholders. Run names follow the axes in grid order, e.g. ``joint/default/inet/FN/ln-0.1000/003``.
"""

from __future__ import annotations

import copy
import importlib
import itertools
import json
import multiprocessing
import multiprocessing.connection
import os
import re
import secrets
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from neuralimaging import yamlio
from neuralimaging.errors import InputError
from neuralimaging.experiments.live import read_progress
from neuralimaging.experiments.storage import Storage, check_token, listing, node_name, staging_root, write_token
from neuralimaging.fsutil import atomic_write_text, check_relative, inside, manifest_problem

__all__ = [
    "MODES",
    "RunOutcome",
    "RunProgress",
    "RunSpec",
    "RunState",
    "Sweep",
    "TASKS",
    "execute_run",
    "expand",
    "find_runs",
    "load_sweep",
    "mirror",
    "package_runtime_env",
    "run_state",
    "run_sweep",
    "sweep_status",
]

TASKS: dict[str, str] = {
    "manipulation": "neuralimaging.experiments.train_manipulation:train_manipulation",
    "nip": "neuralimaging.experiments.train_nip:train_nip",
}
"""Task names a sweep may use, and the training function (``module:function``) each calls."""

MODES: dict[str, tuple[str, str]] = {"F": ("fan", "F"), "F+N": ("fan,nip", "FN")}
"""Paper modes: name -> (config ``train`` value, token in run names). Not a copy of
``train_manipulation.MODES`` (``train`` value -> the modules trained): this one names the paper's modes in
sweep files and run folders; its ``train`` values are the keys of that one (a test keeps them so)."""

LABEL_AXES: dict[str, frozenset[str]] = {
    TASKS["manipulation"]: frozenset({"camera", "nip"}),  # the NIP comes from config nip_run
    TASKS["nip"]: frozenset({"camera"}),
}
"""Per task, the axes that only name runs (and fill ``{axis}`` templates) without setting a config key;
``camera`` for any other task."""

PLAN_FILE = "sweep-plan.json"
RUN_FILE = "sweep-run.json"
ERROR_FILE = "error.txt"
LOCK_FILE = ".running"
HEARTBEAT_S = 10.0
STALE_AFTER_S = 60.0
POLL_S = 1.0

_STAGE_KEYS = {"name", "task", "config", "grid", "repetitions", "resources"}
_TOP_KEYS = _STAGE_KEYS | {"stages", "device", "seed"}


# -- specification ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunSpec:
    """One run of a sweep: its stable name, the task it calls and the config it passes.

    Attributes:
        name: path of the run folder relative to the runs folder, e.g. ``joint/default/inet/FN/ln-0.1000/003``.
        stage: the stage the run belongs to ("" for a single-stage sweep).
        task: ``module:function`` of the training function.
        config: the config dict handed to the task.
        axes: the grid coordinates of the run (axis -> label), ``repetition`` included.
        resources: per-run resources (``num_cpus``, ``num_gpus``, extra Ray resources).
    """

    name: str
    stage: str
    task: str
    config: dict[str, Any]
    axes: dict[str, Any]
    resources: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Sweep:
    """An expanded sweep: its name, the folder of its file, and its runs in execution order."""

    name: str
    source: dict[str, Any]
    runs: list[RunSpec]
    sweep_dir: Path

    def stages(self) -> list[str]:
        """Stage names in execution order."""
        return list(dict.fromkeys(run.stage for run in self.runs))


def _sanitize(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "x"


def _label(axis: str, value: Any) -> str:
    """The path component naming ``value`` on ``axis``."""
    if axis == "lambda_nip":
        return f"ln-{float(value):.4f}"
    if axis == "mode":
        return MODES[value][1]
    if axis == "repetition":
        return f"{int(value):03d}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return _sanitize(str(value))
    return f"{_sanitize(axis)}-{value:g}" if isinstance(value, float) else f"{_sanitize(axis)}-{value}"


def _set_path(config: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = config
    for key in keys[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    node[keys[-1]] = value


_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _fill(value: Any, fields: Mapping[str, Any]) -> Any:
    """Replace ``{field}`` placeholders in every string of ``value`` (unknown placeholders stay)."""
    if isinstance(value, str):
        full = _PLACEHOLDER.fullmatch(value)
        if full and full.group(1) in fields:
            return fields[full.group(1)]  # a lone placeholder keeps the value's type
        return _PLACEHOLDER.sub(lambda m: str(fields[m.group(1)]) if m.group(1) in fields else m.group(0), value)
    if isinstance(value, Mapping):
        return {k: _fill(v, fields) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, fields) for v in value]
    return value


def _resolve_task(task: str, plugins: Iterable[str] = ()) -> str:
    if task in TASKS:
        return TASKS[task]
    if task in TASKS.values() or task in set(plugins):
        return task
    if re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", task):
        raise InputError(f"task {task!r} is not one of the toolkit's tasks ({', '.join(TASKS)}); a sweep file may "
                         f"run other code only when you allow it (--plugin {task})")
    raise InputError(f"task must be one of {', '.join(TASKS)} or an allowed plugin 'module:function', got {task!r}")


def _axis_values(where: str, axis: str, values: Any, labels_only: frozenset[str]) -> list[tuple[str, Any, dict[str, Any]]]:
    """``(label, template value, config overrides)`` for every value of one grid axis."""
    if not isinstance(values, list) or not values:
        raise InputError(f"{where}: grid axis {axis!r} must be a non-empty list, got {values!r}")
    out = []
    for value in values:
        if isinstance(value, Mapping):
            if "name" not in value:
                raise InputError(f"{where}: grid axis {axis!r}: a mapping value needs a 'name', got {dict(value)!r}")
            overrides = {k: v for k, v in value.items() if k != "name"}
            out.append((_label(axis, value["name"]), value["name"], overrides))
            continue
        if axis == "mode":
            if value not in MODES:
                raise InputError(f"{where}: mode must be one of {', '.join(MODES)}, got {value!r}")
            out.append((_label(axis, value), value, {"train": MODES[value][0]}))
        elif axis == "lambda_nip":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise InputError(f"{where}: lambda_nip values must be numbers >= 0, got {value!r}")
            out.append((_label(axis, value), float(value), {"lambda_nip": float(value)}))
        elif axis in labels_only:
            out.append((_label(axis, value), value, {}))
        else:
            out.append((_label(axis, value), value, {axis: value}))
    labels = [label for label, _, _ in out]
    for label in labels:
        if label in (".", ".."):
            raise InputError(f"{where}: grid axis {axis!r}: the value {label!r} cannot name a run folder")
    if len(set(labels)) != len(labels):
        raise InputError(f"{where}: grid axis {axis!r} has values with the same name: {labels}")
    return out


def _expand_stage(
    stage: Mapping[str, Any], where: str, defaults: Mapping[str, Any], fields: Mapping[str, Any],
    plugins: Iterable[str] = (),
) -> list[RunSpec]:
    unknown = set(stage) - _STAGE_KEYS
    if unknown:
        raise InputError(f"{where}: unknown keys {sorted(unknown)}; expected some of {sorted(_STAGE_KEYS)}")
    name = str(stage.get("name", ""))
    if name and (_sanitize(name) != name or name in (".", "..")):
        raise InputError(f"{where}: stage name {name!r} may hold only letters, digits, '.', '_' and '-' "
                         "(and is not '.' or '..')")
    task = _resolve_task(str(stage.get("task", "manipulation")), plugins)
    base = stage.get("config", {}) or {}
    if not isinstance(base, Mapping):
        raise InputError(f"{where}: config must be a mapping, got {base!r}")
    grid = stage.get("grid", {}) or {}
    if not isinstance(grid, Mapping):
        raise InputError(f"{where}: grid must be a mapping of axis -> list of values, got {grid!r}")
    reps = stage.get("repetitions", 1)
    if isinstance(reps, bool) or not isinstance(reps, int) or reps < 1:
        raise InputError(f"{where}: repetitions must be an integer >= 1, got {reps!r}")
    resources = dict(defaults.get("resources", {}) or {})
    resources.update(stage.get("resources", {}) or {})
    labels_only = LABEL_AXES.get(task, frozenset({"camera"}))
    axes = {axis: _axis_values(where, str(axis), values, labels_only) for axis, values in grid.items()}
    if "repetition" in axes:
        raise InputError(f"{where}: 'repetition' is not a grid axis; use repetitions: N")
    names = list(axes)
    runs: list[RunSpec] = []
    seen: set[tuple] = set()
    for combo in itertools.product(*(axes[a] for a in names)):
        chosen = dict(zip(names, combo))
        f_mode = "mode" in chosen and chosen["mode"][1] == "F"
        # F runs do not depend on lambda_nip: one F run per other coordinate (the paper's "-" row)
        key = tuple((a, c[0]) for a, c in chosen.items() if not (f_mode and a == "lambda_nip"))
        if key in seen:
            continue
        seen.add(key)
        for rep in range(reps):
            config = copy.deepcopy(dict(base))
            labels: dict[str, Any] = {}
            parts = [name] if name else []
            for axis, (label, value, overrides) in chosen.items():
                if f_mode and axis == "lambda_nip":
                    continue
                labels[axis] = value
                parts.append(label)
                for k, v in overrides.items():
                    _set_path(config, k, v)
            labels["repetition"] = rep
            parts.append(_label("repetition", rep))
            seed = config.get("seed", defaults.get("seed", 0))
            if isinstance(seed, bool) or not isinstance(seed, int):
                raise InputError(f"{where}: seed must be an integer, got {seed!r}")
            config["seed"] = seed + rep
            filled = _fill(config, {**fields, **labels})
            runs.append(RunSpec("/".join(parts), name, task, filled, labels, resources))
    return runs


def expand(
    source: Mapping[str, Any],
    *,
    runs_dir: str | os.PathLike[str],
    sweep_dir: str | os.PathLike[str] = ".",
    plugins: Iterable[str] = (),
) -> Sweep:
    """Expand a sweep mapping (the parsed YAML) into its runs.

    Args:
        source: the sweep as a mapping (schema in the module docstring).
        runs_dir: the folder that will hold the run folders, or the storage URI (fills ``{runs}``).
        sweep_dir: the folder of the sweep file (fills ``{sweep_dir}``).
        plugins: tasks of other modules (``"module:function"``) the sweep may run besides :data:`TASKS`.

    Returns:
        The sweep with its runs in execution order (stage by stage, grid order, repetitions innermost).

    Raises:
        InputError: for unknown keys, empty axes, bad modes or values, duplicate run names.
    """
    if not isinstance(source, Mapping):
        raise InputError(f"a sweep must be a YAML mapping, got {type(source).__name__}")
    unknown = set(source) - _TOP_KEYS
    if unknown:
        raise InputError(f"sweep: unknown keys {sorted(unknown)}; expected some of {sorted(_TOP_KEYS)}")
    runs = os.fspath(runs_dir)
    runs = runs.rstrip("/") if "://" in runs else str(Path(runs).absolute())  # a storage URI stays as it is
    fields = {"runs": runs, "sweep_dir": str(Path(sweep_dir).absolute())}
    defaults = {"resources": source.get("resources", {}), "seed": source.get("seed", 0)}
    if "stages" in source:
        stages = source["stages"]
        if not isinstance(stages, list) or not stages:
            raise InputError("sweep: stages must be a non-empty list")
        if set(source) & (_STAGE_KEYS - {"name", "resources"}):
            raise InputError("sweep: give either stages or task/config/grid at the top, not both")
        runs = []
        for i, stage in enumerate(stages):
            if not isinstance(stage, Mapping):
                raise InputError(f"sweep: stage {i} must be a mapping")
            runs += _expand_stage(stage, f"sweep stage {stage.get('name', i)!r}", defaults, fields, plugins)
    else:
        single = {k: v for k, v in source.items() if k in _STAGE_KEYS - {"name"}}
        runs = _expand_stage(single, "sweep", defaults, fields, plugins)
    names = [r.name for r in runs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InputError(f"sweep: several runs share the name {dupes[0]!r}; give stages distinct names")
    return Sweep(str(source.get("name", "sweep")), dict(source), runs, Path(sweep_dir))


def load_sweep(
    path: str | os.PathLike[str], *, runs_dir: str | os.PathLike[str], plugins: Iterable[str] = ()
) -> Sweep:
    """Read and expand a sweep YAML file (``{sweep_dir}`` is the file's folder); ``plugins`` as in :func:`expand`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: sweep file not found")
    try:
        source = yamlio.load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a sweep file (not UTF-8 text)") from None
    except yaml.YAMLError as error:
        raise InputError(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from None
    try:
        return expand(source, runs_dir=runs_dir, sweep_dir=path.parent, plugins=plugins)
    except InputError as error:
        raise InputError(f"{path}: {error}") from None


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


# -- executing one run -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunOutcome:
    """What happened to one run in this execution: ``status`` is done, skipped (already done), incomplete
    (stopped before its summary), failed, busy (another executor holds it) or blocked (a run it needs is not
    done). ``attempt`` counts the executions of the run by this sweep execution (above 1 after a retry of a
    lost worker or node); ``node`` is where it executed (the Ray node id on a cluster, else the host)."""

    name: str
    status: str
    error: str = ""
    wall_time_s: float = 0.0
    resumed: bool = False
    attempt: int = 1
    node: str = ""


@dataclass(frozen=True)
class RunProgress:
    """A run while it trains: steps done of ``total``, running ``values`` (training loss) and the ``metrics``
    of its last validation (:mod:`~neuralimaging.experiments.live`)."""

    name: str
    step: int
    total: int
    values: dict[str, float]
    metrics: dict[str, float]

    def line(self) -> str:
        """One line for a log: ``step 120/1000 (12%), loss 1.31; accuracy 0.41, psnr 37.9``."""
        if not self.total and not self.step:
            return "starting (loading data, first validation)"
        share = f" ({100 * self.step / self.total:.0f}%)" if self.total else ""
        values = ", ".join(f"{k} {v:.4g}" for k, v in self.values.items())
        metrics = ", ".join(f"{k} {self.metrics[k]:.4g}" for k in _SHOWN if k in self.metrics)
        return f"step {self.step}/{self.total}{share}" + (f", {values}" if values else "") + (f"; {metrics}" if metrics else "")


_SHOWN = ("accuracy", "psnr", "ssim", "val_loss")


def _lock_record(owner: str, attempt: int) -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "boot_id": _boot_id(), "started": time.time(),
            "owner": owner, "attempt": attempt, "node": node_name()}


class _Heartbeat:
    """Keeps ``.running`` fresh (touched every ``HEARTBEAT_S``) while a run executes.

    Args:
        run_dir: the run folder.
        owner: who executes the run: an earlier attempt of the same owner (a worker or node Ray lost, whose
            run it retries) never blocks it.
    """

    def __init__(self, run_dir: Path, owner: str = "") -> None:
        self.path = run_dir / LOCK_FILE
        self.owner = owner
        self.attempt = 1
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)

    def acquire(self, stale_after: float = STALE_AFTER_S) -> bool:
        """Create the lock atomically (``O_EXCL``), replacing a stale one or one of an earlier attempt of the
        same owner; False when another executor holds a fresh one."""
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)  # the umask applies
            except FileExistsError:
                held = _read_json(self.path)
                mine = bool(self.owner) and isinstance(held, dict) and held.get("owner") == self.owner
                if not mine and _lock_fresh(self.path.parent, stale_after):
                    return False
                if mine:
                    self.attempt = int(held.get("attempt", 1)) + 1
                self.path.unlink(missing_ok=True)  # left by a killed executor (dead owner, no heartbeat, retried)
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(json.dumps(_lock_record(self.owner, self.attempt)) + "\n")
            self._thread.start()
            return True
        return False

    def __enter__(self) -> _Heartbeat:
        if not self._thread.is_alive() and not self.acquire():
            raise InputError(f"{self.path.parent}: another executor is running this run")
        return self

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                os.utime(self.path)
            except FileNotFoundError:
                return

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.path.unlink(missing_ok=True)


class _StorageSync:
    """While a staged run executes: uploads what changed in its local folder every ``POLL_S`` seconds (each
    checkpoint as soon as it is complete) and refreshes its lock in storage every ``HEARTBEAT_S``."""

    def __init__(self, storage: Storage, name: str, run_dir: Path, local_root: Path, lock: dict[str, Any]) -> None:
        self.storage, self.name, self.run_dir, self.local_root, self.lock = storage, name, run_dir, local_root, lock
        self.seen = listing(run_dir)  # as downloaded: already in storage
        self._stop = threading.Event()
        self._mutex = threading.Lock()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def sync(self) -> None:
        """Upload what changed since the last upload."""
        with self._mutex:
            self.seen = self.storage.upload(self.run_dir, self.name, self.local_root, self.seen)

    def _loop(self) -> None:
        beat = time.monotonic()
        while not self._stop.wait(POLL_S):
            try:
                self.sync()
                if time.monotonic() - beat >= HEARTBEAT_S:
                    self.storage.write_lock(self.name, self.lock)
                    beat = time.monotonic()
            except Exception:  # noqa: BLE001 - a failing upload is retried next time; the final one reports
                continue

    def __enter__(self) -> _StorageSync:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _import_task(task: str) -> Callable[..., Any]:
    module_name, _, function = task.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise InputError(f"task {task!r}: cannot import {module_name} ({error})") from None
    fn = getattr(module, function, None)
    if not callable(fn):
        raise InputError(f"task {task!r}: {module_name} has no function {function!r}")
    return fn


def _waits_for(spec: RunSpec, storage: Storage | None = None) -> str | None:
    """Why the run cannot start yet (its ``nip_run`` is not done), or None."""
    nip_run = spec.config.get("nip_run")
    if not isinstance(nip_run, (str, os.PathLike)):
        return None
    rel = storage.relative(os.fspath(nip_run)) if storage is not None else None
    if rel is not None:
        return None if storage.summary_ok(rel) else f"waits for its NIP run {nip_run} (not done in storage)"
    state = run_state(Path(nip_run))
    if state.state == "done":
        return None
    return f"waits for its NIP run {nip_run} ({state.state}{': ' + state.error if state.error else ''})"


def _set_threads(threads: int | None) -> None:
    if threads:
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(int(threads))
        else:  # torch reads it when the task imports it
            os.environ["OMP_NUM_THREADS"] = str(int(threads))


def _call_task(spec: RunSpec, config: dict[str, Any], run_dir: Path, device: str) -> tuple[str, str, float, bool]:
    """Call the task on ``run_dir`` (locked by the caller): ``(status, error, wall time, resumed)``; a raised
    exception is written with its traceback to ``error.txt``."""
    start = time.perf_counter()
    resume = _has_checkpoint(run_dir)
    try:
        if _summary_problem(run_dir) not in (None, "missing"):  # damaged: keep it, the run resumes to rewrite it
            os.replace(run_dir / "summary.json", run_dir / "summary.json.damaged")
        atomic_write_text(run_dir / RUN_FILE, json.dumps(asdict(spec), indent=2, default=str) + "\n")
        (run_dir / ERROR_FILE).unlink(missing_ok=True)
        fn = _import_task(spec.task)
        fn(copy.deepcopy(config), run_dir, resume=resume, device=device, progress=False)
    except Exception as error:  # noqa: BLE001 - isolation: every failure is recorded, the sweep goes on
        atomic_write_text(run_dir / ERROR_FILE, "".join(traceback.format_exception(error)))
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        return "failed", f"{type(error).__name__}: {reason}", time.perf_counter() - start, resume
    # the task owns summary.json; one that stopped early (e.g. a step budget) leaves the run resumable
    status = "done" if _summary_problem(run_dir) is None else "incomplete"
    return status, "", time.perf_counter() - start, resume


def execute_run(
    spec: RunSpec,
    runs_dir: str | os.PathLike[str],
    device: str = "auto",
    threads: int | None = None,
    *,
    owner: str = "",
    storage: str | Storage | None = None,
    token: str | None = None,
) -> RunOutcome:
    """Execute one run in this process, isolating its failure.

    Skips the run when it is done or another executor holds its lock; does not start it (``blocked``) while
    the NIP run its config names is not done; resumes it from its checkpoint when it has one. The task is
    called as ``task(config, run_dir, resume=..., device=..., progress=False)`` and owns ``summary.json``: a
    task that returns without writing it (stopped early) leaves the run ``incomplete`` (pending, resumable).
    Any exception is caught and written with its traceback to ``error.txt``.

    Args:
        spec: the run.
        runs_dir: the runs folder; the run lives in ``runs_dir / spec.name`` (without ``storage``).
        device: ``auto``, ``cpu`` or ``cuda`` for the task.
        threads: torch intra-op threads for the run (``None`` leaves torch's setting).
        owner: who executes it (a lock of an earlier attempt of the same owner is taken over at once).
        storage: a storage URI (:mod:`~neuralimaging.experiments.storage`): the run executes in a copy on
            this node's disk, synced to storage; ``runs_dir`` is then not used.
        token: the token the driver wrote into ``runs_dir``: a node that does not see it fails the run.

    Returns:
        The outcome (never raises for a failing task).
    """
    if storage is not None:
        return _execute_staged(spec, storage if isinstance(storage, Storage) else Storage(storage), device,
                               threads, owner)
    if token is not None:
        try:
            check_token(runs_dir, token)
        except InputError as error:
            return RunOutcome(spec.name, "failed", str(error), node=node_name())
    run_dir = inside(runs_dir, spec.name, "run name")
    if _summary_problem(run_dir) is None:
        return RunOutcome(spec.name, "skipped")
    waits = _waits_for(spec)
    if waits:
        return RunOutcome(spec.name, "blocked", waits)
    run_dir.mkdir(parents=True, exist_ok=True)
    heartbeat = _Heartbeat(run_dir, owner)
    if not heartbeat.acquire():
        return RunOutcome(spec.name, "busy")
    _set_threads(threads)
    with heartbeat:
        status, error, wall, resumed = _call_task(spec, spec.config, run_dir, device)
    return RunOutcome(spec.name, status, error, wall, resumed, heartbeat.attempt, node_name())


def _remote_lock_fresh(record: dict[str, Any] | None) -> bool:
    if record is None:
        return False
    beat = record.get("beat")
    if not isinstance(beat, (int, float)) or time.time() - beat >= STALE_AFTER_S:
        return False
    return not _owner_gone(record)


def _execute_staged(spec: RunSpec, storage: Storage, device: str, threads: int | None, owner: str) -> RunOutcome:
    """:func:`execute_run` with a storage URI: download, run with uploads, upload, check."""
    name = check_relative(spec.name, "run name")
    if storage.summary_ok(name):
        return RunOutcome(name, "skipped")
    waits = _waits_for(spec, storage)
    if waits:
        return RunOutcome(name, "blocked", waits)
    held = storage.read_lock(name)
    mine = bool(owner) and held is not None and held.get("owner") == owner
    if not mine and _remote_lock_fresh(held):
        return RunOutcome(name, "busy")
    attempt = int(held.get("attempt", 1)) + 1 if mine else 1
    lock = _lock_record(owner, attempt)
    storage.write_lock(name, lock)
    root = staging_root(storage.uri)
    run_dir = root / name
    try:
        storage.clear_staging(run_dir)
        storage.download(name, run_dir, root)
        storage.delete(f"{name}/{ERROR_FILE}")
        config = storage.localize(spec.config, root)
    except Exception as error:  # noqa: BLE001 - storage unreachable or an input missing: this run fails
        storage.delete(f"{name}/.running")
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        return RunOutcome(name, "failed", f"storage {storage.uri}: {type(error).__name__}: {reason}",
                          attempt=attempt, node=node_name())
    _set_threads(threads)
    sync = _StorageSync(storage, name, run_dir, root, lock)
    with sync:
        status, error, wall, resumed = _call_task(spec, config, run_dir, device)
    try:
        sync.sync()
    except Exception as failure:  # noqa: BLE001 - the results did not reach storage: the run is not done
        status, error = "failed", f"uploading to {storage.uri} failed: {type(failure).__name__}: {failure}"
    storage.delete(f"{name}/.running")
    if status == "done" and not storage.summary_ok(name):
        status, error = "failed", f"{storage.uri}/{name}: summary.json did not reach storage"
    return RunOutcome(name, status, error, wall, resumed, attempt, node_name())


def _execute_dict(spec: dict[str, Any], runs_dir: str, device: str, threads: int | None, owner: str = "",
                  storage: str | None = None, token: str | None = None) -> dict[str, Any]:
    """Picklable entry point for worker processes and Ray tasks (plain dicts in and out)."""
    return asdict(execute_run(RunSpec(**spec), runs_dir, device, threads, owner=owner, storage=storage, token=token))


# -- executors -------------------------------------------------------------------------------------------
def _threads(spec: RunSpec) -> int | None:
    value = spec.resources.get("num_cpus")
    return int(value) if value else None


@dataclass
class _Context:
    """What every executor of one sweep execution shares."""

    runs_dir: Path
    device: str
    storage: Storage | None
    owner: str
    token: str | None
    on_outcome: Callable[[RunOutcome], None]
    on_start: Callable[[RunSpec], None]
    in_flight: dict[str, float] = field(default_factory=dict)

    def call_args(self, spec: RunSpec) -> tuple:
        return (asdict(spec), str(self.runs_dir.absolute()), self.device, _threads(spec) or 1,
                f"{self.owner}/{spec.name}", self.storage.uri if self.storage else None, self.token)

    def finish(self, outcome: RunOutcome) -> RunOutcome:
        """Record an outcome: the driver's copy of a staged run is refreshed, then the callback."""
        self.in_flight.pop(outcome.name, None)
        if self.storage is not None and outcome.status not in ("skipped", "busy", "blocked"):
            mirror(self.storage, outcome.name, self.runs_dir)
        self.on_outcome(outcome)
        return outcome


def mirror(storage: Storage, name: str, runs_dir: str | os.PathLike[str], *, live_only: bool = False) -> None:
    """Copy the run ``name`` from storage into ``runs_dir`` (its latest checkpoint only; ``live_only``: just
    its progress, metrics, config and lock), for ``sweep status``, ``results`` and ``report``."""
    local = inside(runs_dir, name, "run name")
    only = ("progress.json", "metrics.jsonl", "config.yaml", ".running") if live_only else None
    try:
        storage.download(name, local, runs_dir, only=only)
        if (local / LOCK_FILE).exists() and storage.read_lock(name) is None:
            (local / LOCK_FILE).unlink(missing_ok=True)
    except OSError:
        return  # storage unreachable for a moment: the next refresh catches up


def _dependency(spec: RunSpec, names: set[str], ctx: _Context) -> str | None:
    """The run of this execution that ``spec``'s ``nip_run`` names, if any."""
    nip_run = spec.config.get("nip_run")
    if not isinstance(nip_run, (str, os.PathLike)):
        return None
    value = os.fspath(nip_run)
    if ctx.storage is not None:
        rel = ctx.storage.relative(value)
    else:
        try:
            rel = Path(value).absolute().relative_to(ctx.runs_dir.absolute()).as_posix()
        except ValueError:
            rel = None
    return rel if rel in names else None


def _schedule(
    runs: Sequence[RunSpec],
    ctx: _Context,
    capacity: int,
    launch: Callable[[RunSpec], Any],
    collect: Callable[[list[Any], float], list[tuple[Any, RunOutcome]]],
) -> list[RunOutcome]:
    """Launch each run as soon as the run it needs (its ``nip_run``) is done, ``capacity`` at a time, and
    collect outcomes as they come: no barrier between stages. A run whose NIP run ended otherwise is blocked."""
    names = {spec.name for spec in runs}
    waiting = list(runs)
    active: dict[Any, RunSpec] = {}
    ended: dict[str, str] = {}
    outcomes: list[RunOutcome] = []
    while waiting or active:
        for spec in list(waiting):
            if len(active) >= capacity:
                break
            needed = _dependency(spec, names, ctx)
            if needed is not None and needed not in ended:
                continue
            waiting.remove(spec)
            if needed is not None and ended[needed] not in ("done", "skipped"):
                outcome = RunOutcome(spec.name, "blocked", f"waits for its NIP run {needed} ({ended[needed]})")
                ended[spec.name] = "blocked"
                outcomes.append(ctx.finish(outcome))
                continue
            ctx.on_start(spec)
            ctx.in_flight[spec.name] = time.time()
            active[launch(spec)] = spec
        if not active:
            if waiting and all(_dependency(spec, names, ctx) not in ended for spec in waiting):
                for spec in waiting:  # a cycle of nip_run references: nothing can start
                    outcomes.append(ctx.finish(RunOutcome(spec.name, "blocked", "its NIP run waits for it in turn")))
                waiting.clear()
            continue
        for handle, outcome in collect(list(active), POLL_S):
            active.pop(handle)
            ended[outcome.name] = outcome.status
            outcomes.append(ctx.finish(outcome))
    return outcomes


def _local(runs: Sequence[RunSpec], ctx: _Context) -> list[RunOutcome]:
    outcomes = []
    for spec in runs:
        ctx.on_start(spec)
        ctx.in_flight[spec.name] = time.time()
        outcome = RunOutcome(**_execute_dict(*ctx.call_args(spec)))
        outcomes.append(ctx.finish(outcome))
    return outcomes


def _worker(args: tuple, sender: Any) -> None:
    """Entry point of a worker process: one run, its outcome sent back through ``sender``."""
    sender.send(_execute_dict(*args))
    sender.close()


def _processes(runs: Sequence[RunSpec], ctx: _Context, workers: int) -> list[RunOutcome]:
    """Every run in a process of its own, ``workers`` at a time: a process that dies fails only its run."""
    context = multiprocessing.get_context("spawn")  # no forked torch state; same as on a fresh machine
    handles: dict[Any, tuple[Any, RunSpec, Any]] = {}

    def launch(spec: RunSpec) -> Any:
        receiver, sender = context.Pipe(duplex=False)
        process = context.Process(target=_worker, daemon=False, args=(ctx.call_args(spec), sender))
        process.start()
        sender.close()
        handles[process.sentinel] = (process, spec, receiver)
        return process.sentinel

    def collect(active: list[Any], timeout: float) -> list[tuple[Any, RunOutcome]]:
        out = []
        for sentinel in multiprocessing.connection.wait(active, timeout):
            process, spec, receiver = handles.pop(sentinel)
            process.join()
            try:
                outcome = RunOutcome(**receiver.recv()) if receiver.poll() else None
            except (EOFError, OSError):
                outcome = None
            receiver.close()
            if outcome is None:  # the process died without an answer (killed for memory, a crash)
                outcome = RunOutcome(spec.name, "failed", f"worker process died (exit code {process.exitcode})")
                _record_crash(ctx, spec.name, outcome.error)
            out.append((sentinel, outcome))
        return out

    try:
        return _schedule(runs, ctx, workers, launch, collect)
    finally:
        for process, _, _ in handles.values():
            process.terminate()


def _record_crash(ctx: _Context, name: str, reason: str) -> None:
    if ctx.storage is not None:
        try:
            ctx.storage.write_bytes(f"{name}/{ERROR_FILE}", (reason + "\n").encode("utf-8"))
            ctx.storage.delete(f"{name}/.running")
        except OSError:
            pass
    run_dir = ctx.runs_dir / name
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / LOCK_FILE).unlink(missing_ok=True)
    atomic_write_text(run_dir / ERROR_FILE, reason + "\n")


def package_runtime_env() -> dict[str, Any]:
    """A Ray ``runtime_env`` that ships this installed ``neuralimaging`` package to every node (its
    dependencies, torch and the rest, must be installed there)."""
    import neuralimaging

    return {"py_modules": [str(Path(neuralimaging.__file__).parent)]}


def _ray(runs: Sequence[RunSpec], ctx: _Context, address: str, retries: int,
         runtime_env: Mapping[str, Any] | None) -> list[RunOutcome]:
    try:
        import ray
    except ImportError:
        raise InputError("--ray needs Ray: pip install 'neuralimaging[ray]'") from None
    if not ray.is_initialized():
        env = dict(runtime_env) if runtime_env is not None else None
        if address == "local":
            ray.init(include_dashboard=False, log_to_driver=False, runtime_env=env)
        else:
            ray.init(address=address, log_to_driver=False, runtime_env=env)
    elif runtime_env:
        raise InputError("runtime_env: Ray is already initialized in this process; pass it to ray.init instead")
    remote = ray.remote(_execute_dict)
    specs: dict[Any, RunSpec] = {}

    def launch(spec: RunSpec) -> Any:
        extra = {k: v for k, v in spec.resources.items() if k not in ("num_cpus", "num_gpus")}
        options: dict[str, Any] = {
            "num_cpus": spec.resources.get("num_cpus", 1),
            "num_gpus": spec.resources.get("num_gpus", 0),
            "max_retries": retries,  # the worker process or its node died: Ray runs it again, elsewhere if need be
            "retry_exceptions": False,  # a run that raises is recorded, not retried
        }
        if extra:
            options["resources"] = extra
        ref = remote.options(**options).remote(*ctx.call_args(spec))
        specs[ref] = spec
        return ref

    def collect(active: list[Any], timeout: float) -> list[tuple[Any, RunOutcome]]:
        ready, _ = ray.wait(active, num_returns=1, timeout=timeout)
        out = []
        for ref in ready:
            spec = specs.pop(ref)
            try:
                outcome = RunOutcome(**ray.get(ref))
            except Exception as error:  # noqa: BLE001 - the worker or node died more often than retries allow
                first = str(error).strip().splitlines()[0] if str(error).strip() else ""
                outcome = RunOutcome(spec.name, "failed", f"ray task died {retries + 1} times: {type(error).__name__}: {first}")
                _record_crash(ctx, spec.name, outcome.error)
            out.append((ref, outcome))
        return out

    return _schedule(runs, ctx, len(runs), launch, collect)


def _watch(ctx: _Context, every: float, on_progress: Callable[[RunProgress], None], stop: threading.Event) -> None:
    """Report the progress of every run in flight each ``every`` seconds (a staged run's progress is first
    copied from storage into the driver's runs folder)."""
    while not stop.wait(every):
        for name in list(ctx.in_flight):
            if ctx.storage is not None:
                mirror(ctx.storage, name, ctx.runs_dir, live_only=True)
            progress = read_progress(ctx.runs_dir / name) or {}  # none yet: the run is still starting
            if name in ctx.in_flight:
                on_progress(RunProgress(name, int(progress.get("step", 0)), int(progress.get("total", 0)),
                                        dict(progress.get("values") or {}), dict(progress.get("metrics") or {})))


def _stored_state(storage: Storage, name: str, runs_dir: Path) -> RunState:
    """The state of a run in storage (done: its copy in ``runs_dir`` is refreshed)."""
    if storage.summary_ok(name):
        if _summary_problem(runs_dir / name) is not None:
            mirror(storage, name, runs_dir)
        return RunState(name, "done")
    error = storage.read_bytes(f"{name}/{ERROR_FILE}")
    if error is not None:
        return RunState(name, "failed", error=_last_line(error.decode("utf-8", "replace")))
    return RunState(name, "pending")


def run_sweep(
    sweep: Sweep,
    runs_dir: str | os.PathLike[str],
    *,
    workers: int = 1,
    ray_address: str | None = None,
    device: str = "auto",
    retry_failed: bool = True,
    only: Iterable[str] | None = None,
    on_outcome: Callable[[RunOutcome], None] | None = None,
    on_start: Callable[[RunSpec], None] | None = None,
    on_progress: Callable[[RunProgress], None] | None = None,
    progress_every: float = 20.0,
    storage: str | None = None,
    retries: int = 3,
    runtime_env: Mapping[str, Any] | None = None,
) -> list[RunOutcome]:
    """Execute a sweep's runs into ``runs_dir``; each run starts once the NIP run it needs is done.

    Finished runs are skipped, interrupted runs resume from their checkpoints, a failing run is recorded in
    its folder (``error.txt``) and the others go on; a run whose NIP run is not done is ``blocked``. Locally
    (one at a time) runs go in sweep order; worker processes and Ray start a run as soon as its own NIP run
    is done (no barrier between stages).

    Args:
        sweep: the expanded sweep (:func:`load_sweep`), expanded with ``runs_dir=storage`` when ``storage``
            is given (so that ``{runs}`` names storage).
        runs_dir: the folder for the run folders (with ``storage``: the driver's copy of them); the plan goes
            to ``sweep-plan.json``.
        workers: local processes running at once (1: in this process, one run at a time).
        ray_address: run every run as a Ray task on the cluster at this address (``"local"``: start a local
            Ray instance; an already initialized Ray is reused). Overrides ``workers``.
        device: ``auto``, ``cpu`` or ``cuda`` for every run.
        retry_failed: run failed runs again (else they are left as failed).
        only: run just these run names (or name prefixes); one that matches no run is an error.
        on_outcome: called with each run's outcome as it finishes (e.g. to print progress).
        on_start: called with each run's spec when it starts (in this process) or is handed to a worker.
        on_progress: called every ``progress_every`` seconds with the progress of each run in flight.
        progress_every: seconds between two progress reports.
        storage: a storage URI where runs persist (:mod:`~neuralimaging.experiments.storage`); None: the runs
            folder itself (on a cluster: a disk every node mounts at the same path; checked per run).
        retries: Ray only: how often a run whose worker process or node died is run again (from its last
            checkpoint, elsewhere if need be).
        runtime_env: Ray only: the ``runtime_env`` of the job (e.g. :func:`package_runtime_env`).

    Returns:
        One outcome per executed or skipped run, in completion order.
    """
    if workers < 1:
        raise InputError(f"workers must be >= 1, got {workers}")
    if retries < 0:
        raise InputError(f"retries must be >= 0, got {retries}")
    runs_dir = Path(runs_dir)
    for spec in sweep.runs:
        inside(runs_dir, spec.name, "run name")
    store = Storage(storage) if storage is not None else None
    selected = list(sweep.runs)
    if only is not None:
        prefixes = [p.rstrip("/") for p in only]
        unknown = [p for p in prefixes if not any(r.name == p or r.name.startswith(p + "/") for r in selected)]
        if unknown:
            raise InputError(f"--only {unknown[0]!r}: no run of sweep {sweep.name!r} has this name or name prefix")
        selected = [r for r in selected if any(r.name == p or r.name.startswith(p + "/") for p in prefixes)]
    runs_dir.mkdir(parents=True, exist_ok=True)
    plan = {"name": sweep.name, "sweep": sweep.source, "runs": [asdict(r) for r in sweep.runs],
            "storage": store.uri if store else None}
    atomic_write_text(runs_dir / PLAN_FILE, json.dumps(plan, indent=2, default=str) + "\n")
    if store is not None:
        store.write_bytes(PLAN_FILE, json.dumps(plan, indent=2, default=str).encode("utf-8"))
    ctx = _Context(runs_dir, device, store, secrets.token_hex(6),
                   write_token(runs_dir) if ray_address and store is None else None,
                   on_outcome or (lambda outcome: None), on_start or (lambda spec: None))
    outcomes: list[RunOutcome] = []
    todo = []
    for spec in selected:
        state = _stored_state(store, spec.name, runs_dir) if store else run_state(runs_dir / spec.name, spec.name)
        if state.state == "done" or (state.state == "failed" and not retry_failed):
            outcome = RunOutcome(spec.name, "skipped" if state.state == "done" else "failed", state.error)
            ctx.on_outcome(outcome)
            outcomes.append(outcome)
        else:
            todo.append(spec)
    if not todo:
        return outcomes
    stop = threading.Event()
    watcher = threading.Thread(target=_watch, args=(ctx, progress_every, on_progress, stop), daemon=True)
    if on_progress is not None:
        watcher.start()
    try:
        if ray_address:
            outcomes += _ray(todo, ctx, ray_address, retries, runtime_env)
        elif workers > 1 and len(todo) > 1:
            outcomes += _processes(todo, ctx, workers)
        else:
            outcomes += _local(todo, ctx)
    finally:
        stop.set()
        if watcher.is_alive():
            watcher.join()
    return outcomes
