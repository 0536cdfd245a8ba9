"""``neuralimaging train WHAT``: training commands, one sub-command per thing to train.

``train nip`` pre-trains a neural imaging pipeline (:mod:`neuralimaging.experiments.train_nip`). Each
sub-command is one ``_register_<what>(sub)`` function below that builds its parser with :func:`_leaf` (which
adds ``--device``) and is called from :func:`register`.
"""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path
from typing import Any

import yaml

from neuralimaging import yamlio
from neuralimaging.errors import InputError

__all__ = ["register"]


def parse_overrides(pairs: list[str] | None) -> dict[str, Any]:
    """``["lr=1e-3", "nip_options={width: 16}"]`` -> ``{"lr": 0.001, "nip_options": {"width": 16}}`` (YAML values)."""
    overrides: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--set expects KEY=VALUE, got {pair!r}")
        try:
            overrides[key.strip()] = yamlio.load(value)
        except yaml.YAMLError as error:
            raise InputError(f"--set {key}: cannot parse value {value!r} ({error.problem})") from None
    return overrides


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "train", parents=[common], help="train models (train nip: pre-train a neural imaging pipeline)"
    )
    sub = parser.add_subparsers(dest="what", metavar="WHAT", required=True)
    _register_nip(sub)
    _register_manipulation(sub)


def _leaf(sub: argparse._SubParsersAction, name: str, **kwargs: Any) -> argparse.ArgumentParser:
    """A ``train WHAT`` parser. It repeats ``--device`` without a default, so that both
    ``train --device cpu WHAT`` and ``train WHAT --device cpu`` work (a sub-parser default would overwrite
    the value given before WHAT)."""
    from neuralimaging.device import DEVICE_CHOICES

    parser = sub.add_parser(name, **kwargs)
    parser.add_argument("--device", choices=DEVICE_CHOICES, default=argparse.SUPPRESS,
                        help="where to compute: auto (CUDA when present, else CPU), cpu or cuda (default: auto)")
    return parser


# -- train nip ------------------------------------------------------------------------------------------
def _register_nip(sub: argparse._SubParsersAction) -> None:
    parser = _leaf(
        sub,
        "nip",
        help="pre-train a NIP (inet, unet, dnet) to reproduce the python ISP",
        description="Pre-train a neural imaging pipeline on a prepared dataset. The run directory is "
        "RUNS_DIR/NAME (default name: nip-<nip>-<preset>-<config hash>); --resume continues it.",
    )
    _run_options(parser, seed_help="initialization and patch sampling", set_example="validate_every=50", presets={
        "quick": "minutes on a CPU", "paper": "the paper's protocol, for a GPU",
        "cpu": "a paper NIP towards its plateau in hours on a CPU (how the shipped DNet was made)",
        "shipped": "the shipped DNet, measured on the validation images without training"})
    parser.add_argument("--nip", choices=("inet", "unet", "dnet"), help="which NIP (default: the preset's)")
    parser.add_argument("--lr", type=float, help="Adam learning rate")
    parser.add_argument("--batch", type=int, help="patches per step")
    parser.add_argument("--patch", type=int, help="RAW patch side (the RGB target is twice as large)")
    parser.add_argument("--max-time", type=float, dest="max_time_s", help="wall-clock budget in seconds")
    parser.add_argument("--export", type=Path, metavar="FILE",
                        help="when the run has finished, write its NIP to FILE.safetensors with its provenance "
                        "(FILE.json): the form of the NIPs that ship with the package")
    parser.set_defaults(func=run_nip)


def _run_options(
    parser: argparse.ArgumentParser, *, seed_help: str, set_example: str, presets: dict[str, str]
) -> None:
    """Options every training command shares: dataset, preset, run directory, resume, seed, overrides, output."""
    parser.add_argument("--data", required=True, type=Path, help="dataset folder made by `neuralimaging data prepare`")
    parser.add_argument("--preset", choices=tuple(presets), default="quick",
                        help="; ".join(f"{name}: {words}" for name, words in presets.items()) + " (default: quick)")
    parser.add_argument("--out", type=Path, default=Path("runs"), help="folder of run directories (default: runs)")
    parser.add_argument("--name", help="run directory name inside --out (default: derived from the config)")
    parser.add_argument("--resume", action="store_true", help="continue the run from its last checkpoint")
    parser.add_argument("--seed", type=int, help=f"random seed ({seed_help})")
    parser.add_argument("--epochs", "--max-epochs", type=int, dest="epochs",
                        help="number of epochs (the cap; --max-epochs is the earlier spelling)")
    parser.add_argument("--max-steps", type=int, help="stop after this many steps (checkpointed; resumable)")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", dest="overrides",
                        help=f"any other config setting, value in YAML (repeatable), e.g. --set {set_example}")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")


def run_nip(args: argparse.Namespace) -> int:
    from neuralimaging.experiments.loop import run_hash
    from neuralimaging.experiments.rundir import discard_unstarted, run_folder
    from neuralimaging.experiments.train_nip import resolve_config, train_nip

    overrides = parse_overrides(args.overrides)
    for key in ("nip", "lr", "batch", "patch", "epochs", "max_steps", "max_time_s", "seed"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    overrides["data"] = str(args.data)
    if not args.data.is_dir():
        raise InputError(f"{args.data}: dataset folder not found")
    config = resolve_config(overrides, preset=args.preset)
    name = args.name or f"nip-{config['nip']}-{config['preset']}-{run_hash(config)[:8]}"
    run_dir = run_folder(args.out, name)
    with discard_unstarted(run_dir):
        summary = train_nip(config, run_dir, resume=args.resume, device=args.device, progress=not args.no_progress)
    exported = None
    if args.export is not None and summary["stopped"] != "max_steps":
        from neuralimaging.experiments.train_nip import export_nip

        exported = export_nip(run_dir, args.export, command=shlex.join(["neuralimaging", *args.argv]))
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"run: {run_dir}")
    print(f"nip {summary['nip']} ({summary['preset']}): {summary['steps']} steps, {summary['epochs']} epochs, "
          f"stopped: {summary['stopped']}")
    print(f"validation PSNR {summary['psnr']:.2f} dB, SSIM {summary['ssim']:.4f} ({summary['fidelity']}), "
          f"loss {summary['val_loss']:.3f}; "
          f"{summary['wall_time_s']:.1f} s")
    if summary["stopped"] == "max_steps":
        print("stopped at --max-steps; continue with --resume")
    if exported is not None:
        print(f"exported: {exported} (+ {exported.with_suffix('.json').name})")
    return 0


# -- train manipulation ------------------------------------------------------------------------------
def _register_manipulation(sub: argparse._SubParsersAction) -> None:
    parser = _leaf(
        sub,
        "manipulation",
        help="train the FAN (F) or the FAN and the NIP jointly (F+N) to detect manipulations after the channel",
        description="The paper's main experiment: RAW patches -> NIP -> manipulations -> channel -> FAN. "
        "The run directory is RUNS_DIR/NAME (default name: manip-<f|fn>-<preset>-<config hash>); "
        "--resume continues it (and returns a finished run's summary).",
    )
    _run_options(parser, seed_help="FAN initialization and patch sampling", set_example="epochs=400", presets={
        "quick": "minutes on a CPU", "paper": "the paper's protocol, for a GPU"})
    parser.add_argument("--nip-run", required=True, type=Path, help="run directory of a pre-trained NIP (train nip)")
    parser.add_argument("--train", default="fan,nip", help="'fan' (F: NIP frozen) or 'fan,nip' (F+N) (default: fan,nip)")
    parser.add_argument("--lambda-nip", type=float, dest="lambda_nip",
                        help="weight of the NIP fidelity term, MSE on [0, 255] (default: the preset's)")
    parser.add_argument("--manipulations", help="manipulation classes, native first (default: "
                        "native,sharpen,gaussian,jpeg,resample)")
    parser.add_argument("--channel", help="sharing channel, e.g. 'down:2,jpeg:50' (default) or 'none'")
    parser.add_argument("--allow-unfinished-nip", action="store_true",
                        help="start from a NIP run that has not finished (recorded in the run's nip_source.json)")
    parser.set_defaults(func=run_manipulation)


def run_manipulation(args: argparse.Namespace) -> int:
    from neuralimaging.experiments.loop import run_hash
    from neuralimaging.experiments.rundir import discard_unstarted, run_folder
    from neuralimaging.experiments.train_manipulation import resolve_config, train_manipulation

    config: dict[str, Any] = parse_overrides(args.overrides)
    for key in ("train", "lambda_nip", "manipulations", "channel", "seed", "epochs", "max_steps"):
        if getattr(args, key) is not None:
            config[key] = getattr(args, key)
    config.update({"data": str(args.data), "nip_run": str(args.nip_run), "preset": args.preset})
    if not args.data.is_dir():
        raise InputError(f"{args.data}: dataset folder not found")
    if not args.nip_run.is_dir():
        raise InputError(f"{args.nip_run}: NIP run folder not found")
    resolved = resolve_config(config)
    mode = "fn" if resolved["train"] == "fan,nip" else "f"
    run_dir = run_folder(args.out, args.name or f"manip-{mode}-{resolved['preset']}-{run_hash(resolved)[:8]}")
    with discard_unstarted(run_dir):
        summary = train_manipulation(config, run_dir, resume=args.resume, device=args.device, progress=not args.no_progress,
                                     allow_unfinished_nip=args.allow_unfinished_nip)
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"run: {run_dir}")
    if summary["stopped"] == "max_steps":
        print(f"stopped at step {summary['steps']} (--max-steps); continue with --resume")
        return 0
    label = "F+N" if summary["mode"] == "fan,nip" else "F"
    print(f"{label}: accuracy {summary['accuracy']:.3f} +- {summary['accuracy_se']:.3f} on {summary['n_validation']} "
          f"validation decisions ({resolved['patch']}x{resolved['patch']} FAN patches) after {summary['steps']} steps; "
          f"NIP PSNR {summary['psnr_start']:.2f} -> {summary['psnr']:.2f} dB (SSIM {summary['ssim']:.4f}); "
          f"{summary['wall_time_s']:.1f} s")
    print(f"PSNR / SSIM: {summary['fidelity']}; measure the test split with `neuralimaging evaluate {run_dir}`")
    return 0
