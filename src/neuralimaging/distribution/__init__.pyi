from . import channel, jpeg, manipulations, separable
from .channel import Channel, downsample
from .jpeg import DifferentiableJPEG, compare_with_libjpeg, jpeg_compress, libjpeg_compress, quantization_tables
from .manipulations import Manipulation, awgn, gamma, gaussian_blur, median_filter, resample, sharpen

__all__ = [
    "Channel",
    "DifferentiableJPEG",
    "Manipulation",
    "awgn",
    "channel",
    "compare_with_libjpeg",
    "downsample",
    "gamma",
    "gaussian_blur",
    "jpeg",
    "jpeg_compress",
    "libjpeg_compress",
    "manipulations",
    "median_filter",
    "quantization_tables",
    "resample",
    "separable",
    "sharpen",
]
