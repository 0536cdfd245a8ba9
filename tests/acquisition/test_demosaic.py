"""Menon 2007 in torch against colour-demosaicing: every pattern, with and without refinement, borders included."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from colour_demosaicing import demosaicing_CFA_Bayer_Menon2007

from neuralimaging.acquisition.bayer import CFA_PATTERNS, from_rggb, mosaic_rgb, to_rggb
from neuralimaging.acquisition.demosaic import Menon2007, menon2007, rggb_to_mosaic
from neuralimaging.acquisition.isp import demosaic as isp_demosaic
from neuralimaging.errors import InputError

SIZES = [(8, 10), (16, 16), (12, 30)]


def _reference(mosaic: np.ndarray, pattern: str, refine: bool) -> np.ndarray:
    """colour-demosaicing on one ``(H, W)`` mosaic -> ``(3, H, W)``."""
    return demosaicing_CFA_Bayer_Menon2007(mosaic, pattern, refining_step=refine).transpose(2, 0, 1)


def _ours(mosaic: np.ndarray, pattern: str, refine: bool = True) -> np.ndarray:
    return menon2007(torch.from_numpy(mosaic)[None, None], pattern, refine)[0].numpy()


def _photo_mosaic(photos: list[np.ndarray], pattern: str) -> np.ndarray:
    """A float64 mosaic of an 8-bit photo's region with flat patches, where ``d_H == d_V`` holds exactly.

    The decision's ties there are broken by rounding: a different summation order of the classifier or float32
    arithmetic for it changes tens of pixels in this 96x256 region (checked when the tests were written).
    """
    crop = photos[2][128:224, :256].transpose(2, 0, 1) / 255.0
    return mosaic_rgb(crop, pattern)


class TestMenon2007:
    @pytest.mark.parametrize("refine", [True, False])
    @pytest.mark.parametrize("pattern", CFA_PATTERNS)
    @pytest.mark.parametrize("size", SIZES)
    def test_matches_colour_demosaicing_float64(self, pattern: str, refine: bool, size: tuple[int, int]) -> None:
        mosaic = np.random.default_rng(sum(size)).random(size)
        expected = _reference(mosaic, pattern, refine)
        np.testing.assert_allclose(_ours(mosaic, pattern, refine), expected, rtol=0, atol=1e-12)

    @pytest.mark.parametrize("size", [(2, 2), (2, 6), (4, 2)])
    @pytest.mark.parametrize("pattern", CFA_PATTERNS)
    def test_tiny_mosaics(self, pattern: str, size: tuple[int, int]) -> None:
        """Two-pixel sides, where the 5-tap filters mirror more than once (scipy's and numpy's extension)."""
        mosaic = np.random.default_rng(3).random(size)
        np.testing.assert_allclose(_ours(mosaic, pattern), _reference(mosaic, pattern, True), rtol=0, atol=1e-12)

    @pytest.mark.parametrize("refine", [True, False])
    @pytest.mark.parametrize("pattern", CFA_PATTERNS)
    def test_matches_colour_demosaicing_on_a_photo(self, photos, pattern: str, refine: bool) -> None:
        """Regression: on 8-bit content d_H == d_V often holds exactly; the ties must be broken as scipy does."""
        mosaic = _photo_mosaic(photos, pattern)
        expected = _reference(mosaic, pattern, refine)
        np.testing.assert_allclose(_ours(mosaic, pattern, refine), expected, rtol=0, atol=1e-12)

    @pytest.mark.parametrize("pattern", CFA_PATTERNS)
    def test_float32_close_to_float64_reference(self, pattern: str) -> None:
        mosaic = np.random.default_rng(5).random((16, 24))
        ours = menon2007(torch.from_numpy(mosaic).float()[None, None], pattern)
        assert ours.dtype == torch.float32
        np.testing.assert_allclose(ours[0].numpy(), _reference(mosaic, pattern, True), rtol=0, atol=1e-5)

    @pytest.mark.parametrize("pattern", CFA_PATTERNS)
    def test_float32_matches_the_python_isp_demosaic(self, photos, pattern: str) -> None:
        """In float32 the decision follows colour-demosaicing run in float32 (the python ISP's targets)."""
        mosaic = _photo_mosaic(photos, pattern).astype(np.float32)
        ours = menon2007(torch.from_numpy(mosaic)[None, None], pattern)[0].numpy()
        np.testing.assert_allclose(ours, isp_demosaic(mosaic, pattern), rtol=0, atol=2e-6)

    @pytest.mark.parametrize("refine", [True, False])
    def test_batch_items_are_independent(self, refine: bool) -> None:
        batch = torch.rand(3, 1, 12, 14, dtype=torch.float64)
        together = menon2007(batch, "GBRG", refine)
        one_by_one = torch.cat([menon2007(item[None], "GBRG", refine) for item in batch])
        torch.testing.assert_close(together, one_by_one, rtol=0, atol=0)

    @pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
    def test_cardinality(self, dtype: torch.dtype) -> None:
        out = menon2007(torch.rand(2, 1, 6, 8, dtype=dtype), "BGGR")
        assert out.shape == (2, 3, 6, 8) and out.dtype == dtype

    def test_flat_field_stays_flat(self) -> None:
        out = menon2007(torch.full((1, 1, 10, 12), 0.25, dtype=torch.float64))
        torch.testing.assert_close(out, torch.full((1, 3, 10, 12), 0.25, dtype=torch.float64), rtol=0, atol=0)

    @pytest.mark.parametrize("refine", [True, False])
    @pytest.mark.parametrize("pattern", ["RGGB", "GBRG"])
    def test_gradcheck(self, pattern: str, refine: bool) -> None:
        # piecewise linear: random inputs sit away from the decision's ties, where it is smooth
        mosaic = torch.rand(2, 1, 6, 8, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda x: menon2007(x, pattern, refine), (mosaic,))

    def test_gradient_of_a_float32_batch(self) -> None:
        mosaic = torch.rand(2, 1, 16, 16, requires_grad=True)
        menon2007(mosaic).square().sum().backward()
        assert mosaic.grad is not None and mosaic.grad.dtype == torch.float32
        assert torch.isfinite(mosaic.grad).all() and mosaic.grad.abs().sum() > 0

    @pytest.mark.parametrize(
        ("shape", "message"),
        [
            ((8, 10), r"\(N, 1, H, W\)"),
            ((1, 3, 8, 10), r"\(N, 1, H, W\)"),
            ((1, 1, 8, 9), "even"),
            ((1, 1, 7, 10), "even"),
        ],
    )
    def test_exception_on_shapes(self, shape: tuple[int, ...], message: str) -> None:
        with pytest.raises(InputError, match=message):
            menon2007(torch.rand(shape))

    def test_exception_on_pattern_and_dtype(self) -> None:
        with pytest.raises(InputError, match="CFA pattern"):
            menon2007(torch.rand(1, 1, 8, 8), "RGBG")
        with pytest.raises(InputError, match="floating-point"):
            menon2007(torch.ones(1, 1, 8, 8, dtype=torch.uint8))
        with pytest.raises(InputError, match="torch.Tensor"):
            menon2007(np.zeros((1, 1, 8, 8)))  # type: ignore[arg-type]

    @pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
    def test_cuda_matches_cpu(self) -> None:
        mosaic = torch.rand(2, 1, 32, 48, dtype=torch.float64)
        torch.testing.assert_close(menon2007(mosaic.cuda(), "GRBG").cpu(), menon2007(mosaic, "GRBG"))


class TestMenon2007Module:
    def test_module_calls_the_function(self) -> None:
        module = Menon2007("grbg", refine=False)
        assert module.pattern == "GRBG" and not module.refine and not list(module.parameters())
        mosaic = torch.rand(1, 1, 8, 10)
        torch.testing.assert_close(module(mosaic), menon2007(mosaic, "GRBG", refine=False), rtol=0, atol=0)
        assert "GRBG" in repr(module)

    def test_exception(self) -> None:
        with pytest.raises(InputError, match="CFA pattern"):
            Menon2007("XYZW")


class TestRggbToMosaic:
    def test_inverse_of_to_rggb(self) -> None:
        mosaic = torch.rand(2, 1, 6, 10)
        stack = to_rggb(mosaic[:, 0], "RGGB")
        torch.testing.assert_close(rggb_to_mosaic(stack), mosaic, rtol=0, atol=0)
        torch.testing.assert_close(rggb_to_mosaic(stack), F.pixel_shuffle(stack, 2), rtol=0, atol=0)
        torch.testing.assert_close(rggb_to_mosaic(stack)[:, 0], from_rggb(stack, "RGGB"), rtol=0, atol=0)

    def test_gradient_flows(self) -> None:
        stack = torch.rand(1, 4, 3, 5, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(rggb_to_mosaic, (stack,))

    @pytest.mark.parametrize("shape", [(4, 3, 5), (1, 3, 3, 5)])
    def test_exception(self, shape: tuple[int, ...]) -> None:
        with pytest.raises(InputError, match=r"\(N, 4, h, w\)"):
            rggb_to_mosaic(torch.rand(shape))
