"""One self-contained HTML report of a runs folder: status, tables and every figure, readable offline.

Figures are embedded as base64 PNG (no external file, script or font), so the report can be mailed or
archived as one file. Sections, each present when the runs hold what it needs:

1. status of every run (done / running / failed / pending), failures with their error line;
2. aggregates over repetitions (mean, std, n; supplement Table 1) and its paper layout;
3. accuracy vs PSNR / SSIM trade-off (Fig. 9) and box plots per configuration;
4. training progress of F and F+N runs per (camera, NIP) and of NIP pre-training runs (Fig. 8);
5. confusion matrices per configuration, rendered and as text / LaTeX (Table 4);
6. learned artifacts of the most accurate F+N run per (camera, NIP) (Fig. 10);
7. whole-photo analysis: maps of a few photos with a manipulated region, by the most accurate F and F+N run
   per (camera, NIP);
8. every run as one row.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from neuralimaging import __version__
from neuralimaging.experiments import plots
from neuralimaging.experiments.fidelity import DEFINITION
from neuralimaging.experiments.results import aggregate, collect, paper_table
from neuralimaging.experiments.rundir import atomic_write_text
from neuralimaging.experiments.sweep import sweep_status

__all__ = ["build_report", "write_report"]

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}th,td{border:1px solid #ddd;padding:.25em .5em;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
figure{margin:1em 0}figcaption{font-size:.85em;color:#555}img{max-width:100%;height:auto}
.wide{overflow-x:auto}pre{background:#f7f7f7;padding:.6em;overflow-x:auto;font-size:.8em}.note{color:#a33}
.state-done{color:#171}.state-failed{color:#b11}.state-running{color:#14a}.state-pending{color:#777}
"""


def _img(png: bytes, alt: str, caption: str = "") -> str:
    data = base64.b64encode(png).decode("ascii")
    cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">{cap}</figure>'


def _table(frame: pd.DataFrame, index: bool = False) -> str:
    if frame.empty:
        return "<p>(empty)</p>"
    text = frame.to_html(index=index, border=0, na_rep="", float_format=lambda v: f"{v:.4g}", escape=True)
    return f'<div class="wide">{text}</div>'


class _Sections:
    """Collects HTML sections; a figure that fails to build becomes a note instead of breaking the report."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.notes: list[str] = []
        self.figures = 0

    def add(self, text: str) -> None:
        self.parts.append(text)

    def images(self, build: Callable[[], list[tuple[str, bytes, str]]], alt: str) -> None:
        """Add the ``(alt, png, caption)`` images that ``build`` returns; a failure becomes a note."""
        try:
            images = build()
        except Exception as error:  # noqa: BLE001 - one missing figure must not lose the whole report
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            note = f"{alt}: not drawn ({type(error).__name__}: {reason})"
            self.notes.append(note)
            self.parts.append(f'<p class="note">{html.escape(note)}</p>')
            return
        for name, png, caption in images:
            self.parts.append(_img(png, name, caption))
            self.figures += 1

    def figure(self, build: Callable[[], Any], alt: str, caption: str = "") -> None:
        """Add the matplotlib figure that ``build`` returns; a failure becomes a note."""
        self.images(lambda: [(alt, plots.figure_png(build()), caption)], alt)


def _summary(run_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def _group_cols(table: pd.DataFrame) -> list[str]:
    return [c for c in ("stage", "camera", "nip") if c in table.columns]


def _groups(frame: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    cols = [c for c in _group_cols(frame) if frame[c].notna().any()]
    if not cols:
        return [("all runs", frame)]
    keyed = frame.assign(**{c: frame[c].astype(object).where(frame[c].notna(), "-") for c in cols})
    return [(" / ".join(str(k) for k in (key if isinstance(key, tuple) else (key,)) if k), part)
            for key, part in keyed.groupby(cols, sort=False)]


def _test_summary(runs_dir: Path) -> dict[str, Any] | None:
    """The demo's test-split summary next to the runs folder (``../summary.json``), as table rows."""
    from neuralimaging.experiments.demo import SUMMARY

    path = runs_dir / ".." / SUMMARY
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(summary, dict) or summary.get("split") != "test":
        return None
    rows = []
    nip = summary.get("nip") or {}
    if nip:
        rows.append({"run": nip.get("run"), "mode": "pre-trained NIP", "lambda_nip": "-", "accuracy": "-",
                     "accuracy (libjpeg)": "-", "PSNR (dB)": nip.get("psnr_db"), "SSIM": nip.get("ssim")})
    for entry in summary.get("runs") or []:
        rows.append({"run": entry.get("run"), "mode": entry.get("mode"), "lambda_nip": entry.get("lambda_nip", "-"),
                     "accuracy": entry.get("accuracy"), "accuracy (libjpeg)": entry.get("accuracy_libjpeg"),
                     "PSNR (dB)": entry.get("psnr_db"), "SSIM": entry.get("ssim")})
    return {"fidelity": summary.get("fidelity"), "rows": rows} if rows else None


def build_report(runs_dir: str | os.PathLike[str], *, title: str | None = None, artifacts: bool = True,
                 artifact_patches: int = 3, analysis_images: int = 1,
                 device: str = "cpu") -> tuple[str, dict[str, Any]]:
    """The report's HTML text and facts about it (``runs``, ``figures``, ``notes``).

    Args:
        runs_dir: a sweep's runs folder (or any folder of run folders).
        title: heading (default: the folder name).
        artifacts: draw the learned-artifacts figure (develops a few patches with two NIPs).
        artifact_patches: patches per artifacts figure.
        analysis_images: validation images per run in the whole-photo analysis section (0: no section).
        device: where the NIPs develop the artifact patches.
    """
    runs_dir = Path(runs_dir)
    table = collect(runs_dir)
    states = sweep_status(runs_dir) if table.empty else None
    out = _Sections()
    title = title or f"neuralimaging report: {runs_dir.resolve().name}"
    out.add(f"<h1>{html.escape(title)}</h1>")
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    out.add(f"<p>Runs folder <code>{html.escape(str(runs_dir.resolve()))}</code>; generated {now} by "
            f"neuralimaging {html.escape(__version__)}. Paper: Korus &amp; Memon, <i>Neural Imaging Pipelines - "
            f"the Scourge or Hope of Forensics?</i></p>")
    out.add("<p>How the figures are measured (docs/measuring.md): accuracy is the share of correct decisions of "
            "the FAN on fixed patches, each in every manipulation class after the channel; PSNR and SSIM: "
            f"{html.escape(DEFINITION)}. The per-run figures below are those of each run's validation split.</p>")
    test = _test_summary(runs_dir)
    if test:
        out.add("<h2>Test split</h2>")
        out.add(f"<p>Held-out test images, measured after training (<code>summary.json</code>); PSNR / SSIM: "
                f"{html.escape(str(test.get('fidelity')))}.</p>")
        out.add(_table(pd.DataFrame(test["rows"])))

    # 1. status
    out.add("<h2>Status</h2>")
    if table.empty:
        out.add(f"<p>No runs found ({len(states or [])} planned).</p>")
    else:
        counts = table["state"].value_counts()
        out.add("<p>" + ", ".join(f'<span class="state-{s}">{s}: {int(counts.get(s, 0))}</span>'
                                  for s in ("done", "running", "failed", "pending")) + f" (of {len(table)} runs)</p>")
        failed = table[table["state"] == "failed"]
        if not failed.empty:
            rows = []
            for name in failed["run"]:
                error_file = runs_dir / name / "error.txt"
                lines = [ln for ln in error_file.read_text(encoding="utf-8").splitlines() if ln.strip()] if error_file.is_file() else []
                rows.append({"run": name, "error": lines[-1].strip() if lines else ""})
            out.add("<h3>Failed runs</h3>" + _table(pd.DataFrame(rows)))

    done = table[table["state"] == "done"] if not table.empty else table
    if not done.empty:
        # 2. aggregates
        out.add("<h2>Aggregates over repetitions</h2>")
        agg = aggregate(table)
        out.add("<p>Mean and sample standard deviation over the finished repetitions of each configuration "
                "(as supplement Table 1; <code>-</code> in <code>lambda_nip</code> is the F mode).</p>")
        out.add(_table(agg))
        manip = agg[agg["accuracy_mean"].notna()] if "accuracy_mean" in agg else agg.iloc[0:0]
        if not manip.empty and "nip" in manip:
            layout = paper_table(manip)
            if not layout.empty:
                out.add("<h3>In the paper's layout (supplement Table 1)</h3>" + _table(layout, index=True))

        # 3. trade-off and box plots
        has_tradeoff = {"accuracy", "psnr"} <= set(done.columns) and done[["accuracy", "psnr"]].notna().all(axis=1).any()
        if has_tradeoff:
            out.add("<h2>Accuracy vs fidelity (Fig. 9)</h2>")
            joint = done[done["accuracy"].notna()]
            out.figure(lambda: plots.tradeoff_figure(joint), "trade-off figure",
                       "Each dot is a run (colour: lambda_nip); large markers are configuration means; crosses are F runs.")
        metrics_present = [m for m in ("accuracy", "psnr") if m in done.columns and done[m].notna().any()]
        if metrics_present:
            out.add("<h2>Spread per configuration</h2>")
            for label, part in _groups(done):
                out.figure(lambda part=part: plots.boxplot_figure(part, metrics=metrics_present),
                           f"box plots {label}", f"{label}: accuracy and PSNR over repetitions")

        # 4. training progress
        out.add("<h2>Training progress (Fig. 8)</h2>")
        for label, part in _groups(done):
            first = part.sort_values("repetition") if "repetition" in part else part
            if "repetition" in first:
                first = first[first["repetition"] == first["repetition"].min()]
            runs = {}
            for _, row in first.iterrows():
                if (runs_dir / row["run"] / "metrics.jsonl").is_file():
                    runs[plots.config_label(row) if "mode" in row and plots._present(row.get("mode")) else row["run"]] = runs_dir / row["run"]
            if runs:
                out.figure(lambda runs=runs, label=label: plots.progress_figure(runs, title=f"Training progress: {label}"),
                           f"training progress {label}", f"{label}: first repetition of each configuration")

        # 5. confusion matrices
        if "accuracy" in done.columns and done["accuracy"].notna().any():
            out.add("<h2>Confusion matrices (Table 4)</h2>")
            out.add("<p>Percent of each true class (rows) per predicted class, summed over repetitions; "
                    "entries &asymp; 0 are blank, entries &lt; 3% are marked *.</p>")
            keys = [c for c in ("stage", "camera", "nip", "mode", "lambda_nip") if c in done.columns]
            keyed = done[done["accuracy"].notna()]
            keyed = keyed.assign(**{c: keyed[c].astype(object).where(keyed[c].notna(), "-") for c in keys})
            for key, part in (keyed.groupby(keys, sort=False) if keys else [((), keyed)]):
                summaries = [_summary(runs_dir / name) for name in part["run"]]
                summaries = [s for s in summaries if "confusion" in s]
                if not summaries:
                    continue
                classes = summaries[0].get("classes") or [f"class {i}" for i in range(len(summaries[0]["confusion"]))]
                total = np.sum([np.asarray(s["confusion"], dtype=np.float64) for s in summaries], axis=0)
                label = plots.config_label(part.iloc[0])
                accuracy = np.trace(total) / max(total.sum(), 1)
                caption = f"{label}: {100 * accuracy:.1f}% over {len(summaries)} run(s)"
                out.add(f"<h3>{html.escape(caption)}</h3>")
                out.figure(lambda total=total, classes=classes: plots.confusion_figure(total, classes),
                           f"confusion {label}")
                out.add("<pre>" + html.escape(plots.confusion_text(total, classes)) + "</pre>")
                out.add("<details><summary>LaTeX</summary><pre>" + html.escape(plots.confusion_latex(total, classes, caption)) + "</pre></details>")

        # 6. artifacts
        if artifacts and "mode" in done.columns and "accuracy" in done.columns:
            joint = done[(done["mode"] == "F+N") & done["accuracy"].notna()]
            if not joint.empty:
                out.add("<h2>Learned artifacts (Fig. 10)</h2>")
                out.add("<p>Validation patches developed by the pre-trained NIP (ŷ0) and by the NIP of the most "
                        "accurate F+N run (ŷ*); spectra in f(x) = log(10 + |x|), ΔF = ||F(ŷ0)| − |F(ŷ*)||.</p>")
            for label, part in _groups(joint):
                best = part.sort_values("accuracy", ascending=False).iloc[0]
                run_dir = runs_dir / best["run"]

                def build(run_dir: Path = run_dir, best: pd.Series = best) -> Any:
                    from neuralimaging.experiments.rundir import RunDir

                    config = RunDir(run_dir).read_config()
                    patch = min(int(config.get("patch", 64)), 64)
                    images = plots.artifact_images(config["nip_run"], run_dir, n=artifact_patches, patch=patch, device=device)
                    return plots.artifacts_figure(images, title=f"Learned artifacts: {plots.config_label(best)} (accuracy {best['accuracy']:.3f})")

                out.figure(build, f"artifacts {label}", f"{label}: run {best['run']}")

        # 7. whole-photo analysis
        if analysis_images > 0:
            _analysis_section(out, runs_dir, done, analysis_images, device)

        # 8. every run
        out.add("<h2>Every run</h2>")
        out.add(_table(table))
    elif not table.empty:
        out.add("<h2>Every run</h2>" + _table(table))

    if out.notes:
        out.add("<h2>Notes</h2><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in out.notes) + "</ul>")
    page = (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>\n"
        + "\n".join(out.parts)
        + "\n</body></html>\n"
    )
    facts = {"runs": int(len(table)), "done": int(len(done)), "figures": out.figures, "notes": out.notes}
    return page, facts


def _analysis_section(out: _Sections, runs_dir: Path, done: pd.DataFrame, count: int, device: str) -> None:
    """Overlays of ``count`` validation images per class by the most accurate F and F+N run per group."""
    if "mode" not in done.columns or "accuracy" not in done.columns:
        return
    trained = done[done["mode"].isin(["F", "F+N"]) & done["accuracy"].notna()]
    if trained.empty:
        return
    from neuralimaging.experiments.analysis import DEFAULT_TEMPERATURE
    from neuralimaging.experiments.analysis_eval import REGION_FRACTION, example_overlays

    low, high = REGION_FRACTION
    out.add("<h2>Whole-photo analysis</h2>")
    out.add(f"<p>Validation images developed by the run's NIP, a random rectangle ({low:.0%}-{high:.0%} of the "
            "area) manipulated with each class (none for native), shared through the run's channel with libjpeg, "
            "then analysed as <code>neuralimaging analyze</code> does: each cell tinted by its most probable "
            "manipulated class at opacity 0.6 x P(manipulated); image-level decision with the default temperature "
            f"{DEFAULT_TEMPERATURE:g}.</p>")
    for label, part in _groups(trained):
        for mode in ("F", "F+N"):
            runs = part[part["mode"] == mode]
            if runs.empty:
                continue
            best = runs.sort_values("accuracy", ascending=False).iloc[0]
            heading = f"{label}: {mode}, run {best['run']} (accuracy {best['accuracy']:.3f})"
            out.add(f"<h3>{html.escape(heading)}</h3>")
            out.images(lambda run=runs_dir / best["run"]: example_overlays(run, count=count, device=device),
                       f"analysis {label} {mode}")


def write_report(runs_dir: str | os.PathLike[str], out: str | os.PathLike[str], **options: Any) -> dict[str, Any]:
    """Write :func:`build_report`'s HTML to ``out`` (atomically); returns its facts plus ``path``."""
    page, facts = build_report(runs_dir, **options)
    out = Path(out)
    atomic_write_text(out, page)
    return {**facts, "path": str(out)}
