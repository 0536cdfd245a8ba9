"""Patch sampling: the paper's variance rule, RGB-aligned positions, fixed validation patches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neuralimaging.acquisition.isp import develop_rggb
from neuralimaging.acquisition.virtual_camera import synthesize
from neuralimaging.data.dataset import Dataset, prepare
from neuralimaging.data.patches import accept_patch, sample_patches, validation_patches
from neuralimaging.errors import InputError


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, photo_paths) -> Dataset:
    root = tmp_path_factory.mktemp("patches")
    synthesize(photo_paths[:4], "canon-5d2", root / "raw", shots_per_photo=2, seed=2, size=(96, 128))
    prepare(root / "raw", root / "prepared")
    return Dataset.load(root / "prepared")


def test_acceptance_rule_statistics() -> None:
    rng = np.random.default_rng(0)
    trials = 4000
    for variance, expected in ((0.0, 0.0), (0.009, 0.0), (0.01, 0.5), (0.015, 0.5), (0.02, 1.0), (0.3, 1.0)):
        rate = np.mean([accept_patch(variance, rng) for _ in range(trials)])
        assert abs(rate - expected) < 4 * np.sqrt(0.25 / trials) + 1e-12, (variance, rate)


@pytest.mark.parametrize("patch", [8, 16])
def test_patches_are_aligned_and_follow_the_rule(dataset: Dataset, patch: int) -> None:
    rggb, rgb = sample_patches(dataset.train, 12, patch, np.random.default_rng(4))
    assert rggb.shape == (12, 4, patch, patch) and rgb.shape == (12, 3, 2 * patch, 2 * patch)
    assert rggb.dtype == rgb.dtype == torch.float32
    assert float(rggb.min()) >= 0 and float(rgb.max()) <= 1
    variances = rgb.double().flatten(1).var(dim=1, unbiased=False)
    assert bool((variances >= 0.01).all())
    # each RGB patch is what the python ISP makes of its RAW patch (RGB position = 2 x RAW position)
    cam_to_srgb = np.asarray(dataset.train[0].meta["cam_to_srgb"])
    for raw_patch, rgb_patch in zip(rggb.numpy(), rgb.numpy()):
        developed = develop_rggb(raw_patch, cam_to_srgb)
        inner = (slice(None), slice(4, -4), slice(4, -4))
        assert np.mean((developed[inner] - rgb_patch[inner]) ** 2) < 1e-3


def test_half_of_the_low_variance_patches_are_kept(dataset: Dataset) -> None:
    """Among accepted patches, those in [0.01, 0.02) are about half as frequent as among candidates."""
    def bands(sample) -> tuple[float, float]:
        rng = np.random.default_rng(0)
        h, w = sample.shape
        candidates = []
        for _ in range(600):
            y, x = rng.integers(0, h - 16 + 1), rng.integers(0, w - 16 + 1)
            candidates.append(float(sample.patch(int(y), int(x), 16)[1].var()))
        candidates = np.array(candidates)
        return np.mean((candidates >= 0.01) & (candidates < 0.02)), np.mean(candidates >= 0.02)

    # the image whose candidates fill both bands best (soft camera images often have few low-band patches)
    sample, (low, high) = max(((s, bands(s)) for s in dataset.train), key=lambda item: min(item[1]))
    assert low >= 0.03 and high >= 0.03, "no image with patches in both variance bands"
    _, rgb = sample_patches([sample], 600, 16, np.random.default_rng(1))
    kept = rgb.double().flatten(1).var(dim=1, unbiased=False).numpy()
    ratio_kept = np.mean(kept < 0.02) / np.mean(kept >= 0.02)
    assert ratio_kept == pytest.approx(0.5 * low / high, rel=0.35)


def test_validation_patches_are_fixed(dataset: Dataset) -> None:
    a = validation_patches(dataset.val, 6, 16, seed=3)
    b = validation_patches(dataset.val, 6, 16, seed=3)
    c = validation_patches(dataset.val, 6, 16, seed=4)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a[0], c[0])


def test_same_generator_same_patches(dataset: Dataset) -> None:
    a = sample_patches(dataset.train, 5, 8, np.random.default_rng(9))
    b = sample_patches(dataset.train, 5, 8, np.random.default_rng(9))
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_errors(dataset: Dataset) -> None:
    with pytest.raises(InputError, match="no images"):
        sample_patches([], 4, 8, np.random.default_rng(0))
    with pytest.raises(InputError, match="smaller than the patch"):
        sample_patches(dataset.train, 1, 1000, np.random.default_rng(0))
    with pytest.raises(InputError, match=">= 1"):
        validation_patches(dataset.val, 0, 8)


def test_flat_image_gives_a_clear_error(tmp_path) -> None:
    from neuralimaging.data.dataset import Sample
    from neuralimaging.io import save_image

    np.save(tmp_path / "flat.npy", np.full((4, 16, 16), 0.5, dtype=np.float32))
    save_image(tmp_path / "flat.png", np.full((3, 32, 32), 0.5))
    flat = Sample("flat", tmp_path / "flat.npy", tmp_path / "flat.png", {})
    with pytest.raises(InputError, match=r"no image has a patch of 8x8 with RGB variance >= 0.01 .*first: flat"):
        sample_patches([flat], 1, 8, np.random.default_rng(0))


def test_flat_images_are_passed_over(tmp_path, dataset: Dataset) -> None:
    """An image without any patch that passes the variance rule (a clear sky) gives way to the others."""
    from neuralimaging.data.dataset import Sample
    from neuralimaging.io import save_image

    np.save(tmp_path / "flat.npy", np.full((4, 16, 16), 0.5, dtype=np.float32))
    save_image(tmp_path / "flat.png", np.full((3, 32, 32), 0.5))
    flat = Sample("flat", tmp_path / "flat.npy", tmp_path / "flat.png", {})
    _, rgb = sample_patches([flat, *dataset.train], 12, 8, np.random.default_rng(0))
    assert rgb.shape == (12, 3, 16, 16) and bool((rgb.flatten(1).var(dim=1, unbiased=False) >= 0.01).all())
    _, val = validation_patches([flat, *dataset.val], 4, 8, seed=0)
    assert bool((val.flatten(1).var(dim=1, unbiased=False) >= 0.01).all())
