"""Executing a sweep: in this process, in worker processes or as Ray tasks, each run as soon as the NIP run it
needs is done (:func:`run_sweep`)."""

from __future__ import annotations

import json
import multiprocessing
import multiprocessing.connection
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from neuralimaging.errors import InputError
from neuralimaging.experiments.live import read_progress
from neuralimaging.experiments.storage import Storage, write_token
from neuralimaging.experiments.sweep.execute import (
    RunOutcome,
    RunProgress,
    _execute_dict,
)
from neuralimaging.experiments.sweep.spec import (
    ERROR_FILE,
    LOCK_FILE,
    PLAN_FILE,
    POLL_S,
    RunSpec,
    Sweep,
)
from neuralimaging.experiments.sweep.state import (
    RunState,
    _last_line,
    _summary_problem,
    run_state,
)
from neuralimaging.fsutil import atomic_write_text, inside

__all__ = ["mirror", "package_runtime_env", "run_sweep"]


# -- executors -------------------------------------------------------------------------------------------
def _threads(spec: RunSpec) -> int | None:
    value = spec.resources.get("num_cpus")
    return int(value) if value else None


@dataclass
class _Context:
    """What every executor of one sweep execution shares."""

    runs_dir: Path
    device: str
    storage: Storage | None
    owner: str
    token: str | None
    on_outcome: Callable[[RunOutcome], None]
    on_start: Callable[[RunSpec], None]
    in_flight: dict[str, float] = field(default_factory=dict)

    def call_args(self, spec: RunSpec) -> tuple:
        return (asdict(spec), str(self.runs_dir.absolute()), self.device, _threads(spec) or 1,
                f"{self.owner}/{spec.name}", self.storage.uri if self.storage else None, self.token)

    def finish(self, outcome: RunOutcome) -> RunOutcome:
        """Record an outcome: the driver's copy of a staged run is refreshed, then the callback."""
        self.in_flight.pop(outcome.name, None)
        if self.storage is not None and outcome.status not in ("skipped", "busy", "blocked"):
            mirror(self.storage, outcome.name, self.runs_dir)
        self.on_outcome(outcome)
        return outcome


def mirror(storage: Storage, name: str, runs_dir: str | os.PathLike[str], *, live_only: bool = False) -> None:
    """Copy the run ``name`` from storage into ``runs_dir`` (its latest checkpoint only; ``live_only``: just
    its progress, metrics, config and lock), for ``sweep status``, ``results`` and ``report``."""
    local = inside(runs_dir, name, "run name")
    only = ("progress.json", "metrics.jsonl", "config.yaml", ".running") if live_only else None
    try:
        storage.download(name, local, runs_dir, only=only)
        if (local / LOCK_FILE).exists() and storage.read_lock(name) is None:
            (local / LOCK_FILE).unlink(missing_ok=True)
    except OSError:
        return  # storage unreachable for a moment: the next refresh catches up


def _dependency(spec: RunSpec, names: set[str], ctx: _Context) -> str | None:
    """The run of this execution that ``spec``'s ``nip_run`` names, if any."""
    nip_run = spec.config.get("nip_run")
    if not isinstance(nip_run, (str, os.PathLike)):
        return None
    value = os.fspath(nip_run)
    if ctx.storage is not None:
        rel = ctx.storage.relative(value)
    else:
        try:
            rel = Path(value).absolute().relative_to(ctx.runs_dir.absolute()).as_posix()
        except ValueError:
            rel = None
    return rel if rel in names else None


def _schedule(
    runs: Sequence[RunSpec],
    ctx: _Context,
    capacity: int,
    launch: Callable[[RunSpec], Any],
    collect: Callable[[list[Any], float], list[tuple[Any, RunOutcome]]],
) -> list[RunOutcome]:
    """Launch each run as soon as the run it needs (its ``nip_run``) is done, ``capacity`` at a time, and
    collect outcomes as they come: no barrier between stages. A run whose NIP run ended otherwise is blocked."""
    names = {spec.name for spec in runs}
    waiting = list(runs)
    active: dict[Any, RunSpec] = {}
    ended: dict[str, str] = {}
    outcomes: list[RunOutcome] = []
    while waiting or active:
        for spec in list(waiting):
            if len(active) >= capacity:
                break
            needed = _dependency(spec, names, ctx)
            if needed is not None and needed not in ended:
                continue
            waiting.remove(spec)
            if needed is not None and ended[needed] not in ("done", "skipped"):
                outcome = RunOutcome(spec.name, "blocked", f"waits for its NIP run {needed} ({ended[needed]})")
                ended[spec.name] = "blocked"
                outcomes.append(ctx.finish(outcome))
                continue
            ctx.on_start(spec)
            ctx.in_flight[spec.name] = time.time()
            active[launch(spec)] = spec
        if not active:
            if waiting and all(_dependency(spec, names, ctx) not in ended for spec in waiting):
                for spec in waiting:  # a cycle of nip_run references: nothing can start
                    outcomes.append(ctx.finish(RunOutcome(spec.name, "blocked", "its NIP run waits for it in turn")))
                waiting.clear()
            continue
        for handle, outcome in collect(list(active), POLL_S):
            active.pop(handle)
            ended[outcome.name] = outcome.status
            outcomes.append(ctx.finish(outcome))
    return outcomes


def _local(runs: Sequence[RunSpec], ctx: _Context) -> list[RunOutcome]:
    outcomes = []
    for spec in runs:
        ctx.on_start(spec)
        ctx.in_flight[spec.name] = time.time()
        outcome = RunOutcome(**_execute_dict(*ctx.call_args(spec)))
        outcomes.append(ctx.finish(outcome))
    return outcomes


def _worker(args: tuple, sender: Any) -> None:
    """Entry point of a worker process: one run, its outcome sent back through ``sender``."""
    sender.send(_execute_dict(*args))
    sender.close()


def _processes(runs: Sequence[RunSpec], ctx: _Context, workers: int) -> list[RunOutcome]:
    """Every run in a process of its own, ``workers`` at a time: a process that dies fails only its run."""
    context = multiprocessing.get_context("spawn")  # no forked torch state; same as on a fresh machine
    handles: dict[Any, tuple[Any, RunSpec, Any]] = {}

    def launch(spec: RunSpec) -> Any:
        receiver, sender = context.Pipe(duplex=False)
        process = context.Process(target=_worker, daemon=False, args=(ctx.call_args(spec), sender))
        process.start()
        sender.close()
        handles[process.sentinel] = (process, spec, receiver)
        return process.sentinel

    def collect(active: list[Any], timeout: float) -> list[tuple[Any, RunOutcome]]:
        out = []
        for sentinel in multiprocessing.connection.wait(active, timeout):
            process, spec, receiver = handles.pop(sentinel)
            process.join()
            try:
                outcome = RunOutcome(**receiver.recv()) if receiver.poll() else None
            except (EOFError, OSError):
                outcome = None
            receiver.close()
            if outcome is None:  # the process died without an answer (killed for memory, a crash)
                outcome = RunOutcome(spec.name, "failed", f"worker process died (exit code {process.exitcode})")
                _record_crash(ctx, spec.name, outcome.error)
            out.append((sentinel, outcome))
        return out

    try:
        return _schedule(runs, ctx, workers, launch, collect)
    finally:
        for process, _, _ in handles.values():
            process.terminate()


def _record_crash(ctx: _Context, name: str, reason: str) -> None:
    if ctx.storage is not None:
        try:
            ctx.storage.write_bytes(f"{name}/{ERROR_FILE}", (reason + "\n").encode("utf-8"))
            ctx.storage.delete(f"{name}/.running")
        except OSError:
            pass
    run_dir = ctx.runs_dir / name
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / LOCK_FILE).unlink(missing_ok=True)
    atomic_write_text(run_dir / ERROR_FILE, reason + "\n")


def package_runtime_env() -> dict[str, Any]:
    """A Ray ``runtime_env`` that ships this installed ``neuralimaging`` package to every node (its
    dependencies, torch and the rest, must be installed there)."""
    import neuralimaging

    return {"py_modules": [str(Path(neuralimaging.__file__).parent)]}


def _ray(runs: Sequence[RunSpec], ctx: _Context, address: str, retries: int,
         runtime_env: Mapping[str, Any] | None) -> list[RunOutcome]:
    try:
        import ray
    except ImportError:
        raise InputError("--ray needs Ray: pip install 'neuralimaging[ray]'") from None
    if not ray.is_initialized():
        env = dict(runtime_env) if runtime_env is not None else None
        if address == "local":
            ray.init(include_dashboard=False, log_to_driver=False, runtime_env=env)
        else:
            ray.init(address=address, log_to_driver=False, runtime_env=env)
    elif runtime_env:
        raise InputError("runtime_env: Ray is already initialized in this process; pass it to ray.init instead")
    remote = ray.remote(_execute_dict)
    specs: dict[Any, RunSpec] = {}

    def launch(spec: RunSpec) -> Any:
        extra = {k: v for k, v in spec.resources.items() if k not in ("num_cpus", "num_gpus")}
        options: dict[str, Any] = {
            "num_cpus": spec.resources.get("num_cpus", 1),
            "num_gpus": spec.resources.get("num_gpus", 0),
            "max_retries": retries,  # the worker process or its node died: Ray runs it again, elsewhere if need be
            "retry_exceptions": False,  # a run that raises is recorded, not retried
        }
        if extra:
            options["resources"] = extra
        ref = remote.options(**options).remote(*ctx.call_args(spec))
        specs[ref] = spec
        return ref

    def collect(active: list[Any], timeout: float) -> list[tuple[Any, RunOutcome]]:
        ready, _ = ray.wait(active, num_returns=1, timeout=timeout)
        out = []
        for ref in ready:
            spec = specs.pop(ref)
            try:
                outcome = RunOutcome(**ray.get(ref))
            except Exception as error:  # noqa: BLE001 - the worker or node died more often than retries allow
                first = str(error).strip().splitlines()[0] if str(error).strip() else ""
                outcome = RunOutcome(spec.name, "failed", f"ray task died {retries + 1} times: {type(error).__name__}: {first}")
                _record_crash(ctx, spec.name, outcome.error)
            out.append((ref, outcome))
        return out

    return _schedule(runs, ctx, len(runs), launch, collect)


def _watch(ctx: _Context, every: float, on_progress: Callable[[RunProgress], None], stop: threading.Event) -> None:
    """Report the progress of every run in flight each ``every`` seconds (a staged run's progress is first
    copied from storage into the driver's runs folder)."""
    while not stop.wait(every):
        for name in list(ctx.in_flight):
            if ctx.storage is not None:
                mirror(ctx.storage, name, ctx.runs_dir, live_only=True)
            progress = read_progress(ctx.runs_dir / name) or {}  # none yet: the run is still starting
            if name in ctx.in_flight:
                on_progress(RunProgress(name, int(progress.get("step", 0)), int(progress.get("total", 0)),
                                        dict(progress.get("values") or {}), dict(progress.get("metrics") or {})))


def _stored_state(storage: Storage, name: str, runs_dir: Path) -> RunState:
    """The state of a run in storage (done: its copy in ``runs_dir`` is refreshed)."""
    if storage.summary_ok(name):
        if _summary_problem(runs_dir / name) is not None:
            mirror(storage, name, runs_dir)
        return RunState(name, "done")
    error = storage.read_bytes(f"{name}/{ERROR_FILE}")
    if error is not None:
        return RunState(name, "failed", error=_last_line(error.decode("utf-8", "replace")))
    return RunState(name, "pending")


def run_sweep(
    sweep: Sweep,
    runs_dir: str | os.PathLike[str],
    *,
    workers: int = 1,
    ray_address: str | None = None,
    device: str = "auto",
    retry_failed: bool = True,
    only: Iterable[str] | None = None,
    on_outcome: Callable[[RunOutcome], None] | None = None,
    on_start: Callable[[RunSpec], None] | None = None,
    on_progress: Callable[[RunProgress], None] | None = None,
    progress_every: float = 20.0,
    storage: str | None = None,
    retries: int = 3,
    runtime_env: Mapping[str, Any] | None = None,
) -> list[RunOutcome]:

    """Execute a sweep's runs into ``runs_dir``; each run starts once the NIP run it needs is done.

    Finished runs are skipped, interrupted runs resume from their checkpoints, a failing run is recorded in
    its folder (``error.txt``) and the others go on; a run whose NIP run is not done is ``blocked``. Locally
    (one at a time) runs go in sweep order; worker processes and Ray start a run as soon as its own NIP run
    is done (no barrier between stages).

    Args:
        sweep: the expanded sweep (:func:`load_sweep`), expanded with ``runs_dir=storage`` when ``storage``
            is given (so that ``{runs}`` names storage).
        runs_dir: the folder for the run folders (with ``storage``: the driver's copy of them); the plan goes
            to ``sweep-plan.json``.
        workers: local processes running at once (1: in this process, one run at a time).
        ray_address: run every run as a Ray task on the cluster at this address (``"local"``: start a local
            Ray instance; an already initialized Ray is reused). Overrides ``workers``.
        device: ``auto``, ``cpu`` or ``cuda`` for every run.
        retry_failed: run failed runs again (else they are left as failed).
        only: run just these run names (or name prefixes); one that matches no run is an error.
        on_outcome: called with each run's outcome as it finishes (e.g. to print progress).
        on_start: called with each run's spec when it starts (in this process) or is handed to a worker.
        on_progress: called every ``progress_every`` seconds with the progress of each run in flight.
        progress_every: seconds between two progress reports.
        storage: a storage URI where runs persist (:mod:`~neuralimaging.experiments.storage`); None: the runs
            folder itself (on a cluster: a disk every node mounts at the same path; checked per run).
        retries: Ray only: how often a run whose worker process or node died is run again (from its last
            checkpoint, elsewhere if need be).
        runtime_env: Ray only: the ``runtime_env`` of the job (e.g. :func:`package_runtime_env`).

    Returns:
        One outcome per executed or skipped run, in completion order.
    """
    if workers < 1:
        raise InputError(f"workers must be >= 1, got {workers}")
    if retries < 0:
        raise InputError(f"retries must be >= 0, got {retries}")
    runs_dir = Path(runs_dir)
    for spec in sweep.runs:
        inside(runs_dir, spec.name, "run name")
    store = Storage(storage) if storage is not None else None
    selected = list(sweep.runs)
    if only is not None:
        prefixes = [p.rstrip("/") for p in only]
        unknown = [p for p in prefixes if not any(r.name == p or r.name.startswith(p + "/") for r in selected)]
        if unknown:
            raise InputError(f"--only {unknown[0]!r}: no run of sweep {sweep.name!r} has this name or name prefix")
        selected = [r for r in selected if any(r.name == p or r.name.startswith(p + "/") for p in prefixes)]
    runs_dir.mkdir(parents=True, exist_ok=True)
    plan = {"name": sweep.name, "sweep": sweep.source, "runs": [asdict(r) for r in sweep.runs],
            "storage": store.uri if store else None}
    atomic_write_text(runs_dir / PLAN_FILE, json.dumps(plan, indent=2, default=str) + "\n")
    if store is not None:
        store.write_bytes(PLAN_FILE, json.dumps(plan, indent=2, default=str).encode("utf-8"))
    ctx = _Context(runs_dir, device, store, secrets.token_hex(6),
                   write_token(runs_dir) if ray_address and store is None else None,
                   on_outcome or (lambda outcome: None), on_start or (lambda spec: None))
    outcomes: list[RunOutcome] = []
    todo = []
    for spec in selected:
        state = _stored_state(store, spec.name, runs_dir) if store else run_state(runs_dir / spec.name, spec.name)
        if state.state == "done" or (state.state == "failed" and not retry_failed):
            outcome = RunOutcome(spec.name, "skipped" if state.state == "done" else "failed", state.error)
            ctx.on_outcome(outcome)
            outcomes.append(outcome)
        else:
            todo.append(spec)
    if not todo:
        return outcomes
    stop = threading.Event()
    watcher = threading.Thread(target=_watch, args=(ctx, progress_every, on_progress, stop), daemon=True)
    if on_progress is not None:
        watcher.start()
    try:
        if ray_address:
            outcomes += _ray(todo, ctx, ray_address, retries, runtime_env)
        elif workers > 1 and len(todo) > 1:
            outcomes += _processes(todo, ctx, workers)
        else:
            outcomes += _local(todo, ctx)
    finally:
        stop.set()
        if watcher.is_alive():
            watcher.join()
    return outcomes
