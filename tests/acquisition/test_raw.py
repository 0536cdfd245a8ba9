"""RAW reading through LibRaw: DNGs written by the virtual camera read back bit-exact with their metadata."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rawpy
import tifffile
from PIL import Image

from neuralimaging.acquisition.bayer import CFA_PATTERNS
from neuralimaging.acquisition.dng import write_dng
from neuralimaging.acquisition.raw import XYZ_FROM_SRGB, cam_to_srgb_from_xyz, read_raw
from neuralimaging.acquisition.virtual_camera import CAMERAS
from neuralimaging.errors import InputError

# Nikon D90 XYZ->camera from LibRaw's adobe_coeff table (/10000)
D90 = CAMERAS["nikon-d90"].xyz_to_cam
_DNG_BASE = [
    (50706, "B", 4, (1, 4, 0, 0), True),
    (50717, "H", 1, 4095, True),
    (50721, "2i", 9, (1, 1, 0, 1, 0, 1, 0, 1, 1, 1, 0, 1, 0, 1, 0, 1, 1, 1), True),
    (50778, "H", 1, 21, True),
    (50728, "2I", 3, (1, 2, 1, 1, 1, 2), True),
]


def _write(path: Path, cfa: str, *, bits: int = 12, orientation: int = 1, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    white = 2**bits - 1
    mosaic = rng.integers(0, white + 1, size=(48, 64)).astype(np.uint16)
    black = [64, 65, 66, 67]
    neutral = [1 / 2.25, 1.0, 1 / 1.6]
    write_dng(path, mosaic, cfa=cfa, black_level=black, white_level=white, as_shot_neutral=neutral,
              xyz_to_cam=D90, make="neuralimaging", model=f"test {cfa}", orientation=orientation)
    return {"mosaic": mosaic, "black": black, "white": white}


@pytest.mark.parametrize("bits", [12, 14])
@pytest.mark.parametrize("cfa", CFA_PATTERNS)
def test_dng_reads_back_bit_exact_with_metadata(tmp_path: Path, cfa: str, bits: int) -> None:
    path = tmp_path / f"{cfa}.dng"
    written = _write(path, cfa, bits=bits)
    raw = read_raw(path)
    np.testing.assert_array_equal(raw.mosaic, written["mosaic"])
    assert raw.mosaic.dtype == np.uint16
    assert raw.cfa == cfa
    np.testing.assert_array_equal(raw.black_level, written["black"])  # per site, in pattern order
    assert raw.white_level == written["white"]
    np.testing.assert_allclose(raw.wb_gains, [2.25, 1.0, 1.6], rtol=1e-5)
    np.testing.assert_allclose(raw.cam_to_srgb, cam_to_srgb_from_xyz(np.reshape(D90, (3, 3))), atol=1e-9)
    assert (raw.make, raw.model, raw.orientation) == ("neuralimaging", f"test {cfa}", 1)
    # the same file as LibRaw itself sees it
    with rawpy.imread(str(path)) as reference:
        np.testing.assert_array_equal(reference.raw_image_visible, raw.mosaic)
        # LibRaw's own camera->sRGB for the DNG equals ours (dcraw derivation)
        np.testing.assert_allclose(reference.color_matrix[:, :3], raw.cam_to_srgb, atol=1e-4)


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_orientation(tmp_path: Path, orientation: int) -> None:
    path = tmp_path / "o.dng"
    _write(path, "RGGB", orientation=orientation)
    assert read_raw(path).orientation == orientation


def test_cam_to_srgb_keeps_white_and_inverts_the_colour_matrix() -> None:
    xyz_to_cam = np.reshape(D90, (3, 3))
    matrix = cam_to_srgb_from_xyz(xyz_to_cam)
    np.testing.assert_allclose(matrix.sum(axis=1), 1.0, atol=1e-12)
    # camera response to a pure sRGB primary, white balanced, maps back to that primary
    cam_rgb = xyz_to_cam @ XYZ_FROM_SRGB
    cam_rgb /= cam_rgb.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(matrix @ cam_rgb, np.eye(3), atol=1e-12)


def test_truncated_dng(tmp_path: Path) -> None:
    path = tmp_path / "cut.dng"
    _write(path, "GBRG")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"cut\.dng: truncated or corrupt"):
        read_raw(path)


def test_corrupt_header(tmp_path: Path) -> None:
    path = tmp_path / "junk.dng"
    path.write_bytes(b"II*\x00" + bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8)))
    with pytest.raises(InputError, match=r"junk\.dng: (truncated or corrupt|not a RAW)"):
        read_raw(path)


def test_non_raw_inputs(tmp_path: Path) -> None:
    png = tmp_path / "photo.png"
    Image.new("RGB", (8, 8)).save(png)
    text = tmp_path / "notes.dng"
    text.write_text("hello, I am not a raw file\n")
    empty = tmp_path / "empty.nef"
    empty.touch()
    for path, reason in ((png, "a PNG image"), (text, "plain text"), (empty, "empty file")):
        with pytest.raises(InputError) as info:
            read_raw(path)
        message = str(info.value)
        assert message.startswith(str(path)) and reason in message and "\n" not in message
    with pytest.raises(FileNotFoundError):
        read_raw(tmp_path / "missing.dng")
    with pytest.raises(InputError, match="directory"):
        read_raw(tmp_path)


def test_linear_dng_is_not_bayer(tmp_path: Path) -> None:
    path = tmp_path / "linear.dng"
    pixels = np.random.default_rng(0).integers(0, 4000, (32, 48, 3)).astype(np.uint16)
    tifffile.imwrite(path, pixels, photometric=34892, planarconfig="contig", extratags=_DNG_BASE)
    with pytest.raises(InputError, match=r"linear\.dng: not a Bayer sensor"):
        read_raw(path)


def test_xtrans_dng_is_not_bayer(tmp_path: Path) -> None:
    path = tmp_path / "xtrans.dng"
    xtrans = (1, 1, 0, 1, 1, 2, 1, 1, 2, 1, 1, 0, 2, 0, 1, 0, 2, 1,
              1, 1, 2, 1, 1, 0, 1, 1, 0, 1, 1, 2, 0, 2, 1, 2, 0, 1)  # fmt: skip  # Fujifilm X-Trans 6x6
    mosaic = np.random.default_rng(0).integers(0, 4000, (96, 96)).astype(np.uint16)
    tags = [*_DNG_BASE, (33421, "H", 2, (6, 6), True), (33422, "B", 36, xtrans, True)]
    tifffile.imwrite(path, mosaic, photometric=32803, extratags=tags)
    with pytest.raises(InputError, match=r"xtrans\.dng: not a Bayer sensor .*6x6"):
        read_raw(path)
