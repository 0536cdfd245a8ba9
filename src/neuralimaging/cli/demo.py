"""``neuralimaging demo``: the main job end to end on the offline default data (``make demo``)."""

from __future__ import annotations

import argparse
import math

from neuralimaging.acquisition.virtual_camera import CAMERAS
from neuralimaging.experiments.demo import DEMO_CAMERA, run_demo


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "demo",
        parents=[common],
        help="virtual camera -> dataset -> NIP pre-training -> F and F+N runs -> summary and HTML report",
        description="Run the paper's main experiment end to end on the offline default data. Rerunning resumes.",
    )
    parser.add_argument("--out", default="demo-output", help="output folder (default: demo-output)")
    parser.add_argument("--camera", default=DEMO_CAMERA, choices=sorted(CAMERAS), help="virtual camera profile")
    parser.add_argument("--photos", default="default", help="folder of photos, or 'default' (bundled photos)")
    parser.add_argument("--sweep", default=None, help="sweep file to run instead of the packaged demo sweep")
    parser.set_defaults(func=run)


def _fmt(value: float | None, pattern: str) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else pattern.format(value)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from neuralimaging.errors import InputError

    if args.sweep is not None and not Path(args.sweep).is_file():  # before minutes of synthesizing and preparing
        raise InputError(f"--sweep {args.sweep}: sweep file not found")
    summary = run_demo(
        args.out, camera=args.camera, photos=args.photos, device=args.device, sweep_file=args.sweep, log=print
    )
    print("\nSummary")
    for entry in summary["pretrain"]:
        print(f"  pre-trained NIP  {entry['run']}: PSNR {_fmt(entry['psnr'], '{:.2f}')} dB, SSIM {_fmt(entry['ssim'], '{:.4f}')}")
    for entry in summary["joint"]:
        mode = entry["mode"] if entry["mode"] == "F" else f"{entry['mode']} (lambda_nip {entry['lambda_nip']:g})"
        print(
            f"  {mode:<28} accuracy {_fmt(entry['accuracy'], '{:.3f}')}  PSNR {_fmt(entry['psnr'], '{:.2f}')} dB"
            f"  SSIM {_fmt(entry['ssim'], '{:.4f}')}  ({_fmt(entry['wall_time_s'], '{:.0f}')} s)  {entry['run']}"
        )
    timings = ", ".join(f"{k[:-2]} {v:.0f} s" for k, v in summary["timings"].items())
    print(f"  time: {timings}")
    print(f"\nOutputs: runs in {summary['runs_dir']}; report: {summary['report']}")
    if summary["failed"]:
        print(f"failed runs: {', '.join(summary['failed'])}")
        return 1
    return 0
