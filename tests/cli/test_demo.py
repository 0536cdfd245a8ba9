"""``neuralimaging demo``: arguments checked before any work starts."""

from __future__ import annotations

from neuralimaging.cli import main


def test_missing_sweep_file_is_refused_before_any_work(tmp_path, capsys) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--sweep", str(tmp_path / "MISSING.yaml"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"neuralimaging demo: error: --sweep {tmp_path / 'MISSING.yaml'}: sweep file not found"]
    assert not out.exists()
