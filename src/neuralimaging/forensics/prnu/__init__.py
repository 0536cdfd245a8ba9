"""PRNU sensor fingerprints: noise residuals, maximum-likelihood fingerprints, NCC and PCE matching.

The standard Lukas-Fridrich-Goljan pipeline (Lukas, Fridrich & Goljan, "Digital camera identification from
sensor pattern noise", IEEE TIFS 2006; Chen, Fridrich, Goljan & Lukas, "Determining image origin and
integrity using sensor noise", IEEE TIFS 2008), as used by Korus & Memon (section 3.3):

- noise residual ``W = I - F(I)`` with the wavelet denoiser ``F`` of Mihcak, Kozintsev & Ramchandran (1999):
  4-level db4 decomposition (PyWavelets), every detail coefficient shrunk by a local Wiener filter whose
  signal variance is the minimum of the local estimates over 3x3, 5x5, 7x7 and 9x9 windows;
- the fingerprint as the maximum-likelihood estimate ``K = sum(W_i I_i) / sum(I_i^2)`` over saturated-free
  pixels (the same mask in the numerator and the denominator), then zero-mean rows and columns (on each of
  the four 2x2 lattice positions) and Wiener filtering in the DFT domain to remove periodic artifacts;
- matching by normalized cross-correlation and by the peak-to-correlation energy (PCE), with the peak's
  neighbourhood excluded as a square centred on the peak that wraps around the image edges; by default the
  residual is first divided by its variance in 8x8 tiles (:func:`weight_residual`) and clipped pixels are
  left out of ``I K``, which lifts weak matches on JPEG photos (not in the toolboxes; measured in
  ``docs/analysis.md``);
- in the RAW domain (:func:`raw_fingerprint`, :func:`match_raw`): the same estimate on the Bayer mosaic of RAW
  files read by LibRaw, before demosaicing spreads K over neighbouring sites, each of the four CFA sub-planes
  denoised on its own, the ML sums optionally weighted by the inverse noise variance of the file's DNG
  NoiseProfile (the ML estimate under Poisson-Gaussian noise). Not in the paper, whose toolbox works on
  developed images; best from flat-field shots (``virtual_camera.synthesize_flat_fields``).

The parts live in submodules along these steps (:mod:`.images`, :mod:`.residuals`, :mod:`.fingerprints`,
:mod:`.matching`, :mod:`.raw`); everything public is importable from here.

Images are float arrays in [0, 1]: one image is ``(3, H, W)`` RGB or ``(H, W)`` grey, a batch is
``(N, 3, H, W)`` / ``(N, 1, H, W)`` or a sequence of single images (numpy arrays or torch tensors). The
denoiser's ``sigma`` is given in 8-bit units as in the reference toolboxes: 3 (3/255, :data:`DEFAULT_SIGMA`)
by default, where the toolboxes use 5. No function modifies its inputs.

Example:
    >>> K = fingerprint(flat_field_images)               # (H, W) float32
    >>> match(K, image).pce > 60                          # same camera?
"""

from neuralimaging.forensics.prnu.fingerprints import fingerprint
from neuralimaging.forensics.prnu.images import GRAY_WEIGHTS, SATURATION, load_image, to_gray
from neuralimaging.forensics.prnu.matching import (
    PCE_THRESHOLD,
    WEIGHTING_BLOCK,
    WEIGHTING_FLOOR,
    MatchResult,
    PCEResult,
    crosscorr,
    match,
    ncc,
    pce,
    weight_residual,
)
from neuralimaging.forensics.prnu.raw import (
    RAW_WEIGHTS,
    Mosaic,
    match_raw,
    mosaic_residual,
    raw_fingerprint,
    raw_noise_residual,
    read_mosaic,
)
from neuralimaging.forensics.prnu.residuals import (
    DEFAULT_SIGMA,
    noise_residual,
    noise_residuals,
    wavelet_residual,
    wiener_dft,
    zero_mean,
)

__all__ = [
    "DEFAULT_SIGMA",
    "GRAY_WEIGHTS",
    "PCE_THRESHOLD",
    "RAW_WEIGHTS",
    "SATURATION",
    "WEIGHTING_BLOCK",
    "WEIGHTING_FLOOR",
    "MatchResult",
    "Mosaic",
    "PCEResult",
    "crosscorr",
    "fingerprint",
    "load_image",
    "match",
    "match_raw",
    "mosaic_residual",
    "ncc",
    "noise_residual",
    "noise_residuals",
    "pce",
    "raw_fingerprint",
    "raw_noise_residual",
    "read_mosaic",
    "to_gray",
    "wavelet_residual",
    "weight_residual",
    "wiener_dft",
    "zero_mean",
]
