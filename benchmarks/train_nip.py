"""NIP training speed (paper setting: batch 20, 64x64x4 RAW -> 128x128 RGB) and the quick preset's result.

Run by hand (never in the test suite)::

    .venv/bin/python benchmarks/train_nip.py speed [--nips inet,unet,dnet] [--threads 2] [--steps 5]
    .venv/bin/python benchmarks/train_nip.py quick --data DATA_DIR [--nip inet] [--out DIR]

``speed`` times full training steps (forward, L2 loss, backward, Adam) on random tensors, after warm-up, the
way ``train_nip`` runs them (its ``nip_loss``, autocast and layout handling, Adam), and prints the median
seconds per step and iterations per second next to the authors' TensorFlow toolbox measured on the same
2-core CPU (0.022 / 0.46 / 1.37 s per step) and the paper's K80 figures. Rows: ``contiguous`` (float32,
NCHW: the default config), ``channels_last`` (config ``channels_last: true``), ``bf16`` (config ``precision: bf16``)
and ``bf16+cl`` (both). INet computes in float32 whatever the autocast, so its bf16 rows time the same
arithmetic; its ``composed`` row times the einsum form its fused CPU kernel replaced (a same-run reference).
Settings are timed interleaved (one step of each in turn), so load changes on a shared machine hit them alike. ``quick`` trains with the ``quick`` preset on a prepared dataset (default
virtual-camera data: ``neuralimaging data synthesize`` + ``data prepare``, or ``--make-data`` to build it) and
prints the validation PSNR/SSIM, steps and wall time. Both print the load average: the dev CPU is shared.
Both run with glibc's malloc set as training sets it (``device.keep_freed_memory``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from neuralimaging.acquisition import nip
from neuralimaging.device import keep_freed_memory
from neuralimaging.experiments.train_nip import nip_loss

AUTHORS_TF_CPU_S = {"inet": 0.022, "unet": 0.46, "dnet": 1.37}
PAPER_K80_ITS = {"inet": 8.80, "unet": 1.75, "dnet": 0.66}


LAYOUTS = ("contiguous", "channels_last", "bf16", "bf16+cl")


def make_step(name: str, layout: str, batch: int = 20, patch: int = 64):
    """One training step of ``train_nip``'s loop for a row's settings, as a closure returning its seconds."""
    torch.manual_seed(0)
    model = nip.create(name)
    if layout == "composed":
        model.forward = model._forward_composed  # type: ignore[method-assign]
    channels_last = layout in ("channels_last", "bf16+cl")
    amp = layout.startswith("bf16")
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.rand(batch, 4, patch, patch).contiguous(memory_format=memory_format)
    y = torch.rand(batch, 3, 2 * patch, 2 * patch)

    def step() -> float:
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            out = model(x)
        loss = nip_loss(out.float(), y)
        loss.backward()
        optimizer.step()
        return time.perf_counter() - start

    return step


def speed(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {load_before}")
    print(f"{'nip':<6}{'layout':<15}{'s/step':>9}{'it/s':>8}{'TF CPU s/step':>15}{'speed-up':>10}{'K80 it/s':>10}")
    rows = []
    chosen = tuple(layout for layout in args.layouts.split(",") if layout)
    unknown = sorted(set(chosen) - set(LAYOUTS))
    if unknown:
        raise SystemExit(f"--layouts: unknown {', '.join(unknown)}; expected some of {', '.join(LAYOUTS)}")
    for name in args.nips.split(","):
        steps = args.steps * (4 if name == "inet" else 1)
        layouts = chosen + (("composed",) if name == "inet" else ())
        timers = {layout: make_step(name, layout) for layout in layouts}
        times: dict[str, list[float]] = {layout: [] for layout in layouts}
        # Rounds of consecutive steps per layout, the layouts alternating between rounds: steps of one model
        # in a row (as in training: alternating models step by step evicts each other's data from the caches,
        # which made INet's step ~1.4x slower), alternation against drifting load.
        rounds = 3 if steps >= 6 else 1
        for r in range(rounds):
            for layout, step in timers.items():
                for i in range(steps // rounds + 2):  # two warm-up steps per block
                    seconds = step()
                    if i >= 2:
                        times[layout].append(seconds)
        for layout in layouts:
            median = statistics.median(times[layout])
            tf = AUTHORS_TF_CPU_S[name]
            rows.append({"nip": name, "layout": layout, "s_per_step": median, "it_per_s": 1 / median})
            print(f"{name:<6}{layout:<15}{median:>9.3f}{1 / median:>8.2f}{tf:>15.3f}{tf / median:>9.2f}x"
                  f"{PAPER_K80_ITS[name]:>10.2f}", flush=True)
    print(f"load average before {load_before}, after {os.getloadavg()}")
    if args.json:
        print(json.dumps(rows))


def quick(args: argparse.Namespace) -> None:
    from neuralimaging.experiments.train_nip import train_nip

    data = Path(args.data)
    if args.make_data:
        from neuralimaging.acquisition.virtual_camera import synthesize
        from neuralimaging.data.dataset import prepare

        synthesize("default", "nikon-d90", data.parent / "raw", seed=0)
        prepare(data.parent / "raw", data)
    torch.set_num_threads(args.threads)
    load = os.getloadavg()
    overrides = {"data": str(data), "preset": "quick"}
    if args.nip:
        overrides["nip"] = args.nip
    if args.options:
        overrides["nip_options"] = json.loads(args.options)
    if args.lr:
        overrides["lr"] = args.lr
    summary = train_nip(overrides, Path(args.out), device="cpu", progress=True)
    print(json.dumps({k: summary[k] for k in ("nip", "steps", "psnr", "ssim", "wall_time_s", "stopped")}))
    print(f"load average before {load}, after {os.getloadavg()}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("speed")
    p.add_argument("--nips", default="inet,unet,dnet")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--layouts", default=",".join(LAYOUTS),
                   help="comma-separated subset of " + ", ".join(LAYOUTS) + " (the bf16 rows are slow where the CPU "
                   "only emulates bfloat16)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=speed)
    q = sub.add_parser("quick")
    q.add_argument("--data", required=True)
    q.add_argument("--make-data", action="store_true", help="synthesize and prepare the default data first")
    q.add_argument("--nip", help="override the preset's NIP")
    q.add_argument("--options", help="nip_options as JSON, e.g. '{\"width\": 16, \"baseline\": \"inet\"}'")
    q.add_argument("--lr", type=float, help="override the preset's learning rate (UNet row: 1e-3)")
    q.add_argument("--out", default="runs/bench-quick")
    q.add_argument("--threads", type=int, default=2)
    q.set_defaults(func=quick)
    args = parser.parse_args(argv)
    keep_freed_memory()  # as train_nip and the CLI do
    args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
