"""Sweeps: expansion and stable names, skip-finished and resume, failure isolation, status, Ray and processes.

Runs are real tiny NIP pre-trainings (``train_nip``) on the shared ``tiny_dataset``; the failing run fails for
real (a dataset folder that does not exist).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from neuralimaging.errors import InputError
from neuralimaging.experiments import sweep as sw
from neuralimaging.experiments.rundir import RunDir
from neuralimaging.experiments.sweep import execute as sw_execute
from neuralimaging.experiments.sweep import executors as sw_executors
from neuralimaging.experiments.sweep import state as sw_state

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "sweeps"

# A NIP pre-training that takes a second or two on one core (the quick preset, shrunk).
TINY_NIP = {
    "preset": "quick", "nip": "inet", "batch": 2, "patch": 16, "val_images": 2,
    "steps_per_epoch": 1, "epochs": 4, "validate_every": 2, "lr": 1e-3, "lr_schedule": "constant",
    "max_time_s": None,
}


def _nip_sweep(data, nips=("inet",), reps: int = 1, **extra) -> dict:
    return {"name": "t", "task": "nip", "config": {**TINY_NIP, "data": str(data), **extra},
            "grid": {"nip": list(nips)}, "repetitions": reps}


# -- expansion and naming ---------------------------------------------------------------------------------
class TestExpand:
    def test_paper_grid(self, tmp_path) -> None:
        sweep = sw.load_sweep(EXAMPLES / "paper.yaml", runs_dir=tmp_path)
        joint = [r for r in sweep.runs if r.stage == "joint"]
        pre = [r for r in sweep.runs if r.stage == "pretrain"]
        # 4 cameras x 3 NIPs x (F + 10 lambdas) x 10 repetitions (paper section 5.2, supplement Table 1)
        assert len(joint) == 4 * 3 * 11 * 10
        assert len(pre) == 4 * 3
        assert len({r.name for r in sweep.runs}) == len(sweep.runs)
        assert sweep.stages() == ["pretrain", "joint"]
        pattern = re.compile(r"joint/[a-z0-9-]+/(inet|unet|dnet)/(F|FN/ln-\d\.\d{4})/\d{3}")
        assert all(pattern.fullmatch(r.name) for r in joint)
        assert all(r.resources == {"num_cpus": 4, "num_gpus": 1} for r in sweep.runs)

    def test_names_and_configs(self, tmp_path) -> None:
        source = {
            "task": "manipulation",
            "config": {"preset": "quick", "data": "{sweep_dir}/d/{camera}", "nip_run": "{runs}/pre/{camera}/{nip}",
                       "seed": 7},
            "grid": {"camera": ["d90"], "nip": ["unet"], "mode": ["F", "F+N"], "lambda_nip": [0.1, 0.0005]},
            "repetitions": 3,
        }
        sweep = sw.expand(source, runs_dir=tmp_path / "runs", sweep_dir=tmp_path)
        names = [r.name for r in sweep.runs]
        assert names == (
            [f"d90/unet/F/{i:03d}" for i in range(3)]
            + [f"d90/unet/FN/ln-0.1000/{i:03d}" for i in range(3)]
            + [f"d90/unet/FN/ln-0.0005/{i:03d}" for i in range(3)]
        )
        f_run, fn_run = sweep.runs[1], sweep.runs[4]
        assert f_run.config == {"preset": "quick", "data": f"{tmp_path}/d/d90", "nip_run": f"{tmp_path}/runs/pre/d90/unet",
                                "seed": 8, "train": "fan"}
        assert fn_run.config["train"] == "fan,nip" and fn_run.config["lambda_nip"] == 0.1 and fn_run.config["seed"] == 8
        assert "nip" not in fn_run.config and "camera" not in fn_run.config  # labels only for this task
        assert fn_run.axes == {"camera": "d90", "nip": "unet", "mode": "F+N", "lambda_nip": 0.1, "repetition": 1}
        # stable: the same file expands to the same names and configs
        again = sw.expand(source, runs_dir=tmp_path / "runs", sweep_dir=tmp_path)
        assert again.runs == sweep.runs

    def test_mapping_values_and_dotted_axes(self, tmp_path) -> None:
        source = {"task": "nip", "config": {"nip_options": {"width": 8}},
                  "grid": {"camera": [{"name": "Canon 40D", "data": "/x/canon"}], "nip_options.width": [8, 16], "lr": [0.001]}}
        runs = sw.expand(source, runs_dir=tmp_path).runs
        assert [r.name for r in runs] == ["Canon-40D/nip_options.width-8/lr-0.001/000", "Canon-40D/nip_options.width-16/lr-0.001/000"]
        assert runs[1].config == {"nip_options": {"width": 16}, "data": "/x/canon", "lr": 0.001, "seed": 0}

    @pytest.mark.parametrize(
        "source, message",
        [
            ({"grid": {"mode": ["G"]}}, "mode must be one of"),
            ({"grid": {"lambda_nip": [-1]}}, "lambda_nip values must be numbers >= 0"),
            ({"grid": {"nip": []}}, "non-empty list"),
            ({"grid": {"nip": ["a", "a"]}}, "same name"),
            ({"repetitions": 0}, "repetitions must be an integer >= 1"),
            ({"task": "bogus"}, "task must be one of"),
            ({"colour": 1}, "unknown keys"),
            ({"stages": [{"name": "a"}, {"name": "a"}]}, "share the name"),
            ({"stages": [{"name": "a/b"}]}, "stage name"),
            ([1, 2], "must be a YAML mapping"),
        ],
    )
    def test_bad_sweeps(self, source, message, tmp_path) -> None:
        with pytest.raises(InputError, match=message):
            sw.expand(source, runs_dir=tmp_path)

    def test_bad_yaml_names_file(self, tmp_path) -> None:
        path = tmp_path / "bad.yaml"
        path.write_text("grid: [unclosed\n")
        with pytest.raises(InputError, match="bad.yaml: not valid YAML"):
            sw.load_sweep(path, runs_dir=tmp_path)


def test_find_runs_and_status_see_the_same_folders(tmp_path) -> None:
    # planned runs first (in plan order, even before they start), then run folders found outside the plan;
    # checkpoint folders are not runs
    runs = tmp_path / "runs"
    (runs / "b/000").mkdir(parents=True)
    (runs / "b/000/config.yaml").write_text("nip: inet\n")
    (runs / "c/000/checkpoints/step-2").mkdir(parents=True)
    (runs / "c/000/checkpoints/step-2/config.yaml").write_text("nip: inet\n")
    (runs / "c/000/summary.json").write_text("{}\n")
    (runs / sw.PLAN_FILE).write_text(json.dumps({"runs": [{"name": "z/000"}, {"name": "b/000"}]}))
    assert sw.find_runs(runs) == ["z/000", "b/000", "c/000"]
    assert [(s.name, s.state) for s in sw.sweep_status(runs)] == [("z/000", "pending"), ("b/000", "pending"),
                                                                   ("c/000", "done")]
    with pytest.raises(NotADirectoryError, match="not a runs folder"):
        sw.sweep_status(runs / "b/000/config.yaml")


# -- execution -------------------------------------------------------------------------------------------
def test_skip_finished_and_resume_interrupted(tiny_dataset, tmp_path) -> None:
    runs = tmp_path / "runs"
    # the first execution stops after 2 of 4 steps (train_nip's max_steps: a simulated kill with a checkpoint)
    interrupted = sw.expand(_nip_sweep(tiny_dataset, max_steps=2), runs_dir=runs)
    [outcome] = sw.run_sweep(interrupted, runs)
    assert outcome.status == "incomplete" and not outcome.resumed
    state = sw.run_state(runs / "inet/000", "inet/000")
    assert state.state == "pending" and state.resumable
    assert [s.state for s in sw.sweep_status(runs)] == ["pending"]

    full = sw.expand(_nip_sweep(tiny_dataset), runs_dir=runs)
    [outcome] = sw.run_sweep(full, runs)
    assert outcome.status == "done" and outcome.resumed
    summary = RunDir(runs / "inet/000").read_summary()
    assert summary["steps"] == 4
    assert [r["step"] for r in RunDir(runs / "inet/000").read_metrics()] == [0, 2, 4]

    mtime = (runs / "inet/000/summary.json").stat().st_mtime_ns
    [outcome] = sw.run_sweep(full, runs)
    assert outcome.status == "skipped"
    assert (runs / "inet/000/summary.json").stat().st_mtime_ns == mtime
    assert [s.state for s in sw.sweep_status(runs)] == ["done"]


def test_failing_run_is_isolated(tiny_dataset, tmp_path) -> None:
    runs = tmp_path / "runs"
    source = _nip_sweep(tiny_dataset)
    source["grid"] = {"camera": [{"name": "missing", "data": str(tmp_path / "no-such-dataset")},
                                 {"name": "tiny", "data": str(tiny_dataset)}]}
    sweep = sw.expand(source, runs_dir=runs)
    outcomes = {o.name: o for o in sw.run_sweep(sweep, runs)}
    assert outcomes["missing/000"].status == "failed"
    assert "no-such-dataset" in outcomes["missing/000"].error
    assert outcomes["tiny/000"].status == "done"
    error = (runs / "missing/000/error.txt").read_text()
    assert "Traceback" in error and "no-such-dataset" in error
    states = {s.name: s for s in sw.sweep_status(runs)}
    assert states["missing/000"].state == "failed" and "no-such-dataset" in states["missing/000"].error
    assert states["tiny/000"].state == "done"
    assert not (runs / "missing/000/.running").exists()
    # --skip-failed leaves it failed; the default retries it (and it fails again, for real)
    skipped = {o.name: o.status for o in sw.run_sweep(sweep, runs, retry_failed=False)}
    assert skipped == {"missing/000": "failed", "tiny/000": "skipped"}
    assert (runs / "missing/000/error.txt").read_text() == error
    again = {o.name: o.status for o in sw.run_sweep(sweep, runs)}
    assert again == {"missing/000": "failed", "tiny/000": "skipped"}


def test_running_state_and_busy(tiny_dataset, tmp_path) -> None:
    runs = tmp_path / "runs"
    [spec] = sw.expand(_nip_sweep(tiny_dataset), runs_dir=runs).runs
    folder = runs / spec.name
    folder.mkdir(parents=True)
    with sw_execute._Heartbeat(folder):  # another executor holds the run
        assert sw.run_state(folder).state == "running"
        assert sw.execute_run(spec, runs).status == "busy"
    assert sw.run_state(folder).state == "pending"
    lock = json.dumps({"host": "gone", "pid": 1})
    (folder / sw.LOCK_FILE).write_text(lock)  # a heartbeat left by a killed executor goes stale
    import os
    import time

    old = time.time() - 2 * sw.STALE_AFTER_S
    os.utime(folder / sw.LOCK_FILE, (old, old))
    assert sw.run_state(folder).state == "pending"
    assert sw.execute_run(spec, runs).status == "done"


def test_stages_and_only(tiny_dataset, tmp_path) -> None:
    """Stages run in file order (the joint stage of ``tiny_sweep_runs`` reads the pre-trained NIP of the first
    stage); ``only`` selects runs by name prefix."""
    runs = tmp_path / "runs"
    first = {k: v for k, v in _nip_sweep(tiny_dataset).items() if k in ("task", "config", "grid")}
    source = {"stages": [{"name": "a", **first}, {"name": "b", **first}]}
    sweep = sw.expand(source, runs_dir=runs)
    assert [r.name for r in sweep.runs] == ["a/inet/000", "b/inet/000"]
    outcomes = sw.run_sweep(sweep, runs, only=["b"])
    assert [o.name for o in outcomes] == ["b/inet/000"]  # --only selects by name prefix
    outcomes = sw.run_sweep(sweep, runs)
    assert sorted((o.name, o.status) for o in outcomes) == [("a/inet/000", "done"), ("b/inet/000", "skipped")]


def test_ray_local_two_runs(tiny_dataset, tmp_path) -> None:
    ray = pytest.importorskip("ray")
    runs = tmp_path / "runs"
    sweep = sw.expand({**_nip_sweep(tiny_dataset, reps=2), "resources": {"num_cpus": 1}}, runs_dir=runs)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        outcomes = sw.run_sweep(sweep, runs, ray_address="local")
    finally:
        ray.shutdown()
    assert sorted(o.name for o in outcomes) == ["inet/000", "inet/001"]
    assert all(o.status == "done" for o in outcomes), outcomes
    for name, seed in (("inet/000", 0), ("inet/001", 1)):
        assert RunDir(runs / name).read_config()["seed"] == seed
        assert RunDir(runs / name).read_summary()["steps"] == 4
    # seeds differ, so the repetitions differ
    assert RunDir(runs / "inet/000").read_summary()["psnr"] != RunDir(runs / "inet/001").read_summary()["psnr"]


@pytest.mark.slow  # two spawned processes importing torch: ~15-30 s on the shared 2-core machine
def test_worker_processes(tiny_dataset, tmp_path) -> None:
    runs = tmp_path / "runs"
    source = _nip_sweep(tiny_dataset)
    source["grid"] = {"camera": [{"name": "missing", "data": str(tmp_path / "nothing")},
                                 {"name": "tiny", "data": str(tiny_dataset)}]}
    sweep = sw.expand(source, runs_dir=runs)
    outcomes = {o.name: o.status for o in sw.run_sweep(sweep, runs, workers=2)}
    assert outcomes == {"missing/000": "failed", "tiny/000": "done"}
    assert yaml.safe_load((runs / "tiny/000/config.yaml").read_text())["data"] == str(tiny_dataset)


# -- reliability: names stay inside the runs folder, tasks come from the toolkit, failures stay local -----
PLUGIN = '''
import json, os, pathlib, signal


def task(config, run_dir, **kwargs):
    """Writes its summary, or dies the way a process killed for memory does."""
    if config.get("die"):
        os.kill(os.getpid(), signal.SIGKILL)
    pathlib.Path(run_dir, "summary.json").write_text(json.dumps({"value": config.get("value", 0)}))
'''


@pytest.fixture
def plugin(tmp_path, monkeypatch) -> str:
    """A task module outside the toolkit (importable here and in spawned workers): ``ni_plugin_tasks:task``."""
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "ni_plugin_tasks.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(folder))
    return "ni_plugin_tasks:task"


class TestPathEscape:
    @pytest.mark.parametrize(
        "source, message",
        [
            ({"stages": [{"name": "..", "task": "nip"}]}, "stage name '..'"),
            ({"task": "nip", "grid": {"camera": [".."]}}, "cannot name a run folder"),
            ({"task": "nip", "grid": {"data": [{"name": "..", "data": "x"}]}}, "cannot name a run folder"),
        ],
    )
    def test_names_that_would_leave_the_runs_folder_are_refused(self, source, message, tmp_path) -> None:
        with pytest.raises(InputError, match=message):
            sw.expand(source, runs_dir=tmp_path)

    @pytest.mark.parametrize("name", ["../outside", "/etc", "a/../../outside", "a//b", "a\\\\..\\\\b"])
    def test_plan_names_outside_are_refused(self, name, tmp_path) -> None:
        runs = tmp_path / "runs"
        runs.mkdir()
        (runs / sw.PLAN_FILE).write_text(json.dumps({"runs": [{"name": "ok/000"}, {"name": name}]}))
        with pytest.raises(InputError, match="sweep-plan.json: run name"):
            sw.sweep_status(runs)

    def test_a_link_leading_outside_is_refused(self, tmp_path) -> None:
        runs, outside = tmp_path / "runs", tmp_path / "outside"
        runs.mkdir()
        outside.mkdir()
        (runs / "linked").symlink_to(outside)
        (runs / sw.PLAN_FILE).write_text(json.dumps({"runs": [{"name": "linked/000"}]}))
        with pytest.raises(InputError, match="leaves the folder"):
            sw.find_runs(runs)
        spec = sw.RunSpec("linked/000", "", sw.TASKS["nip"], {}, {})
        with pytest.raises(InputError, match="leaves the folder"):
            sw.execute_run(spec, runs)
        assert list(outside.iterdir()) == []

    @pytest.mark.parametrize("text", ['{"runs": [1, 2]}', '{"runs": "all"}', "[]", "\x00\x01binary", '{"runs": [{"x": 1}]}'])
    def test_malformed_plan_is_one_line_error(self, text, tmp_path) -> None:
        runs = tmp_path / "runs"
        runs.mkdir()
        (runs / sw.PLAN_FILE).write_text(text)
        with pytest.raises(InputError, match="sweep-plan.json: not a sweep plan"):
            sw.find_runs(runs)


class TestTasks:
    def test_tasks_of_other_modules_need_an_explicit_opt_in(self, plugin, tmp_path) -> None:
        for task in ("os:system", plugin, "subprocess:run"):
            with pytest.raises(InputError, match="not one of the toolkit's tasks .*--plugin"):
                sw.expand({"task": task, "grid": {"value": [1]}}, runs_dir=tmp_path)
        sweep = sw.expand({"task": plugin, "grid": {"value": [1]}}, runs_dir=tmp_path, plugins=[plugin])
        assert [o.status for o in sw.run_sweep(sweep, tmp_path)] == ["done"]
        # the toolkit's own tasks need no opt-in, by name or by their module:function
        assert sw.expand({"task": sw.TASKS["nip"]}, runs_dir=tmp_path).runs[0].task == sw.TASKS["nip"]


def test_one_dead_worker_fails_only_its_run(plugin, tmp_path) -> None:
    """A worker process killed (as for memory) under workers=2 fails its run; the others finish."""
    runs = tmp_path / "runs"
    source = {"task": plugin, "grid": {"case": [{"name": "a", "value": 1}, {"name": "killed", "die": True},
                                                 {"name": "c", "value": 3}, {"name": "d", "value": 4}]}}
    sweep = sw.expand(source, runs_dir=runs, plugins=[plugin])
    outcomes = {o.name: o for o in sw.run_sweep(sweep, runs, workers=2)}
    assert {n: o.status for n, o in outcomes.items()} == {"a/000": "done", "killed/000": "failed", "c/000": "done",
                                                          "d/000": "done"}
    assert "worker process died (exit code -9)" in outcomes["killed/000"].error
    assert json.loads((runs / "d/000/summary.json").read_text()) == {"value": 4}
    assert sw.run_state(runs / "killed/000").state == "failed"


def test_a_lock_left_by_a_killed_executor_is_taken_over_at_once(plugin, tmp_path) -> None:
    import os
    import socket
    import subprocess
    import sys

    runs = tmp_path / "runs"
    [spec] = sw.expand({"task": plugin}, runs_dir=runs, plugins=[plugin]).runs
    folder = runs / spec.name
    folder.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock = {"host": socket.gethostname(), "pid": int(dead.stdout), "boot_id": sw_state._boot_id(), "started": 0}
    (folder / sw.LOCK_FILE).write_text(json.dumps(lock))  # fresh mtime, but its owner is gone
    assert sw.run_state(folder).state == "pending"
    assert sw.execute_run(spec, runs).status == "done"
    # a live owner on this host (this process) still holds its run, as does an owner on another host
    for owner in ({**lock, "pid": os.getpid()}, {**lock, "host": "elsewhere"}):
        (folder / "summary.json").unlink(missing_ok=True)
        (folder / sw.LOCK_FILE).write_text(json.dumps(owner))
        assert sw.run_state(folder).state == "running"
        assert sw.execute_run(spec, runs).status == "busy"


def test_later_stage_waits_for_an_unfinished_nip_run(tiny_dataset, tmp_path) -> None:
    """A pre-training stopped early leaves its joint runs blocked (not started, not done) until it finishes."""
    runs = tmp_path / "runs"
    joint = {"preset": "quick", "data": str(tiny_dataset), "nip_run": "{runs}/pre/inet/000", "patch": 16, "batch": 4,
             "epochs": 2, "validate_every": 2, "checkpoint_every": 2, "val_patches": 4, "val_batch": 4}

    def sweep(**nip_extra):
        pre = {"name": "pre", "task": "nip", "config": {**TINY_NIP, "data": str(tiny_dataset), **nip_extra},
               "grid": {"nip": ["inet"]}}
        return sw.expand({"stages": [pre, {"name": "joint", "config": joint, "grid": {"mode": ["F", "F+N"]}}]},
                         runs_dir=runs)

    outcomes = {o.name: o for o in sw.run_sweep(sweep(max_steps=2), runs)}
    assert outcomes["pre/inet/000"].status == "incomplete"
    assert {outcomes[n].status for n in ("joint/F/000", "joint/FN/000")} == {"blocked"}
    assert "waits for its NIP run" in outcomes["joint/F/000"].error
    assert not (runs / "joint").exists()
    outcomes = {o.name: o.status for o in sw.run_sweep(sweep(), runs)}
    assert outcomes == {"pre/inet/000": "done", "joint/F/000": "done", "joint/FN/000": "done"}
    record = json.loads((runs / "joint/F/000/nip_source.json").read_text())
    assert record["finished"] and record["step"] == 4


def test_damaged_summary_is_not_done_and_is_rewritten(plugin, tmp_path) -> None:
    runs = tmp_path / "runs"
    sweep = sw.expand({"task": plugin, "grid": {"value": [5]}}, runs_dir=runs, plugins=[plugin])
    sw.run_sweep(sweep, runs)
    summary = runs / "value-5/000/summary.json"
    summary.write_text('{"value": ')  # torn
    state = sw.run_state(summary.parent)
    assert state.state == "pending" and "summary.json is damaged" in state.error
    assert [o.status for o in sw.run_sweep(sweep, runs)] == ["done"]
    assert json.loads(summary.read_text()) == {"value": 5}
    assert (summary.parent / "summary.json.damaged").read_text() == '{"value": '


def test_run_without_intact_checkpoint_is_not_resumable(tmp_path) -> None:
    import torch

    run = RunDir(tmp_path / "r")
    run.write_config({"nip": "inet"})
    run.save_checkpoint({"net": torch.nn.Linear(2, 2)}, state={"step": 1})
    (run.checkpoints / "step-000000001" / "net.safetensors").write_bytes(b"\0" * 10)
    state = sw.run_state(run.path)
    assert (state.state, state.resumable, state.error) == ("pending", False, "no intact checkpoint")


def test_only_must_name_a_run(tmp_path) -> None:
    sweep = sw.expand(_nip_sweep(tmp_path), runs_dir=tmp_path / "runs")
    with pytest.raises(InputError, match="--only 'NOSUCHRUN': no run of sweep"):
        sw.run_sweep(sweep, tmp_path / "runs", only=["NOSUCHRUN"])
    assert not (tmp_path / "runs").exists()


# -- live progress, retries of the same owner, scheduling by dependency ----------------------------------
def test_progress_reports_while_a_run_trains(tiny_dataset, tmp_path, monkeypatch) -> None:
    from neuralimaging.experiments import live

    monkeypatch.setattr(live, "WRITE_EVERY_S", 0.0)
    runs = tmp_path / "runs"
    sweep = sw.expand(_nip_sweep(tiny_dataset, epochs=60, validate_every=30), runs_dir=runs)
    reports: list[sw.RunProgress] = []
    [outcome] = sw.run_sweep(sweep, runs, on_progress=reports.append, progress_every=0.02)
    assert outcome.status == "done" and reports
    assert {r.name for r in reports} == {"inet/000"}
    steps = [r.step for r in reports]
    assert steps == sorted(steps) and 0 < steps[-1] <= 60
    last = reports[-1]
    assert last.total == 60 and "loss" in last.values
    assert last.line().startswith(f"step {last.step}/60 (") and ", loss " in last.line()


def test_a_retry_of_the_same_owner_takes_its_lock_over(tiny_dataset, tmp_path) -> None:
    """Ray retries a run whose node died under the same owner: the dead attempt's fresh lock does not block
    it, while another owner's fresh lock does."""
    runs = tmp_path / "runs"
    [spec] = sw.expand(_nip_sweep(tiny_dataset), runs_dir=runs).runs
    folder = runs / spec.name
    folder.mkdir(parents=True)
    lost = {"host": "lost-node", "pid": 1, "boot_id": "x", "owner": "sweep-1/inet/000", "attempt": 1}
    (folder / sw.LOCK_FILE).write_text(json.dumps(lost))
    assert sw.run_state(folder).state == "running"
    assert sw.execute_run(spec, runs, owner="sweep-2/inet/000").status == "busy"
    outcome = sw.execute_run(spec, runs, owner="sweep-1/inet/000")
    assert (outcome.status, outcome.attempt) == ("done", 2)
    assert not (folder / sw.LOCK_FILE).exists()


def test_runs_start_when_their_own_nip_run_is_done(tmp_path) -> None:
    """No barrier between stages: the joint run of the fast NIP starts while the slow NIP still trains; the
    joint run of a failed NIP is blocked."""
    runs = tmp_path / "runs"
    source = {"stages": [
        {"name": "pre", "task": "nip", "grid": {"nip": ["slow", "fast", "bad"]}},
        {"name": "joint", "config": {"nip_run": "{runs}/pre/{nip}/000"}, "grid": {"nip": ["slow", "fast", "bad"]}},
    ]}
    sweep = sw.expand(source, runs_dir=runs)
    events: list[str] = []
    finishing = iter(["pre/fast/000", "pre/bad/000", "joint/fast/000", "pre/slow/000", "joint/slow/000"])
    status = {"pre/bad/000": "failed"}
    ctx = sw_executors._Context(runs, "cpu", None, "o", None, lambda o: events.append(f"{o.status} {o.name}"),
                      lambda spec: events.append(f"start {spec.name}"))

    def collect(active, timeout):
        name = next(finishing)
        assert name in active
        return [(name, sw.RunOutcome(name, status.get(name, "done")))]

    outcomes = sw_executors._schedule(sweep.runs, ctx, capacity=3, launch=lambda spec: spec.name, collect=collect)
    assert len(outcomes) == 6
    assert events.index("start joint/fast/000") < events.index("done pre/slow/000")
    assert "blocked joint/bad/000" in events and "start joint/bad/000" not in events
    assert events[-1] == "done joint/slow/000"


def test_paper_modes_name_the_trainers_modes() -> None:
    """``sweep.MODES`` (F, F+N -> config ``train`` value, run-name token) is not a copy of the trainer's
    ``MODES`` (``train`` value -> modules trained): its ``train`` values are exactly the trainer's modes."""
    from neuralimaging.experiments.train_manipulation import MODES, resolve_config

    assert sorted(train for train, _ in sw.MODES.values()) == sorted(MODES)
    for train, _ in sw.MODES.values():
        assert resolve_config({"data": "d", "nip_run": "n", "train": train})["train"] == train
