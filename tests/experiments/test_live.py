"""Live progress: ``progress.json`` (throttled steps, validations at once) and TensorBoard event logs, from a
bare :class:`LiveLog` and from the trainers' runs of ``tiny_sweep_runs``."""

from __future__ import annotations

import json
import sys

import pytest

from neuralimaging.experiments import live
from neuralimaging.experiments.live import LiveLog, read_progress
from neuralimaging.experiments.rundir import RunDir


def test_steps_are_throttled_validations_written_at_once(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(live, "WRITE_EVERY_S", 3600.0)
    log = LiveLog(tmp_path, total=10, tensorboard=False)
    log.step(1, loss=2.5, note="text")  # the first step is written; strings are left out
    assert read_progress(tmp_path) | {"updated": 0} == {"step": 1, "total": 10, "values": {"loss": 2.5},
                                                         "metrics": {}, "updated": 0}
    log.step(2, loss=2.0)  # within the interval: not written
    assert read_progress(tmp_path)["step"] == 1
    log.validation(2, {"accuracy": 0.5, "psnr": float("nan"), "per_class": [0.1], "step": 2})
    progress = read_progress(tmp_path)
    assert progress["step"] == 2 and progress["metrics"] == {"accuracy": 0.5}
    log.close()
    # a resumed call keeps the last validation's metrics until it validates again
    assert LiveLog(tmp_path, total=10, tensorboard=False)._state["metrics"] == {"accuracy": 0.5}


def test_without_tensorboard_nothing_fails(tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if tensorboard were not installed
    log = LiveLog(tmp_path, total=4)
    assert log.writer is None
    log.validation(4, {"accuracy": 1.0})
    log.close()
    assert not (tmp_path / live.TENSORBOARD_DIR).exists()
    assert read_progress(tmp_path)["metrics"] == {"accuracy": 1.0}


def test_unreadable_progress_is_none(tmp_path) -> None:
    assert read_progress(tmp_path) is None
    (tmp_path / live.PROGRESS_FILE).write_text('{"step": ')
    assert read_progress(tmp_path) is None


def test_joint_runs_log_their_validations_to_tensorboard(tiny_sweep_runs) -> None:
    """``train_manipulation`` writes every validation of ``metrics.jsonl`` as TensorBoard scalars, and its
    ``progress.json`` ends at the last step."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = RunDir(tiny_sweep_runs / "joint/tiny/inet/FN/ln-0.0100/000")
    events = EventAccumulator(str(run.path / live.TENSORBOARD_DIR)).Reload()
    assert {"accuracy", "psnr", "train_loss"} <= set(events.Tags()["scalars"])
    logged = {e.step: e.value for e in events.Scalars("accuracy")}
    recorded = {r["step"]: r["accuracy"] for r in run.read_metrics() if r.get("accuracy") is not None}
    assert logged and set(logged) == set(recorded)
    assert all(abs(logged[s] - recorded[s]) < 1e-6 for s in logged)
    progress = json.loads((run.path / live.PROGRESS_FILE).read_text())
    assert progress["step"] == progress["total"] == run.read_summary()["steps"]
