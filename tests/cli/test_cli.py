"""The CLI entry points: --help on every command, the shared --device option, module execution."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from neuralimaging.cli import COMMANDS, build_parser, main


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


def test_command_table_matches_the_modules() -> None:
    # COMMANDS lets the CLI import one command's module only: its names and help lines must be the modules' own.
    sub = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    registered = {action.dest: action.help for action in sub._choices_actions}
    assert registered == {command: help_line for command, (_, help_line) in COMMANDS.items()}
    # a new command module must be listed there too, or the CLI never imports it
    package = Path(build_parser.__code__.co_filename).parent
    modules = {p.stem for p in package.glob("*.py") if not p.stem.startswith("_")}
    assert modules == {module for module, _ in COMMANDS.values()}


def _modules_after(argv: list[str]) -> tuple[str, set[str]]:
    """Run the CLI with ``argv`` in a fresh Python; its output and the modules it had imported by then."""
    code = (
        "import sys\n"
        "from neuralimaging.cli import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit as e:\n    assert e.code == 0\n"
        "print('MODULES', ' '.join(sorted(sys.modules)))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    text, _, modules = result.stdout.rpartition("MODULES ")
    return text, set(modules.split())


def test_top_level_help_starts_without_torch() -> None:
    text, modules = _modules_after(["--help"])
    assert not modules & {"torch", "colour", "matplotlib", "pandas", "ray"}
    assert "compare-pipelines" in text and "train" in text


def test_one_command_imports_only_its_module() -> None:
    _, modules = _modules_after(["jpeg", "--help"])
    loaded = {m for m in modules if m.startswith("neuralimaging.cli.")}
    assert loaded == {"neuralimaging.cli._common", "neuralimaging.cli.jpeg"}


def test_an_output_path_below_a_file_is_one_line_error(tmp_path, capsys) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    blocker = tmp_path / "notes.txt"
    blocker.write_text("keep me")
    assert main(["results", str(runs), "--csv", str(blocker / "table.csv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("neuralimaging results: error: ") and str(blocker) in err[0]
    assert blocker.read_text() == "keep me"


def test_verbose_shows_the_library_log(photos, tmp_path, capsys) -> None:
    import logging

    from PIL import Image

    path = tmp_path / "crop.png"
    Image.fromarray(photos[0][:32, :48].copy()).save(path)
    line = f"DEBUG neuralimaging.io: read {path}: 48x32 pixels, 8-bit"
    assert main(["jpeg", "compare", str(path)]) == 0
    assert "neuralimaging.io" not in capsys.readouterr().err  # warnings only by default
    assert main(["-v", "jpeg", "compare", str(path)]) == 0
    assert "DEBUG" not in capsys.readouterr().err
    assert main(["-vv", "jpeg", "compare", str(path)]) == 0
    captured = capsys.readouterr()
    assert line in captured.err and "DEBUG" not in captured.out  # the log goes to stderr, output to stdout
    assert main(["jpeg", "compare", str(path), "--verbose", "--verbose"]) == 0  # after the command too
    assert line in capsys.readouterr().err
    assert not [h for h in logging.getLogger("neuralimaging").handlers if not isinstance(h, logging.NullHandler)]
