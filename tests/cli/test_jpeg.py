"""``neuralimaging jpeg compare`` on real photos: table and JSON output, bad inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from neuralimaging.cli import main


@pytest.fixture()
def photo_files(photos, tmp_path):
    """Two small PNG crops of the bundled photos (one of odd size)."""
    paths = []
    for i, (a, (h, w)) in enumerate(zip(photos[:2], [(64, 96), (45, 71)])):
        path = tmp_path / f"crop{i}.png"
        Image.fromarray(np.ascontiguousarray(a[:h, :w])).save(path)
        paths.append(path)
    return paths


def test_compare_json(photo_files, capsys) -> None:
    code = main(["jpeg", "compare", *map(str, photo_files), "--quality", "50", "--subsampling", "4:2:0", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["quality"], out["subsampling"], out["rounding"]) == (50, "4:2:0", "none")
    assert [r["image"] for r in out["images"]] == [str(p) for p in photo_files]
    assert all(r["psnr"] is None or r["psnr"] > 40 for r in out["images"])
    assert out["failed"] == []
    assert out["max_abs"] >= max(r["max_abs"] for r in out["images"])


def test_compare_table_and_rounding(photo_files, capsys) -> None:
    assert main(["jpeg", "compare", str(photo_files[0]), "--quality", "80", "--rounding", "sin"]) == 0
    text = capsys.readouterr().out
    assert "dJPEG (sin) vs libjpeg, quality 80, 4:4:4" in text
    assert "crop0.png" in text and "mean" in text


def test_missing_file_carries_on(photo_files, tmp_path, capsys) -> None:
    missing = tmp_path / "missing.png"
    code = main(["jpeg", "compare", str(missing), str(photo_files[0]), "--json"])
    captured = capsys.readouterr()
    assert code == 1
    assert len(json.loads(captured.out)["images"]) == 1
    assert "missing.png" in captured.err


def test_bad_quality_is_a_clean_error(photo_files, capsys) -> None:
    assert main(["jpeg", "compare", str(photo_files[0]), "--quality", "0"]) == 2
    assert "neuralimaging jpeg: error: --quality must be an integer in [1, 100], got 0" in capsys.readouterr().err
