"""``neuralimaging sweep run|status``: a grid of training runs, locally or on a Ray cluster."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path

from neuralimaging.device import resolve_device
from neuralimaging.errors import InputError
from neuralimaging.experiments import sweep as sweep_lib


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser("sweep", parents=[common], help="run a grid of training runs (locally or on Ray)")
    commands = parser.add_subparsers(dest="sweep_command", metavar="SUBCOMMAND", required=True)

    run = commands.add_parser(
        "run", parents=[common], help="run (or resume) every run of a sweep file",
        description="Expand SWEEP.yaml into runs under RUNS_DIR and run them: finished runs are skipped, "
        "interrupted ones resume from their checkpoints, a failing run is recorded and the others go on. "
        "Exit code 1 when any run did not finish (failed, blocked by an unfinished NIP run, busy elsewhere, "
        "stopped early).",
    )
    run.add_argument("sweep_file", metavar="SWEEP.yaml", help="the sweep file (see examples/sweeps/)")
    run.add_argument("--out", required=True, metavar="RUNS_DIR",
                     help="folder for the run folders (with --storage: this machine's copy of them)")
    where = run.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, default=1, metavar="N", help="local processes at once (default 1)")
    where.add_argument("--ray", metavar="ADDRESS", help="run each run as a Ray task on this cluster ('local': start "
                       "one here; 'auto': the cluster this machine belongs to, e.g. under `ray job submit`)")
    run.add_argument("--storage", metavar="URI", help="where runs persist when the nodes share no disk: any "
                     "pyarrow filesystem URI (s3://bucket/runs, gs://..., file:///shared/runs); runs execute on "
                     "their node's disk and sync there (default: RUNS_DIR itself)")
    run.add_argument("--retries", type=int, default=3, metavar="N",
                     help="Ray: run a run again this often when its worker or node dies (default 3)")
    run.add_argument("--runtime-env", metavar="FILE", help="Ray: the job's runtime_env as a YAML/JSON file "
                     "(default: ship this installed neuralimaging package to the nodes)")
    run.add_argument("--skip-failed", action="store_true", help="leave failed runs failed instead of retrying them")
    run.add_argument("--only", action="append", metavar="NAME", help="run just this run (or name prefix); repeatable")
    run.add_argument("--dry-run", action="store_true", help="list the runs and their configs without running")
    run.add_argument("--progress-every", type=float, default=30.0, metavar="S",
                     help="seconds between progress lines of the runs in flight (default 30; 0: none)")
    run.add_argument("--json", action="store_true", help="print the outcomes as a JSON list (progress stays on stderr)")
    run.add_argument("--plugin", action="append", default=[], metavar="MODULE:FUNCTION",
                     help="allow the sweep file to run this task of another module (repeatable); without it a "
                     "sweep runs only the toolkit's own tasks")
    run.set_defaults(func=run_command)

    status = commands.add_parser("status", parents=[common],
                                 help="done / running / failed / pending runs of a runs folder, with their progress")
    status.add_argument("runs_dir", metavar="RUNS_DIR")
    status.add_argument("--json", action="store_true", help="print a JSON list")
    status.set_defaults(func=status_command)


def _runtime_env(args: argparse.Namespace) -> dict | None:
    if not args.ray:
        return None
    if not args.runtime_env:
        return sweep_lib.package_runtime_env()
    import yaml

    from neuralimaging import yamlio

    path = Path(args.runtime_env)
    try:
        env = yamlio.load(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError) as error:
        raise InputError(f"--runtime-env {path}: not a readable YAML/JSON file ({str(error).splitlines()[0]})") from None
    if not isinstance(env, dict):
        raise InputError(f"--runtime-env {path}: expected a mapping (Ray's runtime_env), got {type(env).__name__}")
    return env


def run_command(args: argparse.Namespace) -> int:
    resolve_device(args.device)  # fail early on --device cuda without CUDA
    storage = None
    if args.storage:
        from neuralimaging.experiments.storage import Storage

        storage = Storage(args.storage).uri
    sweep = sweep_lib.load_sweep(args.sweep_file, runs_dir=storage or args.out, plugins=args.plugin)
    if args.dry_run:
        for spec in sweep.runs:
            print(f"{spec.name}  [{spec.task}]  {json.dumps(spec.config, sort_keys=True)}")
        print(f"{len(sweep.runs)} runs")
        return 0
    start = time.perf_counter()
    total = len(sweep.runs if not args.only else [r for r in sweep.runs if any(r.name == p or r.name.startswith(p.rstrip('/') + '/') for p in args.only)])
    seen = [0]

    def show(outcome: sweep_lib.RunOutcome) -> None:
        seen[0] += 1
        extra = ""
        if outcome.status in ("done", "failed", "incomplete") and outcome.wall_time_s:
            notes = [f"{outcome.wall_time_s:.1f} s"] + (["resumed"] if outcome.resumed else []) + (
                [f"attempt {outcome.attempt}"] if outcome.attempt > 1 else [])
            extra = f" ({', '.join(notes)})"
        reason = f": {outcome.error}" if outcome.error else ""
        print(f"[{seen[0]}/{total}] {outcome.status:<10} {outcome.name}{extra}{reason}", file=sys.stderr, flush=True)

    def progress(report: sweep_lib.RunProgress) -> None:
        print(f"      running    {report.name}: {report.line()}", file=sys.stderr, flush=True)

    outcomes = sweep_lib.run_sweep(
        sweep, args.out, workers=args.workers, ray_address=args.ray, device=args.device,
        retry_failed=not args.skip_failed, only=args.only, on_outcome=show,
        on_progress=progress if args.progress_every > 0 else None, progress_every=args.progress_every or 30.0,
        storage=storage, retries=args.retries, runtime_env=_runtime_env(args),
    )
    counts = Counter(o.status for o in outcomes)
    wall = time.perf_counter() - start
    unfinished = [o for o in outcomes if o.status not in ("done", "skipped")]
    if args.json:
        print(json.dumps([asdict(o) for o in outcomes], indent=2))
    else:
        print(f"sweep {sweep.name}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) + f" in {wall:.1f} s; runs in {args.out}")
    if unfinished:
        print(f"{len(unfinished)} of {len(outcomes)} runs did not finish:", file=sys.stderr)
        for outcome in unfinished:
            print(f"  {outcome.name}: {outcome.status}{': ' + outcome.error if outcome.error else ''}", file=sys.stderr)
        return 1
    return 0


def _figures(state: sweep_lib.RunState) -> str:
    if not state.step and not state.metrics:
        return ""
    step = f"step {state.step}/{state.total}" if state.total else f"step {state.step}"
    metrics = ", ".join(f"{k} {v:.4g}" for k, v in state.metrics.items())
    return f"  {step}" + (f"  {metrics}" if metrics else "")


def status_command(args: argparse.Namespace) -> int:
    states = sweep_lib.sweep_status(args.runs_dir)
    if args.json:
        print(json.dumps([asdict(s) for s in states], indent=2))
        return 0
    width = max([len(s.name) for s in states] + [3])
    for s in states:
        note = " (resumable)" if s.resumable and s.state in ("pending", "failed") else ""
        error = f"  {s.error}" if s.error else ""
        print(f"{s.name:<{width}}  {s.state:<7}{note}{_figures(s)}{error}")
    counts = Counter(s.state for s in states)
    print(", ".join(f"{k} {counts.get(k, 0)}" for k in ("done", "running", "failed", "pending")) + f" (of {len(states)})")
    return 0
