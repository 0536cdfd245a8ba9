"""CFA handling: RGGB stacking round-trips and puts every colour where it belongs, for all four patterns."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neuralimaging.acquisition.bayer import (
    CFA_PATTERNS,
    cfa_offset,
    crop_to_rggb,
    from_rggb,
    mosaic_rgb,
    normalize_mosaic,
    pad_to_rggb,
    to_rggb,
)
from neuralimaging.errors import InputError


@pytest.mark.parametrize("cfa", CFA_PATTERNS)
@pytest.mark.parametrize("size", [(2, 2), (6, 10), (32, 48)])
def test_round_trip_numpy_and_torch(cfa: str, size: tuple[int, int]) -> None:
    rng = np.random.default_rng(1)
    mosaic = rng.integers(0, 2**14, size=(3, *size)).astype(np.uint16)
    stack = to_rggb(mosaic, cfa)
    assert stack.shape == (3, 4, size[0] // 2, size[1] // 2) and stack.dtype == np.uint16
    np.testing.assert_array_equal(from_rggb(stack, cfa), mosaic)
    tensor = torch.from_numpy(mosaic.astype(np.float32))
    back = from_rggb(to_rggb(tensor, cfa), cfa)
    assert isinstance(back, torch.Tensor)
    torch.testing.assert_close(back, tensor, rtol=0, atol=0)


@pytest.mark.parametrize("cfa", CFA_PATTERNS)
def test_channels_hold_the_right_colours(cfa: str) -> None:
    rgb = np.empty((3, 8, 12), dtype=np.float32)
    rgb[0], rgb[1], rgb[2] = 1.0, 2.0, 3.0
    stack = to_rggb(mosaic_rgb(rgb, cfa), cfa)
    for channel, value in enumerate((1.0, 2.0, 2.0, 3.0)):
        assert np.all(stack[channel] == value)
    # the mosaic's letters match the pattern string at every 2x2 block
    mosaic = mosaic_rgb(rgb, cfa)
    letters = {1.0: "R", 2.0: "G", 3.0: "B"}
    assert "".join(letters[float(v)] for v in mosaic[:2, :2].ravel()) == cfa


@pytest.mark.parametrize("cfa", CFA_PATTERNS)
def test_crop_gives_an_rggb_mosaic(cfa: str) -> None:
    rng = np.random.default_rng(2)
    rgb = rng.random((3, 20, 30)).astype(np.float32)
    cropped = crop_to_rggb(mosaic_rgb(rgb, cfa), cfa)
    dy, dx = cfa_offset(cfa)
    h, w = cropped.shape
    assert (h, w) == (20 - 2 * dy, 30 - 2 * dx)
    np.testing.assert_array_equal(cropped, mosaic_rgb(rgb[:, dy : dy + h, dx : dx + w], "RGGB"))


@pytest.mark.parametrize("cfa", CFA_PATTERNS)
@pytest.mark.parametrize("size", [(2, 2), (20, 30), (7, 9)])
def test_pad_gives_an_rggb_mosaic_covering_every_pixel(cfa: str, size: tuple[int, int]) -> None:
    h0, w0 = size
    # each site's colour (R 1, G 2, B 3) times a random factor in [1, 1.3): floor() gives the colour back
    colours = _colours(cfa, h0 + h0 % 2, w0 + w0 % 2)[:h0, :w0]
    mosaic = colours * np.random.default_rng(3).uniform(1, 1.3, size)
    padded = pad_to_rggb(mosaic, cfa)
    dy, dx = cfa_offset(cfa)
    h, w = padded.shape
    assert h % 2 == 0 and w % 2 == 0 and 0 <= h - h0 <= 2 and 0 <= w - w0 <= 2
    np.testing.assert_array_equal(padded[dy : dy + h0, dx : dx + w0], mosaic)  # every pixel, in place
    np.testing.assert_array_equal(np.floor(padded), _colours("RGGB", h, w))
    tensor = pad_to_rggb(torch.from_numpy(np.stack([mosaic, 2 * mosaic])), cfa)
    assert isinstance(tensor, torch.Tensor) and tensor.shape == (2, h, w)
    np.testing.assert_array_equal(tensor[1].numpy(), 2 * padded)


def _colours(cfa: str, h: int, w: int) -> np.ndarray:
    rgb = np.empty((3, h, w))
    rgb[0], rgb[1], rgb[2] = 1.0, 2.0, 3.0
    return mosaic_rgb(rgb, cfa)


@pytest.mark.parametrize("cfa", CFA_PATTERNS)
def test_normalize_mosaic_matches_float64_reference(cfa: str) -> None:
    rng = np.random.default_rng(3)
    black = np.array([60.0, 64.0, 62.0, 66.0])
    white = 4000.0
    gains = np.array([2.1, 1.0, 1.7])
    mosaic = rng.integers(0, 4096, size=(8, 10)).astype(np.uint16)
    out = normalize_mosaic(mosaic, cfa, black, white, gains)
    black_map = np.tile(black.reshape(2, 2), (4, 5))
    gain_map = np.tile(np.array([gains["RGB".index(c)] for c in cfa]).reshape(2, 2), (4, 5))
    expected = np.clip(np.clip((mosaic - black_map) / (white - black_map), 0, 1) * gain_map, 0, 1)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_bad_pattern_and_sizes_raise() -> None:
    with pytest.raises(InputError, match="CFA pattern"):
        to_rggb(np.zeros((4, 4)), "RGBG")
    with pytest.raises(InputError, match="even"):
        to_rggb(np.zeros((5, 4)), "RGGB")
    with pytest.raises(InputError, match="RGGB stack"):
        from_rggb(np.zeros((3, 4, 4)), "RGGB")
    with pytest.raises(InputError, match="white level"):
        normalize_mosaic(np.zeros((4, 4), np.uint16), "RGGB", np.full(4, 100.0), 50.0)
