"""PRNU matching: NCC and PCE against plain references, same- and other-camera decisions."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from neuralimaging.errors import InputError
from neuralimaging.forensics import prnu


class TestMatching:
    def test_same_camera_far_above_threshold_other_below(self, cameras, fingerprint_a) -> None:
        same = [prnu.match(fingerprint_a, img) for img in cameras["test_a"]]
        other = [prnu.match(fingerprint_a, img) for img in cameras["test_b"]]
        assert min(r.pce for r in same) > 10 * prnu.PCE_THRESHOLD  # 2377-5730 measured, other camera -1.7..0.8
        assert all(r.same_camera and r.peak == (0, 0) for r in same)
        assert max(r.pce for r in other) < prnu.PCE_THRESHOLD
        assert min(r.ncc for r in same) > 5 * max(abs(r.ncc) for r in other)

    def test_clipped_pixels_left_out_of_the_template(self, cameras, fingerprint_a) -> None:
        # an over-exposed shot: the template I K is zero wherever any channel reaches the saturation level
        image = cameras["test_a"][0]
        bright = np.clip(image * 1.8, 0.0, 1.0)
        assert (bright.max(axis=0) >= 254 / 255).mean() > 0.1
        masked = prnu.match(fingerprint_a, bright, saturation=254 / 255, weighting=None)
        keep = bright.max(axis=0) < 254 / 255
        residual = prnu.noise_residual(bright)
        by_hand = prnu.pce(prnu.crosscorr(residual, prnu.to_gray(bright) * fingerprint_a * keep)).pce
        assert masked.pce == pytest.approx(by_hand, rel=1e-5)
        assert masked.pce != pytest.approx(prnu.match(fingerprint_a, bright, saturation=None, weighting=None).pce, rel=1e-3)
        # the default: the mask and the weighted residual
        weighted = prnu.pce(prnu.crosscorr(prnu.weight_residual(residual, mask=keep), prnu.to_gray(bright) * fingerprint_a * keep))
        assert prnu.match(fingerprint_a, bright).pce == pytest.approx(weighted.pce, rel=1e-5)
        # weighted without the template mask: the weights still leave clipped pixels out
        unmasked = prnu.pce(prnu.crosscorr(prnu.weight_residual(residual, mask=keep), prnu.to_gray(bright) * fingerprint_a))
        assert prnu.match(fingerprint_a, bright, saturation=None).pce == pytest.approx(unmasked.pce, rel=1e-5)
        # nothing clipped: the mask changes nothing
        image = cameras["test_a"][0] * 0.5
        unmasked = prnu.match(fingerprint_a, image, saturation=None).pce
        assert prnu.match(fingerprint_a, image, saturation=254 / 255).pce == pytest.approx(unmasked, rel=1e-6)

    def test_search_finds_shift(self, cameras, fingerprint_a) -> None:
        image = cameras["test_a"][0]
        residual = prnu.noise_residual(image)
        signal = prnu.to_gray(image) * fingerprint_a
        result = prnu.pce(prnu.crosscorr(np.roll(residual, (3, -5), axis=(0, 1)), signal), search=None)
        assert result.peak == (3, -5)
        assert result.pce > prnu.PCE_THRESHOLD

    def test_crosscorr_matches_direct_sum(self) -> None:
        rng = np.random.default_rng(1)
        a, b = rng.normal(size=(12, 10)), rng.normal(size=(12, 10))
        ours = prnu.crosscorr(a, b)
        a0, b0 = a - a.mean(), b - b.mean()
        for dy, dx in [(0, 0), (1, 2), (-3, 4), (5, -1)]:
            direct = (a0 * np.roll(b0, (dy, dx), axis=(0, 1))).sum()
            assert ours[dy % 12, dx % 10] == pytest.approx(direct, rel=1e-4, abs=1e-4)

    def test_ncc_is_pearson(self) -> None:
        rng = np.random.default_rng(2)
        a, b = rng.normal(size=(20, 20)), rng.normal(size=(20, 20))
        assert prnu.ncc(a, a + b) == pytest.approx(np.corrcoef(a.ravel(), (a + b).ravel())[0, 1], rel=1e-5)

    def test_size_mismatch(self, fingerprint_a) -> None:
        with pytest.raises(InputError, match="differs from the fingerprint"):
            prnu.match(fingerprint_a, np.zeros((3, 128, 128), np.float32))
        with pytest.raises(InputError, match="sizes differ"):
            prnu.ncc(np.zeros((4, 4)), np.zeros((4, 5)))


class TestWeighting:
    def test_tile_variance_by_loops(self) -> None:
        """Tiles from the top-left corner, partial tiles at the right and bottom, floor from the median tile."""
        w = np.random.default_rng(8).normal(0, 1, (19, 21)) * np.linspace(0.2, 3.0, 21)
        tiles = {(i, j): (w[i : i + 8, j : j + 8] ** 2).mean() for i in range(0, 19, 8) for j in range(0, 21, 8)}
        floor = 0.3 * np.median(list(tiles.values()))
        expected = np.empty_like(w)
        for y in range(19):
            for x in range(21):
                expected[y, x] = w[y, x] / (tiles[(y // 8 * 8, x // 8 * 8)] + floor)
        np.testing.assert_allclose(prnu.weight_residual(w), expected, rtol=1e-5)
        np.testing.assert_allclose(prnu.weight_residual(w, block=1, floor=1.0),
                                   w / (w**2 + np.median(w**2)), rtol=1e-5)

    def test_masked_pixels_left_out(self) -> None:
        """Masked (clipped) pixels count neither in their tile's variance nor in the median, and come out zero."""
        w = np.random.default_rng(10).normal(0, 1, (16, 16))
        mask = np.ones_like(w, bool)
        mask[:8, :] = False  # the top two tiles clipped entirely
        mask[8:10, 8:] = False  # a part of the bottom-right tile
        w_masked = np.where(mask, w, 0.0)
        bottom_left = (w[8:, :8] ** 2).mean()
        bottom_right = (w[10:, 8:] ** 2).mean()
        floor = 0.3 * np.median([bottom_left, bottom_right])
        out = prnu.weight_residual(w, mask=mask)
        assert not out[~mask].any()
        np.testing.assert_allclose(out[8:, :8], w[8:, :8] / (bottom_left + floor), rtol=1e-5)
        np.testing.assert_allclose(out[10:, 8:], w[10:, 8:] / (bottom_right + floor), rtol=1e-5)
        np.testing.assert_allclose(prnu.weight_residual(w_masked, mask=mask), out, rtol=1e-6)

    @pytest.mark.parametrize("kwargs", [{"block": 0}, {"floor": 0.0}])
    def test_bad_settings(self, kwargs) -> None:
        with pytest.raises(InputError, match="block must be"):
            prnu.weight_residual(np.ones((16, 16)), **kwargs)

    def test_bad_shapes(self) -> None:
        with pytest.raises(InputError, match="expected an"):
            prnu.weight_residual(np.ones((2, 16, 16)))
        with pytest.raises(InputError, match="mask shape"):
            prnu.weight_residual(np.ones((16, 16)), mask=np.ones((16, 8), bool))


def _jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    """``(3, H, W)`` in [0, 1] through libjpeg (Pillow, 4:2:0) and back."""
    buffer = io.BytesIO()
    Image.fromarray(np.round(np.clip(image, 0, 1).transpose(1, 2, 0) * 255).astype(np.uint8)).save(buffer, "JPEG", quality=quality)
    with Image.open(io.BytesIO(buffer.getvalue())) as decoded:
        return np.asarray(decoded.convert("RGB"), np.float32).transpose(2, 0, 1) / 255.0


class TestJPEGShots:
    """Developed shots of two virtual cameras saved by libjpeg, as in ``benchmarks/prnu_jpeg.py`` (smaller)."""

    @pytest.fixture(scope="class")
    def shots(self, tmp_path_factory):
        from neuralimaging.acquisition.isp import develop
        from neuralimaging.acquisition.virtual_camera import synthesize, synthesize_flat_fields

        root, size = tmp_path_factory.mktemp("jpeg-shots"), (256, 256)
        flat = synthesize_flat_fields("nikon-d90", root / "flat", 8, seed=0, size=size)
        same = synthesize("default", "nikon-d90", root / "a", shots_per_photo=2, seed=0, size=size)
        other = synthesize("default", "canon-5d2", root / "b", shots_per_photo=1, seed=1, size=size)
        return {name: [develop(p, "python") for p in paths] for name, paths in (("flat", flat), ("same", same), ("other", other))}

    @staticmethod
    def _variants(images: list[np.ndarray], quality: int) -> list[np.ndarray]:
        """Every shot as it is, 4x darker and 1.8x brighter with clipped highlights, through libjpeg."""
        return [_jpeg(v, quality) for x in images for v in (x, x * 0.25, np.clip(x * 1.8, 0, 1))]

    @pytest.mark.parametrize("quality", [95, 90])
    def test_weighting_lifts_same_camera_matches(self, shots, quality) -> None:
        k = prnu.fingerprint([_jpeg(x, quality) for x in shots["flat"]])
        before = {"weighting": None, "saturation": None}
        same = np.array([(prnu.match(k, x, **before).pce, prnu.match(k, x).pce) for x in self._variants(shots["same"], quality)])
        other = [prnu.match(k, x).pce for x in self._variants(shots["other"], quality)]
        ratios = same[:, 1] / same[:, 0]
        # 54 shots; measured: q95 median ratio 1.16, 80% of the shots higher, weakest 47 -> 93; q90 1.20, 80%, 7 -> 25
        assert np.median(ratios) > 1.08
        assert (ratios > 1).mean() > 0.65
        assert same[:, 1].min() > same[:, 0].min()
        assert max(other) < prnu.PCE_THRESHOLD / 3  # 5.2 and 3.8 measured

    def test_grid_pce_removes_jpeg_grid_inflation(self, shots) -> None:
        """At q75 the other camera's standard PCE is inflated by the aligned JPEG grids; the grid PCE is not."""
        k = prnu.fingerprint([_jpeg(x, 75) for x in shots["flat"]])
        other = self._variants(shots["other"], 75)
        standard = [abs(prnu.match(k, x).pce) for x in other]
        grid = [abs(prnu.match(k, x, grid=8).pce) for x in other]
        assert max(grid) < 10 < max(standard)  # 6.0 and 19.2 measured
        assert np.mean(grid) < np.mean(standard) / 1.5  # 1.26 and 2.86 measured (chance: 1)


def _reference_pce(cc: np.ndarray, peak: tuple[int, int], radius: int) -> float:
    """Roll the peak to the array centre, cut out the centred square, no wrap-around logic needed."""
    h, w = cc.shape
    centred = np.roll(cc.astype(np.float64), (h // 2 - peak[0], w // 2 - peak[1]), axis=(0, 1))
    keep = np.ones_like(centred, dtype=bool)
    keep[h // 2 - radius : h // 2 + radius + 1, w // 2 - radius : w // 2 + radius + 1] = False
    value = centred[h // 2, w // 2]
    return float(np.sign(value) * value**2 / np.mean(centred[keep] ** 2))


class TestPCE:
    @pytest.mark.parametrize("peak", [(0, 0), (1, 2), (0, 31), (39, 0), (39, 31), (20, 15), (38, 1)])
    @pytest.mark.parametrize("radius", [1, 2, 5])
    def test_neighbourhood_excluded_centred_with_wraparound(self, peak, radius) -> None:
        """Regression for prnu-python: off-centre 4x4 block, nothing excluded near the top/left edge."""
        rng = np.random.default_rng(3)
        cc = rng.normal(0, 1, (40, 32))
        h, w = cc.shape
        cc[peak] = 100.0
        for dy in range(-radius, radius + 1):  # a strong neighbourhood that must not count as energy
            for dx in range(-radius, radius + 1):
                if (dy, dx) != (0, 0):
                    cc[(peak[0] + dy) % h, (peak[1] + dx) % w] = 30.0
        result = prnu.pce(cc, radius=radius, search=None)
        shift = (peak[0] - h if peak[0] > h // 2 else peak[0], peak[1] - w if peak[1] > w // 2 else peak[1])
        assert result.peak == shift
        assert result.peak_value == pytest.approx(100.0)
        assert result.pce == pytest.approx(_reference_pce(cc, peak, radius), rel=1e-9)
        # the neighbourhood is really gone: energy comes from the N(0, 1) background only
        assert result.pce == pytest.approx(100.0**2, rel=0.2)

    def test_aligned_peak_at_zero_shift_keeps_sign(self) -> None:
        cc = np.random.default_rng(4).normal(0, 1, (32, 32))
        cc[0, 0] = -20.0
        cc[5, 5] = 50.0  # a larger value elsewhere is ignored for aligned images (search=0)
        result = prnu.pce(cc, radius=2, search=0)
        assert result.peak == (0, 0) and result.pce < 0

    def test_bad_radius(self) -> None:
        with pytest.raises(InputError, match="radius"):
            prnu.pce(np.zeros((8, 8)), radius=4)
        with pytest.raises(InputError, match="grid"):
            prnu.pce(np.zeros((32, 32)), radius=2, grid=9)

    @pytest.mark.parametrize("shape", [(64, 48), (60, 44)])
    @pytest.mark.parametrize("peak", [(0, 0), (11, 5), (57, 40)])
    def test_grid_energy_over_shifts_on_the_grid(self, shape, peak) -> None:
        """Shifts whose signed offset from the peak (the shorter way round) is a multiple of 8 in both axes."""
        h, w = shape
        cc = np.random.default_rng(6).normal(0, 1, shape)
        cc[peak] = 200.0

        def offset(index: int, at: int, n: int) -> int:
            return min(index - at, index - at - n, index - at + n, key=abs)

        keep = np.array([[offset(i, peak[0], h) % 8 == 0 and offset(j, peak[1], w) % 8 == 0
                          and (abs(offset(i, peak[0], h)) > 2 or abs(offset(j, peak[1], w)) > 2)
                          for j in range(w)] for i in range(h)])
        result = prnu.pce(cc, radius=2, search=None, grid=8)
        assert (result.peak[0] % h, result.peak[1] % w) == peak
        assert result.pce == pytest.approx(200.0**2 / np.mean(cc[keep] ** 2), rel=1e-9)

    def test_grid_with_no_shift_left(self) -> None:
        with pytest.raises(InputError, match="no shift on the grid"):
            prnu.pce(np.random.default_rng(0).normal(size=(34, 34)), radius=16, grid=8)

    def test_grid_pce_is_calibrated_when_the_spread_follows_the_grid(self) -> None:
        """Two independent residuals whose variance is 9x on the 8x8 block borders (JPEG blocking): at zero shift
        their correlation spreads more than at most shifts, so the standard PCE of unrelated pairs averages far
        above the chi-square(1) mean of 1; the grid PCE stays near it."""
        rng = np.random.default_rng(9)
        border = np.where((np.arange(64) % 8 == 0)[:, None] | (np.arange(64) % 8 == 0)[None, :], 3.0, 1.0)
        standard, grid = [], []
        for _ in range(300):
            cc = prnu.crosscorr(rng.normal(size=(64, 64)) * border, rng.normal(size=(64, 64)) * border)
            standard.append(abs(prnu.pce(cc, radius=2).pce))
            grid.append(abs(prnu.pce(cc, radius=2, grid=8).pce))
        assert np.mean(standard) > 1.8  # 2.35 measured
        assert 0.7 < np.mean(grid) < 1.3  # 0.99 measured

    @pytest.mark.parametrize("shape", [(40, 32), (41, 33)])
    def test_search_larger_than_the_image_searches_every_shift_once(self, shape) -> None:
        """Regression: --search 100000 built a (2 search + 1)^2 window (298 GiB) instead of wrapping around."""
        cc = np.random.default_rng(5).normal(0, 1, shape)
        cc[shape[0] // 2, 3] = 60.0  # the largest shift there is, on the odd side
        every = prnu.pce(cc, radius=2, search=None)
        for search in (shape[0] // 2, 100_000, 10**12):
            assert prnu.pce(cc, radius=2, search=search) == every
        near = prnu.pce(cc, radius=2, search=3)  # a small search stays a window around zero shift
        assert near.peak != every.peak and max(abs(v) for v in near.peak) <= 3
