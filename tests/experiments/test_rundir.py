"""Run directories: config/metrics/summary round trips, atomic checkpoints that resume exactly."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn as nn

from neuralimaging.errors import InputError
from neuralimaging.experiments.rundir import RunDir, capture_rng_state, config_hash, restore_rng_state


def _model() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1))


class TestConfig:
    def test_roundtrip(self, tmp_path):
        run = RunDir(tmp_path / "run")
        config = {"nip": "unet", "lr": 1e-4, "betas": (0.9, 0.999), "nested": {"a": [1, 2]}, "none": None}
        run.write_config(config)
        back = run.read_config()
        assert back == {**config, "betas": [0.9, 0.999]}
        assert run.config_hash == config_hash(config)

    def test_hash_is_stable_and_sensitive(self):
        assert config_hash({"a": 1, "b": 2}) == config_hash({"b": 2, "a": 1})
        assert config_hash({"a": 1}) != config_hash({"a": 2})
        assert len(config_hash({})) == 12

    def test_missing_config_is_input_error(self, tmp_path):
        with pytest.raises(InputError, match="not a run directory"):
            RunDir(tmp_path).read_config()


class TestMetrics:
    def test_append_read_truncate(self, tmp_path):
        run = RunDir(tmp_path)
        assert run.read_metrics() == []
        for step in (10, 20, 30):
            run.append_metrics({"step": step, "psnr": np.float32(30.5) + step, "loss": torch.tensor(1.5)})
        records = run.read_metrics()
        assert [r["step"] for r in records] == [10, 20, 30]
        assert records[0]["psnr"] == pytest.approx(40.5) and records[0]["loss"] == 1.5
        run.truncate_metrics("step", 20)
        assert [r["step"] for r in run.read_metrics()] == [10, 20]

    def test_summary(self, tmp_path):
        run = RunDir(tmp_path)
        with pytest.raises(InputError):
            run.read_summary()
        run.write_summary({"psnr": 40.0, "confusion": [[1, 0], [0, 1]]})
        assert run.read_summary()["confusion"] == [[1, 0], [0, 1]]
        assert json.loads(run.summary_path.read_text())["psnr"] == 40.0
        assert run.figures.is_dir()


def _train(model, optimizer, gen, steps):
    for _ in range(steps):
        x = torch.rand(4, 3, 8, 8, generator=gen)
        y = torch.randn(4, 2, 6, 6) + x.mean()  # draws from the global torch RNG too
        optimizer.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        optimizer.step()


class TestCheckpoint:
    def test_resume_equals_uninterrupted(self, tmp_path):
        torch.manual_seed(1)
        reference = _model()
        initial = {k: v.clone() for k, v in reference.state_dict().items()}
        opt = torch.optim.Adam(reference.parameters(), lr=1e-2)
        gen = torch.Generator().manual_seed(5)
        np_rng = np.random.default_rng(3)
        torch.manual_seed(2)
        _train(reference, opt, gen, 3)
        run = RunDir(tmp_path)
        run.save_checkpoint({"net": reference}, {"net": opt},
                            {"step": 3, "history": [1.0, 0.5], **capture_rng_state({"g": gen, "np": np_rng})})
        draw = np_rng.random()
        _train(reference, opt, gen, 3)

        resumed = _model()
        resumed.load_state_dict(initial)
        opt2 = torch.optim.Adam(resumed.parameters(), lr=1e-2)
        gen2 = torch.Generator().manual_seed(99)
        np_rng2 = np.random.default_rng(0)
        torch.manual_seed(123)
        state = run.load_checkpoint({"net": resumed}, {"net": opt2})
        restore_rng_state(state, {"g": gen2, "np": np_rng2})
        assert state["step"] == 3 and state["history"] == [1.0, 0.5]
        assert np_rng2.random() == draw
        _train(resumed, opt2, gen2, 3)
        for key, value in reference.state_dict().items():
            torch.testing.assert_close(resumed.state_dict()[key], value, rtol=0, atol=0)

    def test_only_safetensors_and_json(self, tmp_path):
        run = RunDir(tmp_path)
        model = _model()
        opt = torch.optim.Adam(model.parameters())
        _train(model, opt, torch.Generator().manual_seed(0), 1)
        folder = run.save_checkpoint({"net": model}, {"net": opt}, {"step": 1})
        assert {p.suffix for p in folder.iterdir()} == {".safetensors", ".json"}

    def test_keeps_latest_and_ignores_incomplete(self, tmp_path):
        run = RunDir(tmp_path, keep=2)
        assert not run.has_checkpoint()
        with pytest.raises(InputError, match="no checkpoint"):
            run.load_checkpoint({})
        model = _model()
        for step in (1, 2, 3):
            with torch.no_grad():
                model[0].bias.fill_(step)
            run.save_checkpoint({"net": model}, state={"step": step})
        assert sorted(p.name for p in run.checkpoints.glob("step-*")) == ["step-000000002", "step-000000003"]
        (run.checkpoints / ".step-000000004.partial").mkdir()  # a save killed half-way
        fresh = _model()
        assert run.load_checkpoint({"net": fresh})["step"] == 3
        assert torch.all(fresh[0].bias == 3)
        assert torch.all(run.load_weights("net")["0.bias"] == 3)
        with pytest.raises(InputError, match="no weights"):
            run.load_checkpoint({"other": fresh})
