"""Run directories: everything one training run leaves on disk, written atomically.

Layout (see ``ARCHITECTURE.md``)::

    RUN_DIR/
      config.yaml       everything needed to rerun (a plain YAML-able dict)
      metrics.jsonl     one JSON object per line, one line per validation
      summary.json      final figures
      checkpoints/      LATEST (name of the newest checkpoint) + step-XXXXXXXX/ folders holding
                        <module>.safetensors, optim-<name>.safetensors + optim-<name>.json, state.safetensors
                        + state.json
      figures/          plots

Weights and optimizer state are stored as safetensors plus JSON, never as pickled code. Every file is
written to a temporary name and moved into place with :func:`os.replace`, so a run killed at any moment
leaves either the old or the new version, never half a file. A checkpoint becomes visible only when the
``LATEST`` pointer is replaced after all its files are complete.

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
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import yaml
from safetensors.torch import load_file, save_file

from neuralimaging import yamlio
from neuralimaging.errors import InputError

__all__ = [
    "RunDir",
    "atomic_write_bytes",
    "atomic_write_text",
    "config_hash",
    "capture_rng_state",
    "restore_rng_state",
]

_LATEST = "LATEST"


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file in the same folder, fsync, ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


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


def _save_tree(folder: Path, stem: str, tree: Any) -> None:
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _split_tensors("t", tree, tensors)
    save_file(tensors, str(folder / f"{stem}.safetensors"))
    (folder / f"{stem}.json").write_text(json.dumps(skeleton), encoding="utf-8")


def _load_tree(folder: Path, stem: str, device: str | torch.device = "cpu") -> Any:
    tensors = load_file(str(folder / f"{stem}.safetensors"), device=str(device))
    skeleton = json.loads((folder / f"{stem}.json").read_text(encoding="utf-8"))
    return _join_tensors(skeleton, tensors)


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
        data = yamlio.load(self.config_path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise InputError(f"{self.config_path}: expected a YAML mapping")
        return data

    @property
    def config_hash(self) -> str:
        """:func:`config_hash` of the stored config."""
        return config_hash(self.read_config())

    # -- metrics and summary ---------------------------------------------------------------------------
    def append_metrics(self, record: Mapping[str, Any]) -> None:
        """Add one line to ``metrics.jsonl`` (the file is rewritten atomically, so it is never torn)."""
        old = self.metrics_path.read_text(encoding="utf-8") if self.metrics_path.exists() else ""
        atomic_write_text(self.metrics_path, old + json.dumps(_plain(record)) + "\n")

    def read_metrics(self) -> list[dict[str, Any]]:
        """Every record of ``metrics.jsonl`` in order (empty when there is none)."""
        if not self.metrics_path.exists():
            return []
        lines = self.metrics_path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def truncate_metrics(self, key: str, last: float) -> None:
        """Drop metric records whose ``key`` exceeds ``last`` (used when resuming from a checkpoint that is
        older than the newest metrics)."""
        kept = [r for r in self.read_metrics() if r.get(key, last) <= last]
        atomic_write_text(self.metrics_path, "".join(json.dumps(r) + "\n" for r in kept))

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        """Write ``summary.json``."""
        atomic_write_text(self.summary_path, json.dumps(_plain(summary), indent=2) + "\n")

    def read_summary(self) -> dict[str, Any]:
        """The run's summary; raises :class:`InputError` when the run has not finished."""
        if not self.summary_path.is_file():
            raise InputError(f"{self.path}: no summary.json (run not finished?)")
        return json.loads(self.summary_path.read_text(encoding="utf-8"))

    # -- checkpoints -----------------------------------------------------------------------------------
    def _latest(self) -> Path | None:
        pointer = self.checkpoints / _LATEST
        if not pointer.is_file():
            return None
        folder = self.checkpoints / pointer.read_text(encoding="utf-8").strip()
        return folder if folder.is_dir() else None

    def has_checkpoint(self) -> bool:
        """Whether a complete checkpoint exists."""
        return self._latest() is not None

    def save_checkpoint(
        self,
        modules: Mapping[str, nn.Module],
        optimizers: Mapping[str, torch.optim.Optimizer] | None = None,
        state: Mapping[str, Any] | None = None,
    ) -> Path:
        """Save module weights (safetensors), optimizer states and a state dict atomically.

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
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=self.checkpoints))
        try:
            for key, module in modules.items():
                tensors = {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}
                save_file(tensors, str(tmp / f"{key}.safetensors"))
            for key, optimizer in (optimizers or {}).items():
                _save_tree(tmp, f"optim-{key}", optimizer.state_dict())
            _save_tree(tmp, "state", state)
            for file in tmp.iterdir():
                with open(file, "rb") as handle:
                    os.fsync(handle.fileno())
            final = self.checkpoints / name
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
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

    def load_checkpoint(
        self,
        modules: Mapping[str, nn.Module] | None = None,
        optimizers: Mapping[str, Any] | None = None,
        device: str | torch.device = "cpu",
    ) -> dict[str, Any]:
        """Load the newest checkpoint into ``modules`` and ``optimizers`` (in place); returns its state dict.

        Raises:
            InputError: when there is no checkpoint or it lacks a requested module.
        """
        folder = self._latest()
        if folder is None:
            raise InputError(f"{self.path}: no checkpoint to load")
        for key, module in (modules or {}).items():
            file = folder / f"{key}.safetensors"
            if not file.is_file():
                raise InputError(f"{folder}: no weights for {key!r} (expected {file.name})")
            module.load_state_dict(load_file(str(file), device=str(device)))
        for key, optimizer in (optimizers or {}).items():
            optimizer.load_state_dict(_load_tree(folder, f"optim-{key}", device))
        return _load_tree(folder, "state", "cpu")

    def load_weights(self, key: str, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
        """The raw tensors of one module from the newest checkpoint (for building a model elsewhere)."""
        folder = self._latest()
        if folder is None:
            raise InputError(f"{self.path}: no checkpoint to load")
        file = folder / f"{key}.safetensors"
        if not file.is_file():
            raise InputError(f"{folder}: no weights for {key!r}")
        return load_file(str(file), device=str(device))
