"""Sweeps on a real two-node Ray cluster on this machine: ``ray.cluster_utils.Cluster`` starts a head node and
a worker node (each its own raylet with one CPU and its own resources). Runs execute in each node's own
staging folder and reach the driver only through storage (``file://`` here, the code path of ``s3://``).

- a worker node killed mid-run: its run is retried on the head node, resumes from the checkpoint that reached
  storage, and its metrics go on from there (no step twice); a crashing run is isolated and listed;
- the driver killed mid-sweep and started again: finished runs are skipped, the interrupted one resumes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from neuralimaging.experiments import storage as st
from neuralimaging.experiments import sweep as sw
from neuralimaging.experiments.rundir import RunDir

ray = pytest.importorskip("ray")
pytest.importorskip("pyarrow")

# Two raylets, their agents and Ray workers importing torch: minutes on a shared 2-core machine, where a
# raylet can also time out waiting for its metrics agent; run with `pytest -m slow`.
pytestmark = pytest.mark.slow


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]

TINY_NIP = {"preset": "quick", "nip": "inet", "batch": 2, "patch": 16, "val_images": 2, "steps_per_epoch": 1,
            "epochs": 4, "validate_every": 2, "lr": 1e-3, "lr_schedule": "constant", "max_time_s": None}
EPOCHS, EVERY = 90, 15  # joint runs: long enough to be caught mid-run, a checkpoint every 15 steps


def _sweep(data: Path, broken: bool = False) -> dict:
    joint = {"preset": "quick", "data": str(data), "nip_run": "{runs}/pre/inet/000", "patch": 16, "batch": 4,
             "epochs": EPOCHS, "validate_every": EVERY, "checkpoint_every": EVERY, "val_patches": 8,
             "val_batch": 8, "val_images": 1}
    stages = [{"name": "pre", "task": "nip", "config": {**TINY_NIP, "data": str(data)}, "grid": {"nip": ["inet"]}},
              {"name": "joint", "config": joint, "grid": {"mode": ["F", "F+N"]}}]
    if broken:
        stages.append({"name": "broken", "task": "nip", "config": {**TINY_NIP, "data": str(data.parent / "missing")},
                       "grid": {"nip": ["inet"]}})
    return {"name": "two-nodes", "resources": {"num_cpus": 1}, "stages": stages}


@pytest.fixture
def cluster(tmp_path, monkeypatch):
    """A head node and a worker node (one CPU each); yields ``(cluster, head node id, worker node)``."""
    from ray.cluster_utils import Cluster

    monkeypatch.setenv(st.STAGING_ENV, str(tmp_path / "node-disks"))  # under it, one folder per node id
    monkeypatch.setenv("RAY_DEDUP_LOGS", "0")
    monkeypatch.setenv("RAY_worker_niceness", "0")  # Ray's default 15 starves the runs on a busy machine
    cluster = Cluster(initialize_head=True, connect=False,
                      head_node_args={"num_cpus": 1, "include_dashboard": False, "resources": {"head": 1},
                                      "metrics_agent_port": _free_port()})
    worker = cluster.add_node(num_cpus=1, resources={"worker": 1}, metrics_agent_port=_free_port())
    cluster.wait_for_nodes()
    try:
        yield cluster, cluster.head_node.node_id, worker
    finally:
        ray.shutdown()
        cluster.shutdown()


def _wait_until(condition, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _checkpointed_on(store: st.Storage, node_id: str):
    """A joint run that runs on ``node_id`` and has a checkpoint in storage, or None."""
    for name in ("joint/F/000", "joint/FN/000"):
        lock = store.read_lock(name)
        if lock and lock.get("node") == node_id and store.read_bytes(f"{name}/checkpoints/LATEST"):
            return name
    return None


def _steps(run: Path) -> list[int]:
    return [r["step"] for r in RunDir(run).read_metrics()]


EXPECTED = list(range(0, EPOCHS + 1, EVERY))


def test_lost_worker_node_run_is_retried_and_resumes(cluster, tiny_dataset, tmp_path) -> None:
    cluster, head_id, worker = cluster
    store = st.Storage(tmp_path / "storage")
    runs = tmp_path / "driver-runs"
    sweep = sw.expand(_sweep(tiny_dataset, broken=True), runs_dir=store.uri)
    result: dict = {}

    def drive() -> None:
        start = time.perf_counter()
        result["outcomes"] = sw.run_sweep(sweep, runs, ray_address=cluster.address, storage=store.uri, retries=2,
                                          runtime_env=sw.package_runtime_env(), on_progress=lambda p: None,
                                          progress_every=1.0)
        result["wall_s"] = time.perf_counter() - start

    driver = threading.Thread(target=drive)
    driver.start()
    killed = _wait_until(lambda: _checkpointed_on(store, worker.node_id), 240, "a checkpointed run on the worker")
    cluster.remove_node(worker)  # the worker node dies mid-run
    driver.join(timeout=400)
    assert not driver.is_alive()
    print(f"two-node sweep: {result['wall_s']:.1f} s")
    outcomes = {o.name: o for o in result["outcomes"]}
    assert outcomes.pop("broken/inet/000").status == "failed"  # isolated, listed
    assert {n: o.status for n, o in outcomes.items()} == {"pre/inet/000": "done", "joint/F/000": "done",
                                                          "joint/FN/000": "done"}
    retried = outcomes[killed]
    assert retried.attempt == 2 and retried.resumed and retried.node == head_id  # retried elsewhere, resumed
    assert _steps(runs / killed) == EXPECTED  # metrics go on from the checkpoint: no step twice
    assert RunDir(runs / killed).read_summary()["steps"] == EPOCHS
    # the worker node ran it in its own folder; the driver got it only through storage
    node_disk = next(p for p in (tmp_path / "node-disks").rglob(worker.node_id))
    assert (node_disk / killed / "config.yaml").is_file()
    assert f"nip_run: {store.uri}/pre/inet/000" in store.read_bytes(f"{killed}/config.yaml").decode()
    assert RunDir(runs / killed).read_config()["nip_run"] == str(runs / "pre/inet/000")
    assert "missing" in (runs / "broken/inet/000/error.txt").read_text()


def test_lost_driver_sweep_resumes(cluster, tiny_dataset, tmp_path) -> None:
    cluster, _, _ = cluster
    store = st.Storage(tmp_path / "storage")
    runs = tmp_path / "driver-runs"
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text(yaml.safe_dump(_sweep(tiny_dataset)))
    command = [sys.executable, "-m", "neuralimaging", "sweep", "run", str(sweep_file), "--out", str(runs),
               "--ray", cluster.address, "--storage", store.uri, "--json", "--device", "cpu"]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    _wait_until(lambda: store.summary_ok("pre/inet/000") and (
        store.read_bytes("joint/F/000/checkpoints/LATEST") or store.read_bytes("joint/FN/000/checkpoints/LATEST")),
        240, "a joint run with a checkpoint")
    os.kill(first.pid, signal.SIGKILL)  # the driver is lost mid-sweep
    first.wait()
    second = subprocess.run(command, capture_output=True, text=True, timeout=400)
    assert second.returncode == 0, second.stderr[-2000:]
    outcomes = {o["name"]: o for o in json.loads(second.stdout)}
    assert outcomes["pre/inet/000"]["status"] == "skipped"
    assert {outcomes[n]["status"] for n in ("joint/F/000", "joint/FN/000")} <= {"done", "skipped"}
    assert any(outcomes[n]["resumed"] for n in ("joint/F/000", "joint/FN/000"))
    for name in ("joint/F/000", "joint/FN/000"):
        assert _steps(runs / name) == EXPECTED
