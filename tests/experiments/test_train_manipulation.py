"""F and F+N training on a tiny real dataset: gradients, loss, run directory, resume, evaluation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from neuralimaging.data.dataset import Dataset
from neuralimaging.data.patches import sample_patches
from neuralimaging.errors import InputError
from neuralimaging.experiments.fidelity import nip_fidelity
from neuralimaging.experiments.rundir import NIP_SOURCE, RunDir, config_hash
from neuralimaging.experiments.train_manipulation import (
    LATER_DEFAULTS,
    PRESETS,
    _trainable,
    evaluate,
    load_joint_nip,
    load_workflow,
    resolve_config,
    train_manipulation,
    train_step,
)
from neuralimaging.experiments.train_nip import load_nip
from neuralimaging.experiments.workflow import PIXEL_SCALE, ResidualNIP, build_workflow, manipulate, resolve_precision


def summary_data(run_dir) -> str:
    return RunDir(run_dir).read_config()["data"]


def tiny_config(data, nip_run, **overrides) -> dict:
    config = {
        "data": str(data),
        "nip_run": str(nip_run),
        "preset": "quick",
        "train": "fan,nip",
        "lambda_nip": 0.01,
        "patch": 16,
        "batch": 4,
        "epochs": 6,
        "validate_every": 3,
        "checkpoint_every": 3,
        "val_patches": 8,
        "val_batch": 8,
        "lr": 1e-3,
    }
    config.update(overrides)
    return config


@pytest.fixture
def batch(tiny_dataset):
    dataset = Dataset.load(tiny_dataset)
    return sample_patches(dataset.train, 4, 16, np.random.default_rng(0))


def _workflow(nip_run, mode: str, **options):
    torch.manual_seed(0)
    workflow = build_workflow(load_nip(nip_run), **options).eval()
    optimizer = torch.optim.Adam(_trainable(workflow, mode), lr=1e-3)
    return workflow, optimizer


class TestTrainStep:
    def test_fan_mode_leaves_the_nip_alone(self, tiny_nip_run, batch) -> None:
        workflow, optimizer = _workflow(tiny_nip_run, "fan")
        nip_before = [p.detach().clone() for p in workflow.nip.parameters()]
        fan_before = [p.detach().clone() for p in workflow.fan.parameters()]
        train_step(workflow, optimizer, *batch, mode="fan", lambda_nip=0.01)
        assert all(p.grad is None for p in workflow.nip.parameters())
        assert all(torch.equal(a, b) for a, b in zip(nip_before, workflow.nip.parameters()))
        assert any(not torch.equal(a, b) for a, b in zip(fan_before, workflow.fan.parameters()))

    def test_joint_mode_trains_the_nip(self, tiny_nip_run, batch) -> None:
        workflow, optimizer = _workflow(tiny_nip_run, "fan,nip")
        nip_before = [p.detach().clone() for p in workflow.nip.parameters()]
        parts = train_step(workflow, optimizer, *batch, mode="fan,nip", lambda_nip=0.01)
        grads = [p.grad for p in workflow.nip.parameters() if p.requires_grad]
        assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
        assert sum(float(g.abs().sum()) for g in grads) > 0
        assert any(not torch.equal(a, b) for a, b in zip(nip_before, workflow.nip.parameters()))
        assert parts["loss"] == pytest.approx(parts["ce"] + 0.01 * parts["nip_mse"], rel=1e-5)

    def test_fp32_step_is_the_papers_loss(self, tiny_nip_run, batch) -> None:
        """precision fp32: the step's loss is CE(FAN(channel(m_c(NIP(x))))) + lambda MSE(255 NIP(x), 255 y),
        computed here from the parts."""
        workflow, optimizer = _workflow(tiny_nip_run, "fan,nip", precision="fp32", channels_last=False)
        rggb, target = batch
        with torch.no_grad():
            rgb = workflow.nip(rggb)
            manipulated, labels = manipulate(rgb, workflow.manipulations)
            ce = F.cross_entropy(workflow.fan(workflow.channel(manipulated)), labels)
            mse = ((rgb.double() - target.double()) * PIXEL_SCALE).square().mean()
        parts = train_step(workflow, optimizer, rggb, target, mode="fan,nip", lambda_nip=0.01)
        assert parts["ce"] == pytest.approx(float(ce), rel=1e-6)
        assert parts["nip_mse"] == pytest.approx(float(mse), rel=1e-5)

    @pytest.mark.parametrize("mode", ["fan", "fan,nip"])
    def test_bf16_step_is_finite_and_reaches_the_nip(self, tiny_nip_run, batch, mode: str) -> None:
        """bfloat16 autocast of the NIP body (a UNet residual: INet itself stays float32) and of the FAN."""
        workflow, _ = _workflow(tiny_nip_run, mode, precision="bf16")
        workflow.nip = ResidualNIP(workflow.nip, width=4)
        optimizer = torch.optim.Adam(_trainable(workflow, mode), lr=1e-3)
        parts = [train_step(workflow, optimizer, *batch, mode=mode, lambda_nip=0.01) for _ in range(2)]
        assert all(np.isfinite(list(p.values())).all() for p in parts)
        grads = [p.grad for p in workflow.nip.parameters()]
        if mode == "fan":
            assert all(g is None for g in grads)
        else:
            assert all(g is not None and torch.isfinite(g).all() for g in grads)
            assert float(workflow.nip.residual.head.weight.grad.abs().sum()) > 0

    @pytest.mark.parametrize("mode", ["fan", "fan,nip"])
    def test_loss_falls_on_a_fixed_batch(self, tiny_nip_run, batch, mode: str) -> None:
        workflow, optimizer = _workflow(tiny_nip_run, mode)
        losses = [train_step(workflow, optimizer, *batch, mode=mode, lambda_nip=0.01)["loss"] for _ in range(12)]
        assert np.mean(losses[-3:]) < losses[0]


class TestConfig:
    def test_preset_then_user_values(self) -> None:
        config = resolve_config({"data": "d", "nip_run": "n", "preset": "quick", "batch": 3})
        assert config["batch"] == 3
        assert config["patch"] == PRESETS["quick"]["patch"]
        assert config["train"] == "fan,nip"

    @pytest.mark.parametrize(
        "bad, match",
        [
            ({"train": "nip"}, "train must be"),
            ({"colour": 1}, "unknown config keys"),
            ({"patch": 12}, "multiple of 8"),
            ({"lambda_nip": -1}, "lambda_nip"),
            ({"preset": "slow"}, "preset"),
            ({"precision": "fp16"}, "precision"),
            ({"channels_last": "yes"}, "channels_last"),
        ],
    )
    def test_bad_values(self, bad: dict, match: str) -> None:
        with pytest.raises(InputError, match=match):
            resolve_config({"data": "d", "nip_run": "n", **bad})

    def test_later_keys_at_their_defaults_leave_the_config_and_its_hash_alone(self) -> None:
        """Configs written before precision/channels_last existed keep their hash (their runs stay resumable)."""
        base = resolve_config({"data": "d", "nip_run": "n"})
        assert not set(LATER_DEFAULTS) & set(base)
        assert resolve_config({"data": "d", "nip_run": "n", **LATER_DEFAULTS}) == base
        fp32 = resolve_config({"data": "d", "nip_run": "n", "precision": "fp32"})
        assert fp32["precision"] == "fp32" and config_hash(fp32) != config_hash(base)
        assert resolve_config({"data": "d", "nip_run": "n", "channels_last": False})["channels_last"] is False

    def test_mode_spelling_is_normalized(self) -> None:
        assert resolve_config({"data": "d", "nip_run": "n", "train": "nip, fan"})["train"] == "fan,nip"


@pytest.fixture(scope="module")
def joint_run(tiny_dataset, tiny_nip_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("joint") / "run"
    summary = train_manipulation(tiny_config(tiny_dataset, tiny_nip_run), out, device="cpu", progress=False)
    return out, summary


class TestTrainManipulation:
    def test_summary_and_run_directory(self, joint_run) -> None:
        out, summary = joint_run
        run = RunDir(out)
        assert run.read_summary() == summary
        for key in ("accuracy", "confusion", "psnr", "ssim", "wall_time_s", "config_hash", "psnr_start", "psnr_paid"):
            assert key in summary
        assert summary["config_hash"] == config_hash(run.read_config())
        assert summary["precision"] == resolve_precision("auto", "cpu")
        assert not set(LATER_DEFAULTS) & set(run.read_config())
        confusion = np.array(summary["confusion"])
        assert confusion.shape == (5, 5)
        assert confusion.sum() == summary["n_validation"] == 8 * 5
        assert summary["accuracy"] == pytest.approx(np.trace(confusion) / confusion.sum())
        assert summary["psnr_paid"] == pytest.approx(summary["psnr_start"] - summary["psnr"])
        metrics = run.read_metrics()
        assert [m["step"] for m in metrics] == [0, 3, 6]
        assert run.has_checkpoint()

    def test_rerun_without_resume_refuses(self, joint_run, tiny_dataset, tiny_nip_run) -> None:
        out, _ = joint_run
        with pytest.raises(InputError, match="already holds a run"):
            train_manipulation(tiny_config(tiny_dataset, tiny_nip_run), out, device="cpu", progress=False)

    def test_resume_with_other_config_refuses(self, joint_run, tiny_dataset, tiny_nip_run) -> None:
        out, _ = joint_run
        with pytest.raises(InputError, match="cannot resume with a different config \\(changed: lambda_nip; hash"):
            train_manipulation(tiny_config(tiny_dataset, tiny_nip_run, lambda_nip=0.5), out, resume=True,
                               device="cpu", progress=False)

    def test_resume_of_a_finished_run_returns_its_summary(self, joint_run, tiny_dataset, tiny_nip_run) -> None:
        out, summary = joint_run
        again = train_manipulation(tiny_config(tiny_dataset, tiny_nip_run), out, resume=True, device="cpu",
                                   progress=False)
        assert again == RunDir(out).read_summary()
        assert again["accuracy"] == summary["accuracy"]

    def test_resume_after_kill_matches_uninterrupted(self, joint_run, tiny_dataset, tiny_nip_run, tmp_path) -> None:
        _, uninterrupted = joint_run
        config = tiny_config(tiny_dataset, tiny_nip_run)
        stopped = train_manipulation(config, tmp_path / "run", device="cpu", progress=False, max_steps=3)
        assert (stopped["stopped"], stopped["steps"]) == ("max_steps", 3)
        assert not RunDir(tmp_path / "run").summary_path.exists()
        resumed = train_manipulation(config, tmp_path / "run", resume=True, device="cpu", progress=False)
        assert resumed["confusion"] == uninterrupted["confusion"]
        assert resumed["psnr"] == pytest.approx(uninterrupted["psnr"], abs=1e-3)
        assert [m["step"] for m in RunDir(tmp_path / "run").read_metrics()] == [0, 3, 6]

    def test_fan_mode_keeps_nip_fidelity(self, tiny_dataset, tiny_nip_run, tmp_path) -> None:
        summary = train_manipulation(tiny_config(tiny_dataset, tiny_nip_run, train="fan", epochs=3), tmp_path / "f",
                                     device="cpu", progress=False)
        assert summary["mode"] == "fan"
        assert summary["psnr"] == pytest.approx(summary["psnr_start"], abs=1e-4)


class TestLoadJointNip:
    def test_matches_the_run_workflow_and_has_a_residual(self, joint_run, batch) -> None:
        out, _ = joint_run
        nip = load_joint_nip(out)
        workflow, config = load_workflow(out)
        assert config["residual_width"] > 0 and hasattr(nip, "residual")
        with torch.no_grad():
            torch.testing.assert_close(nip(batch[0]), workflow.nip(batch[0]))

    def test_fan_run_is_refused(self, tiny_dataset, tiny_nip_run, tmp_path) -> None:
        train_manipulation(tiny_config(tiny_dataset, tiny_nip_run, train="fan", epochs=1, validate_every=1,
                                       checkpoint_every=1), tmp_path / "f", device="cpu", progress=False)
        with pytest.raises(InputError, match="not an F\\+N run"):
            load_joint_nip(tmp_path / "f")


class TestEvaluate:
    @pytest.mark.parametrize("codec, quality", [("libjpeg", None), ("libjpeg", 90), ("differentiable", None)])
    def test_runs_with_real_codec_and_other_qualities(self, joint_run, codec: str, quality) -> None:
        out, summary = joint_run
        result = evaluate(out, codec=codec, quality=quality)
        assert result["codec"] == codec and result["split"] == "test"
        assert result["quality"] == (50 if quality is None else quality)
        assert np.array(result["confusion"]).sum() == result["n"] == summary["n_validation"]
        assert 0.0 <= result["accuracy"] <= 1.0
        assert result["images"] == 2 and result["fidelity"].endswith("test split, 2 images")
        # the same NIP, measured on the test split's whole images
        nip = load_joint_nip(out)
        test = Dataset.load(summary_data(out)).test
        assert result["psnr"] == pytest.approx(nip_fidelity(nip, test)["psnr"], abs=1e-4)

    def test_differentiable_codec_on_validation_reproduces_training_validation(self, joint_run) -> None:
        out, summary = joint_run
        again = evaluate(out, codec="differentiable", split="val")
        assert again["confusion"] == summary["confusion"]
        assert again["psnr"] == pytest.approx(summary["psnr"], abs=1e-4)
        assert again["ssim"] == pytest.approx(summary["ssim"], abs=1e-5)

    @pytest.mark.parametrize("kwargs, match", [({"codec": "png"}, "codec"), ({"quality": 0}, "quality")])
    def test_bad_arguments(self, joint_run, kwargs: dict, match: str) -> None:
        with pytest.raises(InputError, match=match):
            evaluate(joint_run[0], **kwargs)

    def test_not_a_run(self, tmp_path) -> None:
        with pytest.raises(InputError, match="not a run directory"):
            evaluate(tmp_path)

    def test_a_nip_run_is_not_a_manipulation_run(self, tiny_nip_run) -> None:
        with pytest.raises(InputError, match="not a `train manipulation` run"):
            evaluate(tiny_nip_run)


class TestPaperEffect:
    """The paper's finding on a tiny fixed-seed configuration: a jointly trained NIP (F+N) leaves traces that
    let the FAN tell manipulations apart after the channel, far better than the FAN alone (F), and the traces
    survive the real codec (libjpeg) at test time. Measured on this configuration: F 0.33, F+N 0.67 on
    validation (dJPEG); see docs/measuring.md."""

    @pytest.fixture(scope="class")
    def runs(self, tiny_dataset, tiny_nip_run, tmp_path_factory):
        root = tmp_path_factory.mktemp("effect")
        config = tiny_config(tiny_dataset, tiny_nip_run, patch=16, batch=16, epochs=200, validate_every=200,
                             checkpoint_every=200, val_patches=100, val_batch=100, val_images=2,
                             lambda_nip=0.002, residual_width=16)
        return {mode: train_manipulation({**config, "train": mode}, root / mode, device="cpu", progress=False)
                for mode in ("fan", "fan,nip")} | {"root": root}

    def test_fn_beats_f_after_the_channel(self, runs) -> None:
        f, fn = runs["fan"], runs["fan,nip"]
        assert f["n_validation"] == fn["n_validation"] == 500
        assert fn["accuracy"] > f["accuracy"] + 0.15, (f["accuracy"], fn["accuracy"])
        assert f["psnr"] == pytest.approx(f["psnr_start"]) and fn["psnr_paid"] > 0  # the traces cost fidelity

    def test_traces_survive_libjpeg_on_the_test_split(self, runs) -> None:
        f = evaluate(runs["root"] / "fan", codec="libjpeg", fidelity=False)
        fn = evaluate(runs["root"] / "fan,nip", codec="libjpeg", fidelity=False)
        assert f["split"] == fn["split"] == "test" and f["quality"] == fn["quality"] == 50
        assert fn["accuracy"] > f["accuracy"] + 0.1, (f["accuracy"], fn["accuracy"])


class TestNipSource:
    """A later stage starts only from a finished NIP run (unless allowed), records which checkpoint it used, and
    is not measured on another NIP than the one it was trained with."""

    def test_records_the_nip_checkpoint(self, joint_run, tiny_nip_run) -> None:
        record = json.loads((joint_run[0] / NIP_SOURCE).read_text())
        assert record["step"] == 30 and record["finished"] and not record["forced"]
        assert record["sha256"] == RunDir(tiny_nip_run).checkpoint_id()["sha256"]
        assert record["checkpoint"] == "step-000000030"

    def test_unfinished_nip_run_is_refused_unless_allowed(self, tiny_dataset, tiny_nip_config, tmp_path) -> None:
        from neuralimaging.experiments.train_nip import train_nip

        nip_config = {**tiny_nip_config, "data": str(tiny_dataset), "epochs": 4, "validate_every": 2}
        train_nip({**nip_config, "max_steps": 2}, tmp_path / "nip", device="cpu", progress=False)  # stopped early
        config = tiny_config(tiny_dataset, tmp_path / "nip", train="fan", epochs=2, validate_every=2,
                             checkpoint_every=2)
        with pytest.raises(InputError, match="the NIP run has not finished .*step-000000002"):
            train_manipulation(config, tmp_path / "f", device="cpu", progress=False)
        assert not (tmp_path / "f").exists()
        train_manipulation(config, tmp_path / "f", device="cpu", progress=False, allow_unfinished_nip=True)
        record = json.loads((tmp_path / "f" / NIP_SOURCE).read_text())
        assert (record["step"], record["finished"], record["forced"]) == (2, False, True)
        evaluate(tmp_path / "f", split="val", fidelity=False)  # the NIP is still the one it was trained with
        # the NIP run goes on: the F run's frozen NIP is no longer there, so measuring it would be wrong
        train_nip(nip_config, tmp_path / "nip", resume=True, device="cpu", progress=False)
        with pytest.raises(InputError, match="its NIP changed since .* was trained .*step-000000004.*step-000000002"):
            evaluate(tmp_path / "f", split="val")
        with pytest.raises(InputError, match="its NIP changed"):
            load_workflow(tmp_path / "f")
