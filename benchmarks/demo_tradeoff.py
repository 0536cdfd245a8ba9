"""The demo's accuracy / fidelity trade-off (the paper's Fig. 9) on the default data, and its choice of lambda.

Runs the sweep ``examples/sweeps/demo-tradeoff.yaml`` (the shipped DNet, F and F+N at six values of
``lambda_nip`` with the ``demo`` preset) on the demo's data, then:

1. on the **validation** images: accuracy (dJPEG channel) and PSNR of every run, and for a fidelity budget of
   1 dB and 2 dB below the pre-trained NIP the ``lambda_nip`` with the best accuracy within it;
2. on the **test** images: F and the chosen runs under the differentiable codec and under libjpeg at the
   trained quality, with their PSNR and SSIM.

Run by hand after ``make demo`` (which makes ``demo-output/data``); resumable::

    .venv/bin/python benchmarks/demo_tradeoff.py [--out demo-output] [--repetitions 1]

Prints Markdown tables and one JSON line, and saves ``OUT/tradeoff/tradeoff.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import yaml

from neuralimaging.experiments import plots
from neuralimaging.experiments.results import collect
from neuralimaging.experiments.sweep import expand, run_sweep
from neuralimaging.experiments.train_manipulation import evaluate

SWEEP = Path(__file__).resolve().parents[1] / "examples" / "sweeps" / "demo-tradeoff.yaml"
BUDGETS_DB = (1.0, 2.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("demo-output"), help="the demo's output folder")
    parser.add_argument("--repetitions", type=int, default=1, help="repetitions of every configuration")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if not (args.out / "data" / "dataset.json").is_file():
        parser.error(f"{args.out / 'data'}: no prepared dataset; run `make demo` first")
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load {os.getloadavg()[0]:.2f}", flush=True)
    runs = args.out / "tradeoff"
    source = yaml.safe_load(SWEEP.read_text())
    source["stages"][1]["repetitions"] = args.repetitions
    run_sweep(expand(source, runs_dir=runs), runs, device=args.device,
              on_outcome=lambda outcome: print(f"run {outcome.name}: {outcome.status}", flush=True))

    table = collect(runs)
    done = table[table["state"] == "done"]
    nip = done[done["task"] == "nip"].iloc[0]
    start = float(nip["psnr"])
    joint = done[done["task"] != "nip"].copy()
    joint["paid_db"] = start - joint["psnr"].astype(float)
    joint["lambda_nip"] = joint["lambda_nip"].where(joint["mode"] != "F")
    print(f"\npre-trained NIP on validation: {start:.2f} dB")
    print("\n| mode | lambda_nip | val accuracy | val PSNR (dB) | paid (dB) | run |\n|---|---|---|---|---|---|")
    for _, row in joint.sort_values(["mode", "lambda_nip"], na_position="first").iterrows():
        lam = "-" if row["mode"] == "F" else f"{float(row['lambda_nip']):g}"
        print(f"| {row['mode']} | {lam} | {row['accuracy']:.3f} | {row['psnr']:.2f} | {row['paid_db']:.2f} | "
              f"{row['run']} |")

    fn = joint[joint["mode"] != "F"]
    chosen: dict[float, str] = {}
    for budget in BUDGETS_DB:
        within = fn[fn["paid_db"] <= budget]
        if not within.empty:
            chosen[budget] = str(within.sort_values("accuracy", ascending=False).iloc[0]["run"])
    f_run = str(joint[joint["mode"] == "F"].iloc[0]["run"])

    rows = []
    print("\n| on the test split | lambda_nip | accuracy (dJPEG) | accuracy (libjpeg q50) | PSNR (dB) | SSIM |"
          "\n|---|---|---|---|---|---|")
    for label, run in [("F", f_run)] + [(f"F+N, <= {b:g} dB on validation", r) for b, r in chosen.items()]:
        shared = evaluate(runs / run, codec="differentiable", device=args.device)
        real = evaluate(runs / run, codec="libjpeg", device=args.device, fidelity=False)
        lam = float(joint.set_index("run").loc[run, "lambda_nip"]) if label != "F" else None
        rows.append({"label": label, "run": run, "lambda_nip": lam, "accuracy": shared["accuracy"],
                     "accuracy_libjpeg": real["accuracy"], "psnr": shared["psnr"], "ssim": shared["ssim"],
                     "n": shared["n"], "images": shared["images"]})
        print(f"| {label} | {'-' if lam is None else f'{lam:g}'} | {shared['accuracy']:.3f} | "
              f"{real['accuracy']:.3f} | {shared['psnr']:.2f} | {shared['ssim']:.4f} |")
    print(f"\n(test split: {rows[0]['n']} decisions per run, {rows[0]['images']} whole images for PSNR/SSIM; "
          f"{shared['fidelity']})")
    figure = plots.tradeoff_figure(joint)
    figure.savefig(runs / "tradeoff.png", dpi=100)
    print(json.dumps({"nip_val_psnr": start, "validation": joint[["run", "mode", "lambda_nip", "accuracy", "psnr",
                                                                   "paid_db"]].to_dict("records"),
                      "chosen": chosen, "test": rows}, default=str))


if __name__ == "__main__":
    main()
