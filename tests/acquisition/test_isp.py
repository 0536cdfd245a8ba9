"""Standard ISPs: the python pipeline against float64 references and LibRaw, gamma curves, orientation."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from neuralimaging.acquisition.bayer import cfa_offset, normalize
from neuralimaging.acquisition.isp import apply_gamma, apply_orientation, develop, develop_rggb
from neuralimaging.acquisition.raw import read_raw
from neuralimaging.acquisition.virtual_camera import CAMERAS, synthesize
from neuralimaging.errors import InputError

# python vs libraw on 128x192 virtual-camera shots (2 shots of chelsea and coffee per camera), 2026-11-25:
# at a low noise level (shot 1e-4) 29.8-35.4 dB (mean 32.4); at the profiles' own noise levels 29.0-33.2 dB
# (mean 30.8; other seeds gave down to 25.2 dB on the noisiest shots). Both use the same white balance, colour
# matrix and gamma; they differ in demosaicing (Menon vs LibRaw's AHD), which shows most on detailed, noisy content.
PSNR_BOUND_QUIET_DB = 27.0
PSNR_BOUND_NOISY_DB = 25.0
MEAN_BOUND = 0.01


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


@pytest.fixture(scope="module")
def quiet_dngs(tmp_path_factory, photo_paths) -> dict[str, list[Path]]:
    root = tmp_path_factory.mktemp("quiet")
    out = {}
    for name, camera in CAMERAS.items():
        quiet = dataclasses.replace(camera, shot_noise=(1e-4, 1e-4), size=(128, 192))
        out[name] = synthesize(photo_paths[1:3], quiet, root / name, shots_per_photo=2, seed=3)
    return out


@pytest.mark.parametrize("camera", list(CAMERAS))
def test_python_and_libraw_agree(small_dngs, quiet_dngs, camera: str) -> None:
    for paths, bound in ((quiet_dngs[camera], PSNR_BOUND_QUIET_DB), (small_dngs[camera], PSNR_BOUND_NOISY_DB)):
        for path in paths:
            ours = develop(path, "python")
            libraw = develop(path, "libraw")
            assert ours.shape == libraw.shape == (3, 128, 192)
            assert ours.dtype == libraw.dtype == np.float32
            assert 0.0 <= ours.min() and ours.max() <= 1.0
            assert _psnr(ours, libraw) > bound
            # same brightness and colour: per-channel means agree
            np.testing.assert_allclose(ours.mean(axis=(1, 2)), libraw.mean(axis=(1, 2)), atol=MEAN_BOUND)


@pytest.mark.parametrize("camera", list(CAMERAS))
def test_develop_rggb_matches_full_frame_development(small_dngs, camera: str) -> None:
    raw = read_raw(small_dngs[camera][0])
    rggb = normalize(raw)
    target = develop_rggb(rggb, raw.cam_to_srgb)
    assert target.shape == (3, 2 * rggb.shape[1], 2 * rggb.shape[2]) and target.dtype == np.float32
    full = develop(raw, "python")
    dy, dx = cfa_offset(raw.cfa)
    crop = full[:, dy : dy + target.shape[1], dx : dx + target.shape[2]]
    # away from the borders, demosaicing the cropped RGGB mosaic is demosaicing the full mosaic
    assert _psnr(target[:, 8:-8, 8:-8], crop[:, 8:-8, 8:-8]) > 45.0


def test_develop_rggb_reference_steps(small_dngs) -> None:
    """Matrix, clip and gamma after Menon demosaicing, checked against a float64 re-computation."""
    from colour_demosaicing import demosaicing_CFA_Bayer_Menon2007

    from neuralimaging.acquisition.bayer import from_rggb

    raw = read_raw(small_dngs["canon-5d2"][0])
    rggb = normalize(raw)
    camera = demosaicing_CFA_Bayer_Menon2007(from_rggb(rggb.astype(np.float64), "RGGB"), "RGGB")
    expected = np.clip(np.clip(camera @ raw.cam_to_srgb.T, 0, 1) ** (1 / 2.2), 0, 1).transpose(2, 0, 1)
    np.testing.assert_allclose(develop_rggb(rggb, raw.cam_to_srgb), expected, atol=2e-5)


def test_gamma_curves() -> None:
    x = np.array([0.0, 0.001, 0.0031308, 0.01, 0.18, 0.5, 1.0, 1.5, -0.2])
    np.testing.assert_allclose(apply_gamma(x, "2.2"), np.clip(x, 0, 1) ** (1 / 2.2))
    srgb = apply_gamma(x, "srgb")
    assert srgb[0] == 0 and srgb[-3] == pytest.approx(1.0) and srgb[-1] == 0
    np.testing.assert_allclose(srgb[1], 12.92 * 0.001)
    np.testing.assert_allclose(srgb[5], 1.055 * 0.5 ** (1 / 2.4) - 0.055)
    assert np.all(np.diff(srgb[:7]) > 0)
    with pytest.raises(InputError, match="gamma"):
        apply_gamma(x, "1.8")


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_matches_pillow_exif_transpose(orientation: int) -> None:
    rgb = np.random.default_rng(orientation).integers(0, 255, (3, 4, 6)).astype(np.uint8)
    image = Image.fromarray(rgb.transpose(1, 2, 0))
    exif = image.getexif()
    exif[0x0112] = orientation
    image.info["exif"] = exif.tobytes()
    from PIL import ImageOps

    reference = np.asarray(ImageOps.exif_transpose(image)).transpose(2, 0, 1)
    np.testing.assert_array_equal(apply_orientation(rgb, orientation), reference)


def test_unknown_pipeline(small_dngs) -> None:
    with pytest.raises(InputError, match="pipeline"):
        develop(small_dngs["nikon-d90"][0], "darktable")  # type: ignore[arg-type]


@pytest.mark.parametrize("gamma", ["2.2", "srgb"])
def test_torch_python_isp_equals_the_numpy_one(gamma, photos):
    """``develop_rggb_torch`` (Menon in torch) == ``develop_rggb`` (colour-demosaicing), batched, on photo
    stacks with a real camera matrix; gradients with respect to the stack stay finite (also at black)."""
    import torch

    from neuralimaging.acquisition.bayer import mosaic_rgb, to_rggb
    from neuralimaging.acquisition.isp import develop_rggb_torch, gamma_torch

    matrix = np.asarray(CAMERAS["canon-5d2"].cam_to_srgb, dtype=np.float32)
    stacks = []
    for photo in photos[:2]:
        linear = (photo[:48, :64].astype(np.float32) / 255.0) ** 2.2 * 0.8
        stacks.append(to_rggb(mosaic_rgb(linear.transpose(2, 0, 1), "RGGB"), "RGGB"))
    batch = torch.from_numpy(np.stack(stacks)).requires_grad_(True)
    out = develop_rggb_torch(batch, torch.from_numpy(matrix), gamma)
    for i, stack in enumerate(stacks):
        ref = develop_rggb(stack, matrix, gamma=gamma)
        assert np.abs(out[i].detach().numpy() - ref).mean() < 1e-5
    out.sum().backward()
    assert torch.isfinite(batch.grad).all()
    x = torch.tensor([0.0, 1e-9, 0.5, 1.0, 2.0], requires_grad=True)
    gamma_torch(x, gamma).sum().backward()
    assert torch.isfinite(x.grad).all()
    with pytest.raises(InputError, match="RGGB stack"):
        develop_rggb_torch(batch[:, :3], torch.from_numpy(matrix))


def test_demosaic_from_threads_restores_colour_dtype() -> None:
    # colour's default float type is process-global: concurrent calls must not leave it at float32
    import threading

    import colour

    from neuralimaging.acquisition.isp import demosaic

    rng = np.random.default_rng(0)
    mosaics = [rng.random((32, 48)) for _ in range(6)]
    serial = [demosaic(m, "RGGB") for m in mosaics]
    before = colour.constants.DTYPE_FLOAT_DEFAULT
    results: list[np.ndarray | None] = [None] * len(mosaics)

    def work(i: int) -> None:
        results[i] = demosaic(mosaics[i], "RGGB")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(mosaics))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert colour.constants.DTYPE_FLOAT_DEFAULT == before
    for got, want in zip(results, serial):
        assert got is not None and got.dtype == np.float32
        np.testing.assert_array_equal(got, want)
