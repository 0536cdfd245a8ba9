"""Manipulations: the registry and parser, shapes and ranges, gradients, and references for each filter."""

from __future__ import annotations

import math

import kornia
import numpy as np
import pytest
import scipy.ndimage
import torch

from neuralimaging.distribution.jpeg import jpeg_compress
from neuralimaging.distribution.manipulations import (
    DEFAULT_MANIPULATIONS,
    MANIPULATIONS,
    available,
    gaussian_blur,
    median_filter,
    parse,
    resample,
    sharpen,
)
from neuralimaging.errors import InputError

ACTIVE = [name for name in MANIPULATIONS if name != "native"]


@pytest.fixture(scope="module")
def image(photos) -> torch.Tensor:
    """Two real photo crops of odd size, (2, 3, 45, 67) in [0, 1]."""
    crops = [torch.from_numpy(a[100:145, 150:217].copy()).permute(2, 0, 1) for a in photos[:2]]
    return torch.stack(crops).float() / 255.0


class TestParse:
    def test_defaults_in_paper_order(self) -> None:
        mods = parse(DEFAULT_MANIPULATIONS)
        assert [m.name for m in mods] == ["native", "sharpen", "gaussian", "jpeg", "resample"]
        assert [m.spec for m in mods] == ["native", "sharpen:1", "gaussian:0.83", "jpeg:80", "resample:50"]

    def test_strengths_and_ranges(self) -> None:
        mods = parse(" sharpen:2 , jpeg:70-90, resample:25,Median:5")
        assert [m.spec for m in mods] == ["sharpen:2", "jpeg:70-90", "resample:25", "median:5"]
        assert parse([m.spec for m in mods])[1].spec == "jpeg:70-90"

    def test_exponents_are_not_ranges(self) -> None:
        assert [m.spec for m in parse("gaussian:5e-1,awgn:1e-1-2")] == ["gaussian:0.5", "awgn:0.1-2"]

    def test_registry_lists_every_name(self) -> None:
        assert set(available()) == {"native", "sharpen", "gaussian", "jpeg", "resample", "awgn", "gamma", "median"}

    @pytest.mark.parametrize(
        ("spec", "match"),
        [
            ("blur", "unknown manipulation 'blur'"),
            ("", "empty entry"),
            ("native,,jpeg", "empty entry"),
            ("jpeg:0", "quality must be an integer in \\[1, 100\\]"),
            ("jpeg:101", "quality"),
            ("jpeg:80.5", "integer"),
            ("jpeg:abc", "not a number"),
            ("jpeg:", "empty strength"),
            ("jpeg:90-70", "empty"),
            ("sharpen:-1", "sharpen"),
            ("resample:100", "percent"),
            ("resample:0", "percent"),
            ("gaussian:nan", "not finite"),
            ("median:4", "odd"),
            ("awgn:0", "sigma"),
            ("gamma:1", "gamma"),
            ("native:3", "takes no strength"),
            ("jpeg,jpeg:80", "listed twice"),
        ],
    )
    def test_errors(self, spec, match) -> None:
        with pytest.raises(InputError, match=match):
            parse(spec)


class TestEveryManipulation:
    @pytest.mark.parametrize("name", ACTIVE)
    def test_shape_range_differs_and_gradient(self, image, name) -> None:
        (module,) = parse(name)
        x = image.clone().requires_grad_()
        y = module(x)
        assert y.shape == x.shape and y.dtype == x.dtype
        assert 0 <= y.min() and y.max() <= 1
        assert (y - x).abs().mean() > 1e-3  # differs from native
        (grad,) = torch.autograd.grad((y * torch.linspace(0, 1, y.numel()).reshape(y.shape)).sum(), x)
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0

    def test_native_is_identity(self, image) -> None:
        (native,) = parse("native")
        assert native(image) is image

    @pytest.mark.parametrize("name", ["sharpen", "gaussian", "resample", "gamma", "median"])
    def test_gradcheck(self, name) -> None:
        (module,) = parse(name)
        gen = torch.Generator().manual_seed(3)
        x = (0.1 + 0.8 * torch.rand(1, 3, 6, 7, generator=gen, dtype=torch.float64)).requires_grad_()
        assert torch.autograd.gradcheck(module, (x,), atol=1e-5)

    def test_random_strength_range(self, image) -> None:
        (jpeg,) = parse("jpeg:60-90", seed=5)
        drawn = [jpeg.strength() for _ in range(40)]
        assert all(60 <= q <= 90 and q == int(q) for q in drawn)
        assert len(set(drawn)) > 5
        (again,) = parse("jpeg:60-90", seed=5)
        assert [again.strength() for _ in range(40)] == drawn
        (gauss,) = parse("gaussian:0.5-1.5")
        sigmas = [gauss.strength() for _ in range(20)]
        assert all(0.5 <= s <= 1.5 for s in sigmas) and len(set(sigmas)) == 20
        (median,) = parse("median:3-7")
        assert {median.strength() for _ in range(40)} == {3.0, 5.0, 7.0}


class TestReferences:
    def test_sharpen_matches_paper_kernel_on_v(self, image) -> None:
        x = image.double()
        v = x.amax(1).numpy()
        kernel = np.array([[-1, -4, -1], [-4, 26, -4], [-1, -4, -1]], dtype=np.float64) / 6.0
        expected = np.clip(np.stack([scipy.ndimage.correlate(p, kernel, mode="nearest") for p in v]), 0, 1)
        y = sharpen(x, 1.0)
        assert np.allclose(y.amax(1).numpy(), expected, atol=1e-12)

    def test_sharpen_keeps_hue_and_saturation(self, image) -> None:
        x = image.double()
        before, after = kornia.color.rgb_to_hsv(x), kornia.color.rgb_to_hsv(sharpen(x, 1.0))
        keep = (after[:, 2] > 0.02) & (after[:, 2] < 1.0) & (before[:, 1] > 1e-3)  # kornia divides by V + 1e-8
        hue = torch.remainder(after[:, 0] - before[:, 0] + math.pi, 2 * math.pi) - math.pi
        assert keep.float().mean() > 0.5
        assert hue[keep].abs().max() < 1e-6
        assert (after[:, 1] - before[:, 1])[keep].abs().max() < 1e-6

    def test_gaussian_matches_kornia(self, image) -> None:
        expected = kornia.filters.gaussian_blur2d(image.double(), (5, 5), (0.83, 0.83), border_type="replicate")
        assert torch.allclose(gaussian_blur(image.double(), 0.83), expected, atol=1e-10)

    def test_median_matches_scipy(self, image) -> None:
        expected = scipy.ndimage.median_filter(image.numpy(), size=(1, 1, 3, 3), mode="nearest")
        assert np.array_equal(median_filter(image, 3).numpy(), expected)

    def test_resample_half_is_bilinear_down_up(self, image) -> None:
        x = image[:, :, :44, :66]
        down = torch.nn.functional.interpolate(x, size=(22, 33), mode="bilinear", align_corners=False)
        up = torch.nn.functional.interpolate(down, size=(44, 66), mode="bilinear", align_corners=False)
        assert torch.allclose(resample(x, 50), up.clamp(0, 1))

    def test_jpeg_is_djpeg_q80_sin(self, image) -> None:
        (jpeg,) = parse("jpeg")
        assert torch.equal(jpeg(image), jpeg_compress(image, 80, rounding="sin", subsampling="4:4:4"))

    def test_awgn_sigma(self) -> None:
        (noise,) = parse("awgn:10")
        x = torch.full((1, 3, 128, 128), 0.5)
        std = (noise(x) - x).std().item() * 255
        assert 9.5 < std < 10.5
        assert not torch.equal(noise(x), noise(x))  # fresh noise per batch

    def test_gamma(self, image) -> None:
        (g,) = parse("gamma:2")
        assert torch.allclose(g(image), image.clamp(min=1e-6) ** 0.5)
