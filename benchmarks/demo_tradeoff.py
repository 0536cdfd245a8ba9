"""The demo's accuracy / fidelity trade-off (the paper's Fig. 9) on the default data, and its choice of lambda.

Runs the sweep ``examples/sweeps/demo-tradeoff.yaml`` (the shipped DNet, F and F+N at five values of
``lambda_nip`` with the ``demo`` preset) on the demo's data, then:

1. on the **validation** images: accuracy (dJPEG channel) and PSNR of every run, and for a fidelity budget of
   1 dB and 2 dB below the pre-trained NIP the ``lambda_nip`` with the best mean accuracy among those whose
   mean paid fidelity (over the repetitions run) is within it;
2. on the **test** images: F and the chosen runs under the differentiable codec and under libjpeg at the
   trained quality, with their PSNR and SSIM; with ``--seeds N``, F and the F+N chosen within 2 dB are run
   with N seeds and reported per repetition and as mean +- sample standard deviation.

Run by hand after ``make demo`` (which makes ``demo-output/data``); resumable::

    .venv/bin/python benchmarks/demo_tradeoff.py [--out demo-output] [--repetitions 1] [--seeds 3]

Prints Markdown tables and one JSON line, and saves ``OUT/tradeoff/tradeoff.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import yaml

from neuralimaging.experiments import plots
from neuralimaging.experiments.results import collect
from neuralimaging.experiments.sweep import expand, run_sweep
from neuralimaging.experiments.train_manipulation import evaluate

SWEEP = Path(__file__).resolve().parents[1] / "examples" / "sweeps" / "demo-tradeoff.yaml"
BUDGETS_DB = (1.0, 2.0)


def _test_row(runs: Path, run: str, device: str) -> dict:
    shared = evaluate(runs / run, codec="differentiable", device=device)
    real = evaluate(runs / run, codec="libjpeg", device=device, fidelity=False)
    return {"run": run, "accuracy": shared["accuracy"], "accuracy_libjpeg": real["accuracy"], "psnr": shared["psnr"],
            "ssim": shared["ssim"], "n": shared["n"], "images": shared["images"], "fidelity": shared["fidelity"]}


def _mean_sd(values: list[float]) -> tuple[float, float]:
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("demo-output"), help="the demo's output folder")
    parser.add_argument("--repetitions", type=int, default=1, help="repetitions of every configuration")
    parser.add_argument("--seeds", type=int, default=1,
                        help="repetitions of F and of the F+N chosen within 2 dB, measured on the test split")
    parser.add_argument("--lambdas", type=lambda text: [float(v) for v in text.split(",")],
                        help="run only these lambda_nip values (and F) of the sweep, e.g. more repetitions of some")
    parser.add_argument("--workers", type=int, default=1, help="runs at once (each gets 2 / workers threads)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if not (args.out / "data" / "dataset.json").is_file():
        parser.error(f"{args.out / 'data'}: no prepared dataset; run `make demo` first")
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load {os.getloadavg()[0]:.2f}", flush=True)
    runs = args.out / "tradeoff"
    source = yaml.safe_load(SWEEP.read_text())
    source["stages"][1]["repetitions"] = args.repetitions
    if args.lambdas:
        source["stages"][1]["grid"]["lambda_nip"] = args.lambdas
    if args.workers > 1:
        source["resources"]["num_cpus"] = max(1, 2 // args.workers)
    progress = lambda outcome: print(f"run {outcome.name}: {outcome.status}", flush=True)  # noqa: E731
    run_sweep(expand(source, runs_dir=runs), runs, device=args.device, on_outcome=progress, workers=args.workers)

    table = collect(runs)
    done = table[table["state"] == "done"]
    nip = done[done["task"] == "nip"].iloc[0]
    start = float(nip["psnr"])
    joint = done[done["task"] != "nip"].copy()
    joint["paid_db"] = start - joint["psnr"].astype(float)
    joint["lambda_nip"] = joint["lambda_nip"].where(joint["mode"] != "F")
    joint["config"] = [run.rsplit("/", 1)[0] for run in joint["run"]]
    print(f"\npre-trained NIP on validation: {start:.2f} dB")
    print("\n| mode | lambda_nip | val accuracy | val PSNR (dB) | paid (dB) | run |\n|---|---|---|---|---|---|")
    for _, row in joint.sort_values(["mode", "lambda_nip", "run"], na_position="first").iterrows():
        lam = "-" if row["mode"] == "F" else f"{float(row['lambda_nip']):g}"
        print(f"| {row['mode']} | {lam} | {row['accuracy']:.3f} | {row['psnr']:.2f} | {row['paid_db']:.2f} | "
              f"{row['run']} |")

    # the choice: per configuration, the mean over its repetitions on validation
    configs = joint.groupby("config").agg(mode=("mode", "first"), lambda_nip=("lambda_nip", "first"),
                                          n=("accuracy", "size"), accuracy=("accuracy", "mean"),
                                          accuracy_sd=("accuracy", "std"), paid_db=("paid_db", "mean"),
                                          paid_sd=("paid_db", "std"))
    print("\n| mode | lambda_nip | repetitions | val accuracy, mean +- sd | paid (dB), mean +- sd |\n|---|---|---|---|---|")
    for _, row in configs.sort_values(["mode", "lambda_nip"], na_position="first").iterrows():
        lam = "-" if row["mode"] == "F" else f"{float(row['lambda_nip']):g}"
        print(f"| {row['mode']} | {lam} | {row['n']} | {row['accuracy']:.3f} +- {np.nan_to_num(row['accuracy_sd']):.3f} | "
              f"{row['paid_db']:.2f} +- {np.nan_to_num(row['paid_sd']):.2f} |")
    fn = configs[configs["mode"] != "F"]
    chosen: dict[float, str] = {}
    for budget in BUDGETS_DB:
        within = fn[fn["paid_db"] <= budget]
        if not within.empty:
            chosen[budget] = str(within.sort_values("accuracy", ascending=False).index[0])
    f_config = str(configs[configs["mode"] == "F"].index[0])

    seeds = max(args.seeds, args.repetitions)
    if seeds > args.repetitions and max(BUDGETS_DB) in chosen:
        source["stages"][1]["repetitions"] = seeds
        source["stages"][1]["grid"]["lambda_nip"] = sorted(float(lam) for lam in fn["lambda_nip"])
        run_sweep(expand(source, runs_dir=runs), runs, device=args.device, on_outcome=progress, workers=args.workers,
                  only=[f_config, chosen[max(BUDGETS_DB)]])

    rows = []
    print("\n| on the test split | lambda_nip | repetition | accuracy (dJPEG) | accuracy (libjpeg q50) | PSNR (dB) | "
          "SSIM |\n|---|---|---|---|---|---|---|")
    measured = [("F", f_config, seeds)] + [(f"F+N, <= {b:g} dB on validation", c, seeds if b == max(BUDGETS_DB)
                                            else args.repetitions) for b, c in chosen.items()]
    for label, config, reps in measured:
        lam = None if label == "F" else float(configs.loc[config, "lambda_nip"])
        for rep in range(reps):
            row = {"label": label, "lambda_nip": lam, "repetition": rep,
                   **_test_row(runs, f"{config}/{rep:03d}", args.device)}
            rows.append(row)
            print(f"| {label} | {'-' if lam is None else f'{lam:g}'} | {rep} | {row['accuracy']:.3f} | "
                  f"{row['accuracy_libjpeg']:.3f} | {row['psnr']:.2f} | {row['ssim']:.4f} |", flush=True)
    print(f"\n(test split: {rows[0]['n']} decisions per run, {rows[0]['images']} whole images for PSNR/SSIM; "
          f"{rows[0]['fidelity']})")

    spread = {}
    print("\n| on the test split, mean +- sd over repetitions | n | accuracy (dJPEG) | accuracy (libjpeg q50) | "
          "PSNR (dB) |\n|---|---|---|---|---|")
    for label, _, _ in measured:
        mine = [r for r in rows if r["label"] == label]
        spread[label] = {key: _mean_sd([r[key] for r in mine]) for key in ("accuracy", "accuracy_libjpeg", "psnr")}
        spread[label]["n"] = len(mine)
        cells = " | ".join(f"{m:.3f} +- {sd:.3f}" if key != "psnr" else f"{m:.2f} +- {sd:.2f}"
                           for key, (m, sd) in ((k, spread[label][k]) for k in ("accuracy", "accuracy_libjpeg", "psnr")))
        print(f"| {label} | {len(mine)} | {cells} |")
    figure = plots.tradeoff_figure(joint)
    figure.savefig(runs / "tradeoff.png", dpi=100)
    print(json.dumps({"nip_val_psnr": start, "validation": joint[["run", "mode", "lambda_nip", "accuracy", "psnr",
                                                                   "paid_db"]].to_dict("records"),
                      "chosen": chosen, "test": rows, "test_mean_sd": spread}, default=str))


if __name__ == "__main__":
    main()
