"""Separable filters as matrix products: equal to avg_pool2d, replicate-padded convolution and bilinear
resizing (float64)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from neuralimaging.distribution.separable import (
    box_downsample,
    box_matrix,
    replicate_filter_matrix,
    resize_matrix,
    separable_filter,
)
from neuralimaging.errors import InputError


@pytest.mark.parametrize("factor", [1, 2, 3])
@pytest.mark.parametrize("size", [(8, 8), (9, 14), (128, 128)])
def test_box_downsample_is_avg_pool2d(factor, size):
    x = torch.rand(2, 3, *size, dtype=torch.float64)
    torch.testing.assert_close(box_downsample(x, factor), F.avg_pool2d(x, factor), rtol=0, atol=1e-14)


@pytest.mark.parametrize("taps", [(0.25, 0.5, 0.25), (0.1, 0.2, 0.4, 0.2, 0.1), (1.0,), (-1.0, 3.0, 0.5, 2.0, -0.5)])
@pytest.mark.parametrize("size", [(4, 5), (2, 3), (16, 23)])
def test_replicate_filter_is_padded_convolution(taps, size):
    """M_h^T x M_w equals conv2d with the outer-product kernel on the replicate-padded image."""
    g = torch.tensor(taps, dtype=torch.float64)
    k = len(taps)
    x = torch.rand(2, 3, *size, dtype=torch.float64)
    padded = F.pad(x, (k // 2,) * 4, mode="replicate")
    expected = F.conv2d(padded, torch.outer(g, g).expand(3, 1, k, k), groups=3)
    m_h = replicate_filter_matrix(g, size[0], dtype=torch.float64)
    m_w = replicate_filter_matrix(g, size[1], dtype=torch.float64)
    torch.testing.assert_close(separable_filter(x, m_h, m_w), expected, rtol=0, atol=1e-13)


@pytest.mark.parametrize(("size", "small"), [((128, 128), (64, 64)), ((45, 67), (22, 34)), ((16, 9), (5, 13))])
def test_resize_matrices_are_bilinear_interpolation(size, small):
    """M_h^T x M_w equals F.interpolate(mode="bilinear"), down and up (one axis each)."""
    x = torch.rand(2, 3, *size, dtype=torch.float64)
    expected = F.interpolate(x, size=small, mode="bilinear", align_corners=False)
    m_h = resize_matrix(size[0], small[0], dtype=torch.float64)
    m_w = resize_matrix(size[1], small[1], dtype=torch.float64)
    assert m_h.shape == (size[0], small[0])
    torch.testing.assert_close(separable_filter(x, m_h, m_w), expected, rtol=0, atol=1e-14)
    up = F.interpolate(expected, size=size, mode="bilinear", align_corners=False)
    back = separable_filter(expected, resize_matrix(small[0], size[0], dtype=torch.float64),
                            resize_matrix(small[1], size[1], dtype=torch.float64))
    torch.testing.assert_close(back, up, rtol=0, atol=1e-14)


def test_gradcheck():
    m_h = replicate_filter_matrix((0.2, 0.6, 0.2), 5, dtype=torch.float64)
    m_w = box_matrix(6, 2, dtype=torch.float64)
    x = torch.rand(1, 2, 5, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: separable_filter(v, m_h, m_w), (x,))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matrices_follow_dtype_and_are_cached_not_shared(dtype):
    a = replicate_filter_matrix((0.5, 0.5, 0.0), 4, dtype=dtype)
    b = box_matrix(4, 2, dtype=dtype)
    assert a.dtype == b.dtype == dtype
    a.zero_()  # copies: the cached matrices are unchanged
    b.zero_()
    assert replicate_filter_matrix((0.5, 0.5, 0.0), 4, dtype=dtype).sum() == 4
    assert box_matrix(4, 2, dtype=dtype).sum() == 2


def test_bad_inputs():
    with pytest.raises(InputError, match="odd number of taps"):
        replicate_filter_matrix((0.5, 0.5), 4)
    with pytest.raises(InputError, match="cannot average-pool 3 samples by a factor of 4"):
        box_matrix(3, 4)
    with pytest.raises(InputError, match="cannot resize 0 samples to 3"):
        resize_matrix(0, 3)
    with pytest.raises(InputError, match="does not fit an image"):
        separable_filter(torch.rand(1, 1, 4, 4), box_matrix(6, 2), box_matrix(4, 2))


def test_keeps_the_input_dtype_under_autocast():
    x = torch.rand(2, 3, 16, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = box_downsample(x, 2)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, F.avg_pool2d(x, 2), rtol=0, atol=1e-6)
