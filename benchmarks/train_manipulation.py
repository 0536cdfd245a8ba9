"""Joint NIP + FAN step time: batch 20 of 64x64x4 RAW -> NIP -> 5 manipulation classes -> channel -> FAN.

The authors' TensorFlow toolbox takes 0.96 / 1.42 / 2.26 s per joint step (INet / UNet / DNet) on
a 2-core CPU with 2 threads (reported figures, ``docs/benchmarks.md``); CPUs differ between machines, so
``benchmarks/tf_reference.py`` re-measures TensorFlow on the machine at hand. This script times one
Adam step of the same workflow here, in mode F (FAN only, NIP frozen) and F+N (joint), for every NIP, with
the training code itself (``train_manipulation._build``'s workflow settings, ``_trainable``, ``_adam``,
``train_step``), so the figures are those of ``neuralimaging train manipulation``.

Rows: ``fp32`` (``precision: fp32``, the paper's arithmetic) and ``auto`` (the default: bfloat16 autocast of
the NIP body and the FAN where the CPU has native bfloat16, else float32), both with ``channels_last`` as
chosen (default: on, the training default).

Run by hand (never in the test suite)::

    .venv/bin/python benchmarks/train_manipulation.py                      # CPU, 2 threads
    .venv/bin/python benchmarks/train_manipulation.py --precision fp32,auto --channels-last both
    .venv/bin/python benchmarks/train_manipulation.py --device cuda --steps 30

Prints a table (median seconds per step, steps per second, ratio to the toolbox) and, with --json, JSON.
Steps of the compared settings are interleaved (one step of each in turn), so a load change on a shared
machine affects them alike; the load average is printed. To compare with TensorFlow on a machine whose speed
drifts (a shared VM), use ``benchmarks/joint_vs_tf.py``, which alternates the two in rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

from neuralimaging.acquisition import nip as nips
from neuralimaging.device import keep_freed_memory, resolve_device
from neuralimaging.experiments.train_manipulation import _adam, _trainable, train_step
from neuralimaging.experiments.workflow import build_workflow, resolve_precision

TOOLBOX_JOINT_S = {"inet": 0.96, "unet": 1.42, "dnet": 2.26}


def make_step(name: str, mode: str, *, precision: str, channels_last: bool, batch: int, patch: int,
              device: torch.device):
    """A closure running one training step of the workflow as ``train_manipulation`` builds and trains it."""
    torch.manual_seed(0)
    workflow = build_workflow(nips.create(name).to(device), precision=precision, channels_last=channels_last,
                              device=device).to(device)
    workflow.eval()  # as in train_manipulation: the NIP keeps its batch-norm statistics
    optimizer = _adam(_trainable(workflow, mode), 1e-4)
    gen = torch.Generator().manual_seed(0)
    rggb = torch.rand(batch, 4, patch, patch, generator=gen).to(device)
    target = torch.rand(batch, 3, 2 * patch, 2 * patch, generator=gen).to(device)

    def step() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        train_step(workflow, optimizer, rggb, target, mode=mode, lambda_nip=0.1)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t

    return step


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
    parser.add_argument("--precision", default="fp32,auto", help="comma-separated: fp32, bf16, auto")
    parser.add_argument("--channels-last", default="on", choices=("off", "on", "both"),
                        help="channels-last NIP and FAN inputs (training default: on)")
    parser.add_argument("--system-malloc", action="store_true",
                        help="leave glibc's malloc as it is (the training code calls device.keep_freed_memory)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if not args.system_malloc:
        keep_freed_memory()  # as train_manipulation does
    load_before = os.getloadavg()
    layouts = {"off": [False], "on": [True], "both": [False, True]}[args.channels_last]
    rows = []
    for name in args.nips.split(","):
        for mode in args.modes.split(","):
            mode = "fan,nip" if mode in ("fan+nip", "fan,nip", "joint") else "fan"
            settings = [(p, cl) for p in args.precision.split(",") for cl in layouts]
            steps = {s: make_step(name, mode, precision=s[0], channels_last=s[1], batch=args.batch,
                                  patch=args.patch, device=device) for s in settings}
            times: dict[tuple[str, bool], list[float]] = {s: [] for s in settings}
            for i in range(args.warmup + args.steps):
                for s, step in steps.items():
                    seconds = step()
                    if i >= args.warmup:
                        times[s].append(seconds)
            for (precision, channels_last), values in times.items():
                median = statistics.median(values)
                row = {"nip": name, "mode": "F+N" if mode == "fan,nip" else "F", "precision": precision,
                       "computes_in": resolve_precision(precision, device), "channels_last": channels_last,
                       "median_s": median, "min_s": min(values), "it_per_s": 1 / median,
                       "toolbox_joint_s": TOOLBOX_JOINT_S[name], "speedup_vs_toolbox": TOOLBOX_JOINT_S[name] / median}
                rows.append(row)
                if not args.json:
                    label = f"{precision}({row['computes_in']}){'+cl' if channels_last else ''}"
                    print(f"{name:<6}{row['mode']:<5}{label:<16}{median:8.3f} s/step (min {min(values):.3f}) "
                          f"{1 / median:7.2f} it/s   toolbox joint {TOOLBOX_JOINT_S[name]:.2f} s -> "
                          f"x{row['speedup_vs_toolbox']:.2f}", flush=True)
    meta = {"device": str(device), "threads": args.threads, "batch": args.batch, "patch": args.patch,
            "torch": torch.__version__, "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
            "keep_freed_memory": not args.system_malloc}
    if args.json:
        print(json.dumps({"meta": meta, "rows": rows}, indent=2))
    else:
        print(f"device {device}, {args.threads} threads, torch {torch.__version__}, "
              f"malloc {'system' if args.system_malloc else 'keep freed memory'}, load average before "
              f"{load_before[0]:.2f}, after {meta['loadavg_after'][0]:.2f}")


if __name__ == "__main__":
    main()
