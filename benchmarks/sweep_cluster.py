"""A sweep on one machine against the same sweep on a two-node Ray cluster, and with its worker node lost.

The sweep: an INet pre-training, then F and F+N runs that start from it (tiny settings, the shape of the
paper's grid). It runs three ways, in turn on the same machine, so the wall times compare as ratios:

1. ``local``: ``run_sweep(workers=2)``, two local processes with one thread each, runs in one folder;
2. ``two nodes``: a ``ray.cluster_utils.Cluster`` head and worker node (one CPU each, own staging folder),
   runs written through ``file://`` storage;
3. ``two nodes, worker lost``: the same, the worker node removed once one of its runs has a checkpoint in
   storage: Ray retries the run on the head node, where it resumes.

Ray's workers run at the local processes' priority here (``RAY_worker_niceness=0``; Ray's default is 15).
Prints a Markdown table (wall time, ratio to local, runs done, retried runs and the step they resumed from)
and one JSON line. Run by hand (minutes)::

    .venv/bin/python benchmarks/sweep_cluster.py [--epochs 90] [--out /tmp/sweep-cluster]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import tempfile
import threading
import time
from pathlib import Path

from neuralimaging.acquisition.virtual_camera import synthesize
from neuralimaging.data.dataset import prepare
from neuralimaging.experiments import storage as st
from neuralimaging.experiments import sweep as sw
from neuralimaging.experiments.rundir import RunDir
from neuralimaging.photos import bundled_photos

NIP = {"preset": "quick", "nip": "inet", "batch": 2, "patch": 16, "val_images": 2, "steps_per_epoch": 1,
       "epochs": 4, "validate_every": 2, "lr": 1e-3, "lr_schedule": "constant", "max_time_s": None}


def _sweep(data: Path, epochs: int) -> dict:
    joint = {"preset": "quick", "data": str(data), "nip_run": "{runs}/pre/inet/000", "patch": 16, "batch": 4,
             "epochs": epochs, "validate_every": 15, "checkpoint_every": 15, "val_patches": 8, "val_batch": 8,
             "val_images": 1}
    return {"name": "two-nodes", "resources": {"num_cpus": 1},
            "stages": [{"name": "pre", "task": "nip", "config": {**NIP, "data": str(data)}, "grid": {"nip": ["inet"]}},
                       {"name": "joint", "config": joint, "grid": {"mode": ["F", "F+N"]}}]}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _local(spec: dict, root: Path) -> dict:
    runs = root / "local"
    start = time.perf_counter()
    outcomes = sw.run_sweep(sw.expand(spec, runs_dir=runs), runs, workers=2, device="cpu")
    return {"wall_s": time.perf_counter() - start, "outcomes": outcomes}


def _checkpointed_on(store: st.Storage, node_id: str) -> str | None:
    for name in ("joint/F/000", "joint/FN/000"):
        lock = store.read_lock(name)
        if lock and lock.get("node") == node_id and store.read_bytes(f"{name}/checkpoints/LATEST"):
            return name
    return None


def _cluster(spec: dict, root: Path, lose_worker: bool) -> dict:
    import ray
    from ray.cluster_utils import Cluster

    label = "lost" if lose_worker else "cluster"
    os.environ[st.STAGING_ENV] = str(root / f"{label}-node-disks")
    # Ray starts its workers at nice 15; the local processes run at 0: on a machine busy with other work the
    # comparison would measure the scheduler, not the sweep.
    os.environ.setdefault("RAY_worker_niceness", "0")
    cluster = Cluster(initialize_head=True, connect=False,
                      head_node_args={"num_cpus": 1, "include_dashboard": False, "metrics_agent_port": _free_port()})
    worker = cluster.add_node(num_cpus=1, metrics_agent_port=_free_port())
    cluster.wait_for_nodes()
    store = st.Storage(root / f"{label}-storage")
    runs = root / f"{label}-driver-runs"
    result: dict = {"lost": None}
    try:
        def drive() -> None:
            start = time.perf_counter()
            result["outcomes"] = sw.run_sweep(sw.expand(spec, runs_dir=store.uri), runs, ray_address=cluster.address,
                                              storage=store.uri, retries=2, runtime_env=sw.package_runtime_env(),
                                              device="cpu", progress_every=3600.0)
            result["wall_s"] = time.perf_counter() - start

        driver = threading.Thread(target=drive)
        driver.start()
        if lose_worker:
            end = time.monotonic() + 900
            while time.monotonic() < end and driver.is_alive():
                name = _checkpointed_on(store, worker.node_id)
                if name:
                    result["lost"] = name
                    cluster.remove_node(worker)
                    break
                time.sleep(0.5)
        driver.join()
    finally:
        ray.shutdown()
        cluster.shutdown()
    retried = [o for o in result["outcomes"] if o.attempt > 1]
    result["retried"] = [{"run": o.name, "attempt": o.attempt, "resumed": o.resumed,
                          "steps": [r["step"] for r in RunDir(runs / o.name).read_metrics()]} for o in retried]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=90, help="steps of each joint run")
    parser.add_argument("--out", type=Path, default=None, help="working folder (default: a temporary one)")
    args = parser.parse_args()
    root = args.out or Path(tempfile.mkdtemp(prefix="sweep-cluster-"))
    root.mkdir(parents=True, exist_ok=True)
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load {os.getloadavg()[0]:.2f}, {os.cpu_count()} cores",
          flush=True)
    raws = synthesize(bundled_photos()[:5], "nikon-d90", root / "raw", shots_per_photo=2, seed=0, size=(96, 128))
    data = root / "prepared"
    report = prepare(root / "raw", data)
    if report.failed or len(raws) != 10:
        raise SystemExit(f"{data}: preparing the tiny dataset failed")
    spec = _sweep(data, args.epochs)
    rows = {"local (2 processes)": _local(spec, root),
            "two nodes (Ray, file:// storage)": _cluster(spec, root, lose_worker=False),
            "two nodes, worker node lost mid-run": _cluster(spec, root, lose_worker=True)}
    base = rows["local (2 processes)"]["wall_s"]
    print("\n| execution | wall time (s) | ratio to local | runs done | retried runs (attempt, resumed, metrics steps) |")
    print("|---|---|---|---|---|")
    record = {}
    for label, row in rows.items():
        done = sum(o.status in ("done", "skipped") for o in row["outcomes"])
        retried = "; ".join(f"{r['run']} (attempt {r['attempt']}, resumed {r['resumed']}, steps {r['steps']})"
                            for r in row.get("retried", [])) or "-"
        print(f"| {label} | {row['wall_s']:.1f} | {row['wall_s'] / base:.2f} | {done}/{len(row['outcomes'])} | {retried} |")
        record[label] = {"wall_s": row["wall_s"], "done": done, "runs": len(row["outcomes"]),
                         "retried": row.get("retried", []), "lost": row.get("lost")}
    print(f"\n(joint runs: {args.epochs} steps of 16x16 RAW patches, batch 4; one CPU per run; on the cluster "
          "every Ray worker also unpacks the package shipped by runtime_env and imports torch)")
    print(json.dumps(record))


if __name__ == "__main__":
    main()
