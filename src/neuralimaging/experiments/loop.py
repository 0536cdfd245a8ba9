"""The run cycle every trainer shares: settings, resume, checkpoints, metrics, progress, max_steps, summary.

A trainer (:mod:`~neuralimaging.experiments.train_nip`, :mod:`~neuralimaging.experiments.train_manipulation`)
supplies its settings (defaults, presets), its step, what it does at the end of an epoch (its validation, its
own stopping rule) and its summary fields; :class:`TrainingRun` does the rest, the same way for both:

- **settings** (:func:`resolve_settings`): defaults, then the preset, then the preset's entry for the chosen
  NIP (``by_nip``), then the user's values; unknown keys are refused; older key names are translated first
  (:func:`translate_config`, with a logged warning);
- **resume**: a run folder holding a checkpoint is continued only with ``resume=True`` and only with the
  same settings: the :func:`run_hash` of the stored config (translated to the current names) must equal the
  one given; run-control keys (:data:`RUN_CONTROL`, such as ``max_steps``) are left out;
- **checkpoints** hold the modules, optimizers and RNG states, ``step``, ``epoch``, ``wall_time_s``,
  ``cpu_time_s`` (both summed over every call of the run), ``stopped``, ``config_hash`` and the trainer's
  extras; one is written every ``checkpoint_every`` epochs (``None``: after every validation) and when the
  call ends;
- **metrics**: one line per validation in ``metrics.jsonl`` with ``step``, ``epoch``, ``lr``,
  ``wall_time_s``, ``cpu_time_s`` and the trainer's figures; a tqdm bar (stderr) and a
  :class:`~neuralimaging.experiments.live.LiveLog` show the progress;
- **stops**: after ``epochs`` epochs (``stopped: "max_epochs"``), when the trainer's end-of-epoch hook names
  a reason (e.g. ``"converged"``), or after ``max_steps`` steps in total (``"max_steps"``: checkpointed, no
  ``summary.json``, resumable: a resumed run ends where an uninterrupted one ends);
- **summary**: the trainer's fields plus ``steps``, ``epochs``, ``stopped``, ``wall_time_s``, ``cpu_time_s``,
  ``threads`` and ``config_hash``, written to ``summary.json``; resuming a finished run returns it.

Example::

    >>> run = TrainingRun("runs/x", config, resume=False)                                  # doctest: +SKIP
    >>> state = run.begin({"net": net}, {"net": opt}, {"patches": rng}, steps_per_epoch=1)  # doctest: +SKIP
    >>> summary = run.loop(step, end_of_epoch=validate_if_due, summarize=figures)          # doctest: +SKIP
"""

from __future__ import annotations

import copy
import logging
import os
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn as nn

from neuralimaging.device import keep_freed_memory
from neuralimaging.errors import InputError
from neuralimaging.experiments.live import LiveLog
from neuralimaging.experiments.rundir import RunDir, capture_rng_state, config_hash, restore_rng_state

__all__ = [
    "OLD_KEYS",
    "RUN_CONTROL",
    "TrainingRun",
    "resolve_settings",
    "run_hash",
    "training_dataset",
    "translate_config",
]

logger = logging.getLogger(__name__)

RUN_CONTROL = frozenset({"max_steps"})
"""Config keys that control one call of a run, not its result: left out of :func:`run_hash`."""

OLD_KEYS: dict[str, str] = {"max_epochs": "epochs", "val_every": "validate_every", "amp": "precision"}
"""Earlier names of settings (``train_nip`` configs) -> their names now."""

_AMP_TO_PRECISION = {None: "fp32", "bf16": "bf16", "auto": "auto"}


def translate_config(config: Mapping[str, Any], base: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``config`` with earlier setting names replaced by the current ones (a warning is logged once per call).

    Renames :data:`OLD_KEYS` (``max_epochs`` -> ``epochs``, ``val_every`` -> ``validate_every``, ``amp`` ->
    ``precision``: ``null`` -> ``"fp32"``, ``"bf16"`` and ``"auto"`` kept). A config written with the earlier
    names counted ``checkpoint_every`` in validations; it now counts epochs: 1 becomes ``None`` (after every
    validation), ``k`` becomes ``k * validate_every`` (``validate_every`` from ``config``, else from ``base``).

    Raises:
        InputError: when a config gives both a name and its earlier name.
    """
    old = [key for key in OLD_KEYS if key in config]
    if not old:
        return dict(config)
    both = [key for key in old if OLD_KEYS[key] in config]
    if both:
        raise InputError(f"config gives both {both[0]!r} and {OLD_KEYS[both[0]]!r}; give only {OLD_KEYS[both[0]]!r}")
    out: dict[str, Any] = {}
    for key, value in config.items():
        if key == "amp":
            value = _AMP_TO_PRECISION.get(value, value)
        out[OLD_KEYS.get(key, key)] = value
    renamed = [f"{key} -> {OLD_KEYS[key]}" for key in old]
    every = out.get("checkpoint_every")
    if isinstance(every, int) and not isinstance(every, bool):
        validate_every = out.get("validate_every", (base or {}).get("validate_every"))
        out["checkpoint_every"] = None if every == 1 else every * int(validate_every)
        renamed.append(f"checkpoint_every {every} (validations) -> {out['checkpoint_every']} (epochs; null: at "
                       "every validation)")
    logger.warning("config uses earlier setting names, read as: %s", "; ".join(renamed))
    return out


def run_hash(config: Mapping[str, Any]) -> str:
    """:func:`~neuralimaging.experiments.rundir.config_hash` of ``config`` without :data:`RUN_CONTROL` keys."""
    return config_hash({k: v for k, v in config.items() if k not in RUN_CONTROL})


def _merge(base: dict[str, Any], override: Mapping[str, Any], nested: frozenset[str]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if key in nested and isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **copy.deepcopy(dict(value))}
        else:
            out[key] = copy.deepcopy(value)
    return out


def resolve_settings(
    overrides: Mapping[str, Any] | None,
    defaults: Mapping[str, Any],
    presets: Mapping[str, Mapping[str, Any]],
    *,
    preset: str | None = None,
    nip: Callable[[dict[str, Any]], str | None] | None = None,
    keep_none: bool = True,
    nested: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """Layer a trainer's settings: ``defaults`` < preset < the preset's ``by_nip`` entry < ``overrides``.

    Args:
        overrides: the user's settings (earlier names are translated, :func:`translate_config`).
        defaults: every known key with its default; other keys are refused.
        presets: preset name -> settings; a preset's ``by_nip`` maps NIP names to further settings.
        preset: the preset (default: ``overrides["preset"]``, else ``"paper"``).
        nip: the NIP's name from the config layered so far (user values included), for ``by_nip``.
        keep_none: ``False``: ``None`` values among ``overrides`` are ignored (command-line options not given).
        nested: keys whose mapping values are merged key by key instead of replaced.

    Returns:
        The settings, ``preset`` included (not yet checked for types and ranges: the trainer does that).

    Raises:
        InputError: for an unknown preset or unknown keys.
    """
    name = preset or (overrides or {}).get("preset") or "paper"
    if name not in presets:
        raise InputError(f"unknown preset {name!r}; expected one of: {', '.join(presets)}")
    base = copy.deepcopy(dict(presets[name]))
    by_nip = base.pop("by_nip", {}) or {}
    config = _merge(dict(defaults), base, nested)
    user = translate_config(overrides or {}, base=config)
    if not keep_none:
        user = {k: v for k, v in user.items() if v is not None}
    unknown = sorted(set(user) - set(defaults) - {"preset"})
    if unknown:
        raise InputError(f"unknown config keys: {', '.join(unknown)}; expected some of: {', '.join(defaults)}")
    if by_nip and nip is not None:
        chosen = nip(_merge(config, user, nested))
        config = _merge(config, by_nip.get(str(chosen).lower(), {}), nested)
    config = _merge(config, user, nested)
    config["preset"] = name
    return config


def training_dataset(data_dir: str | os.PathLike[str]) -> Any:
    """The prepared dataset a trainer trains and validates on (:class:`~neuralimaging.data.dataset.Dataset`).

    Raises:
        InputError: the dataset lacks training or validation images (one line naming the folder).
    """
    from neuralimaging.data.dataset import Dataset

    dataset = Dataset.load(data_dir)
    if not dataset.train or not dataset.val:
        raise InputError(f"{data_dir}: the dataset needs training and validation images")
    return dataset


class TrainingRun:
    """One call of a training run: the run cycle around a :class:`~neuralimaging.experiments.rundir.RunDir`.

    Construction keeps freed tensor memory for reuse (:func:`~neuralimaging.device.keep_freed_memory`),
    applies the resume rule and writes ``config.yaml``; :meth:`begin` restores the newest
    checkpoint (or starts ``metrics.jsonl`` afresh); :meth:`loop` trains, validates through the trainer's
    hooks, checkpoints and writes the summary.

    Args:
        out_dir: the run folder.
        config: the resolved settings; uses ``epochs``, ``validate_every``, ``checkpoint_every`` (epochs, or
            ``None``: after every validation) and ``max_steps``.
        resume: continue from the newest checkpoint (else a folder holding a run is refused).

    Raises:
        InputError: when the folder holds a run and ``resume`` is false, or the stored config differs.
    """

    def __init__(self, out_dir: str | os.PathLike[str], config: Mapping[str, Any], *, resume: bool) -> None:
        keep_freed_memory()  # no page faults per training step
        self.run = RunDir(out_dir)
        self.config = dict(config)
        self.hash = run_hash(self.config)
        self._wall0, self._cpu0 = time.perf_counter(), time.process_time()
        self.resuming = bool(resume) and self.run.has_checkpoint()
        if self.resuming:
            stored = translate_config(self.run.read_config())
            if run_hash(stored) != self.hash:
                keys = sorted(k for k in (set(stored) | set(self.config)) - RUN_CONTROL
                              if stored.get(k) != self.config.get(k))
                raise InputError(f"{self.run.path}: cannot resume with a different config (changed: "
                                 f"{', '.join(keys) or 'value types'}; hash {run_hash(stored)} != {self.hash})")
        elif self.run.has_checkpoint() or self.run.summary_path.exists():
            raise InputError(f"{self.run.path} already holds a run; pass resume=True (--resume) or choose another "
                             "folder")
        self.run.write_config(self.config)
        self.step = self.epoch = 0
        self.stopped: str | None = None
        self.summary: dict[str, Any] | None = None
        self.bar: Any = None
        self.live: LiveLog | None = None
        self._wall_before = self._cpu_before = 0.0
        self._records = 0
        self._parts: tuple[Mapping[str, nn.Module], Mapping[str, torch.optim.Optimizer], Mapping[str, Any]] = ({}, {}, {})
        self.steps_per_epoch = 1

    # -- time ------------------------------------------------------------------------------------------
    def wall_time_s(self) -> float:
        """Wall-clock seconds of the run, every call included."""
        return self._wall_before + time.perf_counter() - self._wall0

    def cpu_time_s(self) -> float:
        """CPU seconds of this process (all threads) over every call of the run: a load-independent cost."""
        return self._cpu_before + time.process_time() - self._cpu0

    @property
    def total_steps(self) -> int:
        return int(self.config["epochs"]) * self.steps_per_epoch

    def _live_log(self) -> LiveLog:
        """The run's live log (``progress.json`` and TensorBoard), opened on first use."""
        if self.live is None:
            self.live = LiveLog(self.run.path, self.total_steps)
        return self.live

    # -- start -----------------------------------------------------------------------------------------
    def begin(
        self,
        modules: Mapping[str, nn.Module],
        optimizers: Mapping[str, torch.optim.Optimizer],
        generators: Mapping[str, Any],
        *,
        steps_per_epoch: int,
        device: str | torch.device = "cpu",
    ) -> dict[str, Any] | None:
        """Restore the newest checkpoint into ``modules``, ``optimizers`` and the RNGs (torch's and
        ``generators``), or start ``metrics.jsonl`` afresh.

        Returns:
            The checkpoint's state (the trainer reads its extras from it), or None for a fresh run. When the
            run had finished and its summary exists, :attr:`summary` holds that summary.
        """
        self._parts = (modules, optimizers, generators)
        self.steps_per_epoch = int(steps_per_epoch)
        if not self.resuming:
            if self.run.metrics_path.exists():  # a run killed before its first checkpoint starts over
                self.run.metrics_path.unlink()
            return None
        state = self.run.load_checkpoint(modules, optimizers, device=device)
        restore_rng_state(state, generators)
        self.step = int(state["step"])
        self.epoch = int(state.get("epoch", self.step // self.steps_per_epoch))
        self._wall_before = float(state.get("wall_time_s", state.get("elapsed_s", 0.0)))
        self._cpu_before = float(state.get("cpu_time_s", 0.0))
        stopped = state.get("stopped")
        self.stopped = None if stopped == "max_steps" else stopped
        if self.stopped is None and self.step >= self.total_steps:
            self.stopped = "max_epochs"
        self.run.truncate_metrics("step", self.step)
        if self.stopped is not None and self.run.summary_path.is_file():
            self.summary = self.run.read_summary()
        return state

    # -- during the run --------------------------------------------------------------------------------
    def record(self, lr: float, figures: Mapping[str, Any]) -> dict[str, Any]:
        """Append a metrics line (``step``, ``epoch``, ``lr``, ``wall_time_s``, ``cpu_time_s``, then
        ``figures``) and report it as a validation to the live log; returns the line."""
        line = {"step": self.step, "epoch": self.epoch, "lr": float(lr), "wall_time_s": round(self.wall_time_s(), 3),
                "cpu_time_s": round(self.cpu_time_s(), 3), **figures}
        self.run.append_metrics(line)
        self._records += 1
        self._live_log().validation(self.step, line)
        return line

    def validation_due(self, epoch: int) -> bool:
        """Whether the schedule validates after ``epoch`` (every ``validate_every`` epochs and at the last)."""
        return epoch % int(self.config["validate_every"]) == 0 or epoch == int(self.config["epochs"])

    def checkpoint(self, extras: Mapping[str, Any] | None = None) -> None:
        """Save modules, optimizers, RNG states, the cycle's counters and times, and the trainer's ``extras``."""
        modules, optimizers, generators = self._parts
        state = {"step": self.step, "epoch": self.epoch, "wall_time_s": self.wall_time_s(),
                 "cpu_time_s": self.cpu_time_s(), "stopped": self.stopped, "config_hash": self.hash,
                 **dict(extras or {}), **capture_rng_state(generators)}
        self.run.save_checkpoint(modules, optimizers, state)

    def loop(
        self,
        step: Callable[[int], Mapping[str, float]],
        *,
        end_of_epoch: Callable[[int], str | None],
        summarize: Callable[[str], Mapping[str, Any]],
        extras: Callable[[], Mapping[str, Any]] = dict,
        start_of_epoch: Callable[[int], None] | None = None,
        desc: str = "train",
        progress: bool = True,
    ) -> dict[str, Any]:
        """Train until the run stops; checkpoint; write and return the summary.

        Args:
            step: one training step, given the number of steps done; returns running values for the live log.
            end_of_epoch: called with the number of epochs done; validates when due (:meth:`validation_due`,
                :meth:`record`) and returns a reason to stop, or None.
            summarize: the trainer's summary fields, given the reason the run stopped.
            extras: the trainer's state to checkpoint (JSON-able values and tensors).
            start_of_epoch: called before the first step of each epoch (e.g. to set the learning rate).
            desc: progress bar label.
            progress: show the progress bar.

        Returns:
            The summary; written to ``summary.json`` unless the run stopped at ``max_steps``.
        """
        if self.summary is not None:
            return self.summary
        from tqdm import tqdm

        total = self.total_steps
        max_steps = self.config.get("max_steps")
        every = self.config.get("checkpoint_every")
        finished = self.stopped is not None  # restored from the checkpoint of a finished run
        self.bar = tqdm(total=total, initial=self.step, desc=desc, unit="step", disable=not progress or finished,
                        file=sys.stderr, dynamic_ncols=True)
        live = self._live_log()
        try:
            while self.stopped is None:
                if self.step >= total:
                    self.stopped = "max_epochs"
                    break
                if max_steps is not None and self.step >= int(max_steps):
                    self.stopped = "max_steps"
                    break
                if start_of_epoch is not None and self.step % self.steps_per_epoch == 0:
                    start_of_epoch(self.epoch)
                values = step(self.step)
                self.step += 1
                self.bar.update(1)
                live.step(self.step, **values)
                if self.step % self.steps_per_epoch:
                    continue
                self.epoch += 1
                records = self._records
                self.stopped = end_of_epoch(self.epoch)
                if self.stopped is not None or self.step >= total:
                    continue  # the checkpoint below is written once the loop ends
                if (every is None and self._records > records) or (every is not None and self.epoch % int(every) == 0):
                    self.checkpoint(extras())
        finally:
            self.bar.close()
            live.close()
        if not finished:
            self.checkpoint(extras())
        summary = {"steps": self.step, "epochs": self.epoch, "stopped": self.stopped, **summarize(self.stopped),
                   "wall_time_s": round(self.wall_time_s(), 3), "cpu_time_s": round(self.cpu_time_s(), 3),
                   "threads": torch.get_num_threads(), "config_hash": self.hash}
        if self.stopped != "max_steps":
            self.run.write_summary(summary)
        return summary
