"""The NIPs that ship with the package: they load, say how they were made, and develop unseen shots as recorded."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from neuralimaging.acquisition import nip, pretrained
from neuralimaging.errors import InputError

NAME = "dnet-nikon-d90"


def test_the_shipped_dnet_is_listed_and_small() -> None:
    assert NAME in pretrained.names()
    path = pretrained.weights_path(NAME)
    assert path.parent == pretrained.WEIGHTS_DIR
    assert path.stat().st_size < 5 * 2**20


@pytest.mark.parametrize("name", ["nothing", "../weights/dnet-nikon-d90", "/etc/passwd", ""])
def test_unknown_names_are_refused_naming_what_ships(name: str) -> None:
    with pytest.raises(InputError, match=NAME):
        pretrained.weights_path(name)


def test_load_builds_the_papers_dnet_with_every_weight() -> None:
    model = pretrained.load(NAME)
    reference = nip.create("dnet")
    assert type(model) is type(reference)
    assert not model.training
    state, shipped = reference.state_dict(), pretrained.load_state(pretrained.weights_path(NAME))
    assert set(shipped) == set(state)
    assert all(shipped[k].shape == state[k].shape for k in state)
    out = model(torch.rand(1, 4, 16, 16))
    assert out.shape == (1, 3, 32, 32)


def test_provenance_records_the_data_the_split_and_how_to_remake_it() -> None:
    record = pretrained.provenance(NAME)
    assert record["nip"] == "dnet"
    assert record["command"].startswith("neuralimaging train nip ")
    assert record["config"]["preset"] == "cpu" and record["summary"]["stopped"] == "max_epochs"
    assert record["init_run"]["step"] == 4500 and record["init_run"]["config"]["preset"] == "cpu"
    data = record["dataset"]
    assert data["camera"] == "nikon-d90"
    train, val, test = (set(data[k]) for k in ("train", "val", "test"))
    assert train and val and test
    assert not (train & val or train & test or val & test)
    scenes = {name: name.split("_")[1] for name in train | val | test}  # <camera>_<scene>[_left|_right]_<shot>
    assert not {scenes[n] for n in train} & {scenes[n] for n in test}
    assert 25.0 < record["summary"]["psnr"] < 60.0


def test_a_wrong_weights_file_is_a_one_line_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a safetensors file")
    with pytest.raises(InputError, match="broken.safetensors"):
        pretrained.load_state(broken)
    with pytest.raises(InputError, match="no such weights file"):
        pretrained.load_state(tmp_path / "missing.safetensors")


def test_the_shipped_dnet_develops_an_unseen_test_scene_as_recorded(tmp_path: Path, photo_paths) -> None:
    """A fresh full-size D90 shot of a test-split scene develops within a few dB of the validation figure.

    The scenes differ in difficulty (the test split measures about 2.5 dB below the validation scene), so
    the bound is loose; broken or mismatched weights land far below it.
    """
    from neuralimaging.acquisition.virtual_camera import synthesize
    from neuralimaging.data.dataset import Dataset, prepare
    from neuralimaging.experiments.fidelity import nip_fidelity

    record = pretrained.provenance(NAME)
    test_scene = next(p for p in photo_paths if Path(p).stem == "astronaut")
    assert any(n.split("_")[1] == "astronaut" for n in record["dataset"]["test"])
    synthesize([test_scene], "nikon-d90", tmp_path / "raw", shots_per_photo=1, seed=1234)
    report = prepare(tmp_path / "raw", tmp_path / "data", val_fraction=0.0, test_fraction=0.0)
    assert not report.failed
    samples = Dataset.load(tmp_path / "data").train
    measured = nip_fidelity(pretrained.load(NAME), samples)
    assert measured["psnr"] > record["summary"]["psnr"] - 6.0
    assert measured["ssim"] > 0.85  # the 16 test images average 0.90
