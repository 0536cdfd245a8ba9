"""Calibration of the virtual camera: how faithfully the paper's INet can learn the python ISP on its shots.

The paper's INet reaches 42.8 dB on real cameras (Table 1, 512x512 validation patches, average of 8 cameras).
This script makes the default data (bundled photos, ``nikon-d90``) with the lens blur ``psf_sigma`` swept,
trains INet on each, and reports the validation fidelity (whole images, ``experiments.fidelity``). Run by hand
(never in the test suite)::

    .venv/bin/python benchmarks/virtual_camera.py sweep [--sigmas 0,0.3,0.6,1,1.5,2] [--exact-gamma 0.6]
        [--ablations] [--work DIR]
    .venv/bin/python benchmarks/virtual_camera.py paper [--shots 8] [--work DIR] [--max-time 5400]

``sweep`` trains each INet with a short schedule (Adam lr 1e-3 with a cosine decay to 1e-5 over 3,000 steps
of 20 patches of 64x64 RAW) and, at the ``--exact-gamma`` sigmas, an INet whose two gamma layers are
replaced by the exact curve ``x ** (1/2.2)`` (a diagnostic, not a NIP of the paper: it shows what the rest of
INet could reach).
``paper`` trains INet with the ``paper`` preset unchanged (lr 1e-4, the paper's stopping rule) on the profile's
own optics, and prints its validation PSNR. Both print one JSON line per run and a Markdown table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from neuralimaging.acquisition import nip as nip_module
from neuralimaging.acquisition import virtual_camera
from neuralimaging.acquisition.virtual_camera import get_camera, optics_mtf, synthesize
from neuralimaging.data.dataset import Dataset, prepare
from neuralimaging.data.patches import sample_patches
from neuralimaging.experiments.fidelity import fidelity_images, nip_fidelity
from neuralimaging.experiments.train_nip import nip_loss, train_nip


class ExactGammaINet(nn.Module):
    """INet with its gamma layers replaced by ``clip(x, 0, 1) ** (1/2.2)`` (diagnostic only)."""

    alignment = 1
    receptive_radius = 2

    def __init__(self, cam_to_srgb: np.ndarray) -> None:
        super().__init__()
        self.inet = nip_module.INet(cam_to_srgb)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inet = self.inet
        mosaic = F.pixel_shuffle(F.conv2d(x, inet.bayer), 2)
        rgb = inet.color(inet.demosaic(F.pad(mosaic, (2, 2, 2, 2), mode="reflect")))
        return rgb.clamp(1e-8, 1.0) ** (1 / 2.2)


def mtf50(psf_sigma: float, olpf: float) -> float:
    """Frequency (cycles per pixel) where the optics' MTF (times a 1-pixel aperture) falls to 0.5, along a row."""
    freqs = np.linspace(0.0, 0.5, 5001)
    mtf = optics_mtf((2, 10000), psf_sigma, olpf)[0]
    values = np.interp(freqs, np.fft.rfftfreq(10000), mtf) * np.sinc(freqs)
    below = np.nonzero(values < 0.5)[0]
    return float(freqs[below[0]]) if below.size else 0.5


def make_data(work: Path, psf_sigma: float, shots: int, olpf: float = 1.0, tone_curve: bool = True) -> Path:
    """The default photos through the ``nikon-d90`` profile with other optics (or no inverse tone curve)."""
    camera = dataclasses.replace(get_camera("nikon-d90"), psf_sigma=psf_sigma, olpf=olpf)
    name = f"psf-{psf_sigma:g}" + ("" if olpf == 1.0 else f"-olpf-{olpf:g}") + ("" if tone_curve else "-no-tone")
    folder = work / name
    if not tone_curve:  # an ablation: the photos' rendered tone curve left in the RAW data
        original = virtual_camera.inverse_tone_curve
        virtual_camera.inverse_tone_curve = lambda rgb: np.clip(np.asarray(rgb, dtype=np.float64), 0.0, 1.0)
    try:
        synthesize("default", camera, folder / "raw", shots_per_photo=shots, seed=0)
    finally:
        if not tone_curve:
            virtual_camera.inverse_tone_curve = original
    prepare(folder / "raw", folder / "data", camera="nikon-d90", workers=2)
    return folder / "data"


def short_schedule(model: nn.Module, dataset: Dataset, steps: int = 3000, lr: float = 1e-3) -> float:
    """Train ``model`` with the sweep's schedule; returns the seconds it took."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    start = time.perf_counter()
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = 1e-5 + 0.5 * (lr - 1e-5) * (1 + np.cos(np.pi * step / steps))
        x, y = sample_patches(dataset.train, 20, 64, rng)
        optimizer.zero_grad(set_to_none=True)
        nip_loss(model(x), y).backward()
        optimizer.step()
    return time.perf_counter() - start


def sweep(args: argparse.Namespace) -> list[dict]:
    rows = []
    settings = [(float(v), 1.0, True) for v in args.sigmas.split(",") if v]
    if args.ablations:  # no optics at all; the profile's optics without undoing the photos' tone curve
        settings += [(0.0, 0.0, True), (get_camera("nikon-d90").psf_sigma, 1.0, False)]
    for sigma, olpf, tone_curve in settings:
        dataset = Dataset.load(make_data(args.work, sigma, args.shots, olpf, tone_curve))
        matrix = np.asarray(dataset.train[0].meta["cam_to_srgb"], dtype=np.float32)
        val = fidelity_images(dataset.val)
        row: dict = {"psf_sigma": sigma, "olpf": olpf, "tone_curve": tone_curve, "mtf50": round(mtf50(sigma, olpf), 3),
                     "train_images": len(dataset.train), "val_images": len(val)}
        row["inet_init_psnr"] = round(nip_fidelity(nip_module.INet(matrix), val)["psnr"], 2)
        models = [("inet", nip_module.INet(matrix))]
        if tone_curve and olpf == 1.0 and sigma in [float(v) for v in args.exact_gamma.split(",") if v]:
            models.append(("exact_gamma", ExactGammaINet(matrix)))
        for name, model in models:
            seconds = short_schedule(model, dataset)
            fidelity = nip_fidelity(model, val)
            row[f"{name}_psnr"] = round(fidelity["psnr"], 2)
            row[f"{name}_psnr_std"] = round(fidelity["psnr_std"], 2)
            row[f"{name}_ssim"] = round(fidelity["ssim"], 4)
            row[f"{name}_seconds"] = round(seconds, 1)
        print(json.dumps(row), flush=True)
        rows.append(row)
    print("\n| psf_sigma (px) | OLPF (px) | inverse tone curve | MTF50 (cycles/px) | INet before training (dB) | "
          "INet PSNR (dB) | INet SSIM | INet, exact gamma (dB) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        exact = f"{r['exact_gamma_psnr']:.2f}" if "exact_gamma_psnr" in r else "-"
        print(f"| {r['psf_sigma']:g} | {r['olpf']:g} | {'yes' if r['tone_curve'] else 'no'} | {r['mtf50']:.3f} | "
              f"{r['inet_init_psnr']:.2f} | {r['inet_psnr']:.2f} +- {r['inet_psnr_std']:.2f} | {r['inet_ssim']:.4f} | "
              f"{exact} |")
    return rows


def paper(args: argparse.Namespace) -> dict:
    sigma = get_camera("nikon-d90").psf_sigma
    data = make_data(args.work, sigma, args.shots)
    config = {"nip": "inet", "preset": "paper", "data": str(data), "max_time_s": args.max_time}
    summary = train_nip(config, args.work / f"inet-paper-psf-{sigma:g}", resume=True, device="cpu", progress=False)
    row = {"psf_sigma": sigma, "preset": "paper", **{k: summary[k] for k in ("psnr", "ssim", "steps", "stopped",
                                                                               "wall_time_s", "fidelity")}}
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    one = commands.add_parser("sweep", help="INet fidelity against the lens blur")
    one.add_argument("--sigmas", default="0,0.3,0.6,1,1.5,2")
    one.add_argument("--shots", type=int, default=4, help="shots per photo (default 4)")
    one.add_argument("--exact-gamma", default="0.6", help="sigmas at which to train the exact-gamma INet too")
    one.add_argument("--ablations", action="store_true",
                     help="also: no optics at all, and the profile's optics without the inverse tone curve")
    two = commands.add_parser("paper", help="INet with the paper preset on the profile's optics")
    two.add_argument("--shots", type=int, default=8, help="shots per photo (default 8, as the demo)")
    two.add_argument("--max-time", type=float, default=5400.0, help="wall-clock cap in seconds")
    for sub in (one, two):
        sub.add_argument("--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "ni-virtual-camera")
    args = parser.parse_args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load {os.getloadavg()[0]:.2f}", flush=True)
    sweep(args) if args.command == "sweep" else paper(args)


if __name__ == "__main__":
    main()
