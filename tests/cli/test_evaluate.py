"""``neuralimaging train manipulation`` and ``neuralimaging evaluate`` through the real CLI entry point."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from neuralimaging.cli import main

# The tiny dataset / NIP fixtures live in tests/experiments/conftest.py (helper C's); reuse them here.
_spec = importlib.util.spec_from_file_location("_experiments_conftest", Path(__file__).parents[1] / "experiments" / "conftest.py")
_conftest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_conftest)
tiny_dataset = _conftest.tiny_dataset
tiny_nip_run = _conftest.tiny_nip_run


@pytest.fixture(scope="module")
def cli_run(tiny_dataset, tiny_nip_run, tmp_path_factory):
    runs = tmp_path_factory.mktemp("cli-runs")
    argv = [
        "train", "manipulation", "--data", str(tiny_dataset), "--nip-run", str(tiny_nip_run),
        "--train", "fan", "--lambda-nip", "0.01", "--preset", "quick", "--out", str(runs), "--name", "f",
        "--set", "patch=16", "--set", "batch=4", "--set", "epochs=2", "--set", "validate_every=2",
        "--set", "val_patches=6", "--device", "cpu", "--no-progress",
    ]
    assert main(argv) == 0
    return runs / "f"


def test_train_manipulation_writes_a_run(cli_run, capsys) -> None:
    summary = json.loads((cli_run / "summary.json").read_text())
    assert summary["mode"] == "fan"
    assert summary["steps"] == 2


def test_evaluate_json(cli_run, capsys) -> None:
    capsys.readouterr()
    assert main(["evaluate", str(cli_run), "--codec", "libjpeg", "--quality", "50", "--quality", "90", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["quality"] for r in results] == [50, 90]
    assert all(r["codec"] == "libjpeg" and r["n"] == 30 for r in results)


def test_evaluate_table(cli_run, capsys) -> None:
    capsys.readouterr()
    assert main(["evaluate", str(cli_run)]) == 0
    out = capsys.readouterr().out
    assert "libjpeg" in out and "accuracy" in out


def test_evaluate_missing_run_is_one_line_error(tmp_path, capsys) -> None:
    assert main(["evaluate", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("neuralimaging evaluate: error:")


def test_evaluate_bad_quality(cli_run, capsys) -> None:
    assert main(["evaluate", str(cli_run), "--quality", "101"]) == 2
    assert "quality" in capsys.readouterr().err
