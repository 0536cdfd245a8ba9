"""Image fidelity metrics, per image or averaged over images as in the paper's tables: PSNR (torchmetrics), SSIM (kornia).

Both take RGB batches ``(N, 3, H, W)`` (or ``(3, H, W)``) in [0, 1]; PSNR uses ``data_range=1`` (so it equals
the PSNR of the [0, 255] images), SSIM the standard 11x11 Gaussian window (sigma 1.5) of Wang et al. 2004,
averaged over the valid (unpadded) windows and the channels, like ``skimage.metrics.structural_similarity``
with ``gaussian_weights=True, use_sample_covariance=False`` (the tests compare with it). kornia's separable
filtering is several times faster on a CPU than torchmetrics' grouped convolution.

This is the toolkit's one definition of PSNR and SSIM: NIP fidelity, the JPEG codec's comparison with libjpeg,
benchmarks and tests all use it.
"""

from __future__ import annotations

import torch

from neuralimaging.errors import InputError

__all__ = ["psnr", "ssim", "psnr_per_image", "ssim_per_image"]


def _batch(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if x.shape != y.shape:
        raise InputError(f"images to compare must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.dim() == 3:
        x, y = x.unsqueeze(0), y.unsqueeze(0)
    if x.dim() != 4:
        raise InputError(f"expected images (N, C, H, W) or (C, H, W), got shape {tuple(x.shape)}")
    return x.detach(), y.detach()


def psnr_per_image(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """PSNR in dB of each image of ``x`` against ``y``: ``(N, C, H, W)`` or ``(C, H, W)`` -> ``(N,)`` float32.

    ``inf`` for identical images. The mean squared error is computed in float64.
    """
    from torchmetrics.functional.image import peak_signal_noise_ratio  # imported on use: a heavy import

    x, y = _batch(x, y)
    return peak_signal_noise_ratio(x.double(), y.double(), data_range=data_range, reduction="none", dim=(1, 2, 3)).float()


def ssim_per_image(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """SSIM of each image of ``x`` against ``y``: ``(N, C, H, W)`` or ``(C, H, W)`` -> ``(N,)`` in [-1, 1].

    Images need H, W >= 11.
    """
    from kornia.metrics import ssim as kornia_ssim  # imported on use: a heavy import

    x, y = _batch(x, y)
    if min(x.shape[-2:]) < 11:
        raise InputError(f"SSIM needs images of at least 11x11 pixels, got {tuple(x.shape[-2:])}")
    return kornia_ssim(x.float(), y.float(), 11, max_val=data_range, padding="valid").mean((1, 2, 3))


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> float:
    """Mean over images of the per-image PSNR (dB)."""
    return float(psnr_per_image(x, y, data_range).mean())


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> float:
    """Mean over images of the per-image SSIM."""
    return float(ssim_per_image(x, y, data_range).mean())
