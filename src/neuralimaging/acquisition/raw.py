"""RAW files through LibRaw (rawpy): the Bayer mosaic and the metadata an ISP needs.

Colour: the camera->sRGB matrix is derived the way dcraw/LibRaw do it (``cam_xyz_coeff``): from the camera's
XYZ->camera matrix ``M``, ``cam_rgb = M @ xyz_from_srgb`` (sRGB primaries, D65), each row normalized to sum
to 1 (so that white-balanced white stays white), and ``cam_to_srgb = inv(cam_rgb)``. LibRaw reports
``rgb_xyz_matrix`` as zeros for most DNGs, so for DNG files the matrix is read from the DNG's own
``ColorMatrix1/2`` tags (the one calibrated for D65 when present).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rawpy
import tifffile

from neuralimaging.errors import InputError

__all__ = [
    "SRGB_FROM_XYZ",
    "XYZ_FROM_SRGB",
    "RawImage",
    "cam_to_srgb_from_xyz",
    "read_raw",
]

# sRGB (linear, D65) -> XYZ, as in dcraw's xyz_rgb table (IEC 61966-2-1).
XYZ_FROM_SRGB = np.array(
    [[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]],
    dtype=np.float64,
)
SRGB_FROM_XYZ = np.linalg.inv(XYZ_FROM_SRGB)

# DNG/EXIF LightSource codes that mean D65 daylight.
_D65_CODES = (21,)
# LibRaw's "flip" -> EXIF Orientation (inverse of dcraw's "50132467"[orientation & 7]).
_FLIP_TO_EXIF = {0: 1, 1: 2, 3: 3, 2: 4, 4: 5, 6: 6, 7: 7, 5: 8}
_IMAGE_SIGNATURES = {
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"GIF8": "a GIF image",
    b"BM": "a BMP image",
    b"RIFF": "a RIFF (WebP/WAV) file",
    b"%PDF": "a PDF document",
}


@dataclass
class RawImage:
    """A Bayer RAW image and the metadata the ISPs use.

    Attributes:
        path: file it was read from.
        mosaic: ``uint16 (H, W)`` visible sensor values, laid out in pattern ``cfa``.
        cfa: 2x2 pattern, row-major, one of ``RGGB``, ``BGGR``, ``GRBG``, ``GBRG``.
        black_level: ``float (4,)`` black level of each site of the 2x2 pattern (same order as ``cfa``).
        white_level: saturation value.
        wb_gains: ``float (3,)`` as-shot white-balance gains for R, G, B with G = 1.
        cam_to_srgb: ``float (3, 3)`` white-balanced camera RGB -> linear sRGB (rows sum to 1).
        orientation: EXIF orientation code (1 = as stored, 3 = 180 deg, 6 = rotate 90 CW, 8 = 90 CCW, ...).
        make: camera maker ("" when unknown).
        model: camera model ("" when unknown).
        noise_profile: the DNG NoiseProfile ``(S, O)`` when the file has one (noise variance ``S * x + O`` of
            the signal ``x`` normalized to [0, 1] between black and white level; the first plane's pair when
            the file gives one per colour plane), else None.
    """

    path: Path
    mosaic: np.ndarray
    cfa: str
    black_level: np.ndarray
    white_level: float
    wb_gains: np.ndarray
    cam_to_srgb: np.ndarray
    orientation: int = 1
    make: str = ""
    model: str = ""
    noise_profile: tuple[float, float] | None = None

    @property
    def shape(self) -> tuple[int, int]:
        """``(H, W)`` of the mosaic."""
        return tuple(self.mosaic.shape)  # type: ignore[return-value]


def cam_to_srgb_from_xyz(xyz_to_cam: np.ndarray) -> np.ndarray:
    """Camera->sRGB matrix from an XYZ->camera matrix, the dcraw way (see module docstring).

    Args:
        xyz_to_cam: ``(3, 3)`` XYZ (D65) -> camera RGB, e.g. a DNG ColorMatrix or dcraw's adobe_coeff / 10000.

    Returns:
        ``float64 (3, 3)`` mapping white-balanced camera RGB to linear sRGB; its rows sum to 1.
    """
    matrix = np.asarray(xyz_to_cam, dtype=np.float64).reshape(3, 3)
    cam_rgb = matrix @ XYZ_FROM_SRGB
    sums = cam_rgb.sum(axis=1, keepdims=True)
    if np.any(np.abs(sums) < 1e-8):
        raise InputError(f"XYZ->camera matrix {matrix.round(4).tolist()} has a row that sums to zero on sRGB white")
    return np.linalg.inv(cam_rgb / sums)


def _tiff_info(path: Path) -> dict:
    """Make, model, DNG colour matrices and a truncation check for TIFF-based RAW files ({} otherwise)."""
    with open(path, "rb") as handle:
        head = handle.read(4)
    if head[:2] not in (b"II", b"MM"):
        return {}
    size = os.path.getsize(path)
    info: dict = {}
    try:
        with tifffile.TiffFile(path) as tif:
            page0 = tif.pages[0]
            tags = page0.tags
            for code, key in ((271, "make"), (272, "model")):
                if code in tags:
                    info[key] = str(tags[code].value).strip("\x00 ")
            info["dng"] = 50706 in tags
            if info["dng"]:
                for index, (matrix_code, light_code) in enumerate(((50721, 50778), (50722, 50779)), start=1):
                    if matrix_code in tags:
                        value = np.asarray(tags[matrix_code].value, dtype=np.float64).reshape(-1, 2)
                        light = int(tags[light_code].value) if light_code in tags else 0
                        info[f"color_matrix{index}"] = (value[:, 0] / value[:, 1], light)
                if 51041 in tags:
                    profile = np.asarray(tags[51041].value, dtype=np.float64).ravel()
                    if profile.size >= 2 and np.all(np.isfinite(profile[:2])) and np.all(profile[:2] >= 0):
                        info["noise_profile"] = (float(profile[0]), float(profile[1]))
            for page in tif.pages:
                offsets = page.dataoffsets
                counts = page.databytecounts
                if offsets and counts and max(o + c for o, c in zip(offsets, counts)) > size:
                    info["truncated"] = True
    except (tifffile.TiffFileError, ValueError, KeyError, IndexError, struct.error) as error:
        info["tiff_error"] = str(error).splitlines()[0] if str(error) else type(error).__name__
    return info


def _dng_matrix(info: dict) -> np.ndarray | None:
    """The ColorMatrix of a DNG (XYZ->camera), preferring the one calibrated for D65."""
    candidates = [info[k] for k in ("color_matrix1", "color_matrix2") if k in info]
    candidates = [(m, light) for m, light in candidates if m.size == 9]
    if not candidates:
        return None
    for matrix, light in candidates:
        if light in _D65_CODES:
            return matrix.reshape(3, 3)
    return candidates[-1][0].reshape(3, 3)


def _describe_non_raw(path: Path) -> str | None:
    """A reason when the file is plainly not RAW (empty, a known image format, text), else None."""
    with open(path, "rb") as handle:
        head = handle.read(512)
    if not head:
        return "empty file"
    for signature, what in _IMAGE_SIGNATURES.items():
        if head.startswith(signature):
            return f"not a RAW file ({what})"
    if all(byte in (9, 10, 13) or 32 <= byte < 127 for byte in head):
        return "not a RAW file (plain text)"
    return None


def read_raw(path: str | os.PathLike) -> RawImage:
    """Read a Bayer RAW file (any format LibRaw reads, DNG included).

    Args:
        path: the RAW file.

    Returns:
        :class:`RawImage` with the visible mosaic and its metadata.

    Raises:
        FileNotFoundError: no such file.
        InputError: not a RAW file, truncated or corrupt, or not a Bayer sensor (X-Trans, Foveon, linear DNG);
            the message is one line naming the file and the reason.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, expected a RAW file")
    reason = _describe_non_raw(path)
    if reason:
        raise InputError(f"{path}: {reason}")
    info = _tiff_info(path)
    if info.get("truncated"):
        raise InputError(f"{path}: truncated or corrupt RAW file (image data runs past the end of the file)")
    try:
        with rawpy.imread(str(path)) as raw:
            if raw.raw_type != rawpy.RawType.Flat:
                raise InputError(
                    f"{path}: not a Bayer sensor (LibRaw reports {raw.raw_type.name} data, e.g. a linear DNG or "
                    "Foveon); expected a Bayer CFA mosaic"
                )
            pattern = raw.raw_pattern
            if pattern is None or pattern.shape != (2, 2) or raw.num_colors != 3:
                shape = "none" if pattern is None else "x".join(map(str, pattern.shape))
                raise InputError(
                    f"{path}: not a Bayer sensor (CFA pattern {shape}, {raw.num_colors} colours, e.g. X-Trans); "
                    "expected a 2x2 RGB Bayer pattern"
                )
            desc = raw.color_desc.decode("ascii")
            cfa = "".join(desc[i] for i in pattern.ravel())
            if cfa not in ("RGGB", "BGGR", "GRBG", "GBRG"):
                raise InputError(f"{path}: unsupported CFA pattern {cfa!r}; expected RGGB, BGGR, GRBG or GBRG")
            mosaic = np.array(raw.raw_image_visible, dtype=np.uint16, copy=True)
            per_colour = np.asarray(raw.black_level_per_channel, dtype=np.float64)
            black = per_colour[pattern.ravel()]
            white = float(raw.white_level)
            wb = np.asarray(raw.camera_whitebalance, dtype=np.float64)[:3]
            if not np.all(wb > 0):
                wb = np.asarray(raw.daylight_whitebalance, dtype=np.float64)[:3]
            wb = wb / wb[1] if np.all(wb > 0) else np.ones(3)
            xyz_to_cam = _dng_matrix(info) if info.get("dng") else None
            if xyz_to_cam is None:
                libraw_xyz = np.asarray(raw.rgb_xyz_matrix, dtype=np.float64)[:3]
                if np.any(libraw_xyz != 0):
                    xyz_to_cam = libraw_xyz
            if xyz_to_cam is not None:
                cam_to_srgb = cam_to_srgb_from_xyz(xyz_to_cam)
            else:
                rgb_cam = np.asarray(raw.color_matrix, dtype=np.float64)[:, :3]
                cam_to_srgb = rgb_cam if np.any(rgb_cam != 0) else np.eye(3)
            orientation = _FLIP_TO_EXIF.get(int(raw.sizes.flip), 1)
    except rawpy.LibRawError as error:
        detail = error.args[0].decode() if error.args and isinstance(error.args[0], bytes) else str(error)
        if isinstance(error, rawpy.LibRawFileUnsupportedError):
            raise InputError(f"{path}: not a RAW file LibRaw can read ({detail})") from error
        raise InputError(f"{path}: truncated or corrupt RAW file (LibRaw: {detail})") from error
    if mosaic.size == 0 or mosaic.shape[0] < 2 or mosaic.shape[1] < 2:
        raise InputError(f"{path}: RAW file holds no image data")
    return RawImage(
        path=path,
        mosaic=mosaic,
        cfa=cfa,
        black_level=black,
        white_level=white,
        wb_gains=wb,
        cam_to_srgb=cam_to_srgb,
        orientation=orientation,
        make=info.get("make", ""),
        model=info.get("model", ""),
        noise_profile=info.get("noise_profile"),
    )
