"""``neuralimaging prnu``: fingerprint, match, localize and cross-pipeline through the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from neuralimaging.acquisition.virtual_camera import synthetic_shots
from neuralimaging.cli import main
from neuralimaging.forensics import localization, prnu
from neuralimaging.io import save_image

SIZE = 320


@pytest.fixture(scope="module")
def folders(tmp_path_factory, photos):
    """PNG shots of two synthetic cameras (known K): fingerprint, predictor and test folders."""
    root = tmp_path_factory.mktemp("prnu_cli")
    rng = np.random.default_rng(3)
    k_a, k_b = (rng.normal(0, 0.01, (SIZE, SIZE)).astype(np.float32) for _ in range(2))
    shots_a = synthetic_shots(photos[:6], k_a, 20, seed=1)
    shots_b = synthetic_shots(photos[6:], k_b, 2, seed=2)
    layout = {"train": shots_a[:12], "pred": shots_a[12:17], "test": shots_a[17:], "other": shots_b}
    for name, images in layout.items():
        for index, image in enumerate(images):
            save_image(root / name / f"{name}{index}.png", image, bits=16)
    return root


def test_fingerprint_match_localize(folders, tmp_path, capsys) -> None:
    model = tmp_path / "camera.npz"
    code = main(["prnu", "fingerprint", str(folders / "train"), "--out", str(model), "--predictor-images", str(folders / "pred"), "--window", "65"])
    assert code == 0 and model.is_file()
    assert "fingerprint 320x320 from 12 images" in capsys.readouterr().out
    _, predictor, meta = localization.load_camera_model(model)
    assert meta["sigma"] == predictor.sigma == prnu.DEFAULT_SIGMA == 3.0  # the default when --sigma is not given

    assert main(["prnu", "match", "--model", str(model), "--json", str(folders / "test"), str(folders / "other")]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    same = {r["image"].split("/")[-1]: r for r in rows}
    assert all(same[f"test{i}.png"]["same_camera"] and same[f"test{i}.png"]["pce"] > 600 for i in range(3))
    assert not any(same[f"other{i}.png"]["same_camera"] for i in range(2))
    # the matching settings reach prnu.match
    image = prnu.load_image(folders / "test" / "test0.png")
    k, _, _ = localization.load_camera_model(model)
    for flags, settings in ((["--no-weighting"], {"weighting": None, "saturation": None}), (["--grid-pce"], {"grid": 8})):
        assert main(["prnu", "match", "--model", str(model), "--json", *flags, str(folders / "test" / "test0.png")]) == 0
        pce = json.loads(capsys.readouterr().out)["pce"]
        assert pce == pytest.approx(prnu.match(k, image, **settings).pce, rel=1e-6)
        assert pce != pytest.approx(same["test0.png"]["pce"], rel=1e-3)

    out = tmp_path / "maps"
    assert main(["prnu", "localize", "--model", str(model), "--out", str(out), "--tamper", "128", str(folders / "test")]) == 0
    text = capsys.readouterr().out
    assert "mean best F1 over 3 images" in text
    assert sorted(p.name for p in out.iterdir()) == [f"test{i}_tampering.png" for i in range(3)]
    assert float(text.strip().splitlines()[-1].split()[-1]) > 0.4


def test_errors(folders, tmp_path, capsys) -> None:
    model = tmp_path / "nopred.npz"
    assert main(["prnu", "fingerprint", str(folders / "train" / "train0.png"), str(folders / "train" / "train1.png"), "--out", str(model)]) == 0
    capsys.readouterr()
    assert main(["prnu", "localize", "--model", str(model), "--out", str(tmp_path / "m"), str(folders / "test")]) == 2
    assert "no correlation predictor" in capsys.readouterr().err
    assert main(["prnu", "fingerprint", str(folders / "train" / "train0.png"), "--out", str(tmp_path / "x.npz")]) == 2
    assert "at least 2 images, got 1" in capsys.readouterr().err
    toolbox = tmp_path / "sigma5.npz"
    assert main(["prnu", "fingerprint", str(folders / "train" / "train0.png"), str(folders / "train" / "train1.png"), "--out", str(toolbox), "--sigma", "5"]) == 0
    assert localization.load_camera_model(toolbox)[2]["sigma"] == 5.0
    capsys.readouterr()
    small = tmp_path / "small.png"
    save_image(small, np.zeros((3, 64, 64), np.float32))
    # a batch carries on past a bad image and lists it at the end
    assert main(["prnu", "match", "--model", str(model), str(small), str(folders / "test" / "test0.png")]) == 1
    err = capsys.readouterr().err
    assert "small.png" in err and "differs from the fingerprint" in err
    assert main(["prnu", "match", "--model", str(tmp_path / "missing.npz"), str(small)]) == 2
    assert "no such camera model" in capsys.readouterr().err


def test_raw_domain_fingerprint_from_flat_fields(tmp_path, capsys) -> None:
    """data synth --flat-field -> prnu fingerprint on the DNGs -> prnu match of other RAW shots (and a bad one)."""
    flat, shots = tmp_path / "flat", tmp_path / "shots"
    assert main(["data", "synth", "--camera", "nikon-d90", "--flat-field", "6", "--size", "256x256", "--out", str(flat)]) == 0
    assert main(["data", "synth", "--camera", "nikon-d90", "--shots", "1", "--size", "256x256", "--out", str(shots)]) == 0
    assert main(["data", "synth", "--camera", "canon-5d2", "--shots", "1", "--size", "256x256", "--seed", "1",
                 "--out", str(tmp_path / "other")]) == 0
    capsys.readouterr()
    model = tmp_path / "d90.npz"
    assert main(["prnu", "fingerprint", str(flat), "--out", str(model)]) == 0
    assert "RAW-domain fingerprint 256x256 (Bayer mosaic) from 6 RAW files" in capsys.readouterr().out
    k, _, meta = localization.load_camera_model(model)
    assert meta["domain"] == "raw" and meta["weights"] == "auto"
    from neuralimaging.acquisition.virtual_camera import CAMERAS

    assert prnu.ncc(k, CAMERAS["nikon-d90"].with_size((256, 256)).prnu()) > 0.8
    (tmp_path / "other" / "broken.dng").write_bytes(b"II*\0" + b"\0" * 100)
    assert main(["prnu", "match", "--model", str(model), "--json", str(shots), str(tmp_path / "other")]) == 1
    captured = capsys.readouterr()
    rows = {r["image"].split("/")[-1]: r for r in map(json.loads, captured.out.splitlines())}
    assert all(r["pce"] > 2 * prnu.PCE_THRESHOLD for name, r in rows.items() if name.startswith("nikon"))  # 290-2066 measured
    assert not any(r["same_camera"] for name, r in rows.items() if name.startswith("canon"))
    assert len(rows) == 18 and "broken.dng" in captured.err
    one = next(shots.glob("*.dng"))
    assert main(["prnu", "match", "--model", str(model), "--json", "--grid-pce", str(one)]) == 0
    assert json.loads(capsys.readouterr().out)["pce"] == pytest.approx(prnu.match_raw(k, one, grid=8).pce, rel=1e-6)
    # a RAW-domain model matches RAW files only, and does not localize
    assert main(["prnu", "match", "--model", str(model), str(tmp_path / "x.png")]) == 2
    assert "expected a RAW file" in capsys.readouterr().err
    assert main(["prnu", "localize", "--model", str(model), "--out", str(tmp_path / "m"), str(shots)]) == 2
    assert "RAW-domain fingerprint" in capsys.readouterr().err
    assert main(["prnu", "fingerprint", str(flat), "--out", str(model), "--predictor-images", str(shots)]) == 2
    assert "--predictor-images" in capsys.readouterr().err


def test_cross_pipeline_command(tmp_path, capsys) -> None:
    from neuralimaging.acquisition.virtual_camera import synthesize

    raws = tmp_path / "raws"
    synthesize("default", "canon-5d2", raws, shots_per_photo=1, seed=0, size=(144, 144))
    out = tmp_path / "study"
    code = main(["prnu", "cross-pipeline", "--raw-dir", str(raws), "--pipelines", "python,libraw", "--out", str(out), "--crop", "128", "--split", "5,2,2", "--window", "33", "--tamper", "48"])
    assert code == 0
    text = capsys.readouterr().out
    assert "fingerprint correlation" in text and "true K" in text and "localization best F1" in text
    assert (out / "localization_examples.png").is_file()
    assert main(["prnu", "cross-pipeline", "--raw-dir", str(raws), "--pipelines", "python", "--out", str(out), "--split", "a,b"]) == 2


def test_match_bad_model_bomb_and_huge_search(folders, tmp_path, capsys) -> None:
    """An empty or broken model file is a one-line error; a decompression bomb among the images fails alone
    (the images after it are matched); a search larger than the image searches every shift."""
    import struct
    import zlib

    for content in (b"", b"PK\x03\x04 not a zip", b"\x93NUMPY garbage"):
        bad = tmp_path / "bad.npz"
        bad.write_bytes(content)
        assert main(["prnu", "match", "--model", str(bad), str(folders / "test")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "bad.npz: not a camera model file" in err[0]

    model = tmp_path / "camera.npz"
    train = [str(folders / "train" / f"train{i}.png") for i in range(2)]
    assert main(["prnu", "fingerprint", *train, "--out", str(model)]) == 0

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    bomb = tmp_path / "a-bomb.png"  # 16-bit: read by the toolkit's own PNG reader
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 16, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(bytes(120001) * 20, 9)) + chunk(b"IEND", b""))
    capsys.readouterr()
    good = folders / "test" / "test0.png"
    assert main(["prnu", "match", "--model", str(model), "--json", "--search", "100000", str(bomb), str(good)]) == 1
    captured = capsys.readouterr()
    assert [json.loads(line)["image"] for line in captured.out.splitlines()] == [str(good)]
    assert "a-bomb.png: " in captured.err and "20000x20000" in captured.err and "1 of 2 images failed" in captured.err
