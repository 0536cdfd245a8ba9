"""``neuralimaging analyze`` through the real CLI entry point, on real JPEGs and a real (tiny) run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from neuralimaging.cli import main


@pytest.fixture(scope="module")
def run_dir(tiny_dataset, tiny_nip_run, tmp_path_factory):
    runs = tmp_path_factory.mktemp("analyze-runs")
    argv = [
        "train", "manipulation", "--data", str(tiny_dataset), "--nip-run", str(tiny_nip_run),
        "--train", "fan", "--preset", "quick", "--out", str(runs), "--name", "f",
        "--set", "patch=16", "--set", "batch=4", "--set", "epochs=2", "--set", "validate_every=2",
        "--set", "val_patches=4", "--device", "cpu", "--no-progress",
    ]
    assert main(argv) == 0
    return runs / "f"


@pytest.fixture
def jpegs(photos, tmp_path) -> list[Path]:
    """Two photos saved by libjpeg (Pillow) at different sizes and qualities, and a folder holding one."""
    folder = tmp_path / "in"
    folder.mkdir()
    first = folder / "a.jpg"
    Image.fromarray(photos[1][:90, :120]).save(first, quality=90)
    second = tmp_path / "b.jpeg"
    Image.fromarray(photos[2][:64, :200]).save(second, quality=50)
    return [first, second]


def test_json_lines_and_outputs(run_dir, jpegs, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    capsys.readouterr()
    assert main(["analyze", str(jpegs[0].parent), str(jpegs[1]), "--model", str(run_dir), "--out", str(out), "--json",
                 "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    results = [json.loads(line) for line in lines]
    assert [Path(r["photo"]).name for r in results] == ["a.jpg", "b.jpeg"]
    for result in results:
        assert result["decision"] in result["probabilities"]
        assert result["confidence"] == pytest.approx(max(result["probabilities"].values()))
        assert sum(result["probabilities"].values()) == pytest.approx(1.0)
        assert (result["patch"], result["stride"]) == (16, 8)
    assert results[1]["size"] == [64, 200]
    assert sorted(p.name for p in out.iterdir()) == ["a.npz", "a_overlay.png", "b.npz", "b_overlay.png"]


def test_bad_files_are_named_and_skipped(run_dir, jpegs, tmp_path, capsys) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 truncated")
    tiny = tmp_path / "tiny.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tiny)
    out = tmp_path / "out"
    capsys.readouterr()
    code = main(["analyze", str(broken), str(jpegs[1]), str(tmp_path / "missing.jpg"), str(tiny),
                 "--model", str(run_dir), "--out", str(out), "--no-overlay", "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 1
    assert "b.jpeg" in captured.out and "decision" in captured.out
    assert "3 of 4 photos failed" in captured.err
    for name in ("broken.jpg", "missing.jpg", "tiny.png"):
        assert name in captured.err
    assert sorted(p.name for p in out.iterdir()) == ["b.npz"]


def test_calibrate_then_use_it(run_dir, jpegs, tmp_path, capsys) -> None:
    cal = tmp_path / "cal"
    assert main(["analyze", "--calibrate", "--model", str(run_dir), "--out", str(cal), "--device", "cpu"]) == 0
    data = json.loads((cal / "calibration.json").read_text())
    assert data["temperature"] > 0 and "train split" in data["fitted"]
    assert len(data["bias"]) == 5 and data["bias"][0] == 0.0
    assert [p.name for p in cal.iterdir()] == ["calibration.json"]
    capsys.readouterr()
    assert main(["analyze", str(jpegs[1]), "--model", str(run_dir), "--out", str(tmp_path / "out"), "--json",
                 "--calibration", str(cal / "calibration.json"), "--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out)["calibration"] == data["fitted"]


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--stride", "12"], "stride must be a multiple of 8"),
        (["--batch", "0"], "--batch"),
        (["--calibration", "nope.json"], "nope.json"),
    ],
)
def test_usage_errors_are_one_line(run_dir, jpegs, tmp_path, capsys, extra, message) -> None:
    code = main(["analyze", str(jpegs[1]), "--model", str(run_dir), "--out", str(tmp_path / "out"), *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("neuralimaging analyze: error:") and message in err[0]
    assert not (tmp_path / "out").exists()


def test_missing_run(tmp_path, jpegs, capsys) -> None:
    assert main(["analyze", str(jpegs[1]), "--model", str(tmp_path / "no-run"), "--out", str(tmp_path / "o")]) == 2
    assert "not a run directory" in capsys.readouterr().err
