import pytest
import yaml

from neuralimaging import yamlio
from neuralimaging.cli.train import parse_overrides


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1e-4", 1e-4), ("3E5", 3e5), ("-2e+1", -20.0), ("1.5e-3", 1.5e-3), ("0.1", 0.1), ("10", 10),
     ("1_000", 1000), ("abc", "abc"), ("'1e-4'", "1e-4"), ("e5", "e5"), ("[1e-4, 5e-4]", [1e-4, 5e-4])],
)
def test_load_reads_exponent_floats(text: str, expected: object) -> None:
    value = yamlio.load(text)
    assert value == expected and type(value) is type(expected)


def test_plain_pyyaml_reads_exponents_as_strings() -> None:
    # the reason for yamlio: YAML 1.1 (PyYAML) needs a dot before the exponent
    assert yaml.safe_load("1e-4") == "1e-4"


def test_set_overrides_take_exponent_learning_rates() -> None:
    assert parse_overrides(["lr=3e-4", "nip_options={width: 16}"]) == {"lr": 3e-4, "nip_options": {"width": 16}}
