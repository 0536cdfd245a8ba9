"""NIP pre-training on a tiny virtual-camera dataset: loss goes down, run directory, exact resume."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from neuralimaging.acquisition import nip
from neuralimaging.data.dataset import Dataset
from neuralimaging.experiments.fidelity import fidelity_images
from neuralimaging.errors import InputError
from neuralimaging.metrics import psnr, ssim
from neuralimaging.experiments.rundir import RunDir
from neuralimaging.experiments.workflow import resolve_precision
from neuralimaging.experiments.train_nip import (
    PRESETS,
    export_nip,
    load_nip,
    nip_loss,
    resolve_config,
    stop_rule,
    train_nip,
    validate,
)


def test_inet_before_training_resembles_the_python_isp(tiny_dataset):
    """Untrained INet (bilinear demosaicing, the camera's colour matrix, fitted gamma) vs the python ISP
    (Menon demosaicing) on whole tiny (detailed, noisy) images: measured 21-32 dB PSNR (mean 25), SSIM
    0.65-0.85, 10-15 dB better than a mid-grey image. Full-size virtual D90 shots: 25-29 dB."""
    data = Dataset.load(tiny_dataset)
    model = nip.INet(cam_to_srgb=data.val[0].meta["cam_to_srgb"])
    for sample in data.samples:
        x, target = torch.from_numpy(sample.rggb)[None], torch.from_numpy(sample.target)[None]
        with torch.no_grad():
            out = model(x)
        assert psnr(out, target) > 20
        assert ssim(out, target) > 0.6
        assert psnr(out, target) > psnr(torch.full_like(target, 0.5), target) + 8


def test_tiny_run_lowers_the_loss_and_writes_the_run_dir(tiny_nip_run, tiny_dataset, tiny_nip_config):
    run = RunDir(tiny_nip_run)
    records = run.read_metrics()
    assert [r["step"] for r in records] == [0, 10, 20, 30]
    assert records[-1]["val_loss"] < 0.9 * records[0]["val_loss"]
    assert records[-1]["psnr"] > records[0]["psnr"]
    summary = run.read_summary()
    assert summary["steps"] == 30 and summary["stopped"] == "max_epochs" and summary["parameters"] == 321
    assert summary["psnr"] == pytest.approx(records[-1]["psnr"])
    assert run.read_config()["nip"] == "inet"
    assert (run.figures / "training.png").stat().st_size > 1000
    # the saved model reproduces the logged validation figures
    model = load_nip(tiny_nip_run)
    assert not model.training
    again = validate(model, fidelity_images(Dataset.load(tiny_dataset).val, tiny_nip_config["val_images"]))
    assert again["psnr"] == pytest.approx(summary["psnr"], abs=1e-4)
    assert summary["fidelity"].startswith("whole developed images, 8-pixel border excluded")


@pytest.mark.parametrize(("name", "options"), [("inet", {}), ("dnet", {"width": 8, "depth": 3}),
                                               ("unet", {"width": 4, "baseline": "inet"}),
                                               ("unet", {"width": 4, "baseline": "menon"})])
def test_resume_after_a_kill_matches_an_uninterrupted_run(tmp_path, tiny_dataset, tiny_nip_config, name, options):
    config = {**tiny_nip_config, "data": str(tiny_dataset), "nip": name, "nip_options": options,
              "epochs": 12, "validate_every": 4, "lr_schedule": "cosine", "lr_min": 1e-5, "baseline_lr": 1e-2}
    full = train_nip(config, tmp_path / "full", device="cpu", progress=False)
    killed = train_nip({**config, "max_steps": 6}, tmp_path / "killed", device="cpu", progress=False)
    assert killed["stopped"] == "max_steps" and killed["steps"] == 6
    assert not (tmp_path / "killed" / "summary.json").exists()
    resumed = train_nip(config, tmp_path / "killed", resume=True, device="cpu", progress=False)
    assert resumed["steps"] == full["steps"] == 12
    assert resumed["config_hash"] == full["config_hash"]
    a = RunDir(tmp_path / "full").load_weights("nip")
    b = RunDir(tmp_path / "killed").load_weights("nip")
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-5, atol=1e-6)
    ma, mb = RunDir(tmp_path / "full").read_metrics(), RunDir(tmp_path / "killed").read_metrics()
    assert [r["step"] for r in mb] == [r["step"] for r in ma]
    np.testing.assert_allclose([r["val_loss"] for r in mb], [r["val_loss"] for r in ma], rtol=1e-5)
    # resuming a finished run returns its summary without training more
    assert train_nip(config, tmp_path / "killed", resume=True, device="cpu", progress=False)["steps"] == 12


def test_refuses_to_overwrite_or_resume_with_another_config(tmp_path, tiny_dataset, tiny_nip_config):
    config = {**tiny_nip_config, "data": str(tiny_dataset), "epochs": 2, "validate_every": 1}
    train_nip(config, tmp_path / "run", device="cpu", progress=False)
    with pytest.raises(InputError, match="already holds a run"):
        train_nip(config, tmp_path / "run", device="cpu", progress=False)
    with pytest.raises(InputError, match="changed: lr"):
        train_nip({**config, "lr": 0.5}, tmp_path / "run", resume=True, device="cpu", progress=False)


def test_stop_rule():
    assert not stop_rule([5.0] * 9, window=5, threshold=1e-4)  # needs 2 windows
    assert stop_rule([5.0] * 10, window=5, threshold=1e-4)
    assert not stop_rule(list(np.linspace(10, 1, 10)), window=5, threshold=1e-4)
    assert stop_rule([10, 10, 10, 10, 10, 10, 10, 10, 10, 9.9999], window=5, threshold=1e-4)
    assert not stop_rule([5.0] * 10, window=5, threshold=0.0)


def test_resolve_config():
    paper = resolve_config({"nip": "unet"})
    assert (paper["lr"], paper["batch"], paper["patch"], paper["epochs"]) == (1e-4, 20, 64, 50_000)
    assert paper["stop_rel_change"] == 1e-4 and resolve_config({"nip": "dnet"})["stop_rel_change"] == 1e-5
    quick = resolve_config({"lr": None, "batch": 4}, preset="quick")
    assert quick["lr"] == PRESETS["quick"]["lr"] and quick["batch"] == 4 and quick["preset"] == "quick"
    with pytest.raises(InputError, match="unknown preset"):
        resolve_config(preset="slow")
    with pytest.raises(InputError, match="unknown NIP"):
        resolve_config({"nip": "vgg"})
    with pytest.raises(InputError, match="positive"):
        resolve_config({"batch": 0})
    with pytest.raises(InputError, match="precision must be one of auto, bf16, fp32, got 'fp16'"):
        resolve_config({"precision": "fp16"})
    assert resolve_config(preset="quick")["precision"] == "auto"
    assert resolve_config({"nip": "inet"}, preset="quick")["precision"] == "fp32"
    assert resolve_config()["precision"] == "fp32" and resolve_config()["checkpoint_every"] is None


def test_earlier_setting_names_resolve_to_the_same_config():
    """``max_epochs``, ``val_every`` and ``amp`` (null -> fp32) read as ``epochs``, ``validate_every`` and
    ``precision``: the same settings and the same hash as the current names."""
    from neuralimaging.experiments.loop import run_hash

    old = resolve_config({"nip": "inet", "max_epochs": 7, "val_every": 3, "amp": None}, preset="quick")
    new = resolve_config({"nip": "inet", "epochs": 7, "validate_every": 3, "precision": "fp32"}, preset="quick")
    assert old == new and run_hash(old) == run_hash(new)
    assert resolve_config({"amp": "auto"})["precision"] == "auto"


def test_time_budget_is_checked_every_epoch(tmp_path, tiny_dataset, tiny_nip_config):
    """A run past ``max_time_s`` validates and stops after that epoch, not at the next scheduled validation."""
    config = {**tiny_nip_config, "data": tiny_dataset, "max_time_s": 0.0, "validate_every": 1000, "epochs": 5000,
              "precision": "auto"}
    summary = train_nip(config, tmp_path / "run", device="cpu", progress=False)
    assert summary["stopped"] == "max_time" and summary["epochs"] == 1
    assert summary["precision"] == resolve_precision("auto", "cpu")
    rows = [json.loads(line) for line in RunDir(tmp_path / "run").metrics_path.read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [0, 1] and np.isfinite(rows[-1]["psnr"])


def test_quick_preset_settings_follow_the_nip():
    """The quick preset's default NIP is a width-16 UNet over the python ISP; ``--nip inet`` gets INet's settings."""
    unet = resolve_config(preset="quick")
    assert unet["nip"] == "unet" and unet["nip_options"] == {"width": 16, "baseline": "menon"}
    assert unet["baseline_lr"] == PRESETS["quick"]["baseline_lr"] and "by_nip" not in unet
    inet = resolve_config({"nip": "inet"}, preset="quick")
    assert inet["nip_options"] == {} and inet["lr"] == PRESETS["quick"]["by_nip"]["inet"]["lr"] != unet["lr"]
    assert resolve_config({"nip": "inet", "lr": 0.5}, preset="quick")["lr"] == 0.5  # the user's overrides win
    nip.create(inet["nip"], **inet["nip_options"])  # the per-NIP options build the model


def test_baseline_lr_and_time_based_cosine():
    from neuralimaging.experiments.train_nip import _lr_at, _param_groups

    config = resolve_config({"nip": "unet", "nip_options": {"width": 4, "baseline": "inet"}, "lr": 1e-3,
                          "baseline_lr": 1e-2, "lr_schedule": "cosine", "lr_min": 0.0, "epochs": 100})
    groups = _param_groups(nip.create("unet", width=4, baseline="inet"), config)
    assert [sum(p.numel() for p in g["params"]) for g in groups][1] == 321
    assert [g["lr_scale"] for g in groups] == pytest.approx([1.0, 10.0])
    assert len(_param_groups(nip.create("inet"), config)) == 1
    assert _lr_at(config, 50, elapsed_s=1e6) == pytest.approx(5e-4)  # epoch-based unless lr_by_time
    timed = {**config, "lr_by_time": True, "max_time_s": 10.0}
    assert _lr_at(timed, 50, elapsed_s=0.0) == pytest.approx(5e-4)
    assert _lr_at(timed, 0, elapsed_s=5.0) == pytest.approx(5e-4)
    assert _lr_at(timed, 10, elapsed_s=20.0) == pytest.approx(0.0)


def test_nip_loss_is_mse_on_the_255_scale():
    x, y = torch.zeros(2, 3, 4, 4), torch.full((2, 3, 4, 4), 2 / 255)
    assert float(nip_loss(x, y)) == pytest.approx(4.0)


def test_missing_data_is_input_error(tmp_path, tiny_nip_config):
    with pytest.raises(InputError, match="data"):
        train_nip(tiny_nip_config, tmp_path / "run", progress=False)
    with pytest.raises(InputError, match="not a prepared dataset"):
        train_nip({**tiny_nip_config, "data": str(tmp_path)}, tmp_path / "run", progress=False)


def test_summary_is_json(tiny_nip_run):
    json.loads((tiny_nip_run / "summary.json").read_text())


def test_menon_baseline_starts_at_the_target_and_checks_the_gamma(tmp_path, tiny_dataset, tiny_nip_config):
    """A UNet over the menon baseline is validated at the python ISP's fidelity from its first step (its
    residual errors sit at the patch borders); a dataset made with another gamma curve is refused."""
    config = {**tiny_nip_config, "data": str(tiny_dataset), "nip": "unet",
              "nip_options": {"width": 4, "baseline": "menon"}, "epochs": 2, "validate_every": 1, "lr": 3e-4}
    summary = train_nip(config, tmp_path / "run", device="cpu", progress=False)
    first = RunDir(tmp_path / "run").read_metrics()[0]
    assert first["step"] == 0 and first["psnr"] > 33.0  # 36.2 dB on these 32x32 RGB patches
    assert summary["psnr"] > 33.0
    with pytest.raises(InputError, match="gamma"):
        train_nip({**config, "nip_options": {"width": 4, "baseline": "menon", "gamma": "srgb"}}, tmp_path / "srgb",
                  device="cpu", progress=False)


def test_tensorboard_event_logs(tiny_nip_run):
    """With TensorBoard installed, the run's validation scalars are in its event log, read back by TensorBoard."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(Path(tiny_nip_run) / "tensorboard")).Reload()
    assert {"train_loss", "val_loss", "psnr", "ssim"} <= set(events.Tags()["scalars"])
    logged = {e.step: e.value for e in events.Scalars("psnr")}
    recorded = {r["step"]: r["psnr"] for r in RunDir(tiny_nip_run).read_metrics() if r["step"] in logged}
    assert logged and set(logged) == set(recorded)
    assert all(abs(logged[s] - recorded[s]) < 1e-4 for s in logged)


def test_export_then_start_from_the_exported_weights(tmp_path, tiny_nip_run, tiny_dataset, tiny_nip_config):
    """A finished run exports its NIP with provenance; a run with ``init`` and no epochs measures exactly it."""
    out = export_nip(tiny_nip_run, tmp_path / "tiny-inet", recreate="pytest")
    assert out.suffix == ".safetensors"
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["nip"] == "inet" and record["recreate"] == "pytest" and record["config"]["epochs"] == 30
    assert len(record["dataset"]["train"]) == 6 and record["dataset"]["val"] and record["dataset"]["test"]
    summary = train_nip({**tiny_nip_config, "data": str(tiny_dataset), "init": str(out), "epochs": 0},
                        tmp_path / "measured", device="cpu", progress=False)
    assert summary["steps"] == 0 and summary["psnr"] == pytest.approx(RunDir(tiny_nip_run).read_summary()["psnr"])
    for key, value in load_nip(tiny_nip_run).state_dict().items():
        torch.testing.assert_close(load_nip(tmp_path / "measured").state_dict()[key], value, rtol=0, atol=0)
    with pytest.raises(InputError, match="do not fit this NIP"):
        train_nip({**tiny_nip_config, "data": str(tiny_dataset), "init": str(out), "nip": "dnet"},
                  tmp_path / "wrong", device="cpu", progress=False)
    with pytest.raises(InputError, match="no such weights file"):
        train_nip({**tiny_nip_config, "data": str(tiny_dataset), "init": str(tmp_path / "none.safetensors")},
                  tmp_path / "none", device="cpu", progress=False)
    with pytest.raises(InputError, match="no pre-trained NIP named 'nothing'"):
        train_nip({**tiny_nip_config, "data": str(tiny_dataset), "init": "pretrained:nothing"},
                  tmp_path / "nothing", device="cpu", progress=False)
    with pytest.raises(InputError, match="has not finished"):
        export_nip(tmp_path / "wrong", tmp_path / "x")


def test_unknown_config_keys_are_refused(tiny_dataset):
    with pytest.raises(InputError, match="unknown config keys: val_patches"):
        resolve_config({"data": str(tiny_dataset), "val_patches": 8})


def test_resume_past_a_damaged_checkpoint_and_torn_metrics_matches_an_uninterrupted_run(
    tmp_path, tiny_dataset, tiny_nip_config
):
    """Killed at step 10 (checkpoints at 8 and 10), then the newest checkpoint's weights and the metrics' last
    line torn: the resume falls back to step 8 with a warning and ends where an uninterrupted run ends."""
    from neuralimaging.experiments.rundir import CheckpointWarning

    config = {**tiny_nip_config, "data": str(tiny_dataset), "epochs": 12, "validate_every": 4}
    full = train_nip(config, tmp_path / "full", device="cpu", progress=False)
    train_nip({**config, "max_steps": 10}, tmp_path / "killed", device="cpu", progress=False)
    run = RunDir(tmp_path / "killed")
    assert sorted(p.name for p in run.checkpoints.glob("step-*")) == ["step-000000008", "step-000000010"]
    weights = run.checkpoints / "step-000000010" / "nip.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with open(run.metrics_path, "a") as handle:
        handle.write('{"step": 12, "val_lo')
    with pytest.warns(CheckpointWarning, match="step-000000010: nip.safetensors has 100 bytes"):
        resumed = train_nip(config, tmp_path / "killed", resume=True, device="cpu", progress=False)
    assert resumed["steps"] == full["steps"] == 12
    a, b = RunDir(tmp_path / "full").load_weights("nip"), run.load_weights("nip")
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-5, atol=1e-6)
    assert [r["step"] for r in run.read_metrics()] == [0, 4, 8, 12]
    assert resumed["psnr"] == pytest.approx(full["psnr"], abs=1e-4)


def test_a_run_with_no_intact_checkpoint_is_refused_not_restarted(tmp_path, tiny_dataset, tiny_nip_config):
    config = {**tiny_nip_config, "data": str(tiny_dataset), "epochs": 8, "validate_every": 4}
    train_nip({**config, "max_steps": 4}, tmp_path / "run", device="cpu", progress=False)
    run = RunDir(tmp_path / "run")
    (run.checkpoints / "LATEST").write_text("step-000000006\n")  # names a step that is not there
    shutil.rmtree(run.checkpoints / "step-000000004")
    metrics = run.metrics_path.read_text()
    with pytest.raises(InputError, match="no intact checkpoint"):
        train_nip(config, tmp_path / "run", resume=True, device="cpu", progress=False)
    with pytest.raises(InputError, match="already holds a run"):
        train_nip(config, tmp_path / "run", device="cpu", progress=False)
    assert run.metrics_path.read_text() == metrics  # nothing lost


def test_a_run_stopped_between_validations_reports_figures_of_its_last_step(tmp_path, tiny_dataset, tiny_nip_config):
    """Stopped by max_steps at step 3, validations due every 100 epochs: the figures are measured at step 3,
    not taken from the step-0 validation; metrics.jsonl keeps only the validations the schedule makes."""
    config = {**tiny_nip_config, "data": str(tiny_dataset), "epochs": 12, "validate_every": 100}
    stopped = train_nip({**config, "max_steps": 3}, tmp_path / "run", device="cpu", progress=False)
    run = RunDir(tmp_path / "run")
    records = run.read_metrics()
    assert stopped["stopped"] == "max_steps" and stopped["steps"] == 3 and [r["step"] for r in records] == [0]
    at_end = validate(load_nip(run.path), fidelity_images(Dataset.load(tiny_dataset).val, config["val_images"]))
    assert stopped["psnr"] == pytest.approx(at_end["psnr"], abs=1e-4)
    assert stopped["val_loss"] == pytest.approx(at_end["val_loss"], rel=1e-4)
    assert stopped["psnr"] != pytest.approx(records[0]["psnr"], abs=1e-3)
    assert not run.summary_path.exists()


def test_the_shipped_dnet_provenance_resolves_to_the_settings_make_nip_weights_gives_now():
    """The shipped DNet's provenance (written with the earlier names ``max_epochs``, ``val_every``, ``amp``,
    ``checkpoint_every`` in validations) reads as the config the Makefile's two ``train nip`` commands make
    with the current names: the same settings, the same hash (the recipe reproduces)."""
    from neuralimaging.acquisition.pretrained import resolve
    from neuralimaging.experiments.loop import run_hash

    record = json.loads(resolve("pretrained:dnet-nikon-d90").with_suffix(".json").read_text())
    first, anneal = record["init_run"]["config"], record["config"]
    assert "max_epochs" in anneal and "epochs" not in anneal  # written with the earlier names
    now_first = resolve_config({"data": first["data"], "max_steps": 4500}, preset="cpu")
    now_anneal = resolve_config({"data": anneal["data"], "init": anneal["init"], "lr": 3e-4, "validate_every": 250,
                                 "epochs": 1500}, preset="cpu")
    for stored, now in ((first, now_first), (anneal, now_anneal)):
        assert resolve_config(stored) == now and run_hash(resolve_config(stored)) == run_hash(now)
    assert now_anneal["precision"] == "auto" and now_anneal["checkpoint_every"] is None
