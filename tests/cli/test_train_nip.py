"""``neuralimaging train nip``, ``develop --pipeline inet --model`` and ``compare-pipelines`` end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from neuralimaging.acquisition.nip import develop_raw
from neuralimaging.acquisition.virtual_camera import synthesize
from neuralimaging.cli import main
from neuralimaging.data.dataset import prepare
from neuralimaging.experiments.train_nip import load_nip
from neuralimaging.io import load_image

SMALL = ["--batch", "4", "--patch", "16", "--set", "epochs=8", "--set", "validate_every=4",
         "--set", "val_images=2", "--no-progress"]


@pytest.fixture(scope="module")
def raws(tmp_path_factory, photo_paths) -> list[Path]:
    return synthesize(photo_paths[:5], "canon-5d2", tmp_path_factory.mktemp("raw"), shots_per_photo=1, seed=1,
                      size=(80, 112))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, raws) -> Path:
    out = tmp_path_factory.mktemp("data") / "prepared"
    prepare(raws[0].parent, out)
    return out


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, data_dir) -> Path:
    """Trained in two calls: killed at --max-steps 4, then --resume."""
    runs = tmp_path_factory.mktemp("runs")
    args = ["train", "nip", "--data", str(data_dir), "--nip", "inet", "--out", str(runs), "--name", "tiny", *SMALL]
    assert main([*args, "--max-steps", "4"]) == 0
    assert not (runs / "tiny" / "summary.json").exists()
    assert main([*args, "--resume"]) == 0
    return runs / "tiny"


def test_train_nip_resumes_and_writes_a_run(run_dir, capsys):
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 8 and summary["nip"] == "inet" and summary["preset"] == "quick"
    assert (run_dir / "config.yaml").is_file() and (run_dir / "figures" / "training.png").is_file()


def test_train_nip_prints_and_refuses_to_overwrite(tmp_path, data_dir, capsys):
    args = ["train", "nip", "--data", str(data_dir), "--out", str(tmp_path), *SMALL, "--set", "epochs=4"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "validation PSNR" in out and f"run: {tmp_path}" in out
    assert main(args) == 2
    assert "already holds a run; pass resume=True (--resume)" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [(["--set", "lr"], "--set expects KEY=VALUE"), (["--set", "batch=0"], "must be a positive integer")],
)
def test_train_nip_bad_settings(tmp_path, data_dir, capsys, extra, message):
    assert main(["train", "nip", "--data", str(data_dir), "--out", str(tmp_path), *extra]) == 2
    assert message in capsys.readouterr().err


def test_train_nip_missing_data(tmp_path, capsys):
    assert main(["train", "nip", "--data", str(tmp_path / "nope"), "--out", str(tmp_path)]) == 2
    assert "dataset folder not found" in capsys.readouterr().err


def test_develop_with_a_nip(tmp_path, raws, run_dir):
    code = main(["develop", "--pipeline", "inet", "--model", str(run_dir), "--tile", "24", str(raws[0]),
                 "--out", str(tmp_path)])
    assert code == 0
    png = load_image(tmp_path / f"{raws[0].stem}.png")
    expected = develop_raw(load_nip(run_dir), raws[0], tile=1000)  # one tile
    assert png.shape == expected.shape == (3, 80, 112)
    assert np.abs(png - expected).max() <= 0.5 / 255 + 1e-5


def test_develop_nip_needs_a_matching_model(tmp_path, raws, run_dir, capsys):
    assert main(["develop", "--pipeline", "dnet", "--model", str(run_dir), str(raws[0]), "--out", str(tmp_path)]) == 2
    assert "not dnet" in capsys.readouterr().err
    assert main(["develop", "--pipeline", "unet", str(raws[0]), "--out", str(tmp_path)]) == 2
    assert "needs --model" in capsys.readouterr().err


def test_compare_pipelines(raws, run_dir, capsys):
    assert main(["compare-pipelines", *map(str, raws[:2]), "--model", str(run_dir), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [r["pipeline"] for r in result["mean"]] == ["python", "libraw", "inet (tiny)"]
    assert len(result["files"]) == 6
    means = {r["pipeline"]: r for r in result["mean"]}
    assert means["python"]["psnr"] > 40  # same ISP on the full mosaic: differs only at the crop border
    assert 10 < means["inet (tiny)"]["psnr"] < means["python"]["psnr"]
    assert main(["compare-pipelines", str(raws[0]), "--pipelines", "none", "--model", str(run_dir)]) == 0
    assert "inet (tiny)" in capsys.readouterr().out
    assert main(["compare-pipelines", str(raws[0]), "--pipelines", "darktable"]) == 2


def test_export_writes_a_shippable_nip(tmp_path, data_dir, capsys) -> None:
    code = main(["train", "nip", "--data", str(data_dir), "--nip", "inet", "--epochs", "2", "--set",
                 "val_images=1", "--set", "validate_every=1", "--out", str(tmp_path), "--name", "run", "--no-progress",
                 "--export", str(tmp_path / "shipped" / "inet-tiny")])
    assert code == 0 and "exported:" in capsys.readouterr().out
    assert (tmp_path / "shipped" / "inet-tiny.safetensors").is_file()
    record = json.loads((tmp_path / "shipped" / "inet-tiny.json").read_text())
    assert record["nip"] == "inet" and record["summary"]["steps"] == 2
    assert record["command"].startswith("neuralimaging train nip --data ") and "--export" in record["command"]
    assert "init_run" not in record


def test_export_records_the_run_it_started_from(tmp_path, data_dir, capsys) -> None:
    """A NIP trained on from another run's checkpoint (a two-phase recipe) records that run and step."""
    common = ["--data", str(data_dir), "--nip", "inet", "--set", "val_images=1", "--set", "validate_every=1",
              "--out", str(tmp_path), "--no-progress"]
    assert main(["train", "nip", *common, "--name", "first", "--epochs", "4", "--max-steps", "2"]) == 0
    first = tmp_path / "first" / "checkpoints" / "step-000000002" / "nip.safetensors"
    assert first.is_file()
    assert main(["train", "nip", *common, "--name", "second", "--epochs", "1", "--set", f"init={first}",
                 "--export", str(tmp_path / "shipped" / "inet-two")]) == 0
    record = json.loads((tmp_path / "shipped" / "inet-two.json").read_text())
    assert record["init_run"]["step"] == 2
    assert record["init_run"]["run"] == str(tmp_path / "first")
    assert record["init_run"]["config"]["epochs"] == 4


def test_earlier_spellings_name_and_resume_the_same_run(tmp_path, data_dir, capsys) -> None:
    """``--max-epochs`` and ``--set val_every=...`` (earlier names) give the run the same config and name as
    ``--epochs`` and ``validate_every``: the run started with one spelling resumes with the other."""
    common = ["train", "nip", "--data", str(data_dir), "--nip", "inet", "--batch", "4", "--patch", "16", "--set",
              "val_images=1", "--out", str(tmp_path), "--no-progress"]
    assert main([*common, "--epochs", "3", "--set", "validate_every=1", "--max-steps", "1"]) == 0
    capsys.readouterr()
    assert main([*common, "--max-epochs", "3", "--set", "val_every=1", "--resume", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    [run] = list(tmp_path.iterdir())
    assert summary["run_dir"] == str(run) and summary["steps"] == 3 and summary["stopped"] == "max_epochs"
    assert [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [0, 1, 2, 3]


def test_max_steps_between_validations_prints_figures_of_the_last_step(tmp_path, data_dir, capsys):
    """Stopped by --max-steps before any validation after step 0: the figures shown are measured at the last
    step, never the step-0 validation's."""
    args = ["train", "nip", "--data", str(data_dir), "--out", str(tmp_path), "--name", "r", "--batch", "4",
            "--patch", "16", "--set", "validate_every=100", "--set", "val_images=2", "--no-progress", "--max-steps", "3"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "validation PSNR" in out and "stopped: max_steps" in out
    assert main([*args, "--resume", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    first = json.loads((tmp_path / "r" / "metrics.jsonl").read_text().splitlines()[0])
    assert summary["steps"] == 3 and first["step"] == 0
    assert summary["psnr"] is not None and summary["psnr"] != pytest.approx(first["psnr"], abs=1e-3)


@pytest.mark.parametrize(
    ("what", "extra", "message"),
    [
        ("nip", ["--set", "lr=abc"], "config lr must be a number > 0, got 'abc'"),
        ("nip", ["--set", "seed=abc"], "config seed must be an integer >= 0"),
        ("nip", ["--max-time", "-1"], "config max_time_s must be a number >= 0"),
        ("nip", ["--patch", "7"], "config patch must be a multiple of 16 for unet"),
        ("nip", ["--nip", "inet", "--set", "nip_options={width: -3}"], "INet takes no option 'width'"),
        ("nip", ["--nip", "unet", "--set", "nip_options={baseline: foo}"], "nip_options baseline must be"),
        ("nip", ["--set", "foo=1"], "unknown config keys: foo"),
        ("manipulation", ["--set", "lambda_nip=abc"], "config lambda_nip must be a number >= 0"),
        ("manipulation", ["--set", "lr=abc"], "config lr must be a number > 0"),
        ("manipulation", ["--set", "lr_decay=abc"], "config lr_decay must be"),
        ("manipulation", ["--set", "seed=abc"], "config seed must be an integer >= 0"),
        ("manipulation", ["--set", "val_batch=0"], "config val_batch must be a positive integer"),
        ("manipulation", ["--set", "foo=1"], "unknown config keys: foo"),
    ],
)
def test_bad_settings_are_refused_before_a_run_folder_exists(tmp_path, data_dir, capsys, what, extra, message):
    out = tmp_path / "runs"
    nip_run = ["--nip-run", str(data_dir)] if what == "manipulation" else []
    assert main(["train", what, "--data", str(data_dir), "--out", str(out), *nip_run, *extra, "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("neuralimaging train: error: ") and message in err[0]
    assert not out.exists()


def test_a_run_refused_for_its_data_leaves_no_folder(tmp_path, capsys):
    (tmp_path / "not-a-dataset").mkdir()
    args = ["train", "nip", "--data", str(tmp_path / "not-a-dataset"), "--out", str(tmp_path / "runs"), "--name", "r"]
    assert main(args) == 2
    assert "not a prepared dataset" in capsys.readouterr().err
    assert not (tmp_path / "runs" / "r").exists()
