"""Image files: developed RGB images ``(3, H, W)`` in [0, 1] to and from PNG / TIFF / JPEG.

8-bit PNG and JPEG go through Pillow. Pillow reads and writes 16-bit RGB PNG only as 8-bit, so 16-bit PNG
goes through imagecodecs (libpng: every row filter, interlaced files too). ``.tif``/``.tiff`` go through
tifffile (8- or 16-bit).

Readers refuse images larger than :func:`max_pixels` before decoding them (a small compressed file can
declare gigapixels: a decompression bomb). The limit is Pillow's own (it refuses above twice
``PIL.Image.MAX_IMAGE_PIXELS``, about 179 million pixels), applied to every format; the environment variable
``NEURALIMAGING_MAX_PIXELS`` sets another one.
"""

from __future__ import annotations

import logging
import os
import struct
from pathlib import Path

import imagecodecs
import numpy as np
import tifffile
import torch
from PIL import Image

from neuralimaging.errors import InputError

__all__ = ["MAX_PIXELS_ENV", "check_pixels", "load_image", "max_pixels", "read_pixels", "save_image", "to_uint"]

_log = logging.getLogger(__name__)

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

MAX_PIXELS_ENV = "NEURALIMAGING_MAX_PIXELS"
"""Environment variable setting the largest image (in pixels) the readers accept."""


def _apply_environment_limit() -> None:
    value = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if value.isdigit() and int(value) > 0:
        Image.MAX_IMAGE_PIXELS = max(1, int(value) // 2)  # Pillow refuses above twice this


_apply_environment_limit()


def max_pixels() -> int | None:
    """The largest image, in pixels, the readers accept: twice ``PIL.Image.MAX_IMAGE_PIXELS`` (None: no limit)."""
    limit = Image.MAX_IMAGE_PIXELS
    return None if limit is None else 2 * int(limit)


def check_pixels(path: str | os.PathLike, width: int, height: int) -> None:
    """Refuse an image of ``width x height`` pixels above :func:`max_pixels`, before it is decoded.

    Raises:
        InputError: naming the file, its declared size and the limit.
    """
    limit = max_pixels()
    if width < 1 or height < 1:
        raise InputError(f"{path}: declares an empty image ({width}x{height})")
    if limit is not None and width * height > limit:
        raise InputError(f"{path}: declares {width}x{height} pixels, more than the limit of {limit} "
                         f"(a decompression bomb?; set {MAX_PIXELS_ENV} to allow larger images)")


def to_uint(rgb: np.ndarray | torch.Tensor, bits: int = 8) -> np.ndarray:
    """Quantize ``(3, H, W)`` floats in [0, 1] to ``uint8``/``uint16`` ``(H, W, 3)``, rounding to nearest."""
    if bits not in (8, 16):
        raise InputError(f"bits must be 8 or 16, got {bits}")
    if isinstance(rgb, torch.Tensor):
        rgb = rgb.detach().cpu().numpy()
    array = np.asarray(rgb, dtype=np.float64)
    if array.ndim != 3 or array.shape[0] != 3:
        raise InputError(f"expected an RGB image of shape (3, H, W), got {array.shape}")
    peak = 255 if bits == 8 else 65535
    scaled = np.round(np.clip(np.nan_to_num(array, nan=0.0), 0.0, 1.0) * peak)
    return np.ascontiguousarray(scaled.transpose(1, 2, 0).astype(np.uint8 if bits == 8 else np.uint16))


def _png_header(path: Path) -> tuple[int, int, int, int]:
    """``(width, height, bit depth, colour type)`` from a PNG's IHDR chunk, read before anything is decoded."""
    with open(path, "rb") as handle:
        head = handle.read(33)
    if len(head) < 33 or not head.startswith(_PNG_SIGNATURE) or head[12:16] != b"IHDR":
        raise ValueError("no IHDR chunk")
    width, height, depth, colour = struct.unpack(">IIBB", head[16:26])
    return width, height, depth, colour


def _write_png16(path: Path, pixels: np.ndarray) -> None:
    # libpng, zlib level 1 and the "Up" row filter: fast, and smooth images still compress well
    data = imagecodecs.png_encode(pixels, level=1, filter=imagecodecs.PNG.FILTER.UP)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _read_png16(path: Path) -> np.ndarray:
    width, height, depth, colour = _png_header(path)
    if depth != 16 or colour not in (0, 2, 4, 6):
        raise ValueError(f"unsupported PNG layout (depth {depth}, colour type {colour})")
    check_pixels(path, width, height)
    pixels = imagecodecs.png_decode(path.read_bytes())
    if pixels.shape[:2] != (height, width):
        raise ValueError(f"image data does not match the declared {width}x{height} pixels")
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if pixels.shape[2] in (1, 2):
        pixels = np.repeat(pixels[..., :1], 3, axis=2)
    return pixels[..., :3].astype(np.uint16, copy=False)


def save_image(path: str | os.PathLike, rgb: np.ndarray | torch.Tensor, bits: int = 8) -> Path:
    """Write an RGB image ``(3, H, W)`` in [0, 1] (values rounded to the nearest level; NaN -> 0).

    The format follows the suffix: ``.png`` (8 or 16 bits), ``.tif``/``.tiff`` (8 or 16), ``.jpg`` (8 bits,
    quality 95). Writes are atomic (temporary file, then rename). Returns the path.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    pixels = to_uint(rgb, bits)
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".png" and bits == 16:
        _write_png16(path, pixels)
        _log.debug("wrote %s: %dx%d pixels, 16-bit", path, pixels.shape[1], pixels.shape[0])
        return path
    tmp = path.with_name(f".{path.name}.tmp{suffix}")
    if suffix in (".tif", ".tiff"):
        tifffile.imwrite(tmp, pixels, photometric="rgb")
    elif suffix in (".png", ".jpg", ".jpeg"):
        if bits != 8 and suffix != ".png":
            raise InputError(f"{path}: JPEG holds 8 bits per sample, got bits={bits}")
        if suffix == ".png":
            Image.fromarray(pixels).save(tmp, format="PNG", compress_level=1)  # speed over size
        else:
            Image.fromarray(pixels).save(tmp, format="JPEG", quality=95)
    else:
        raise InputError(f"{path}: unsupported image suffix {suffix!r}; expected .png, .tif, .tiff or .jpg")
    os.replace(tmp, path)
    _log.debug("wrote %s: %dx%d pixels, %d-bit", path, pixels.shape[1], pixels.shape[0], bits)
    return path


def read_pixels(path: str | os.PathLike) -> np.ndarray:
    """Read an image's samples as stored: ``uint8`` or ``uint16`` ``(H, W, 3)`` (grey repeated, alpha dropped)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        with open(path, "rb") as handle:
            head = handle.read(26)
        if head.startswith(_PNG_SIGNATURE) and len(head) > 24 and head[24] == 16:
            pixels: np.ndarray = _read_png16(path)
        elif head[:2] in (b"II", b"MM"):
            with tifffile.TiffFile(path) as tif:
                page = tif.pages[0]
                check_pixels(path, int(page.imagewidth), int(page.imagelength))
            pixels = tifffile.imread(path)
            if pixels.ndim == 2:
                pixels = np.repeat(pixels[..., None], 3, axis=2)
            if pixels.ndim != 3 or pixels.shape[2] < 3:
                raise ValueError(f"TIFF of shape {pixels.shape} is not an RGB image")
            pixels = pixels[..., :3]
        else:
            with Image.open(path) as image:  # Pillow refuses a decompression bomb here, before decoding
                check_pixels(path, *image.size)
                pixels = np.asarray(image.convert("RGB"))
    except Image.DecompressionBombError as error:
        raise InputError(f"{path}: {str(error).splitlines()[0]} (set {MAX_PIXELS_ENV} to allow larger images)") from None
    except (OSError, ValueError, struct.error, IndexError, tifffile.TiffFileError, imagecodecs.PngError) as error:
        reason = str(error).splitlines()[0] if str(error) else repr(error)
        raise InputError(f"{path}: not a readable image ({reason})") from error
    if pixels.dtype not in (np.uint8, np.uint16):
        raise InputError(f"{path}: unsupported sample type {pixels.dtype}; expected 8- or 16-bit integers")
    _log.debug("read %s: %dx%d pixels, %d-bit", path, pixels.shape[1], pixels.shape[0], pixels.dtype.itemsize * 8)
    return np.ascontiguousarray(pixels)


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image as ``float32 (3, H, W)`` in [0, 1] (8-bit / 255, 16-bit / 65535; grey repeated)."""
    pixels = read_pixels(path)
    scale = np.float32(255.0 if pixels.dtype == np.uint8 else 65535.0)
    return np.ascontiguousarray((pixels.astype(np.float32) / scale).transpose(2, 0, 1))
