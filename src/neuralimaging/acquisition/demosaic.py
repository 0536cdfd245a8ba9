"""Menon 2007 (DDFAPD) Bayer demosaicing in torch: batched, any device, differentiable.

Menon, Andriani & Calvagno, "Demosaicing With Directional Filtering and a posteriori Decision", IEEE TIP 16(1),
2007. This is the demosaicer of the paper's ``python`` ISP (Korus & Memon, Sec. 3.1), which calls
``colour_demosaicing.demosaicing_CFA_Bayer_Menon2007``; :func:`menon2007` reproduces that implementation,
borders included (mirror padding for the directional filters, zero padding for the classifier), to float64
rounding for the four Bayer patterns, with and without the refining step.

The algorithm:

1. green at red/blue sites interpolated horizontally and vertically with ``[-1, 2, 2, 2, -1] / 4``;
2. a posteriori decision: at each site the direction whose colour differences (``R - G`` / ``B - G``) vary
   less over a one-sided 5x5 window (colour-demosaicing's kernel, weight 3 on the current row / column);
3. red and blue at green sites from the neighbouring colour differences (``[1, 0, 1] / 2``), red at blue sites
   and blue at red sites along the chosen direction;
4. optional refinement: green, then red/blue at green sites, then red/blue at blue/red sites re-estimated from
   colour differences smoothed with ``[1, 1, 1] / 3`` along the chosen direction.

The decision is a hard mask computed without gradient; the output is piecewise linear in the mosaic and the
gradient flows through the chosen direction. 8-bit content has many exact ties ``d_H == d_V``, which rounding
breaks, so the decision repeats colour-demosaicing's floating-point arithmetic operation by operation (scipy's
float64 filters, their summation order); the rest is computed in the input's dtype. Every filter is a weighted
sum of shifted slices of the whole batch (no Python loop over pixels or images): ``O(H W)`` time, about a
dozen image-sized temporaries.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from neuralimaging.acquisition.bayer import cfa_offset, check_cfa, from_rggb
from neuralimaging.errors import InputError

__all__ = ["Menon2007", "menon2007", "rggb_to_mosaic"]

# Symmetric 1-D filters as (centre, offset 1, offset 2, ...) weights.
_PAIR = (0.0, 0.5)  # k_b: [0.5, 0, 0.5]
_BOX = (1.0 / 3.0, 1.0 / 3.0)  # refining FIR: [1, 1, 1] / 3

# Classifier windows of colour-demosaicing as lists of (row offset, column offset, weight), in the order
# ``scipy.ndimage.convolve`` adds them up (row-major over its flipped kernel, zero weights skipped). For the
# horizontal differences the window covers the current row and the rows two above/below, at the current column
# and two columns to the left, plus the diagonal neighbours one column to the left; the vertical one is its
# transpose, but it is summed in a different order.
_WINDOW_H = (
    (-2, -2, 1.0), (-2, 0, 1.0), (-1, -1, 1.0), (0, -2, 3.0), (0, 0, 3.0), (1, -1, 1.0), (2, -2, 1.0), (2, 0, 1.0)
)
_WINDOW_V = (
    (-2, -2, 1.0), (-2, 0, 3.0), (-2, 2, 1.0), (-1, -1, 1.0), (-1, 1, 1.0), (0, -2, 1.0), (0, 0, 3.0), (0, 2, 1.0)
)


def _mirror_pad(x: torch.Tensor, before: int, after: int, dim: int) -> torch.Tensor:
    """Pad ``dim`` (-1 or -2) by mirroring about the edge samples (scipy ``mirror``, numpy/torch ``reflect``)."""
    n = x.shape[dim]
    if before < n and after < n:
        pads = (before, after, 0, 0) if dim == -1 else (0, 0, before, after)
        return F.pad(x, pads, mode="reflect")
    # Padding wider than the image (a 2-pixel side): the mirror extension is periodic with period 2 (n - 1).
    period = 2 * (n - 1)
    index = torch.arange(-before, n + after, device=x.device).remainder(period)
    index = torch.where(index >= n, period - index, index)
    return x.index_select(dim, index)


def _symmetric(x: torch.Tensor, taps: tuple[float, ...], dim: int) -> torch.Tensor:
    """Filter ``x`` along ``dim`` with the symmetric kernel ``taps`` (centre first), mirror-padded."""
    reach = len(taps) - 1
    padded = _mirror_pad(x, reach, reach, dim)
    n = x.shape[dim]
    out = padded.narrow(dim, reach, n) * taps[0] if taps[0] else None
    for offset in range(1, reach + 1):
        if not taps[offset]:
            continue
        term = (padded.narrow(dim, reach - offset, n) + padded.narrow(dim, reach + offset, n)) * taps[offset]
        out = term if out is None else out + term
    return out


def _both(x: torch.Tensor, taps: tuple[float, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` filtered with ``taps`` horizontally and vertically."""
    return _symmetric(x, taps, -1), _symmetric(x, taps, -2)


def _window_sum(x: torch.Tensor, window: tuple[tuple[int, int, float], ...]) -> torch.Tensor:
    """Weighted sum of shifted copies of ``x`` (zero outside the image), added in the order of ``window``."""
    height, width = x.shape[-2:]
    padded = F.pad(x, (2, 2, 2, 2))
    out = None
    for dy, dx, weight in window:
        term = padded[..., 2 + dy : 2 + dy + height, 2 + dx : 2 + dx + width]
        term = term * weight if weight != 1.0 else term
        out = term if out is None else out + term
    return out


def _green_estimates(mosaic: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Green interpolated horizontally and vertically with ``[-1, 2, 2, 2, -1] / 4``, mirror-padded.

    Computed with colour-demosaicing's arithmetic (the sum of the filters ``[0, 1/2, 0, 1/2, 0]`` and
    ``[-1/4, 0, 1/2, 0, -1/4]``, each evaluated in float64 by scipy and rounded to the input's dtype), so that
    the direction decision that depends on them breaks ties the same way.
    """
    dtype = mosaic.dtype
    wide = mosaic.to(torch.float64)

    def along(dim: int) -> torch.Tensor:
        padded = _mirror_pad(wide, 2, 2, dim)
        n = wide.shape[dim]
        near = ((padded.narrow(dim, 1, n) + padded.narrow(dim, 3, n)) * 0.5).to(dtype)
        far = (wide * 0.5 + (padded.narrow(dim, 0, n) + padded.narrow(dim, 4, n)) * -0.25).to(dtype)
        return near + far

    return along(-1), along(-2)


def _horizontal_decision(
    mosaic: torch.Tensor, green_h: torch.Tensor, green_v: torch.Tensor, is_green: torch.Tensor
) -> torch.Tensor:
    """``True`` where the horizontal green estimate wins (colour-demosaicing's ``d_V >= d_H``), ``(N, 1, H, W)``.

    The decision is a hard threshold, so it is computed with colour-demosaicing's exact arithmetic to break the
    ties of quantized images (a flat 8-bit patch has ``d_H == d_V`` up to rounding) the same way: scipy filters
    in float64 and rounds to the input's dtype, numpy operates in that dtype; the sums are added in scipy's order.
    """
    dtype = mosaic.dtype
    zero = mosaic.new_zeros(())
    diff_h = torch.where(is_green, zero, mosaic - green_h)
    diff_v = torch.where(is_green, zero, mosaic - green_v)
    # Variation of the colour differences towards the site two further right / down (mirrored at the far end).
    grad_h = (diff_h - _mirror_pad(diff_h, 0, 2, -1)[..., 2:]).abs()
    grad_v = (diff_v - _mirror_pad(diff_v, 0, 2, -2)[..., 2:, :]).abs()
    score_h = _window_sum(grad_h.to(torch.float64), _WINDOW_H).to(dtype)
    score_v = _window_sum(grad_v.to(torch.float64), _WINDOW_V).to(dtype)
    return score_v >= score_h


def _check_mosaic(cfa: torch.Tensor) -> None:
    if not isinstance(cfa, torch.Tensor):
        raise InputError(f"the mosaic must be a torch.Tensor, got {type(cfa).__name__}")
    if cfa.dim() != 4 or cfa.shape[1] != 1:
        raise InputError(f"the mosaic must have shape (N, 1, H, W), got {tuple(cfa.shape)}")
    height, width = cfa.shape[-2:]
    if height % 2 or width % 2 or height < 2 or width < 2:
        raise InputError(f"the mosaic needs an even height and width >= 2, got {height}x{width}")
    if not cfa.is_floating_point():
        raise InputError(f"the mosaic must be a floating-point tensor, got {cfa.dtype}")


class _Sites(NamedTuple):
    """Where the colours of a Bayer pattern sit, as masks broadcasting to ``(H, W)``."""

    red_row: torch.Tensor  # (H, 1): rows holding red sites
    red_col: torch.Tensor  # (1, W): columns holding red sites
    red: torch.Tensor
    blue: torch.Tensor
    green: torch.Tensor
    green_in_red_row: torch.Tensor  # green sites whose horizontal neighbours are red and vertical ones blue


def _sites(pattern: str, height: int, width: int, device: torch.device) -> _Sites:
    red_y, red_x = cfa_offset(pattern)
    red_row = (torch.arange(height, device=device) % 2 == red_y).view(height, 1)
    red_col = (torch.arange(width, device=device) % 2 == red_x).view(1, width)
    return _Sites(red_row, red_col, red_row & red_col, ~red_row & ~red_col, red_row ^ red_col, red_row & ~red_col)


def _red_blue(
    x: torch.Tensor,
    green: torch.Tensor,
    horizontal: torch.Tensor,
    sites: _Sites,
    previous: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Red and blue at the green sites and, unless ``previous`` (red, blue) gives them, at blue / red sites.

    At a green site R = G + mean(R - G) of its two red neighbours, and likewise for blue: one array of colour
    differences ``x - G`` (meaningful at red and blue sites), filtered both ways, serves both colours. Red at a
    blue site is ``B + mean(R - B)`` of the two green neighbours along the chosen direction, blue at a red site
    ``R - mean(R - B)``; in the refining step those sites keep the ``previous`` values at this point.
    """
    diff_h, diff_v = _both(x - green, _PAIR)
    red_at_green = green + torch.where(sites.green_in_red_row, diff_h, diff_v)
    blue_at_green = green + torch.where(sites.green_in_red_row, diff_v, diff_h)
    del diff_h, diff_v
    if previous is None:
        red_minus_blue_h, red_minus_blue_v = _both(red_at_green - blue_at_green, _PAIR)
        chroma = torch.where(horizontal, red_minus_blue_h, red_minus_blue_v)
        del red_minus_blue_h, red_minus_blue_v
        red_elsewhere, blue_elsewhere = x + chroma, x - chroma
    else:
        red_elsewhere, blue_elsewhere = previous
    red = torch.where(sites.red, x, torch.where(sites.green, red_at_green, red_elsewhere))
    blue = torch.where(sites.blue, x, torch.where(sites.green, blue_at_green, blue_elsewhere))
    return red, blue


def menon2007(cfa: torch.Tensor, pattern: str = "RGGB", refine: bool = True) -> torch.Tensor:
    """Demosaic Bayer mosaics with DDFAPD (Menon et al. 2007), as colour-demosaicing does.

    Equals ``colour_demosaicing.demosaicing_CFA_Bayer_Menon2007(mosaic, pattern, refining_step=refine)`` for
    every image of the batch, borders included: to ~1e-15 in float64; in float32 to ~3e-7 of colour-demosaicing
    run in float32 (as :func:`neuralimaging.acquisition.isp.demosaic` does), the direction decisions being the
    same at every site.

    Args:
        cfa: ``(N, 1, H, W)`` floating-point mosaic, ``H`` and ``W`` even (values usually in [0, 1]).
        pattern: ``RGGB``, ``BGGR``, ``GRBG`` or ``GBRG`` (colours of the top-left 2x2 block, row-major).
        refine: apply the refining step (colour-demosaicing's default).

    Returns:
        ``(N, 3, H, W)`` RGB of the same dtype and device, not clipped. Differentiable (piecewise linear: the
        direction decision is a constant mask).

    Example:
        >>> rgb = menon2007(torch.rand(2, 1, 8, 10), "GBRG")  # (2, 3, 8, 10)
    """
    _check_mosaic(cfa)
    sites = _sites(check_cfa(pattern), cfa.shape[-2], cfa.shape[-1], cfa.device)
    x = cfa

    # 1. Directional green estimates and the a posteriori decision (a mask, no gradient).
    green_h, green_v = _green_estimates(x)
    with torch.no_grad():
        horizontal = _horizontal_decision(x.detach(), green_h.detach(), green_v.detach(), sites.green)
    green = torch.where(sites.green, x, torch.where(horizontal, green_h, green_v))
    del green_h, green_v

    # 2. Red and blue.
    red, blue = _red_blue(x, green, horizontal, sites)
    if not refine:
        return torch.cat([red, green, blue], dim=1)

    # 3. Refining step. Green at red (blue) sites: R - mean(R - G) (B - mean(B - G)) over three sites along the
    # chosen direction; the sites a horizontal window sees share the row's colour, a vertical one the column's.
    row_diff = torch.where(sites.red_row, red, blue) - green
    col_diff = torch.where(sites.red_col, red, blue) - green
    smooth = torch.where(horizontal, _symmetric(row_diff, _BOX, -1), _symmetric(col_diff, _BOX, -2))
    del row_diff, col_diff
    green = torch.where(sites.green, x, x - smooth)
    del smooth
    # Red and blue at green sites again from the refined green, then red at blue sites and blue at red sites
    # from mean(R - B) over three sites along the chosen direction.
    red, blue = _red_blue(x, green, horizontal, sites, previous=(red, blue))
    red_minus_blue = red - blue
    chroma = torch.where(horizontal, _symmetric(red_minus_blue, _BOX, -1), _symmetric(red_minus_blue, _BOX, -2))
    del red_minus_blue
    red = torch.where(sites.blue, x + chroma, red)
    blue = torch.where(sites.red, x - chroma, blue)
    return torch.cat([red, green, blue], dim=1)


def rggb_to_mosaic(x: torch.Tensor) -> torch.Tensor:
    """Scatter an ``(N, 4, h, w)`` RGGB stack (channels R, G, G, B) into an ``(N, 1, 2h, 2w)`` RGGB mosaic.

    The inverse of ``bayer.to_rggb(mosaic, "RGGB")`` in the layout :func:`menon2007` takes; differentiable.
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise InputError(f"expected an RGGB stack of shape (N, 4, h, w), got {shape}")
    return from_rggb(x, "RGGB").unsqueeze(1)


class Menon2007(nn.Module):
    """:func:`menon2007` as a module without parameters.

    Args:
        pattern: CFA pattern of the mosaics, ``RGGB``, ``BGGR``, ``GRBG`` or ``GBRG``.
        refine: apply the refining step.

    Shape:
        ``(N, 1, H, W)`` -> ``(N, 3, H, W)``.
    """

    def __init__(self, pattern: str = "RGGB", refine: bool = True) -> None:
        super().__init__()
        self.pattern = check_cfa(pattern)
        self.refine = bool(refine)

    def forward(self, cfa: torch.Tensor) -> torch.Tensor:
        return menon2007(cfa, self.pattern, self.refine)

    def extra_repr(self) -> str:
        return f"pattern={self.pattern!r}, refine={self.refine}"
