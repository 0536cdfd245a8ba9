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
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, message, tmp_path, capsys) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("stages:\n  - {name: a, grid: {mode: [X]}}\n")
    argv = [a.format(tmp=tmp_path, bad=bad, demo=demo_sweep_path()) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"neuralimaging {argv[0]}: error: ") and message in err
    assert len(err.strip().splitlines()) == 1
