"""PRNU core: residuals against a plain reference, fingerprints against the true K, NCC/PCE, bad inputs."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest
import pywt
import torch
from scipy.ndimage import uniform_filter

from neuralimaging.errors import InputError
from neuralimaging.forensics import prnu

SIZE = 256


@pytest.fixture(scope="module")
def cameras(photos):
    """Two synthetic cameras with known K; camera A's shots use photos 0-5, camera B's photos 6-8."""
    rng = np.random.default_rng(7)
    k_a = rng.normal(0, 0.01, (SIZE, SIZE)).astype(np.float32)
    k_b = rng.normal(0, 0.01, (SIZE, SIZE)).astype(np.float32)
    shots_a = prnu.synthetic_shots(photos[:6], k_a, 24, seed=1)
    shots_b = prnu.synthetic_shots(photos[6:], k_b, 4, seed=2)
    return {"k_a": k_a, "k_b": k_b, "train": shots_a[:20], "test_a": shots_a[20:], "test_b": shots_b}


@pytest.fixture(scope="module")
def fingerprint_a(cameras):
    return prnu.fingerprint(cameras["train"])


def _reference_residual(plane: np.ndarray, sigma: float) -> np.ndarray:
    """prnu-python's denoiser written plainly in float64: uniform_filter per window, no tricks."""
    var = (sigma / 255.0) ** 2
    coeffs = pywt.wavedec2(plane.astype(np.float64), "db4", mode="periodization", level=4)
    out = [np.zeros_like(coeffs[0])]
    for bands in coeffs[1:]:
        shrunk = []
        for band in bands:
            local = np.min([np.maximum(uniform_filter(band**2, w, mode="constant") - var, 0) for w in (3, 5, 7, 9)], axis=0)
            shrunk.append(band * var / (local + var))
        out.append(tuple(shrunk))
    return pywt.waverec2(out, "db4", mode="periodization")


class TestResidual:
    @pytest.mark.parametrize("shape", [(128, 128), (144, 160), (130, 100)])
    @pytest.mark.parametrize("sigma", [2.0, 5.0])
    def test_matches_plain_reference(self, photos, shape, sigma) -> None:
        plane = photos[0][: shape[0], : shape[1], 1].astype(np.float32) / 255.0
        ours = prnu.wavelet_residual(plane, sigma=sigma)
        h, w = shape
        padded = np.pad(plane, ((0, (-h) % 16), (0, (-w) % 16)), mode="symmetric")
        reference = _reference_residual(padded, sigma)[:h, :w]
        assert ours.dtype == np.float32 and ours.shape == shape
        np.testing.assert_allclose(ours, reference, atol=2e-5)

    def test_batch_equals_single_and_threads(self, photos) -> None:
        stack = np.stack([p[:128, :128, c] for p in photos[:3] for c in range(3)]).astype(np.float32) / 255.0
        batched = prnu.wavelet_residual(stack, workers=3)
        single = np.stack([prnu.wavelet_residual(s, workers=1) for s in stack])
        np.testing.assert_allclose(batched, single, atol=1e-6)

    @pytest.mark.parametrize(("shape", "levels"), [((64, 64), 4), ((96, 160), 4), ((48, 80), 3), ((32, 16), 1)])
    def test_line_transforms_match_pywavelets(self, photos, shape, levels) -> None:
        """The transposing row-by-row transform gives PyWavelets' bands (every other level transposed)."""
        stack = np.stack([p[: shape[0], : shape[1], 1] for p in photos[:3]]).astype(np.float32) / 255.0
        with warnings.catch_warnings():  # PyWavelets warns that 4 levels of 64x64 all touch the boundary
            warnings.simplefilter("ignore", UserWarning)
            reference = pywt.wavedec2(stack.astype(np.float64), "db4", mode="periodization", level=levels, axes=(-2, -1))
        details = prnu._wavedec2_lines(stack, levels, "db4")
        assert len(details) == levels
        for level, ours in enumerate(details):  # finest first; reference[-1] is the finest
            horizontal, vertical, diagonal = reference[levels - level]
            if level % 2 == 0:  # the finest level and every other one come out transposed
                expected = [band.swapaxes(-1, -2) for band in (horizontal, vertical, diagonal)]
            else:  # the others in place, with the horizontal and vertical bands exchanged
                expected = [vertical, horizontal, diagonal]
            for band, reference_band in zip(ours, expected, strict=True):
                assert band.dtype == np.float32 and band.flags.c_contiguous
                np.testing.assert_allclose(band, reference_band, atol=2e-6)
        rng = np.random.default_rng(levels)
        shrunk = [tuple(band * rng.random(band.shape, dtype=np.float32) for band in bands) for bands in details]
        ours = prnu._waverec2_lines(shrunk, "db4")
        back = [np.zeros_like(reference[0])]
        for level in range(levels, 0, -1):  # coarsest first, as PyWavelets wants
            low_high, high_low, high_high = (band.astype(np.float64) for band in shrunk[level - 1])
            if (level - 1) % 2 == 0:
                back.append((low_high.swapaxes(-1, -2), high_low.swapaxes(-1, -2), high_high.swapaxes(-1, -2)))
            else:
                back.append((high_low, low_high, high_high))
        expected = pywt.waverec2(back, "db4", mode="periodization", axes=(-2, -1))
        assert ours.shape == stack.shape and ours.dtype == np.float32
        np.testing.assert_allclose(ours, expected, atol=2e-6)

    def test_zero_mean_rows_and_columns_per_lattice(self) -> None:
        x = np.random.default_rng(0).normal(size=(32, 48)).astype(np.float32) + np.arange(48, dtype=np.float32)
        out = prnu.zero_mean(x)
        for i in (0, 1):
            for j in (0, 1):
                view = out[i::2, j::2]
                np.testing.assert_allclose(view.mean(axis=0), 0, atol=1e-5)
                np.testing.assert_allclose(view.mean(axis=1), 0, atol=1e-5)

    def test_wiener_dft_removes_periodic_pattern(self) -> None:
        rng = np.random.default_rng(0)
        noise = rng.normal(0, 1, (128, 128)).astype(np.float32)
        periodic = 3 * np.cos(2 * np.pi * np.arange(128) / 8)[None, :].astype(np.float32).repeat(128, 0)
        out = prnu.wiener_dft(noise + periodic)
        assert abs(np.corrcoef(out.ravel(), periodic.ravel())[0, 1]) < 0.05
        assert np.corrcoef(out.ravel(), noise.ravel())[0, 1] > 0.9

    def test_inputs_not_modified(self, cameras) -> None:
        image = cameras["test_a"][0]
        before = image.copy()
        residual = prnu.noise_residual(image)
        prnu.fingerprint(cameras["train"][:2])
        signal = prnu.to_gray(image)
        signal_before = signal.copy()
        residual_before = residual.copy()
        prnu.crosscorr(residual, signal)
        prnu.ncc(residual, signal)
        np.testing.assert_array_equal(image, before)
        np.testing.assert_array_equal(signal, signal_before)
        np.testing.assert_array_equal(residual, residual_before)


class TestFingerprint:
    @pytest.mark.parametrize("color", ["gray", "rgb"])
    def test_correlates_with_true_k(self, cameras, color) -> None:
        k = prnu.fingerprint(cameras["train"], color=color)
        assert k.shape == (SIZE, SIZE) and k.dtype == np.float32
        assert prnu.ncc(k, cameras["k_a"]) > 0.7  # 0.795 (gray) / 0.795 (rgb) measured
        assert abs(prnu.ncc(k, cameras["k_b"])) < 0.05

    def test_maximum_likelihood_formula_with_saturation(self, cameras) -> None:
        images = [img.copy() for img in cameras["train"][:4]]
        images[0][:, :40, :40] = 1.0  # a saturated corner in one image
        ours = prnu.fingerprint(images, saturation=254 / 255)
        stack = np.stack(images).astype(np.float64)
        gray = prnu.to_gray(stack)
        residual = prnu.wavelet_residual(gray.astype(np.float32)).astype(np.float64)
        keep = ~np.any(stack >= 254 / 255, axis=1)
        k = (residual * gray * keep).sum(0) / ((gray * keep) ** 2).sum(0)
        reference = prnu.wiener_dft(prnu.zero_mean(k.astype(np.float32)))
        np.testing.assert_allclose(ours, reference, atol=1e-6)

    def test_tensor_batch_and_paths(self, cameras, tmp_path) -> None:
        from PIL import Image

        batch = torch.from_numpy(np.stack(cameras["train"][:3]))
        paths = []
        for index, image in enumerate(cameras["train"][:3]):
            path = tmp_path / f"{index}.png"
            Image.fromarray(np.rint(image.transpose(1, 2, 0) * 255).astype(np.uint8)).save(path)
            paths.append(path)
        from_tensor = prnu.fingerprint(batch)
        from_files = prnu.fingerprint(paths)
        assert np.corrcoef(from_tensor.ravel(), from_files.ravel())[0, 1] > 0.95

    @pytest.mark.parametrize(("workers", "batch_size"), [(1, 8), (2, 8), (3, 5), (4, 1)])
    def test_threads_and_batches_agree(self, cameras, workers, batch_size) -> None:
        images = cameras["train"][:9]
        reference = prnu.fingerprint(images, workers=1, batch_size=9)
        ours = prnu.fingerprint(images, workers=workers, batch_size=batch_size)
        np.testing.assert_allclose(ours, reference, atol=1e-6 * float(np.abs(reference).max()))

    def test_default_sigma_beats_the_toolboxes(self, cameras) -> None:
        """3/255 (the default) estimates K better than the toolboxes' 5/255 (0.795 vs 0.757 measured)."""
        assert prnu.DEFAULT_SIGMA == 3.0
        default = prnu.ncc(prnu.fingerprint(cameras["train"]), cameras["k_a"])
        toolbox = prnu.ncc(prnu.fingerprint(cameras["train"], sigma=5.0), cameras["k_a"])
        assert default == pytest.approx(prnu.ncc(prnu.fingerprint(cameras["train"], sigma=3.0), cameras["k_a"]), abs=1e-9)
        assert default > toolbox + 0.01

    def test_defaults_agree_across_modules(self) -> None:
        import inspect

        from neuralimaging.experiments import prnu_study
        from neuralimaging.forensics import localization

        functions = [prnu.wavelet_residual, prnu.noise_residual, prnu.noise_residuals, prnu.fingerprint, prnu.match, localization.CorrelationPredictor.fit, prnu_study.cross_pipeline]
        for function in functions:
            assert inspect.signature(function).parameters["sigma"].default == prnu.DEFAULT_SIGMA, function.__qualname__
        assert localization.CorrelationPredictor(coef=np.zeros(10), sigma_h1=1.0, sigma_h0=1.0).sigma == prnu.DEFAULT_SIGMA

    def test_channel_last_views(self, cameras) -> None:
        """(3, H, W) views of (H, W, 3) arrays, as photo readers give them, with a saturated corner."""
        images = [img.copy() for img in cameras["train"][:4]]
        images[1][:, :30, :50] = 1.0
        views = [np.ascontiguousarray(img.transpose(1, 2, 0)).transpose(2, 0, 1) for img in images]
        assert not views[0].flags.c_contiguous
        for color in ("gray", "rgb"):
            np.testing.assert_array_equal(prnu.fingerprint(views, color=color), prnu.fingerprint(images, color=color))

    def test_too_few_images(self, cameras) -> None:
        with pytest.raises(InputError, match="at least 2 images, got 1"):
            prnu.fingerprint(cameras["train"][:1])

    def test_mismatched_sizes(self, cameras) -> None:
        images = [cameras["train"][0], cameras["train"][1][:, :128, :]]
        with pytest.raises(InputError, match="image 1: size 128x256 differs"):
            prnu.fingerprint(images)

    @pytest.mark.parametrize("workers", [1, 2])
    def test_errors_in_later_images_name_them(self, cameras, workers, tmp_path) -> None:
        images: list = list(cameras["train"][:12])
        images[9] = images[9][:, :128, :]
        with pytest.raises(InputError, match="image 9: size 128x256 differs"):
            prnu.fingerprint(images, workers=workers, batch_size=4)
        images[9] = np.full_like(cameras["train"][9], np.nan)
        with pytest.raises(InputError, match=r"image 9: expected finite values in \[0, 1\]"):
            prnu.fingerprint(images, workers=workers, batch_size=4)
        images[9] = tmp_path / "missing.png"
        with pytest.raises(OSError, match="missing.png"):  # read by a worker, reported by the caller
            prnu.fingerprint(images, workers=workers, batch_size=4)

    @pytest.mark.parametrize("bad", [np.full((3, 32, 32), 255.0, np.float32), np.zeros((4, 32, 32), np.float32), np.zeros((3, 8, 8), np.float32), np.full((3, 32, 32), np.nan, np.float32)])
    def test_bad_images(self, bad) -> None:
        with pytest.raises(InputError):
            prnu.fingerprint([bad, bad])

    def test_bad_color(self, cameras) -> None:
        with pytest.raises(InputError, match="color"):
            prnu.fingerprint(cameras["train"][:2], color="yuv")  # type: ignore[arg-type]


class TestSyntheticShots:
    def test_every_shot_framed_anew(self, photos) -> None:
        """Shots of one photo never share pixel-aligned content (it would add up coherently in K)."""
        zero = np.zeros((SIZE, SIZE), np.float32)
        clean = prnu.synthetic_shots(photos[:2], zero, 8, noise=0.0, seed=4)
        assert all(s.shape == (3, SIZE, SIZE) and s.dtype == np.float32 for s in clean)
        for i in range(len(clean)):
            for j in range(i + 1, len(clean)):
                assert np.abs(clean[i] - clean[j]).mean() > 0.01
        again = prnu.synthetic_shots(photos[:2], zero, 8, noise=0.0, seed=4)
        np.testing.assert_array_equal(np.stack(clean), np.stack(again))

    def test_follows_the_sensor_model(self, photos) -> None:
        k = np.random.default_rng(0).normal(0, 0.01, (64, 96)).astype(np.float32)
        clean = prnu.synthetic_shots(photos, np.zeros_like(k), 3, noise=0.0, seed=5)
        shots = prnu.synthetic_shots(photos, k, 3, noise=0.0, seed=5)
        for x, y in zip(clean, shots, strict=True):
            np.testing.assert_allclose(y, np.clip(x * (1 + k), 0, 1), atol=1e-6)

    def test_bad_arguments(self, photos) -> None:
        with pytest.raises(InputError, match="zoom"):
            prnu.synthetic_shots(photos, np.zeros((32, 32), np.float32), 2, zoom=0.5)
        with pytest.raises(InputError, match="photo"):
            prnu.synthetic_shots([], np.zeros((32, 32), np.float32), 2)


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


class TestVirtualCamera:
    """Real DNGs of two virtual cameras (known K), developed with the paper's python ISP."""

    @pytest.fixture(scope="class")
    def developed(self, tmp_path_factory):
        from neuralimaging.acquisition.isp import develop
        from neuralimaging.acquisition.virtual_camera import CAMERAS, synthesize

        size = (256, 256)
        root = tmp_path_factory.mktemp("virtual")
        shots_a = synthesize("default", "nikon-d90", root / "a", shots_per_photo=3, seed=0, size=size)
        shots_b = synthesize("default", "canon-5d2", root / "b", shots_per_photo=1, seed=1, size=size)
        order = np.random.default_rng(0).permutation(len(shots_a))
        images_a = [develop(shots_a[i], "python") for i in order]
        return {
            "k_a": CAMERAS["nikon-d90"].with_size(size).prnu(),
            "k_b": CAMERAS["canon-5d2"].with_size(size).prnu(),
            "train": images_a[:20],
            "test_a": images_a[20:],
            "test_b": [develop(p, "python") for p in shots_b],
        }

    def test_fingerprint_and_pce(self, developed) -> None:
        k = prnu.fingerprint(developed["train"])
        # K lives on the Bayer mosaic; demosaicing interpolates it at 2 of 3 colour sites, so the developed
        # estimate correlates less than on the synthetic RGB camera (0.46 measured at 256x256, 20 shots).
        assert prnu.ncc(k, developed["k_a"]) > 0.25
        assert abs(prnu.ncc(k, developed["k_b"])) < 0.05
        same = [prnu.match(k, image).pce for image in developed["test_a"]]
        other = [prnu.match(k, image).pce for image in developed["test_b"]]
        assert np.median(same) > 2 * prnu.PCE_THRESHOLD  # 67-1058, median 289 measured
        assert max(other) < prnu.PCE_THRESHOLD  # -1.2..1.5 measured


class TestRawDomain:
    """Fingerprints on the Bayer mosaic of real DNGs (read by LibRaw) of virtual cameras with known K."""

    @pytest.fixture(scope="class")
    def shots(self, tmp_path_factory):
        from neuralimaging.acquisition.virtual_camera import CAMERAS, synthesize, synthesize_flat_fields

        size = (256, 256)
        root = tmp_path_factory.mktemp("raw")
        return {
            "root": root,
            "k_a": CAMERAS["nikon-d90"].with_size(size).prnu(),
            "k_b": CAMERAS["canon-5d2"].with_size(size).prnu(),
            "flat": synthesize_flat_fields("nikon-d90", root / "flat", 12, size=size),
            # ISO 200 to 12800: the same sensor (K) over a wider range of gains than the profile's daylight range
            "flat_random_iso": synthesize_flat_fields(
                dataclasses.replace(CAMERAS["nikon-d90"], shot_noise=(4e-5, 2.56e-3)), root / "flat-r", 12,
                size=size, iso="random"),
            "photos_a": synthesize("default", "nikon-d90", root / "a", shots_per_photo=1, size=size)[:5],
            "photos_b": synthesize("default", "canon-5d2", root / "b", shots_per_photo=1, seed=1, size=size)[:5],
        }

    @pytest.fixture(scope="class")
    def k_flat(self, shots):
        return prnu.raw_fingerprint(shots["flat"])

    def test_flat_fields_give_the_true_k_better_than_developed_images(self, shots, k_flat) -> None:
        from neuralimaging.acquisition.isp import develop

        developed = prnu.fingerprint([develop(p, "python") for p in shots["flat"]])
        # measured at 256x256 from 12 base-ISO flat fields: 0.937 on the mosaic, 0.872 after the python ISP
        assert prnu.ncc(k_flat, shots["k_a"]) > 0.9
        assert prnu.ncc(k_flat, shots["k_a"]) > prnu.ncc(developed, shots["k_a"]) + 0.03
        assert abs(prnu.ncc(k_flat, shots["k_b"])) < 0.05

    def test_noise_profile_weights_help_when_the_iso_varies(self, shots) -> None:
        weighted = prnu.ncc(prnu.raw_fingerprint(shots["flat_random_iso"]), shots["k_a"])
        plain = prnu.ncc(prnu.raw_fingerprint(shots["flat_random_iso"], weights="none"), shots["k_a"])
        assert weighted > plain + 0.03  # 0.782 vs 0.700 measured

    def test_maximum_likelihood_formula(self, shots) -> None:
        paths = shots["flat"][:3]
        num, den = 0.0, 0.0
        for path in paths:
            mosaic = prnu.read_mosaic(path)
            w = prnu.mosaic_residual(mosaic.values)
            i = np.clip(mosaic.values - w, 0, None) * (mosaic.values < 0.99)
            s, o = mosaic.noise_profile
            num, den = num + w * i / (s * i + o), den + i * i / (s * i + o)
        expected = prnu.wiener_dft(prnu.zero_mean((num / den).astype(np.float32)))
        np.testing.assert_allclose(prnu.raw_fingerprint(paths, workers=2), expected, atol=1e-6 * np.abs(expected).max())
        np.testing.assert_array_equal(prnu.raw_fingerprint(paths, workers=1), prnu.raw_fingerprint(paths, workers=3))

    def test_mosaic_residual_denoises_each_cfa_plane(self, shots) -> None:
        values = prnu.read_mosaic(shots["flat"][0]).values
        residual = prnu.mosaic_residual(values)
        for i, j in ((0, 0), (0, 1), (1, 0), (1, 1)):
            np.testing.assert_array_equal(residual[i::2, j::2], prnu.wavelet_residual(values[i::2, j::2]))
        with pytest.raises(InputError, match="even sides"):
            prnu.mosaic_residual(values[:, :-1])

    def test_match_raw_same_camera_above_threshold_other_below(self, shots, k_flat) -> None:
        same = [prnu.match_raw(k_flat, p).pce for p in shots["photos_a"]]
        other = [prnu.match_raw(k_flat, p).pce for p in shots["photos_b"]]
        assert min(same) > 2 * prnu.PCE_THRESHOLD  # 313-2269 measured
        assert max(other) < prnu.PCE_THRESHOLD  # -5.3..1.7 measured

    def test_bad_inputs(self, shots, tmp_path) -> None:
        from neuralimaging.acquisition.virtual_camera import synthesize_flat_fields, write_dng

        with pytest.raises(InputError, match="at least 2 RAW files"):
            prnu.raw_fingerprint(shots["flat"][:1])
        small = synthesize_flat_fields("nikon-d90", tmp_path / "small", 1, size=(128, 128))
        with pytest.raises(InputError, match=r"nikon-d90_flat_00\.dng: mosaic 128x128 differs from the first file's 256x256"):
            prnu.raw_fingerprint([*shots["flat"][:2], *small])
        plain = write_dng(tmp_path / "plain.dng", np.zeros((256, 256), np.uint16), cfa="GBRG", black_level=0,
                          white_level=3880, as_shot_neutral=(0.5, 1, 0.6), xyz_to_cam=np.eye(3).ravel())
        with pytest.raises(InputError, match=r"plain\.dng: no DNG NoiseProfile"):
            prnu.raw_fingerprint([shots["flat"][0], plain], weights="profile")
        prnu.raw_fingerprint([shots["flat"][0], plain])  # "auto": that file unweighted
        png = tmp_path / "photo.png"
        png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
        with pytest.raises(InputError, match=r"photo\.png: not a RAW file"):
            prnu.raw_fingerprint([shots["flat"][0], png])
        with pytest.raises(InputError, match="weights"):
            prnu.raw_fingerprint(shots["flat"], weights="fit")
        with pytest.raises(InputError, match="differs from the fingerprint's"):
            prnu.match_raw(np.zeros((128, 128), np.float32), shots["flat"][0])
