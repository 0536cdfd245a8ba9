"""The cross-pipeline PRNU study on tiny virtual-camera DNGs: python, LibRaw and an INet run."""

from __future__ import annotations

import json

import numpy as np
import pytest

from neuralimaging.errors import InputError
from neuralimaging.experiments import prnu_study as cp

SENSOR, CROP, WINDOW, TAMPER = (272, 272), 256, 65, 96


@pytest.fixture(scope="module")
def raw_dir(tmp_path_factory):
    from neuralimaging.acquisition.virtual_camera import synthesize

    folder = tmp_path_factory.mktemp("raws") / "nikon"
    synthesize("default", "nikon-d90", folder, shots_per_photo=2, seed=0, size=SENSOR)
    return folder


@pytest.fixture(scope="module")
def inet_run(tmp_path_factory, raw_dir):
    """A real INet run folder (INet starts as bilinear demosaicing + the camera matrix + gamma)."""
    from neuralimaging.acquisition.nip import INet
    from neuralimaging.acquisition.raw import read_raw
    from neuralimaging.experiments.rundir import RunDir

    matrix = read_raw(cp.find_raws(raw_dir)[0]).cam_to_srgb
    run = RunDir(tmp_path_factory.mktemp("runs") / "inet")
    run.write_config({"nip": "inet", "nip_options": {"cam_to_srgb": np.asarray(matrix).tolist()}})
    run.save_checkpoint({"nip": INet(cam_to_srgb=matrix)}, {}, {"epoch": 0})
    return run.path


def test_develop_crops_sensor_aligned(raw_dir, inet_run) -> None:
    """Every pipeline's crop covers the same sensor pixels: the python ISP and INet differ only in the demosaic."""
    raws = cp.find_raws(raw_dir)[:2]
    python = cp.develop_crops(raws, cp.Pipeline("python", "python"), CROP)
    libraw = cp.develop_crops(raws, cp.Pipeline("libraw", "libraw"), CROP)
    inet = cp.develop_crops(raws, cp.Pipeline("inet", "nip", inet_run), CROP)
    for a, b, c in zip(python, libraw, inet, strict=True):
        assert a.shape == b.shape == c.shape == (3, CROP, CROP)
        aligned = np.corrcoef(a[1].ravel(), c[1].ravel())[0, 1]
        shifted = np.corrcoef(a[1, 1:, 1:].ravel(), c[1, :-1, :-1].ravel())[0, 1]
        assert aligned > 0.95 and aligned > shifted


def test_nip_crop_of_the_whole_gbrg_sensor(raw_dir, inet_run) -> None:
    """The nikon-d90 is GBRG: its RGGB crop loses a row and a column, the mirror-padded stack does not."""
    raws = cp.find_raws(raw_dir)[:1]
    [python] = cp.develop_crops(raws, cp.Pipeline("python", "python"), None)
    [inet] = cp.develop_crops(raws, cp.Pipeline("inet", "nip", inet_run), None)
    assert python.shape == inet.shape == (3, *SENSOR)
    aligned = np.corrcoef(python[1].ravel(), inet[1].ravel())[0, 1]
    shifted = np.corrcoef(python[1, 1:, 1:].ravel(), inet[1, :-1, :-1].ravel())[0, 1]
    assert aligned > 0.95 and aligned > shifted
    # the edge rows and columns, which the cropped stack lost, are developed like the others
    for a, b in ((python[:, 0], inet[:, 0]), (python[:, :, 0], inet[:, :, 0]), (python[:, -1], inet[:, -1])):
        assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.9
    [central] = cp.develop_crops(raws, cp.Pipeline("inet", "nip", inet_run), CROP)
    margin = (SENSOR[0] - CROP) // 2
    np.testing.assert_allclose(inet[:, margin : margin + CROP, margin : margin + CROP], central, atol=1e-6)


def test_study_outputs_and_figures(raw_dir, inet_run, tmp_path) -> None:
    out = tmp_path / "study"
    summary = cp.cross_pipeline(
        raw_dir, f"python,libraw,inet:{inet_run}", out, crop=CROP, split=(10, 4, 4), window=WINDOW, stride=8, tamper=TAMPER, progress=False
    )
    for name in ("results.json", "correlation.csv", "f1.csv", "pce.csv", "fingerprint_correlation.png", "localization_f1.png", "localization_examples.png"):
        assert (out / name).is_file(), name
    assert json.loads((out / "results.json").read_text())["f1"] == summary["f1"]
    assert sum(len(v) for v in summary["split"].values()) == 18 and len(summary["split"]["evaluation"]) == 4
    corr = np.array(summary["correlation"])
    np.testing.assert_allclose(np.diag(corr), 1.0, atol=1e-6)
    np.testing.assert_allclose(corr, corr.T, atol=1e-9)
    assert (corr > 0.3).all()  # same sensor: fingerprints of different pipelines agree (0.78 python/libraw)
    assert min(summary["correlation_with_true_k"]) > 0.1  # 0.21-0.32 measured at this size (0.18-0.29 with sigma 5)
    # F1 of calling every window tampered is the floor a working detector must beat
    ys = np.arange(WINDOW // 2, CROP - WINDOW // 2, 8)
    inside = ((ys >= CROP // 2 - TAMPER // 2) & (ys < CROP // 2 + TAMPER // 2)).mean() ** 2
    chance = 2 * inside / (1 + inside)
    f1 = np.array(summary["f1"])
    assert f1.shape == (3, 3) and np.diag(f1).mean() > chance + 0.1
    assert all(summary["pce"][label]["median"] > 20 for label in ("python", "libraw", "inet"))
    # developed crops are kept as 16-bit PNGs and reused by a rerun (resume)
    pngs = sorted((out / "developed" / "python").glob("*.png"))
    assert len(pngs) == 18
    stamps = [p.stat().st_mtime_ns for p in pngs]
    again = cp._developed(cp.find_raws(raw_dir), cp.Pipeline("python", "python"), CROP, out / "developed" / "python", device="cpu", progress=False)
    assert again == pngs and [p.stat().st_mtime_ns for p in pngs] == stamps


def test_bad_inputs(raw_dir, tmp_path) -> None:
    with pytest.raises(InputError, match="expected python, libraw or NAME:RUN_DIR"):
        cp.parse_pipelines("python,magic")
    with pytest.raises(InputError, match="not a run folder"):
        cp.parse_pipelines(f"unet:{tmp_path / 'missing'}")
    with pytest.raises(InputError, match="at least 4 RAW images"):
        cp.split_counts(3, (90, 30, 30))
    with pytest.raises(InputError, match="no RAW files"):
        cp.find_raws(tmp_path)
    with pytest.raises(InputError, match="crop"):
        cp.develop_crops(cp.find_raws(raw_dir)[:1], cp.Pipeline("python", "python"), 1024)
    assert [p.label for p in cp.parse_pipelines("python,python")] == ["python", "python#2"]
