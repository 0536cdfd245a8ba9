"""``neuralimaging jpeg compare`` on real photos: table and JSON output, bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

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


def test_empty_folder_and_bombs_fail_alone(photo_files, tmp_path, capsys) -> None:
    """An empty folder, and 8- and 16-bit PNGs declaring 20000x20000 pixels, are listed as failures; the photos
    after them are still compared."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    bombs = []
    for depth in (8, 16):
        path = tmp_path / f"bomb{depth}.png"
        header = struct.pack(">IIBBBBB", 20000, 20000, depth, 2, 0, 0, 0)
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(10**6), 9))
                         + chunk(b"IEND", b""))
        bombs.append(str(path))
    (tmp_path / "empty").mkdir()
    code = main(["jpeg", "compare", str(tmp_path / "empty"), *bombs, *map(str, photo_files), "--json"])
    captured = capsys.readouterr()
    assert code == 1
    out = json.loads(captured.out)
    assert [r["image"] for r in out["images"]] == [str(p) for p in photo_files]
    assert sorted(Path(p).name for p in out["failed"]) == ["bomb16.png", "bomb8.png", "empty"]
    assert "3 of 5 images failed" in captured.err and "decompression bomb" in captured.err
