"""PRNU noise residuals: the wavelet denoiser against a plain reference, zero-mean and DFT Wiener steps."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import pywt
from scipy.ndimage import uniform_filter

from neuralimaging.forensics import prnu
from neuralimaging.forensics.prnu.residuals import _wavedec2_lines, _waverec2_lines


def _reference_residual(plane: np.ndarray, sigma: float) -> np.ndarray:
    """prnu-python's denoiser written plainly in float64: uniform_filter per window, no tricks."""
    var = (sigma / 255.0) ** 2
    coeffs = pywt.wavedec2(plane.astype(np.float64), "db4", mode="periodization", level=4)
    out = [np.zeros_like(coeffs[0])]
    for bands in coeffs[1:]:
        shrunk = []
        for band in bands:
            local = np.min([np.maximum(uniform_filter(band**2, w, mode="constant") - var, 0) for w in (3, 5, 7, 9)], axis=0)
            shrunk.append(band * var / (local + var))
        out.append(tuple(shrunk))
    return pywt.waverec2(out, "db4", mode="periodization")


class TestResidual:
    @pytest.mark.parametrize("shape", [(128, 128), (144, 160), (130, 100)])
    @pytest.mark.parametrize("sigma", [2.0, 5.0])
    def test_matches_plain_reference(self, photos, shape, sigma) -> None:
        plane = photos[0][: shape[0], : shape[1], 1].astype(np.float32) / 255.0
        ours = prnu.wavelet_residual(plane, sigma=sigma)
        h, w = shape
        padded = np.pad(plane, ((0, (-h) % 16), (0, (-w) % 16)), mode="symmetric")
        reference = _reference_residual(padded, sigma)[:h, :w]
        assert ours.dtype == np.float32 and ours.shape == shape
        np.testing.assert_allclose(ours, reference, atol=2e-5)

    def test_batch_equals_single_and_threads(self, photos) -> None:
        stack = np.stack([p[:128, :128, c] for p in photos[:3] for c in range(3)]).astype(np.float32) / 255.0
        batched = prnu.wavelet_residual(stack, workers=3)
        single = np.stack([prnu.wavelet_residual(s, workers=1) for s in stack])
        np.testing.assert_allclose(batched, single, atol=1e-6)

    @pytest.mark.parametrize(("shape", "levels"), [((64, 64), 4), ((96, 160), 4), ((48, 80), 3), ((32, 16), 1)])
    def test_line_transforms_match_pywavelets(self, photos, shape, levels) -> None:
        """The transposing row-by-row transform gives PyWavelets' bands (every other level transposed)."""
        stack = np.stack([p[: shape[0], : shape[1], 1] for p in photos[:3]]).astype(np.float32) / 255.0
        with warnings.catch_warnings():  # PyWavelets warns that 4 levels of 64x64 all touch the boundary
            warnings.simplefilter("ignore", UserWarning)
            reference = pywt.wavedec2(stack.astype(np.float64), "db4", mode="periodization", level=levels, axes=(-2, -1))
        details = _wavedec2_lines(stack, levels, "db4")
        assert len(details) == levels
        for level, ours in enumerate(details):  # finest first; reference[-1] is the finest
            horizontal, vertical, diagonal = reference[levels - level]
            if level % 2 == 0:  # the finest level and every other one come out transposed
                expected = [band.swapaxes(-1, -2) for band in (horizontal, vertical, diagonal)]
            else:  # the others in place, with the horizontal and vertical bands exchanged
                expected = [vertical, horizontal, diagonal]
            for band, reference_band in zip(ours, expected, strict=True):
                assert band.dtype == np.float32 and band.flags.c_contiguous
                np.testing.assert_allclose(band, reference_band, atol=2e-6)
        rng = np.random.default_rng(levels)
        shrunk = [tuple(band * rng.random(band.shape, dtype=np.float32) for band in bands) for bands in details]
        ours = _waverec2_lines(shrunk, "db4")
        back = [np.zeros_like(reference[0])]
        for level in range(levels, 0, -1):  # coarsest first, as PyWavelets wants
            low_high, high_low, high_high = (band.astype(np.float64) for band in shrunk[level - 1])
            if (level - 1) % 2 == 0:
                back.append((low_high.swapaxes(-1, -2), high_low.swapaxes(-1, -2), high_high.swapaxes(-1, -2)))
            else:
                back.append((high_low, low_high, high_high))
        expected = pywt.waverec2(back, "db4", mode="periodization", axes=(-2, -1))
        assert ours.shape == stack.shape and ours.dtype == np.float32
        np.testing.assert_allclose(ours, expected, atol=2e-6)

    def test_zero_mean_rows_and_columns_per_lattice(self) -> None:
        x = np.random.default_rng(0).normal(size=(32, 48)).astype(np.float32) + np.arange(48, dtype=np.float32)
        out = prnu.zero_mean(x)
        for i in (0, 1):
            for j in (0, 1):
                view = out[i::2, j::2]
                np.testing.assert_allclose(view.mean(axis=0), 0, atol=1e-5)
                np.testing.assert_allclose(view.mean(axis=1), 0, atol=1e-5)

    def test_wiener_dft_removes_periodic_pattern(self) -> None:
        rng = np.random.default_rng(0)
        noise = rng.normal(0, 1, (128, 128)).astype(np.float32)
        periodic = 3 * np.cos(2 * np.pi * np.arange(128) / 8)[None, :].astype(np.float32).repeat(128, 0)
        out = prnu.wiener_dft(noise + periodic)
        assert abs(np.corrcoef(out.ravel(), periodic.ravel())[0, 1]) < 0.05
        assert np.corrcoef(out.ravel(), noise.ravel())[0, 1] > 0.9

    def test_inputs_not_modified(self, cameras) -> None:
        image = cameras["test_a"][0]
        before = image.copy()
        residual = prnu.noise_residual(image)
        prnu.fingerprint(cameras["train"][:2])
        signal = prnu.to_gray(image)
        signal_before = signal.copy()
        residual_before = residual.copy()
        prnu.crosscorr(residual, signal)
        prnu.ncc(residual, signal)
        np.testing.assert_array_equal(image, before)
        np.testing.assert_array_equal(signal, signal_before)
        np.testing.assert_array_equal(residual, residual_before)
