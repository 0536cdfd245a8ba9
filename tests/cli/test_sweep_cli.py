"""``neuralimaging sweep run|status``, ``results`` and ``report`` from the command line.

Training here fails for real and fast (the dataset folder does not exist): the commands' plumbing, exit codes
and output are what is tested; figures from finished runs are tested in tests/experiments/.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from neuralimaging.cli import main
from neuralimaging.experiments.demo import demo_sweep_path
from neuralimaging.experiments.rundir import RunDir

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "sweeps"


@pytest.fixture
def failing_sweep(tmp_path) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({
        "name": "broken",
        "task": "nip",
        "config": {"preset": "quick", "data": "{sweep_dir}/no-such-dataset"},
        "grid": {"nip": ["inet"]},
        "repetitions": 2,
    }))
    return path


def test_dry_run_lists_the_paper_grid(capsys, tmp_path) -> None:
    assert main(["sweep", "run", str(EXAMPLES / "paper.yaml"), "--out", str(tmp_path / "runs"), "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == "1332 runs"
    assert out[0].startswith("pretrain/canon-eos-40d/inet/000  [neuralimaging.experiments.train_nip:train_nip]")
    assert any(line.startswith("joint/nikon-d90/dnet/FN/ln-0.2500/009 ") for line in out)
    assert not (tmp_path / "runs").exists()  # a dry run writes nothing


def test_demo_sweep_expands(capsys, tmp_path) -> None:
    assert main(["sweep", "run", str(demo_sweep_path()), "--out", str(tmp_path / "runs"), "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == "3 runs"
    assert out[0].startswith("pretrain/nikon-d90/")


def test_failures_status_results_report(failing_sweep, tmp_path, capsys) -> None:
    runs = tmp_path / "runs"
    assert main(["sweep", "run", str(failing_sweep), "--out", str(runs), "--device", "cpu"]) == 1
    captured = capsys.readouterr()
    assert "failed 2" in captured.out
    assert "failed     inet/000" in captured.err and "no-such-dataset" in captured.err

    assert main(["sweep", "status", str(runs)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == ["inet/000", "failed"]
    assert lines[-1] == "done 0, running 0, failed 2, pending 0 (of 2)"

    assert main(["results", str(runs), "--csv", str(tmp_path / "r.csv")]) == 0
    table = pd.read_csv(tmp_path / "r.csv")
    assert list(table["run"]) == ["inet/000", "inet/001"] and set(table["state"]) == {"failed"}

    assert main(["report", str(runs), "--out", str(tmp_path / "report.html")]) == 0
    out = capsys.readouterr().out
    assert "report: " in out and "(2 runs, 0 done, 0 figures)" in out
    assert "no-such-dataset" in (tmp_path / "report.html").read_text()

    # --skip-failed leaves them; exit code still says some runs failed
    assert main(["sweep", "run", str(failing_sweep), "--out", str(runs), "--skip-failed"]) == 1
    assert "failed 2" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["sweep", "run", "{tmp}/none.yaml", "--out", "{tmp}/r"], "none.yaml: sweep file not found"),
        (["sweep", "run", "{bad}", "--out", "{tmp}/r"], "bad.yaml: sweep stage"),
        (["sweep", "status", "{tmp}/nothing"], "nothing: not a runs folder"),
        (["results", "{tmp}/nothing"], "nothing: not a runs folder"),
        (["sweep", "run", "{demo}", "--out", "{tmp}/r", "--workers", "0"], "workers must be >= 1, got 0"),
        (["sweep", "run", "{demo}", "--out", "{tmp}/r", "--only", "NOSUCHRUN"], "--only 'NOSUCHRUN': no run"),
        (["sweep", "run", "{binary}", "--out", "{tmp}/r"], "binary.yaml: not a sweep file (not UTF-8 text)"),
        (["sweep", "run", "{code}", "--out", "{tmp}/r"], "task 'os:system' is not one of the toolkit's tasks"),
        (["sweep", "run", "{escape}", "--out", "{tmp}/r"], "cannot name a run folder"),
        (["sweep", "status", "{plan}"], "sweep-plan.json: run name '../../etc'"),
        (["results", "{plan}"], "sweep-plan.json: run name '../../etc'"),
        (["report", "{plan}"], "sweep-plan.json: run name '../../etc'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, message, tmp_path, capsys) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("stages:\n  - {name: a, grid: {mode: [X]}}\n")
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(bytes(range(256)) * 4)
    code = tmp_path / "code.yaml"
    code.write_text("task: os:system\nconfig: {command: 'touch pwned'}\n")
    escape = tmp_path / "escape.yaml"
    escape.write_text("task: nip\ngrid: {camera: ['..']}\n")
    plan = tmp_path / "planned"
    plan.mkdir()
    (plan / "sweep-plan.json").write_text('{"runs": [{"name": "../../etc"}]}')
    argv = [a.format(tmp=tmp_path, bad=bad, demo=demo_sweep_path(), binary=binary, code=code, escape=escape,
                     plan=plan) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"neuralimaging {argv[0]}: error: ") and message in err
    assert len(err.strip().splitlines()) == 1


def test_unfinished_runs_exit_1_and_are_listed(tmp_path, capsys) -> None:
    """A run held by a live executor elsewhere is not finished: the sweep says so and exits 1, not 0."""
    import json
    import os
    import socket

    from neuralimaging.experiments.sweep.state import _boot_id

    sweep = tmp_path / "s.yaml"
    sweep.write_text(yaml.safe_dump({"task": "nip", "config": {"data": "{sweep_dir}/none"}, "grid": {"nip": ["inet"]}}))
    runs = tmp_path / "runs"
    (runs / "inet/000").mkdir(parents=True)
    (runs / "inet/000/.running").write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                                                         "boot_id": _boot_id(), "started": 0}))
    assert main(["sweep", "run", str(sweep), "--out", str(runs)]) == 1
    captured = capsys.readouterr()
    assert "busy 1" in captured.out
    assert "1 of 1 runs did not finish:" in captured.err and "inet/000: busy" in captured.err


def test_json_outputs_and_status_figures(tiny_dataset, tmp_path, capsys) -> None:
    """``--json`` on ``sweep run``, ``sweep status`` and ``results``; status shows each run's step and latest
    validation figures (a run stopped half-way: its step and metrics so far)."""
    import json

    sweep = tmp_path / "s.yaml"
    nip = {"preset": "quick", "nip": "inet", "data": str(tiny_dataset), "batch": 2, "patch": 16, "val_images": 2,
           "steps_per_epoch": 1, "epochs": 4, "validate_every": 2, "lr": 1e-3, "lr_schedule": "constant",
           "max_time_s": None}
    sweep.write_text(yaml.safe_dump({"task": "nip", "config": nip, "grid": {"nip": ["inet"], "max_steps": [2, 9]}}, sort_keys=False))
    runs = tmp_path / "runs"
    assert main(["sweep", "run", str(sweep), "--out", str(runs), "--device", "cpu", "--json"]) == 1
    outcomes = json.loads(capsys.readouterr().out)
    assert [(o["name"], o["status"], o["attempt"]) for o in outcomes] == [
        ("inet/max_steps-2/000", "incomplete", 1), ("inet/max_steps-9/000", "done", 1)]

    assert main(["sweep", "status", str(runs), "--json"]) == 0
    states = {s["name"]: s for s in json.loads(capsys.readouterr().out)}
    stopped, done = states["inet/max_steps-2/000"], states["inet/max_steps-9/000"]
    assert (stopped["state"], stopped["step"], stopped["total"]) == ("pending", 2, 4)
    assert (done["state"], done["step"], done["total"]) == ("done", 4, 4)
    metrics = RunDir(runs / "inet/max_steps-9/000").read_metrics()[-1]
    assert done["metrics"] == {k: metrics[k] for k in ("psnr", "ssim", "val_loss")}

    assert main(["sweep", "status", str(runs)]) == 0
    line = next(l for l in capsys.readouterr().out.splitlines() if l.startswith("inet/max_steps-2/000"))
    assert "pending (resumable)  step 2/4  psnr " in line

    assert main(["results", str(runs), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["run"] for r in rows] == ["inet/max_steps-2/000", "inet/max_steps-9/000"]
    assert rows[1]["psnr"] == pytest.approx(RunDir(runs / "inet/max_steps-9/000").read_summary()["psnr"])
