"""``neuralimaging train manipulation`` and ``neuralimaging evaluate`` through the real CLI entry point."""

from __future__ import annotations

import json

import pytest

from neuralimaging.cli import main


@pytest.fixture(scope="module")
def cli_run(tiny_dataset, tiny_nip_run, tmp_path_factory):
    runs = tmp_path_factory.mktemp("cli-runs")
    argv = [
        "train", "manipulation", "--data", str(tiny_dataset), "--nip-run", str(tiny_nip_run),
        "--train", "fan", "--lambda-nip", "0.01", "--preset", "quick", "--out", str(runs), "--name", "f",
        "--set", "patch=16", "--set", "batch=4", "--epochs", "2", "--set", "validate_every=2",
        "--set", "val_patches=6", "--device", "cpu", "--no-progress",
    ]
    assert main([*argv, "--max-steps", "1"]) == 0  # stopped, resumable
    assert not (runs / "f" / "summary.json").exists()
    assert main([*argv, "--resume"]) == 0
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


def _one_line_error(capsys, command: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"neuralimaging {command}: error: "), err
    return err[0]


def test_unfinished_nip_run_is_refused_unless_allowed(tiny_dataset, tmp_path, capsys) -> None:
    from neuralimaging.experiments.train_nip import train_nip

    nip = tmp_path / "nip"
    train_nip({"nip": "inet", "data": str(tiny_dataset), "batch": 4, "patch": 16, "epochs": 4, "validate_every": 2,
               "val_images": 2, "steps_per_epoch": 1, "max_steps": 2}, nip, device="cpu", progress=False)
    argv = ["train", "manipulation", "--data", str(tiny_dataset), "--nip-run", str(nip), "--train", "fan",
            "--preset", "quick", "--out", str(tmp_path / "runs"), "--name", "f", "--set", "patch=16",
            "--set", "batch=4", "--set", "epochs=1", "--set", "validate_every=1", "--set", "val_patches=4",
            "--device", "cpu", "--no-progress"]
    assert main(argv) == 2
    assert "has not finished" in _one_line_error(capsys, "train")
    assert not (tmp_path / "runs" / "f").exists()
    assert main([*argv, "--allow-unfinished-nip"]) == 0
    assert json.loads((tmp_path / "runs" / "f" / "nip_source.json").read_text())["step"] == 2


def test_evaluate_on_a_nip_run_is_one_line_error(tiny_nip_run, capsys) -> None:
    assert main(["evaluate", str(tiny_nip_run)]) == 2
    assert "not a `train manipulation` run" in _one_line_error(capsys, "evaluate")


@pytest.mark.parametrize("name", ["../../escaped", "/tmp/escaped-abs", "a/b", "..", "."])
def test_run_name_cannot_leave_the_runs_folder(tiny_dataset, tiny_nip_run, tmp_path, capsys, name) -> None:
    out = tmp_path / "deep" / "runs"
    for what, extra in (("nip", ["--nip", "inet"]), ("manipulation", ["--nip-run", str(tiny_nip_run)])):
        argv = ["train", what, "--data", str(tiny_dataset), "--out", str(out), "--name", name, *extra,
                "--set", "patch=16", "--no-progress", "--device", "cpu"]
        assert main(argv) == 2
        assert "run name" in _one_line_error(capsys, "train")
    assert [p for p in tmp_path.rglob("*")] == []  # nothing written anywhere


def test_evaluate_with_damaged_weights_is_one_line_error(cli_run, tmp_path, capsys) -> None:
    import shutil

    copy = tmp_path / "f"
    shutil.copytree(cli_run, copy)
    for fan in (copy / "checkpoints").glob("step-*/fan.safetensors"):
        fan.write_bytes(fan.read_bytes()[:64])
    assert main(["evaluate", str(copy), "--split", "val"]) == 2
    assert "no intact checkpoint" in _one_line_error(capsys, "evaluate")
