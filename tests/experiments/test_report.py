"""The HTML report of a real tiny sweep: self-contained, every section, and it opens in headless Chromium
with every image loaded."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess

import pytest
from PIL import Image

from neuralimaging.experiments.report import build_report, write_report

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

# Appended to a copy of the report: after the load event, count the images that decoded.
_CHECK = """<script>
window.addEventListener("load", () => {
  const imgs = Array.from(document.images);
  const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  const out = document.createElement("div");
  out.id = "img-check";
  out.textContent = `loaded=${ok} total=${imgs.length}`;
  document.body.appendChild(out);
});
</script>"""


@pytest.fixture(scope="module")
def report(tiny_sweep_runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "report.html"
    facts = write_report(tiny_sweep_runs, out, artifact_patches=2)
    return out, facts


def test_sections_and_figures(report) -> None:
    path, facts = report
    html = path.read_text(encoding="utf-8")
    for heading in ("Status", "Aggregates over repetitions", "Accuracy vs fidelity (Fig. 9)", "Spread per configuration",
                    "Training progress (Fig. 8)", "Confusion matrices (Table 4)", "Learned artifacts (Fig. 10)",
                    "Whole-photo analysis", "Every run"):
        assert f"<h2>{heading}</h2>" in html, heading
    # trade-off 1, box plots 2 (pretrain, joint; the failed stage has none), progress 2, confusion 2, artifacts 1,
    # whole-photo overlays 10 (one validation image in 5 classes, by the best F and the best F+N run)
    assert facts["figures"] == 18 and facts["notes"] == []
    assert html.count("; decision ") == 10 and "true native" in html
    assert facts["runs"] == 6 and facts["done"] == 5
    assert "failed: 1" in html and "broken/tiny/inet/000" in html and "no-such-dataset" in html
    images = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(images) == facts["figures"]
    for data in images:
        assert Image.open(io.BytesIO(base64.b64decode(data))).format == "PNG"


def test_self_contained(report) -> None:
    html = report[0].read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)=["'](?!data:)""", html)  # nothing fetched from elsewhere
    assert "<script" not in html and "@import" not in html and "url(" not in html


@pytest.mark.skipif(not shutil.which(CHROMIUM), reason="needs Debian's chromium (apt-get install chromium)")
def test_opens_in_chromium_with_every_image_loaded(report, tmp_path) -> None:
    path, facts = report
    page = tmp_path / "checked.html"
    page.write_text(path.read_text(encoding="utf-8").replace("</body>", _CHECK + "</body>"), encoding="utf-8")
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", page.as_uri()]
    result = subprocess.run(command, capture_output=True, text=True, timeout=90)
    assert result.returncode == 0, result.stderr[-2000:]
    match = re.search(r'<div id="img-check">loaded=(\d+) total=(\d+)</div>', result.stdout)
    assert match, result.stdout[-2000:]
    assert int(match.group(1)) == int(match.group(2)) == facts["figures"]


def test_without_the_analysis_section(tiny_sweep_runs) -> None:
    page, facts = build_report(tiny_sweep_runs, artifacts=False, analysis_images=0)
    assert "Whole-photo analysis" not in page and facts["figures"] == 7


def test_report_of_an_empty_folder(tmp_path) -> None:
    page, facts = build_report(tmp_path)
    assert "No runs found" in page and facts["figures"] == 0
