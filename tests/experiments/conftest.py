"""Fixtures built once per test run for the experiment tests: a tiny prepared dataset and a tiny trained INet run.

``tiny_dataset``: 5 bundled photos x 2 shots through the virtual Nikon D90 (GBRG) at 96x128 pixels, prepared
with the python ISP (6 train / 2 validation / 2 test images of 47x64 RGGB pixels; shots of one scene stay on
one side).
``tiny_nip_run``: an INet pre-trained on it for 30 steps (batch 8, 16x16 RAW patches).
"""

from __future__ import annotations

import pytest

TINY_NIP_CONFIG = {
    "nip": "inet",
    "batch": 8,
    "patch": 16,
    "lr": 1e-3,
    "steps_per_epoch": 1,
    "epochs": 30,
    "validate_every": 10,
    "val_images": 2,
    "stop_rel_change": 0.0,
    "init_color_matrix": False,  # start from the identity matrix: far enough from the target to learn in 30 steps
    "seed": 0,
}


@pytest.fixture
def tiny_nip_config() -> dict:
    """The settings of ``tiny_nip_run`` (without ``data``): a fresh copy per test."""
    return dict(TINY_NIP_CONFIG)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory, photo_paths):
    """Path of a prepared dataset (``neuralimaging.data.dataset.prepare``) of 10 tiny virtual-camera shots."""
    from neuralimaging.acquisition.virtual_camera import synthesize
    from neuralimaging.data.dataset import prepare

    root = tmp_path_factory.mktemp("tiny-data")
    raws = synthesize(photo_paths[:5], "nikon-d90", root / "raw", shots_per_photo=2, seed=0, size=(96, 128))
    assert len(raws) == 10
    report = prepare(root / "raw", root / "prepared")
    assert not report.failed
    return root / "prepared"


@pytest.fixture(scope="session")
def tiny_nip_run(tmp_path_factory, tiny_dataset):
    """Run directory of an INet trained for 30 steps on ``tiny_dataset`` (``load_nip`` reads it)."""
    from neuralimaging.experiments.train_nip import train_nip

    out = tmp_path_factory.mktemp("tiny-nip") / "inet"
    train_nip({**TINY_NIP_CONFIG, "data": str(tiny_dataset)}, out, device="cpu", progress=False)
    return out


# ---------------------------------------------------------------------------------------------------------
# sweeps, results, figures, report: a tiny real sweep shared by tests/experiments/test_{results,plots,report}.py


@pytest.fixture(scope="session")
def tiny_fan_run(tiny_dataset, tiny_nip_run, tmp_path_factory):
    """An F run of 4 steps on the tiny dataset: 16x16 RAW patches, so the FAN sees 16x16 windows."""
    from neuralimaging.experiments.train_manipulation import train_manipulation

    out = tmp_path_factory.mktemp("tiny-fan") / "f"
    config = {"data": str(tiny_dataset), "nip_run": str(tiny_nip_run), "preset": "quick", "train": "fan",
              "patch": 16, "batch": 4, "epochs": 4, "validate_every": 4, "checkpoint_every": 4,
              "val_patches": 4, "val_batch": 8, "lr": 1e-3}
    train_manipulation(config, out, device="cpu", progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_sweep_runs(tiny_dataset, tmp_path_factory):
    """A real three-stage sweep, run once: NIP pre-training (INet), F and F+N manipulation runs at one
    lambda_nip with two repetitions each (on the pre-trained NIP), and one run that fails for real (its
    dataset folder does not exist). Returns the runs folder."""
    from neuralimaging.experiments.sweep import expand, run_sweep

    runs = tmp_path_factory.mktemp("tiny-sweep") / "runs"
    nip = {"preset": "quick", "data": str(tiny_dataset), "batch": 2, "patch": 16, "val_images": 2,
           "steps_per_epoch": 1, "epochs": 4, "validate_every": 2, "lr": 1e-3,
           "lr_schedule": "constant", "max_time_s": None}
    joint = {"preset": "quick", "data": str(tiny_dataset), "nip_run": "{runs}/pretrain/{camera}/{nip}/000",
             "patch": 16, "batch": 4, "epochs": 6, "validate_every": 3, "checkpoint_every": 3,
             "val_patches": 8, "val_batch": 8, "lr": 1e-3}
    source = {
        "name": "tiny",
        "stages": [
            {"name": "pretrain", "task": "nip", "config": nip, "grid": {"camera": ["tiny"], "nip": ["inet"]}},
            {"name": "joint", "task": "manipulation", "config": joint,
             "grid": {"camera": ["tiny"], "nip": ["inet"], "mode": ["F", "F+N"], "lambda_nip": [0.01]},
             "repetitions": 2},
            {"name": "broken", "task": "nip", "config": {**nip, "data": str(runs / "no-such-dataset")},
             "grid": {"camera": ["tiny"], "nip": ["inet"]}},
        ],
    }
    outcomes = {o.name: o for o in run_sweep(expand(source, runs_dir=runs), runs)}
    assert outcomes.pop("broken/tiny/inet/000").status == "failed"
    assert all(o.status == "done" for o in outcomes.values()), outcomes
    return runs
