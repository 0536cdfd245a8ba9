"""Whole-photo analysis of F and F+N runs: image-level decisions and localization on shared test photos.

For each run: the patch-level accuracy on the same split under libjpeg (``train_manipulation.evaluate``, the
figure the paper reports), then :func:`~neuralimaging.experiments.analysis_eval.evaluate_analysis`: every test
image developed by the run's NIP, one photo per class (a random 10-50% rectangle manipulated, native
untouched), shared through the run's channel with the real codecs, analysed window by window; temperature
fitted on photos made the same way from the validation images. Prints a Markdown table and writes the full
figures (JSON) and a few example overlays to ``--out``.

    python benchmarks/analysis.py RUN_F RUN_FN --out /tmp/analysis             # e.g. make demo's two runs
    python benchmarks/analysis.py RUN_F RUN_FN --out /tmp/analysis --limit 8   # fewer images, faster
    python benchmarks/analysis.py RUN_F RUN_FN --out /tmp/a --no-offsets --calibration-split val   # temperature on val
    python benchmarks/analysis.py --big 6000x4000 RUN_FN --out /tmp/analysis   # time and memory of one big photo
    python benchmarks/analysis.py --big 6000x4000 --stride 32 RUN_FN --out /tmp/analysis   # 4x fewer windows
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch


def _row(label: str, evaluation: dict, figures: dict, patch_accuracy: float) -> str:
    local = figures["localization"]
    return (
        f"| {label} | {figures['aggregation']} | {patch_accuracy:.3f} | {figures['window_accuracy']:.3f} | "
        f"{figures['accuracy']:.3f} | {figures['binary_accuracy']:.3f} | {figures['nll']:.3f} | {figures['ece']:.3f} | "
        f"{figures['temperature']:.3g} | {local['auc']:.3f} | {local['f1']:.3f} | {local['iou']:.3f} | "
        f"{local['best_f1']:.3f} | {local['native_flagged']:.3f} |"
    )


def evaluate_runs(runs: list[str], out: Path, limit: int | None, examples: int, calibration_split: str = "train",
                  offsets: bool = True) -> dict:
    from neuralimaging.experiments.analysis_eval import evaluate_analysis
    from neuralimaging.experiments.train_manipulation import evaluate

    results = {}
    lines = [
        "| run | aggregation | patch acc. | window acc. | image acc. | native vs manip. | NLL | ECE | temperature "
        "| pixel AUC | F1 @0.5 | IoU @0.5 | best F1 | native flagged |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        start = time.perf_counter()
        name = Path(run).parent.name if Path(run).name.isdigit() else Path(run).name
        evaluation = evaluate_analysis(run, "test", limit=limit, examples=examples, examples_dir=out / f"examples-{name}",
                                       calibration_images=calibration_split, offsets=offsets)
        patch = evaluate(run, codec="libjpeg", split=evaluation["split"], fidelity=False)
        evaluation["patch_level"] = {k: patch[k] for k in ("accuracy", "accuracy_se", "per_class", "n", "split", "codec")}
        evaluation["wall_time_s"] = time.perf_counter() - start
        results[run] = evaluation
        for figures in evaluation["aggregations"].values():
            lines.append(_row(f"{name} ({evaluation['mode']})", evaluation, figures, patch["accuracy"]))
        print(f"{run}: {evaluation['images']} {evaluation['split']} images x {len(evaluation['classes'])} classes, "
              f"window {evaluation['patch']} stride {evaluation['stride']}, temperature fitted on "
              f"{evaluation['calibration_split']}; {evaluation['wall_time_s']:.0f} s", file=sys.stderr)
    print("\n".join(lines))
    return results


def big_photo(run: str, size: str, batch: int, stride: int | None = None) -> dict:
    """Time and peak memory of analysing one synthetic photo of ``size`` (noise-textured, uint8)."""
    from neuralimaging.experiments.analysis import analyze_photo, load_analyzer

    height, width = (int(v) for v in size.lower().split("x"))
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    analyzer = load_analyzer(run, stride=stride)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    cpu = time.process_time()
    result = analyze_photo(analyzer, pixels, batch=batch)
    figures = {
        "size": size, "megapixels": height * width / 1e6, "patch": analyzer.patch, "stride": analyzer.stride,
        "windows": int(np.prod(result.window_log_probs.shape[:2])), "batch": batch,
        "wall_s": time.perf_counter() - start, "cpu_s": time.process_time() - cpu,
        "peak_rss_mb_before": before, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "photo_mb": pixels.nbytes / 2**20, "threads": torch.get_num_threads(),
    }
    print(json.dumps(figures))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run folders of `train manipulation` (their data and NIP at hand)")
    parser.add_argument("--out", required=True, help="folder for results.json and example overlays")
    parser.add_argument("--limit", type=int, default=None, help="at most this many images per split")
    parser.add_argument("--examples", type=int, default=2, help="test images whose photos and overlays are kept")
    parser.add_argument("--calibration-split", default="train", choices=("val", "train"),
                        help="images the confidence is fitted on (default: train)")
    parser.add_argument("--no-offsets", dest="offsets", action="store_false",
                        help="fit the temperature alone, without per-class offsets")
    parser.add_argument("--big", default=None, metavar="HxW", help="only time one synthetic photo of this size")
    parser.add_argument("--batch", type=int, default=256, help="windows per FAN pass (--big)")
    parser.add_argument("--stride", type=int, default=None, help="window stride (--big; default: the run's)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    machine = {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
               "processor": platform.processor() or platform.machine()}
    if args.big:
        figures = {"machine": machine, "big": big_photo(args.runs[0], args.big, args.batch, args.stride)}
        (out / "big.json").write_text(json.dumps(figures, indent=1))
        return
    results = evaluate_runs(args.runs, out, args.limit, args.examples, args.calibration_split, args.offsets)
    (out / "results.json").write_text(json.dumps({"machine": machine, "runs": results}, indent=1))


if __name__ == "__main__":
    main()
