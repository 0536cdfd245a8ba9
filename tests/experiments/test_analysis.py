"""Whole-photo analysis with a real (tiny) trained FAN: windows, maps, decisions, calibration, output files."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from neuralimaging.errors import InputError
from neuralimaging.experiments.analysis import (
    Calibration,
    analyze_file,
    analyze_photo,
    cell_map,
    class_evidence,
    default_stride,
    fit_calibration,
    load_analyzer,
    load_calibration,
    posterior,
    save_calibration,
    window_log_probs,
)
from neuralimaging.experiments.rundir import RunDir, config_hash


@pytest.fixture
def photo(photos) -> np.ndarray:
    """A real photo crop, uint8 (H, W, 3), of a size that is no multiple of the stride."""
    return np.ascontiguousarray(photos[0][:75, :101])


class TestLoad:
    def test_geometry_from_the_run(self, tiny_fan_run) -> None:
        analyzer = load_analyzer(tiny_fan_run)
        # 16 RAW -> 32 developed -> 16 after the channel's 1:2 down-sampling
        assert (analyzer.patch, analyzer.stride) == (16, 8)
        assert analyzer.classes == ["native", "sharpen", "gaussian", "jpeg", "resample"]
        assert analyzer.overlap == 4.0
        assert not analyzer.fan.training

    def test_default_stride(self) -> None:
        assert default_stride(16) == 8 and default_stride(32) == 16 and default_stride(128) == 64
        assert default_stride(8) == 8 and default_stride(24) == 24

    @pytest.mark.parametrize("stride", [4, 12, 24, 0])
    def test_bad_stride(self, tiny_fan_run, stride) -> None:
        with pytest.raises(InputError, match="stride"):
            load_analyzer(tiny_fan_run, stride=stride)

    def test_not_a_run(self, tmp_path) -> None:
        with pytest.raises(InputError, match="not a run directory"):
            load_analyzer(tmp_path)

    def test_calibration_of_another_run(self, tiny_fan_run, tmp_path) -> None:
        path = save_calibration(tmp_path / "c.json", Calibration(temperature=0.1, run_hash="0123456789ab"))
        with pytest.raises(InputError, match="another run"):
            load_analyzer(tiny_fan_run, calibration=path)

    def test_calibration_round_trip(self, tiny_fan_run, tmp_path) -> None:
        digest = config_hash(RunDir(tiny_fan_run).read_config())
        calibration = Calibration(temperature=0.123, aggregation="mean", fitted="x", run_hash=digest, nll=0.5)
        path = save_calibration(tmp_path / "c.json", calibration)
        assert load_calibration(path) == calibration
        assert load_analyzer(tiny_fan_run, calibration=path).calibration == calibration

    @pytest.mark.parametrize("text", ["[1, 2]", "{\"temperature\": -1}", "{\"tempo\": 1}", "not json"])
    def test_bad_calibration_file(self, tmp_path, text) -> None:
        path = tmp_path / "c.json"
        path.write_text(text)
        with pytest.raises(InputError, match="c.json"):
            load_calibration(path)


class TestWindows:
    def test_equals_the_fan_on_each_window(self, tiny_fan_run, photo) -> None:
        analyzer = load_analyzer(tiny_fan_run)
        got = window_log_probs(analyzer, photo, batch=7)  # bands of less than one window row
        ys, xs = range(0, 75 - 16 + 1, 8), range(0, 101 - 16 + 1, 8)
        assert got.shape == (len(ys), len(xs), 5)
        windows = torch.stack([torch.from_numpy(photo[y : y + 16, x : x + 16].transpose(2, 0, 1).copy())
                               for y in ys for x in xs]).float() / 255
        with torch.no_grad():
            want = F.log_softmax(analyzer.fan(windows), dim=1).numpy().reshape(got.shape)
        np.testing.assert_allclose(got, want, atol=1e-5)

    def test_batch_does_not_change_the_result(self, tiny_fan_run, photo) -> None:
        analyzer = load_analyzer(tiny_fan_run)
        np.testing.assert_allclose(window_log_probs(analyzer, photo, batch=1000),
                                   window_log_probs(analyzer, photo, batch=3), atol=1e-5)

    def test_16_bit_photo(self, tiny_fan_run, photo) -> None:
        analyzer = load_analyzer(tiny_fan_run)
        wide = photo.astype(np.uint16) * 257
        np.testing.assert_allclose(window_log_probs(analyzer, wide), window_log_probs(analyzer, photo), atol=1e-5)

    def test_bands_bound_the_memory(self) -> None:
        # a tall photo: each band holds at most `rows` window rows, and all bands together every window once
        from neuralimaging.experiments.analysis import _bands

        pixels = np.random.default_rng(0).integers(0, 256, (1000, 64, 3), dtype=np.uint8)
        bands = list(_bands(pixels, 16, 8, rows=3))
        assert [first for first, _ in bands] == list(range(0, 124, 3))
        assert max(windows.shape[0] for _, windows in bands) == 3 * 7
        assert sum(windows.shape[0] for _, windows in bands) == 124 * 7
        first, windows = bands[5]
        want = pixels[(first + 1) * 8 : (first + 1) * 8 + 16, 8:24].transpose(2, 0, 1) / 255.0
        np.testing.assert_allclose(windows[8].numpy(), want, atol=1e-6)

    def test_photo_smaller_than_a_window(self, tiny_fan_run) -> None:
        with pytest.raises(InputError, match="smaller than the FAN's 16x16 window"):
            window_log_probs(load_analyzer(tiny_fan_run), np.zeros((15, 40, 3), np.uint8))


class TestCellMap:
    @pytest.mark.parametrize("shape,patch,stride", [((75, 101), 16, 8), ((64, 64), 32, 16), ((40, 50), 16, 16)])
    def test_against_per_pixel_average(self, shape, patch, stride) -> None:
        rng = np.random.default_rng(1)
        ny, nx = (shape[0] - patch) // stride + 1, (shape[1] - patch) // stride + 1
        probs = rng.dirichlet(np.ones(3), size=(ny, nx)).astype(np.float32)
        cells = cell_map(probs, shape, patch, stride)
        assert cells.shape == (math.ceil(shape[0] / stride), math.ceil(shape[1] / stride), 3)
        covered_h, covered_w = (ny - 1) * stride + patch, (nx - 1) * stride + patch
        for cy in range(cells.shape[0]):
            for cx in range(cells.shape[1]):
                y, x = min(cy * stride, covered_h - 1), min(cx * stride, covered_w - 1)  # beyond: the last cell
                covering = [probs[j, i] for j in range(ny) for i in range(nx)
                            if j * stride <= y < j * stride + patch and i * stride <= x < i * stride + patch]
                np.testing.assert_allclose(cells[cy, cx], np.mean(covering, axis=0), atol=1e-6)
        np.testing.assert_allclose(cells.sum(-1), 1.0, atol=1e-5)


class TestDecision:
    @staticmethod
    def logp(probs) -> np.ndarray:
        return np.log(np.asarray(probs, dtype=np.float64))

    def test_mixture_formula(self) -> None:
        calibration = Calibration(region_prior=0.3, smoothing=0.1)
        logp = self.logp([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
        q = 0.9 * np.exp(logp) + 0.1 / 3
        want = [0.0, *(np.log(0.7 + 0.3 * q[:, c] / q[:, 0]).sum() / 2.0 for c in (1, 2))]
        np.testing.assert_allclose(class_evidence(logp, calibration, overlap=2.0), want, rtol=1e-12)

    def test_mean_formula(self) -> None:
        calibration = Calibration(aggregation="mean", smoothing=0.1)
        logp = self.logp([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
        want = np.log(0.9 * np.exp(logp) + 0.1 / 3).mean(axis=0)
        np.testing.assert_allclose(class_evidence(logp, calibration), want, rtol=1e-12)

    def test_a_region_decides_under_mixture_but_not_mean(self) -> None:
        # 80 native windows, 20 confidently "class 2": a manipulated region of 20%
        logp = self.logp([[0.9, 0.05, 0.05]] * 80 + [[0.05, 0.05, 0.9]] * 20)
        mixture = posterior(class_evidence(logp, Calibration()), 1.0)
        mean = posterior(class_evidence(logp, Calibration(aggregation="mean")), 1.0)
        assert mixture.argmax() == 2 and mean.argmax() == 0
        native = posterior(class_evidence(self.logp([[0.9, 0.05, 0.05]] * 100), Calibration()), 1.0)
        assert native.argmax() == 0

    def test_one_overconfident_window_is_bounded(self) -> None:
        logp = np.array([[0.0, -1000.0, -1000.0]] * 50 + [[-1000.0, 0.0, -1000.0]])
        evidence = class_evidence(logp, Calibration())
        assert evidence[1] < math.log(1 - 0.25 + 0.25 * (1 + 3 / 0.01) / 1)  # one window's bounded share at most
        assert np.isfinite(evidence).all()

    def test_posterior_sums_to_one(self) -> None:
        p = posterior(np.array([[0.0, 1e4, -1e4], [0.0, 0.0, 0.0]]), 2.0)
        np.testing.assert_allclose(p.sum(-1), 1.0)
        np.testing.assert_allclose(p[1], 1 / 3)

    def test_fit_recovers_the_temperature(self) -> None:
        rng = np.random.default_rng(0)
        evidence = rng.normal(0.0, 3.0, size=(4000, 4))
        evidence[:, 0] = 0.0
        truth = 0.4
        p = posterior(evidence, truth)
        labels = np.array([rng.choice(4, p=row) for row in p])
        fitted = fit_calibration(evidence, labels, aggregation="mixture", fitted="synthetic")
        assert fitted.temperature == pytest.approx(truth, rel=0.1)
        worse = -np.log(posterior(evidence, 1.0)[np.arange(4000), labels]).mean()
        assert fitted.nll < worse

    def test_fit_recovers_class_offsets(self) -> None:
        rng = np.random.default_rng(1)
        evidence = rng.normal(0.0, 3.0, size=(4000, 4))
        evidence[:, 0] = 0.0
        truth = [0.0, -1.5, 0.5, 1.0]
        labels = np.array([rng.choice(4, p=row) for row in posterior(evidence, 0.4, truth)])
        fitted = fit_calibration(evidence, labels, bias=True)
        assert fitted.temperature == pytest.approx(0.4, rel=0.1)
        np.testing.assert_allclose(fitted.bias, truth, atol=0.25)
        assert fitted.bias[0] == 0.0
        plain = fit_calibration(evidence, labels)
        assert plain.bias is None and fitted.nll < plain.nll

    def test_offsets_let_pristine_photos_be_decided_native(self) -> None:
        # The mixture's evidence for a manipulation is positive on pristine photos too (misread windows add up):
        # with the temperature alone no pristine photo is decided native; the fitted offsets correct for it.
        rng = np.random.default_rng(2)
        n = 200
        labels = np.repeat([0, 1, 2], n)
        evidence = np.zeros((3 * n, 3))
        evidence[:, 1:] = rng.normal(4.0, 1.0, size=(3 * n, 2))  # what pristine photos show
        evidence[labels == 1, 1] += 6.0
        evidence[labels == 2, 2] += 6.0
        plain = fit_calibration(evidence, labels)
        fitted = fit_calibration(evidence, labels, bias=True)
        assert (plain.probabilities(evidence)[labels == 0].argmax(1) == 0).mean() == 0.0
        decided = fitted.probabilities(evidence).argmax(1)
        assert (decided[labels == 0] == 0).mean() > 0.8
        assert (decided == labels).mean() > 0.9

    def test_calibration_rejects_bad_offsets(self, tmp_path) -> None:
        with pytest.raises(InputError, match="bias"):
            Calibration(bias=[0.5, 1.0])
        with pytest.raises(InputError, match="bias"):
            Calibration(bias=[0.0, float("nan")])
        with pytest.raises(InputError, match="3 classes"):
            posterior(np.zeros((2, 2)), 1.0, [0.0, 1.0, 2.0])
        path = save_calibration(tmp_path / "c.json", Calibration(bias=[0.0, -1.0, 2.5]))
        assert load_calibration(path).bias == [0.0, -1.0, 2.5]

    def test_fit_needs_matching_labels(self) -> None:
        with pytest.raises(InputError, match="fit_calibration"):
            fit_calibration(np.zeros((3, 2)), [0, 1])


class TestPhoto:
    def test_analyze_photo(self, tiny_fan_run, photo) -> None:
        analyzer = load_analyzer(tiny_fan_run)
        result = analyze_photo(analyzer, photo)
        assert result.decision in analyzer.classes
        assert result.probabilities.sum() == pytest.approx(1.0)
        assert result.confidence == pytest.approx(result.probabilities.max())
        assert result.pixel_map().shape == (75, 101, 5)
        assert 0.0 <= result.manipulated_fraction <= 1.0
        # float (3, H, W) input is quantized to 8 bits like a shared photo
        again = analyze_photo(analyzer, photo.transpose(2, 0, 1) / 255.0)
        np.testing.assert_allclose(again.window_log_probs, result.window_log_probs, atol=1e-5)

    def test_analyze_file_writes_map_and_overlay(self, tiny_fan_run, photo, tmp_path) -> None:
        from PIL import Image

        source = tmp_path / "shared.jpg"
        Image.fromarray(photo).save(source, quality=80)  # a real libjpeg JPEG
        analyzer = load_analyzer(tiny_fan_run)
        out = tmp_path / "out"
        summary = analyze_file(analyzer, source, out)
        json.dumps(summary)
        assert sorted(p.name for p in out.iterdir()) == ["shared.npz", "shared_overlay.png"]
        with np.load(out / "shared.npz") as data:
            assert list(data["classes"]) == analyzer.classes
            assert data["cells"].shape == (10, 13, 5)
            assert data["window_log_probs"].shape == (8, 11, 5)
            assert data["probabilities"].sum() == pytest.approx(1.0)
            assert summary["confidence"] == pytest.approx(float(data["probabilities"].max()))
        with Image.open(out / "shared_overlay.png") as overlay:
            assert overlay.size[0] == 101 and overlay.size[1] > 75  # the photo plus a legend strip

    def test_unreadable_file_names_it(self, tiny_fan_run, tmp_path) -> None:
        bad = tmp_path / "broken.jpg"
        bad.write_bytes(b"not a jpeg")
        with pytest.raises(InputError, match="broken.jpg"):
            analyze_file(load_analyzer(tiny_fan_run), bad, tmp_path / "out")
        assert not (tmp_path / "out").exists()
