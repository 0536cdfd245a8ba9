"""DNG files: a Bayer mosaic written as an uncompressed DNG 1.4 file that LibRaw reads back.

The tags are those LibRaw needs to develop the file (CFA pattern, black and white levels, ColorMatrix1 for
D65, AsShotNeutral) and the NoiseProfile a calibrated camera records; see Adobe's DNG specification 1.4.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np
import tifffile

from neuralimaging.acquisition.bayer import check_cfa
from neuralimaging.errors import InputError

__all__ = ["write_dng"]

_CFA_CODES = {"R": 0, "G": 1, "B": 2}


def _rational(values: Sequence[float]) -> tuple[int, ...]:
    out: list[int] = []
    for value in values:
        fraction = Fraction(float(value)).limit_denominator(1_000_000)
        out += [fraction.numerator, fraction.denominator]
    return tuple(out)


def write_dng(
    path: str | os.PathLike,
    mosaic: np.ndarray,
    *,
    cfa: str,
    black_level: float | Sequence[float],
    white_level: int,
    as_shot_neutral: Sequence[float],
    xyz_to_cam: Sequence[float],
    make: str = "neuralimaging",
    model: str = "virtual camera",
    orientation: int = 1,
    description: str = "",
    noise_profile: Sequence[float] | None = None,
) -> Path:
    """Write a Bayer mosaic as an uncompressed DNG 1.4 file (atomically).

    Args:
        path: output file.
        mosaic: ``uint16 (H, W)`` raw values laid out in ``cfa``.
        cfa: Bayer pattern.
        black_level: one value, or four values for the sites of the 2x2 pattern.
        white_level: saturation value.
        as_shot_neutral: ``(3,)`` camera RGB of a neutral (= 1 / white-balance gains).
        xyz_to_cam: ColorMatrix1, XYZ -> camera for D65 (CalibrationIlluminant1 = 21).
        make: TIFF Make.
        model: TIFF Model.
        orientation: TIFF Orientation.
        description: TIFF ImageDescription.
        noise_profile: DNG NoiseProfile ``(S, O)``: noise variance ``S * x + O`` of the signal ``x`` normalized
            to [0, 1] between black and white level; omitted when None.
    """
    path = Path(path)
    cfa = check_cfa(cfa)
    mosaic = np.asarray(mosaic)
    if mosaic.ndim != 2 or mosaic.dtype != np.uint16:
        raise InputError(f"{path}: DNG mosaic must be uint16 (H, W), got {mosaic.dtype} {mosaic.shape}")
    black = np.broadcast_to(np.asarray(black_level, dtype=np.float64), (4,))
    black_tag = (50714, "H", 4, tuple(int(round(b)) for b in black)) if np.all(black == np.round(black)) else (
        50714, "2I", 4, _rational(black))
    tags = [
        (271, "s", 0, make),
        (272, "s", 0, model),
        (274, "H", 1, int(orientation)),
        (33421, "H", 2, (2, 2)),
        (33422, "B", 4, tuple(_CFA_CODES[c] for c in cfa)),
        (50706, "B", 4, (1, 4, 0, 0)),
        (50707, "B", 4, (1, 1, 0, 0)),
        (50708, "s", 0, f"{make} {model}"),
        (50710, "B", 3, (0, 1, 2)),
        (50711, "H", 1, 1),
        (50713, "H", 2, (2, 2)),
        black_tag,
        (50717, "I", 1, int(white_level)),
        (50721, "2i", 9, _rational(xyz_to_cam)),
        (50728, "2I", 3, _rational(as_shot_neutral)),
        (50778, "H", 1, 21),
    ]
    if noise_profile is not None:
        profile = tuple(float(v) for v in noise_profile)
        if len(profile) != 2 or not all(np.isfinite(profile)) or profile[0] < 0 or profile[1] < 0:
            raise InputError(f"{path}: DNG noise profile must be two finite values >= 0 (S, O), got {noise_profile}")
        tags.append((51041, "d", 2, profile))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tifffile.imwrite(
        tmp,
        mosaic,
        photometric=32803,
        compression=None,
        subfiletype=0,
        description=description or None,
        software="neuralimaging virtual camera",
        metadata=None,
        extratags=[(code, dtype, count, value, True) for code, dtype, count, value in tags],
    )
    os.replace(tmp, path)
    return path
