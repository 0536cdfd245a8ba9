"""Each figure renders from tiny real runs; confusion-matrix text follows paper Table 4; spectra as in Fig. 10."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from neuralimaging.errors import InputError
from neuralimaging.experiments import plots, results
from neuralimaging.experiments.rundir import RunDir


def _png_ok(png: bytes) -> np.ndarray:
    image = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    assert image.shape[0] > 100 and image.shape[1] > 100
    assert image.std() > 5  # something was drawn
    return image


@pytest.fixture(scope="module")
def table(tiny_sweep_runs):
    return results.collect(tiny_sweep_runs)


def test_tradeoff(table) -> None:
    joint = table[table["stage"] == "joint"]
    fig = plots.tradeoff_figure(joint)
    axes = fig.axes
    assert [ax.get_xlabel() for ax in axes[:2]] == ["PSNR [dB]", "SSIM"]
    # every F+N run is a dot at its (psnr, accuracy); F runs are crosses
    dots = np.concatenate([c.get_offsets() for c in axes[0].collections if len(c.get_offsets()) == 2])
    fn = joint[joint["mode"] == "F+N"]
    assert {tuple(p) for p in np.round(dots, 6)} >= {(round(a, 6), round(b, 6)) for a, b in zip(fn["psnr"], fn["accuracy"])}
    _png_ok(plots.figure_png(fig))


def test_tradeoff_needs_accuracy(table) -> None:
    with pytest.raises(InputError, match="accuracy"):
        plots.tradeoff_figure(table.drop(columns=["accuracy"]))


def test_progress_f_and_fn(tiny_sweep_runs) -> None:
    runs = {"F": tiny_sweep_runs / "joint/tiny/inet/F/000", "F+N": tiny_sweep_runs / "joint/tiny/inet/FN/ln-0.0100/000"}
    fig = plots.progress_figure(runs)
    assert [ax.get_ylabel() for ax in fig.axes] == ["validation accuracy", "PSNR [dB]", "training loss"]
    metrics = RunDir(runs["F+N"]).read_metrics()
    line = fig.axes[1].lines[1]  # F+N's PSNR over epochs, as recorded
    np.testing.assert_allclose(line.get_ydata(), [m["psnr"] for m in metrics])
    np.testing.assert_allclose(line.get_xdata(), [m["epoch"] for m in metrics])
    _png_ok(plots.figure_png(fig))


def test_progress_of_nip_pretraining(tiny_sweep_runs) -> None:
    fig = plots.progress_figure({"INet": tiny_sweep_runs / "pretrain/tiny/inet/000"})
    assert [ax.get_ylabel() for ax in fig.axes] == ["PSNR [dB]", "training loss"]
    _png_ok(plots.figure_png(fig))


def test_progress_bad_input(tmp_path) -> None:
    with pytest.raises(InputError, match="no metrics.jsonl"):
        plots.progress_figure({"x": tmp_path})


# Paper Table 4(a), standalone FAN (UNet), in percent per true class (the "*" cells taken as 1-2%).
TABLE_4A = [[36, 17, 14, 23, 10], [5, 91, 2, 1, 1], [11, 3, 50, 15, 21], [34, 16, 14, 25, 11], [19, 6, 30, 25, 21]]
CLASSES = ["native", "sharpen", "gaussian", "jpeg", "resample"]


def test_confusion_text_matches_table_4() -> None:
    text = plots.confusion_text(TABLE_4A, CLASSES)
    lines = text.splitlines()
    assert lines[1].split() == ["nat.", "sha.", "gau.", "jpg", "res."]
    assert lines[2].split() == ["native", "36", "17", "14", "23", "10"]
    assert lines[3].split() == ["sharpen", "5", "91", "*", "*", "*"]  # < 3% marked as in the paper
    accuracy = np.trace(np.array(TABLE_4A)) / np.sum(TABLE_4A)
    assert f"accuracy {100 * accuracy:.1f}%" in lines[0]


def test_confusion_counts_normalized_per_true_class() -> None:
    counts = np.array([[8, 2], [0, 40]])
    np.testing.assert_allclose(plots.confusion_percent(counts), [[80, 20], [0, 100]])
    text = plots.confusion_text(counts, ["a", "b"]).splitlines()
    assert text[3].split() == ["b", "100"]  # ~0 entries are blank


def test_confusion_latex() -> None:
    latex = plots.confusion_latex(TABLE_4A, CLASSES, caption="standalone FAN (UNet) 44.6%")
    assert r"\begin{tabular}{lrrrrr}" in latex
    assert r"native & 36 & 17 & 14 & 23 & 10 \\" in latex
    assert r"sharpen & 5 & 91 & * & * & * \\" in latex
    assert r"44.6\%" in latex


@pytest.mark.parametrize("bad, match", [([[1, 2, 3]], "square"), ([[1, -1], [0, 1]], ">= 0")])
def test_confusion_bad_input(bad, match) -> None:
    with pytest.raises(InputError, match=match):
        plots.confusion_text(bad, ["a", "b"])


def test_confusion_figure_from_a_run(tiny_sweep_runs) -> None:
    summary = json.loads((tiny_sweep_runs / "joint/tiny/inet/F/000/summary.json").read_text())
    fig = plots.confusion_figure(summary["confusion"], summary["classes"], title="F")
    texts = [t.get_text() for t in fig.axes[0].texts]
    expected = plots.confusion_percent(summary["confusion"])
    assert texts == [plots._cell(v) for v in expected.ravel()]
    _png_ok(plots.figure_png(fig))


def test_spectrum_against_numpy() -> None:
    rng = np.random.default_rng(0)
    image = rng.random((3, 16, 16))
    expected = np.abs(np.fft.fftshift(np.fft.fft2(image.mean(0))))
    np.testing.assert_allclose(plots.spectrum(torch.from_numpy(image)), expected)
    assert plots.spectrum(image)[8, 8] == pytest.approx(image.mean(0).sum())  # DC in the centre


def test_artifacts(tiny_sweep_runs) -> None:
    pre = tiny_sweep_runs / "pretrain/tiny/inet/000"
    fn = tiny_sweep_runs / "joint/tiny/inet/FN/ln-0.0100/000"
    images = plots.artifact_images(pre, fn, n=2, patch=16)
    assert {k: tuple(v.shape) for k, v in images.items()} == {k: (2, 3, 32, 32) for k in ("target", "pretrained", "optimized")}
    for value in images.values():
        assert 0 <= float(value.min()) and float(value.max()) <= 1
    # the joint run changed the NIP: its output differs from the pre-trained one
    assert float((images["pretrained"] - images["optimized"]).abs().max()) > 1e-4
    fig = plots.artifacts_figure(images)
    assert len(fig.axes) == 2 * 6
    # the last column is log(10 + | |F(y0)| - |F(y*)| |), computed independently here
    y0, ys = (255.0 * images[k][0].double().numpy().mean(0) for k in ("pretrained", "optimized"))
    delta = np.abs(np.abs(np.fft.fft2(y0)) - np.abs(np.fft.fft2(ys)))
    np.testing.assert_allclose(fig.axes[5].images[0].get_array(), np.log(10 + np.fft.fftshift(delta)), rtol=1e-6)
    _png_ok(plots.figure_png(fig))


def test_artifacts_need_an_fn_run(tiny_sweep_runs) -> None:
    with pytest.raises(InputError, match="not an F\\+N run"):
        plots.artifact_images(tiny_sweep_runs / "pretrain/tiny/inet/000", tiny_sweep_runs / "joint/tiny/inet/F/000")


def test_boxplots(table) -> None:
    joint = table[table["stage"] == "joint"]
    fig = plots.boxplot_figure(joint)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["tiny inet F", "tiny inet F+N λ=0.01"]
    _png_ok(plots.figure_png(fig))


def test_a_figure_that_fails_to_render_leaves_the_old_file(tmp_path) -> None:
    import matplotlib.pyplot as plt

    path = tmp_path / "figure.png"
    path.write_bytes(b"old figure")
    fig, ax = plt.subplots()
    ax.text(0.5, 0.5, r"$\frac$")  # mathtext that cannot be laid out: fails while the file is written
    with pytest.raises(ValueError):
        plots.save_figure(fig, path)
    assert path.read_bytes() == b"old figure" and [p.name for p in tmp_path.iterdir()] == ["figure.png"]
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    plots.save_figure(fig, path)
    assert Image.open(path).format == "PNG"
