"""Storage of run folders on a pyarrow filesystem (``file://`` here: the same code path as ``s3://``): copies
with paths rewritten, checkpoint order, staged runs that execute on a node's own disk, and a runs folder a
node does not see."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from neuralimaging.errors import InputError
from neuralimaging.experiments import storage as st
from neuralimaging.experiments import sweep as sw
from neuralimaging.experiments.rundir import RunDir

pytest.importorskip("pyarrow")

TINY_NIP = {
    "preset": "quick", "nip": "inet", "batch": 2, "patch": 16, "val_images": 2,
    "steps_per_epoch": 1, "epochs": 4, "validate_every": 2, "lr": 1e-3, "lr_schedule": "constant",
    "max_time_s": None,
}


@pytest.fixture
def staging(tmp_path, monkeypatch) -> Path:
    """This node's own disk for staged runs."""
    monkeypatch.setenv(st.STAGING_ENV, str(tmp_path / "node-disk"))
    return tmp_path / "node-disk"


def _run_with_checkpoints(path: Path, steps: tuple[int, ...]) -> RunDir:
    run = RunDir(path, keep=1)
    run.write_config({"nip_run": str(path.parent / "pre"), "seed": 0})
    for step in steps:
        run.save_checkpoint({"net": torch.nn.Linear(2, 2)}, state={"step": step})
    return run


def test_names_inside_storage(tmp_path) -> None:
    storage = st.Storage(tmp_path / "store")
    assert storage.uri == (tmp_path / "store").as_uri()
    assert storage.relative(storage.uri + "/pre/inet/000") == "pre/inet/000"
    assert storage.relative(storage.uri) == ""
    assert storage.relative(str(tmp_path / "elsewhere")) is None
    with pytest.raises(InputError, match="path inside storage"):
        storage.relative(storage.uri + "/../data")
    with pytest.raises(InputError, match="pyarrow cannot open it"):
        st.Storage("nosuchscheme://bucket/runs")


def test_upload_download_round_trip_rewrites_paths(tmp_path) -> None:
    storage = st.Storage(tmp_path / "store")
    node, driver = tmp_path / "node", tmp_path / "driver"
    run = _run_with_checkpoints(node / "a/000", (2, 4))  # keep=1: step 2 is pruned locally
    seen = storage.upload(run.path, "a/000", node)
    stored = storage.files("a/000")
    assert "checkpoints/step-000000004/net.safetensors" in stored and "checkpoints/LATEST" in stored
    assert not any("step-000000002" in name for name in stored)
    assert storage.read_bytes("a/000/config.yaml").decode().count(storage.uri) == 1
    assert str(node) not in storage.read_bytes("a/000/config.yaml").decode()
    # a new checkpoint: the older one is deleted in storage too, LATEST names the new one
    run.save_checkpoint({"net": torch.nn.Linear(2, 2)}, state={"step": 6})
    storage.upload(run.path, "a/000", node, seen)
    assert sorted({n.split("/")[1] for n in storage.files("a/000") if n.startswith("checkpoints/step-")}) == ["step-000000006"]
    assert storage.download("a/000", driver / "a/000", driver) > 0
    copy = RunDir(driver / "a/000")
    assert copy.read_config()["nip_run"] == str(driver / "a/pre")
    assert copy.load_checkpoint({"net": torch.nn.Linear(2, 2)})["step"] == 6


def test_download_takes_only_the_latest_checkpoint(tmp_path) -> None:
    storage = st.Storage(tmp_path / "store")
    run = _run_with_checkpoints(tmp_path / "node/a", (2, 4))
    run.keep = 5
    run.save_checkpoint({"net": torch.nn.Linear(2, 2)}, state={"step": 8})
    storage.upload(run.path, "a", tmp_path / "node")
    local = tmp_path / "copy"
    storage.download("a", local, tmp_path)
    assert sorted(p.name for p in (local / "checkpoints").iterdir()) == ["LATEST", "step-000000008"]


def test_staged_run_executes_on_the_node_and_lands_in_storage(tiny_dataset, tmp_path, staging) -> None:
    store = st.Storage(tmp_path / "store")
    sweep = sw.expand({"task": "nip", "config": {**TINY_NIP, "data": str(tiny_dataset)}, "grid": {"nip": ["inet"]}},
                      runs_dir=store.uri)
    driver = tmp_path / "driver-runs"
    [outcome] = sw.run_sweep(sweep, driver, storage=store.uri)
    assert outcome.status == "done" and outcome.attempt == 1
    assert store.summary_ok("inet/000") and store.read_lock("inet/000") is None
    node_copy = st.staging_root(store.uri) / "inet/000"
    assert RunDir(node_copy).read_summary()["steps"] == 4  # it ran on the node's own disk
    assert str(node_copy) in RunDir(node_copy).read_summary()["run_dir"]
    assert store.uri in store.read_bytes("inet/000/summary.json").decode()
    mirrored = RunDir(driver / "inet/000")  # and the driver has its copy, with its own paths
    assert mirrored.read_summary()["run_dir"] == str(driver / "inet/000")
    assert [r["step"] for r in mirrored.read_metrics()] == [0, 2, 4]
    assert [s.state for s in sw.sweep_status(driver)] == ["done"]
    # run again (a new driver): skipped from what storage holds, even without the driver's copy
    import shutil

    shutil.rmtree(driver)
    assert [o.status for o in sw.run_sweep(sweep, driver, storage=store.uri)] == ["skipped"]
    assert RunDir(driver / "inet/000").read_summary()["steps"] == 4


def test_staged_stages_find_their_nip_run_through_storage(tiny_dataset, tmp_path, staging, monkeypatch) -> None:
    """A joint run's ``nip_run`` names storage: it is downloaded to the node, recorded, and the run resumed
    on another node (another staging folder) keeps an identical config."""
    store = st.Storage(tmp_path / "store")
    joint = {"preset": "quick", "data": str(tiny_dataset), "nip_run": "{runs}/pre/inet/000", "patch": 16, "batch": 4,
             "epochs": 4, "validate_every": 2, "checkpoint_every": 2, "val_patches": 4, "val_batch": 4}
    pre = {"name": "pre", "task": "nip", "config": {**TINY_NIP, "data": str(tiny_dataset)}, "grid": {"nip": ["inet"]}}
    sweep = sw.expand({"stages": [pre, {"name": "joint", "config": joint, "grid": {"mode": ["F"]}}]}, runs_dir=store.uri)
    assert sweep.runs[1].config["nip_run"] == store.uri + "/pre/inet/000"
    driver = tmp_path / "driver"
    assert sw.execute_run(sweep.runs[1], driver, storage=store.uri).status == "blocked"
    assert sw.run_sweep(sweep, driver, storage=store.uri, only=["pre"])[0].status == "done"
    # the joint run stops half-way (as if its node were lost) on this node ...
    import neuralimaging.experiments.train_manipulation as tm

    real = tm.train_manipulation
    with monkeypatch.context() as patch:
        patch.setattr(tm, "train_manipulation", lambda config, out_dir, **kw: real(config, out_dir, max_steps=2, **kw))
        assert sw.execute_run(sweep.runs[1], driver, storage=store.uri).status == "incomplete"
    assert "checkpoints/step-000000002/state.json" in store.files("joint/F/000")
    # ... and resumes on another node from the checkpoint in storage
    staging2 = tmp_path / "other-node"
    monkeypatch.setenv(st.STAGING_ENV, str(staging2))
    outcome = sw.execute_run(sweep.runs[1], driver, storage=store.uri)
    assert outcome.status == "done" and outcome.resumed
    node_run = st.staging_root(store.uri) / "joint/F/000"
    assert str(staging2) in str(node_run) and (node_run.parent.parent.parent / "pre/inet/000/summary.json").is_file()
    assert [r["step"] for r in RunDir(node_run).read_metrics()] == [0, 2, 4]
    stored_config = store.read_bytes("joint/F/000/config.yaml").decode()
    assert f"nip_run: {store.uri}/pre/inet/000" in stored_config and str(tmp_path) + "/" not in stored_config.replace(store.uri, "")


def test_a_node_that_does_not_see_the_runs_folder_fails_the_run(tiny_dataset, tmp_path) -> None:
    runs = tmp_path / "runs"
    [spec] = sw.expand({"task": "nip", "config": {**TINY_NIP, "data": str(tiny_dataset)}}, runs_dir=runs).runs
    runs.mkdir()
    token = st.write_token(runs)
    assert sw.execute_run(spec, runs, token=token).status == "done"  # the driver's folder: fine
    outcome = sw.execute_run(spec, tmp_path / "not-shared", token=token)
    assert outcome.status == "failed"
    assert "not shared with node" in outcome.error and "--storage" in outcome.error
    assert not (tmp_path / "not-shared").exists()
