"""DNG writer: what LibRaw reads back, the optional NoiseProfile tag, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from neuralimaging.acquisition.dng import write_dng
from neuralimaging.acquisition.raw import read_raw
from neuralimaging.errors import InputError


@pytest.mark.parametrize("cfa", ["RGGB", "BGGR", "GRBG", "GBRG"])
def test_libraw_reads_back_what_was_written(tmp_path: Path, cfa: str) -> None:
    mosaic = np.random.default_rng(0).integers(64, 4000, (32, 48), dtype=np.uint16)
    path = write_dng(tmp_path / "shot.dng", mosaic, cfa=cfa, black_level=64, white_level=4095,
                     as_shot_neutral=(0.5, 1, 0.6), xyz_to_cam=np.eye(3).ravel(), noise_profile=(1e-4, 2e-6))
    raw = read_raw(path)
    np.testing.assert_array_equal(raw.mosaic, mosaic)
    assert raw.cfa == cfa and raw.white_level == 4095
    assert raw.noise_profile == pytest.approx((1e-4, 2e-6), rel=1e-12)
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically


def test_noise_profile_optional_and_checked(tmp_path: Path) -> None:
    mosaic = np.zeros((32, 32), np.uint16)
    plain = write_dng(tmp_path / "plain.dng", mosaic, cfa="RGGB", black_level=0, white_level=4095,
                      as_shot_neutral=(0.5, 1, 0.6), xyz_to_cam=np.eye(3).ravel())
    assert read_raw(plain).noise_profile is None
    with pytest.raises(InputError, match="noise profile"):
        write_dng(tmp_path / "bad.dng", mosaic, cfa="RGGB", black_level=0, white_level=4095,
                  as_shot_neutral=(0.5, 1, 0.6), xyz_to_cam=np.eye(3).ravel(), noise_profile=(1e-4, -1.0))


def test_bad_mosaic(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"bad\.dng: DNG mosaic must be uint16"):
        write_dng(tmp_path / "bad.dng", np.zeros((32, 32), np.float32), cfa="RGGB", black_level=0,
                  white_level=4095, as_shot_neutral=(0.5, 1, 0.6), xyz_to_cam=np.eye(3).ravel())
