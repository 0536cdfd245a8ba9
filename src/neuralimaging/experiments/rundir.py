"""Run directories: everything one training run leaves on disk, written atomically.

Layout::

    RUN_DIR/
      config.yaml       everything needed to rerun (a plain YAML-able dict)
      metrics.jsonl     one JSON object per line, one line per validation
      summary.json      final figures
      nip_source.json   later stages: the NIP checkpoint (step, hash) the run started from
      checkpoints/      LATEST (name of the newest checkpoint) + step-XXXXXXXX/ folders holding
                        <module>.safetensors, optim-<name>.safetensors + optim-<name>.json, state.safetensors
                        + state.json, and manifest.json (size and SHA-256 of each)
      figures/          plots

Weights and optimizer state are stored as safetensors plus JSON, never as pickled code. Every file is
written to a temporary name and moved into place with :func:`os.replace`, so a run killed at any moment
leaves either the old or the new version, never half a file. A checkpoint becomes visible only when the
``LATEST`` pointer is replaced after all its files are complete. Loading checks each file against the
manifest and falls back to the previous checkpoint when one is damaged (a warning says so); a torn last
line of ``metrics.jsonl`` is dropped. Files get the umask's permissions.

Example::

    >>> run = RunDir("runs/inet-quick")                          # doctest: +SKIP
    >>> run.write_config({"nip": "inet", "lr": 1e-4})             # doctest: +SKIP
    >>> run.append_metrics({"step": 100, "psnr": 38.2})           # doctest: +SKIP
    >>> run.save_checkpoint({"nip": model}, {"nip": opt}, {"step": 100})   # doctest: +SKIP
    >>> state = run.load_checkpoint({"nip": model}, {"nip": opt})  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import yaml
from safetensors.torch import load as load_bytes
from safetensors.torch import save as save_bytes

from neuralimaging import yamlio
from neuralimaging.errors import InputError
from neuralimaging.fsutil import (
    MANIFEST,
    atomic_write_bytes,
    atomic_write_text,
    check_component,
    fsync_dir,
    inside,
    make_temp_dir,
    manifest_problem,
    write_manifest,
)

__all__ = [
    "NIP_SOURCE",
    "CheckpointWarning",
    "RunDir",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_nip_source",
    "config_hash",
    "capture_rng_state",
    "discard_unstarted",
    "record_nip_source",
    "restore_rng_state",
    "run_folder",
]

_LATEST = "LATEST"
_STEP_NAME = re.compile(r"step-\d{9}")


def _plain(value: Any) -> Any:
    """Convert tuples, paths and numpy/torch scalars into plain YAML/JSON types."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    if hasattr(value, "item") and callable(value.item) and getattr(value, "shape", None) == ():
        return value.item()  # numpy scalar
    return value


def config_hash(config: Mapping[str, Any]) -> str:
    """A short, stable hash (12 hex digits) of a config dict: the same settings give the same hash."""
    canonical = json.dumps(_plain(config), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:12]


def capture_rng_state(generators: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The state of torch's global RNG (CPU and CUDA) and of named ``torch.Generator`` or
    ``numpy.random.Generator`` objects, as a dict :meth:`RunDir.save_checkpoint` can store."""
    state: dict[str, Any] = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            state[f"rng.cuda.{i}"] = s
    for name, gen in (generators or {}).items():
        if isinstance(gen, torch.Generator):
            state[f"rng.gen.{name}"] = gen.get_state()
        else:  # numpy.random.Generator: its bit generator state is a JSON-able dict
            state[f"rng.np.{name}"] = gen.bit_generator.state
    return state


def restore_rng_state(state: Mapping[str, Any], generators: Mapping[str, Any] | None = None) -> None:
    """Restore what :func:`capture_rng_state` captured (keys that are absent are left alone)."""
    if "rng.torch" in state:
        torch.set_rng_state(state["rng.torch"].cpu().to(torch.uint8))
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            if f"rng.cuda.{i}" in state:
                torch.cuda.set_rng_state(state[f"rng.cuda.{i}"].cpu().to(torch.uint8), i)
    for name, gen in (generators or {}).items():
        if isinstance(gen, torch.Generator) and f"rng.gen.{name}" in state:
            gen.set_state(state[f"rng.gen.{name}"].cpu().to(torch.uint8))
        elif f"rng.np.{name}" in state:
            gen.bit_generator.state = state[f"rng.np.{name}"]


def _split_tensors(prefix: str, value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Replace every tensor inside ``value`` by a reference ``{"__tensor__": key}``; collect the tensors."""
    if isinstance(value, torch.Tensor):
        key = prefix
        tensors[key] = value.detach().cpu().contiguous().clone()
        return {"__tensor__": key}
    if isinstance(value, Mapping):
        return {"__keys__": [[_key_kind(k), str(k)] for k in value.keys()],
                "__values__": [_split_tensors(f"{prefix}.{k}", v, tensors) for k, v in value.items()]}
    if isinstance(value, (list, tuple)):
        return {"__list__": [_split_tensors(f"{prefix}.{i}", v, tensors) for i, v in enumerate(value)],
                "__tuple__": isinstance(value, tuple)}
    return _plain(value)


def _key_kind(key: Any) -> str:
    return "int" if isinstance(key, int) else "str"


def _join_tensors(value: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    if isinstance(value, dict):
        if "__tensor__" in value:
            return tensors[value["__tensor__"]]
        if "__keys__" in value:
            keys = [int(k) if kind == "int" else k for kind, k in value["__keys__"]]
            return {k: _join_tensors(v, tensors) for k, v in zip(keys, value["__values__"])}
        if "__list__" in value:
            items = [_join_tensors(v, tensors) for v in value["__list__"]]
            return tuple(items) if value["__tuple__"] else items
    return value


def _tree_files(stem: str, tree: Any) -> dict[str, bytes]:
    """The two files (safetensors + JSON skeleton) that store ``tree``."""
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _split_tensors("t", tree, tensors)
    return {f"{stem}.safetensors": save_bytes(tensors), f"{stem}.json": json.dumps(skeleton).encode("utf-8")}


def _read_tensors(file: Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in load_bytes(file.read_bytes()).items()}


def _load_tree(folder: Path, stem: str, device: str | torch.device = "cpu") -> Any:
    tensors = _read_tensors(folder / f"{stem}.safetensors", device)
    skeleton = json.loads((folder / f"{stem}.json").read_text(encoding="utf-8"))
    return _join_tensors(skeleton, tensors)


class CheckpointWarning(UserWarning):
    """A damaged checkpoint was skipped and an older intact one used instead."""


def _reason(error: BaseException) -> str:
    text = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class RunDir:
    """One run's folder: config, metrics, summary, checkpoints and figures.

    Args:
        path: the run folder; created on the first write.
        keep: how many checkpoints to keep (older ones are deleted after a new one is complete).
    """

    def __init__(self, path: str | os.PathLike[str], keep: int = 2) -> None:
        self.path = Path(path)
        self.keep = max(1, int(keep))

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # -- paths -----------------------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def summary_path(self) -> Path:
        return self.path / "summary.json"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def figures(self) -> Path:
        """The figures folder (created on access)."""
        folder = self.path / "figures"
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    # -- config ----------------------------------------------------------------------------------------
    def write_config(self, config: Mapping[str, Any]) -> None:
        """Write ``config.yaml`` (plain types only; tuples become lists)."""
        text = yaml.safe_dump(_plain(config), sort_keys=False, default_flow_style=False)
        atomic_write_text(self.config_path, text)

    def read_config(self) -> dict[str, Any]:
        """The run's config; raises :class:`InputError` when the folder is not a run directory."""
        if not self.config_path.is_file():
            raise InputError(f"{self.path}: not a run directory (no config.yaml)")
        try:
            data = yamlio.load(self.config_path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, ValueError) as error:
            raise InputError(f"{self.config_path}: not a readable config ({_reason(error)})") from None
        if not isinstance(data, dict):
            raise InputError(f"{self.config_path}: expected a YAML mapping")
        return data

    @property
    def config_hash(self) -> str:
        """:func:`config_hash` of the stored config."""
        return config_hash(self.read_config())

    # -- metrics and summary ---------------------------------------------------------------------------
    def _metrics_text(self) -> str:
        """The complete lines of ``metrics.jsonl`` (a torn last line, left by a failing disk or a copy that
        stopped half-way, is dropped)."""
        if not self.metrics_path.exists():
            return ""
        text = self.metrics_path.read_text(encoding="utf-8", errors="replace")
        lines = text.splitlines(keepends=True)
        if lines:
            try:
                json.loads(lines[-1])
            except ValueError:
                lines.pop()
        return "".join(line if line.endswith("\n") else line + "\n" for line in lines)

    def append_metrics(self, record: Mapping[str, Any]) -> None:
        """Add one line to ``metrics.jsonl`` (the file is rewritten atomically, so it is never torn)."""
        atomic_write_text(self.metrics_path, self._metrics_text() + json.dumps(_plain(record)) + "\n")

    def read_metrics(self) -> list[dict[str, Any]]:
        """Every record of ``metrics.jsonl`` in order (empty when there is none; a torn last line is left out).

        Raises:
            InputError: when a line before the last is not a JSON object.
        """
        records = []
        for number, line in enumerate(self._metrics_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            if not isinstance(record, dict):
                raise InputError(f"{self.metrics_path}: line {number} is not a JSON object")
            records.append(record)
        return records

    def truncate_metrics(self, key: str, last: float) -> None:
        """Drop metric records whose ``key`` exceeds ``last``, and a torn last line (used when resuming from a
        checkpoint that is older than the newest metrics)."""
        kept = [r for r in self.read_metrics() if r.get(key, last) <= last]
        atomic_write_text(self.metrics_path, "".join(json.dumps(r) + "\n" for r in kept))

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        """Write ``summary.json``."""
        atomic_write_text(self.summary_path, json.dumps(_plain(summary), indent=2) + "\n")

    def read_summary(self) -> dict[str, Any]:
        """The run's summary; raises :class:`InputError` when the run has not finished or it is damaged."""
        if not self.summary_path.is_file():
            raise InputError(f"{self.path}: no summary.json (run not finished?)")
        try:
            summary = json.loads(self.summary_path.read_text(encoding="utf-8"))
        except (ValueError, OSError) as error:
            raise InputError(f"{self.summary_path}: damaged ({_reason(error)}); resume the run to write it again") from None
        if not isinstance(summary, dict):
            raise InputError(f"{self.summary_path}: damaged (not a JSON object); resume the run to write it again")
        return summary

    # -- checkpoints -----------------------------------------------------------------------------------
    def _candidates(self) -> tuple[list[Path], list[str]]:
        """Checkpoint folders to try, newest first (the one ``LATEST`` names leads), and problems found."""
        problems: list[str] = []
        names: list[str] = []
        pointer = self.checkpoints / _LATEST
        if pointer.is_file():
            named = pointer.read_text(encoding="utf-8", errors="replace").strip()
            if not _STEP_NAME.fullmatch(named):
                problems.append(f"{_LATEST} names {named[:80]!r}, not a checkpoint folder of this run")
            elif not (self.checkpoints / named).is_dir():
                problems.append(f"{_LATEST} names {named}, which is missing")
            else:
                names.append(named)
        if self.checkpoints.is_dir():
            found = sorted((p.name for p in self.checkpoints.iterdir() if _STEP_NAME.fullmatch(p.name) and p.is_dir()),
                           reverse=True)
            names += [n for n in found if n not in names]
        return [self.checkpoints / n for n in names], problems

    def has_checkpoint(self) -> bool:
        """Whether the run has saved a checkpoint (intact or not: a run with damaged checkpoints is never
        started over silently; :meth:`load_checkpoint` falls back to an older one or refuses)."""
        pointer = self.checkpoints / _LATEST
        return pointer.is_file() or any(
            _STEP_NAME.fullmatch(p.name) and p.is_dir() for p in (self.checkpoints.iterdir() if self.checkpoints.is_dir() else ())
        )

    def save_checkpoint(
        self,
        modules: Mapping[str, nn.Module],
        optimizers: Mapping[str, torch.optim.Optimizer] | None = None,
        state: Mapping[str, Any] | None = None,
    ) -> Path:
        """Save module weights (safetensors), optimizer states and a state dict atomically.

        Every file is listed with its size and SHA-256 in ``manifest.json``, so that a damaged file is found
        when the checkpoint is loaded.

        Args:
            modules: name -> module; each ``state_dict()`` (parameters and buffers) goes to ``<name>.safetensors``.
            optimizers: name -> optimizer (or anything with ``state_dict``/``load_state_dict``, such as an LR
                scheduler); tensors go to safetensors, the rest to JSON.
            state: anything else (step, epoch, RNG states from :func:`capture_rng_state`, history lists);
                tensors and JSON-able values may be mixed. ``state["step"]`` names the checkpoint folder.

        Returns:
            The checkpoint folder.
        """
        state = dict(state or {})
        step = int(state.get("step", 0))
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        name = f"step-{step:09d}"
        tmp = make_temp_dir(self.checkpoints, prefix=f".{name}.")
        try:
            files: dict[str, bytes] = {}
            for key, module in modules.items():
                tensors = {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}
                files[f"{key}.safetensors"] = save_bytes(tensors)
            for key, optimizer in (optimizers or {}).items():
                files.update(_tree_files(f"optim-{key}", optimizer.state_dict()))
            files.update(_tree_files("state", state))
            write_manifest(tmp, files)
            fsync_dir(tmp)
            final = self.checkpoints / name
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            fsync_dir(self.checkpoints)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        atomic_write_text(self.checkpoints / _LATEST, name + "\n")
        self._prune(keep_name=name)
        return final

    def _prune(self, keep_name: str) -> None:
        folders = sorted(p for p in self.checkpoints.glob("step-*") if p.is_dir())
        stale = [p for p in folders if p.name != keep_name][: max(0, len(folders) - self.keep)]
        for folder in stale:
            shutil.rmtree(folder, ignore_errors=True)
        for leftover in self.checkpoints.glob(".step-*"):
            shutil.rmtree(leftover, ignore_errors=True)

    def _read(self, read: Any) -> tuple[Path, Any]:
        """``(folder, read(folder))`` for the newest intact checkpoint: each candidate's manifest is checked
        and ``read`` must succeed; damaged ones are skipped with a :class:`CheckpointWarning`.

        Raises:
            InputError: when there is no checkpoint, or none is intact.
        """
        candidates, problems = self._candidates()
        if not candidates and not problems:
            raise InputError(f"{self.path}: no checkpoint to load")
        for folder in candidates:
            problem = manifest_problem(folder)
            if problem is None:
                try:
                    value = read(folder)
                except InputError:
                    raise
                except Exception as error:  # noqa: BLE001 - a damaged file: any parser error, try the next one
                    problem = _reason(error)
                else:
                    if problems:
                        warnings.warn(f"{self.checkpoints}: skipped {'; '.join(problems)}; using {folder.name}",
                                      CheckpointWarning, stacklevel=3)
                    return folder, value
            problems.append(f"{folder.name}: {problem}")
        raise InputError(f"{self.checkpoints}: no intact checkpoint ({'; '.join(problems)}); "
                         "move the folder aside to start the run over")

    def latest_checkpoint(self) -> Path | None:
        """The newest intact checkpoint folder (see :meth:`load_checkpoint`), or None when there is none."""
        try:
            return self._read(lambda folder: None)[0]
        except InputError:
            return None

    def load_checkpoint(
        self,
        modules: Mapping[str, nn.Module] | None = None,
        optimizers: Mapping[str, Any] | None = None,
        device: str | torch.device = "cpu",
    ) -> dict[str, Any]:
        """Load the newest intact checkpoint into ``modules`` and ``optimizers`` (in place); returns its state.

        A checkpoint whose files do not match its manifest, or cannot be read, is skipped for the one before
        it (with a :class:`CheckpointWarning`), as is a ``LATEST`` pointer naming a missing folder or
        anything but a checkpoint of this run.

        Raises:
            InputError: when there is no intact checkpoint or it lacks a requested module.
        """

        def read(folder: Path) -> tuple[dict, dict, Any]:
            weights = {}
            for key in modules or {}:
                file = folder / f"{key}.safetensors"
                if not file.is_file():
                    raise InputError(f"{folder}: no weights for {key!r} (expected {file.name})")
                weights[key] = _read_tensors(file, device)
            states = {key: _load_tree(folder, f"optim-{key}", device) for key in optimizers or {}}
            return weights, states, _load_tree(folder, "state", "cpu")

        _, (weights, states, state) = self._read(read)
        for key, module in (modules or {}).items():
            module.load_state_dict(weights[key])
        for key, optimizer in (optimizers or {}).items():
            optimizer.load_state_dict(states[key])
        return state

    def load_weights(self, key: str, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
        """The raw tensors of one module from the newest intact checkpoint (for building a model elsewhere)."""

        def read(folder: Path) -> dict[str, torch.Tensor]:
            file = folder / f"{key}.safetensors"
            if not file.is_file():
                raise InputError(f"{folder}: no weights for {key!r}")
            return _read_tensors(file, device)

        return self._read(read)[1]

    def checkpoint_id(self) -> dict[str, Any]:
        """Which checkpoint the run's newest intact one is: ``run``, ``checkpoint`` (folder name), ``step`` and
        ``sha256`` (of its manifest: it changes with any of its files)."""
        folder, state = self._read(lambda f: _load_tree(f, "state", "cpu"))
        manifest = folder / MANIFEST
        digest = hashlib.sha256(manifest.read_bytes() if manifest.is_file() else b"".join(
            p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file())).hexdigest()
        return {"run": str(self.path.absolute()), "checkpoint": folder.name, "step": int(state.get("step", 0)),
                "sha256": digest}


# -- the pre-trained NIP a later stage starts from --------------------------------------------------------
NIP_SOURCE = "nip_source.json"
"""File in a run folder recording the NIP checkpoint the run started from (see :func:`record_nip_source`)."""


def _finished(run: RunDir) -> bool:
    try:
        run.read_summary()
    except InputError:
        return False
    return True


def _nip_frozen(config: Mapping[str, Any]) -> bool:
    """Whether the run keeps the pre-trained NIP as it is (F), so its results depend on the NIP run's weights."""
    return "nip" not in [p.strip() for p in str(config.get("train", "")).split(",")]


def record_nip_source(run: RunDir, nip_run: str | os.PathLike[str], *, force: bool = False) -> dict[str, Any]:
    """Check the pre-trained NIP run a run starts from, and record which checkpoint (step, hash) it is.

    On a fresh start (``run`` has no checkpoint) the NIP run must be finished (its ``summary.json`` exists)
    unless ``force``; its newest checkpoint is written to ``nip_source.json`` in ``run``. On resume, a run that
    keeps the NIP frozen (F) must find the NIP run at the recorded checkpoint.

    Args:
        run: the run starting or resuming.
        nip_run: the pre-trained NIP's run folder.
        force: accept an unfinished NIP run (recorded as ``"finished": false``).

    Returns:
        The record: ``run``, ``checkpoint``, ``step``, ``sha256``, ``finished``, ``forced``.

    Raises:
        InputError: when the NIP run is unfinished (and not ``force``), has no intact checkpoint, or changed
            since a frozen-NIP run started.
    """
    source = RunDir(nip_run)
    finished = _finished(source)
    if not source.has_checkpoint() and not finished:
        raise InputError(f"{source.path}: not a finished NIP run (no checkpoint and no summary.json)")
    current = {**source.checkpoint_id(), "finished": finished, "forced": bool(force)}
    path = run.path / NIP_SOURCE
    if run.has_checkpoint() and path.is_file():
        recorded = _read_record(path)
        if current["sha256"] != recorded.get("sha256") and _nip_frozen(run.read_config()) and not force:
            raise InputError(f"{source.path}: its NIP changed since this run started (now {current['checkpoint']}, "
                             f"was {recorded.get('checkpoint')}); resuming would mix two NIPs")
        return recorded
    if not finished and not force:
        raise InputError(f"{source.path}: the NIP run has not finished (newest checkpoint {current['checkpoint']}, "
                         "no summary.json); finish it first, or force it (--allow-unfinished-nip)")
    atomic_write_text(path, json.dumps(current, indent=1) + "\n")
    return current


def _read_record(path: Path) -> dict[str, Any]:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise InputError(f"{path}: damaged ({_reason(error)})") from None
    if not isinstance(record, dict):
        raise InputError(f"{path}: damaged (not a JSON object)")
    return record


def check_nip_source(run_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """Check, before a trained run is measured, that the NIP it needs is the one it was trained with.

    A run that kept the NIP frozen (F) takes its NIP from the NIP run at load time: that run's newest
    checkpoint must be the recorded one (runs from before the record existed: the NIP run must be finished).
    A run that trained the NIP (F+N) holds its own NIP weights.

    Returns:
        The record of ``nip_source.json`` (None for a run from before it existed).

    Raises:
        InputError: when ``run_dir`` is not a run of a later stage (its config names no ``nip_run``), or the
            NIP run changed or is unfinished.
    """
    run = RunDir(run_dir)
    config = run.read_config()
    if not config.get("nip_run"):
        raise InputError(f"{run.path}: not a `train manipulation` run (its config names no nip_run)")
    path = run.path / NIP_SOURCE
    recorded = _read_record(path) if path.is_file() else None
    if not _nip_frozen(config):
        return recorded
    source = RunDir(config["nip_run"])
    if recorded is None:
        if not _finished(source):
            raise InputError(f"{source.path}: the NIP run this run needs has not finished (no summary.json)")
        return None
    current = source.checkpoint_id()
    if current["sha256"] != recorded.get("sha256"):
        raise InputError(f"{source.path}: its NIP changed since {run.path} was trained (now {current['checkpoint']}, "
                         f"was {recorded.get('checkpoint')})")
    return recorded


# -- run folders the command line creates ----------------------------------------------------------------
def run_folder(out: str | os.PathLike[str], name: str) -> Path:
    """``out / name`` for a run name given on the command line: one plain name that stays inside ``out``.

    Raises:
        InputError: for ``..``, an absolute path, a separator, or a link leading outside ``out``.
    """
    return inside(out, check_component(name, "run name"), "run name")


@contextmanager
def discard_unstarted(run_dir: str | os.PathLike[str]) -> Iterator[None]:
    """Remove ``run_dir`` again when the block fails before the run saved a checkpoint, if the folder did not
    exist before: a run refused for its settings or data leaves no folder behind that would count as pending."""
    path = Path(run_dir)
    existed = path.exists()
    try:
        yield
    except Exception:
        if not existed and path.is_dir() and not RunDir(path).has_checkpoint():
            shutil.rmtree(path, ignore_errors=True)
        raise
