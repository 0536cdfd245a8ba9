"""How faithfully a NIP reproduces the standard ISP: PSNR and SSIM of whole developed images.

This is the one fidelity measure of the toolkit, used by NIP pre-training, F / F+N training, ``evaluate``,
summaries and the report. Each image of a split is developed whole by the NIP (tile by tile, without seams:
:func:`~neuralimaging.acquisition.nip.develop_tiled`) and compared with its python-ISP target, leaving out a
border of :data:`BORDER` pixels on every side, where both pipelines see only mirrored context. PSNR
(``data_range`` 1, i.e. on the [0, 255] scale) and SSIM are computed per image and averaged over images, as
the paper averages over its 512x512 validation patches. See ``docs/measuring.md``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from neuralimaging.acquisition.nip import develop_tiled
from neuralimaging.data.dataset import Sample
from neuralimaging.errors import InputError
from neuralimaging.metrics import psnr_per_image, ssim_per_image

__all__ = ["BORDER", "DEFINITION", "fidelity_images", "nip_fidelity"]

_log = logging.getLogger(__name__)

BORDER = 8
"""Pixels left out on every side of a developed image before comparing it with its target."""

DEFINITION = f"whole developed images, {BORDER}-pixel border excluded, PSNR and SSIM per image averaged over images"
"""The fidelity measure in words, recorded next to every figure it produces."""


def fidelity_images(samples: Sequence[Sample], limit: int | None = None) -> list[Sample]:
    """Up to ``limit`` images of a split, taken in turn from each source photo (all of them when ``None``).

    Shots of one photo share their content, so a capped set covers every photo before it repeats one.
    """
    groups: dict[str, list[Sample]] = {}
    for sample in sorted(samples, key=lambda s: s.name):
        key = (sample.meta.get("shot") or {}).get("photo") or sample.name
        groups.setdefault(key, []).append(sample)
    order: list[Sample] = []
    depth = max((len(g) for g in groups.values()), default=0)
    for i in range(depth):
        order += [g[i] for g in groups.values() if i < len(g)]
    return order if limit is None else order[: int(limit)]


@torch.no_grad()
def nip_fidelity(
    model: nn.Module,
    samples: Sequence[Sample],
    *,
    border: int = BORDER,
    device: str | torch.device | None = None,
    tile: int = 512,
) -> dict[str, Any]:
    """PSNR and SSIM of ``model``'s developments of ``samples`` against their python-ISP targets.

    Args:
        model: a NIP ``(N, 4, h, w) -> (N, 3, 2h, 2w)`` (developed in float32, in eval mode).
        samples: prepared images (e.g. ``fidelity_images(dataset.test)``).
        border: pixels left out on every side of each ``(3, 2h, 2w)`` image.
        device: where to run the model (default: where its weights are).
        tile: tile side in RGGB pixels for :func:`~neuralimaging.acquisition.nip.develop_tiled`.

    Returns:
        ``psnr`` (dB) and ``ssim``: means over images; ``psnr_std``, ``ssim_std``, ``mse`` (mean squared error
        on the [0, 255] scale, mean over images), ``images``, ``border``, ``per_image`` (``name``, ``psnr``,
        ``ssim``, ``mse``).
    """
    if not samples:
        raise InputError("no images to measure fidelity on")
    if border < 0:
        raise InputError(f"border must be >= 0 pixels, got {border}")
    rows = []
    for sample in samples:
        rggb = torch.from_numpy(sample.rggb)[None]
        target = torch.from_numpy(sample.target)[None]
        height, width = target.shape[-2:]
        if min(height, width) <= 2 * border + 11:
            raise InputError(f"image {sample.name} ({height}x{width}) is too small for a {border}-pixel border")
        rgb = develop_tiled(model, rggb, tile=tile, device=device).clamp(0.0, 1.0)
        inner = (..., slice(border, height - border), slice(border, width - border))
        rows.append({
            "name": sample.name,
            "psnr": float(psnr_per_image(rgb[inner], target[inner])[0]),
            "ssim": float(ssim_per_image(rgb[inner], target[inner])[0]),
            "mse": float(((rgb[inner].double() - target[inner].double()) * 255.0).square().mean()),
        })
        _log.debug("fidelity of %s: PSNR %.2f dB, SSIM %.4f", sample.name, rows[-1]["psnr"], rows[-1]["ssim"])
    psnr = np.array([r["psnr"] for r in rows])
    ssim = np.array([r["ssim"] for r in rows])
    finite = psnr[np.isfinite(psnr)]
    return {
        "psnr": float(finite.mean()) if finite.size else float("inf"),
        "psnr_std": float(finite.std()) if finite.size > 1 else 0.0,
        "ssim": float(ssim.mean()),
        "ssim_std": float(ssim.std()) if ssim.size > 1 else 0.0,
        "mse": float(np.mean([r["mse"] for r in rows])),
        "images": len(rows),
        "border": int(border),
        "per_image": rows,
    }
