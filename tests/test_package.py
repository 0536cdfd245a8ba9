"""The package as a library: re-exports of each subpackage, their stubs, py.typed, the log's null handler."""

from __future__ import annotations

import ast
import importlib
import logging
import subprocess
import sys
from pathlib import Path

import pytest

import neuralimaging

PACKAGES = ["neuralimaging", "neuralimaging.acquisition", "neuralimaging.data", "neuralimaging.distribution",
            "neuralimaging.forensics", "neuralimaging.experiments"]


def _stub(package: str) -> tuple[list[str], dict[str, str]]:
    """The ``__all__`` of a package's stub, and each re-exported name's module (``""`` for a submodule)."""
    stub = Path(importlib.import_module(package).__file__).with_suffix(".pyi")
    names: list[str] = []
    origin: dict[str, str] = {}
    for node in ast.parse(stub.read_text()).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "__all__":
            names = list(ast.literal_eval(node.value))
        elif isinstance(node, ast.ImportFrom):
            origin.update({alias.name: node.module or "" for alias in node.names})
    return names, origin


@pytest.mark.parametrize("package", PACKAGES)
def test_every_exported_name_resolves_to_its_module_object(package: str) -> None:
    module = importlib.import_module(package)
    names, origin = _stub(package)
    assert sorted(module.__all__) == sorted(names)  # the stub type checkers read agrees
    assert set(module.__all__) <= set(dir(module))
    submodules = {p.stem for p in Path(module.__file__).parent.iterdir() if p.suffix == ".py" or (p / "__init__.py").is_file()}
    shadowing = [n for n in module.__all__ if n in submodules and origin[n] != ""]
    assert not shadowing, f"{package}: re-exports that hide a submodule of the same name: {shadowing}"
    for name in module.__all__:
        value = getattr(module, name)
        if name == "__version__":
            assert isinstance(value, str)
        elif origin[name] == "":
            assert value is importlib.import_module(f"{package}.{name}")
        else:  # the object itself, as its module defines it
            assert value is getattr(importlib.import_module(f"{package}.{origin[name]}"), name)


def test_a_user_imports_what_torchvision_and_kornia_users_expect() -> None:
    from neuralimaging.acquisition import INet
    from neuralimaging.distribution import DifferentiableJPEG, jpeg_compress
    from neuralimaging.distribution.jpeg import jpeg_compress as defined
    from neuralimaging.forensics import FAN

    assert jpeg_compress is defined and neuralimaging.distribution.jpeg_compress is defined
    assert INet.__module__ == "neuralimaging.acquisition.nip" and FAN.__module__ == "neuralimaging.forensics.fan"
    assert DifferentiableJPEG.__name__ == "DifferentiableJPEG"
    with pytest.raises(AttributeError, match="no_such_name"):
        neuralimaging.distribution.no_such_name  # noqa: B018


def test_importing_the_package_imports_no_stage() -> None:
    code = "import sys, neuralimaging, neuralimaging.distribution; print(' '.join(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    modules = set(result.stdout.split())
    assert not modules & {"torch", "neuralimaging.distribution.jpeg", "neuralimaging.experiments"}


def test_the_package_is_typed_and_silent() -> None:
    folder = Path(neuralimaging.__file__).parent
    assert (folder / "py.typed").is_file()
    assert all((folder / p.replace(".", "/") / "__init__.pyi").is_file() for p in ("acquisition", "distribution"))
    handlers = logging.getLogger("neuralimaging").handlers
    assert any(isinstance(h, logging.NullHandler) for h in handlers)
