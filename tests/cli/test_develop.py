"""``neuralimaging develop``: one PNG per RAW file, 8 or 16 bits, bad files listed with a non-zero exit."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from neuralimaging.acquisition.isp import develop
from neuralimaging.acquisition.virtual_camera import synthesize
from neuralimaging.cli import main
from neuralimaging.experiments.rundir import CheckpointWarning
from neuralimaging.io import load_image, read_pixels


@pytest.fixture(scope="module")
def dngs(tmp_path_factory, photo_paths) -> list[Path]:
    folder = tmp_path_factory.mktemp("dng")
    return synthesize(photo_paths[:2], "sony-a700", folder, shots_per_photo=1, seed=0, size=(64, 96))


@pytest.mark.parametrize("pipeline", ["python", "libraw"])
@pytest.mark.parametrize("bits", [8, 16])
def test_develop_writes_one_png_per_file(tmp_path: Path, dngs: list[Path], pipeline: str, bits: int) -> None:
    out = tmp_path / "out"
    code = main(["develop", "--pipeline", pipeline, *map(str, dngs), "--out", str(out), "--bits", str(bits)])
    assert code == 0
    for path in dngs:
        png = out / f"{path.stem}.png"
        pixels = read_pixels(png)
        assert pixels.shape == (64, 96, 3) and pixels.dtype == (np.uint8 if bits == 8 else np.uint16)
        expected = develop(path, pipeline)
        assert np.abs(load_image(png) - expected).max() <= 0.5 / (2**bits - 1) + 1e-6


def test_bad_files_are_listed_and_the_rest_developed(tmp_path: Path, dngs: list[Path], capsys) -> None:
    text = tmp_path / "readme.dng"
    text.write_text("plain text")
    missing = tmp_path / "missing.nef"
    code = main(["develop", str(dngs[0]), str(text), str(missing), "--out", str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert code == 1
    assert (tmp_path / "out" / f"{dngs[0].stem}.png").is_file()
    assert "2 of 3 files failed" in captured.err
    assert "readme.dng: " in captured.err and "not a RAW file (plain text)" in captured.err
    assert "missing.nef" in captured.err


def test_inputs_sharing_a_name_are_refused(tmp_path: Path, dngs: list[Path], capsys) -> None:
    twin = tmp_path / "twin" / dngs[0].name
    twin.parent.mkdir()
    twin.write_bytes(dngs[0].read_bytes())
    out = tmp_path / "out"
    assert main(["develop", str(dngs[0]), str(twin), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("neuralimaging develop: error:") and str(twin) in err and "same PNG" in err
    assert not out.exists()


def test_requires_out(dngs: list[Path]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["develop", str(dngs[0])])
    assert info.value.code == 2


def test_existing_pngs_are_kept_unless_overwrite(tmp_path: Path, dngs: list[Path], capsys) -> None:
    out = tmp_path / "out"
    out.mkdir()
    kept = out / f"{dngs[0].stem}.png"
    kept.write_bytes(b"a colleague's file")
    assert main(["develop", *map(str, dngs), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "1 of 2 files failed" in err and "exists; pass --overwrite" in err
    assert kept.read_bytes() == b"a colleague's file"
    assert read_pixels(out / f"{dngs[1].stem}.png").shape == (64, 96, 3)  # the other file is developed
    assert main(["develop", *map(str, dngs), "--out", str(out), "--overwrite"]) == 0
    assert read_pixels(kept).shape == (64, 96, 3)


def test_out_that_is_a_file_is_one_line_error(tmp_path: Path, dngs: list[Path], capsys) -> None:
    existing = tmp_path / "existing.txt"
    existing.write_text("keep me")
    assert main(["develop", str(dngs[0]), "--out", str(existing)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"neuralimaging develop: error: --out {existing}: exists and is not a folder"]
    assert existing.read_text() == "keep me"


def test_damaged_weights_fall_back_or_are_one_line_error(tmp_path: Path, tiny_dataset, tiny_nip_run, capsys) -> None:
    """The newest checkpoint damaged: the previous one is used, with a warning; every one damaged: one line."""
    run = tmp_path / "run"
    shutil.copytree(tiny_nip_run, run)
    raw = min((tiny_dataset.parent / "raw").glob("*.dng"))
    folders = sorted((run / "checkpoints").glob("step-*"))
    assert len(folders) >= 2
    weights = folders[-1] / "nip.safetensors"
    weights.write_bytes(weights.read_bytes()[:-7])
    argv = ["develop", "--pipeline", "inet", "--model", str(run), str(raw), "--device", "cpu"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main([*argv, "--out", str(tmp_path / "a")]) == 0
    assert any(issubclass(w.category, CheckpointWarning) and folders[-1].name in str(w.message) for w in caught)
    assert (tmp_path / "a" / f"{raw.stem}.png").is_file()
    for folder in folders[:-1]:
        weights = folder / "nip.safetensors"
        weights.write_bytes(weights.read_bytes()[:50])
    capsys.readouterr()
    assert main([*argv, "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("neuralimaging develop: error: ") and "no intact checkpoint" in err[0]
    assert not (tmp_path / "b").exists()
