"""mkdocs hook: the API reference pages, one per stage, list every public module found in the source tree.

Generated at build time, so a new, moved or renamed module appears in the reference without editing a page;
mkdocstrings renders each ``::: module`` from its docstrings.
"""

from __future__ import annotations

import pkgutil
from pathlib import Path

from mkdocs.structure.files import File, Files

SOURCE = Path(__file__).resolve().parents[1] / "src" / "neuralimaging"

PAGES = {
    "ground-floor": ("", "Ground floor", "The modules every stage may use: file formats, the photo set, metrics, "
                     "layers, the registry, errors and devices."),
    "acquisition": ("acquisition", "acquisition", "The camera: RAW files, CFA handling, standard ISPs, neural "
                    "imaging pipelines and the virtual camera."),
    "distribution": ("distribution", "distribution", "After the shutter: manipulations, the differentiable JPEG "
                     "and the sharing channel."),
    "forensics": ("forensics", "forensics", "The analyst: the FAN, PRNU fingerprints and tampering localization."),
    "data": ("data", "data", "Datasets on disk: prepared RAW/target pairs, splits and patches."),
    "experiments": ("experiments", "experiments", "Wiring and running: training, sweeps, results, figures and "
                    "reports."),
}
"""Page slug -> (subpackage, title, introduction)."""

SKIPPED = {"neuralimaging.cli"}
"""The command line, documented by ``--help``."""


def modules(package: str) -> list[str]:
    """Public modules of ``neuralimaging.<package>`` (subpackages included, recursively), sorted by name."""
    folder = SOURCE.joinpath(*package.split(".")) if package else SOURCE
    prefix = "neuralimaging." + (f"{package}." if package else "")
    found = []
    for info in pkgutil.iter_modules([str(folder)]):
        name = prefix + info.name
        if info.name.startswith("_") or name in SKIPPED or (not package and info.ispkg):
            continue
        found.append(name)
        if info.ispkg:
            found += modules(f"{package}.{info.name}")
    return sorted(found)


def page(package: str, title: str, introduction: str) -> str:
    """The Markdown of one API page."""
    return f"# {title}\n\n{introduction}\n\n" + "\n".join(f"::: {name}\n" for name in modules(package))


def on_files(files: Files, config: dict) -> Files:
    for slug, (package, title, introduction) in PAGES.items():
        files.append(File.generated(config, f"api/{slug}.md", content=page(package, title, introduction)))
    return files
