"""``neuralimaging demo``: the main job end to end on the offline default data (``make demo``)."""

from __future__ import annotations

import argparse
import math
from typing import Any

from neuralimaging.acquisition.virtual_camera import CAMERAS
from neuralimaging.experiments.demo import DEMO_CAMERA, SUMMARY, run_demo


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "demo",
        parents=[common],
        help="virtual camera -> dataset -> pre-trained NIP -> F and F+N -> test split, summary and HTML report",
        description="Run the paper's main experiment end to end on the offline default data and measure it on "
        "the held-out test split. Rerunning resumes.",
    )
    parser.add_argument("--out", default="demo-output", help="output folder (default: demo-output)")
    parser.add_argument("--camera", default=DEMO_CAMERA, choices=sorted(CAMERAS), help="virtual camera profile")
    parser.add_argument("--photos", default="default", help="folder of photos, or 'default' (bundled photos)")
    parser.add_argument("--sweep", default=None, help="sweep file to run instead of the packaged demo sweep")
    parser.set_defaults(func=run)


def _fmt(value: Any, pattern: str) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else pattern.format(value)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from neuralimaging.errors import InputError

    if args.sweep is not None and not Path(args.sweep).is_file():  # before minutes of synthesizing and preparing
        raise InputError(f"--sweep {args.sweep}: sweep file not found")
    summary = run_demo(
        args.out, camera=args.camera, photos=args.photos, device=args.device, sweep_file=args.sweep, log=print
    )
    print(f"\nSummary, {summary['split']} split ({SUMMARY} in {args.out})")
    print(f"  PSNR / SSIM: {summary['fidelity']}")
    nip = summary["nip"]
    if nip:
        print(f"  pre-trained NIP {nip['name']} ({nip['run']}): PSNR {_fmt(nip['psnr_db'], '{:.2f}')} dB, "
              f"SSIM {_fmt(nip['ssim'], '{:.4f}')}")
    for entry in summary["runs"]:
        mode = "F" if entry["mode"] == "F" else f"F+N (lambda_nip {entry['lambda_nip']:g})"
        print(f"  {mode:<26} accuracy {_fmt(entry['accuracy'], '{:.3f}')} (dJPEG), "
              f"{_fmt(entry['accuracy_libjpeg'], '{:.3f}')} (libjpeg q{entry['quality']}); "
              f"PSNR {_fmt(entry['psnr_db'], '{:.2f}')} dB, SSIM {_fmt(entry['ssim'], '{:.4f}')}  {entry['run']}")
    print(f"  accuracy over {summary['runs'][0]['patches'] if summary['runs'] else 0} decisions per run; "
          f"{summary['repetitions']} repetition(s)")
    timings = ", ".join(f"{k[:-2]} {v:.0f} s" for k, v in summary["timings"].items())
    print(f"  time: {timings}")
    print(f"\nOutputs: runs in {summary['runs_dir']}; report: {summary['report']}")
    if summary["failed"]:
        print(f"failed runs: {', '.join(summary['failed'])}")
        return 1
    return 0
