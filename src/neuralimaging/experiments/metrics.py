"""PSNR and SSIM moved to the ground floor: :mod:`neuralimaging.metrics` (re-exported here for old imports)."""

from neuralimaging.metrics import psnr, psnr_per_image, ssim, ssim_per_image

__all__ = ["psnr", "ssim", "psnr_per_image", "ssim_per_image"]
