"""The CLI entry points: --help on every command, the shared --device option, module execution."""

from __future__ import annotations

import subprocess
import sys

import pytest

from neuralimaging.cli import build_parser, main


def _commands() -> list[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return sorted(sub.choices)


def test_top_level_help(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "COMMAND" in capsys.readouterr().out


@pytest.mark.parametrize("command", _commands())
def test_every_command_has_help_and_device(command: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "--device" in text


def test_python_dash_m() -> None:
    result = subprocess.run([sys.executable, "-m", "neuralimaging", "--version"], capture_output=True, text=True)
    assert result.returncode == 0
    assert result.stdout.startswith("neuralimaging ")


def test_bad_device_is_a_clean_error() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "neuralimaging", "models", "--device", "tpu"], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "invalid choice: 'tpu'" in result.stderr
