"""Standard imaging pipelines: ``python`` (the paper's) and ``libraw``, and a torch twin of ``python``.

``python`` is the pipeline that produces the NIPs' training targets in Korus & Memon (Sec. 3.1): black/white
normalization, as-shot white balance, Menon 2007 (DDFAPD) demosaicing via colour-demosaicing, the camera->sRGB
matrix, clipping, gamma ``x ** (1/2.2)`` (or the sRGB curve as an option), clipping. No tone curve, no
auto-exposure.

``libraw`` is ``rawpy.postprocess`` set up to be comparable (:data:`LIBRAW_SETTINGS`): camera white balance,
sRGB output primaries, the same gamma curve, no auto-brightening, no automatic white-level adjustment,
highlights clipped, 16-bit output; LibRaw's default AHD demosaicing (LibRaw has no Menon).

:func:`develop_rggb_torch` / :class:`PythonISP` compute ``python`` from demosaicing on in torch (Menon 2007 via
:func:`neuralimaging.acquisition.demosaic.menon2007`), batched, on any device and under autograd; it equals
:func:`develop_rggb` up to float32 rounding. It is the fixed baseline of the ``menon`` NIP option
(:class:`neuralimaging.acquisition.nip.UNet`).
"""

from __future__ import annotations

import os
import threading
from typing import Literal

import numpy as np
import rawpy
import torch
import torch.nn as nn

from neuralimaging.acquisition.bayer import check_cfa, from_rggb, normalize_mosaic
from neuralimaging.acquisition.demosaic import menon2007, rggb_to_mosaic
from neuralimaging.acquisition.raw import RawImage, read_raw
from neuralimaging.errors import InputError

__all__ = [
    "GAMMAS",
    "LIBRAW_SETTINGS",
    "PIPELINES",
    "PythonISP",
    "apply_gamma",
    "apply_orientation",
    "demosaic",
    "develop",
    "develop_libraw",
    "develop_mosaic",
    "develop_python",
    "develop_rggb",
    "develop_rggb_torch",
    "gamma_torch",
]

GAMMAS = ("2.2", "srgb")
PIPELINES = ("python", "libraw")

LIBRAW_SETTINGS: dict = {
    "use_camera_wb": True,  # as-shot white balance, like the python pipeline
    "output_color": rawpy.ColorSpace.sRGB,  # camera -> sRGB primaries with the file's colour matrix
    "no_auto_bright": True,  # no histogram-based brightening
    "bright": 1.0,
    "adjust_maximum_thr": 0.0,  # keep the file's white level (LibRaw lowers it by default)
    "highlight_mode": rawpy.HighlightMode.Clip,
    "output_bps": 16,
    "user_flip": None,  # honour the file's orientation
}
# rawpy gamma (power, toe slope): (2.2, 0) is the pure power curve x^(1/2.2); (2.4, 12.92) is sRGB.
_LIBRAW_GAMMA = {"2.2": (2.2, 0.0), "srgb": (2.4, 12.92)}


def apply_gamma(linear: np.ndarray, gamma: Literal["2.2", "srgb"] = "2.2") -> np.ndarray:
    """Gamma-encode linear values in [0, 1]: ``x ** (1/2.2)`` (paper) or the sRGB curve (IEC 61966-2-1)."""
    x = np.clip(linear, 0.0, 1.0)
    if gamma == "2.2":
        return np.power(x, 1.0 / 2.2)
    if gamma == "srgb":
        return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1.0 / 2.4) - 0.055)
    raise InputError(f"gamma must be one of {', '.join(GAMMAS)}, got {gamma!r}")


def apply_orientation(rgb: np.ndarray, orientation: int) -> np.ndarray:
    """Turn a stored ``(C, H, W)`` image upright according to its EXIF orientation code (1-8)."""
    ops = {
        1: lambda x: x,
        2: lambda x: x[:, :, ::-1],
        3: lambda x: x[:, ::-1, ::-1],
        4: lambda x: x[:, ::-1, :],
        5: lambda x: x.transpose(0, 2, 1),
        6: lambda x: np.rot90(x, k=-1, axes=(1, 2)),
        7: lambda x: x.transpose(0, 2, 1)[:, ::-1, ::-1],
        8: lambda x: np.rot90(x, k=1, axes=(1, 2)),
    }
    if orientation not in ops:
        raise InputError(f"EXIF orientation must be in 1..8, got {orientation}")
    return np.ascontiguousarray(ops[orientation](rgb))


_COLOUR_DTYPE_LOCK = threading.Lock()


def demosaic(mosaic: np.ndarray, cfa: str) -> np.ndarray:
    """Menon 2007 (DDFAPD) demosaicing of an ``(H, W)`` mosaic -> ``float32 (3, H, W)`` (not clipped).

    colour-demosaicing computes in colour's default float type; it is switched to float32 for the call
    (faster; largest deviation from float64 about 2e-7, far below a 16-bit level) and back after it.
    That setting is global to the process, so calls from several threads take turns.
    """
    import colour  # here, not at import time: colour loads matplotlib (slow), and most users of this module
    from colour_demosaicing import demosaicing_CFA_Bayer_Menon2007  # never reach the reference demosaicer

    pattern = check_cfa(cfa)
    with _COLOUR_DTYPE_LOCK:
        previous = colour.constants.DTYPE_FLOAT_DEFAULT
        colour.utilities.set_default_float_dtype(np.float32)
        try:
            rgb = demosaicing_CFA_Bayer_Menon2007(np.asarray(mosaic, dtype=np.float32), pattern)
        finally:
            colour.utilities.set_default_float_dtype(previous)
    return np.ascontiguousarray(rgb.transpose(2, 0, 1), dtype=np.float32)


def develop_mosaic(
    mosaic: np.ndarray,
    cfa: str,
    cam_to_srgb: np.ndarray,
    gamma: Literal["2.2", "srgb"] = "2.2",
) -> np.ndarray:
    """Steps 3-5 of the python ISP on a normalized, white-balanced mosaic ``(H, W)`` in [0, 1].

    Returns:
        ``float32 (3, H, W)`` in [0, 1].
    """
    camera_rgb = demosaic(mosaic, cfa)
    matrix = np.asarray(cam_to_srgb, dtype=np.float32).reshape(3, 3)
    srgb = np.einsum("ij,jhw->ihw", matrix, camera_rgb)
    return apply_gamma(np.clip(srgb, 0.0, 1.0), gamma).astype(np.float32)


def develop_rggb(
    rggb: np.ndarray,
    cam_to_srgb: np.ndarray,
    gamma: Literal["2.2", "srgb"] = "2.2",
) -> np.ndarray:
    """The paper's python ISP from a normalized RGGB stack (the NIP training target).

    Args:
        rggb: ``float32 (4, h, w)`` in [0, 1] after black/white normalization and white balance
            (:func:`neuralimaging.acquisition.bayer.normalize`).
        cam_to_srgb: ``(3, 3)`` camera -> linear sRGB.
        gamma: ``"2.2"`` (paper) or ``"srgb"``.

    Returns:
        ``float32 (3, 2h, 2w)`` in [0, 1].
    """
    rggb = np.asarray(rggb)
    if rggb.ndim != 3 or rggb.shape[0] != 4:
        raise InputError(f"expected an RGGB stack of shape (4, h, w), got {rggb.shape}")
    return develop_mosaic(from_rggb(rggb, "RGGB"), "RGGB", cam_to_srgb, gamma)


def gamma_torch(linear: torch.Tensor, gamma: Literal["2.2", "srgb"] = "2.2") -> torch.Tensor:
    """:func:`apply_gamma` in torch: clip to [0, 1], then ``x ** (1/2.2)`` or the sRGB curve.

    The curve's slope is infinite at 0; the gradient is taken from ``max(x, 1e-6)`` so that it stays finite.
    """
    if gamma not in GAMMAS:
        raise InputError(f"gamma must be one of {', '.join(GAMMAS)}, got {gamma!r}")
    x = linear.clamp(0.0, 1.0)
    safe = x.clamp_min(1e-6)
    if gamma == "2.2":
        return torch.where(x > 0, safe.pow(1.0 / 2.2), x)
    return torch.where(x <= 0.0031308, 12.92 * x, 1.055 * safe.pow(1.0 / 2.4) - 0.055)


def develop_rggb_torch(
    rggb: torch.Tensor,
    cam_to_srgb: torch.Tensor,
    gamma: Literal["2.2", "srgb"] = "2.2",
) -> torch.Tensor:
    """:func:`develop_rggb` in torch: Menon 2007 demosaicing, camera -> sRGB matrix, clip, gamma.

    Args:
        rggb: ``(N, 4, h, w)`` normalized, white-balanced RGGB stack in [0, 1].
        cam_to_srgb: ``(3, 3)`` camera RGB -> linear sRGB.
        gamma: ``"2.2"`` (paper) or ``"srgb"``.

    Returns:
        ``(N, 3, 2h, 2w)`` in [0, 1], differentiable with respect to ``rggb`` and ``cam_to_srgb``.
    """
    if tuple(cam_to_srgb.shape) != (3, 3):
        raise InputError(f"cam_to_srgb must be a 3x3 matrix, got shape {tuple(cam_to_srgb.shape)}")
    camera_rgb = menon2007(rggb_to_mosaic(rggb), "RGGB")
    srgb = torch.einsum("ij,njhw->nihw", cam_to_srgb.to(camera_rgb.dtype), camera_rgb)
    return gamma_torch(srgb, gamma)


class PythonISP(nn.Module):
    """The python ISP after normalization (:func:`develop_rggb_torch`) as a module without trainable parameters.

    Args:
        cam_to_srgb: ``(3, 3)`` camera RGB -> linear sRGB (a buffer, saved with the state dict); identity when
            omitted.
        gamma: ``"2.2"`` (paper) or ``"srgb"``.

    Shape:
        ``(N, 4, h, w)`` -> ``(N, 3, 2h, 2w)``.
    """

    def __init__(
        self, cam_to_srgb: np.ndarray | torch.Tensor | list | None = None, gamma: Literal["2.2", "srgb"] = "2.2"
    ) -> None:
        super().__init__()
        if gamma not in GAMMAS:
            raise InputError(f"gamma must be one of {', '.join(GAMMAS)}, got {gamma!r}")
        matrix = torch.eye(3) if cam_to_srgb is None else torch.as_tensor(np.asarray(cam_to_srgb, dtype=np.float32))
        if matrix.shape != (3, 3):
            raise InputError(f"cam_to_srgb must be a 3x3 matrix, got shape {tuple(matrix.shape)}")
        self.gamma = gamma
        self.register_buffer("cam_to_srgb", matrix.float())

    def forward(self, rggb: torch.Tensor) -> torch.Tensor:
        return develop_rggb_torch(rggb, self.cam_to_srgb, self.gamma)


def develop_python(raw: RawImage, *, gamma: Literal["2.2", "srgb"] = "2.2", orient: bool = True) -> np.ndarray:
    """The python ISP on a whole RAW image (native CFA, full size): ``float32 (3, H, W)`` in [0, 1]."""
    norm = normalize_mosaic(raw.mosaic, raw.cfa, raw.black_level, raw.white_level, raw.wb_gains)
    rgb = develop_mosaic(norm, raw.cfa, raw.cam_to_srgb, gamma)
    return apply_orientation(rgb, raw.orientation) if orient else rgb


def develop_libraw(
    path: RawImage | str | os.PathLike, *, gamma: Literal["2.2", "srgb"] = "2.2", orient: bool = True
) -> np.ndarray:
    """``rawpy.postprocess`` with :data:`LIBRAW_SETTINGS`: ``float32 (3, H, W)`` in [0, 1]."""
    raw = path if isinstance(path, RawImage) else read_raw(path)  # validates the file, one-line errors
    settings = dict(LIBRAW_SETTINGS, gamma=_LIBRAW_GAMMA[gamma] if gamma in _LIBRAW_GAMMA else None)
    if settings["gamma"] is None:
        raise InputError(f"gamma must be one of {', '.join(GAMMAS)}, got {gamma!r}")
    if not orient:
        settings["user_flip"] = 0
    try:
        with rawpy.imread(str(raw.path)) as handle:
            rgb16 = handle.postprocess(**settings)
    except rawpy.LibRawError as error:
        raise InputError(f"{raw.path}: LibRaw could not develop the file ({error})") from error
    return np.ascontiguousarray(rgb16.transpose(2, 0, 1), dtype=np.float32) / np.float32(65535.0)


def develop(
    raw_or_path: RawImage | str | os.PathLike,
    pipeline: Literal["python", "libraw"] = "python",
    *,
    gamma: Literal["2.2", "srgb"] = "2.2",
    orient: bool = True,
) -> np.ndarray:
    """Develop a RAW image with a standard pipeline.

    Args:
        raw_or_path: :class:`RawImage` or a RAW file.
        pipeline: ``"python"`` (the paper's) or ``"libraw"`` (``rawpy.postprocess``).
        gamma: ``"2.2"`` or ``"srgb"``.
        orient: turn the image upright by its orientation tag.

    Returns:
        ``float32 (3, H, W)`` in [0, 1] (``H, W`` upright when ``orient``).
    """
    if pipeline == "python":
        raw = raw_or_path if isinstance(raw_or_path, RawImage) else read_raw(raw_or_path)
        return develop_python(raw, gamma=gamma, orient=orient)
    if pipeline == "libraw":
        return develop_libraw(raw_or_path, gamma=gamma, orient=orient)
    raise InputError(f"pipeline must be one of {', '.join(PIPELINES)}, got {pipeline!r}")
