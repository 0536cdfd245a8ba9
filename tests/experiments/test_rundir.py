"""Run directories: config/metrics/summary round trips, atomic checkpoints that resume exactly, damaged files
found and recovered from, file modes."""

from __future__ import annotations

import json
import os
import shutil
import stat

import numpy as np
import pytest
import torch
import torch.nn as nn

from neuralimaging.errors import InputError
from neuralimaging.experiments.rundir import (
    CheckpointWarning,
    RunDir,
    capture_rng_state,
    config_hash,
    restore_rng_state,
)


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


def _two_checkpoints(path, keep: int = 2) -> RunDir:
    """A run with checkpoints at steps 1 and 2 of a model whose first bias holds the step."""
    run = RunDir(path, keep=keep)
    model = _model()
    for step in (1, 2):
        with torch.no_grad():
            model[0].bias.fill_(step)
        run.save_checkpoint({"net": model}, state={"step": step})
    return run


def _truncate(file, keep: float = 0.5) -> None:
    data = file.read_bytes()
    file.write_bytes(data[: int(len(data) * keep)])


class TestDamagedCheckpoints:
    """A damaged newest checkpoint falls back to the previous one (with a warning), never to a restart."""

    @pytest.mark.parametrize("damage", ["truncated weights", "half-written state.json", "flipped byte", "legacy"])
    def test_damaged_newest_falls_back_to_the_previous(self, tmp_path, damage):
        run = _two_checkpoints(tmp_path / "run")
        newest = run.checkpoints / "step-000000002"
        if damage == "truncated weights":
            _truncate(newest / "net.safetensors")
        elif damage == "half-written state.json":
            _truncate(newest / "state.json")
        elif damage == "flipped byte":  # same size: only the checksum finds it
            data = bytearray((newest / "net.safetensors").read_bytes())
            data[-1] ^= 0xFF
            (newest / "net.safetensors").write_bytes(bytes(data))
        else:  # a checkpoint written before manifests existed: its parser finds the damage
            (newest / "manifest.json").unlink()
            _truncate(newest / "net.safetensors")
        fresh = _model()
        with pytest.warns(CheckpointWarning, match="step-000000002.*using step-000000001"):
            state = run.load_checkpoint({"net": fresh})
        assert state["step"] == 1 and torch.all(fresh[0].bias == 1)
        with pytest.warns(CheckpointWarning):
            assert torch.all(run.load_weights("net")["0.bias"] == 1)

    def test_latest_naming_a_missing_step_falls_back(self, tmp_path):
        run = _two_checkpoints(tmp_path / "run")
        shutil.rmtree(run.checkpoints / "step-000000002")
        assert run.has_checkpoint()  # so a trainer resumes instead of starting over
        with pytest.warns(CheckpointWarning, match="LATEST names step-000000002, which is missing"):
            assert run.load_checkpoint({"net": _model()})["step"] == 1

    def test_latest_pointing_at_another_runs_checkpoint_is_ignored(self, tmp_path):
        own = _two_checkpoints(tmp_path / "own")
        other = RunDir(tmp_path / "other")
        model = _model()
        with torch.no_grad():
            model[0].bias.fill_(99)
        other.save_checkpoint({"net": model}, state={"step": 99})
        (own.checkpoints / "LATEST").write_text("../../other/checkpoints/step-000000099\n")
        fresh = _model()
        with pytest.warns(CheckpointWarning, match="not a checkpoint folder of this run"):
            assert own.load_checkpoint({"net": fresh})["step"] == 2
        assert torch.all(fresh[0].bias == 2)

    def test_no_intact_checkpoint_is_refused(self, tmp_path):
        run = _two_checkpoints(tmp_path / "run")
        for folder in run.checkpoints.glob("step-*"):
            _truncate(folder / "net.safetensors")
        assert run.has_checkpoint() and run.latest_checkpoint() is None
        with pytest.raises(InputError, match="no intact checkpoint .*step-000000002: net.safetensors has"):
            run.load_checkpoint({"net": _model()})
        assert len(list(run.checkpoints.glob("step-*"))) == 2  # nothing deleted

    def test_manifest_lists_every_file(self, tmp_path):
        run = _two_checkpoints(tmp_path / "run")
        folder = run.latest_checkpoint()
        listing = json.loads((folder / "manifest.json").read_text())["files"]
        assert set(listing) == {p.name for p in folder.iterdir()} - {"manifest.json"}
        assert all(listing[name]["size"] == (folder / name).stat().st_size for name in listing)


class TestTornFiles:
    def test_torn_metrics_tail_is_dropped_and_truncated(self, tmp_path):
        run = RunDir(tmp_path)
        for step in (10, 20):
            run.append_metrics({"step": step, "psnr": 30.0 + step})
        with open(run.metrics_path, "a") as handle:
            handle.write('{"step": 30, "ps')  # the last line, half written
        assert [r["step"] for r in run.read_metrics()] == [10, 20]
        run.append_metrics({"step": 30, "psnr": 60.0})
        assert [r["step"] for r in run.read_metrics()] == [10, 20, 30]
        with open(run.metrics_path, "a") as handle:
            handle.write('{"step": 40')
        run.truncate_metrics("step", 20)
        assert run.metrics_path.read_text().splitlines() == [json.dumps(r) for r in run.read_metrics()]
        assert [r["step"] for r in run.read_metrics()] == [10, 20]

    def test_damaged_line_before_the_last_names_the_file(self, tmp_path):
        run = RunDir(tmp_path)
        run.metrics_path.write_text('{"step": 1}\nnot json\n{"step": 2}\n')
        with pytest.raises(InputError, match=r"metrics.jsonl: line 2 is not a JSON object"):
            run.read_metrics()

    @pytest.mark.parametrize("text", ['{"psnr": 4', "[1, 2]", "\x00\x01"])
    def test_damaged_summary_is_an_input_error(self, tmp_path, text):
        run = RunDir(tmp_path)
        run.summary_path.write_text(text)
        with pytest.raises(InputError, match="summary.json: damaged"):
            run.read_summary()


class TestPermissions:
    """Run files get the mode the umask gives (colleagues on a shared disk can read them), not 0600/0700."""

    @pytest.mark.parametrize("mask", [0o022, 0o077])
    def test_modes_follow_the_umask(self, tmp_path, mask):
        old = os.umask(mask)
        try:
            run = RunDir(tmp_path / "run")
            run.write_config({"a": 1})
            run.append_metrics({"step": 1})
            folder = run.save_checkpoint({"net": _model()}, state={"step": 1})
        finally:
            os.umask(old)
        for file in (run.config_path, run.metrics_path, folder / "net.safetensors", run.checkpoints / "LATEST"):
            assert stat.S_IMODE(file.stat().st_mode) == 0o666 & ~mask, file
        assert stat.S_IMODE(folder.stat().st_mode) == 0o777 & ~mask
