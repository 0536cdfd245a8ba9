"""Differentiable JPEG that follows libjpeg closely, and libjpeg itself (through Pillow) as a reference.

The differentiable codec (dJPEG) runs the baseline JPEG pipeline on tensors: RGB -> YCbCr (JFIF), optional
4:2:0 chroma down-sampling, level shift, 8x8 DCT (matrix products), quantization with the IJG tables scaled
by libjpeg's quality rule, rounding, de-quantization, inverse DCT, chroma up-sampling, YCbCr -> RGB. After
Korus & Memon, "Neural Imaging Pipelines - the Scourge or Hope of Forensics?" (section 3.2), with libjpeg's
own details added so that ``rounding="none"`` reproduces Pillow's decode of Pillow's encode:

- 8-bit rounding of the input RGB, of the Y/Cb/Cr samples (libjpeg's fixed-point colour conversion), of the
  inverse DCT output and of the decoded RGB (``jccolor.c``, ``jdcolor.c``);
- libjpeg's accurate integer DCT and inverse DCT ("islow", ``jfdctint.c``, ``jidctint.c``), the default of
  libjpeg-turbo, and its quantization, rounding half away from zero (``jcdctmgr.c``);
- 4:2:0 down-sampling is libjpeg's ``h2v2_downsample`` (2x2 box with the alternating bias 1, 2) after its
  edge replication, and up-sampling is its "fancy" triangular filter ``h2v2_fancy_upsample``
  (3/4-1/4 weights in each direction, rounding +8 / +7 then >> 4).

With these, ``rounding="none"`` gives the same 8-bit decode as Pillow's libjpeg-turbo, bit for bit, on the
bundled photos at every quality tested, in 4:4:4 and 4:2:0 (``docs/benchmarks.md``).

Rounding modes (the quantization of DCT coefficients):

- ``none``: exact rounding, zero gradient;
- ``sin``: ``x - sin(2 pi x) / (2 pi)`` (the paper's approximation, smooth);
- ``soft``: exact forward, gradient of ``sin``;
- ``harmonic``: ``x + sum_{k=1..K} (-1)^k sin(2 pi k x) / (k pi)`` (Fourier series of round, K = 5);
- ``ste``: exact forward, identity gradient (straight-through).

In the exact-forward modes (``none``, ``soft``, ``ste``) the forward pass is libjpeg's integer arithmetic
(sample roundings, integer DCTs) and the backward pass that of the real-valued codec (exact DCT, no sample
rounding); in the smooth modes (``sin``, ``harmonic``) the codec is real-valued and smooth end to end
(``exact`` overrides this choice).

Example:
    >>> x = torch.rand(2, 3, 64, 64)
    >>> y = jpeg_compress(x, 50, rounding="soft", subsampling="4:2:0")
    >>> y.shape
    torch.Size([2, 3, 64, 64])
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from neuralimaging.errors import InputError
from neuralimaging.metrics import psnr_per_image
from neuralimaging.registry import register

__all__ = [
    "ROUNDING_MODES",
    "SUBSAMPLING_MODES",
    "CODECS",
    "LUMA_TABLE",
    "CHROMA_TABLE",
    "approximate_round",
    "quantization_tables",
    "rgb_to_ycbcr",
    "ycbcr_to_rgb",
    "jpeg_compress",
    "libjpeg_compress",
    "compare_with_libjpeg",
    "DifferentiableJPEG",
]

ROUNDING_MODES = ("none", "sin", "soft", "harmonic", "ste")
SUBSAMPLING_MODES = ("4:4:4", "4:2:0")
CODECS = ("differentiable", "libjpeg")
_EXACT_MODES = ("none", "soft", "ste")

# The IJG standard tables (JPEG spec Annex K), natural (row-major) order: row = vertical frequency.
LUMA_TABLE: tuple[int, ...] = (
    16, 11, 10, 16, 24, 40, 51, 61,
    12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77,
    24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101,
    72, 92, 95, 98, 112, 100, 103, 99,
)  # fmt: skip
CHROMA_TABLE: tuple[int, ...] = (
    17, 18, 24, 47, 99, 99, 99, 99,
    18, 21, 26, 66, 99, 99, 99, 99,
    24, 26, 56, 99, 99, 99, 99, 99,
    47, 66, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99,
)  # fmt: skip


# ----------------------------------------------------------------------------------------------- checks


def _check_choice(value: str, choices: Sequence[str], what: str) -> str:
    if value not in choices:
        raise InputError(f"{what} must be one of {', '.join(choices)}; got {value!r}")
    return value


def _check_image(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor):
        raise InputError(f"expected an image tensor (N, 3, H, W), got {type(x).__name__}")
    if x.dim() != 4 or x.shape[1] != 3 or x.shape[2] < 1 or x.shape[3] < 1:
        raise InputError(f"expected an RGB batch of shape (N, 3, H, W), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise InputError(f"expected a floating-point image in [0, 1], got dtype {x.dtype}")


def _quality_tensor(quality: int | float | torch.Tensor, n: int, device: torch.device) -> torch.Tensor:
    """Quality as float64 ``(n,)`` of integers in [1, 100]; an InputError for anything else."""
    if isinstance(quality, torch.Tensor):
        q = quality.detach().to(device=device, dtype=torch.float64).reshape(-1)
        if q.numel() == 1:
            q = q.expand(n)
        elif q.numel() != n:
            raise InputError(f"quality has {q.numel()} values; expected one, or one per image ({n})")
    elif isinstance(quality, (int, float, np.integer, np.floating)) and not isinstance(quality, bool):
        q = torch.full((n,), float(quality), dtype=torch.float64, device=device)
    else:
        raise InputError(f"quality must be an integer in [1, 100] or a tensor of them, got {quality!r}")
    bad = ~torch.isfinite(q) | (q != torch.round(q)) | (q < 1) | (q > 100)
    if bool(bad.any()):
        raise InputError(f"quality must be an integer in [1, 100], got {q[bad][0].item():g}")
    return q


# --------------------------------------------------------------------------------------------- rounding


def _round_half_away(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.floor(x.abs() + 0.5)


def _sin_round(x: torch.Tensor) -> torch.Tensor:
    return x - torch.sin(2 * math.pi * x) / (2 * math.pi)


def _harmonic_round(x: torch.Tensor, harmonics: int) -> torch.Tensor:
    out = x
    for k in range(1, harmonics + 1):
        out = out + ((-1) ** k) * torch.sin(2 * math.pi * k * x) / (k * math.pi)
    return out


def approximate_round(x: torch.Tensor, mode: str = "sin", *, harmonics: int = 5) -> torch.Tensor:
    """Round (half away from zero, as libjpeg's quantizer) or one of its differentiable approximations.

    Args:
        x: any tensor.
        mode: ``none`` (exact, zero gradient), ``sin``, ``soft`` (exact forward, sin gradient),
            ``harmonic`` (K-term Fourier series of round), ``ste`` (exact forward, identity gradient).
        harmonics: K for ``harmonic`` (>= 1).

    Returns:
        A tensor of the same shape.
    """
    _check_choice(mode, ROUNDING_MODES, "rounding")
    if mode == "none":
        return _round_half_away(x)
    if mode == "sin":
        return _sin_round(x)
    if mode == "soft":
        smooth = _sin_round(x)
        return smooth + (_round_half_away(x) - smooth).detach()
    if mode == "harmonic":
        if int(harmonics) < 1:
            raise InputError(f"harmonics must be >= 1, got {harmonics}")
        return _harmonic_round(x, int(harmonics))
    return x + (_round_half_away(x) - x).detach()


def _exact(smooth: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
    """``exact`` in the forward pass, the gradient of ``smooth`` in the backward pass."""
    return smooth + (exact - smooth).detach()


# ------------------------------------------------------------------------------------ tables and colour


def _base_table(table: torch.Tensor | Sequence[int] | None, default: Sequence[int], like: torch.Tensor) -> torch.Tensor:
    """A base table as ``(1 or N, 64)``; keeps ``nn.Parameter`` tables in the graph."""
    if table is None:
        return torch.tensor(default, dtype=torch.float64, device=like.device).reshape(1, 64)
    if not isinstance(table, torch.Tensor):
        table = torch.as_tensor(table, dtype=torch.float64)
    if table.shape[-2:] == (8, 8):
        table = table.reshape(*table.shape[:-2], 64)
    if table.shape[-1] != 64 or table.dim() > 2:
        raise InputError(f"a quantization table must have shape (8, 8), (64,) or (N, 8, 8), got {tuple(table.shape)}")
    return table.reshape(-1, 64).to(device=like.device)


def quantization_tables(
    quality: int | torch.Tensor,
    luma_table: torch.Tensor | Sequence[int] | None = None,
    chroma_table: torch.Tensor | Sequence[int] | None = None,
    *,
    n: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Luma and chroma tables scaled by libjpeg's quality rule (``jpeg_set_quality``, baseline).

    ``s = 5000 // q if q < 50 else 200 - 2 q``; ``T = clip((T0 * s + 50) // 100, 1, 255)``. Base tables that
    require gradients (``nn.Parameter``) get the floor and clip in the forward pass and an identity gradient.

    Args:
        quality: integer in [1, 100], or a tensor ``(N,)`` of them.
        luma_table: base luminance table ``(8, 8)``/``(N, 8, 8)``; the IJG table when None.
        chroma_table: base chrominance table, likewise.
        n: batch size (default: the number of qualities).

    Returns:
        ``(luma, chroma)``, each ``(N, 64)`` in natural order (float64 unless a base table is a float32
        parameter).
    """
    q_in = quality if isinstance(quality, torch.Tensor) else torch.tensor([quality])
    if n is None:
        n = max(1, int(q_in.numel()))
    device = q_in.device if isinstance(quality, torch.Tensor) else torch.device("cpu")
    q = _quality_tensor(quality, n, device)
    scale = torch.where(q < 50, torch.floor(5000.0 / q), 200.0 - 2.0 * q).reshape(n, 1)
    out = []
    for table, default in ((luma_table, LUMA_TABLE), (chroma_table, CHROMA_TABLE)):
        base = _base_table(table, default, q)
        s = scale.to(base.dtype)
        smooth = (base * s + 50.0) / 100.0
        exact = torch.clamp(torch.floor(smooth.detach()), 1.0, 255.0)
        out.append(_exact(smooth, exact) if base.requires_grad else exact)
    return out[0].expand(n, 64), out[1].expand(n, 64)


# libjpeg's fixed-point colour conversion (jccolor.c / jdcolor.c): FIX(x) = round(x * 2^16).
_ONE_HALF = 32768.0

# JFIF's real-valued colour transforms (rows: Y, Cb, Cr and R, G, B), before the +-128 offsets of Cb and Cr.
_RGB_TO_YCC = (
    (0.299, 0.587, 0.114),
    (-0.168735892, -0.331264108, 0.5),
    (0.5, -0.418687589, -0.081312411),
)
_YCC_TO_RGB = (
    (1.0, 0.0, 1.402),
    (1.0, -0.344136286, -0.714136286),
    (1.0, 1.772, 0.0),
)


def rgb_to_ycbcr(rgb: torch.Tensor, exact: bool = False) -> torch.Tensor:
    """JFIF RGB -> YCbCr on the 8-bit scale.

    Args:
        rgb: ``(N, 3, H, W)`` in [0, 255].
        exact: reproduce libjpeg's integer conversion in the forward pass (inputs must be integers); the
            gradient is that of the real-valued transform.

    Returns:
        ``(N, 3, H, W)`` Y, Cb, Cr in [0, 255].
    """
    r, g, b = rgb.unbind(1)
    (yr, yg, yb), (ur, ug, ub), (vr, vg, vb) = _RGB_TO_YCC
    y = yr * r + yg * g + yb * b
    cb = ur * r + ug * g + ub * b + 128.0
    cr = vr * r + vg * g + vb * b + 128.0
    if exact:
        with torch.no_grad():
            ye = torch.floor((19595.0 * r + 38470.0 * g + 7471.0 * b + _ONE_HALF) / 65536.0)
            cbe = 128.0 + torch.floor((-11059.0 * r - 21709.0 * g + 32768.0 * b + _ONE_HALF - 1.0) / 65536.0)
            cre = 128.0 + torch.floor((32768.0 * r - 27439.0 * g - 5329.0 * b + _ONE_HALF - 1.0) / 65536.0)
        y, cb, cr = _exact(y, ye), _exact(cb, cbe), _exact(cr, cre)
    return torch.stack((y, cb, cr), 1)


def ycbcr_to_rgb(ycc: torch.Tensor, exact: bool = False) -> torch.Tensor:
    """JFIF YCbCr -> RGB on the 8-bit scale, clipped to [0, 255].

    Args:
        ycc: ``(N, 3, H, W)`` Y, Cb, Cr in [0, 255].
        exact: reproduce libjpeg's integer conversion in the forward pass (inputs must be integers).

    Returns:
        ``(N, 3, H, W)`` RGB in [0, 255].
    """
    y, cb, cr = ycc.unbind(1)
    cb = cb - 128.0
    cr = cr - 128.0
    (_, _, rv), (_, gu, gv), (_, bu, _) = _YCC_TO_RGB
    r = y + rv * cr
    g = y + gu * cb + gv * cr
    b = y + bu * cb
    if exact:
        with torch.no_grad():
            re = y + torch.floor((91881.0 * cr + _ONE_HALF) / 65536.0)
            ge = y + torch.floor((-22554.0 * cb - 46802.0 * cr + _ONE_HALF) / 65536.0)
            be = y + torch.floor((116130.0 * cb + _ONE_HALF) / 65536.0)
        r, g, b = _exact(r, re), _exact(g, ge), _exact(b, be)
    return torch.clamp(torch.stack((r, g, b), 1), 0.0, 255.0)


# ------------------------------------------------------------------------------------ sampling and DCT


def _round_samples(x: torch.Tensor) -> torch.Tensor:
    """libjpeg's DESCALE: round half up, identity gradient."""
    return _exact(x, torch.floor(x.detach() + 0.5))


def _dct_basis(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The orthonormal 8x8 DCT-II as a ``(64, 64)`` matrix on flattened blocks (JPEG's coefficient scale)."""
    n = torch.arange(8, dtype=torch.float64)
    d = torch.cos((2.0 * n[None, :] + 1.0) * n[:, None] * math.pi / 16.0) * 0.5
    d[0] = d[0] / math.sqrt(2.0)
    return torch.kron(d, d).to(device=device, dtype=dtype)


def _to_blocks(p: torch.Tensor) -> torch.Tensor:
    n, c, h, w = p.shape
    return p.reshape(n, c, h // 8, 8, w // 8, 8).permute(0, 1, 2, 4, 3, 5).reshape(n, c, h // 8, w // 8, 64)


def _from_blocks(b: torch.Tensor) -> torch.Tensor:
    n, c, hb, wb, _ = b.shape
    return b.reshape(n, c, hb, wb, 8, 8).permute(0, 1, 2, 4, 3, 5).reshape(n, c, hb * 8, wb * 8)


def _pad_to(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Replicate the last row/column (libjpeg's expand_right_edge / expand_bottom_edge)."""
    ph, pw = h - x.shape[-2], w - x.shape[-1]
    if ph == 0 and pw == 0:
        return x
    return F.pad(x, (0, pw, 0, ph), mode="replicate")


# libjpeg's accurate integer DCT ("islow", jfdctint.c / jidctint.c). Each 1-D pass of its butterflies is an
# integer linear map followed by DESCALE (add half, arithmetic shift right), so it is written here as an integer
# matrix (13-bit fixed-point constants; rows: outputs) and a per-output shift, evaluated exactly in float64.
_ISLOW_FDCT = (
    (1, 1, 1, 1, 1, 1, 1, 1),
    (11363, 9633, 6437, 2260, -2260, -6437, -9633, -11363),
    (10703, 4433, -4433, -10703, -10703, -4433, 4433, 10703),
    (9633, -2259, -11362, -6436, 6436, 11362, 2259, -9633),
    (1, -1, -1, 1, 1, -1, -1, 1),
    (6437, -11362, 2261, 9633, -9633, -2261, 11362, -6437),
    (4433, -10704, 10704, -4433, -4433, 10704, -10704, 4433),
    (2260, -6436, 9633, -11363, 11363, -9633, 6436, -2260),
)
# jfdctint: pass 1 scales the DC/4 outputs by 4 (<< PASS1_BITS) and descales the others by 11 bits; pass 2
# descales the DC/4 outputs by 2 bits and the others by 15. The result is 8 times the orthonormal DCT.
_FDCT_PASS1 = ((4, 0), (1, 11), (1, 11), (1, 11), (4, 0), (1, 11), (1, 11), (1, 11))
_FDCT_PASS2 = ((1, 2), (1, 15), (1, 15), (1, 15), (1, 2), (1, 15), (1, 15), (1, 15))
# jidctint: rows are output samples, columns input frequencies; descale 11 bits after pass 1, 18 after pass 2.
_ISLOW_IDCT = (
    (8192, 11363, 10703, 9633, 8192, 6437, 4433, 2260),
    (8192, 9633, 4433, -2259, -8192, -11362, -10704, -6436),
    (8192, 6437, -4433, -11362, -8192, 2261, 10704, 9633),
    (8192, 2260, -10703, -6436, 8192, 9633, -4433, -11363),
    (8192, -2260, -10703, 6436, 8192, -9633, -4433, 11363),
    (8192, -6437, -4433, 11362, -8192, -2261, 10704, -9633),
    (8192, -9633, 4433, 2259, -8192, 11362, -10704, 6436),
    (8192, -11363, 10703, -9633, 8192, -6437, 4433, -2260),
)


def _descale_rows(v: torch.Tensor, passes: tuple[tuple[int, int], ...], dim: int) -> torch.Tensor:
    """``floor((scale * v + half) / 2^shift)`` per output index along ``dim`` (libjpeg's DESCALE)."""
    scale = torch.tensor([p[0] for p in passes], dtype=v.dtype, device=v.device)
    shift = torch.tensor([2.0 ** p[1] for p in passes], dtype=v.dtype, device=v.device)
    half = torch.where(shift > 1, shift / 2, torch.zeros_like(shift))
    shape = [8 if d == (dim % v.dim()) else 1 for d in range(v.dim())]
    return torch.floor((v * scale.view(shape) + half.view(shape)) / shift.view(shape))


def _islow_fdct(blocks: torch.Tensor) -> torch.Tensor:
    """libjpeg's integer forward DCT: ``(..., 8, 8)`` level-shifted integer samples -> coefficients x 8."""
    a = torch.tensor(_ISLOW_FDCT, dtype=torch.float64, device=blocks.device)
    rows = _descale_rows(blocks.double() @ a.T, _FDCT_PASS1, -1)
    return _descale_rows(a @ rows, _FDCT_PASS2, -2)


def _islow_idct(coef: torch.Tensor) -> torch.Tensor:
    """libjpeg's integer inverse DCT: ``(..., 8, 8)`` de-quantized coefficients -> samples in [0, 255]."""
    b = torch.tensor(_ISLOW_IDCT, dtype=torch.float64, device=coef.device)
    cols = torch.floor((b @ coef.double() + 1024.0) / 2048.0)
    out = torch.floor((cols @ b.T + 131072.0) / 262144.0)
    return torch.clamp(out + 128.0, 0.0, 255.0)


def _code_planes(
    planes: torch.Tensor, tables: torch.Tensor, rounding: Callable[[torch.Tensor], torch.Tensor], exact: bool
) -> torch.Tensor:
    """Encode and decode planes ``(N, C, H, W)`` (sides multiples of 8, values in [0, 255]).

    ``tables``: ``(N, C, 64)``. Returns the decoded planes, clipped to [0, 255].
    """
    basis = _dct_basis(planes.dtype, planes.device)
    blocks = _to_blocks(planes - 128.0)
    coef = blocks @ basis.T
    if exact:  # libjpeg's integer DCT in the forward pass, the exact DCT's gradient
        with torch.no_grad():
            ints = torch.round(blocks).reshape(*blocks.shape[:-1], 8, 8)
            coef_exact = _islow_fdct(ints).reshape(blocks.shape).to(planes.dtype) / 8.0
        coef = _exact(coef, coef_exact)
    q = tables[:, :, None, None, :]
    coef = rounding(coef / q) * q
    rec = torch.clamp(coef @ basis + 128.0, 0.0, 255.0)
    if exact:
        with torch.no_grad():
            ints = torch.round(coef).reshape(*coef.shape[:-1], 8, 8)
            rec_exact = _islow_idct(ints).reshape(coef.shape).to(planes.dtype)
        rec = _exact(rec, rec_exact)
    return _from_blocks(rec)


def _downsample_h2v2(x: torch.Tensor, exact: bool) -> torch.Tensor:
    """2x2 box down-sampling (even sides); exact: libjpeg's ``(sum + bias) >> 2`` with bias 1, 2, 1, 2, ..."""
    n, c, h, w = x.shape
    s = x.reshape(n, c, h // 2, 2, w // 2, 2).sum(dim=(3, 5))
    if not exact:
        return s / 4.0
    bias = torch.ones(w // 2, dtype=x.dtype, device=x.device)
    bias[1::2] = 2.0
    return _exact(s / 4.0, torch.floor((s.detach() + bias) / 4.0))


def _upsample_h2v2_fancy(x: torch.Tensor, exact: bool) -> torch.Tensor:
    """libjpeg's triangular ("fancy") 2x up-sampling with edge replication: ``(N, C, h, w) -> (N, C, 2h, 2w)``."""
    n, c, h, w = x.shape
    above = torch.cat((x[:, :, :1], x[:, :, :-1]), 2)
    below = torch.cat((x[:, :, 1:], x[:, :, -1:]), 2)
    rows = torch.stack((3.0 * x + above, 3.0 * x + below), 3).reshape(n, c, 2 * h, w)
    left = torch.cat((rows[..., :1], rows[..., :-1]), 3)
    right = torch.cat((rows[..., 1:], rows[..., -1:]), 3)
    even = 3.0 * rows + left
    odd = 3.0 * rows + right
    if exact:
        even = _exact(even / 16.0, torch.floor((even.detach() + 8.0) / 16.0))
        odd = _exact(odd / 16.0, torch.floor((odd.detach() + 7.0) / 16.0))
    else:
        even, odd = even / 16.0, odd / 16.0
    return torch.stack((even, odd), 4).reshape(n, c, 2 * h, 2 * w)


# ------------------------------------------------------------------------- the paper's codec as one op


@lru_cache(maxsize=16)
def _sin444_constants(dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, ...]:
    """Cached matrices of :class:`_SinJPEG444`: colour transforms (with the 8-bit scale and offsets), DCT."""
    to_ycc = torch.tensor(_RGB_TO_YCC, dtype=torch.float64)
    to_rgb = torch.tensor(_YCC_TO_RGB, dtype=torch.float64)
    offset = torch.tensor([128.0, 128.0, 128.0], dtype=torch.float64)
    forward = 255.0 * to_ycc  # [0, 1] RGB -> level-shifted Y, Cb, Cr (JFIF offset 128 minus the level shift)
    forward_bias = torch.tensor([-128.0, 0.0, 0.0], dtype=torch.float64).view(3, 1)
    inverse = to_rgb / 255.0  # decoded Y, Cb, Cr in [0, 255] -> RGB in [0, 1]
    inverse_bias = (-(to_rgb @ (offset * torch.tensor([0.0, 1.0, 1.0], dtype=torch.float64))) / 255.0).view(3, 1)
    out = (forward, forward_bias, inverse, inverse_bias, _dct_basis(torch.float64, torch.device("cpu")))
    return tuple(t.to(dtype=dtype, device=device) for t in out)


class _SinJPEG444(torch.autograd.Function):
    """The smooth 4:4:4 codec with ``sin`` rounding (the paper's dJPEG) as one op with a hand-written backward.

    The same arithmetic as the composed path of :func:`jpeg_compress` (``_code_planes`` and the colour
    transforms), with the colour transforms as ``3 x 3`` matrix products and the three clamps' gradient masks
    kept from the forward pass; the backward pass is the chain of transposed products,
    ``d/du sin_round(u) = 1 - cos(2 pi u)``. It saves autograd's intermediates, which makes it faster than
    the composed path (``docs/benchmarks.md``, "CPU op choices").

    ``forward(x, q)``: ``x`` ``(N, 3, H, W)``, H and W multiples of 8, any values (clipped to [0, 1]);
    ``q`` quantization steps ``(N or 1, 3, 1, 1, 64)`` without gradient. Returns ``(N, 3, H, W)`` in [0, 1].
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        with torch.autocast(x.device.type, enabled=False):  # in x's dtype, as the composed path outside autocast
            return _SinJPEG444._forward(ctx, x, q)

    @staticmethod
    def _forward(ctx: Any, x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        forward, forward_bias, inverse, inverse_bias, basis = _sin444_constants(x.dtype, x.device)
        clipped = torch.clamp(x, 0.0, 1.0)
        ycc = torch.baddbmm(forward_bias, forward.expand(n, 3, 3), clipped.reshape(n, 3, h * w))
        u = (_to_blocks(ycc.view(n, 3, h, w)) @ basis.T).div_(q)
        coef = torch.sin(u * (2.0 * math.pi)).mul_(-1.0 / (2.0 * math.pi)).add_(u).mul_(q)
        rec = (coef @ basis).add_(128.0)
        decoded = torch.clamp(rec, 0.0, 255.0)
        rgb = torch.baddbmm(inverse_bias, inverse.expand(n, 3, 3), _from_blocks(decoded).reshape(n, 3, h * w))
        out = torch.clamp(rgb, 0.0, 1.0)
        if ctx.needs_input_grad[0]:  # the clamps pass gradients where their input lies in the closed range
            ctx.save_for_backward(clipped == x, u, decoded == rec, out == rgb)
        return out.view(n, 3, h, w)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        inside, u, decodable, in_gamut = ctx.saved_tensors
        n, _, h, w = grad.shape
        forward, _, inverse, _, basis = _sin444_constants(u.dtype, u.device)
        with torch.autocast(u.device.type, enabled=False):
            # Masks by where: a bool factor would cost a conversion pass.
            g = torch.bmm(inverse.T.expand(n, 3, 3), torch.where(in_gamut, grad.to(u.dtype).reshape(n, 3, h * w), 0.0))
            g = torch.where(decodable, _to_blocks(g.view(n, 3, h, w)), 0.0) @ basis.T
            g = g.mul_(1.0 - torch.cos(u * (2.0 * math.pi))) @ basis
            g = torch.bmm(forward.T.expand(n, 3, 3), _from_blocks(g).reshape(n, 3, h * w))
        return torch.where(inside, g.view(n, 3, h, w), 0.0), None


# ---------------------------------------------------------------------------------------------- codecs


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def jpeg_compress(
    x: torch.Tensor,
    quality: int | torch.Tensor = 50,
    *,
    rounding: str = "sin",
    subsampling: str = "4:4:4",
    codec: str = "differentiable",
    harmonics: int = 5,
    luma_table: torch.Tensor | None = None,
    chroma_table: torch.Tensor | None = None,
    exact: bool | None = None,
    straight_through: bool = False,
) -> torch.Tensor:
    """JPEG-compress and decode a batch of RGB images, differentiably (dJPEG) or with libjpeg.

    Args:
        x: ``(N, 3, H, W)`` (or ``(3, H, W)``) float in [0, 1], any H and W; values outside are clipped.
        quality: integer in [1, 100] (libjpeg's scale), or a tensor ``(N,)`` of per-image qualities.
        rounding: quantization rounding, one of :data:`ROUNDING_MODES` (``none`` reproduces libjpeg).
        subsampling: ``4:4:4`` (the paper) or ``4:2:0`` (libjpeg's default, what sharing services use).
        codec: ``differentiable`` or ``libjpeg`` (Pillow; no gradient, see :func:`libjpeg_compress`).
        harmonics: number of terms of the ``harmonic`` rounding.
        luma_table: base luminance quantization table ``(8, 8)`` or ``(N, 8, 8)`` scaled by quality (the IJG
            table when None); pass an ``nn.Parameter`` to learn it.
        chroma_table: base chrominance table, likewise.
        exact: use libjpeg's integer arithmetic (8-bit sample rounding, integer DCTs) in the forward pass
            (default: True for the exact-forward modes ``none``/``soft``/``ste``, False for ``sin``/``harmonic``).
        straight_through: ``codec="libjpeg"`` only: pass the gradient through as identity.

    Returns:
        The decoded images, same shape and dtype as ``x``, in [0, 1].
    """
    _check_choice(codec, CODECS, "codec")
    _check_choice(rounding, ROUNDING_MODES, "rounding")
    _check_choice(subsampling, SUBSAMPLING_MODES, "subsampling")
    single = isinstance(x, torch.Tensor) and x.dim() == 3
    if single:
        x = x.unsqueeze(0)
    _check_image(x)
    if codec == "libjpeg":
        out = libjpeg_compress(x, quality, subsampling=subsampling, straight_through=straight_through)
        return out[0] if single else out
    n, _, h, w = x.shape
    q = _quality_tensor(quality, n, x.device)
    luma, chroma = quantization_tables(q, luma_table, chroma_table, n=n)
    luma, chroma = luma.to(x.dtype), chroma.to(x.dtype)
    exact = rounding in _EXACT_MODES if exact is None else bool(exact)
    if not exact and rounding == "sin" and subsampling == "4:4:4" and not (luma.requires_grad or chroma.requires_grad):
        # The paper's codec as one op: the composed path's values and gradients, faster.
        hp, wp = 8 * _ceil(h, 8), 8 * _ceil(w, 8)
        tables = torch.stack((luma, chroma, chroma), 1).reshape(-1, 3, 1, 1, 64)
        out = _SinJPEG444.apply(_pad_to(x, hp, wp), tables)
        out = out if (hp, wp) == (h, w) else out[:, :, :h, :w]
    else:
        out = _composed_codec(x, luma, chroma, rounding=rounding, harmonics=harmonics, subsampling=subsampling,
                              exact=exact)
    return out[0] if single else out


def _composed_codec(
    x: torch.Tensor,
    luma: torch.Tensor,
    chroma: torch.Tensor,
    *,
    rounding: str,
    harmonics: int,
    subsampling: str,
    exact: bool,
) -> torch.Tensor:
    """dJPEG of ``x`` ``(N, 3, H, W)`` with tables ``(N, 64)``, op by op under autograd (every mode)."""
    n, _, h, w = x.shape

    def rnd(v: torch.Tensor) -> torch.Tensor:
        return approximate_round(v, rounding, harmonics=harmonics)

    rgb = torch.clamp(x, 0.0, 1.0) * 255.0
    if exact:
        rgb = _round_samples(rgb)
    ycc = rgb_to_ycbcr(rgb, exact=exact)
    if subsampling == "4:4:4":
        hp, wp = 8 * _ceil(h, 8), 8 * _ceil(w, 8)
        tables = torch.stack((luma, chroma, chroma), 1)
        ycc = _code_planes(_pad_to(ycc, hp, wp), tables, rnd, exact)[:, :, :h, :w]
    else:
        hp, wp = 8 * _ceil(h, 8), 8 * _ceil(w, 8)
        y = _code_planes(_pad_to(ycc[:, :1], hp, wp), luma[:, None], rnd, exact)[:, :, :h, :w]
        # Chroma as libjpeg prepares it: replicate the full-size image to an even height and to twice the
        # padded chroma width, down-sample, then replicate the last chroma row to the block height.
        hc, wc = _ceil(h, 2), _ceil(w, 2)
        hcp, wcp = 8 * _ceil(h, 16), 8 * _ceil(w, 16)
        c = _downsample_h2v2(_pad_to(ycc[:, 1:], 2 * hc, 2 * wcp), exact)
        c = _code_planes(_pad_to(c, hcp, wcp), chroma[:, None].expand(n, 2, 64), rnd, exact)
        c = _upsample_h2v2_fancy(c[:, :, :hc, :wc], exact)[:, :, :h, :w]
        ycc = torch.cat((y, c), 1)
    out = ycbcr_to_rgb(ycc, exact=exact) / 255.0
    return torch.clamp(out, 0.0, 1.0)


def libjpeg_compress(
    x: torch.Tensor,
    quality: int | torch.Tensor = 50,
    *,
    subsampling: str = "4:4:4",
    straight_through: bool = False,
) -> torch.Tensor:
    """The real codec: Pillow's libjpeg encode then decode of each image, at the same settings as dJPEG.

    Images are rounded to 8 bits first. This is for validation and evaluation: it has no gradient (the
    output is detached) unless ``straight_through`` makes it pass the gradient through as identity.

    Args:
        x: ``(N, 3, H, W)`` float in [0, 1].
        quality: integer in [1, 100] or a tensor ``(N,)`` of them (Pillow's ``quality=``, baseline tables).
        subsampling: ``4:4:4`` (Pillow ``subsampling=0``) or ``4:2:0`` (``subsampling=2``).
        straight_through: identity gradient instead of none.

    Returns:
        ``(N, 3, H, W)`` decoded images in [0, 1], same dtype and device as ``x``.
    """
    _check_choice(subsampling, SUBSAMPLING_MODES, "subsampling")
    _check_image(x)
    q = _quality_tensor(quality, x.shape[0], torch.device("cpu"))
    pixels = torch.floor(torch.clamp(x.detach(), 0.0, 1.0).to("cpu", torch.float64) * 255.0 + 0.5)
    pixels = pixels.to(torch.uint8).permute(0, 2, 3, 1).numpy()
    decoded = np.empty_like(pixels)
    for i, image in enumerate(pixels):
        buffer = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(image), "RGB").save(
            buffer, format="JPEG", quality=int(q[i]), subsampling=0 if subsampling == "4:4:4" else 2
        )
        buffer.seek(0)
        with Image.open(buffer) as im:
            decoded[i] = np.asarray(im.convert("RGB"))
    out = torch.from_numpy(decoded).permute(0, 3, 1, 2).to(device=x.device, dtype=x.dtype) / 255.0
    if straight_through:
        return x + (out - x).detach()
    return out


def compare_with_libjpeg(
    x: torch.Tensor,
    quality: int | torch.Tensor = 50,
    *,
    rounding: str = "none",
    subsampling: str = "4:4:4",
) -> dict[str, torch.Tensor]:
    """dJPEG against Pillow's libjpeg on the same images and settings.

    Args:
        x: ``(N, 3, H, W)`` float in [0, 1].

    Returns:
        ``{"psnr": (N,) dB, "max_abs": (N,) in 8-bit levels}``.
    """
    with torch.no_grad():
        ours = jpeg_compress(x, quality, rounding=rounding, subsampling=subsampling)
        ref = libjpeg_compress(x, quality, subsampling=subsampling)
    max_abs = ((ours.double() - ref.double()).abs() * 255.0).flatten(1).amax(1)
    return {"psnr": psnr_per_image(ours, ref), "max_abs": max_abs}


# ---------------------------------------------------------------------------------------------- module


@register("djpeg", kind="codec", description="differentiable JPEG matching libjpeg (4:4:4/4:2:0, sin/soft/harmonic)")
class DifferentiableJPEG(nn.Module):
    """JPEG compression as a layer: configuration and quantization tables only (see :func:`jpeg_compress`).

    The base tables are buffers, or parameters when passed as ``nn.Parameter`` (then learned).

    Args:
        quality: integer in [1, 100] or a tensor ``(N,)``; ``forward`` may override it per call.
        rounding: one of :data:`ROUNDING_MODES`.
        subsampling: ``4:4:4`` or ``4:2:0``.
        codec: ``differentiable`` or ``libjpeg`` (evaluation only, no gradient).
        harmonics: terms of the ``harmonic`` rounding.
        luma_table: base luminance table ``(8, 8)``; the IJG table when None.
        chroma_table: base chrominance table, likewise.
        exact: libjpeg's integer arithmetic in the forward pass (see :func:`jpeg_compress`).

    Shape:
        ``(N, 3, H, W) -> (N, 3, H, W)``, values in [0, 1].

    Example:
        >>> jpeg = DifferentiableJPEG(quality=80, rounding="soft")
        >>> jpeg(torch.rand(1, 3, 32, 32)).shape
        torch.Size([1, 3, 32, 32])
    """

    def __init__(
        self,
        quality: int | torch.Tensor = 50,
        rounding: str = "sin",
        subsampling: str = "4:4:4",
        *,
        codec: str = "differentiable",
        harmonics: int = 5,
        luma_table: torch.Tensor | None = None,
        chroma_table: torch.Tensor | None = None,
        exact: bool | None = None,
    ) -> None:
        super().__init__()
        self.rounding = _check_choice(rounding, ROUNDING_MODES, "rounding")
        self.subsampling = _check_choice(subsampling, SUBSAMPLING_MODES, "subsampling")
        self.codec = _check_choice(codec, CODECS, "codec")
        if int(harmonics) < 1:
            raise InputError(f"harmonics must be >= 1, got {harmonics}")
        self.harmonics = int(harmonics)
        self.exact = exact
        if isinstance(quality, torch.Tensor):
            _quality_tensor(quality, max(1, quality.numel()), quality.device)
        else:
            _quality_tensor(quality, 1, torch.device("cpu"))
        self.quality = quality
        tables = (("luma_table", luma_table, LUMA_TABLE), ("chroma_table", chroma_table, CHROMA_TABLE))
        for name, table, default in tables:
            if isinstance(table, nn.Parameter):
                self.register_parameter(name, table)
            else:
                value = torch.as_tensor(default if table is None else table, dtype=torch.float32)
                self.register_buffer(name, value.reshape(-1, 8, 8).squeeze(0).clone())

    def forward(self, x: torch.Tensor, quality: int | torch.Tensor | None = None) -> torch.Tensor:
        return jpeg_compress(
            x,
            self.quality if quality is None else quality,
            rounding=self.rounding,
            subsampling=self.subsampling,
            codec=self.codec,
            harmonics=self.harmonics,
            luma_table=self.luma_table,
            chroma_table=self.chroma_table,
            exact=self.exact,
        )

    def extra_repr(self) -> str:
        quality = self.quality if not isinstance(self.quality, torch.Tensor) else f"tensor{tuple(self.quality.shape)}"
        return f"quality={quality}, rounding={self.rounding}, subsampling={self.subsampling}, codec={self.codec}"
