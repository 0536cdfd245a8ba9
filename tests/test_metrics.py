"""PSNR/SSIM wrappers against scikit-image's reference implementations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from neuralimaging.errors import InputError
from neuralimaging.metrics import psnr, psnr_per_image, ssim, ssim_per_image


@pytest.mark.parametrize("noise", [0.01, 0.1])
def test_against_skimage(noise):
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 40, 48, generator=gen)
    y = (x + noise * torch.randn(x.shape, generator=gen)).clamp(0, 1)
    ref_psnr = [peak_signal_noise_ratio(y[i].double().numpy(), x[i].double().numpy(), data_range=1.0) for i in range(3)]
    ref_ssim = [structural_similarity(y[i].numpy(), x[i].numpy(), channel_axis=0, data_range=1.0,
                                      gaussian_weights=True, sigma=1.5, use_sample_covariance=False) for i in range(3)]
    np.testing.assert_allclose(psnr_per_image(y, x).numpy(), ref_psnr, rtol=1e-5)
    np.testing.assert_allclose(ssim_per_image(y, x).numpy(), ref_ssim, atol=1e-4)
    assert psnr(y, x) == pytest.approx(np.mean(ref_psnr), rel=1e-5)
    assert ssim(y[0], x[0]) == pytest.approx(ref_ssim[0], abs=1e-4)


def test_bad_shapes():
    with pytest.raises(InputError, match="same shape"):
        psnr(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 17))
    with pytest.raises(InputError, match="11x11"):
        ssim(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8))
