"""The results table from real tiny runs (``tiny_sweep_runs``): one row per run, axes, metrics, aggregates."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from neuralimaging.experiments import results


@pytest.fixture(scope="module")
def table(tiny_sweep_runs) -> pd.DataFrame:
    return results.collect(tiny_sweep_runs)


def _summary(runs, name) -> dict:
    return json.loads((runs / name / "summary.json").read_text())


def test_one_row_per_run_with_axes_and_metrics(table, tiny_sweep_runs) -> None:
    assert list(table["run"]) == [
        "pretrain/tiny/inet/000",
        "joint/tiny/inet/F/000", "joint/tiny/inet/F/001",
        "joint/tiny/inet/FN/ln-0.0100/000", "joint/tiny/inet/FN/ln-0.0100/001",
        "broken/tiny/inet/000",
    ]
    assert list(table.columns[:9]) == ["run", "stage", "task", "state", "camera", "nip", "mode", "lambda_nip", "repetition"]
    assert list(table["state"]) == ["done"] * 5 + ["failed"]
    assert list(table["task"]) == ["nip", "manipulation", "manipulation", "manipulation", "manipulation", "nip"]
    joint = table[table["stage"] == "joint"]
    assert list(joint["mode"]) == ["F", "F", "F+N", "F+N"]
    assert joint["lambda_nip"].isna().tolist() == [True, True, False, False]  # F: the paper's "-" row
    assert list(joint["repetition"]) == [0, 1, 0, 1]
    for _, row in joint.iterrows():  # the figures are the summaries' own
        summary = _summary(tiny_sweep_runs, row["run"])
        for key in ("accuracy", "psnr", "ssim", "wall_time_s", "psnr_paid"):
            assert row[key] == summary[key]
        assert row["summary.lambda_nip"] == summary["lambda_nip"]  # the run's own value, kept apart from the axis
    assert "confusion" not in table.columns  # lists stay in the run folders
    assert np.isnan(table.loc[table["run"] == "broken/tiny/inet/000", "psnr"]).all()


def test_aggregate_mean_std_over_repetitions(table, tiny_sweep_runs) -> None:
    agg = results.aggregate(table)
    joint = agg[agg["stage"] == "joint"].set_index("mode")
    assert list(joint.index) == ["F", "F+N"]
    assert joint.loc["F", "lambda_nip"] == "-" and joint.loc["F+N", "lambda_nip"] == 0.01
    for mode, names in (("F", ["F/000", "F/001"]), ("F+N", ["FN/ln-0.0100/000", "FN/ln-0.0100/001"])):
        for metric in ("accuracy", "psnr", "ssim"):
            values = np.array([_summary(tiny_sweep_runs, f"joint/tiny/inet/{n}")[metric] for n in names])
            assert joint.loc[mode, f"{metric}_mean"] == pytest.approx(values.mean())
            assert joint.loc[mode, f"{metric}_std"] == pytest.approx(values.std(ddof=1))
        assert joint.loc[mode, "n"] == 2
    assert "broken" not in set(agg["stage"])  # failed runs have no figures to aggregate
    assert "repetition_mean" not in agg.columns


def test_paper_layout(table) -> None:
    agg = results.aggregate(table)
    layout = results.paper_table(agg[agg["stage"] == "joint"])
    assert list(layout.columns) == [("inet", "accuracy"), ("inet", "psnr"), ("inet", "ssim")]
    assert set(layout.index) == {("tiny", 0.01), ("tiny", "-")}


def test_csv_and_parquet_round_trip(table, tmp_path) -> None:
    results.save_table(table, csv=tmp_path / "r.csv", parquet=tmp_path / "r.parquet")
    csv = pd.read_csv(tmp_path / "r.csv")
    parquet = pd.read_parquet(tmp_path / "r.parquet")
    for frame in (csv, parquet):
        assert list(frame["run"]) == list(table["run"])
        np.testing.assert_allclose(frame["psnr"].to_numpy(float), table["psnr"].to_numpy(float))
        np.testing.assert_allclose(frame["accuracy"].to_numpy(float), table["accuracy"].to_numpy(float))
    # the table read back aggregates to the same figures
    original, again = (results.aggregate(t) for t in (table, csv))
    original, again = (a[a["stage"] == "joint"].set_index("mode") for a in (original, again))
    for column in ("n", "accuracy_mean", "accuracy_std", "psnr_mean", "psnr_std"):
        np.testing.assert_allclose(again[column].to_numpy(float), original[column].to_numpy(float))


def test_run_made_without_a_sweep(tiny_sweep_runs, tmp_path) -> None:
    """A run folder without sweep-run.json gets its axes from config.yaml."""
    import shutil

    shutil.copytree(tiny_sweep_runs / "joint/tiny/inet/FN/ln-0.0100/000", tmp_path / "by-hand")
    (tmp_path / "by-hand" / "sweep-run.json").unlink()
    row = results.collect(tmp_path).iloc[0]
    assert (row["run"], row["mode"], row["lambda_nip"], row["state"]) == ("by-hand", "F+N", 0.01, "done")
    assert (row["task"], row["nip"], row["repetition"]) == ("manipulation", "inet", 0)  # nip from its nip_run


def test_not_a_folder(tmp_path) -> None:
    with pytest.raises(NotADirectoryError, match="not a runs folder"):
        results.collect(tmp_path / "nothing")


def test_empty_folder(tmp_path) -> None:
    table = results.collect(tmp_path)
    assert table.empty and list(table.columns) == ["run", "stage", "task", "state"]
    assert results.aggregate(table).empty


class _Unprintable:
    """A cell whose text cannot be made: the CSV writer fails part-way through the table."""

    def __str__(self) -> str:
        raise RuntimeError("cannot print this cell")

    __repr__ = __format__ = lambda self, *args: self.__str__()


def test_a_failed_write_leaves_the_old_table(tmp_path) -> None:
    path = tmp_path / "results.csv"
    path.write_text("run,accuracy\nold,0.5\n")
    good = pd.DataFrame({"run": [f"r{i}" for i in range(5000)], "note": pd.Series(["x"] * 5000, dtype=object)})
    bad = good.copy()
    bad.loc[4000, "note"] = _Unprintable()
    with pytest.raises(RuntimeError, match="cannot print this cell"):
        results.save_table(bad, csv=path)
    assert path.read_text() == "run,accuracy\nold,0.5\n"
    assert [p.name for p in tmp_path.iterdir()] == ["results.csv"]  # no temporary file left
    results.save_table(good, csv=path)
    assert len(pd.read_csv(path)) == 5000
