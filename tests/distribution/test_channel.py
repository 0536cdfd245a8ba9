"""The sharing channel: defaults (the paper's), parsing, gradients, and its real-codec twin."""

from __future__ import annotations

import pytest
import torch

from neuralimaging.distribution.channel import Channel, _pillow_downsample, downsample
from neuralimaging.distribution.jpeg import jpeg_compress
from neuralimaging.errors import InputError
from neuralimaging.metrics import psnr_per_image


@pytest.fixture(scope="module")
def image(photos) -> torch.Tensor:
    """Three real photo crops, (3, 3, 96, 130) in [0, 1]."""
    crops = [torch.from_numpy(a[50:146, 60:190].copy()).permute(2, 0, 1) for a in photos[:3]]
    return torch.stack(crops).float() / 255.0


def test_default_is_the_papers_channel(image) -> None:
    channel = Channel()
    assert channel.spec == "down:2,jpeg:50"
    x = image.clone().requires_grad_()
    y = channel(x)
    expected = jpeg_compress(torch.nn.functional.avg_pool2d(image, 2), 50, rounding="sin", subsampling="4:4:4")
    assert y.shape == (3, 3, 48, 65)
    # 2x2 pooling as two matrix products: the same sums in another order (float32 rounding).
    torch.testing.assert_close(y.detach(), expected, rtol=0, atol=1e-5)
    (grad,) = torch.autograd.grad(y.sum(), x)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


@pytest.mark.parametrize(
    "spec",
    ["down:2,jpeg:50", "none", "jpeg:75", "down:3", "bilinear:2,jpeg:80,rounding:soft,subsampling:4:2:0",
     "down:2,jpeg:50,codec:libjpeg"],
)
def test_parse_round_trip(spec) -> None:
    channel = Channel.parse(spec)
    assert channel.spec == spec
    assert Channel.parse(channel.spec).spec == spec


def test_parse_overrides() -> None:
    channel = Channel.parse("down:2,jpeg:50", codec="libjpeg", subsampling="4:2:0")
    assert (channel.codec, channel.subsampling, channel.quality, channel.factor) == ("libjpeg", "4:2:0", 50, 2)


@pytest.mark.parametrize(
    ("spec", "match"),
    [("", "empty"), ("down:x", "not an integer"), ("jpeg:0", "quality"), ("blur:2", "unknown channel part"),
     ("rounding:floor", "rounding"), ("codec:", "needs a value"), ("down:0", "factor")],
)
def test_parse_errors(spec, match) -> None:
    with pytest.raises(InputError, match=match):
        Channel.parse(spec)


def test_none_is_identity(image) -> None:
    assert torch.equal(Channel.parse("none")(image), image)
    assert torch.equal(Channel.parse("none", codec="libjpeg")(image), torch.round(image * 255) / 255)


@pytest.mark.parametrize("method", ["avg", "bilinear"])
def test_downsampling_matches_pillow(image, method) -> None:
    ours = downsample(image, 2, method)
    pillow = _pillow_downsample(image, 2, method)
    assert ours.shape == pillow.shape
    assert (ours - pillow).abs().max() * 255 <= 1.0 + 1e-4  # Pillow rounds to 8 bits


@pytest.mark.parametrize("subsampling", ["4:4:4", "4:2:0"])
@pytest.mark.parametrize("method", ["avg", "bilinear"])
def test_libjpeg_twin_is_close(image, method, subsampling) -> None:
    settings = {"downsample": 2, "method": method, "quality": 75, "subsampling": subsampling}
    ours = Channel(rounding="none", **settings)(image)
    twin_channel = Channel(codec="libjpeg", **settings)
    twin = twin_channel(image.requires_grad_(False))
    assert not twin.requires_grad
    # the twin rounds the down-sampled image to 8 bits before coding: close, not equal
    assert psnr_per_image(ours, twin).mean() > 38


def test_bad_arguments() -> None:
    with pytest.raises(InputError, match="method"):
        Channel(method="lanczos")
    with pytest.raises(InputError, match="quality"):
        Channel(quality=101)
    with pytest.raises(InputError, match="too small"):
        Channel()(torch.rand(1, 3, 1, 5))
