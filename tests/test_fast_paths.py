"""Every hand-written backward pass equals its reference.

Four ops run as one ``torch.autograd.Function`` with their own backward, for speed: INet's fused kernel
(``acquisition/nip.py``), the tap-wise small convolution (``layers.py``), sharpen (``distribution/
manipulations.py``) and the paper's dJPEG, sin rounding at 4:4:4 (``distribution/jpeg.py``). Each is compared,
in float64, with the same function written with standard autograd ops: values and the gradients of every input
(weights included) for a random upstream gradient, on inputs that reach the clamps, ties and borders; and each
passes ``torch.autograd.gradcheck`` on tiny inputs where it is smooth. The test also asserts the fast op is the
one that ran (its autograd node), so a refactoring that bypasses it cannot pass unnoticed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from neuralimaging.acquisition.nip import INet
from neuralimaging.distribution.jpeg import _composed_codec, jpeg_compress, quantization_tables
from neuralimaging.distribution.manipulations import sharpen
from neuralimaging.layers import _SmallConv2d

Op = Callable[..., torch.Tensor]


@dataclass
class Case:
    """A fast op, its reference and float64 inputs; every input is differentiated."""

    fast: Op
    reference: Op
    inputs: tuple[torch.Tensor, ...]
    node: str  # the autograd node of the fast op
    atol: float = 1e-11


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------------- acquisition/nip.py


class _Layers(nn.Module):
    """The INet it wraps, called through the layers of the paper's Table 2 (the reference of its forward)."""

    def __init__(self, inet: INet) -> None:
        super().__init__()
        self.inet = inet

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inet.forward_layers(x)


def _inet(x: torch.Tensor, weight_noise: float, seed: int) -> Case:
    """INet moved off its initialization; its weights are inputs of the op (``functional_call``)."""
    torch.manual_seed(seed)
    model = INet(cam_to_srgb=[[1.6, -0.4, -0.2], [-0.2, 1.5, -0.3], [0.0, -0.5, 1.5]]).double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(weight_noise * torch.randn_like(p))
    names = [name for name, _ in model.named_parameters()]
    layers = _Layers(model)

    def fast(x: torch.Tensor, *weights: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(model, dict(zip(names, weights)), (x,))

    def reference(x: torch.Tensor, *weights: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(layers, {f"inet.{n}": w for n, w in zip(names, weights)}, (x,))

    weights = tuple(p.detach().clone() for p in model.parameters())
    return Case(fast, reference, (x, *weights), "_INetFusedBackward", atol=1e-10)


# ---------------------------------------------------------------------------------------- layers.py


def _small_conv(n: int, c_in: int, c_out: int, size: int, k: int, seed: int) -> Case:
    gen = _generator(seed)
    padding = k // 2
    x = torch.randn(n, c_in, size, size, generator=gen, dtype=torch.float64)
    weight = torch.randn(c_out, c_in, k, k, generator=gen, dtype=torch.float64)
    bias = torch.randn(c_out, generator=gen, dtype=torch.float64)

    def fast(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return _SmallConv2d.apply(x, weight, bias, padding)

    def reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, weight, bias, padding=padding)

    return Case(fast, reference, (x, weight, bias), "_SmallConv2dBackward")


# ---------------------------------------------------------------------- distribution/manipulations.py


def _sharpen(x: torch.Tensor, strength: float) -> Case:
    def reference(t: torch.Tensor) -> torch.Tensor:
        """The formula of :func:`sharpen`'s docstring, op by op."""
        v = t.amax(dim=1, keepdim=True)
        laplacian = torch.tensor([[1.0, 4.0, 1.0], [4.0, -20.0, 4.0], [1.0, 4.0, 1.0]], dtype=t.dtype) / 6.0
        padded = F.pad(v, (1, 1, 1, 1), mode="replicate")
        v_new = torch.clamp(v - strength * F.conv2d(padded, laplacian[None, None]), 0, 1)
        dark = v <= 1e-8
        ratio = v_new / torch.where(dark, torch.ones_like(v), v)
        return torch.clamp(torch.where(dark, v_new.expand_as(t), t * ratio), 0.0, 1.0)

    return Case(lambda t: sharpen(t, strength), reference, (x,), "_SharpenBackward", atol=1e-10)


def _sharpen_hard_image(seed: int) -> torch.Tensor:
    """Black pixels (grey output), two- and three-way channel ties (``amax`` shares the gradient), values
    that both clamps cut; off the 8-bit grid, where the two formulas' roundings could straddle a clamp."""
    gen = _generator(seed)
    x = (torch.rand(2, 3, 16, 20, generator=gen, dtype=torch.float64) * 1.1).clamp(0, 1)
    x[:, :, :3, :4] = 0.0
    x[0, :, 6:9, 6:12] = x[0, :1, 6:9, 6:12]
    x[1, 1, 10:14, 3:9] = x[1, 0, 10:14, 3:9]
    return x


# ------------------------------------------------------------------------------- distribution/jpeg.py


def _jpeg(x: torch.Tensor, quality: int | torch.Tensor) -> Case:
    """The fused default codec (sin rounding, 4:4:4) against the op-by-op path of every mode."""

    def reference(t: torch.Tensor) -> torch.Tensor:
        luma, chroma = (q.to(torch.float64) for q in quantization_tables(quality, n=t.shape[0]))
        return _composed_codec(t, luma, chroma, rounding="sin", harmonics=5, subsampling="4:4:4", exact=False)

    return Case(lambda t: jpeg_compress(t, quality), reference, (x,), "_SinJPEG444Backward")


def _jpeg_clipped_image(seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    x = 1.2 * torch.rand(*shape, generator=_generator(seed), dtype=torch.float64) - 0.1  # some values clipped
    x[0, 0, 0, :4] = torch.tensor([0.0, 1.0, 0.0, 1.0], dtype=torch.float64)  # on the clamp's ends
    return x


# ------------------------------------------------------------------------------------------- the cases

EQUALITY = {
    "nip-inet": lambda: _inet(torch.rand(2, 4, 9, 11, generator=_generator(0), dtype=torch.float64) * 1.2, 0.05, 0),
    "layers-conv3x3": lambda: _small_conv(3, 5, 7, 4, 3, 0),
    "layers-conv5x5": lambda: _small_conv(2, 4, 6, 4, 5, 1),
    "layers-conv1x1": lambda: _small_conv(2, 6, 5, 4, 1, 2),
    "sharpen-0.5": lambda: _sharpen(_sharpen_hard_image(0), 0.5),
    "sharpen-3": lambda: _sharpen(_sharpen_hard_image(1), 3.0),
    "jpeg-q5": lambda: _jpeg(_jpeg_clipped_image(5, (2, 3, 16, 24)), 5),
    "jpeg-q50": lambda: _jpeg(_jpeg_clipped_image(50, (2, 3, 21, 13)), 50),
    "jpeg-q100": lambda: _jpeg(_jpeg_clipped_image(100, (2, 3, 16, 8)), 100),
    "jpeg-per-image-quality": lambda: _jpeg(_jpeg_clipped_image(3, (2, 3, 8, 16)), torch.tensor([30, 90])),
}
"""Fast op vs reference on inputs that reach clamps, ties and borders (values and every gradient)."""

GRADCHECK = {
    "nip-inet": lambda: _inet(0.3 + 0.2 * torch.rand(2, 4, 3, 5, generator=_generator(2), dtype=torch.float64), 0.02, 2),
    "layers-conv": lambda: _small_conv(2, 3, 4, 4, 3, 3),
    "sharpen": lambda: _sharpen(0.1 + 0.8 * torch.rand(1, 3, 6, 7, generator=_generator(3), dtype=torch.float64), 1.0),
    "jpeg": lambda: _jpeg(0.2 + 0.6 * torch.rand(1, 3, 8, 8, generator=_generator(1), dtype=torch.float64), 50),
}
"""Tiny inputs where the op is smooth (nothing clipped, no ties), for finite differences."""


def _values_and_gradients(op: Op, inputs: tuple[torch.Tensor, ...], upstream: torch.Tensor | None):
    leaves = [t.clone().requires_grad_() for t in inputs]
    out = op(*leaves)
    if upstream is None:
        upstream = torch.randn(out.shape, generator=_generator(7), dtype=out.dtype)
    grads = torch.autograd.grad(out, leaves, upstream)
    return out, grads, upstream


@pytest.mark.parametrize("name", EQUALITY)
def test_fast_path_equals_reference(name: str, graph_ops) -> None:
    case = EQUALITY[name]()
    fast, fast_grads, upstream = _values_and_gradients(case.fast, case.inputs, None)
    assert case.node in graph_ops(fast)
    reference, reference_grads, _ = _values_and_gradients(case.reference, case.inputs, upstream)
    assert case.node not in graph_ops(reference)
    torch.testing.assert_close(fast, reference, rtol=0, atol=case.atol)
    for i, (got, want) in enumerate(zip(fast_grads, reference_grads)):
        scale = max(1.0, float(want.abs().max()))
        torch.testing.assert_close(got, want, rtol=0, atol=case.atol * scale, msg=lambda m: f"input {i}: {m}")


def test_the_equality_inputs_reach_the_clamps() -> None:
    """Where a clamp cuts, the hand-written masks matter: the cases above must exercise them."""
    inet = EQUALITY["nip-inet"]()
    out = inet.fast(*inet.inputs)
    assert ((out == 0) | (out == 1)).any() and ((out > 0) & (out < 1)).any()
    for name in ("sharpen-0.5", "sharpen-3"):
        (x,) = EQUALITY[name]().inputs
        y = EQUALITY[name]().fast(x)
        v, v_new = x.amax(1), y.amax(1)
        assert ((v_new == 1) & (v < 1)).any() and ((v_new == 0) & (v > 0)).any()


@pytest.mark.parametrize("name", GRADCHECK)
def test_fast_path_gradcheck(name: str, graph_ops) -> None:
    case = GRADCHECK[name]()
    leaves = tuple(t.clone().requires_grad_() for t in case.inputs)
    assert case.node in graph_ops(case.fast(*leaves))
    assert torch.autograd.gradcheck(case.fast, leaves, eps=1e-6, atol=1e-5)
