"""The shared run cycle: resume rule, max_steps stop and resume, checkpoint content, settings, old names."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
import torch.nn as nn

from neuralimaging.errors import InputError
from neuralimaging.experiments.loop import TrainingRun, resolve_settings, run_hash, translate_config
from neuralimaging.experiments.rundir import RunDir, config_hash

CONFIG = {"lr": 0.05, "epochs": 6, "validate_every": 2, "checkpoint_every": None, "max_steps": None, "seed": 3}


def toy_run(out_dir, config=CONFIG, *, resume=False, stop=None) -> dict:
    """A tiny trainer on the cycle: a linear model fitted to a fixed target on random batches (numpy RNG)."""
    cycle = TrainingRun(out_dir, config, resume=resume)
    torch.manual_seed(config["seed"])
    model = nn.Linear(3, 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=config["lr"])
    rng = np.random.default_rng(config["seed"])
    losses: list[float] = []
    state = cycle.begin({"net": model}, {"net": optimizer}, {"batches": rng}, steps_per_epoch=2)
    if state is not None:
        losses = list(state["losses"])
    else:
        cycle.record(config["lr"], {"val": 1.0})

    def step(done: int) -> dict[str, float]:
        x = torch.from_numpy(rng.normal(size=(4, 3)).astype(np.float32))
        noise = torch.randn(4, 1)  # torch's global RNG: restored from the checkpoint too
        loss = ((model(x) - x.sum(1, keepdim=True) - 0.1 * noise) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        return {"loss": losses[-1]}

    def end_of_epoch(epoch: int) -> str | None:
        if cycle.validation_due(epoch):
            cycle.record(config["lr"], {"val": float(np.mean(losses[-2:]))})
        return stop(epoch) if stop else None

    return cycle.loop(step, end_of_epoch=end_of_epoch, summarize=lambda stopped: {"last_loss": losses[-1]},
                      extras=lambda: {"losses": losses}, progress=False)


def _without_times(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("wall_time_s", "cpu_time_s")} for r in records]


class TestRunCycle:
    def test_an_uninterrupted_run(self, tmp_path) -> None:
        summary = toy_run(tmp_path / "run")
        run = RunDir(tmp_path / "run")
        assert run.read_summary() == summary
        assert (summary["steps"], summary["epochs"], summary["stopped"]) == (12, 6, "max_epochs")
        for key in ("wall_time_s", "cpu_time_s", "threads"):
            assert summary[key] >= 0
        assert summary["config_hash"] == run_hash(CONFIG) == config_hash({k: v for k, v in CONFIG.items()
                                                                            if k != "max_steps"})
        records = run.read_metrics()
        assert [(r["step"], r["epoch"]) for r in records] == [(0, 0), (4, 2), (8, 4), (12, 6)]
        assert list(records[1])[:5] == ["step", "epoch", "lr", "wall_time_s", "cpu_time_s"]

    def test_max_steps_stops_without_a_summary_and_the_resumed_run_equals_an_uninterrupted_one(self, tmp_path) -> None:
        full = toy_run(tmp_path / "full")
        stopped = toy_run(tmp_path / "killed", {**CONFIG, "max_steps": 5})  # mid-epoch, between validations
        assert (stopped["stopped"], stopped["steps"], stopped["epochs"]) == ("max_steps", 5, 2)
        assert not (tmp_path / "killed" / "summary.json").exists()
        again = toy_run(tmp_path / "killed", {**CONFIG, "max_steps": 5}, resume=True)  # the same budget: no step
        assert (again["stopped"], again["steps"]) == ("max_steps", 5)
        resumed = toy_run(tmp_path / "killed", resume=True)
        assert resumed["last_loss"] == full["last_loss"] and resumed["steps"] == 12
        a, b = RunDir(tmp_path / "full"), RunDir(tmp_path / "killed")
        for key, value in a.load_weights("net").items():
            assert torch.equal(b.load_weights("net")[key], value)
        assert _without_times(b.read_metrics()) == _without_times(a.read_metrics())
        assert resumed["wall_time_s"] >= stopped["wall_time_s"]  # summed over the calls
        # a finished run returns its summary without training
        assert toy_run(tmp_path / "killed", resume=True) == b.read_summary()

    def test_checkpoint_content(self, tmp_path) -> None:
        toy_run(tmp_path / "run", {**CONFIG, "max_steps": 3})
        state = RunDir(tmp_path / "run").load_checkpoint({"net": nn.Linear(3, 1)})
        assert (state["step"], state["epoch"], state["stopped"]) == (3, 1, "max_steps")
        assert state["config_hash"] == run_hash(CONFIG)
        assert state["wall_time_s"] > 0 and state["cpu_time_s"] >= 0
        assert len(state["losses"]) == 3 and "rng.torch" in state and "rng.np.batches" in state

    def test_checkpoint_every_counts_epochs_or_follows_validations(self, tmp_path) -> None:
        toy_run(tmp_path / "a", {**CONFIG, "max_steps": 9})
        assert RunDir(tmp_path / "a").checkpoint_id()["step"] == 9
        steps = sorted(p.name for p in RunDir(tmp_path / "a").checkpoints.glob("step-*"))
        assert steps == ["step-000000008", "step-000000009"]  # after the validation at epoch 4, then the stop
        run = RunDir(tmp_path / "b", keep=10)
        toy_run(run.path, {**CONFIG, "checkpoint_every": 3})
        assert sorted(p.name for p in run.checkpoints.glob("step-*"))[0] == "step-000000006"  # epoch 3

    def test_a_hook_stops_the_run(self, tmp_path) -> None:
        summary = toy_run(tmp_path / "run", stop=lambda epoch: "converged" if epoch == 3 else None)
        assert (summary["stopped"], summary["epochs"]) == ("converged", 3)
        assert RunDir(tmp_path / "run").read_summary()["stopped"] == "converged"


class TestResumeRule:
    def test_another_config_is_refused_with_the_keys_and_hashes(self, tmp_path) -> None:
        toy_run(tmp_path / "run", {**CONFIG, "max_steps": 2})
        with pytest.raises(InputError, match=r"cannot resume with a different config \(changed: lr; hash \w{12} != "):
            toy_run(tmp_path / "run", {**CONFIG, "lr": 0.5}, resume=True)
        with pytest.raises(InputError, match="already holds a run; pass resume=True"):
            toy_run(tmp_path / "run")

    def test_a_stored_config_with_earlier_names_resumes(self, tmp_path, caplog) -> None:
        toy_run(tmp_path / "run", {**CONFIG, "max_steps": 2})
        run = RunDir(tmp_path / "run")
        stored = run.read_config()
        old = {("max_epochs" if k == "epochs" else "val_every" if k == "validate_every" else k): v
               for k, v in stored.items() if k != "checkpoint_every"}
        run.write_config({**old, "checkpoint_every": 1})  # counted validations: 1 is "at every validation"
        with caplog.at_level(logging.WARNING, logger="neuralimaging.experiments.loop"):
            assert toy_run(run.path, resume=True)["steps"] == 12
        assert "max_epochs -> epochs" in caplog.text


class TestTranslateConfig:
    def test_names_and_values(self, caplog) -> None:
        with caplog.at_level(logging.WARNING, logger="neuralimaging.experiments.loop"):
            out = translate_config({"max_epochs": 10, "val_every": 5, "amp": None, "checkpoint_every": 2, "lr": 1})
        assert out == {"epochs": 10, "validate_every": 5, "precision": "fp32", "checkpoint_every": 10, "lr": 1}
        assert "val_every -> validate_every" in caplog.text and "checkpoint_every 2 (validations) -> 10" in caplog.text
        assert translate_config({"amp": "bf16"})["precision"] == "bf16"
        assert translate_config({"val_every": 4, "checkpoint_every": 1})["checkpoint_every"] is None
        assert translate_config({"max_epochs": 4, "checkpoint_every": 3}, base={"validate_every": 7})["checkpoint_every"] == 21

    def test_current_names_pass_unchanged_and_silently(self, caplog) -> None:
        config = {"epochs": 3, "validate_every": 1, "checkpoint_every": 5, "precision": "auto"}
        with caplog.at_level(logging.WARNING):
            assert translate_config(config) == config
        assert not caplog.records

    def test_both_names_are_refused(self) -> None:
        with pytest.raises(InputError, match="config gives both 'max_epochs' and 'epochs'"):
            translate_config({"max_epochs": 3, "epochs": 4})


class TestResolveSettings:
    DEFAULTS = {"nip": "inet", "lr": 1.0, "epochs": 10, "validate_every": 5, "opts": {"a": 1, "b": 2}}
    PRESETS = {"paper": {}, "fast": {"lr": 2.0, "opts": {"a": 3}, "by_nip": {"unet": {"lr": 4.0, "epochs": 7}}}}

    def test_layers_in_order(self) -> None:
        kwargs = {"nip": lambda c: c["nip"], "nested": frozenset({"opts"})}
        assert resolve_settings({}, self.DEFAULTS, self.PRESETS, **kwargs) == {**self.DEFAULTS, "preset": "paper"}
        fast = resolve_settings({"preset": "fast"}, self.DEFAULTS, self.PRESETS, **kwargs)
        assert (fast["lr"], fast["opts"]) == (2.0, {"a": 3, "b": 2})  # nested: merged key by key
        unet = resolve_settings({"nip": "UNet", "lr": 5.0}, self.DEFAULTS, self.PRESETS, preset="fast", **kwargs)
        assert (unet["lr"], unet["epochs"]) == (5.0, 7)  # user > by_nip > preset > defaults
        replaced = resolve_settings({"opts": {"b": 0}}, self.DEFAULTS, self.PRESETS, preset="fast")
        assert replaced["opts"] == {"b": 0}

    def test_none_values_and_earlier_names(self) -> None:
        kept = resolve_settings({"lr": None}, self.DEFAULTS, self.PRESETS)
        dropped = resolve_settings({"lr": None, "max_epochs": 3}, self.DEFAULTS, self.PRESETS, keep_none=False)
        assert kept["lr"] is None and dropped["lr"] == 1.0 and dropped["epochs"] == 3

    @pytest.mark.parametrize("config, preset, match", [
        ({"colour": 1}, None, "unknown config keys: colour; expected some of: nip, lr"),
        ({}, "slow", "unknown preset 'slow'; expected one of: paper, fast"),
    ])
    def test_refusals(self, config, preset, match) -> None:
        with pytest.raises(InputError, match=match):
            resolve_settings(config, self.DEFAULTS, self.PRESETS, preset=preset)
