"""The demo end to end on a tiny scale: virtual camera -> dataset -> sweep (pre-training, F, F+N) -> report."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from neuralimaging.cli import main
from neuralimaging.experiments.demo import SUMMARY, demo_sweep_path, run_demo, summarize
from neuralimaging.experiments.sweep import load_sweep

TINY = Path(__file__).resolve().parents[2] / "examples" / "sweeps" / "tiny.yaml"


def test_packaged_demo_sweep_is_the_shipped_nip_then_f_and_fn(tmp_path) -> None:
    sweep = load_sweep(demo_sweep_path(), runs_dir=tmp_path / "runs")
    names = [run.name for run in sweep.runs]
    assert names[0] == "pretrain/nikon-d90/dnet/000" and sweep.runs[0].config["preset"] == "shipped"
    assert sum("/F/" in n for n in names) == 1 and sum("/FN/" in n for n in names) == 1
    assert all(run.config["preset"] == "demo" for run in sweep.runs[1:])


@pytest.fixture(scope="module")
def tiny_demo(tmp_path_factory, photo_paths):
    out = tmp_path_factory.mktemp("demo")
    photos = out / "photos"
    photos.mkdir()
    for path in photo_paths[:3]:  # three scenes: one for each of training, validation and test
        (photos / path.name).write_bytes(path.read_bytes())
    lines: list[str] = []
    summary = run_demo(
        out, photos=str(photos), device="cpu", sweep_file=TINY, shots_per_photo=2, size=(96, 128), log=lines.append
    )
    return out, summary, lines


def test_tiny_demo_runs_end_to_end(tiny_demo) -> None:
    out, summary, lines = tiny_demo
    assert summary["shots"] == 6 and len(list((out / "raw").glob("*.dng"))) == 6
    assert summary["failed"] == [] and summary["split"] == "test"
    assert summary["dataset"]["train"] == summary["dataset"]["val"] == summary["dataset"]["test"] == 2
    assert summary["fidelity"].startswith("whole developed images, 8-pixel border excluded")
    nip = summary["nip"]
    assert nip["name"] == "inet" and math.isfinite(nip["psnr_db"]) and nip["patch"].startswith("whole images")
    assert {entry["mode"] for entry in summary["runs"]} == {"F", "F+N"} and summary["repetitions"] == 2
    groups = {(g["mode"], g["lambda_nip"]): g for g in summary["groups"]}
    assert sorted(groups, key=str) == [("F", None), ("F+N", 0.01), ("F+N", 0.1)]
    runs = [e["accuracy"] for e in summary["runs"] if e["mode"] == "F+N" and e["lambda_nip"] == 0.1]
    assert groups[("F+N", 0.1)]["accuracy_mean"] == sum(runs) / 2 and groups[("F", None)]["repetitions"] == 2
    for mode in ("F", "F+N"):
        entry = summary[mode]
        assert 0.0 <= entry["accuracy"] <= 1.0 and 0.0 <= entry["accuracy_libjpeg"] <= 1.0
        assert entry["quality"] == 50 and math.isfinite(entry["psnr_db"]) and 0 < entry["ssim"] <= 1
    assert summary["F"]["psnr_db"] == nip["psnr_db"]  # F leaves the NIP as it was
    assert summary["F+N"]["psnr_paid_db"] == nip["psnr_db"] - summary["F+N"]["psnr_db"]
    assert summary["F+N"]["lambda_nip"] == 0.01
    assert json.loads((out / SUMMARY).read_text())["F+N"] == summary["F+N"]
    page = Path(summary["report"]).read_text()
    assert "<img" in page and "<h2>Test split</h2>" in page and "8-pixel border excluded" in page
    assert any(line.startswith("5/5") for line in lines)
    started = [line for line in lines if ": started (" in line]  # each run announced before it trains
    assert len(started) == 7 and any("pre-trained NIP" in line for line in started)
    again = summarize(out / "runs")
    assert {k: again[k] for k in ("nip", "F", "F+N")} == {k: summary[k] for k in ("nip", "F", "F+N")}


def test_rerun_resumes_without_training_again(tiny_demo) -> None:
    out, summary, _ = tiny_demo
    lines: list[str] = []
    again = run_demo(out, photos=str(out / "photos"), device="cpu", sweep_file=TINY, shots_per_photo=2,
                     size=(96, 128), log=lines.append)
    assert [e["accuracy"] for e in again["runs"]] == [e["accuracy"] for e in summary["runs"]]
    outcomes = [line for line in lines if line.startswith("    run ")]
    assert len(outcomes) == 7 and all(line.endswith(": skipped") for line in outcomes)


def test_demo_command_help_lists_outputs(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    assert "--out" in capsys.readouterr().out
