"""The evaluation of whole-photo analysis: test photos, localization figures, the run-level evaluation."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from neuralimaging.data.dataset import Dataset
from neuralimaging.errors import InputError
from neuralimaging.experiments.analysis import load_analyzer
from neuralimaging.experiments.analysis_eval import (
    REGION_FRACTION,
    evaluate_analysis,
    example_overlays,
    fit_run_calibration,
    localization_scores,
    resolve_images,
    roc_auc,
    shared_photos,
)
from neuralimaging.experiments.train_manipulation import _channel_twin, load_workflow


class TestFigures:
    def test_auc_against_scikit_learn(self) -> None:
        from sklearn.metrics import roc_auc_score

        rng = np.random.default_rng(0)
        labels = rng.random(500) < 0.3
        scores = np.round(rng.random(500) + 0.5 * labels, 1)  # many ties
        assert roc_auc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
        assert np.isnan(roc_auc(scores, np.zeros(500, bool)))

    def test_localization_of_perfect_and_inverted_maps(self) -> None:
        mask = np.zeros((20, 30), bool)
        mask[5:10, 10:25] = True
        perfect = localization_scores(mask.astype(float), mask)
        assert perfect == {"auc": 1.0, "f1": 1.0, "iou": 1.0, "best_f1": 1.0, "flagged": pytest.approx(75 / 600)}
        inverted = localization_scores(1.0 - mask, mask)
        assert inverted["auc"] == 0.0 and inverted["f1"] == 0.0 and inverted["iou"] == 0.0

    def test_f1_and_iou_by_hand(self) -> None:
        mask = np.array([[1, 1, 0, 0]], bool)
        score = np.array([[0.9, 0.2, 0.8, 0.1]])
        got = localization_scores(score, mask)
        assert got["f1"] == pytest.approx(2 * 1 / (2 + 2)) and got["iou"] == pytest.approx(1 / 3)
        assert got["auc"] == pytest.approx(0.75)

    def test_shapes_must_match(self) -> None:
        with pytest.raises(InputError, match="differ"):
            localization_scores(np.zeros((2, 2)), np.zeros((2, 3), bool))


class TestPhotos:
    def test_native_is_the_shared_development_and_regions_are_sized(self, tiny_fan_run) -> None:
        from neuralimaging.acquisition.nip import develop_tiled
        from neuralimaging.io import to_uint

        channel = _channel_twin("down:2,jpeg:50", "libjpeg", None)
        workflow, config = load_workflow(tiny_fan_run, channel=channel)
        samples = Dataset.load(config["data"]).test
        photos = list(shared_photos(workflow, samples, seed=3))
        assert len(photos) == len(samples) * 5
        assert [p.label for p in photos[:5]] == [0, 1, 2, 3, 4]
        first = samples[0]
        with torch.no_grad():
            rgb = develop_tiled(workflow.nip, torch.from_numpy(first.rggb)[None]).clamp(0, 1)
            want = to_uint(channel(rgb)[0])
        np.testing.assert_array_equal(photos[0].pixels, want)
        assert not photos[0].mask.any()
        for index, photo in enumerate(photos):
            native = photos[index - photo.label]
            assert photo.pixels.shape == (*photo.mask.shape, 3) == (*samples[index // 5].shape, 3)
            if photo.label:
                assert REGION_FRACTION[0] * 0.7 <= photo.mask.mean() <= REGION_FRACTION[1] * 1.3
                assert (~photo.mask).any()
                assert not np.array_equal(photo.pixels[photo.mask], native.pixels[photo.mask])
                # rows 8 pixels or more away from the region (JPEG blocks touching it may differ): the native photo
                near = np.convolve(photo.mask.any(1), np.ones(17), "same") > 0
                np.testing.assert_array_equal(photo.pixels[~near], native.pixels[~near])

    def test_same_seed_same_photos(self, tiny_fan_run) -> None:
        workflow, config = load_workflow(tiny_fan_run, channel=_channel_twin("down:2,jpeg:50", "libjpeg", None))
        samples = Dataset.load(config["data"]).test[:1]
        a = [p.mask for p in shared_photos(workflow, samples, seed=5)]
        b = [p.mask for p in shared_photos(workflow, samples, seed=5)]
        c = [p.mask for p in shared_photos(workflow, samples, seed=6)]
        assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
        assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


class TestSplits:
    def test_test_falls_back_to_val_without_a_test_split(self, tiny_dataset, tmp_path) -> None:
        copy = tmp_path / "no-test"
        shutil.copytree(tiny_dataset, copy)
        index = json.loads((copy / "dataset.json").read_text())
        index.pop("test", None)
        (copy / "dataset.json").write_text(json.dumps(index))
        samples, split = resolve_images(copy, "test")
        assert split == "val" and [s.name for s in samples] == [s.name for s in Dataset.load(copy).val]
        samples, split = resolve_images(tiny_dataset, "test")
        assert split == "test" and [s.name for s in samples] == [s.name for s in Dataset.load(tiny_dataset).test]

    def test_a_list_of_samples(self, tiny_dataset) -> None:
        some = Dataset.load(tiny_dataset).train[:2]
        assert resolve_images(tiny_dataset, some) == (some, "given")
        with pytest.raises(InputError, match="no images"):
            resolve_images(tiny_dataset, [])


def test_evaluate_analysis(tiny_fan_run, tmp_path) -> None:
    result = evaluate_analysis(tiny_fan_run, "test", examples=1, examples_dir=tmp_path / "ex")
    assert result["split"] == "test" and result["calibration_split"] == "train"
    assert (result["patch"], result["stride"]) == (16, 8)
    assert result["channel"] == "down:2,jpeg:50,codec:libjpeg"
    for aggregation in ("mixture", "mean"):
        figures = result["aggregations"][aggregation]
        assert figures["photos"] == result["images"] * 5
        assert np.array(figures["confusion"]).sum() == figures["photos"]
        for key in ("accuracy", "binary_accuracy", "ece", "mean_confidence", "window_accuracy"):
            assert 0.0 <= figures[key] <= 1.0
        assert figures["localization"]["photos"] == result["images"] * 4
        assert 0.0 <= figures["localization"]["auc"] <= 1.0
        assert figures["calibration"]["aggregation"] == aggregation
        assert "train split" in figures["calibration"]["fitted"]
        assert len(figures["calibration"]["bias"]) == 5
    names = sorted(p.name for p in (tmp_path / "ex").iterdir())
    assert len(names) == 10 and sum(n.endswith("_overlay.png") for n in names) == 5
    # the calibration of the CLI is the evaluation's (same photos: seed 1 on the training split)
    fitted = fit_run_calibration(tiny_fan_run)
    assert fitted.temperature == pytest.approx(result["aggregations"]["mixture"]["calibration"]["temperature"])
    assert fitted.bias == pytest.approx(result["aggregations"]["mixture"]["calibration"]["bias"])
    assert load_analyzer(tiny_fan_run, calibration=fitted).calibration is fitted


def test_example_overlays(tiny_fan_run) -> None:
    import io

    from PIL import Image

    overlays = example_overlays(tiny_fan_run, "val", count=1, seed=2)
    workflow, config = load_workflow(tiny_fan_run, channel=_channel_twin("down:2,jpeg:50", "libjpeg", None))
    sample = sorted(Dataset.load(config["data"]).val, key=lambda s: s.name)[0]
    photos = list(shared_photos(workflow, [sample], seed=2))
    assert [name for name, _, _ in overlays] == [p.name for p in photos]
    for (_, png, caption), photo in zip(overlays, photos, strict=True):
        with Image.open(io.BytesIO(png)) as image:
            assert image.format == "PNG" and image.width == photo.pixels.shape[1] and image.height > photo.pixels.shape[0]
        truth = workflow.class_names[photo.label]
        assert f"true {truth}" in caption and ("region" in caption) == bool(photo.label)
    with pytest.raises(InputError, match="count must be at least 1, got 0"):
        example_overlays(tiny_fan_run, count=0)
