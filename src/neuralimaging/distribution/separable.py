"""Separable linear filters as two matrix products: ``M_h^T @ x @ M_w`` on ``(..., H, W)`` images.

A separable filter with replicate borders (a Gaussian blur), an average pooling or a bilinear resizing is a
linear map along each axis, so it is a product with an ``(H, H')`` and a ``(W, W')`` matrix that already holds
the border rule. On a CPU the two products, forward and backward, run faster than oneDNN's grouped
(depthwise) convolution or ``avg_pool2d`` for the paper's sizes (``docs/benchmarks.md``, "CPU op choices"),
and they sum the same products, so the results agree to float32 rounding. The matrices are small and cached per size, dtype and
device (built once in float64, then cast), so a step on a GPU makes no host-to-device copy.

    >>> x = torch.rand(1, 3, 8, 8)
    >>> torch.allclose(box_downsample(x, 2), torch.nn.functional.avg_pool2d(x, 2))
    True
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F

from neuralimaging.errors import InputError

__all__ = ["replicate_filter_matrix", "box_matrix", "resize_matrix", "separable_filter", "box_downsample"]


@lru_cache(maxsize=64)
def _replicate_matrix(taps: tuple[float, ...], n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    k = len(taps)
    r = k // 2
    out = torch.arange(n).view(1, n).expand(k, n)
    src = (out + torch.arange(k).view(k, 1) - r).clamp(0, n - 1)  # source pixel of tap t for output j
    weights = torch.tensor(taps, dtype=torch.float64).view(k, 1).expand(k, n)
    m = torch.zeros(n, n, dtype=torch.float64)
    m.index_put_((src.reshape(-1), out.reshape(-1)), weights.reshape(-1), accumulate=True)
    return m.to(dtype=dtype, device=device)


def replicate_filter_matrix(
    taps: torch.Tensor | tuple[float, ...],
    n: int,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """``(n, n)`` matrix ``M`` with ``(v @ M)[j] = sum_t taps[t] * v[clamp(j + t - k//2, 0, n-1)]``.

    Args:
        taps: odd number ``k`` of filter taps (correlation order, as ``conv2d``).
        n: signal length.

    Returns:
        The matrix of 1-D filtering with replicate borders (float64 entries, cast to ``dtype``); a copy of the
        cached one.
    """
    taps = tuple(float(t) for t in (taps.tolist() if isinstance(taps, torch.Tensor) else taps))
    if len(taps) % 2 == 0 or n < 1:
        raise InputError(f"a replicate filter needs an odd number of taps and n >= 1, got {len(taps)} and {n}")
    return _replicate_matrix(taps, int(n), dtype, torch.device(device or "cpu")).clone()


@lru_cache(maxsize=64)
def _box_matrix(n: int, factor: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    m = torch.zeros(n, n // factor, dtype=torch.float64)
    rows = torch.arange((n // factor) * factor)
    m[rows, rows // factor] = 1.0 / factor
    return m.to(dtype=dtype, device=device)


def box_matrix(
    n: int, factor: int, *, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
) -> torch.Tensor:
    """``(n, n // factor)`` matrix of 1-D average pooling by ``factor`` (trailing ``n % factor`` samples dropped)."""
    if factor < 1 or n // factor < 1:
        raise InputError(f"cannot average-pool {n} samples by a factor of {factor}")
    return _box_matrix(int(n), int(factor), dtype, torch.device(device or "cpu")).clone()


@lru_cache(maxsize=64)
def _resize_matrix(n: int, m: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    eye = torch.eye(n, dtype=torch.float64).unsqueeze(0)  # row i: the unit impulse at sample i
    return F.interpolate(eye, size=m, mode="linear", align_corners=False)[0].to(dtype=dtype, device=device)


def resize_matrix(
    n: int, m: int, *, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
) -> torch.Tensor:
    """``(n, m)`` matrix ``M`` of 1-D linear resizing: ``v @ M = F.interpolate(v, m, mode="linear")``.

    ``align_corners=False``, no antialiasing: one axis of ``F.interpolate(..., mode="bilinear")``, which
    weights the four neighbours by the products of these 1-D weights.
    """
    if n < 1 or m < 1:
        raise InputError(f"cannot resize {n} samples to {m}")
    return _resize_matrix(int(n), int(m), dtype, torch.device(device or "cpu")).clone()


def separable_filter(x: torch.Tensor, m_h: torch.Tensor, m_w: torch.Tensor) -> torch.Tensor:
    """``M_h^T @ x @ M_w`` over the last two axes: ``(..., H, W)`` -> ``(..., H', W')``; differentiable.

    Computed in ``x``'s dtype even under autocast (which would run the products in bfloat16 or float16, where
    ``avg_pool2d`` and a depthwise filter keep float32).
    """
    if x.ndim < 2 or x.shape[-2] != m_h.shape[0] or x.shape[-1] != m_w.shape[0]:
        raise InputError(
            f"separable filter of {tuple(m_h.shape)} x {tuple(m_w.shape)} does not fit an image of {tuple(x.shape)}"
        )
    with torch.autocast(x.device.type, enabled=False):
        return torch.matmul(m_h.t().to(x.dtype), torch.matmul(x, m_w.to(x.dtype)))


def box_downsample(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Average pooling by ``factor`` (as ``F.avg_pool2d(x, factor)``): ``(..., H, W)`` -> ``(..., H//f, W//f)``."""
    h, w = x.shape[-2:]
    kw = {"dtype": x.dtype, "device": x.device}
    return separable_filter(x, box_matrix(h, factor, **kw), box_matrix(w, factor, **kw))
