"""Image files: rounding, 8/16-bit PNG and TIFF round trips, 16-bit PNG against a second decoder and encoder
(libspng) and a reference encoder of every row filter and of interlacing (pure Python)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import imagecodecs
import numpy as np
import pytest
import torch
from PIL import Image

from neuralimaging.errors import InputError
from neuralimaging.io import load_image, read_pixels, save_image, to_uint


@pytest.mark.parametrize("suffix", [".png", ".tif"])
@pytest.mark.parametrize("bits", [8, 16])
def test_round_trip_is_within_half_a_level(tmp_path: Path, suffix: str, bits: int) -> None:
    rgb = np.random.default_rng(bits).random((3, 17, 23)).astype(np.float32)
    path = save_image(tmp_path / f"x{suffix}", torch.from_numpy(rgb), bits=bits)
    back = load_image(path)
    assert back.shape == (3, 17, 23) and back.dtype == np.float32
    assert np.abs(back - rgb).max() <= 0.5 / (2**bits - 1) + 1e-6
    assert read_pixels(path).dtype == (np.uint8 if bits == 8 else np.uint16)


def test_rounds_rather_than_truncates() -> None:
    values = np.array([0.0, 0.499 / 255, 0.501 / 255, 254.6 / 255, 1.2, -0.1, np.nan], dtype=np.float64)
    assert to_uint(np.broadcast_to(values, (3, 1, 7)), 8)[0, :, 0].tolist() == [0, 0, 1, 255, 255, 0, 0]


def test_8_bit_png_is_what_pillow_reads(tmp_path: Path) -> None:
    rgb = np.random.default_rng(0).random((3, 5, 7))
    save_image(tmp_path / "a.png", rgb)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "a.png")), to_uint(rgb, 8))


def _filter(rows: np.ndarray, kind: int, bpp: int) -> bytes:
    """Reference PNG encoder for one filter type (RFC 2083, section 6), pure Python."""
    out = bytearray()
    previous = [0] * rows.shape[1]
    for row in rows.tolist():
        out.append(kind)
        for x, value in enumerate(row):
            left = row[x - bpp] if x >= bpp else 0
            up = previous[x]
            corner = previous[x - bpp] if x >= bpp else 0
            if kind == 0:
                pred = 0
            elif kind == 1:
                pred = left
            elif kind == 2:
                pred = up
            elif kind == 3:
                pred = (left + up) // 2
            else:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                pred = left if pa <= pb and pa <= pc else (up if pb <= pc else corner)
            out.append((value - pred) & 0xFF)
        previous = row
    return bytes(out)


@pytest.mark.parametrize("kind", range(5))
def test_16_bit_png_filters(tmp_path: Path, kind: int) -> None:
    pixels = np.random.default_rng(kind).integers(0, 65536, (6, 5, 3)).astype(">u2")
    rows = pixels.reshape(6, 15).view(np.uint8)

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 5, 6, 16, 2, 0, 0, 0))
    data += chunk(b"IDAT", zlib.compress(_filter(rows, kind, 6))) + chunk(b"IEND", b"")
    path = tmp_path / "f.png"
    path.write_bytes(data)
    np.testing.assert_array_equal(read_pixels(path), pixels.astype(np.uint16))


_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
"""Adam7 interlacing (PNG specification, section 8.2): each pass's first column, first row and steps."""


@pytest.mark.parametrize("shape", [(6, 5), (1, 1), (9, 17)])
def test_16_bit_png_interlaced(tmp_path: Path, shape: tuple[int, int]) -> None:
    height, width = shape
    pixels = np.random.default_rng(width).integers(0, 65536, (height, width, 3)).astype(">u2")
    scan = b""
    for i, (x0, y0, dx, dy) in enumerate(_ADAM7):
        sub = pixels[y0::dy, x0::dx]
        if sub.size:  # empty passes have no rows
            scan += _filter(sub.reshape(sub.shape[0], -1).view(np.uint8), i % 5, 6)

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 1))
    data += chunk(b"IDAT", zlib.compress(scan)) + chunk(b"IEND", b"")
    path = tmp_path / "adam7.png"
    path.write_bytes(data)
    np.testing.assert_array_equal(read_pixels(path), pixels.astype(np.uint16))


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_16_bit_png_against_libspng(tmp_path: Path, channels: int) -> None:
    """What libspng writes (grey, grey + alpha, RGB, RGBA), we read as RGB; what we write, libpng reads alone."""
    rgb = np.random.default_rng(channels).random((3, 7, 9))
    path = save_image(tmp_path / "ours.png", rgb, bits=16)
    np.testing.assert_array_equal(imagecodecs.png_decode(path.read_bytes()), to_uint(rgb, 16))
    pixels = np.random.default_rng(channels).integers(0, 65536, (7, 9, channels)).astype(np.uint16)
    theirs = tmp_path / "theirs.png"
    theirs.write_bytes(imagecodecs.spng_encode(pixels if channels > 1 else pixels[..., 0]))
    expected = np.repeat(pixels[..., :1], 3, axis=2) if channels < 3 else pixels[..., :3]
    np.testing.assert_array_equal(read_pixels(theirs), expected)


def test_errors(tmp_path: Path) -> None:
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nrubbish")
    with pytest.raises(InputError, match="bad.png: not a readable image"):
        load_image(tmp_path / "bad.png")
    with pytest.raises(FileNotFoundError):
        load_image(tmp_path / "none.png")
    with pytest.raises(InputError, match=r"\(3, H, W\)"):
        save_image(tmp_path / "x.png", np.zeros((4, 4)))
    with pytest.raises(InputError, match="bits"):
        save_image(tmp_path / "x.png", np.zeros((3, 4, 4)), bits=12)
    with pytest.raises(InputError, match="suffix"):
        save_image(tmp_path / "x.bmp", np.zeros((3, 4, 4)))


# -- decompression bombs: refused from the header, before decoding ---------------------------------------
def _png(path: Path, width: int, height: int, depth: int, idat: bytes) -> Path:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, depth, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def bomb(path: Path, depth: int) -> Path:
    """A PNG declaring 20000x20000 pixels whose data (the first rows, zeros) is a few kilobytes."""
    return _png(path, 20000, 20000, depth, zlib.compress(bytes(1 + 20000 * 3 * depth // 8) * 50, 9))


@pytest.mark.parametrize("depth", [8, 16])
def test_decompression_bomb_is_refused_before_decoding(tmp_path: Path, depth: int) -> None:
    import time

    path = bomb(tmp_path / f"bomb{depth}.png", depth)
    assert path.stat().st_size < 100_000
    start = time.perf_counter()
    with pytest.raises(InputError, match=rf"bomb{depth}.png: .*(20000x20000|400000000 pixels).*NEURALIMAGING_MAX_PIXELS"):
        read_pixels(path)
    assert time.perf_counter() - start < 5


def test_png16_data_beyond_its_header_is_not_inflated(tmp_path: Path) -> None:
    # 10 MB of zeros for 4x4 pixels: libpng inflates the declared rows and ignores the rest (with a warning)
    path = _png(tmp_path / "long.png", 4, 4, 16, zlib.compress(bytes(10_000_000), 9))
    np.testing.assert_array_equal(read_pixels(path), np.zeros((4, 4, 3), np.uint16))
    _png(tmp_path / "short.png", 4, 4, 16, zlib.compress(bytes(20), 9))  # fewer rows than declared
    with pytest.raises(InputError, match="short.png: not a readable image"):
        read_pixels(tmp_path / "short.png")


@pytest.mark.parametrize("suffix, bits", [(".png", 16), (".png", 8), (".tif", 16), (".jpg", 8)])
def test_pixel_limit_applies_to_every_format(tmp_path: Path, monkeypatch, suffix: str, bits: int) -> None:
    path = save_image(tmp_path / f"x{suffix}", np.zeros((3, 30, 40), np.float32), bits=bits)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)  # Pillow's setting; the limit is twice it: 1000 pixels
    with pytest.raises(InputError, match=rf"x{suffix}: .*(40x30|1200 pixels)"):
        read_pixels(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 600)
    assert read_pixels(path).shape == (30, 40, 3)


def test_pixel_limit_from_the_environment(monkeypatch) -> None:
    from neuralimaging import io

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # restored afterwards
    monkeypatch.setenv(io.MAX_PIXELS_ENV, "1000000000")
    io._apply_environment_limit()
    assert io.max_pixels() == 1_000_000_000
