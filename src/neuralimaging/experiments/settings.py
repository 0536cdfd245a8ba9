"""Checks of training settings before anything runs: each value of its type and range, or a one-line error.

Both trainers share the names of the run cycle's settings (:mod:`~neuralimaging.experiments.loop`):
``epochs``, ``validate_every`` and ``checkpoint_every`` (epochs; ``checkpoint_every: null`` checkpoints after
every validation), ``precision`` and ``max_steps``.

:func:`check_nip_settings` and :func:`check_manipulation_settings` are called by the trainers' config
functions (``train_nip.resolve_config``, ``train_manipulation.resolve_config``), so a bad ``--set`` value, sweep
value or config key is refused before a run folder is written or data is loaded.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from neuralimaging.errors import InputError

__all__ = ["check_manipulation_settings", "check_nip_settings"]


def _number(config: Mapping[str, Any], key: str, *, above: float | None = None, low: float | None = None,
            high: float | None = None, optional: bool = False) -> None:
    """``config[key]`` is a finite number, ``> above``, ``>= low`` and ``<= high`` where given."""
    value = config.get(key)
    if value is None and optional:
        return
    bounds = [f"> {above:g}" if above is not None else "", f">= {low:g}" if low is not None else "",
              f"<= {high:g}" if high is not None else ""]
    wanted = "a number " + " and ".join(b for b in bounds if b) + (" or null" if optional else "")
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
            or (above is not None and value <= above) or (low is not None and value < low)
            or (high is not None and value > high)):
        raise InputError(f"config {key} must be {wanted.strip()}, got {value!r}")


def _integer(config: Mapping[str, Any], key: str, *, low: int, optional: bool = False) -> None:
    """``config[key]`` is an integer ``>= low`` (or None when ``optional``)."""
    value = config.get(key)
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        what = "a positive integer" if low == 1 else f"an integer >= {low}"
        raise InputError(f"config {key} must be {what}{' or null' if optional else ''}, got {value!r}")


def _boolean(config: Mapping[str, Any], key: str) -> None:
    if not isinstance(config.get(key), bool):
        raise InputError(f"config {key} must be true or false, got {config.get(key)!r}")


def _text(config: Mapping[str, Any], key: str, *, optional: bool = False) -> None:
    value = config.get(key)
    if not (isinstance(value, str) or (optional and value is None)):
        raise InputError(f"config {key} must be a string{' or null' if optional else ''}, got {value!r}")


def _cycle(config: Mapping[str, Any], *, epochs_low: int) -> None:
    """The run cycle's settings, the same in both trainers (:mod:`~neuralimaging.experiments.loop`)."""
    from neuralimaging.experiments.workflow import PRECISIONS

    _integer(config, "epochs", low=epochs_low)
    _integer(config, "validate_every", low=1)
    _integer(config, "checkpoint_every", low=1, optional=True)
    _integer(config, "max_steps", low=0, optional=True)
    if config.get("precision") not in PRECISIONS:
        raise InputError(f"config precision must be one of {', '.join(PRECISIONS)}, got {config.get('precision')!r}")


def check_nip_settings(config: Mapping[str, Any]) -> None:
    """Check a NIP pre-training config (``train_nip.DEFAULTS`` merged with a preset and overrides).

    Raises:
        InputError: naming the first setting that is not of its type or range, or NIP options the NIP does
            not take. The patch must also be a multiple of the NIP's pooling grid (16 for UNet), else most of
            every training patch would be padding.
    """
    from neuralimaging.acquisition import nip as nip_module

    _cycle(config, epochs_low=0)
    for key in ("batch", "stop_window"):
        _integer(config, key, low=1)
    _integer(config, "patch", low=2)
    _integer(config, "seed", low=0)
    _integer(config, "steps_per_epoch", low=1, optional=True)
    _integer(config, "val_images", low=1, optional=True)
    _number(config, "lr", above=0)
    _number(config, "lr_min", low=0)
    _number(config, "baseline_lr", above=0, optional=True)
    _number(config, "max_time_s", low=0, optional=True)
    _number(config, "stop_rel_change", low=0, optional=True)
    for key in ("lr_by_time", "init_color_matrix", "channels_last"):
        _boolean(config, key)
    _text(config, "init", optional=True)
    options = config.get("nip_options") or {}
    nip_module.check_options(str(config.get("nip")), options)
    grid = 16 if str(config.get("nip")).lower() == "unet" else 1
    if config["patch"] % grid:
        raise InputError(f"config patch must be a multiple of {grid} for {config['nip']} (its pooling grid), "
                         f"got {config['patch']}")


def check_manipulation_settings(config: Mapping[str, Any]) -> None:
    """Check an F / F+N config (``train_manipulation`` defaults merged with a preset and the user's values).

    Raises:
        InputError: naming the first setting that is not of its type or range, or a manipulation or
            channel specification that does not parse.
    """
    from neuralimaging.distribution import manipulations
    from neuralimaging.distribution.channel import Channel

    _cycle(config, epochs_low=1)
    for key in ("patch", "batch", "steps_per_epoch", "val_patches", "val_batch", "lr_decay_every"):
        _integer(config, key, low=1)
    _integer(config, "seed", low=0)
    _integer(config, "residual_width", low=0)
    _integer(config, "val_images", low=1, optional=True)
    _number(config, "lr", above=0)
    _number(config, "lr_decay", above=0, high=1)
    _number(config, "lambda_nip", low=0)
    for key in ("fan_bf16", "channels_last"):
        _boolean(config, key)
    train = config.get("train")
    if not (isinstance(train, str) or (isinstance(train, (list, tuple)) and all(isinstance(t, str) for t in train))):
        raise InputError(f"config train must be 'fan' (F) or 'fan,nip' (F+N), got {train!r}")
    for key in ("manipulations", "channel"):
        _text(config, key)
    if not isinstance(config.get("fan") or {}, Mapping):
        raise InputError(f"config fan must be a mapping of FAN options, got {config.get('fan')!r}")
    manipulations.parse(config["manipulations"])
    Channel.parse(config["channel"])
