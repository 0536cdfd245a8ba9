"""The demo end to end on a tiny scale: virtual camera -> dataset -> sweep (pre-training, F, F+N) -> report."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from neuralimaging.cli import main
from neuralimaging.experiments.demo import demo_sweep_path, run_demo, summarize
from neuralimaging.experiments.sweep import load_sweep

TINY = Path(__file__).resolve().parents[2] / "examples" / "sweeps" / "tiny.yaml"


def test_packaged_demo_sweep_is_pretraining_then_f_and_fn(tmp_path) -> None:
    sweep = load_sweep(demo_sweep_path(), runs_dir=tmp_path / "runs")
    names = [run.name for run in sweep.runs]
    assert names[0].startswith("pretrain/")
    assert sum("/F/" in n for n in names) == 1 and sum("/FN/" in n for n in names) >= 1


@pytest.fixture(scope="module")
def tiny_demo(tmp_path_factory, photo_paths):
    out = tmp_path_factory.mktemp("demo")
    photos = out / "photos"
    photos.mkdir()
    for path in photo_paths[:2]:
        (photos / path.name).write_bytes(path.read_bytes())
    lines: list[str] = []
    summary = run_demo(
        out, photos=str(photos), device="cpu", sweep_file=TINY, shots_per_photo=2, size=(96, 128), log=lines.append
    )
    return out, summary, lines


def test_tiny_demo_runs_end_to_end(tiny_demo) -> None:
    out, summary, lines = tiny_demo
    assert summary["shots"] == 4 and len(list((out / "raw").glob("*.dng"))) == 4
    assert summary["failed"] == []
    assert len(summary["pretrain"]) == 1 and math.isfinite(summary["pretrain"][0]["psnr"])
    modes = {entry["mode"] for entry in summary["joint"]}
    assert modes == {"F", "F+N"}
    assert all(0.0 <= entry["accuracy"] <= 1.0 for entry in summary["joint"])
    assert Path(summary["report"]).is_file() and "<img" in Path(summary["report"]).read_text()
    assert any(line.startswith("4/4") for line in lines)
    started = [line for line in lines if ": started (" in line]  # each run announced before it trains
    assert len(started) == 7 and any("NIP pre-training" in line for line in started)
    assert summarize(out / "runs") == {k: summary[k] for k in ("pretrain", "joint", "failed")}


def test_rerun_resumes_without_training_again(tiny_demo) -> None:
    out, summary, _ = tiny_demo
    lines: list[str] = []
    again = run_demo(out, photos=str(out / "photos"), device="cpu", sweep_file=TINY, shots_per_photo=2,
                     size=(96, 128), log=lines.append)
    assert [e["accuracy"] for e in again["joint"]] == [e["accuracy"] for e in summary["joint"]]
    outcomes = [line for line in lines if line.startswith("    run ")]
    assert len(outcomes) == 7 and all(line.endswith(": skipped") for line in outcomes)


def test_demo_command_help_lists_outputs(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    assert "--out" in capsys.readouterr().out
