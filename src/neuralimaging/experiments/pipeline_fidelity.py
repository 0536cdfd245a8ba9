"""How close each pipeline comes to the python-ISP target: PSNR/SSIM per file and pipeline (paper Table 1).

The reference is the paper's python ISP applied to the normalized RGGB stack of each file
(:func:`~neuralimaging.acquisition.isp.develop_rggb`, the NIPs' training target), without orientation. Every
pipeline's output is compared on the same pixels: ``python`` and ``libraw`` develop the full mosaic and are
cropped to the RGGB region; NIPs develop the stack (tiled).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from neuralimaging.acquisition.bayer import cfa_offset, normalize
from neuralimaging.acquisition.isp import develop, develop_rggb
from neuralimaging.acquisition.nip import develop_tiled
from neuralimaging.acquisition.raw import read_raw
from neuralimaging.errors import InputError
from neuralimaging.metrics import psnr, ssim

__all__ = ["compare_file", "compare_pipelines", "summarize"]

STANDARD = ("python", "libraw")


def compare_file(
    path: str | os.PathLike[str],
    models: Mapping[str, nn.Module] | None = None,
    pipelines: Sequence[str] = STANDARD,
    *,
    tile: int = 512,
    device: str | torch.device | None = None,
) -> list[dict[str, Any]]:
    """PSNR (dB) and SSIM of each pipeline on one RAW file against the python-ISP target.

    Args:
        path: RAW file.
        models: name -> NIP (e.g. ``{"unet": load_nip(run_dir)}``).
        pipelines: standard pipelines to include (``python``, ``libraw``).
        tile: tile size for the NIPs (RGGB pixels).
        device: where the NIPs run.

    Returns:
        One dict per pipeline: ``file``, ``pipeline``, ``psnr``, ``ssim``.
    """
    raw = read_raw(path)
    stack = normalize(raw)
    target = torch.from_numpy(develop_rggb(stack, raw.cam_to_srgb))[None]
    h2, w2 = target.shape[-2:]
    dy, dx = cfa_offset(raw.cfa)
    outputs: dict[str, torch.Tensor] = {}
    for name in pipelines:
        if name not in STANDARD:
            raise InputError(f"pipeline must be one of {', '.join(STANDARD)}, got {name!r}")
        rgb = develop(raw if name == "python" else raw.path, name, orient=False)
        if rgb.shape[-2] < dy + h2 or rgb.shape[-1] < dx + w2:
            raise InputError(f"{raw.path}: {name} output {rgb.shape[-2:]} does not cover the sensor area {h2}x{w2}")
        outputs[name] = torch.from_numpy(np.ascontiguousarray(rgb[:, dy : dy + h2, dx : dx + w2]))[None]
    for name, model in (models or {}).items():
        outputs[name] = develop_tiled(model, torch.from_numpy(stack)[None], tile=tile, device=device)
    return [
        {"file": Path(path).name, "pipeline": name, "psnr": psnr(out, target), "ssim": ssim(out, target)}
        for name, out in outputs.items()
    ]


def compare_pipelines(
    paths: Sequence[str | os.PathLike[str]],
    models: Mapping[str, nn.Module] | None = None,
    pipelines: Sequence[str] = STANDARD,
    *,
    tile: int = 512,
    device: str | torch.device | None = None,
) -> list[dict[str, Any]]:
    """:func:`compare_file` for every file; rows of all files in order."""
    rows: list[dict[str, Any]] = []
    for path in paths:
        rows.extend(compare_file(path, models, pipelines, tile=tile, device=device))
    return rows


def summarize(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Mean PSNR/SSIM per pipeline (identical images, PSNR = inf, count as inf), in first-seen order."""
    order: list[str] = []
    for row in rows:
        if row["pipeline"] not in order:
            order.append(row["pipeline"])
    table = []
    for name in order:
        mine = [r for r in rows if r["pipeline"] == name]
        table.append({
            "pipeline": name,
            "files": len(mine),
            "psnr": float(np.mean([r["psnr"] for r in mine])),
            "ssim": float(np.mean([r["ssim"] for r in mine])),
        })
    return table
