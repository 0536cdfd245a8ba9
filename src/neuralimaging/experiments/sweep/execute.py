"""Executing one run: locks with heartbeats, staging through storage, failure isolation (:func:`execute_run`)."""

from __future__ import annotations

import copy
import importlib
import json
import os
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from neuralimaging.errors import InputError
from neuralimaging.experiments.storage import (
    Storage,
    check_token,
    listing,
    node_name,
    staging_root,
)
from neuralimaging.experiments.sweep.spec import (
    ERROR_FILE,
    HEARTBEAT_S,
    LOCK_FILE,
    POLL_S,
    RUN_FILE,
    STALE_AFTER_S,
    RunSpec,
)
from neuralimaging.experiments.sweep.state import (
    _SHOWN,
    _boot_id,
    _has_checkpoint,
    _lock_fresh,
    _owner_gone,
    _read_json,
    _summary_problem,
    run_state,
)
from neuralimaging.fsutil import atomic_write_text, check_relative, inside

__all__ = ["RunOutcome", "RunProgress", "execute_run"]


# -- executing one run -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunOutcome:
    """What happened to one run in this execution: ``status`` is done, skipped (already done), incomplete
    (stopped before its summary), failed, busy (another executor holds it) or blocked (a run it needs is not
    done). ``attempt`` counts the executions of the run by this sweep execution (above 1 after a retry of a
    lost worker or node); ``node`` is where it executed (the Ray node id on a cluster, else the host)."""

    name: str
    status: str
    error: str = ""
    wall_time_s: float = 0.0
    resumed: bool = False
    attempt: int = 1
    node: str = ""


@dataclass(frozen=True)
class RunProgress:
    """A run while it trains: steps done of ``total``, running ``values`` (training loss) and the ``metrics``
    of its last validation (:mod:`~neuralimaging.experiments.live`)."""

    name: str
    step: int
    total: int
    values: dict[str, float]
    metrics: dict[str, float]

    def line(self) -> str:
        """One line for a log: ``step 120/1000 (12%), loss 1.31; accuracy 0.41, psnr 37.9``."""
        if not self.total and not self.step:
            return "starting (loading data, first validation)"
        share = f" ({100 * self.step / self.total:.0f}%)" if self.total else ""
        values = ", ".join(f"{k} {v:.4g}" for k, v in self.values.items())
        metrics = ", ".join(f"{k} {self.metrics[k]:.4g}" for k in _SHOWN if k in self.metrics)
        return f"step {self.step}/{self.total}{share}" + (f", {values}" if values else "") + (f"; {metrics}" if metrics else "")




def _lock_record(owner: str, attempt: int) -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "boot_id": _boot_id(), "started": time.time(),
            "owner": owner, "attempt": attempt, "node": node_name()}


class _Heartbeat:
    """Keeps ``.running`` fresh (touched every ``HEARTBEAT_S``) while a run executes.

    Args:
        run_dir: the run folder.
        owner: who executes the run: an earlier attempt of the same owner (a worker or node Ray lost, whose
            run it retries) never blocks it.
    """

    def __init__(self, run_dir: Path, owner: str = "") -> None:
        self.path = run_dir / LOCK_FILE
        self.owner = owner
        self.attempt = 1
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)

    def acquire(self, stale_after: float = STALE_AFTER_S) -> bool:
        """Create the lock atomically (``O_EXCL``), replacing a stale one or one of an earlier attempt of the
        same owner; False when another executor holds a fresh one."""
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)  # the umask applies
            except FileExistsError:
                held = _read_json(self.path)
                mine = bool(self.owner) and isinstance(held, dict) and held.get("owner") == self.owner
                if not mine and _lock_fresh(self.path.parent, stale_after):
                    return False
                if mine:
                    self.attempt = int(held.get("attempt", 1)) + 1
                self.path.unlink(missing_ok=True)  # left by a killed executor (dead owner, no heartbeat, retried)
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(json.dumps(_lock_record(self.owner, self.attempt)) + "\n")
            self._thread.start()
            return True
        return False

    def __enter__(self) -> _Heartbeat:
        if not self._thread.is_alive() and not self.acquire():
            raise InputError(f"{self.path.parent}: another executor is running this run")
        return self

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                os.utime(self.path)
            except FileNotFoundError:
                return

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.path.unlink(missing_ok=True)


class _StorageSync:
    """While a staged run executes: uploads what changed in its local folder every ``POLL_S`` seconds (each
    checkpoint as soon as it is complete) and refreshes its lock in storage every ``HEARTBEAT_S``."""

    def __init__(self, storage: Storage, name: str, run_dir: Path, local_root: Path, lock: dict[str, Any]) -> None:
        self.storage, self.name, self.run_dir, self.local_root, self.lock = storage, name, run_dir, local_root, lock
        self.seen = listing(run_dir)  # as downloaded: already in storage
        self._stop = threading.Event()
        self._mutex = threading.Lock()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def sync(self) -> None:
        """Upload what changed since the last upload."""
        with self._mutex:
            self.seen = self.storage.upload(self.run_dir, self.name, self.local_root, self.seen)

    def _loop(self) -> None:
        beat = time.monotonic()
        while not self._stop.wait(POLL_S):
            try:
                self.sync()
                if time.monotonic() - beat >= HEARTBEAT_S:
                    self.storage.write_lock(self.name, self.lock)
                    beat = time.monotonic()
            except Exception:  # noqa: BLE001 - a failing upload is retried next time; the final one reports
                continue

    def __enter__(self) -> _StorageSync:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _import_task(task: str) -> Callable[..., Any]:
    module_name, _, function = task.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise InputError(f"task {task!r}: cannot import {module_name} ({error})") from None
    fn = getattr(module, function, None)
    if not callable(fn):
        raise InputError(f"task {task!r}: {module_name} has no function {function!r}")
    return fn


def _waits_for(spec: RunSpec, storage: Storage | None = None) -> str | None:
    """Why the run cannot start yet (its ``nip_run`` is not done), or None."""
    nip_run = spec.config.get("nip_run")
    if not isinstance(nip_run, (str, os.PathLike)):
        return None
    rel = storage.relative(os.fspath(nip_run)) if storage is not None else None
    if rel is not None:
        return None if storage.summary_ok(rel) else f"waits for its NIP run {nip_run} (not done in storage)"
    state = run_state(Path(nip_run))
    if state.state == "done":
        return None
    return f"waits for its NIP run {nip_run} ({state.state}{': ' + state.error if state.error else ''})"


def _set_threads(threads: int | None) -> None:
    if threads:
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(int(threads))
        else:  # torch reads it when the task imports it
            os.environ["OMP_NUM_THREADS"] = str(int(threads))


def _call_task(spec: RunSpec, config: dict[str, Any], run_dir: Path, device: str) -> tuple[str, str, float, bool]:
    """Call the task on ``run_dir`` (locked by the caller): ``(status, error, wall time, resumed)``; a raised
    exception is written with its traceback to ``error.txt``."""
    start = time.perf_counter()
    resume = _has_checkpoint(run_dir)
    try:
        if _summary_problem(run_dir) not in (None, "missing"):  # damaged: keep it, the run resumes to rewrite it
            os.replace(run_dir / "summary.json", run_dir / "summary.json.damaged")
        atomic_write_text(run_dir / RUN_FILE, json.dumps(asdict(spec), indent=2, default=str) + "\n")
        (run_dir / ERROR_FILE).unlink(missing_ok=True)
        fn = _import_task(spec.task)
        fn(copy.deepcopy(config), run_dir, resume=resume, device=device, progress=False)
    except Exception as error:  # noqa: BLE001 - isolation: every failure is recorded, the sweep goes on
        atomic_write_text(run_dir / ERROR_FILE, "".join(traceback.format_exception(error)))
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        return "failed", f"{type(error).__name__}: {reason}", time.perf_counter() - start, resume
    # the task owns summary.json; one that stopped early (e.g. a step budget) leaves the run resumable
    status = "done" if _summary_problem(run_dir) is None else "incomplete"
    return status, "", time.perf_counter() - start, resume


def execute_run(
    spec: RunSpec,
    runs_dir: str | os.PathLike[str],
    device: str = "auto",
    threads: int | None = None,
    *,
    owner: str = "",
    storage: str | Storage | None = None,
    token: str | None = None,
) -> RunOutcome:

    """Execute one run in this process, isolating its failure.

    Skips the run when it is done or another executor holds its lock; does not start it (``blocked``) while
    the NIP run its config names is not done; resumes it from its checkpoint when it has one. The task is
    called as ``task(config, run_dir, resume=..., device=..., progress=False)`` and owns ``summary.json``: a
    task that returns without writing it (stopped early) leaves the run ``incomplete`` (pending, resumable).
    Any exception is caught and written with its traceback to ``error.txt``.

    Args:
        spec: the run.
        runs_dir: the runs folder; the run lives in ``runs_dir / spec.name`` (without ``storage``).
        device: ``auto``, ``cpu`` or ``cuda`` for the task.
        threads: torch intra-op threads for the run (``None`` leaves torch's setting).
        owner: who executes it (a lock of an earlier attempt of the same owner is taken over at once).
        storage: a storage URI (:mod:`~neuralimaging.experiments.storage`): the run executes in a copy on
            this node's disk, synced to storage; ``runs_dir`` is then not used.
        token: the token the driver wrote into ``runs_dir``: a node that does not see it fails the run.

    Returns:
        The outcome (never raises for a failing task).
    """
    if storage is not None:
        return _execute_staged(spec, storage if isinstance(storage, Storage) else Storage(storage), device,
                               threads, owner)
    if token is not None:
        try:
            check_token(runs_dir, token)
        except InputError as error:
            return RunOutcome(spec.name, "failed", str(error), node=node_name())
    run_dir = inside(runs_dir, spec.name, "run name")
    if _summary_problem(run_dir) is None:
        return RunOutcome(spec.name, "skipped")
    waits = _waits_for(spec)
    if waits:
        return RunOutcome(spec.name, "blocked", waits)
    run_dir.mkdir(parents=True, exist_ok=True)
    heartbeat = _Heartbeat(run_dir, owner)
    if not heartbeat.acquire():
        return RunOutcome(spec.name, "busy")
    _set_threads(threads)
    with heartbeat:
        status, error, wall, resumed = _call_task(spec, spec.config, run_dir, device)
    return RunOutcome(spec.name, status, error, wall, resumed, heartbeat.attempt, node_name())


def _remote_lock_fresh(record: dict[str, Any] | None) -> bool:
    if record is None:
        return False
    beat = record.get("beat")
    if not isinstance(beat, (int, float)) or time.time() - beat >= STALE_AFTER_S:
        return False
    return not _owner_gone(record)


def _execute_staged(spec: RunSpec, storage: Storage, device: str, threads: int | None, owner: str) -> RunOutcome:
    """:func:`execute_run` with a storage URI: download, run with uploads, upload, check."""
    name = check_relative(spec.name, "run name")
    if storage.summary_ok(name):
        return RunOutcome(name, "skipped")
    waits = _waits_for(spec, storage)
    if waits:
        return RunOutcome(name, "blocked", waits)
    held = storage.read_lock(name)
    mine = bool(owner) and held is not None and held.get("owner") == owner
    if not mine and _remote_lock_fresh(held):
        return RunOutcome(name, "busy")
    attempt = int(held.get("attempt", 1)) + 1 if mine else 1
    lock = _lock_record(owner, attempt)
    storage.write_lock(name, lock)
    root = staging_root(storage.uri)
    run_dir = root / name
    try:
        storage.clear_staging(run_dir)
        storage.download(name, run_dir, root)
        storage.delete(f"{name}/{ERROR_FILE}")
        config = storage.localize(spec.config, root)
    except Exception as error:  # noqa: BLE001 - storage unreachable or an input missing: this run fails
        storage.delete(f"{name}/.running")
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        return RunOutcome(name, "failed", f"storage {storage.uri}: {type(error).__name__}: {reason}",
                          attempt=attempt, node=node_name())
    _set_threads(threads)
    sync = _StorageSync(storage, name, run_dir, root, lock)
    with sync:
        status, error, wall, resumed = _call_task(spec, config, run_dir, device)
    try:
        sync.sync()
    except Exception as failure:  # noqa: BLE001 - the results did not reach storage: the run is not done
        status, error = "failed", f"uploading to {storage.uri} failed: {type(failure).__name__}: {failure}"
    storage.delete(f"{name}/.running")
    if status == "done" and not storage.summary_ok(name):
        status, error = "failed", f"{storage.uri}/{name}: summary.json did not reach storage"
    return RunOutcome(name, status, error, wall, resumed, attempt, node_name())


def _execute_dict(spec: dict[str, Any], runs_dir: str, device: str, threads: int | None, owner: str = "",
                  storage: str | None = None, token: str | None = None) -> dict[str, Any]:
    """Picklable entry point for worker processes and Ray tasks (plain dicts in and out)."""
    return asdict(execute_run(RunSpec(**spec), runs_dir, device, threads, owner=owner, storage=storage, token=token))


