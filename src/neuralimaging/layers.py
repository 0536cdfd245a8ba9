"""Layers shared by the networks (UNet, FAN), tuned for CPUs.

:class:`Conv2d` is ``nn.Conv2d`` with the same parameters and results, whose backward pass is rewritten for the
case where oneDNN's kernels are slow: a bfloat16 convolution on a CPU over a tiny image (at most 4 x 4 pixels:
UNet's deepest level, the FAN's 1 x 1 mixing layer). There the weight gradient, a reduction over only
``N * H * W`` rows, runs slower in oneDNN than the forward pass; computed as one matrix product per kernel tap
(``grad^T @ shifted input``), and the input gradient as one product with the weights followed by a scatter-add
of the taps (col2im), UNet's 4 x 4 layers train faster on CPUs with native bfloat16; at 8 x 8 the gain is
gone, so everywhere else (8 x 8 and larger, float32, GPUs) it is ``nn.Conv2d`` (figures:
``docs/benchmarks.md``, "CPU op choices", from ``benchmarks/fused_ops.py``).

    >>> conv = Conv2d(8, 16, 3, padding=1)
    >>> conv.load_state_dict(nn.Conv2d(8, 16, 3, padding=1).state_dict())
    <All keys matched successfully>
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["Conv2d", "conv2d_weight_grad_by_taps", "conv2d_input_grad_by_taps", "SMALL_PIXELS"]

SMALL_PIXELS = 16
"""Images of at most this many pixels take the tap-wise gradients (bfloat16 on a CPU)."""


def _rows(t: torch.Tensor) -> torch.Tensor:
    """``(N, C, H, W)`` as ``(N * H * W, C)`` rows (a view for a channels-last tensor)."""
    n, c, h, w = t.shape
    return t.permute(0, 2, 3, 1).reshape(n * h * w, c)


def conv2d_weight_grad_by_taps(grad: torch.Tensor, x: torch.Tensor, kernel_size: int, padding: int) -> torch.Tensor:
    """Weight gradient of a stride-1 convolution, one ``(C_out, N*H*W) @ (N*H*W, C_in)`` product per tap.

    Args:
        grad: gradient of the output ``(N, C_out, H_out, W_out)``.
        x: the input ``(N, C_in, H, W)``; channels-last makes the shifted windows cheap to gather.
        kernel_size: ``k`` (square kernels).
        padding: zero padding on every side.

    Returns:
        ``(C_out, C_in, k, k)`` in ``grad``'s dtype (the products accumulate in float32 on CPUs and GPUs).
    """
    n, c_in = x.shape[:2]
    h, w = grad.shape[-2:]
    padded = F.pad(x, (padding,) * 4).permute(0, 2, 3, 1)
    grad_t = _rows(grad).t()
    out = torch.empty(kernel_size, kernel_size, grad.shape[1], c_in, dtype=grad.dtype, device=grad.device)
    for i in range(kernel_size):
        for j in range(kernel_size):
            torch.mm(grad_t, padded[:, i : i + h, j : j + w, :].reshape(n * h * w, c_in), out=out[i, j])
    return out.permute(2, 3, 0, 1)


def conv2d_input_grad_by_taps(
    grad: torch.Tensor, weight: torch.Tensor, input_size: tuple[int, int], padding: int
) -> torch.Tensor:
    """Input gradient of a stride-1 convolution: ``grad @ W`` for all taps at once, then col2im.

    Args:
        grad: gradient of the output ``(N, C_out, H_out, W_out)``.
        weight: ``(C_out, C_in, k, k)``.
        input_size: ``(H, W)`` of the input.
        padding: zero padding on every side.

    Returns:
        ``(N, C_in, H, W)`` channels-last, in ``grad``'s dtype (the taps are summed in float32 or float64).
    """
    n, _, h_out, w_out = grad.shape
    c_out, c_in, k, _ = weight.shape
    h, w = input_size
    cols = (_rows(grad) @ weight.permute(0, 2, 3, 1).reshape(c_out, k * k * c_in)).view(n, h_out, w_out, k, k, c_in)
    acc_dtype = torch.promote_types(grad.dtype, torch.float32)
    acc = torch.zeros(n, h + 2 * padding, w + 2 * padding, c_in, dtype=acc_dtype, device=grad.device)
    for i in range(k):
        for j in range(k):
            acc[:, i : i + h_out, j : j + w_out, :] += cols[:, :, :, i, j, :]
    return acc[:, padding : padding + h, padding : padding + w, :].to(grad.dtype).permute(0, 3, 1, 2)


class _SmallConv2d(torch.autograd.Function):
    """``F.conv2d`` (stride 1, symmetric zero padding) with the tap-wise gradients of this module."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: int
    ) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.padding = padding
        ctx.has_bias = bias is not None
        return F.conv2d(x, weight, bias, padding=padding)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        x, weight = ctx.saved_tensors
        p = ctx.padding
        grad = grad.contiguous(memory_format=torch.channels_last)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = conv2d_input_grad_by_taps(grad, weight, (x.shape[-2], x.shape[-1]), p)
        if ctx.needs_input_grad[1]:
            grad_w = conv2d_weight_grad_by_taps(grad, x, weight.shape[-1], p)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = _rows(grad).sum(0)
        return grad_x, grad_w, grad_b, None


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` whose bfloat16 CPU backward on images of at most :data:`SMALL_PIXELS` pixels is tap-wise.

    Same arguments, parameters and state dict as ``nn.Conv2d``; the forward pass is the same oneDNN
    convolution, the gradients agree to bfloat16 rounding (they are the same sums in another order). The fast
    path needs stride 1, dilation 1, one group, square kernels and symmetric integer zero padding, and either
    bfloat16 autocast on the CPU or bfloat16 input and weights; anything else runs ``nn.Conv2d.forward``.
    """

    def _small_path(self) -> bool:
        return (
            self.stride == (1, 1)
            and self.dilation == (1, 1)
            and self.groups == 1
            and self.padding_mode == "zeros"
            and not isinstance(self.padding, str)
            and self.padding[0] == self.padding[1]
            and self.kernel_size[0] == self.kernel_size[1]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu" and x.ndim == 4 and x.shape[-2] * x.shape[-1] <= SMALL_PIXELS and self._small_path():
            autocast = torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
            if autocast or (x.dtype == torch.bfloat16 and self.weight.dtype == torch.bfloat16):
                bias = None if self.bias is None else self.bias.to(torch.bfloat16)
                weight = self.weight.to(torch.bfloat16)
                with torch.autocast("cpu", enabled=False):
                    return _SmallConv2d.apply(x.to(torch.bfloat16), weight, bias, self.padding[0])
        return super().forward(x)
