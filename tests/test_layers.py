"""layers.Conv2d: tap-wise gradients equal aten's convolution backward (float64), and the module is nn.Conv2d."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from neuralimaging.layers import (
    Conv2d,
    _SmallConv2d,
    conv2d_input_grad_by_taps,
    conv2d_weight_grad_by_taps,
)

SHAPES = [  # (N, C_in, C_out, H, W, k, padding)
    (3, 5, 7, 4, 4, 3, 1),
    (2, 4, 6, 3, 5, 5, 2),
    (2, 3, 4, 8, 8, 3, 0),
    (2, 3, 4, 6, 7, 5, 1),
    (2, 6, 5, 4, 4, 1, 0),
]


@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("shape", SHAPES)
def test_tap_gradients_equal_aten_float64(shape, channels_last):
    n, c_in, c_out, h, w, k, p = shape
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, c_in, h, w, generator=gen, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    weight = torch.randn(c_out, c_in, k, k, generator=gen, dtype=torch.float64)
    grad = torch.randn(F.conv2d(x, weight, padding=p).shape, generator=gen, dtype=torch.float64)
    grad_x, grad_w, _ = torch.ops.aten.convolution_backward(
        grad, x, weight, None, [1, 1], [p, p], [1, 1], False, [0, 0], 1, [True, True, False]
    )
    torch.testing.assert_close(conv2d_weight_grad_by_taps(grad, x, k, p), grad_w, rtol=0, atol=1e-12)
    torch.testing.assert_close(conv2d_input_grad_by_taps(grad, weight, (h, w), p), grad_x, rtol=0, atol=1e-12)


@pytest.mark.parametrize(("size", "k"), [(4, 3), (4, 5), (4, 1), (2, 3)])
def test_bfloat16_autocast_path_matches_nn_conv2d(size, k, graph_ops):
    torch.manual_seed(0)
    reference = nn.Conv2d(32, 48, k, padding=k // 2)
    conv = Conv2d(32, 48, k, padding=k // 2)
    conv.load_state_dict(reference.state_dict())
    x0 = torch.rand(6, 32, size, size).contiguous(memory_format=torch.channels_last)
    out, grads = [], []
    for module in (reference, conv):
        x = x0.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = module(x)
        y.float().square().sum().backward()
        out.append(y)
        grads.append((x.grad, module.weight.grad, module.bias.grad))
    assert "_SmallConv2dBackward" in graph_ops(out[1]) and "_SmallConv2dBackward" not in graph_ops(out[0])
    assert out[1].dtype == torch.bfloat16
    torch.testing.assert_close(out[1], out[0], rtol=0, atol=0)  # the same oneDNN forward
    for ours, theirs in zip(grads[1], grads[0]):
        assert ours.dtype == theirs.dtype == torch.float32
        scale = theirs.abs().max()
        assert (ours - theirs).abs().max() <= 2e-2 * scale  # the same sums in another order, in bfloat16


def test_other_cases_are_nn_conv2d(graph_ops):
    conv = Conv2d(3, 4, 3, padding=1)
    small = torch.rand(1, 3, 4, 4, requires_grad=True)
    assert "_SmallConv2dBackward" not in graph_ops(conv(small))  # float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert "_SmallConv2dBackward" not in graph_ops(conv(torch.rand(1, 3, 8, 8, requires_grad=True)))  # 8 x 8
        strided = Conv2d(3, 4, 3, padding=1, stride=2)
        assert "_SmallConv2dBackward" not in graph_ops(strided(small))
        same = Conv2d(3, 4, 3, padding="same")
        assert "_SmallConv2dBackward" not in graph_ops(same(small))
        assert "_SmallConv2dBackward" in graph_ops(conv(small))
    bf16 = Conv2d(3, 4, 3, padding=1).to(torch.bfloat16)
    assert "_SmallConv2dBackward" in graph_ops(bf16(small.detach().to(torch.bfloat16).requires_grad_()))


def test_frozen_weights_and_no_bias():
    conv = Conv2d(8, 8, 3, padding=1, bias=False).requires_grad_(False)
    x = torch.rand(2, 8, 4, 4, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = conv(x)
    y.float().sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape and conv.weight.grad is None
