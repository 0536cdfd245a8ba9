"""Manipulation detection after the sharing channel: the FAN alone (F) or jointly with the NIP (F+N).

The paper's main experiment (Korus & Memon, section 5.2). RAW patches are developed by a pre-trained NIP,
manipulated in every class (``native`` first), sent through the channel (1:2 down-sampling + JPEG q50 by
default) and classified by the FAN. In mode ``"fan"`` (F) only the FAN learns; in mode ``"fan,nip"`` (F+N)
the NIP learns too, regularized towards the standard ISP by ``lambda_nip`` x MSE (255 scale). Accuracy is
measured on fixed patches of the validation images, fidelity on the whole validation images
(:mod:`~neuralimaging.experiments.fidelity`); :func:`evaluate` measures both on the test split, under the
differentiable or the real codec. Choosing ``lambda_nip``, the presets and the precision settings are
explained in ``docs/measuring.md``.

    >>> summary = train_manipulation({"data": "data/", "nip_run": "runs/nip", "train": "fan,nip",
    ...                               "lambda_nip": 0.01, "preset": "quick"}, "runs/fn")   # doctest: +SKIP
    >>> evaluate("runs/fn", codec="libjpeg")                                              # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from neuralimaging.device import resolve_device
from neuralimaging.errors import InputError
from neuralimaging.experiments.fidelity import DEFINITION, fidelity_images, nip_fidelity
from neuralimaging.experiments.loop import TrainingRun, resolve_settings, training_dataset
from neuralimaging.experiments.rundir import RunDir, check_nip_source, record_nip_source
from neuralimaging.experiments.settings import check_manipulation_settings
from neuralimaging.experiments.workflow import (
    ResidualNIP,
    Workflow,
    build_workflow,
    resolve_precision,
    workflow_loss,
)

__all__ = [
    "PRESETS",
    "LATER_DEFAULTS",
    "MODES",
    "resolve_config",
    "train_manipulation",
    "train_step",
    "evaluate",
    "validate",
    "load_workflow",
    "load_joint_nip",
]

MODES = {"fan": ("fan",), "fan,nip": ("fan", "nip")}
"""Training modes (config ``train``) -> the modules trained: the paper's F (FAN only, NIP frozen) and F+N
(joint). Sweep files name them F and F+N (``sweep.MODES``)."""

_BASE: dict[str, Any] = {
    "data": None,  # prepared dataset folder (neuralimaging.data.dataset)
    "nip_run": None,  # run folder of a pre-trained NIP (neuralimaging.experiments.train_nip)
    "train": "fan,nip",
    "lambda_nip": 0.1,
    "manipulations": "native,sharpen,gaussian,jpeg,resample",
    "channel": "down:2,jpeg:50",
    "fan": {"constraint_scale": 1.0},
    "fan_bf16": False,  # the FAN under bfloat16 autocast even with precision "fp32" (the older, narrower switch)
    "residual_width": 0,  # F+N only: > 0 adds a zero-initialized UNet residual of this width to the NIP
    "patch": 64,  # RAW patch side (RGGB stack pixels); the NIP outputs 2x that
    "batch": 20,
    "epochs": 1000,
    "steps_per_epoch": 1,
    "lr": 1e-4,
    "lr_decay": 0.85,
    "lr_decay_every": 100,  # epochs
    "validate_every": 50,  # epochs
    "checkpoint_every": 50,  # epochs
    "val_patches": 600,  # RAW patches; the FAN sees val_patches x classes decisions
    "val_images": None,  # whole validation images for PSNR / SSIM (fidelity.nip_fidelity); None: all
    "val_batch": 50,
    "seed": 0,
}

PRESETS: dict[str, dict[str, Any]] = {
    # What each preset is and how it differs from the paper: docs/measuring.md, "Presets".
    "paper": {
        "patch": 128,
        "batch": 20,
        "epochs": 1000,
        "steps_per_epoch": 6,  # 120 training images / batch 20
        "lr": 1e-4,
        "lr_decay": 0.85,
        "lr_decay_every": 100,
        "validate_every": 50,
        "checkpoint_every": 50,
        "val_patches": 3000,
        "val_batch": 50,
    },
    "quick": {
        "patch": 32,
        "batch": 16,
        "epochs": 600,
        "steps_per_epoch": 1,
        "lr": 3e-4,
        "lr_decay": 0.85,
        "lr_decay_every": 100,
        "validate_every": 200,
        "checkpoint_every": 200,
        "val_patches": 600,
        "val_images": 4,
        "val_batch": 100,
        "lambda_nip": 0.002,  # for the quick INet with a UNet residual (docs/measuring.md)
        "residual_width": 16,
    },
    "demo": {
        "patch": 32,
        "batch": 16,
        "epochs": 2000,
        "steps_per_epoch": 1,
        "lr": 3e-4,
        "lr_decay": 0.85,
        "lr_decay_every": 200,
        "validate_every": 250,
        "checkpoint_every": 250,
        "val_patches": 400,
        "val_images": None,
        "val_batch": 100,
        "lambda_nip": 0.015,  # chosen on the validation images (benchmarks/demo_tradeoff.py)
        "residual_width": 0,
    },
}


LATER_DEFAULTS: dict[str, Any] = {
    # "auto" | "bf16" | "fp32": the NIP body and the FAN under bfloat16 autocast ("auto": where the device
    # computes it natively; see neuralimaging.experiments.workflow.PRECISIONS). Not in the paper.
    "precision": "auto",
    "channels_last": True,  # channels-last inputs for the FAN, and for a bfloat16 NIP (faster convolutions on CPU)
    "max_steps": None,  # stop (and checkpoint) after this many steps in total: simulates a kill; not hashed
}
"""Settings added after run folders were first written. A resolved config holds them only where they differ
from these defaults, so configs (and run folders) from before keep their hash and stay resumable."""


def _normalize_mode(mode: str | list[str] | tuple[str, ...]) -> str:
    parts = [p.strip().lower() for p in (mode.split(",") if isinstance(mode, str) else mode) if p.strip()]
    key = ",".join(sorted(set(parts)))
    if key not in MODES:
        raise InputError(f"train must be 'fan' (F) or 'fan,nip' (F+N), got {mode!r}")
    return key


def resolve_config(config: Mapping[str, Any], preset: str | None = None) -> dict[str, Any]:
    """Fill a user config with its preset (``preset``, else ``config["preset"]``, default ``"paper"``) and the
    defaults (:func:`~neuralimaging.experiments.loop.resolve_settings`: defaults < preset < the preset's
    ``by_nip`` entry < user values; ``fan`` options merge key by key).

    Keys of :data:`LATER_DEFAULTS` are kept only where they differ from their defaults (configs written before
    they existed keep their hash). Raises :class:`InputError` for unknown keys or bad values.
    """
    defaults = {**_BASE, **LATER_DEFAULTS}
    resolved = resolve_settings(config, defaults, PRESETS, preset=preset, nip=_nip_name, nested=frozenset({"fan"}))
    check_manipulation_settings(resolved)
    resolved["train"] = _normalize_mode(resolved["train"])
    for key in ("data", "nip_run"):
        if resolved[key] is None:
            raise InputError(f"config needs {key!r} (a folder)")
        resolved[key] = str(resolved[key])
    for key in ("patch", "batch", "epochs", "steps_per_epoch", "validate_every", "val_patches"):
        resolved[key] = int(resolved[key])
    if resolved["patch"] % 8:
        raise InputError(f"patch must be a multiple of 8 (JPEG blocks after the channel), got {resolved['patch']}")
    for key, default in LATER_DEFAULTS.items():
        if key in resolved and resolved[key] == default:
            del resolved[key]
    return resolved


def _nip_name(config: Mapping[str, Any]) -> str | None:
    """The NIP of ``config["nip_run"]`` (for a preset's ``by_nip`` entries), None when it cannot be read."""
    try:
        return str(RunDir(config["nip_run"]).read_config().get("nip"))
    except (InputError, OSError, TypeError):
        return None


def _setting(config: Mapping[str, Any], key: str) -> Any:
    """A config value, with the defaults of keys that older configs lack."""
    return config.get(key, LATER_DEFAULTS.get(key, _BASE.get(key)))


# ---------------------------------------------------------------------------------------------------------
# pieces


def _load_nip(nip_run: str, device: torch.device) -> nn.Module:
    from neuralimaging.experiments.train_nip import load_nip

    return load_nip(nip_run, device=device)


def _validation_set(config: Mapping[str, Any], samples: list) -> torch.Tensor:
    """The fixed RAW patches accuracy is measured on (their targets are not needed)."""
    from neuralimaging.data.patches import validation_patches

    return validation_patches(samples, config["val_patches"], config["patch"], config["seed"])[0]


def _lr(config: Mapping[str, Any], step: int) -> float:
    epoch = step // config["steps_per_epoch"]
    return float(config["lr"]) * float(config["lr_decay"]) ** (epoch // int(config["lr_decay_every"]))


@torch.no_grad()
def validate(
    workflow: Workflow,
    rggb: torch.Tensor | None,
    images: list | None,
    *,
    batch: int = 50,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """Accuracy and confusion matrix on fixed patches, and the NIP's fidelity on whole images.

    The NIP develops in float32 whatever the workflow's precision (its fidelity is that of the deployed NIP);
    the FAN runs as in training.

    Args:
        workflow: the model (evaluated in eval mode; its mode is restored).
        rggb: RAW patches ``(M, 4, h, w)`` to classify, or None to measure only the fidelity (``accuracy``,
            ``confusion`` and ``per_class`` are then None).
        images: prepared images (:class:`~neuralimaging.data.dataset.Sample`) for
            :func:`~neuralimaging.experiments.fidelity.nip_fidelity`, or None to skip it (the fidelity
            figures are then None).
        batch: RAW patches per forward pass.
        device: where to compute.

    Returns:
        ``accuracy`` (over ``M x C`` decisions), ``accuracy_se`` (binomial standard error), ``per_class``
        accuracies, ``confusion`` (counts, rows = true class, columns = predicted), ``classes``, ``n``
        (decisions), and ``psnr``, ``psnr_std``, ``ssim``, ``images`` from the fidelity measure.
    """
    device = resolve_device(device)
    n_classes = len(workflow.manipulations)
    confusion = torch.zeros(n_classes, n_classes, dtype=torch.long)
    was_training = workflow.training
    workflow.eval()
    try:
        for start in range(0, 0 if rggb is None else rggb.shape[0], batch):
            rgb = workflow.develop(rggb[start : start + batch].to(device), float32=True)
            logits, labels = workflow.classify(rgb)
            index = labels.cpu() * n_classes + logits.argmax(1).cpu()
            confusion += torch.bincount(index, minlength=n_classes**2).reshape(n_classes, n_classes)
        none = {"psnr": None, "psnr_std": None, "ssim": None, "images": 0}
        fidelity = nip_fidelity(workflow.nip, images, device=device) if images else none
    finally:
        workflow.train(was_training)
    n = int(confusion.sum())
    accuracy = float(confusion.trace()) / n if n else None
    return {
        "accuracy": accuracy,
        "accuracy_se": math.sqrt(accuracy * (1 - accuracy) / n) if n else None,
        "per_class": (confusion.diag().double() / confusion.sum(1).clamp_min(1)).tolist() if n else None,
        "confusion": confusion.tolist() if n else None,
        "classes": workflow.class_names,
        "n": n,
        "psnr": fidelity["psnr"],
        "psnr_std": fidelity["psnr_std"],
        "ssim": fidelity["ssim"],
        "images": fidelity["images"],
    }


def _build(config: Mapping[str, Any], device: torch.device, channel: str | nn.Module | None = None) -> Workflow:
    nip = _load_nip(config["nip_run"], device)
    torch.manual_seed(int(config["seed"]))  # the FAN's initialization: the same in F and F+N
    workflow = build_workflow(
        nip,
        manipulations=config["manipulations"],
        channel=config["channel"] if channel is None else channel,
        fan_options=dict(config.get("fan") or {}),
        precision=str(_setting(config, "precision")),
        fan_bf16=bool(_setting(config, "fan_bf16")),
        channels_last=bool(_setting(config, "channels_last")),
        device=device,
    )
    if int(config.get("residual_width") or 0) > 0 and "nip" in MODES[config["train"]]:
        # Same output as the plain NIP at the start; F mode keeps the plain NIP (same output, less work).
        torch.manual_seed(int(config["seed"]) + 1)
        workflow.nip = ResidualNIP(nip, int(config["residual_width"]))
    return workflow.to(device)


def _trainable(workflow: Workflow, mode: str) -> list[nn.Parameter]:
    joint = "nip" in MODES[mode]
    for p in workflow.nip.parameters():
        p.requires_grad_(joint)
    params = list(workflow.fan.parameters())
    if joint:
        params += [p for p in workflow.nip.parameters()]
    return params


def _adam(params: list[nn.Parameter], lr: float) -> torch.optim.Adam:
    """Adam with the fused kernel where available (faster than the default loop on CPU)."""
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=lr, foreach=True)


def _modules_to_save(workflow: Workflow, mode: str) -> dict[str, nn.Module]:
    modules: dict[str, nn.Module] = {"fan": workflow.fan}
    if "nip" in MODES[mode]:
        modules["nip"] = workflow.nip
    return modules


# ---------------------------------------------------------------------------------------------------------
# training


def train_step(
    workflow: Workflow,
    optimizer: torch.optim.Optimizer,
    rggb: torch.Tensor,
    target: torch.Tensor,
    *,
    mode: str,
    lambda_nip: float,
) -> dict[str, float]:
    """One optimization step of the workflow on a batch.

    In mode ``"fan"`` the NIP runs without gradients (it is frozen) and the loss is the cross-entropy; in
    ``"fan,nip"`` the loss is :func:`~neuralimaging.experiments.workflow.workflow_loss` and gradients reach the
    NIP through the channel. The workflow's precision and layout settings apply (``nip_bf16``, ``fan_bf16``,
    ``channels_last``); the NIP output and both loss terms are float32.

    Args:
        workflow: the model; ``optimizer`` holds the parameters being trained.
        rggb: RAW patches ``(N, 4, h, w)``; target: standard-ISP renderings ``(N, 3, 2h, 2w)``.
        mode: ``"fan"`` or ``"fan,nip"``.
        lambda_nip: weight of the NIP fidelity term (F+N only).

    Returns:
        ``loss``, ``ce`` and (F+N) ``nip_mse`` of the batch before the update.
    """
    mode = _normalize_mode(mode)
    optimizer.zero_grad(set_to_none=True)
    if "nip" in MODES[mode]:
        loss, parts = workflow_loss(workflow(rggb), target, lambda_nip)
    else:
        with torch.no_grad():
            rgb = workflow.develop(rggb)
        logits, labels = workflow.classify(rgb)
        loss = F.cross_entropy(logits, labels)
        parts = {"loss": float(loss.detach()), "ce": float(loss.detach())}
    loss.backward()
    optimizer.step()
    return parts


def train_manipulation(
    config: Mapping[str, Any],
    out_dir: str | Path,
    *,
    resume: bool = False,
    device: str | torch.device = "auto",
    progress: bool = True,
    max_steps: int | None = None,
    allow_unfinished_nip: bool = False,
) -> dict[str, Any]:
    """Train the FAN (mode ``"fan"``) or the FAN and the NIP (``"fan,nip"``) on manipulation detection.

    The run cycle (resume, checkpoints, metrics, progress, ``max_steps``, summary) is
    :class:`~neuralimaging.experiments.loop.TrainingRun`'s.

    Args:
        config: settings (see ``PRESETS`` and the module's ``_BASE`` defaults); needs ``data`` (a prepared
            dataset) and ``nip_run`` (a pre-trained NIP run). ``preset`` picks ``"quick"`` or ``"paper"``.
        out_dir: the run directory (``config.yaml``, ``metrics.jsonl``, ``summary.json``, ``checkpoints/``).
        resume: continue from the newest checkpoint in ``out_dir`` (a finished run returns its summary).
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        progress: show a progress bar (stderr) with loss, accuracy and PSNR.
        max_steps: the config's ``max_steps`` (stop, after a checkpoint, once this many steps are done in
            total, without a summary, as if the run had been killed; ``resume=True`` continues it).
        allow_unfinished_nip: start from a NIP run that has not finished (else an error); ``nip_source.json``
            records the NIP checkpoint either way.

    Returns:
        The summary (also written to ``summary.json``): final validation ``accuracy``, ``accuracy_se``,
        ``confusion``, ``per_class``, ``psnr``/``ssim`` of the NIP output and the same before training
        (``psnr_start``/``ssim_start``), ``psnr_paid`` (start - final), ``steps``, ``epochs``, ``stopped``,
        ``wall_time_s``, ``cpu_time_s``, ``threads``, ``config_hash``. A run stopped at ``max_steps`` returns
        only ``mode`` and these last fields.
    """
    from neuralimaging.data.patches import sample_patches

    config = resolve_config({**config, "max_steps": max_steps} if max_steps is not None else config)
    device = resolve_device(device)
    record_nip_source(RunDir(out_dir), config["nip_run"], force=allow_unfinished_nip)
    cycle = TrainingRun(out_dir, config, resume=resume)

    dataset = training_dataset(config["data"])
    val_rggb = _validation_set(config, dataset.val)
    val_images = fidelity_images(dataset.val, config.get("val_images"))
    workflow = _build(config, device)
    mode = config["train"]
    params = _trainable(workflow, mode)
    optimizer = _adam(params, float(config["lr"]))
    rng = np.random.default_rng(int(config["seed"]))
    # The NIP stays in eval mode throughout (DNet's batch norm keeps its pre-trained statistics); the FAN has
    # no mode-dependent layers.
    workflow.eval()

    state = cycle.begin(_modules_to_save(workflow, mode), {"adam": optimizer}, {"patches": rng},
                        steps_per_epoch=config["steps_per_epoch"], device=device)
    start_metrics: dict[str, Any] | None = (state or {}).get("start")
    running: dict[str, float] = dict((state or {}).get("running") or {})
    if cycle.summary is not None:
        return cycle.summary
    if start_metrics is None:
        # Before training: the NIP's fidelity (the FAN is untrained, its accuracy would be noise).
        start_metrics = validate(workflow, None, val_images, batch=config["val_batch"], device=device)
        cycle.record(_lr(config, 0), start_metrics)
    joint = "nip" in MODES[mode]
    lambda_nip = float(config["lambda_nip"])
    recorded = cycle.run.read_metrics()
    last = recorded[-1] if recorded else start_metrics

    def step(done: int) -> dict[str, float]:
        nonlocal running
        for group in optimizer.param_groups:
            group["lr"] = _lr(config, done)
        rggb, target = sample_patches(dataset.train, config["batch"], config["patch"], rng)
        parts = train_step(workflow, optimizer, rggb.to(device), target.to(device), mode=mode, lambda_nip=lambda_nip)
        running = {k: 0.9 * running.get(k, v) + 0.1 * v for k, v in parts.items()}
        return running

    def end_of_epoch(epoch: int) -> None:
        nonlocal last
        if cycle.validation_due(epoch):
            # F leaves the NIP as it was: its fidelity is the starting one
            last = validate(workflow, val_rggb, val_images if joint else None, batch=config["val_batch"],
                            device=device)
            if not joint:
                last.update({k: start_metrics[k] for k in ("psnr", "psnr_std", "ssim", "images")})
            cycle.record(_lr(config, cycle.step), {**last, **{f"train_{k}": v for k, v in running.items()}})
        accuracy = "-" if last["accuracy"] is None else f"{last['accuracy']:.3f}"
        cycle.bar.set_postfix(loss=f"{running['loss']:.3f}", acc=accuracy, psnr=f"{last['psnr']:.1f}")
        return None

    def summarize(stopped: str) -> dict[str, Any]:
        if stopped == "max_steps":
            return {"mode": mode}
        history = [m["accuracy"] for m in cycle.run.read_metrics() if m.get("accuracy") is not None]
        tail = history[-5:]
        return {
            "mode": mode,
            "nip_run": config["nip_run"],
            "lambda_nip": lambda_nip,
            "accuracy": last["accuracy"],
            "accuracy_se": last["accuracy_se"],
            "accuracy_last5_mean": float(np.mean(tail)) if tail else last["accuracy"],
            "accuracy_last5_std": float(np.std(tail)) if len(tail) > 1 else 0.0,
            "per_class": last["per_class"],
            "confusion": last["confusion"],
            "classes": last["classes"],
            "n_validation": last["n"],
            "psnr": last["psnr"],
            "ssim": last["ssim"],
            "psnr_start": start_metrics["psnr"],
            "ssim_start": start_metrics["ssim"],
            "psnr_paid": start_metrics["psnr"] - last["psnr"],
            "fidelity": f"{DEFINITION}; validation split, {last['images']} images",
            "split": "val",
            "precision": resolve_precision(_setting(config, "precision"), device),
        }

    return cycle.loop(step, end_of_epoch=end_of_epoch, summarize=summarize,
                      extras=lambda: {"start": start_metrics, "running": running},
                      desc=f"train {mode.replace(',', '+')}", progress=progress)


# ---------------------------------------------------------------------------------------------------------
# evaluation


def load_workflow(
    run_dir: str | Path, *, channel: str | nn.Module | None = None, device: str | torch.device = "cpu"
) -> tuple[Workflow, dict[str, Any]]:
    """Rebuild a trained workflow from its run directory (newest checkpoint), optionally with another channel.

    Returns:
        The workflow (eval mode, on ``device``) and the run's config.
    """
    run = RunDir(run_dir)
    check_nip_source(run_dir)
    config = run.read_config()
    device = resolve_device(device)
    workflow = _build(config, device, channel)
    run.load_checkpoint(_modules_to_save(workflow, config["train"]), device=device)
    return workflow.eval(), config


def load_joint_nip(run_dir: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """The NIP optimized by an F+N run (its pre-trained NIP, plus the UNet residual when the run used one),
    with the run's newest weights, in eval mode.

    Raises:
        InputError: when the run is an F run (its NIP was not optimized) or has no checkpoint.
    """
    run = RunDir(run_dir)
    config = run.read_config()
    if "nip" not in MODES[_normalize_mode(config.get("train", "fan"))]:
        raise InputError(f"{run.path}: not an F+N run (train is {config.get('train')!r}); its NIP was not optimized")
    device = resolve_device(device)
    nip = _load_nip(config["nip_run"], device)
    if int(config.get("residual_width") or 0) > 0:
        nip = ResidualNIP(nip, int(config["residual_width"])).to(device)
    nip.load_state_dict(run.load_weights("nip", device=device))
    return nip.eval()


def _channel_twin(spec: str, codec: str, quality: int | None) -> nn.Module:
    from neuralimaging.distribution.channel import Channel

    overrides: dict[str, Any] = {"codec": codec}
    if quality is not None:
        overrides["quality"] = int(quality)
    return Channel.parse(spec, **overrides)


def evaluate(
    run_dir: str | Path,
    codec: str = "libjpeg",
    quality: int | None = None,
    *,
    device: str | torch.device = "cpu",
    split: str = "test",
    patches: int | None = None,
    images: int | None = None,
    fidelity: bool = True,
) -> dict[str, Any]:
    """Accuracy and fidelity of a trained NIP + FAN pair on a split, under the trained or another channel.

    The channel keeps the run's down-sampling and replaces the codec (``"libjpeg"``: Pillow's libjpeg, the
    real thing; ``"differentiable"``: the training codec) and, when given, the JPEG quality. Patches are drawn
    from the split as validation patches are (fixed by the run's seed); fidelity is measured on the split's
    whole images (:mod:`~neuralimaging.experiments.fidelity`).

    Args:
        run_dir: a finished (or checkpointed) run of :func:`train_manipulation`.
        codec: ``"libjpeg"`` or ``"differentiable"``.
        quality: JPEG quality in [1, 100]; ``None`` keeps the trained one.
        device: where to compute.
        split: ``"test"`` (default: held out from all training and tuning), ``"val"`` or ``"train"``.
        patches: number of RAW patches to classify (default: the run's ``val_patches``).
        images: at most this many whole images for the fidelity, in turn per scene (default: all).
        fidelity: measure the fidelity (it does not depend on the codec; skip it when measured already).

    Returns:
        :func:`validate`'s figures plus ``split``, ``fidelity`` (the measure in words), ``codec``, ``quality``
        and ``channel`` (the twin's description).
    """
    if codec not in ("libjpeg", "differentiable"):
        raise InputError(f"codec must be 'libjpeg' or 'differentiable', got {codec!r}")
    if quality is not None and not 1 <= int(quality) <= 100:
        raise InputError(f"quality must be in [1, 100], got {quality}")
    if patches is not None and int(patches) < 1:
        raise InputError(f"patches must be a positive integer, got {patches}")
    run = RunDir(run_dir)
    check_nip_source(run_dir)
    config = run.read_config()
    channel = _channel_twin(config["channel"], codec, quality)
    workflow, config = load_workflow(run_dir, channel=channel, device=device)
    if patches is not None:
        config = {**config, "val_patches": int(patches)}
    samples = training_dataset(config["data"]).split(split)
    measured = fidelity_images(samples, images) if fidelity else None
    result = validate(workflow, _validation_set(config, samples), measured,
                      batch=int(config.get("val_batch", 50)), device=device)
    result.update(
        {
            "run": str(run.path),
            "mode": config["train"],
            "split": split,
            "fidelity": f"{DEFINITION}; {split} split, {result['images']} images" if fidelity else None,
            "codec": codec,
            "quality": getattr(channel, "quality", quality),
            "channel": getattr(channel, "spec", repr(channel)),
        }
    )
    return result
