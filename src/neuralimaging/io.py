"""Image files: developed RGB images ``(3, H, W)`` in [0, 1] to and from PNG / TIFF / JPEG.

8-bit PNG and JPEG go through Pillow. Pillow reads and writes 16-bit RGB PNG only as 8-bit, so 16-bit PNG
is written and read here with zlib (the PNG format, RFC 2083: 16-bit samples big-endian, all five row
filters decoded). ``.tif``/``.tiff`` go through tifffile (8- or 16-bit).

Readers refuse images larger than :func:`max_pixels` before decoding them (a small compressed file can
declare gigapixels: a decompression bomb). The limit is Pillow's own (it refuses above twice
``PIL.Image.MAX_IMAGE_PIXELS``, about 179 million pixels), applied to every format; the environment variable
``NEURALIMAGING_MAX_PIXELS`` sets another one.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
import tifffile
import torch
from PIL import Image

from neuralimaging.errors import InputError

__all__ = ["MAX_PIXELS_ENV", "check_pixels", "load_image", "max_pixels", "read_pixels", "save_image", "to_uint"]

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


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _write_png16(path: Path, pixels: np.ndarray) -> None:
    height, width, _ = pixels.shape
    rows = pixels.astype(">u2").reshape(height, width * 3).view(np.uint8)
    # filter type 2 ("Up") on every row: smooth images compress better than unfiltered
    filtered = rows.copy()
    filtered[1:] = rows[1:] - rows[:-1]
    scan = np.concatenate([np.full((height, 1), 2, np.uint8), filtered], axis=1)
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    data = _PNG_SIGNATURE + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", zlib.compress(scan.tobytes(), 1))
    data += _png_chunk(b"IEND", b"")
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _unfilter(scan: np.ndarray, bpp: int) -> np.ndarray:
    """Undo the PNG row filters (0 None, 1 Sub, 2 Up, 3 Average, 4 Paeth) of ``(H, 1 + stride)`` bytes."""
    height = scan.shape[0]
    out = np.zeros((height, scan.shape[1] - 1), dtype=np.uint8)
    previous = np.zeros(scan.shape[1] - 1, dtype=np.int32)
    for y in range(height):
        kind, line = scan[y, 0], scan[y, 1:].astype(np.int32)
        if kind == 0:
            row = line
        elif kind == 2:
            row = (line + previous) & 0xFF
        elif kind == 1:
            row = line.copy()
            for start in range(bpp):  # cumulative sum modulo 256 over each byte position
                row[start::bpp] = np.cumsum(row[start::bpp]) & 0xFF
        elif kind in (3, 4):
            row = line.copy()
            for x in range(row.size):
                left = row[x - bpp] if x >= bpp else 0
                up = previous[x]
                if kind == 3:
                    row[x] = (row[x] + ((left + up) >> 1)) & 0xFF
                else:
                    corner = previous[x - bpp] if x >= bpp else 0
                    p = left + up - corner
                    pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                    pred = left if pa <= pb and pa <= pc else (up if pb <= pc else corner)
                    row[x] = (row[x] + pred) & 0xFF
        else:
            raise ValueError(f"bad PNG filter type {kind}")
        out[y] = row
        previous = row
    return out


def _read_png16(path: Path) -> np.ndarray:
    data = path.read_bytes()
    pos, header, idat = 8, None, []
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
        pos += 12 + length
    if header is None:
        raise ValueError("no IHDR chunk")
    width, height, depth, colour, _, _, interlace = header
    channels = {0: 1, 2: 3, 4: 2, 6: 4}.get(colour)
    if depth != 16 or channels is None or interlace:
        raise ValueError(f"unsupported PNG layout (depth {depth}, colour type {colour}, interlace {interlace})")
    check_pixels(path, width, height)
    expected = height * (1 + width * channels * 2)
    inflater = zlib.decompressobj()
    raw = inflater.decompress(b"".join(idat), expected)  # never more than the header declares
    if len(raw) != expected or inflater.unconsumed_tail:
        raise ValueError(f"image data does not match the declared {width}x{height} pixels")
    scan = np.frombuffer(raw, dtype=np.uint8).reshape(height, 1 + width * channels * 2)
    pixels = _unfilter(scan, channels * 2).view(">u2").reshape(height, width, channels).astype(np.uint16)
    if channels in (1, 2):
        pixels = np.repeat(pixels[..., :1], 3, axis=2)
    return pixels[..., :3]


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
    except (OSError, ValueError, zlib.error, struct.error, IndexError, tifffile.TiffFileError) as error:
        reason = str(error).splitlines()[0] if str(error) else repr(error)
        raise InputError(f"{path}: not a readable image ({reason})") from error
    if pixels.dtype not in (np.uint8, np.uint16):
        raise InputError(f"{path}: unsupported sample type {pixels.dtype}; expected 8- or 16-bit integers")
    return np.ascontiguousarray(pixels)


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image as ``float32 (3, H, W)`` in [0, 1] (8-bit / 255, 16-bit / 65535; grey repeated)."""
    pixels = read_pixels(path)
    scale = np.float32(255.0 if pixels.dtype == np.uint8 else 65535.0)
    return np.ascontiguousarray((pixels.astype(np.float32) / scale).transpose(2, 0, 1))
