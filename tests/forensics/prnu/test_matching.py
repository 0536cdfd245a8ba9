"""PRNU matching: NCC and PCE against plain references, same- and other-camera decisions."""

from __future__ import annotations

import numpy as np
import pytest

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
        masked = prnu.match(fingerprint_a, bright, saturation=254 / 255)
        keep = bright.max(axis=0) < 254 / 255
        residual = prnu.noise_residual(bright)
        by_hand = prnu.pce(prnu.crosscorr(residual, prnu.to_gray(bright) * fingerprint_a * keep)).pce
        assert masked.pce == pytest.approx(by_hand, rel=1e-5)
        assert masked.pce != pytest.approx(prnu.match(fingerprint_a, bright, saturation=None).pce, rel=1e-3)
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
