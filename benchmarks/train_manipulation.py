"""Joint NIP + FAN step time: batch 20 of 64x64x4 RAW -> NIP -> 5 manipulation classes -> channel -> FAN.

The authors' TensorFlow toolbox takes 0.96 / 1.42 / 2.26 s per joint step (INet / UNet / DNet) on the
project's 2-core CPU with 2 threads (shared/reference/original-toolbox-facts.md). This script times one
Adam step of the same workflow here, in mode F (FAN only, NIP frozen) and F+N (joint), for every NIP.

Run by hand (never in the test suite)::

    .venv/bin/python benchmarks/train_manipulation.py                      # CPU, 2 threads
    .venv/bin/python benchmarks/train_manipulation.py --device cuda --steps 30

Prints a table (median seconds per step, steps per second, ratio to the toolbox) and, with --json, JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch
import torch.nn.functional as F

from neuralimaging.acquisition import nip as nips
from neuralimaging.device import resolve_device
from neuralimaging.experiments.workflow import build_workflow, workflow_loss

TOOLBOX_JOINT_S = {"inet": 0.96, "unet": 1.42, "dnet": 2.26}


def time_steps(name: str, mode: str, *, batch: int, patch: int, steps: int, warmup: int, device: torch.device,
               bf16: bool = False) -> list[float]:
    """Seconds of each of ``steps`` Adam steps (after ``warmup`` untimed ones)."""
    torch.manual_seed(0)
    workflow = build_workflow(nips.create(name), fan_bf16=bf16).to(device).eval()
    joint = mode == "fan,nip"
    for p in workflow.nip.parameters():
        p.requires_grad_(joint)
    params = list(workflow.fan.parameters()) + (list(workflow.nip.parameters()) if joint else [])
    optimizer = torch.optim.Adam(params, lr=1e-4, fused=True)
    gen = torch.Generator().manual_seed(0)
    rggb = torch.rand(batch, 4, patch, patch, generator=gen).to(device)
    target = torch.rand(batch, 3, 2 * patch, 2 * patch, generator=gen).to(device)
    times = []
    for i in range(warmup + steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        if joint:
            loss, _ = workflow_loss(workflow(rggb), target, 0.1)
        else:
            with torch.no_grad():
                rgb = workflow.nip(rggb)
            logits, labels = workflow.classify(rgb)
            loss = F.cross_entropy(logits, labels)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--patch", type=int, default=64, help="RAW patch side (RGGB pixels)")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--nips", default="inet,unet,dnet")
    parser.add_argument("--modes", default="fan,fan+nip")
    parser.add_argument("--fan-bf16", default="off", choices=("off", "on", "both"),
                        help="run the FAN under bfloat16 autocast (both: time each)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    rows = []
    bf16_settings = {"off": [False], "on": [True], "both": [False, True]}[args.fan_bf16]
    combos = [(name, mode, bf16) for name in args.nips.split(",") for mode in args.modes.split(",") for bf16 in bf16_settings]
    for name, mode, bf16 in combos:
        mode = "fan,nip" if mode in ("fan+nip", "fan,nip", "joint") else "fan"
        times = time_steps(name, mode, batch=args.batch, patch=args.patch, steps=args.steps,
                           warmup=args.warmup, device=device, bf16=bf16)
        median = statistics.median(times)
        row = {"nip": name, "mode": "F+N" if mode == "fan,nip" else "F", "fan_bf16": bf16, "median_s": median,
               "min_s": min(times), "it_per_s": 1 / median, "toolbox_joint_s": TOOLBOX_JOINT_S[name],
               "speedup_vs_toolbox": TOOLBOX_JOINT_S[name] / median}
        rows.append(row)
        if not args.json:
            print(f"{name:<6}{row['mode']:<5}{'bf16' if bf16 else 'fp32':<6}{median:8.3f} s/step (min {min(times):.3f}) "
                  f"{1 / median:7.2f} it/s   toolbox joint {TOOLBOX_JOINT_S[name]:.2f} s -> "
                  f"x{row['speedup_vs_toolbox']:.1f}", flush=True)
    load = os.getloadavg()
    meta = {"device": str(device), "threads": args.threads, "batch": args.batch, "patch": args.patch,
            "torch": torch.__version__, "loadavg": load}
    if args.json:
        print(json.dumps({"meta": meta, "rows": rows}, indent=2))
    else:
        print(f"device {device}, {args.threads} threads, torch {torch.__version__}, load average {load[0]:.2f}")


if __name__ == "__main__":
    main()
