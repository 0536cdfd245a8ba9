"""NIP pre-training: teach a neural imaging pipeline to reproduce the ``python`` ISP (paper section 3.2).

Loss: L2 on the [0, 255] scale (mean squared error of ``255 * rgb``) against the python-ISP target, Adam
(paper: lr 1e-4), batches of random patches (paper: 20 patches of 64x64 RAW -> 128x128 RGB) drawn with the
paper's variance rule, validation PSNR/SSIM on the whole validation images
(:mod:`~neuralimaging.experiments.fidelity`; the paper used fixed 512x512 patches), and the paper's stopping
rule: the relative change of the mean validation loss over the last 5 validations below 1e-4 (DNet 1e-5),
with an epoch cap (paper: 50,000).

Everything lands in a run directory (:class:`~neuralimaging.experiments.rundir.RunDir`): ``config.yaml``,
``metrics.jsonl`` (one line per validation), ``summary.json``, safetensors checkpoints (weights, optimizer
and RNG states), ``figures/training.png`` and, when TensorBoard is installed, event logs in ``tensorboard/``
(live progress: :mod:`~neuralimaging.experiments.live`).
A killed run resumed with ``resume=True`` continues from its last checkpoint and reaches the same result.

Example::

    >>> from neuralimaging.experiments.train_nip import train_nip, load_nip
    >>> summary = train_nip({"data": "data/d90", "nip": "inet", "preset": "quick"}, "runs/inet")  # doctest: +SKIP
    >>> model = load_nip("runs/inet")                                                         # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from neuralimaging.acquisition import nip as nip_module
from neuralimaging.device import resolve_device
from neuralimaging.errors import InputError
from neuralimaging.experiments.fidelity import DEFINITION, fidelity_images, nip_fidelity
from neuralimaging.experiments.loop import TrainingRun, resolve_settings, training_dataset
from neuralimaging.experiments.rundir import RunDir
from neuralimaging.experiments.settings import check_nip_settings
from neuralimaging.experiments.workflow import resolve_precision

__all__ = [
    "PRESETS", "DEFAULTS", "resolve_config", "train_nip", "load_nip", "validate", "nip_loss", "stop_rule",
    "export_nip",
]

#: Settings every run has; a preset, its entry for the chosen NIP and then the user's values are merged over
#: them (:func:`resolve_config`). Earlier names (``max_epochs``, ``val_every``, ``amp``) are still read
#: (:func:`~neuralimaging.experiments.loop.translate_config`).
DEFAULTS: dict[str, Any] = {
    "nip": "inet",
    "nip_options": {},
    "data": None,
    "preset": "paper",
    "init": None,  # start from these weights: "pretrained:<name>" (acquisition.pretrained) or a .safetensors file
    "seed": 0,
    "batch": 20,
    "patch": 64,  # RAW (RGGB-stack) patch side; the RGB target is twice as large
    "lr": 1e-4,
    "lr_schedule": "constant",  # or "cosine": decays from lr to lr_min over the epochs
    "lr_min": 0.0,
    "lr_by_time": False,  # cosine: progress = max(epoch / epochs, elapsed / max_time_s) (time-budget runs)
    "baseline_lr": None,  # UNet with baseline "inet": the baseline INet's learning rate (default: lr); it follows
    #                       the same schedule, scaled by baseline_lr / lr. Not in the paper.
    "steps_per_epoch": None,  # default: number of training images / batch, at least 1 (as the toolbox)
    "epochs": 50_000,  # the epoch cap
    "max_steps": None,  # stop (and checkpoint) after this many steps in total: simulates a kill; not hashed
    "max_time_s": None,  # wall-clock budget; the run validates and stops after the first epoch past it
    "validate_every": 100,  # epochs between validations
    "val_images": None,  # validation images measured (whole, fidelity.nip_fidelity), in turn per scene; None: all
    "stop_window": 5,
    "stop_rel_change": None,  # default: 1e-4, DNet 1e-5 (paper)
    "checkpoint_every": None,  # epochs between checkpoints; None: after every validation
    "init_color_matrix": True,  # INet: start from the camera's cam_to_srgb when the dataset records it
    "precision": "fp32",  # "bf16": bfloat16 autocast of the training forward pass (faster UNet/DNet steps on
    #               CPUs with native bfloat16; loss, weights and validation stay float32); "auto": "bf16" where
    #               the device computes bfloat16 natively, else "fp32" (emulated bfloat16 is much slower than
    #               float32). Not in the paper. Figures: docs/benchmarks.md, "NIP training step".
    "channels_last": False,  # channels-last memory layout (faster for DNet with bfloat16 on CPUs)
}

#: ``paper``: the paper's protocol (meant for a GPU). ``quick``: a usable NIP within minutes on a CPU: by
#: default a width-16 UNet correcting the python ISP itself (not one of the paper's NIPs), ``by_nip`` holds
#: the settings for ``--nip inet`` and ``dnet``. ``cpu``: the paper's NIPs towards their plateau on a CPU
#: (how the shipped DNet was made). ``shipped``: no training, the shipped NIP measured on
#: the validation images (the demo's pre-trained NIP). Reasons and measured figures: docs/measuring.md.
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    "cpu": {
        "nip": "dnet",
        "batch": 20,
        "patch": 64,
        "lr": 1e-3,
        "lr_schedule": "cosine",
        "lr_min": 1e-5,
        "precision": "auto",
        "channels_last": True,
        "steps_per_epoch": 1,
        "epochs": 10000,
        "validate_every": 500,
        "stop_rel_change": 0.0,
    },
    "shipped": {
        "nip": "dnet",
        "init": "pretrained:dnet-nikon-d90",
        "epochs": 0,
    },
    "quick": {
        "nip": "unet",
        "nip_options": {"width": 16, "baseline": "menon"},
        "batch": 20,
        "patch": 32,
        "lr": 3e-4,
        "baseline_lr": None,
        "lr_schedule": "cosine",
        "lr_min": 1e-5,
        "lr_by_time": True,
        "precision": "auto",
        "steps_per_epoch": 1,
        "epochs": 4000,
        "validate_every": 100,
        "val_images": 8,
        "stop_rel_change": 0.0,
        "max_time_s": 120,
        "by_nip": {
            "inet": {"nip_options": {}, "lr": 1e-2, "baseline_lr": None, "lr_min": 1e-4, "lr_by_time": False,
                     "precision": "fp32", "epochs": 3000, "max_time_s": 300},
            "dnet": {"nip_options": {}, "lr": 1e-3, "baseline_lr": None, "max_time_s": 300},
        },
    },
}


def resolve_config(overrides: Mapping[str, Any] | None = None, preset: str | None = None) -> dict[str, Any]:
    """Merge :data:`DEFAULTS`, a preset, the preset's settings for the chosen NIP (its ``by_nip`` entry) and
    user overrides (``None`` values in overrides are ignored), and check them
    (:func:`~neuralimaging.experiments.loop.resolve_settings`).

    The preset is ``preset`` or ``overrides["preset"]`` (default ``"paper"``); the NIP is ``overrides["nip"]``
    or the preset's.
    """
    config = resolve_settings(overrides, DEFAULTS, PRESETS, preset=preset, nip=lambda c: c["nip"], keep_none=False)
    config["nip"] = str(config["nip"]).lower()
    if config["nip"] not in nip_module.names():
        raise InputError(f"unknown NIP {config['nip']!r}; expected one of: {', '.join(nip_module.names())}")
    if config["stop_rel_change"] is None:
        config["stop_rel_change"] = 1e-5 if config["nip"] == "dnet" else 1e-4
    if config["data"] is not None:
        config["data"] = os.fspath(config["data"])
    check_nip_settings(config)
    if config["lr_schedule"] not in ("constant", "cosine"):
        raise InputError(f"lr_schedule must be 'constant' or 'cosine', got {config['lr_schedule']!r}")
    return config


make_config = resolve_config  # the earlier name


def nip_loss(rgb: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L2 loss on the [0, 255] scale: ``mean((255 * (rgb - target)) ** 2)`` (paper section 3.2)."""
    return nn.functional.mse_loss(rgb, target) * 255.0**2  # one fused pass each way, faster than the formula


def stop_rule(losses: list[float], window: int, threshold: float) -> bool:
    """The paper's stopping rule: the relative change of the mean validation loss over the last ``window``
    validations is below ``threshold``. Compares the mean of the last ``window`` losses with the mean of the
    ``window`` before them; needs ``2 * window`` validations. ``threshold <= 0`` never stops."""
    if threshold <= 0 or len(losses) < 2 * window:
        return False
    recent = float(np.mean(losses[-window:]))
    before = float(np.mean(losses[-2 * window : -window]))
    return abs(before - recent) / max(abs(before), 1e-12) < threshold


def validate(model: nn.Module, samples: list) -> dict[str, float]:
    """Validation loss (mean squared error on the [0, 255] scale), PSNR (dB) and SSIM of ``model`` on whole
    images (:func:`~neuralimaging.experiments.fidelity.nip_fidelity`)."""
    fidelity = nip_fidelity(model, samples)
    return {"val_loss": fidelity["mse"], "psnr": fidelity["psnr"], "ssim": fidelity["ssim"]}


def _build_model(config: Mapping[str, Any], cam_to_srgb: Any = None, gamma: str | None = None) -> nn.Module:
    options = dict(config.get("nip_options") or {})
    if options.get("baseline") == "menon":
        if cam_to_srgb is None:
            raise InputError("nip_options baseline 'menon' needs the dataset's camera matrix (cam_to_srgb), "
                             "which its samples do not record")
        if gamma is not None and options.get("gamma", "2.2") != gamma:
            raise InputError(f"the dataset's targets use gamma {gamma!r}: set nip_options.gamma to {gamma!r} "
                             f"for the menon baseline (got {options.get('gamma', '2.2')!r})")
    uses_inet = config["nip"] == "inet" or options.get("baseline") == "inet"
    starts_from_it = options.get("baseline") == "menon" or (uses_inet and config.get("init_color_matrix", True))
    if starts_from_it and cam_to_srgb is not None:
        options.setdefault("cam_to_srgb", np.asarray(cam_to_srgb, dtype=np.float32).tolist())
    return nip_module.create(config["nip"], **options)


def _load_init(model: nn.Module, init: str) -> None:
    """Load the starting weights ``init`` names into ``model`` (all of them, with matching shapes)."""
    from neuralimaging.acquisition import pretrained

    path = pretrained.resolve(init)
    try:
        model.load_state_dict(pretrained.load_state(path))
    except RuntimeError as error:
        reason = str(error).splitlines()[0]
        raise InputError(f"{path}: its weights do not fit this NIP and its options ({reason})") from error


def _camera_matrix(dataset: Any) -> Any:
    """The cam_to_srgb matrix recorded with the dataset's samples, if any."""
    for sample in list(dataset.train) + list(dataset.val):
        meta = getattr(sample, "meta", {}) or {}
        for key in ("cam_to_srgb", "color_matrix"):
            if key in meta:
                matrix = np.asarray(meta[key], dtype=np.float32)
                if matrix.shape == (3, 3):
                    return matrix
    return None


def _lr_at(config: Mapping[str, Any], epoch: int, elapsed_s: float = 0.0) -> float:
    """The learning rate at ``epoch``; with ``lr_by_time`` the cosine's progress is also at least the share
    of ``max_time_s`` spent (so it decays fully within the time budget on a slow or busy machine)."""
    if config["lr_schedule"] == "cosine":
        t = min(1.0, epoch / max(1, int(config["epochs"])))
        if config.get("lr_by_time") and config.get("max_time_s"):
            t = max(t, min(1.0, elapsed_s / float(config["max_time_s"])))
        return float(config["lr_min"] + 0.5 * (config["lr"] - config["lr_min"]) * (1 + math.cos(math.pi * t)))
    return float(config["lr"])


def _param_groups(model: nn.Module, config: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Adam parameter groups: everything at ``lr``, except a baseline INet at ``baseline_lr`` when set."""
    baseline = getattr(model, "baseline", None)
    if config.get("baseline_lr") is None or not isinstance(baseline, nn.Module) or not list(baseline.parameters()):
        return [{"params": list(model.parameters()), "lr_scale": 1.0}]
    ids = {id(p) for p in baseline.parameters()}
    return [
        {"params": [p for p in model.parameters() if id(p) not in ids], "lr_scale": 1.0},
        {"params": list(baseline.parameters()), "lr_scale": float(config["baseline_lr"]) / float(config["lr"])},
    ]


def _plot_curve(run: RunDir) -> Path | None:
    records = run.read_metrics()
    if not records:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in records]
    fig, (ax_loss, ax_psnr) = plt.subplots(1, 2, figsize=(9, 3.4))
    ax_loss.semilogy(steps, [r["train_loss"] for r in records], label="train")
    ax_loss.semilogy(steps, [r["val_loss"] for r in records], label="validation")
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("L2 loss ([0, 255] scale)")
    ax_loss.legend()
    ax_psnr.plot(steps, [r["psnr"] for r in records], color="C2")
    ax_psnr.set_xlabel("step")
    ax_psnr.set_ylabel("validation PSNR [dB]")
    config = run.read_config()
    fig.suptitle(f"NIP pre-training: {config.get('nip')} ({config.get('preset')})")
    fig.tight_layout()
    path = run.figures / "training.png"
    tmp = path.with_name(".training.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def train_nip(
    config: Mapping[str, Any],
    out_dir: str | os.PathLike[str],
    *,
    resume: bool = False,
    device: str | torch.device = "auto",
    progress: bool = True,
) -> dict[str, Any]:
    """Pre-train a NIP on a prepared dataset; returns the summary (also written to ``summary.json``).

    The run cycle (resume, checkpoints, metrics, progress, ``max_steps``, summary) is
    :class:`~neuralimaging.experiments.loop.TrainingRun`'s.

    Args:
        config: settings merged over :data:`DEFAULTS` and the preset it names (see :func:`resolve_config`);
            ``data`` (a folder made by ``neuralimaging.data.dataset.prepare``) is required.
        out_dir: the run directory.
        resume: continue from the run's last checkpoint (its stored config must match, except ``max_steps``).
        device: ``auto``, ``cpu`` or ``cuda``.
        progress: show a progress bar (stderr) with the training loss and validation PSNR.

    Returns:
        ``nip``, ``preset``, ``steps``, ``epochs``, ``stopped`` (``converged``, ``max_epochs``, ``max_time`` or
        ``max_steps``), ``psnr``, ``ssim``, ``val_loss``, ``train_loss``, ``parameters``, ``precision``
        (``"bf16"`` or ``"fp32"``: what ``precision`` resolved to on the device), ``device``, ``run_dir``,
        ``wall_time_s`` and ``cpu_time_s`` (every call of the run), ``threads``, ``config_hash``. The figures
        come from a validation at the last step (a run stopped by ``max_steps`` between validations is
        validated once more, outside ``metrics.jsonl``).
    """
    from neuralimaging.data.patches import sample_patches

    config = resolve_config(config)
    if config["data"] is None:
        raise InputError("train_nip needs config['data']: a dataset folder made by `neuralimaging prepare`")
    dev = resolve_device(device)
    precision = resolve_precision(config["precision"], dev)
    cycle = TrainingRun(out_dir, config, resume=resume)
    run = cycle.run

    dataset = training_dataset(config["data"])
    torch.manual_seed(int(config["seed"]))
    model = _build_model(config, _camera_matrix(dataset), dataset.settings.get("gamma"))
    if config["init"] and not cycle.resuming:
        _load_init(model, str(config["init"]))
    model = model.to(dev)
    layout = torch.channels_last if config["channels_last"] else torch.contiguous_format
    model = model.to(memory_format=layout)
    model.train()
    optimizer = torch.optim.Adam(_param_groups(model, config), lr=_lr_at(config, 0))
    rng = np.random.default_rng(int(config["seed"]))
    val_samples = fidelity_images(dataset.val, config["val_images"])

    steps_per_epoch = int(config["steps_per_epoch"] or max(1, len(dataset.train) // int(config["batch"])))
    history: list[float] = []
    last: dict[str, float] = {}
    running: list[float] = []
    state = cycle.begin({"nip": model}, {"nip": optimizer}, {"patches": rng}, steps_per_epoch=steps_per_epoch,
                        device=dev)
    if state is not None:
        history = [float(v) for v in state.get("history", [])]
        last = dict(state.get("last", {}))
        running = [float(v) for v in state.get("running", [])]
    else:
        last = {"train_loss": float("nan"), **validate(model, val_samples)}
        cycle.record(_lr_at(config, 0), last)
    max_time = config.get("max_time_s")

    def start_of_epoch(epoch: int) -> None:
        for group in optimizer.param_groups:
            group["lr"] = _lr_at(config, epoch, cycle.wall_time_s()) * group["lr_scale"]

    def train_step(step: int) -> dict[str, float]:
        x, y = sample_patches(dataset.train, int(config["batch"]), int(config["patch"]), rng)
        x, y = x.to(dev, memory_format=layout), y.to(dev)
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            out = model(x)
        loss = nip_loss(out.float(), y)
        loss.backward()
        optimizer.step()
        running.append(loss.item())
        return {"loss": running[-1]}

    def end_of_epoch(epoch: int) -> str | None:
        nonlocal last
        over_time = max_time is not None and cycle.wall_time_s() >= float(max_time)
        if not (cycle.validation_due(epoch) or over_time):
            return None
        metrics = validate(model, val_samples)
        history.append(metrics["val_loss"])
        last = {"train_loss": float(np.mean(running)) if running else float("nan"), **metrics}
        running.clear()
        cycle.record(optimizer.param_groups[0]["lr"], last)
        cycle.bar.set_postfix(loss=f"{last['train_loss']:.2f}", psnr=f"{metrics['psnr']:.2f}")
        if stop_rule(history, int(config["stop_window"]), float(config["stop_rel_change"])):
            return "converged"
        return "max_time" if over_time else None

    def summarize(stopped: str) -> dict[str, Any]:
        nonlocal last
        if stopped == "max_steps" and run.read_metrics()[-1]["step"] != cycle.step:
            # Stopped between validations: the figures reported are measured at this step. metrics.jsonl and the
            # checkpoint keep what an uninterrupted run has, so a resumed run stays identical to it.
            last = {"train_loss": float(np.mean(running)) if running else float("nan"), **validate(model, val_samples)}
        if stopped != "max_steps":
            _plot_curve(run)
        return {
            "nip": config["nip"],
            "preset": config["preset"],
            "psnr": last.get("psnr"),
            "ssim": last.get("ssim"),
            "fidelity": f"{DEFINITION}; validation split, {len(val_samples)} images",
            "val_loss": last.get("val_loss"),
            "train_loss": last.get("train_loss"),
            "parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "precision": precision,
            "device": str(dev),
            "run_dir": str(run.path),
        }

    return cycle.loop(
        train_step, start_of_epoch=start_of_epoch, end_of_epoch=end_of_epoch, summarize=summarize,
        extras=lambda: {"history": history, "last": last, "running": running}, desc=f"train {config['nip']}",
        progress=progress,
    )


def load_nip(run_dir: str | os.PathLike[str], device: str | torch.device = "cpu") -> nn.Module:
    """The NIP trained in ``run_dir`` (newest checkpoint), in eval mode on ``device``."""
    run = RunDir(run_dir)
    config = run.read_config()
    if "nip" not in config:
        raise InputError(f"{run.path}: config.yaml names no NIP")
    model = nip_module.create(config["nip"], **dict(config.get("nip_options") or {}))
    model.load_state_dict(run.load_weights("nip"))
    return model.to(resolve_device(device)).eval()


def export_nip(run_dir: str | os.PathLike[str], out_file: str | os.PathLike[str], **provenance: Any) -> Path:
    """Write a finished run's NIP as a shippable weights file (``.safetensors``) with its provenance (``.json``).

    The JSON records the NIP and its options, the run's config and summary, the dataset's camera, settings
    and split, the run it started from when ``init`` is another run's checkpoint (``init_run``), and the
    keyword arguments given (e.g. ``command``: the command that made it).
    """
    from safetensors.torch import save_file

    run = RunDir(run_dir)
    if not run.summary_path.is_file():
        raise InputError(f"{run.path}: the run has not finished (no summary.json); finish it before exporting")
    config, summary = run.read_config(), run.read_summary()
    out = Path(out_file).with_suffix(".safetensors")
    out.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().float().contiguous() if v.is_floating_point() else v.contiguous()
             for k, v in load_nip(run_dir).state_dict().items()}
    record: dict[str, Any] = {
        "nip": config["nip"],
        "nip_options": config.get("nip_options") or {},
        "config": config,
        "summary": {k: v for k, v in summary.items() if k != "run_dir"},
    }
    if config.get("data"):
        from neuralimaging.data.dataset import Dataset

        dataset = Dataset.load(config["data"])
        record["dataset"] = {"camera": dataset.camera, "settings": dataset.settings,
                             **{name: [s.name for s in getattr(dataset, name)] for name in ("train", "val", "test")}}
    init = Path(str(config.get("init") or ""))
    if init.suffix == ".safetensors" and init.parent.parent.name == "checkpoints" and init.parent.name.startswith("step-"):
        earlier = RunDir(init.parent.parent.parent)  # started from another run's checkpoint: record that run too
        record["init_run"] = {"run": str(earlier.path), "step": int(init.parent.name[len("step-"):]),
                              "config": earlier.read_config() if earlier.config_path.is_file() else None}
    record.update(provenance)
    tmp = out.with_name(f".{out.name}.tmp")
    save_file(state, str(tmp))
    os.replace(tmp, out)
    out.with_suffix(".json").write_text(json.dumps(record, indent=1, default=str) + "\n")
    return out
