"""Grids of training runs: expansion into stably named run directories, and their execution.

A sweep file (YAML) names the grid of the paper's evidence (cameras x NIPs x modes x ``lambda_nip`` x
repetitions, Korus & Memon, section 5 and supplement Table 1) and the training task each run calls. Runs
execute locally one at a time, in ``workers`` processes, or as Ray tasks on a cluster (each task asks for the
sweep's ``resources``, e.g. one GPU). Execution is resumable and fault-isolated:

- a run is **done** when its ``summary.json`` exists and reads as a JSON object: rerunning the sweep skips
  it (a damaged summary is moved aside to ``summary.json.damaged`` and the run resumes to write it again);
- a run with a checkpoint but no summary was **interrupted** (killed, or stopped early by a step budget):
  it is pending, and rerunning resumes it (``resume=True``);
- a run that raises is **failed**: the traceback goes to ``error.txt`` in its folder, the others go on; a
  worker process that dies (killed for memory, say) fails only its own run;
- a run holding a ``.running`` lock of a live executor is **running** (another executor owns it); a lock
  whose owner is gone (same host and boot, dead process id; or no heartbeat for a minute) is taken over;
- a run whose config names a ``nip_run`` that is not done is **blocked**: it does not start, and a later
  execution runs it once its NIP run has finished.

On a Ray cluster every node needs ``neuralimaging`` installed, and the runs folder (and datasets) must be on a
filesystem every node sees at the same path: tasks write their run folders there, and the driver reads them.

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
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from neuralimaging import yamlio
from neuralimaging.errors import InputError
from neuralimaging.fsutil import atomic_write_text, inside, manifest_problem

__all__ = [
    "MODES",
    "RunOutcome",
    "RunSpec",
    "RunState",
    "Sweep",
    "TASKS",
    "execute_run",
    "expand",
    "find_runs",
    "load_sweep",
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
"""Paper modes: name -> (config ``train`` value, token in run names)."""

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
        runs_dir: the folder that will hold the run folders (fills ``{runs}``).
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
    fields = {"runs": str(Path(runs_dir).absolute()), "sweep_dir": str(Path(sweep_dir).absolute())}
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
    exists; ``error`` is the last line of the failure."""

    name: str
    state: str
    resumable: bool = False
    error: str = ""


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


def run_state(run_dir: str | os.PathLike[str], name: str | None = None) -> RunState:
    """The state of the run in ``run_dir`` (see the module docstring for the rules)."""
    run_dir = Path(run_dir)
    name = name if name is not None else run_dir.name
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
    done)."""

    name: str
    status: str
    error: str = ""
    wall_time_s: float = 0.0
    resumed: bool = False


class _Heartbeat:
    """Keeps ``.running`` fresh (touched every ``HEARTBEAT_S``) while a run executes."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / LOCK_FILE
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)

    def acquire(self, stale_after: float = STALE_AFTER_S) -> bool:
        """Create the lock atomically (``O_EXCL``), replacing a stale one; False when another executor
        holds a fresh one."""
        info = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "boot_id": _boot_id(),
                           "started": time.time()}) + "\n"
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)  # the umask applies
            except FileExistsError:
                if _lock_fresh(self.path.parent, stale_after):
                    return False
                self.path.unlink(missing_ok=True)  # left by a killed executor (dead owner or no heartbeat)
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(info)
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


def _waits_for(spec: RunSpec) -> str | None:
    """Why the run cannot start yet (its ``nip_run`` is not done), or None."""
    nip_run = spec.config.get("nip_run")
    if not isinstance(nip_run, (str, os.PathLike)):
        return None
    state = run_state(Path(nip_run))
    if state.state == "done":
        return None
    return f"waits for its NIP run {nip_run} ({state.state}{': ' + state.error if state.error else ''})"


def execute_run(spec: RunSpec, runs_dir: str | os.PathLike[str], device: str = "auto", threads: int | None = None) -> RunOutcome:
    """Execute one run in this process, isolating its failure.

    Skips the run when it is done or another executor holds its lock; does not start it (``blocked``) while
    the NIP run its config names is not done; resumes it from its checkpoint when it has one. The task is
    called as ``task(config, run_dir, resume=..., device=..., progress=False)`` and owns ``summary.json``: a
    task that returns without writing it (stopped early) leaves the run ``incomplete`` (pending, resumable).
    Any exception is caught and written with its traceback to ``error.txt``.

    Args:
        spec: the run.
        runs_dir: the runs folder; the run lives in ``runs_dir / spec.name``.
        device: ``auto``, ``cpu`` or ``cuda`` for the task.
        threads: torch intra-op threads for the run (``None`` leaves torch's setting).

    Returns:
        The outcome (never raises for a failing task).
    """
    run_dir = inside(runs_dir, spec.name, "run name")
    summary = _summary_problem(run_dir)
    if summary is None:
        return RunOutcome(spec.name, "skipped")
    waits = _waits_for(spec)
    if waits:
        return RunOutcome(spec.name, "blocked", waits)
    run_dir.mkdir(parents=True, exist_ok=True)
    heartbeat = _Heartbeat(run_dir)
    if not heartbeat.acquire():
        return RunOutcome(spec.name, "busy")
    if threads:
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(int(threads))
        else:  # torch reads it when the task imports it
            os.environ["OMP_NUM_THREADS"] = str(int(threads))
    start = time.perf_counter()
    resume = _has_checkpoint(run_dir)
    with heartbeat:
        try:
            if summary != "missing":  # damaged: keep it for inspection, the run resumes to write it again
                os.replace(run_dir / "summary.json", run_dir / "summary.json.damaged")
            atomic_write_text(run_dir / RUN_FILE, json.dumps(asdict(spec), indent=2, default=str) + "\n")
            (run_dir / ERROR_FILE).unlink(missing_ok=True)
            fn = _import_task(spec.task)
            fn(copy.deepcopy(spec.config), run_dir, resume=resume, device=device, progress=False)
        except Exception as error:  # noqa: BLE001 - isolation: every failure is recorded, the sweep goes on
            text = "".join(traceback.format_exception(error))
            atomic_write_text(run_dir / ERROR_FILE, text)
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            return RunOutcome(spec.name, "failed", f"{type(error).__name__}: {reason}", time.perf_counter() - start, resume)
    # the task owns summary.json; one that stopped early (e.g. a step budget) leaves the run resumable
    status = "done" if _summary_problem(run_dir) is None else "incomplete"
    return RunOutcome(spec.name, status, "", time.perf_counter() - start, resume)


def _execute_dict(spec: dict[str, Any], runs_dir: str, device: str, threads: int | None) -> dict[str, Any]:
    """Picklable entry point for worker processes and Ray tasks (plain dicts in and out)."""
    return asdict(execute_run(RunSpec(**spec), runs_dir, device, threads))


# -- executors -------------------------------------------------------------------------------------------
def _threads(spec: RunSpec) -> int | None:
    value = spec.resources.get("num_cpus")
    return int(value) if value else None


def _local(
    runs: Sequence[RunSpec],
    runs_dir: Path,
    device: str,
    on_outcome: Callable[[RunOutcome], None],
    on_start: Callable[[RunSpec], None] = lambda spec: None,
) -> list[RunOutcome]:
    outcomes = []
    for spec in runs:
        on_start(spec)
        outcome = execute_run(spec, runs_dir, device, _threads(spec))
        on_outcome(outcome)
        outcomes.append(outcome)
    return outcomes


def _worker(spec: dict[str, Any], runs_dir: str, device: str, threads: int | None, sender: Any) -> None:
    """Entry point of a worker process: one run, its outcome sent back through ``sender``."""
    sender.send(_execute_dict(spec, runs_dir, device, threads))
    sender.close()


def _processes(
    runs: Sequence[RunSpec], runs_dir: Path, device: str, workers: int, on_outcome: Callable[[RunOutcome], None]
) -> list[RunOutcome]:
    """Every run in a process of its own, ``workers`` at a time: a process that dies fails only its run."""
    outcomes = []
    context = multiprocessing.get_context("spawn")  # no forked torch state; same as on a fresh machine
    waiting = list(runs)
    active: dict[Any, tuple[Any, RunSpec, Any]] = {}
    try:
        while waiting or active:
            while waiting and len(active) < workers:
                spec = waiting.pop(0)
                receiver, sender = context.Pipe(duplex=False)
                process = context.Process(target=_worker, daemon=False,
                                          args=(asdict(spec), str(runs_dir), device, _threads(spec) or 1, sender))
                process.start()
                sender.close()
                active[process.sentinel] = (process, spec, receiver)
            for sentinel in multiprocessing.connection.wait(list(active)):
                process, spec, receiver = active.pop(sentinel)
                process.join()
                try:
                    outcome = RunOutcome(**receiver.recv()) if receiver.poll() else None
                except (EOFError, OSError):
                    outcome = None
                receiver.close()
                if outcome is None:  # the process died without an answer (killed for memory, a crash)
                    outcome = RunOutcome(spec.name, "failed", f"worker process died (exit code {process.exitcode})")
                    _record_crash(runs_dir / spec.name, outcome.error)
                on_outcome(outcome)
                outcomes.append(outcome)
    finally:
        for process, _, _ in active.values():
            process.terminate()
    return outcomes


def _record_crash(run_dir: Path, reason: str) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / LOCK_FILE).unlink(missing_ok=True)
    atomic_write_text(run_dir / ERROR_FILE, reason + "\n")


def _ray(
    runs: Sequence[RunSpec], runs_dir: Path, device: str, address: str, on_outcome: Callable[[RunOutcome], None]
) -> list[RunOutcome]:
    try:
        import ray
    except ImportError:
        raise InputError("--ray needs Ray: pip install 'neuralimaging[ray]'") from None
    if not ray.is_initialized():
        if address == "local":
            ray.init(include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address, log_to_driver=False)
    remote = ray.remote(_execute_dict)
    pending = {}
    for spec in runs:
        extra = {k: v for k, v in spec.resources.items() if k not in ("num_cpus", "num_gpus")}
        options: dict[str, Any] = {
            "num_cpus": spec.resources.get("num_cpus", 1),
            "num_gpus": spec.resources.get("num_gpus", 0),
            "max_retries": 0,
        }
        if extra:
            options["resources"] = extra
        ref = remote.options(**options).remote(asdict(spec), str(runs_dir.absolute()), device, _threads(spec) or 1)
        pending[ref] = spec
    outcomes = []
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        spec = pending.pop(ready[0])
        try:
            outcome = RunOutcome(**ray.get(ready[0]))
        except Exception as error:  # noqa: BLE001 - the worker or node died
            outcome = RunOutcome(spec.name, "failed", f"ray task died: {type(error).__name__}: {str(error).splitlines()[0]}")
            _record_crash(runs_dir / spec.name, outcome.error)
        on_outcome(outcome)
        outcomes.append(outcome)
    return outcomes


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
) -> list[RunOutcome]:
    """Execute a sweep's runs into ``runs_dir``, stage by stage (a stage starts when the previous one ended).

    Finished runs are skipped, interrupted runs resume from their checkpoints, a failing run is recorded in
    its folder (``error.txt``) and the others go on; a run whose NIP run is not done is ``blocked``.

    Args:
        sweep: the expanded sweep (:func:`load_sweep`).
        runs_dir: the folder for the run folders; the plan goes to ``sweep-plan.json``.
        workers: local processes running at once (1: in this process, one run at a time).
        ray_address: run every run as a Ray task on the cluster at this address (``"local"``: start a local
            Ray instance; an already initialized Ray is reused). Overrides ``workers``.
        device: ``auto``, ``cpu`` or ``cuda`` for every run.
        retry_failed: run failed runs again (else they are left as failed).
        only: run just these run names (or name prefixes); one that matches no run is an error.
        on_outcome: called with each run's outcome as it finishes (e.g. to print progress).
        on_start: called with each run's spec when it starts (in this process) or is handed to a worker.

    Returns:
        One outcome per executed or skipped run, in completion order.
    """
    if workers < 1:
        raise InputError(f"workers must be >= 1, got {workers}")
    runs_dir = Path(runs_dir)
    for spec in sweep.runs:
        inside(runs_dir, spec.name, "run name")
    selected = list(sweep.runs)
    if only is not None:
        prefixes = [p.rstrip("/") for p in only]
        unknown = [p for p in prefixes if not any(r.name == p or r.name.startswith(p + "/") for r in selected)]
        if unknown:
            raise InputError(f"--only {unknown[0]!r}: no run of sweep {sweep.name!r} has this name or name prefix")
        selected = [r for r in selected if any(r.name == p or r.name.startswith(p + "/") for p in prefixes)]
    runs_dir.mkdir(parents=True, exist_ok=True)
    plan = {"name": sweep.name, "sweep": sweep.source, "runs": [asdict(r) for r in sweep.runs]}
    atomic_write_text(runs_dir / PLAN_FILE, json.dumps(plan, indent=2, default=str) + "\n")
    callback = on_outcome or (lambda outcome: None)
    outcomes: list[RunOutcome] = []
    for stage in sweep.stages():
        todo = []
        for spec in (r for r in selected if r.stage == stage):
            state = run_state(runs_dir / spec.name, spec.name)
            if state.state == "done" or (state.state == "failed" and not retry_failed):
                outcome = RunOutcome(spec.name, "skipped" if state.state == "done" else "failed", state.error)
                callback(outcome)
                outcomes.append(outcome)
            else:
                todo.append(spec)
        if not todo:
            continue
        started = on_start or (lambda spec: None)
        if ray_address or (workers > 1 and len(todo) > 1):
            for spec in todo:
                started(spec)
        if ray_address:
            outcomes += _ray(todo, runs_dir, device, ray_address, callback)
        elif workers > 1 and len(todo) > 1:
            outcomes += _processes(todo, runs_dir, device, workers, callback)
        else:
            outcomes += _local(todo, runs_dir, device, callback, started)
    return outcomes
