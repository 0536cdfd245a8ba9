"""Forward + backward of the joint step's fused ops against their op-by-op forms, interleaved in one process.

The joint step (``benchmarks/train_manipulation.py``) spends its time in the NIP, the FAN and the distribution.
Four of its parts run as single ops with hand-written gradients or as matrix products; each is timed here
against the op-by-op form it replaces (the same values and gradients, tested in ``tests/``), on the joint
step's shapes (batch 20 of 128 x 128 RGB from the NIP; 100 x 3 x 128 x 128 into the channel):

- ``jpeg80``: the q80 manipulation, ``jpeg_compress`` (one op) against ``jpeg._composed_codec``;
- ``channel``: 2x2 pooling + JPEG q50 on 100 patches, the same pair;
- ``sharpen``: the one-op sharpening against its formula under autograd (depthwise Laplacian);
- ``resample``: one separable filter against two ``F.interpolate`` calls;
- ``conv 512@4x4`` etc.: ``layers.Conv2d`` against ``nn.Conv2d`` under bfloat16 autocast (only where the CPU
  computes bfloat16 natively, as in training), for UNet's deepest layers and the FAN's 1 x 1 mix at 4 x 4;
  the 8 x 8 rows (UNet's next level, the FAN's last 5 x 5 layer) run ``nn.Conv2d`` on both sides since
  ``layers.SMALL_PIXELS`` is 16, and are kept as a check of that threshold (pass ``--small-pixels 64`` to
  time the tap-wise path there too).

Run by hand (never in the test suite)::

    .venv/bin/python benchmarks/fused_ops.py
    .venv/bin/python benchmarks/fused_ops.py --repeats 30 --json out.json

Prints the median milliseconds of each pair and their ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from neuralimaging.device import keep_freed_memory
from neuralimaging.distribution import jpeg
from neuralimaging.distribution.manipulations import resample, sharpen
from neuralimaging.distribution.separable import box_downsample
from neuralimaging.experiments.workflow import native_bf16
from neuralimaging import layers
from neuralimaging.layers import Conv2d


def composed_jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    luma, chroma = jpeg.quantization_tables(quality, n=x.shape[0])
    return jpeg._composed_codec(x, luma.to(x.dtype), chroma.to(x.dtype), rounding="sin", harmonics=5,
                                subsampling="4:4:4", exact=False)


def composed_sharpen(x: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
    v = x.amax(dim=1, keepdim=True)
    laplacian = torch.tensor([[1.0, 4.0, 1.0], [4.0, -20.0, 4.0], [1.0, 4.0, 1.0]], dtype=x.dtype) / 6.0
    smooth = F.conv2d(F.pad(v, (1, 1, 1, 1), mode="replicate"), laplacian[None, None])
    v_new = torch.clamp(v - strength * smooth, 0.0, 1.0)
    dark = v <= 1e-8
    ratio = v_new / torch.where(dark, torch.ones_like(v), v)
    return torch.clamp(torch.where(dark, v_new.expand_as(x), x * ratio), 0.0, 1.0)


def interpolate_resample(x: torch.Tensor, percent: float = 50.0) -> torch.Tensor:
    h, w = x.shape[-2:]
    small = (round(h * percent / 100), round(w * percent / 100))
    down = F.interpolate(x, size=small, mode="bilinear", align_corners=False)
    return torch.clamp(F.interpolate(down, size=(h, w), mode="bilinear", align_corners=False), 0.0, 1.0)


def conv_pair(n: int, c_in: int, c_out: int, size: int, k: int) -> tuple[Callable, Callable, torch.Tensor]:
    torch.manual_seed(0)
    reference = nn.Conv2d(c_in, c_out, k, padding=k // 2)
    ours = Conv2d(c_in, c_out, k, padding=k // 2)
    ours.load_state_dict(reference.state_dict())

    def under_autocast(module: nn.Module) -> Callable:
        def run(x: torch.Tensor) -> torch.Tensor:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return module(x).float()
        return run

    x = torch.rand(n, c_in, size, size).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    return under_autocast(reference), under_autocast(ours), x


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--json", metavar="PATH")
    parser.add_argument("--small-pixels", type=int, default=layers.SMALL_PIXELS,
                        help="layers.SMALL_PIXELS for this run (default %(default)s)")
    args = parser.parse_args()
    layers.SMALL_PIXELS = args.small_pixels
    torch.set_num_threads(args.threads)
    keep_freed_memory()
    gen = torch.Generator().manual_seed(0)
    rgb = torch.rand(20, 3, 128, 128, generator=gen)
    shared = torch.rand(100, 3, 128, 128, generator=gen)
    cases: dict[str, tuple[Callable, Callable, torch.Tensor]] = {
        "jpeg80 20x3x128x128": (lambda t: composed_jpeg(t, 80), lambda t: jpeg.jpeg_compress(t, 80), rgb),
        "channel 100x3x128x128": (lambda t: composed_jpeg(box_downsample(t, 2), 50),
                                  lambda t: jpeg.jpeg_compress(box_downsample(t, 2), 50), shared),
        "sharpen 20x3x128x128": (composed_sharpen, sharpen, rgb),
        "resample 20x3x128x128": (interpolate_resample, resample, rgb),
    }
    if native_bf16("cpu"):
        for label, shape in (("conv 20x512->512@4x4 k3", (20, 512, 512, 4, 3)),
                             ("conv 20x256->512@4x4 k3", (20, 256, 512, 4, 3)),
                             ("conv 20x512->256@8x8 k3", (20, 512, 256, 8, 3)),
                             ("conv 20x256->256@8x8 k3", (20, 256, 256, 8, 3)),
                             ("conv 100x128->256@8x8 k5", (100, 128, 256, 8, 5)),
                             ("conv 100x256->256@4x4 k1", (100, 256, 256, 4, 1))):
            cases[label] = conv_pair(*shape)

    def run(f: Callable, x: torch.Tensor) -> float:
        t = x.clone().requires_grad_()
        start = time.perf_counter()
        y = f(t)
        y.backward(torch.ones_like(y))
        return time.perf_counter() - start

    load_before = os.getloadavg()
    times: dict[tuple[str, int], list[float]] = {(k, i): [] for k in cases for i in (0, 1)}
    for r in range(args.warmup + args.repeats):
        for label, (old, new, x) in cases.items():
            for i, f in enumerate((old, new)):
                seconds = run(f, x)
                if r >= args.warmup:
                    times[(label, i)].append(seconds)
    rows = []
    for label in cases:
        old, new = statistics.median(times[(label, 0)]) * 1e3, statistics.median(times[(label, 1)]) * 1e3
        rows.append({"case": label, "op_by_op_ms": old, "fused_ms": new, "speedup": old / new})
        print(f"{label:<28} op by op {old:7.1f} ms   fused {new:7.1f} ms   x{old / new:.2f}", flush=True)
    meta = {"threads": args.threads, "repeats": args.repeats, "torch": torch.__version__,
            "native_bf16": native_bf16("cpu"), "small_pixels": layers.SMALL_PIXELS, "loadavg_before": load_before, "loadavg_after": os.getloadavg()}
    print(f"{args.threads} threads, torch {torch.__version__}, load average before {load_before[0]:.2f}, "
          f"after {meta['loadavg_after'][0]:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
