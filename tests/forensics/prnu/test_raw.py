"""PRNU in the RAW domain: fingerprints on the Bayer mosaic from flat fields and photos, NoiseProfile weights."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from neuralimaging.errors import InputError
from neuralimaging.forensics import prnu


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

    def test_match_raw_is_unweighted(self, shots, k_flat) -> None:
        """The residual of the mosaic against I K as it is: no tile weighting, no saturation mask."""
        path = shots["photos_a"][0]
        mosaic = prnu.read_mosaic(path)
        by_hand = prnu.pce(prnu.crosscorr(prnu.raw_noise_residual(mosaic), mosaic.values * k_flat))
        assert prnu.match_raw(k_flat, path).pce == pytest.approx(by_hand.pce, rel=1e-5)

    def test_bad_inputs(self, shots, tmp_path) -> None:
        from neuralimaging.acquisition.dng import write_dng
        from neuralimaging.acquisition.virtual_camera import synthesize_flat_fields

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
