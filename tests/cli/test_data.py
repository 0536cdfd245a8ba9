"""``neuralimaging data synth|prepare|cameras`` end to end on small sensors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from neuralimaging.acquisition.raw import read_raw
from neuralimaging.cli import main
from neuralimaging.data.dataset import Dataset


def test_synth_then_prepare(tmp_path: Path, photo_paths, capsys) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for path in photo_paths[:2]:
        Image.open(path).convert("RGB").save(photos / f"{path.stem}.png")
    raw = tmp_path / "raw"
    code = main(["data", "synth", "--camera", "canon-5d2", "--photos", str(photos), "--out", str(raw),
                 "--shots", "3", "--size", "48x64"])
    assert code == 0
    files = sorted(raw.glob("*.dng"))
    assert len(files) == 6 and read_raw(files[0]).mosaic.shape == (48, 64)
    assert "6 DNG files (0.02 MP)" in capsys.readouterr().out

    (raw / "zz_broken.dng").write_bytes(files[0].read_bytes()[:500])
    out = tmp_path / "prepared"
    code = main(["data", "prepare", "--raw-dir", str(raw), "--camera", "canon-5d2", "--out", str(out),
                 "--workers", "1"])
    captured = capsys.readouterr()
    assert code == 1  # one broken file, reported, the rest prepared
    assert "zz_broken.dng" in captured.err and "6 prepared" in captured.out
    data = Dataset.load(out)
    assert data.camera == "canon-5d2" and len(data.samples) == 6 and data.train and data.val
    assert json.loads((out / "dataset.json").read_text())["failed"]
    (raw / "zz_broken.dng").unlink()
    assert main(["data", "prepare", "--raw-dir", str(raw), "--camera", "canon-5d2", "--out", str(out)]) == 0
    assert "0 prepared, 6 already done" in capsys.readouterr().out


def test_synth_carries_on_past_a_bad_photo(tmp_path: Path, photo_paths, capsys) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.open(photo_paths[1]).convert("RGB").save(photos / "good.png")
    (photos / "bad.jpg").write_bytes(b"\xff\xd8\xff truncated")
    code = main(["data", "synth", "--camera", "nikon-d90", "--photos", str(photos), "--out", str(tmp_path / "raw"),
                 "--shots", "2", "--size", "32x48"])
    captured = capsys.readouterr()
    assert code == 1
    assert sorted(p.name for p in (tmp_path / "raw").glob("*.dng")) == [f"nikon-d90_good_0{k}.dng" for k in (0, 1)]
    assert "2 DNG files" in captured.out
    assert "1 of 2 photos failed" in captured.err and "bad.jpg" in captured.err


def test_synth_bad_size_is_one_line_error(tmp_path: Path, capsys) -> None:
    code = main(["data", "synth", "--camera", "nikon-d90", "--out", str(tmp_path), "--size", "47x64"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("neuralimaging data: error:") and "47x64" in err and "\n" not in err


def test_cameras_lists_every_profile(capsys) -> None:
    assert main(["data", "cameras"]) == 0
    out = capsys.readouterr().out
    for name in ("nikon-d90", "canon-5d2", "pentax-k5", "sony-a700"):
        assert name in out


def test_unknown_camera_is_rejected() -> None:
    with pytest.raises(SystemExit) as info:
        main(["data", "synth", "--camera", "leica-m9"])
    assert info.value.code == 2
