"""The documentation site builds without a warning (``mkdocs build --strict``), API reference included.

mkdocstrings renders every public module from its docstrings: a broken cross-reference, a docstring section
griffe cannot parse, a guide linking to a missing page or a module that cannot be found fails this test.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # about a minute on 2 cores; CI runs it through `make docs` (.ci/run)
def test_site_builds_strict_with_every_module(tmp_path: Path) -> None:
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"),
         "--site-dir", str(site)],
        capture_output=True, text=True, cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    sys.path.insert(0, str(ROOT / "docs"))
    try:
        import api_pages
    finally:
        sys.path.remove(str(ROOT / "docs"))
    for slug, (package, _, _) in api_pages.PAGES.items():
        html = (site / "api" / slug / "index.html").read_text()
        for module in api_pages.modules(package):
            assert f'id="{module}"' in html, f"{module} is missing from api/{slug}"
    jpeg = (site / "api" / "distribution" / "index.html").read_text()
    assert 'id="neuralimaging.distribution.jpeg.jpeg_compress"' in jpeg
