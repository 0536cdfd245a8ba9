"""Joint step, ours against TensorFlow, measured in alternating rounds on the same machine.

The benchmark's target is a joint NIP + FAN step (F+N, batch 20 of 64x64x4 RAW) at least twice as fast as the
authors' TensorFlow toolbox. On a shared 2-core VM the speed of the same code drifts by 30% or more within
minutes, so two scripts run an hour apart cannot be compared. This driver alternates them: for every round
and NIP it runs ``benchmarks/train_manipulation.py`` (ours, ``--modes fan+nip``) and then
``benchmarks/tf_reference.py --parts joint`` (TensorFlow, in its own virtual environment), each in a fresh
process, and reports each round's medians and their ratio. The ratio is the figure to trust; the medians
also go next to the toolbox's published timings (0.96 / 1.42 / 2.26 s).

Run by hand (never in the test suite), with TensorFlow installed as ``benchmarks/tf_reference.py`` says::

    .venv/bin/python benchmarks/joint_vs_tf.py --tf-python /tmp/tfvenv/bin/python
    .venv/bin/python benchmarks/joint_vs_tf.py --tf-python /tmp/tfvenv/bin/python --rounds 3 --nips dnet \\
        --precision fp32 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
TOOLBOX_JOINT_S = {"inet": 0.96, "unet": 1.42, "dnet": 2.26}


def ours(nip: str, args: argparse.Namespace) -> float:
    """Median seconds of our F+N step for ``nip``, from a fresh process."""
    command = [sys.executable, str(HERE / "train_manipulation.py"), "--threads", str(args.threads), "--steps",
               str(args.steps), "--warmup", str(args.warmup), "--nips", nip, "--modes", "fan+nip",
               "--precision", args.precision, "--json"]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return float(json.loads(out)["rows"][0]["median_s"])


def tensorflow(nip: str, args: argparse.Namespace) -> float:
    """Median seconds of TensorFlow's joint step for ``nip``, from a fresh process."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tf.json"
        command = [args.tf_python, str(HERE / "tf_reference.py"), "--threads", str(args.threads), "--steps",
                   str(args.steps), "--warmup", str(args.warmup), "--parts", "joint", "--nips", nip,
                   "--onednn", args.onednn, "--json", str(path)]
        subprocess.run(command, check=True, capture_output=True, text=True)
        return float(json.loads(path.read_text())["rows"][0]["median_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tf-python", required=True, help="the Python of a venv with tensorflow-cpu==2.15.1")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--nips", default="inet,unet,dnet")
    parser.add_argument("--precision", default="auto", help="ours: fp32, bf16 or auto (the default)")
    parser.add_argument("--onednn", default="on", choices=("default", "on", "off"),
                        help="TensorFlow's oneDNN (on: its faster setting, the default on AVX-512 CPUs)")
    parser.add_argument("--json", metavar="PATH", help="write the rounds and the summary as JSON")
    args = parser.parse_args()
    if not Path(args.tf_python).is_file():
        sys.exit(f"error: --tf-python {args.tf_python!r} is not a file; expected a venv's python with tensorflow")
    nips = args.nips.split(",")
    unknown = [n for n in nips if n not in TOOLBOX_JOINT_S]
    if unknown:
        sys.exit(f"error: unknown NIP(s) {', '.join(unknown)}; expected some of {', '.join(TOOLBOX_JOINT_S)}")
    load_before = os.getloadavg()
    rounds = []
    for r in range(args.rounds):
        for nip in nips:
            a = ours(nip, args)
            b = tensorflow(nip, args)
            rounds.append({"round": r + 1, "nip": nip, "ours_s": a, "tf_s": b, "tf_over_ours": b / a})
            print(f"round {r + 1} {nip:<5} ours {a:.3f} s  TF {b:.3f} s  TF/ours x{b / a:.2f}", flush=True)
    summary = []
    print(f"\nmedians over {args.rounds} rounds (ours: precision {args.precision}; TF oneDNN {args.onednn}):")
    for nip in nips:
        rows = [x for x in rounds if x["nip"] == nip]
        a = statistics.median(x["ours_s"] for x in rows)
        b = statistics.median(x["tf_s"] for x in rows)
        ratio = statistics.median(x["tf_over_ours"] for x in rows)
        toolbox = TOOLBOX_JOINT_S[nip]
        summary.append({"nip": nip, "ours_s": a, "tf_s": b, "tf_over_ours": ratio, "toolbox_s": toolbox,
                        "toolbox_over_ours": toolbox / a})
        per_round = ", ".join(f"{x['tf_over_ours']:.2f}" for x in rows)
        print(f"{nip:<5} ours {a:.3f} s  TF {b:.3f} s  TF/ours x{ratio:.2f} (per-round ratios {per_round})  "
              f"toolbox reported {toolbox:.2f} s -> x{toolbox / a:.2f}")
    meta = {"threads": args.threads, "steps": args.steps, "warmup": args.warmup, "precision": args.precision,
            "onednn": args.onednn, "loadavg_before": load_before, "loadavg_after": os.getloadavg()}
    print(f"load average before {load_before[0]:.2f}, after {meta['loadavg_after'][0]:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": meta, "rounds": rounds, "summary": summary}, indent=2))


if __name__ == "__main__":
    main()
