"""What a sweep is: the tasks and paper modes it may name, the files of a run folder, and the expansion of a
sweep file into stably named runs (:func:`expand`, :func:`load_sweep`)."""

from __future__ import annotations

import copy
import itertools
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from neuralimaging import yamlio
from neuralimaging.errors import InputError

__all__ = [
    "ERROR_FILE", "HEARTBEAT_S", "LABEL_AXES", "LOCK_FILE", "MODES", "PLAN_FILE", "POLL_S", "RUN_FILE",
    "STALE_AFTER_S", "TASKS", "RunSpec", "Sweep", "expand", "load_sweep",
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


