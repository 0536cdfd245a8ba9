"""Dataset preparation: stacks and python-ISP targets, resumable, broken files skipped, deterministic split."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from neuralimaging.acquisition.bayer import normalize
from neuralimaging.acquisition.isp import develop_rggb
from neuralimaging.acquisition.raw import read_raw
from neuralimaging.acquisition.virtual_camera import synthesize
from neuralimaging.data.dataset import Dataset, _split, prepare
from neuralimaging.errors import InputError


@pytest.fixture(scope="module")
def raw_dir(tmp_path_factory, photo_paths) -> Path:
    """5 photos x 2 shots of the (GBRG) nikon-d90 at 64x96, plus a truncated DNG and a text file named .nef."""
    folder = tmp_path_factory.mktemp("raw")
    paths = synthesize(photo_paths[:5], "nikon-d90", folder, shots_per_photo=2, seed=1, size=(64, 96))
    data = paths[0].read_bytes()
    (folder / "broken.dng").write_bytes(data[: len(data) // 3])
    (folder / "notes.nef").write_text("not a raw file")
    return folder


def test_prepare_writes_stacks_targets_and_split(tmp_path: Path, raw_dir: Path) -> None:
    out = tmp_path / "prepared"
    report = prepare(raw_dir, out)
    assert report.camera == "nikon-d90"  # from the virtual camera's sidecar
    assert report.total == 12 and len(report.prepared) == 10 and not report.skipped
    assert sorted(name for name, _ in report.failed) == ["broken.dng", "notes.nef"]
    assert all("\n" not in reason and reason.startswith(str(raw_dir)) for _, reason in report.failed)
    assert (report.train, report.val, report.test) == (6, 2, 2)

    data = Dataset.load(out)
    assert data.camera == "nikon-d90"
    assert (len(data.train), len(data.val), len(data.test)) == (6, 2, 2)
    assert data.split("test") == data.test and data.samples == data.train + data.val + data.test
    # shots of one scene stay on one side of the split
    scenes = {name: {s.meta["shot"]["scene"] for s in getattr(data, name)} for name in ("train", "val", "test")}
    assert len(scenes["val"]) == len(scenes["test"]) == 1
    assert not (scenes["train"] & scenes["val"] or scenes["train"] & scenes["test"] or scenes["val"] & scenes["test"])
    sample = data.train[0]
    raw = read_raw(sample.meta["source"])
    expected_stack = normalize(raw)
    assert sample.rggb.shape == (4, 31, 48) and sample.rggb.dtype == np.float32  # GBRG: one row cropped each end
    np.testing.assert_array_equal(sample.rggb, expected_stack)
    target = sample.target
    assert target.shape == (3, 62, 96) and target.dtype == np.float32
    reference = develop_rggb(expected_stack, raw.cam_to_srgb)
    np.testing.assert_allclose(target, np.round(reference * 255) / 255, atol=1e-6)  # rounded, not truncated
    assert sample.meta["cfa"] == "GBRG" and sample.meta["shape"] == [31, 48]


def test_prepare_is_resumable_and_idempotent(tmp_path: Path, raw_dir: Path) -> None:
    out = tmp_path / "prepared"
    first = prepare(raw_dir, out, camera="d90")
    index = json.loads((out / "dataset.json").read_text())
    # interrupt: lose one finished sample's marker
    (out / "meta" / f"{first.prepared[3]}.json").unlink()
    second = prepare(raw_dir, out, camera="d90")
    assert second.prepared == [first.prepared[3]] and len(second.skipped) == 9 and len(second.failed) == 2
    assert json.loads((out / "dataset.json").read_text()) == index
    third = prepare(raw_dir, out, camera="d90")
    assert not third.prepared and len(third.skipped) == 10
    with pytest.raises(InputError, match="other settings"):
        prepare(raw_dir, out, camera="d90", target_bits=16)


def test_16_bit_targets_and_uint16_stacks(tmp_path: Path, raw_dir: Path) -> None:
    out = tmp_path / "prepared16"
    prepare(raw_dir, out, target_bits=16, rggb_dtype="uint16", gamma="srgb")
    sample = Dataset.load(out).train[0]
    raw = read_raw(sample.meta["source"])
    stack = normalize(raw)
    np.testing.assert_allclose(sample.rggb, np.round(stack * 65535) / 65535, atol=1e-7)
    reference = develop_rggb(stack, raw.cam_to_srgb, gamma="srgb")
    assert np.abs(sample.target - reference).max() <= 0.5 / 65535 + 1e-6


def test_split_is_deterministic_and_proportional() -> None:
    metas = {f"img{i:03d}": {"shot": {}} for i in range(150)}
    train, val, test = _split(metas, 0.2, 0.0, seed=0)
    assert (len(train), len(val), len(test)) == (120, 30, 0)  # the paper's 120/30
    assert _split(metas, 0.2, 0.0, seed=0) == (train, val, test)
    assert _split(metas, 0.2, 0.0, seed=1)[1] != val
    train, val, test = _split(metas, 0.15, 0.2, seed=0)
    assert (len(train), len(val), len(test)) == (98, 22, 30)
    assert not (set(train) & set(val) or set(train) & set(test) or set(val) & set(test))


def test_split_keeps_scenes_together() -> None:
    """Shots of one scene (a stereo pair's two photos included) never straddle two splits."""
    metas = {f"{scene}_{k}": {"shot": {"scene": scene, "photo": f"{scene}_{k % 2}.png"}}
             for scene in "abcdefgh" for k in range(4)}
    train, val, test = _split(metas, 0.15, 0.2, seed=0)
    assert (len(train), len(val), len(test)) == (20, 4, 8)
    side = {name: split for split, names in (("train", train), ("val", val), ("test", test)) for name in names}
    for scene in "abcdefgh":
        assert len({side[f"{scene}_{k}"] for k in range(4)}) == 1


def test_bad_inputs(tmp_path: Path, raw_dir: Path) -> None:
    with pytest.raises(InputError, match="not a folder"):
        prepare(tmp_path / "nowhere", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no RAW files"):
        prepare(tmp_path / "empty", tmp_path / "out")
    with pytest.raises(InputError, match="target_bits"):
        prepare(raw_dir, tmp_path / "out", target_bits=12)
    with pytest.raises(InputError, match="not a prepared dataset"):
        Dataset.load(tmp_path)


def test_corrupt_dataset_files_are_named(tmp_path: Path) -> None:
    (tmp_path / "meta").mkdir()
    (tmp_path / "dataset.json").write_text(json.dumps({"camera": "c", "train": ["x"], "val": []}))
    (tmp_path / "meta" / "x.json").write_text("{broken")
    with pytest.raises(InputError, match=r"x\.json: corrupt sample metadata"):
        Dataset.load(tmp_path)
    (tmp_path / "meta" / "x.json").write_text(json.dumps({"rggb_file": "x.npy", "target_file": "x.png"}))
    (tmp_path / "x.npy").write_bytes(b"not numpy")
    (sample,) = Dataset.load(tmp_path).train
    with pytest.raises(InputError, match=r"x\.npy: not a readable RGGB stack"):
        sample.rggb
    (tmp_path / "dataset.json").write_text(json.dumps({"train": ["x"]}))
    with pytest.raises(InputError, match=r"dataset\.json: corrupt dataset index"):
        Dataset.load(tmp_path)


@pytest.mark.slow
def test_parallel_prepare_matches_serial(tmp_path: Path, raw_dir: Path) -> None:
    serial = prepare(raw_dir, tmp_path / "a")
    parallel = prepare(raw_dir, tmp_path / "b", workers=2)
    assert sorted(serial.prepared) == sorted(parallel.prepared) and len(parallel.failed) == 2
    for a, b in zip(Dataset.load(tmp_path / "a").samples, Dataset.load(tmp_path / "b").samples):
        np.testing.assert_array_equal(a.target, b.target)


def test_shared_name_stems_are_named(tmp_path: Path, raw_dir: Path) -> None:
    folder = tmp_path / "raw"
    folder.mkdir()
    first = min(raw_dir.glob("*.dng"))
    (folder / first.name).write_bytes(first.read_bytes())
    (folder / f"{first.stem}.NEF").write_bytes(first.read_bytes())
    with pytest.raises(InputError, match=re.escape(f"share a name stem ({first.stem}.NEF, {first.name}); rename")):
        prepare(folder, tmp_path / "out")
