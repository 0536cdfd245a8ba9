"""dJPEG against libjpeg (Pillow) on real photos, its rounding modes, gradients, tables and edge cases."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

from neuralimaging import registry
from neuralimaging.distribution.jpeg import (
    CHROMA_TABLE,
    LUMA_TABLE,
    ROUNDING_MODES,
    DifferentiableJPEG,
    approximate_round,
    compare_with_libjpeg,
    jpeg_compress,
    libjpeg_compress,
    quantization_tables,
    rgb_to_ycbcr,
    ycbcr_to_rgb,
)
from neuralimaging.distribution.jpeg import _composed_codec  # the op-by-op path, reference of the fused op
from neuralimaging.errors import InputError
from neuralimaging.metrics import psnr_per_image as psnr

SUBSAMPLINGS = ("4:4:4", "4:2:0")



def _crops(photos: list[np.ndarray], h: int, w: int) -> torch.Tensor:
    out = []
    for a in photos:
        top, left = (a.shape[0] - h) // 2, (a.shape[1] - w) // 2
        out.append(torch.from_numpy(a[top : top + h, left : left + w].copy()).permute(2, 0, 1))
    return torch.stack(out).float() / 255.0


@pytest.fixture(scope="module")
def batch(photos) -> torch.Tensor:
    """The bundled photos as 128x128 centre crops, (9, 3, 128, 128) in [0, 1]."""
    return _crops(photos, 128, 128)


@pytest.fixture(scope="module")
def odd_batch(photos) -> torch.Tensor:
    """Odd-sized crops (61x77) exercising the padding to blocks and MCUs."""
    return _crops(photos, 61, 77)


class TestLibjpegFidelity:
    """rounding="none" reproduces Pillow's decode of Pillow's encode (bit for bit with libjpeg-turbo's islow DCT)."""

    @pytest.mark.parametrize("subsampling", SUBSAMPLINGS)
    @pytest.mark.parametrize("quality", [1, 10, 50, 75, 95, 100])
    def test_bit_exact(self, batch, odd_batch, quality, subsampling) -> None:
        for x in (batch, odd_batch):
            ours = jpeg_compress(x, quality, rounding="none", subsampling=subsampling)
            assert torch.equal(ours, libjpeg_compress(x, quality, subsampling=subsampling))

    @pytest.mark.parametrize("subsampling", SUBSAMPLINGS)
    @pytest.mark.parametrize("quality", [10, 30, 50, 75, 80, 90, 95])
    def test_psnr_bounds(self, batch, quality, subsampling) -> None:
        # the fidelity target (docs/benchmarks.md): mean >= 48 dB and every photo >= 43 dB, all qualities and subsamplings
        result = compare_with_libjpeg(batch, quality, rounding="none", subsampling=subsampling)
        assert result["psnr"].mean() >= 48.0
        assert result["psnr"].min() >= 43.0

    @pytest.mark.parametrize("subsampling", SUBSAMPLINGS)
    @pytest.mark.parametrize("quality", [30, 75])
    def test_odd_sizes(self, odd_batch, quality, subsampling) -> None:
        result = compare_with_libjpeg(odd_batch, quality, rounding="none", subsampling=subsampling)
        assert result["psnr"].mean() >= 48.0
        assert result["psnr"].min() >= 43.0

    def test_exact_forward_modes_agree(self, batch) -> None:
        # soft and ste share the exact forward pass of none
        ref = jpeg_compress(batch[:2], 50, rounding="none", subsampling="4:2:0")
        for mode in ("soft", "ste"):
            assert torch.equal(jpeg_compress(batch[:2], 50, rounding=mode, subsampling="4:2:0"), ref)

    def test_real_valued_path_is_close_but_not_exact(self, batch) -> None:
        # without libjpeg's integer arithmetic (float DCT, no sample rounding) the match is only approximate
        ref = libjpeg_compress(batch, 50, subsampling="4:2:0")
        plain = psnr(jpeg_compress(batch, 50, rounding="none", subsampling="4:2:0", exact=False), ref)
        assert 30 < plain.mean() < 60

    def test_quality_scales_distortion(self, batch) -> None:
        errors = [psnr(jpeg_compress(batch, q, rounding="none"), batch).mean() for q in (10, 50, 95)]
        assert errors[0] < errors[1] < errors[2]

    def test_per_sample_quality(self, batch) -> None:
        x = batch[:3]
        q = torch.tensor([10, 50, 90])
        for codec in ("differentiable", "libjpeg"):
            joint = jpeg_compress(x, q, rounding="none", subsampling="4:2:0", codec=codec)
            for i in range(3):
                alone = jpeg_compress(x[i : i + 1], int(q[i]), rounding="none", subsampling="4:2:0", codec=codec)
                assert torch.equal(joint[i : i + 1], alone)


class TestTablesAndColour:
    @pytest.mark.parametrize("quality", list(range(1, 101)))
    def test_tables_equal_pillow(self, quality) -> None:
        buffer = io.BytesIO()
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buffer, "JPEG", quality=quality)
        buffer.seek(0)
        tables = Image.open(buffer).quantization
        luma, chroma = quantization_tables(quality)
        assert luma[0].long().tolist() == list(tables[0])
        assert chroma[0].long().tolist() == list(tables[1])

    def test_base_tables(self) -> None:
        luma, chroma = quantization_tables(50)
        assert luma[0].tolist() == list(LUMA_TABLE)
        assert chroma[0].tolist() == list(CHROMA_TABLE)

    def test_colour_round_trip_float64(self) -> None:
        rgb = torch.rand(2, 3, 5, 7, dtype=torch.float64) * 255
        back = ycbcr_to_rgb(rgb_to_ycbcr(rgb))
        assert torch.allclose(back, rgb, atol=1e-6)

    def test_exact_colour_is_integer_and_close(self) -> None:
        rgb = torch.randint(0, 256, (1, 3, 16, 16)).double()
        exact = rgb_to_ycbcr(rgb, exact=True)
        assert torch.equal(exact, torch.round(exact))
        assert (exact - rgb_to_ycbcr(rgb)).abs().max() <= 0.5 + 1e-9


class TestRounding:
    def test_none_rounds_half_away_from_zero(self) -> None:
        x = torch.tensor([-2.5, -1.5, -0.5, -0.49, 0.0, 0.49, 0.5, 1.5, 2.5], dtype=torch.float64)
        expected = np.sign(x.numpy()) * np.floor(np.abs(x.numpy()) + 0.5)
        assert torch.equal(approximate_round(x, "none"), torch.from_numpy(expected))

    def test_sin_formula_and_soft_gradient(self) -> None:
        x = torch.linspace(-3, 3, 101, dtype=torch.float64, requires_grad=True)
        s = approximate_round(x, "sin")
        assert torch.allclose(s, x - torch.sin(2 * math.pi * x) / (2 * math.pi))
        soft = approximate_round(x, "soft")
        assert torch.equal(soft.detach(), approximate_round(x.detach(), "none"))
        (grad,) = torch.autograd.grad(soft.sum(), x)
        assert torch.allclose(grad, 1 - torch.cos(2 * math.pi * x.detach()))

    def test_ste_gradient_is_identity(self) -> None:
        x = torch.randn(50, dtype=torch.float64, requires_grad=True) * 4
        y = approximate_round(x, "ste")
        (grad,) = torch.autograd.grad(y.sum(), x)
        assert torch.equal(y.detach(), approximate_round(x.detach(), "none"))
        assert torch.equal(grad, torch.ones_like(grad))

    @pytest.mark.parametrize("harmonics", [1, 5, 50])
    def test_harmonic_converges_to_round(self, harmonics) -> None:
        # away from the jumps the K-term series approaches round(x); error falls with K
        x = torch.linspace(-2.3, 2.3, 47, dtype=torch.float64)
        x = x[(x - torch.floor(x) - 0.5).abs() > 0.1]
        err = (approximate_round(x, "harmonic", harmonics=harmonics) - torch.round(x)).abs().max()
        bound = {1: 0.35, 5: 0.2, 50: 0.03}[harmonics]
        assert err < bound

    def test_bad_mode(self) -> None:
        with pytest.raises(InputError, match="rounding must be one of"):
            approximate_round(torch.zeros(1), "floor")


class TestGradients:
    @pytest.mark.parametrize("subsampling", SUBSAMPLINGS)
    @pytest.mark.parametrize("rounding", ["sin", "harmonic"])
    def test_gradcheck_smooth_modes(self, rounding, subsampling) -> None:
        gen = torch.Generator().manual_seed(1)
        x = (0.2 + 0.6 * torch.rand(1, 3, 8, 8, generator=gen, dtype=torch.float64)).requires_grad_()
        def codec(t: torch.Tensor) -> torch.Tensor:
            return jpeg_compress(t, 50, rounding=rounding, subsampling=subsampling)

        assert torch.autograd.gradcheck(codec, (x,))

    @pytest.mark.parametrize("subsampling", SUBSAMPLINGS)
    @pytest.mark.parametrize("rounding", ROUNDING_MODES)
    @pytest.mark.parametrize("quality", [1, 100])
    def test_finite_at_quality_ends(self, quality, rounding, subsampling) -> None:
        x = torch.rand(2, 3, 19, 21, requires_grad=True)
        y = jpeg_compress(x, quality, rounding=rounding, subsampling=subsampling)
        y.square().sum().backward()
        assert y.shape == x.shape
        assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()
        assert 0 <= y.min() and y.max() <= 1
        if rounding != "none":
            assert x.grad.abs().sum() > 0

    def test_fused_sin_codec_per_image_quality(self) -> None:
        # values and gradients against the op-by-op path: tests/test_fast_paths.py
        gen = torch.Generator().manual_seed(2)
        x = (0.2 + 0.6 * torch.rand(2, 3, 8, 16, generator=gen, dtype=torch.float64)).requires_grad_()
        quality = torch.tensor([30, 90])
        each = torch.cat([jpeg_compress(x[i : i + 1], int(q)) for i, q in enumerate(quality)])
        assert torch.allclose(jpeg_compress(x, quality), each, rtol=0, atol=1e-13)

    def test_fused_sin_codec_ignores_autocast(self) -> None:
        # Under bfloat16 autocast the codec keeps float32 (a bfloat16 DCT would move coefficients across bins).
        x = torch.rand(2, 3, 16, 16)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = jpeg_compress(x, 50)
        assert y.dtype == torch.float32 and torch.equal(y, jpeg_compress(x, 50))

    def test_learnable_tables(self) -> None:
        luma = nn.Parameter(torch.tensor(LUMA_TABLE, dtype=torch.float32).reshape(8, 8))
        chroma = nn.Parameter(torch.tensor(CHROMA_TABLE, dtype=torch.float32).reshape(8, 8))
        jpeg = DifferentiableJPEG(50, "soft", luma_table=luma, chroma_table=chroma)
        assert registry.count_parameters(jpeg) == 128
        x = torch.rand(2, 3, 16, 16)
        y = jpeg(x)
        assert torch.equal(y, jpeg_compress(x, 50, rounding="soft"))  # same forward as the fixed tables
        ((y - x) ** 2).sum().backward()
        assert luma.grad is not None and luma.grad.abs().sum() > 0
        assert chroma.grad is not None and chroma.grad.abs().sum() > 0

    def test_libjpeg_codec_has_no_gradient_unless_straight_through(self) -> None:
        x = torch.rand(1, 3, 16, 16, requires_grad=True)
        assert not jpeg_compress(x, 50, codec="libjpeg").requires_grad
        y = jpeg_compress(x, 50, codec="libjpeg", straight_through=True)
        (grad,) = torch.autograd.grad(y.sum(), x)
        assert torch.equal(grad, torch.ones_like(grad))


class TestModuleAndInput:
    def test_registered_codec(self) -> None:
        model = registry.create("djpeg", kind="codec")
        assert isinstance(model, DifferentiableJPEG)
        assert registry.count_parameters(model) == 0

    def test_module_matches_function_and_keeps_dtype(self) -> None:
        x = torch.rand(2, 3, 24, 40, dtype=torch.float64)
        jpeg = DifferentiableJPEG(75, "harmonic", "4:2:0").double()
        y = jpeg(x)
        assert y.dtype == torch.float64
        assert torch.allclose(y, jpeg_compress(x, 75, rounding="harmonic", subsampling="4:2:0"))
        assert torch.allclose(jpeg(x, quality=20), jpeg_compress(x, 20, rounding="harmonic", subsampling="4:2:0"))

    @pytest.mark.parametrize("size", [(1, 1), (7, 9), (8, 8), (17, 33)])
    def test_tiny_and_odd_shapes(self, size) -> None:
        x = torch.rand(1, 3, *size)
        for subsampling in SUBSAMPLINGS:
            assert jpeg_compress(x, 50, subsampling=subsampling).shape == x.shape
        assert jpeg_compress(x[0], 50).shape == x[0].shape

    @pytest.mark.parametrize("quality", [0, 101, -5, 50.5, float("nan"), "50", True, None])
    def test_bad_quality(self, quality) -> None:
        with pytest.raises(InputError, match="quality"):
            jpeg_compress(torch.rand(1, 3, 8, 8), quality)

    def test_bad_quality_tensor(self) -> None:
        with pytest.raises(InputError, match="one per image"):
            jpeg_compress(torch.rand(3, 3, 8, 8), torch.tensor([50, 60]))
        with pytest.raises(InputError, match="quality must be an integer"):
            jpeg_compress(torch.rand(2, 3, 8, 8), torch.tensor([50, 0]))

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [({"subsampling": "4:2:2"}, "subsampling"), ({"codec": "webp"}, "codec"), ({"rounding": "x"}, "rounding")],
    )
    def test_bad_options(self, kwargs, match) -> None:
        with pytest.raises(InputError, match=match):
            jpeg_compress(torch.rand(1, 3, 8, 8), 50, **kwargs)

    @pytest.mark.parametrize("shape", [(1, 1, 8, 8), (2, 4, 8, 8), (8, 8)])
    def test_bad_shape(self, shape) -> None:
        with pytest.raises(InputError, match=r"\(N, 3, H, W\)"):
            jpeg_compress(torch.rand(*shape), 50)

    def test_integer_image_rejected(self) -> None:
        with pytest.raises(InputError, match="floating-point"):
            jpeg_compress(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), 50)

    @pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
    def test_cuda_matches_cpu(self, batch) -> None:
        x = batch[:2]
        cpu = jpeg_compress(x, 50, rounding="none", subsampling="4:2:0")
        gpu = jpeg_compress(x.cuda(), torch.tensor([50, 50]).cuda(), rounding="none", subsampling="4:2:0")
        assert psnr(gpu.cpu(), cpu).min() > 50
