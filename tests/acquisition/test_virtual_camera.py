"""Virtual cameras: profiles, PRNU ground truth, unprocessing that the python ISP inverts, DNG output."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from neuralimaging.acquisition.bayer import CFA_PATTERNS, crop_to_rggb, normalize_mosaic
from neuralimaging.acquisition.dng import write_dng
from neuralimaging.acquisition.isp import develop
from neuralimaging.acquisition.raw import read_raw
from neuralimaging.acquisition.virtual_camera import (
    CAMERAS,
    SIDECAR,
    _frame,
    apply_optics,
    flat_field_scene,
    get_camera,
    inverse_tone_curve,
    load_cameras,
    noise_profile,
    optics_mtf,
    parse_size,
    shot_size,
    shots_megapixels,
    synthesize,
    synthesize_flat_fields,
    synthetic_shots,
    unprocess,
)
from neuralimaging.errors import InputError


def test_profiles_differ_and_cover_every_pattern() -> None:
    profiles = list(CAMERAS.values())
    assert len(profiles) >= 4
    assert {p.cfa for p in profiles} == set(CFA_PATTERNS)
    assert CAMERAS["nikon-d90"].cfa == "GBRG"  # as the paper's D90
    for attribute in ("xyz_to_cam", "black_level", "prnu_seed", "shot_noise"):
        assert len({getattr(p, attribute) for p in profiles}) == len(profiles), attribute
    assert {p.bits for p in profiles} == {12, 14}
    for p in profiles:
        assert 0.25 <= p.megapixels <= 0.5
        np.testing.assert_allclose(p.cam_to_srgb.sum(axis=1), 1.0, atol=1e-9)
        assert 0.3 <= p.psf_sigma <= 1.0 and p.olpf == 1.0  # every built-in body has a lens and an OLPF
        assert 1e-5 <= p.shot_noise[0] < p.shot_noise[1] <= 4 * p.shot_noise[0] * 1.0001  # base to 4x base ISO


@pytest.mark.parametrize("name", list(CAMERAS))
def test_prnu_is_fixed_zero_mean_gaussian(name: str) -> None:
    camera = CAMERAS[name]
    k = camera.prnu()
    assert k.shape == camera.size and k.dtype == np.float32
    np.testing.assert_array_equal(k, camera.prnu())
    assert abs(float(k.mean())) < 5 * camera.prnu_sigma / np.sqrt(k.size)
    assert float(k.std()) == pytest.approx(camera.prnu_sigma, rel=0.02)
    other = CAMERAS["canon-5d2" if name != "canon-5d2" else "nikon-d90"].with_size(camera.size).prnu()
    assert abs(np.corrcoef(k.ravel(), other.ravel())[0, 1]) < 0.02  # cameras have different fingerprints


def test_shots_carry_the_prnu() -> None:
    """A flat grey scene, normalized and averaged over shots, reveals 1 + K (the PRNU ground truth)."""
    noisy = get_camera("sony-a700").with_size("64x96")
    camera = type(noisy)(**{**noisy.__dict__, "shot_noise": (1e-4, 1e-4)})  # moderate noise, K of the sony
    k = camera.prnu()
    grey = np.full((3, *camera.size), 0.6, dtype=np.float32)
    rng = np.random.default_rng(0)
    residues = []
    for _ in range(8):
        mosaic, info = unprocess(grey, camera, rng, prnu=k)
        flat = normalize_mosaic(mosaic, camera.cfa, np.full(4, camera.black_level), camera.white_level)
        sites = [flat[dy::2, dx::2] for dy in (0, 1) for dx in (0, 1)]
        means = [s.mean() for s in sites]
        residue = np.empty_like(flat)
        for (dy, dx), s, m in zip([(0, 0), (0, 1), (1, 0), (1, 1)], sites, means):
            residue[dy::2, dx::2] = s / m - 1.0
        residues.append(residue)
    estimate = np.mean(residues, axis=0)
    assert np.corrcoef(estimate.ravel(), k.ravel())[0, 1] > 0.8


@pytest.mark.parametrize("name", list(CAMERAS))
def test_python_isp_inverts_unprocessing(tmp_path: Path, photos, name: str) -> None:
    """Without noise and PRNU, developing the DNG gives back the photo (up to exposure and demosaicing)."""
    camera = get_camera(name).with_size("192x288")
    quiet = type(camera)(**{**camera.__dict__, "shot_noise": (1e-12, 1e-12), "prnu_sigma": 0.0, "psf_sigma": 0.0,
                            "olpf": 0.0})
    rng = np.random.default_rng(5)
    rgb, _ = _frame(photos[0], quiet.size, rng, exact=True)
    mosaic, info = unprocess(rgb, quiet, rng)
    path = write_dng(tmp_path / "shot.dng", mosaic, cfa=quiet.cfa, black_level=quiet.black_level,
                     white_level=quiet.white_level, as_shot_neutral=[1 / g for g in info["wb_gains"]],
                     xyz_to_cam=quiet.xyz_to_cam)
    developed = develop(path, "python")
    expected = np.clip(inverse_tone_curve(rgb) * info["exposure"] ** (1 / 2.2), 0, 1)
    inner = (slice(None), slice(4, -4), slice(4, -4))
    mse = np.mean((developed[inner] - expected[inner]) ** 2)
    assert 10 * np.log10(1 / mse) > 30.0
    np.testing.assert_allclose(developed[inner].mean(axis=(1, 2)), expected[inner].mean(axis=(1, 2)), atol=0.01)


def test_synthesize_writes_readable_deterministic_dngs(tmp_path: Path, photo_paths) -> None:
    camera = get_camera("pentax-k5")
    out = tmp_path / "raw"
    paths = synthesize(photo_paths[:2], camera, out, shots_per_photo=2, seed=7, size=(64, 96))
    assert [p.name for p in paths] == [f"pentax-k5_{s.stem}_{k:02d}.dng" for s in photo_paths[:2] for k in range(2)]
    for path in paths:
        raw = read_raw(path)
        assert raw.mosaic.shape == (64, 96) and raw.cfa == "BGGR"
        assert raw.white_level == camera.white_level and np.all(raw.black_level == camera.black_level)
        assert raw.mosaic.max() <= camera.white_level
        assert 1.3 <= raw.wb_gains[2] <= 1.7 and 1.6 <= raw.wb_gains[0] <= 2.1
    sidecar = json.loads((out / SIDECAR).read_text())
    assert sidecar["profile"]["name"] == "pentax-k5" and sidecar["profile"]["size"] == [64, 96]
    assert sorted(sidecar["shots"]) == sorted(p.name for p in paths)
    # resumable: existing files are kept; deterministic: rewriting gives the same bytes
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in paths}
    synthesize(photo_paths[:2], camera, out, shots_per_photo=2, seed=7, size=(64, 96))
    assert all(p.stat().st_mtime_ns == before[p][0] for p in paths)
    synthesize(photo_paths[:2], camera, out, shots_per_photo=2, seed=7, size=(64, 96), overwrite=True)
    assert all(p.read_bytes() == before[p][1] for p in paths)
    # shots differ from each other (crop, exposure, noise)
    assert not np.array_equal(read_raw(paths[0]).mosaic, read_raw(paths[1]).mosaic)


def test_unreadable_photo_is_skipped_or_raised(tmp_path: Path, photo_paths) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a_good.png").write_bytes(photo_paths[1].read_bytes())
    (photos / "b_bad.jpg").write_text("not a photo")
    with pytest.raises(InputError, match=r"b_bad\.jpg: not a readable photo"):
        synthesize(photos, "canon-5d2", tmp_path / "raise", shots_per_photo=2, size=(32, 48))
    failed: list[tuple[Path, str]] = []
    progress: list[tuple[int, int]] = []
    paths = synthesize(photos, "canon-5d2", tmp_path / "skip", shots_per_photo=2, size=(32, 48),
                       on_error=lambda photo, reason: failed.append((photo, reason)),
                       progress=lambda done, total: progress.append((done, total)))
    assert [p.name for p in paths] == ["canon-5d2_a_good_00.dng", "canon-5d2_a_good_01.dng"]
    assert all(p.is_file() for p in paths) and len(list((tmp_path / "skip").glob("*.dng"))) == 2
    assert [photo.name for photo, _ in failed] == ["b_bad.jpg"] and "not a readable photo" in failed[0][1]
    assert progress[-1] == (4, 4)


def test_noise_grows_with_signal() -> None:
    camera = get_camera("nikon-d90").with_size("64x96")
    quiet_prnu = np.zeros(camera.size, np.float32)
    rng = np.random.default_rng(1)
    levels = (0.2, 0.8)
    spreads = []
    for level in levels:
        grey = np.full((3, *camera.size), level, dtype=np.float32)
        a, _ = unprocess(grey, camera, np.random.default_rng(11), prnu=quiet_prnu)
        b, _ = unprocess(grey, camera, np.random.default_rng(11), prnu=quiet_prnu)
        assert np.array_equal(a, b)
        c, _ = unprocess(grey, camera, rng, prnu=quiet_prnu)
        spreads.append(float(crop_to_rggb(c.astype(np.float64), camera.cfa)[0::2, 1::2].std()))
    assert spreads[1] > spreads[0] > 0


def test_bad_arguments(tmp_path: Path, photo_paths) -> None:
    with pytest.raises(InputError, match="unknown camera"):
        get_camera("leica-m9")
    with pytest.raises(InputError, match="HxW"):
        parse_size("big")
    with pytest.raises(InputError, match="even"):
        parse_size("63x96")
    with pytest.raises(InputError, match="shots_per_photo"):
        synthesize(photo_paths[:1], "nikon-d90", tmp_path, shots_per_photo=0)
    with pytest.raises(InputError, match="not a folder"):
        synthesize(tmp_path / "nowhere", "nikon-d90", tmp_path)
    # shots are named after the photo: a.jpg and a.png would overwrite (or skip) each other's shots
    photos = tmp_path / "photos"
    photos.mkdir()
    for suffix in (".jpg", ".png"):
        (photos / f"a{suffix}").write_bytes(photo_paths[0].read_bytes())
    with pytest.raises(InputError, match=r"a\.png: has the same name stem as .*a\.jpg"):
        synthesize(photos, "nikon-d90", tmp_path / "out")


def test_noise_free_shot_is_the_noisy_shot_without_its_noise() -> None:
    camera = get_camera("canon-5d2").with_size("64x96")
    rng = np.random.default_rng(4)
    rgb = rng.uniform(0.1, 0.9, (3, *camera.size)).astype(np.float32)
    noisy, info = unprocess(rgb, camera, np.random.default_rng(12))
    clean, clean_info = unprocess(rgb, camera, np.random.default_rng(12), noise=False)
    assert clean_info == info  # same exposure, white balance and noise levels
    clean_again, _ = unprocess(rgb, camera, np.random.default_rng(12), noise=False)
    assert np.array_equal(clean, clean_again)
    # the difference is the Poisson-Gaussian noise of the shot: zero-mean, variance shot * x + read (in units of white - black)
    scale = camera.white_level - camera.black_level
    x = (clean.astype(np.float64) - camera.black_level) / scale
    diff = (noisy.astype(np.float64) - clean.astype(np.float64)) / scale
    predicted = x * info["shot_noise"] + info["read_noise"] + 1.0 / (6.0 * scale**2)  # + rounding of both
    assert abs(diff.mean()) < 4 * np.sqrt(predicted.mean() / diff.size)
    assert 0.9 < diff.var() / predicted.mean() < 1.1


def test_base_iso_is_the_same_shot_at_the_lowest_noise_level() -> None:
    camera = get_camera("nikon-d90").with_size("64x96")
    rgb = np.random.default_rng(5).uniform(0.1, 0.9, (3, *camera.size)).astype(np.float32)
    _, random_info = unprocess(rgb, camera, np.random.default_rng(13))
    clean, base_info = unprocess(rgb, camera, np.random.default_rng(13), iso="base", noise=False)
    clean_random, _ = unprocess(rgb, camera, np.random.default_rng(13), noise=False)
    assert np.array_equal(clean, clean_random)  # the same exposure and white balance: only the noise differs
    assert base_info["shot_noise"] == camera.shot_noise[0] < random_info["shot_noise"]
    assert base_info["wb_gains"] == random_info["wb_gains"] and base_info["exposure"] == random_info["exposure"]
    with pytest.raises(InputError, match="iso"):
        unprocess(rgb, camera, np.random.default_rng(13), iso="1600")


def test_dng_noise_profile_round_trip(tmp_path: Path, photo_paths) -> None:
    """Shots carry the DNG NoiseProfile of their ISO (the model's read noise, not the shot's own deviation)."""
    paths = synthesize(photo_paths[:1], "canon-5d2", tmp_path, shots_per_photo=2, size="64x96")
    shots = json.loads((tmp_path / SIDECAR).read_text())["shots"]
    for path in paths:
        raw = read_raw(path)
        shot = shots[path.name]["shot_noise"]
        assert raw.noise_profile == pytest.approx(noise_profile(shot), rel=1e-12)
        assert raw.noise_profile[1] == pytest.approx(np.exp(2.18 * np.log(shot) + 1.20), rel=1e-12)


def test_flat_field_shots(tmp_path: Path) -> None:
    scene = flat_field_scene((64, 96), np.random.default_rng(0))
    assert scene.shape == (3, 64, 96) and 0.6 < scene.mean() < 0.95
    assert np.abs(np.diff(scene, axis=-1)).max() < 0.01  # smooth: no texture
    paths = synthesize_flat_fields("nikon-d90", tmp_path / "flat", 3, size="64x96")
    assert [p.name for p in paths] == [f"nikon-d90_flat_{k:02d}.dng" for k in range(3)]
    camera = get_camera("nikon-d90")
    shots = json.loads((tmp_path / "flat" / SIDECAR).read_text())["shots"]
    for path in paths:
        raw = read_raw(path)
        level = (raw.mosaic.astype(np.float64) - camera.black_level) / (camera.white_level - camera.black_level)
        assert 0.15 < level.mean() < 0.8 and level.max() < 0.99  # bright, never clipped
        assert shots[path.name]["iso"] == "base" and shots[path.name]["shot_noise"] == camera.shot_noise[0]
    again = synthesize_flat_fields("nikon-d90", tmp_path / "again", 3, size="64x96")
    assert all(read_raw(a).mosaic.tobytes() == read_raw(b).mosaic.tobytes() for a, b in zip(paths, again))
    noisy = synthesize_flat_fields("nikon-d90", tmp_path / "noisy", 1, size="64x96", iso="random")
    assert read_raw(noisy[0]).noise_profile[0] > camera.shot_noise[0]
    with pytest.raises(InputError, match="count"):
        synthesize_flat_fields("nikon-d90", tmp_path / "none", 0)
    with pytest.raises(InputError, match="iso"):
        synthesize_flat_fields("nikon-d90", tmp_path / "none", 1, iso="high")


def test_inverse_tone_curve_inverts_smoothstep() -> None:
    x = np.linspace(0.0, 1.0, 1001)
    np.testing.assert_allclose(inverse_tone_curve(3 * x**2 - 2 * x**3), x, atol=1e-7)
    assert inverse_tone_curve(np.array([0.05]))[0] > 0.1  # a rendered photo's deep shadows are lifted


def test_optics_mtf_and_blur() -> None:
    mtf = optics_mtf((64, 96), 0.6, 1.0)
    assert mtf.shape == (64, 49) and mtf[0, 0] == 1.0
    assert abs(mtf[32, 0]) < 1e-12 and abs(mtf[0, 48]) < 1e-12  # the OLPF's zero at the Nyquist frequency
    # the lens alone is a Gaussian blur: scipy's sampled kernel, up to the Gaussian's spectrum beyond the
    # Nyquist frequency (exp(-2 pi^2 sigma^2 / 4) = 1.5e-5 at sigma 1.5), away from the mirrored edges
    from scipy.ndimage import gaussian_filter

    image = np.random.default_rng(0).uniform(0, 1, (2, 40, 56))
    blurred = apply_optics(image, 1.5, 0.0)
    reference = np.stack([gaussian_filter(plane, 1.5, mode="mirror", truncate=8.0) for plane in image])
    np.testing.assert_allclose(blurred[:, 10:-10, 10:-10], reference[:, 10:-10, 10:-10], atol=2e-5)
    assert blurred.mean() == pytest.approx(image.mean(), abs=1e-3)
    # the OLPF alone averages four spots half a pixel off: on a Nyquist-frequency grating it leaves nothing
    grating = np.tile(np.array([0.2, 0.8]), (16, 16))
    assert np.abs(apply_optics(grating, 0.0, 1.0) - 0.5)[4:-4, 4:-4].max() < 1e-9
    assert apply_optics(image, 0.0, 0.0) is image


def test_shots_are_never_upscaled(tmp_path: Path, photo_paths, photos) -> None:
    """Every shot is a crop of its photo at the photo's own pitch, as large as the photo and sensor allow."""
    camera = get_camera("nikon-d90")
    assert shot_size((300, 451), camera.size) == ((300, 450), False)
    assert shot_size((600, 512), camera.size) == ((512, 600), True)  # portrait: turned as a camera held upright
    assert shot_size((2000, 3000), camera.size) == (camera.size, False)
    picks = [1, 8]  # chelsea (smaller than the sensor) and grace_hopper (portrait)
    paths = synthesize([photo_paths[i] for i in picks], camera, tmp_path, shots_per_photo=1, seed=0)
    shots = json.loads((tmp_path / SIDECAR).read_text())["shots"]
    for path, index in zip(paths, picks):
        raw = read_raw(path)
        expected, rotated = shot_size(photos[index].shape[:2], camera.size)
        assert raw.mosaic.shape == expected and shots[path.name]["rotated"] == rotated
        assert shots[path.name]["scene"] == photo_paths[index].stem
    assert shots_megapixels(tmp_path, paths) == pytest.approx(sum(read_raw(p).mosaic.size for p in paths) / 1e6)
    # a sensor size the photo cannot fill is refused, not met by upscaling
    failed: list[str] = []
    assert synthesize(photo_paths[1:2], camera, tmp_path / "big", size=(512, 768),
                      on_error=lambda photo, reason: failed.append(reason)) == []
    assert failed and "never upscales" in failed[0]
    # shots are the photo's pixels: without optics, noise, PRNU and colour changes, a frame is a crop
    frame, info = _frame(photos[1], (64, 96), np.random.default_rng(3), exact=True)
    top, left, height, width = info["crop"]
    crop = photos[1][top : top + height, left : left + width].astype(np.float32) / 255
    expected = crop[:, ::-1] if info["flip"] else crop
    np.testing.assert_array_equal(frame, expected.transpose(2, 0, 1))


def test_stereo_pair_is_one_scene(photo_paths) -> None:
    from neuralimaging.photos import scene_of

    assert scene_of("motorcycle_left.png") == scene_of("motorcycle_right.png") == "motorcycle"
    assert scene_of("left.png") == "left" and scene_of("china.jpg") == "china"


class TestSyntheticShots:
    def test_every_shot_framed_anew(self, photos) -> None:
        """Shots of one photo never share pixel-aligned content (it would add up coherently in K)."""
        zero = np.zeros((256, 256), np.float32)
        clean = synthetic_shots(photos[:2], zero, 8, noise=0.0, seed=4)
        assert all(s.shape == (3, 256, 256) and s.dtype == np.float32 for s in clean)
        for i in range(len(clean)):
            for j in range(i + 1, len(clean)):
                assert np.abs(clean[i] - clean[j]).mean() > 0.01
        again = synthetic_shots(photos[:2], zero, 8, noise=0.0, seed=4)
        np.testing.assert_array_equal(np.stack(clean), np.stack(again))

    def test_follows_the_sensor_model(self, photos) -> None:
        k = np.random.default_rng(0).normal(0, 0.01, (64, 96)).astype(np.float32)
        clean = synthetic_shots(photos, np.zeros_like(k), 3, noise=0.0, seed=5)
        shots = synthetic_shots(photos, k, 3, noise=0.0, seed=5)
        for x, y in zip(clean, shots, strict=True):
            np.testing.assert_allclose(y, np.clip(x * (1 + k), 0, 1), atol=1e-6)

    def test_bad_arguments(self, photos) -> None:
        with pytest.raises(InputError, match="zoom"):
            synthetic_shots(photos, np.zeros((32, 32), np.float32), 2, zoom=0.5)
        with pytest.raises(InputError, match="photo"):
            synthetic_shots([], np.zeros((32, 32), np.float32), 2)


def test_camera_table(tmp_path: Path) -> None:
    """The built-in table is read once into frozen profiles; another table is checked field by field."""
    assert load_cameras() == CAMERAS
    assert all(isinstance(p.size, tuple) and isinstance(p.xyz_to_cam, tuple) for p in CAMERAS.values())
    table = tmp_path / "cameras.yaml"
    table.write_text("mine:\n  make: X\n  model: Y\n  cfa: RGGB\n  xyz_to_cam: [1, 0, 0, 0, 1, 0, 0, 0, 1]\n"
                     "  bits: 12\n  black_level: 0\n  white_level: 4095\n  size: [64, 96]\n  prnu_sigma: 0.01\n"
                     "  prnu_seed: 1\n  shot_noise: [1.0e-4, 2.0e-4]\n")
    mine = load_cameras(table)["mine"]
    assert mine.size == (64, 96) and mine.shot_noise == (1e-4, 2e-4)
    table.write_text("mine:\n  make: X\n  lens: 50mm\n")
    with pytest.raises(InputError, match=r"cameras\.yaml: camera 'mine'"):
        load_cameras(table)
    table.write_text("- a list\n")
    with pytest.raises(InputError, match="table of camera profiles"):
        load_cameras(table)

