"""Training settings are checked before anything runs: a bad value is a one-line InputError naming it."""

from __future__ import annotations

import pytest

from neuralimaging.acquisition import nip
from neuralimaging.errors import InputError
from neuralimaging.experiments.train_manipulation import resolve_config
from neuralimaging.experiments.train_nip import resolve_config as make_config


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"lr": "abc"}, "config lr must be a number > 0, got 'abc'"),
        ({"lr": 0}, "config lr must be a number > 0"),
        ({"lr": float("nan")}, "config lr must be"),
        ({"lr_min": -1}, "config lr_min must be a number >= 0"),
        ({"seed": "x"}, "config seed must be an integer >= 0"),
        ({"seed": 1.5}, "config seed must be"),
        ({"batch": "abc"}, "config batch must be a positive integer"),
        ({"max_time_s": -1}, "config max_time_s must be a number >= 0 or null, got -1"),
        ({"max_steps": -2}, "config max_steps must be an integer >= 0 or null"),
        ({"val_images": 0}, "config val_images must be a positive integer or null"),
        ({"patch": 1}, "config patch must be an integer >= 2"),
        ({"nip": "unet", "patch": 7}, "config patch must be a multiple of 16 for unet"),
        ({"nip_options": {"width": -3}}, "InputError"),
        ({"nip": "unet", "nip_options": {"width": -3}}, "nip_options width must be a positive integer, got -3"),
        ({"nip": "unet", "nip_options": {"baseline": "foo"}}, "nip_options baseline must be"),
        ({"nip": "inet", "nip_options": {"width": 8}}, "INet takes no option 'width'"),
        ({"nip": "dnet", "nip_options": {"depth": 0}}, "nip_options depth must be a positive integer"),
        ({"nip_options": [1]}, "nip_options must be a mapping"),
        ({"channels_last": "yes"}, "config channels_last must be true or false"),
        ({"foo": 1}, "unknown config keys: foo"),
        ({"checkpoint_every": 0}, "config checkpoint_every must be a positive integer or null, got 0"),
        ({"amp": "fp16"}, "config precision must be one of auto, bf16, fp32, got 'fp16'"),
    ],
)
def test_bad_nip_settings(bad, message) -> None:
    with pytest.raises(InputError, match=message if message != "InputError" else None) as info:
        make_config({"data": "d", "preset": "quick", **bad})
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"lambda_nip": "abc"}, "config lambda_nip must be a number >= 0, got 'abc'"),
        ({"lr": "abc"}, "config lr must be a number > 0"),
        ({"lr": -1e-4}, "config lr must be a number > 0"),
        ({"lr_decay": "x"}, "config lr_decay must be a number > 0 and <= 1"),
        ({"lr_decay": 1.5}, "config lr_decay must be"),
        ({"seed": "abc"}, "config seed must be an integer >= 0"),
        ({"val_batch": 0}, "config val_batch must be a positive integer, got 0"),
        ({"epochs": "many"}, "config epochs must be a positive integer"),
        ({"residual_width": -1}, "config residual_width must be an integer >= 0"),
        ({"train": 3}, "config train must be"),
        ({"manipulations": "native,blur"}, "blur"),
        ({"channel": "down:x"}, "down"),
        ({"fan": [1]}, "config fan must be a mapping"),
        ({"checkpoint_every": 0}, "config checkpoint_every must be a positive integer or null, got 0"),
        ({"max_steps": -1}, "config max_steps must be an integer >= 0 or null, got -1"),
    ],
)
def test_bad_manipulation_settings(bad, message) -> None:
    with pytest.raises(InputError, match=message) as info:
        resolve_config({"data": "d", "nip_run": "n", "preset": "quick", **bad})
    assert "\n" not in str(info.value)


def test_good_settings_pass() -> None:
    for name in ("inet", "unet", "dnet"):
        assert make_config({"data": "d", "nip": name}, preset="quick")["nip"] == name
    assert resolve_config({"data": "d", "nip_run": "n", "preset": "quick", "train": ["fan"]})["train"] == "fan"


def test_create_checks_options() -> None:
    with pytest.raises(InputError, match="UNet takes no option 'depth'"):
        nip.create("unet", depth=3)
    assert isinstance(nip.create("dnet", width=4, depth=2), nip.DNet)
