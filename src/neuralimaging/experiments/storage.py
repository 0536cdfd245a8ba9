"""Where a sweep's run folders persist when the nodes share no disk: any filesystem pyarrow opens by URI.

A sweep runs with one of two kinds of storage:

- **the runs folder itself** (the default): every run writes straight into ``RUNS_DIR/<name>``. On a cluster
  that folder must be a disk every node mounts at the same path; a node that does not see it refuses the run
  with an error naming the folder (:func:`check_token`), never writing results the driver cannot find.
- **a storage URI** (``file:///shared/runs``, ``s3://bucket/runs``, ``gs://...``, ``hdfs://...``; anything
  ``pyarrow.fs.FileSystem.from_uri`` opens, with the credentials pyarrow finds on each node): a run executes in
  a folder on its node's own disk (:func:`staging_root`) that is a copy of its storage folder: downloaded
  before the run (so a retry resumes from the last checkpoint that reached storage), uploaded while it trains
  (each new checkpoint, metrics and progress) and at the end, ``summary.json`` last. The driver keeps a copy
  of every run in its own runs folder for ``sweep status``, ``results`` and ``report``.

Paths in a run's text files (``config.yaml``, ``summary.json``, ``nip_source.json``, ``sweep-run.json``) are
written to storage with the storage URI and rewritten to the local folder they are copied to, so a run
resumed on another node finds its config unchanged and a later stage finds the NIP run it names
(:meth:`Storage.localize` downloads it).
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import secrets
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from neuralimaging.errors import InputError
from neuralimaging.fsutil import atomic_write_bytes, atomic_write_text, check_relative

__all__ = ["STAGING_ENV", "TOKEN_FILE", "TRANSLATED", "Storage", "check_token", "listing", "node_name",
           "staging_root", "write_token"]

STAGING_ENV = "NEURALIMAGING_STAGING"
"""Environment variable naming the folder on a node's own disk where runs execute (default: the system's
temporary folder)."""

TOKEN_FILE = ".sweep-token"
TRANSLATED = ("config.yaml", "summary.json", "nip_source.json", "sweep-run.json")
"""Text files of a run folder whose paths are rewritten between storage and a local copy."""

_LAST = ("checkpoints/LATEST", "summary.json")  # uploaded after everything else, in this order


def node_name() -> str:
    """This node: the Ray node id inside a Ray worker, else the host name."""
    ray = sys.modules.get("ray")  # a local run never imports Ray
    try:
        if ray is not None and ray.is_initialized():
            return ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001 - no Ray, or not inside a Ray worker
        pass
    return socket.gethostname()


def staging_root(uri: str) -> Path:
    """The folder on this node's disk where runs of the storage ``uri`` execute: ``$NEURALIMAGING_STAGING``
    (default: the temporary folder) ``/neuralimaging-staging/<hash of uri>/<node>``."""
    base = Path(os.environ.get(STAGING_ENV) or tempfile.gettempdir()) / "neuralimaging-staging"
    return base / hashlib.sha256(uri.encode("utf-8")).hexdigest()[:12] / node_name()


def write_token(runs_dir: str | os.PathLike[str]) -> str:
    """Write a new random token into ``runs_dir`` (the driver, before a sweep); returns it."""
    token = secrets.token_hex(8)
    atomic_write_text(Path(runs_dir) / TOKEN_FILE, token + "\n")
    return token


def check_token(runs_dir: str | os.PathLike[str], token: str) -> None:
    """Check that this node sees the driver's runs folder (the token it wrote).

    Raises:
        InputError: when the folder or its token is missing or different here.
    """
    try:
        found = (Path(runs_dir) / TOKEN_FILE).read_text(encoding="utf-8").strip()
    except OSError:
        found = ""
    if found != token:
        raise InputError(f"{runs_dir}: the runs folder is not shared with node {socket.gethostname()} (it does not "
                         "see the driver's folder); mount it at the same path on every node, or give a storage "
                         "URI (--storage s3://... or file:///shared/...)")


def listing(local: str | os.PathLike[str]) -> dict[str, tuple[int, int]]:
    """Files of a local run folder (hidden ones left out): path -> (size, mtime_ns), as :meth:`Storage.upload`
    keeps them (pass it as ``seen`` after a download: only what changes afterwards is uploaded)."""
    local = Path(local)
    current: dict[str, tuple[int, int]] = {}
    for path in sorted(local.rglob("*")):
        try:
            if not path.is_file() or any(p.startswith(".") for p in path.relative_to(local).parts):
                continue
            stat = path.stat()
        except FileNotFoundError:  # replaced or pruned while listing
            continue
        current[path.relative_to(local).as_posix()] = (stat.st_size, stat.st_mtime_ns)
    return current


def _translate(text: str, old: str, new: str) -> str:
    return text.replace(old, new) if old else text


class Storage:
    """Run folders on a pyarrow filesystem.

    Args:
        location: a URI (``scheme://...``) or a local folder (taken as ``file://`` + its absolute path).

    Raises:
        InputError: when pyarrow is missing or cannot open the URI.
    """

    def __init__(self, location: str | os.PathLike[str]) -> None:
        text = os.fspath(location)
        if "://" not in text:
            text = Path(text).absolute().as_uri()
        try:
            from pyarrow import fs
        except ImportError:
            raise InputError("a storage URI needs pyarrow: pip install 'neuralimaging[ray]'") from None
        try:
            self.fs, root = fs.FileSystem.from_uri(text)
        except Exception as error:  # noqa: BLE001 - pyarrow raises several types for bad URIs
            raise InputError(f"storage {text!r}: pyarrow cannot open it ({str(error).splitlines()[0]})") from None
        self.uri = text.rstrip("/")
        self.root = root.rstrip("/")
        self._fs_module = fs

    def __repr__(self) -> str:
        return f"Storage({self.uri!r})"

    # -- names ---------------------------------------------------------------------------------------------
    def _path(self, rel: str) -> str:
        return posixpath.join(self.root, rel) if rel not in ("", ".") else self.root

    def relative(self, value: str) -> str | None:
        """The path of ``value`` inside the storage (``uri/rel`` -> ``rel``), or None for anything else.

        Raises:
            InputError: when ``value`` names the storage but leaves it (``uri/../x``).
        """
        if value != self.uri and not value.startswith(self.uri + "/"):
            return None
        rel = posixpath.normpath(value[len(self.uri):].lstrip("/") or ".")
        if rel == ".":
            return ""
        return check_relative(rel, f"path inside storage {self.uri}")

    # -- small files -----------------------------------------------------------------------------------------
    def read_bytes(self, rel: str) -> bytes | None:
        """The file's bytes, or None when it does not exist."""
        try:
            with self.fs.open_input_stream(self._path(rel)) as stream:
                return stream.read()
        except (FileNotFoundError, OSError):
            return None

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Write a file (through a temporary name and a move where the filesystem renames atomically)."""
        path = self._path(rel)
        self.fs.create_dir(posixpath.dirname(path), recursive=True)
        tmp = posixpath.join(posixpath.dirname(path), f".{posixpath.basename(path)}.{secrets.token_hex(4)}.tmp")
        with self.fs.open_output_stream(tmp) as stream:
            stream.write(data)
        self.fs.move(tmp, path)

    def delete(self, rel: str) -> None:
        """Delete a file or a folder (nothing when it does not exist)."""
        info = self.fs.get_file_info(self._path(rel))
        if info.type == self._fs_module.FileType.Directory:
            self.fs.delete_dir(self._path(rel))
        elif info.type == self._fs_module.FileType.File:
            self.fs.delete_file(self._path(rel))

    def files(self, rel: str) -> dict[str, int]:
        """Every file under the folder ``rel``: path relative to it -> size (empty when it does not exist)."""
        selector = self._fs_module.FileSelector(self._path(rel), recursive=True, allow_not_found=True)
        base = self._path(rel)
        return {posixpath.relpath(info.path, base): info.size for info in self.fs.get_file_info(selector)
                if info.type == self._fs_module.FileType.File}

    def summary_ok(self, name: str) -> bool:
        """Whether the run ``name`` has a ``summary.json`` holding a JSON object in storage."""
        data = self.read_bytes(f"{name}/summary.json")
        try:
            return isinstance(json.loads(data), dict) if data is not None else False
        except ValueError:
            return False

    # -- run folders -----------------------------------------------------------------------------------------
    def download(self, rel: str, local: str | os.PathLike[str], local_root: str | os.PathLike[str] | None = None,
                 *, checkpoints: str = "latest", only: tuple[str, ...] | None = None,
                 keep_same_size: bool = False) -> int:
        """Copy the storage folder ``rel`` into ``local``; returns the number of files copied.

        Args:
            rel: the folder inside storage.
            local: the local folder (created).
            local_root: the local folder standing for the storage root: paths in :data:`TRANSLATED` files
                are rewritten from the storage URI to it.
            checkpoints: ``"latest"``: of ``checkpoints/step-*`` only the one ``LATEST`` names; ``"all"``.
            only: copy just these files (paths relative to ``rel``), when they exist.
            keep_same_size: keep local files that have the size of their stored version (for inputs that do
                not change, such as datasets).
        """
        local = Path(local)
        listing = self.files(rel)
        if only is not None:
            listing = {k: v for k, v in listing.items() if k in only}
        latest = None
        if checkpoints == "latest" and "checkpoints/LATEST" in listing:
            latest = (self.read_bytes(f"{rel}/checkpoints/LATEST") or b"").decode("utf-8", "replace").strip()
        copied = 0
        for name, size in sorted(listing.items(), key=lambda item: item[0] in _LAST):
            parts = name.split("/")
            if posixpath.basename(name).startswith(".") and name != ".running":
                continue  # temporary files of an upload in progress
            if latest is not None and len(parts) > 2 and parts[0] == "checkpoints" and parts[1] != latest:
                continue
            target = local / name
            if keep_same_size and target.is_file() and target.stat().st_size == size:
                continue
            data = self.read_bytes(f"{rel}/{name}")
            if data is None:
                continue
            if parts[-1] in TRANSLATED and local_root is not None:
                data = _translate(data.decode("utf-8"), self.uri, str(Path(local_root))).encode("utf-8")
            atomic_write_bytes(target, data)
            copied += 1
        return copied

    def upload(self, local: str | os.PathLike[str], rel: str, local_root: str | os.PathLike[str],
               seen: dict[str, tuple[int, int]] | None = None) -> dict[str, tuple[int, int]]:
        """Copy the files of ``local`` that changed since ``seen`` into the storage folder ``rel``.

        ``checkpoints/LATEST`` goes after the checkpoint it names and ``summary.json`` last, so storage never
        points at a checkpoint it lacks nor shows a run done before its files are there; checkpoint folders
        deleted locally are deleted in storage. Paths in :data:`TRANSLATED` files are rewritten from
        ``local_root`` to the storage URI.

        Returns:
            The new ``seen`` (path -> (size, mtime_ns)) to pass next time.
        """
        local = Path(local)
        seen = dict(seen or {})
        current = listing(local)
        changed = [n for n, key in current.items() if seen.get(n) != key]
        for name in sorted(changed, key=lambda n: (n in _LAST, _LAST.index(n) if n in _LAST else 0, n)):
            try:
                data = (local / name).read_bytes()
            except FileNotFoundError:  # pruned meanwhile
                current.pop(name, None)
                continue
            if name.split("/")[-1] in TRANSLATED:
                data = _translate(data.decode("utf-8"), str(Path(local_root)), self.uri).encode("utf-8")
            self.write_bytes(f"{rel}/{name}", data)
        gone = {n.split("/")[1] for n in seen if n.startswith("checkpoints/step-") and n not in current}
        for folder in gone:
            if not (local / "checkpoints" / folder).exists():
                self.delete(f"{rel}/checkpoints/{folder}")
        return current

    def localize(self, value: Any, local_root: str | os.PathLike[str]) -> Any:
        """``value`` (a config) with every string naming a folder in storage replaced by its local copy under
        ``local_root``, downloaded first (a run folder with its latest checkpoint; a dataset whole, files
        already here with their stored size kept)."""
        if isinstance(value, str):
            rel = self.relative(value)
            if rel is None:
                return value
            target = Path(local_root) / rel if rel else Path(local_root)
            self.download(rel, target, local_root, keep_same_size=not self.read_bytes(f"{rel}/config.yaml"))
            return str(target)
        if isinstance(value, Mapping):
            return {k: self.localize(v, local_root) for k, v in value.items()}
        if isinstance(value, list):
            return [self.localize(v, local_root) for v in value]
        return value

    # -- the lock of a running run -------------------------------------------------------------------------
    def read_lock(self, name: str) -> dict[str, Any] | None:
        """The ``.running`` record of the run in storage (None when there is none or it is unreadable)."""
        data = self.read_bytes(f"{name}/.running")
        try:
            record = json.loads(data) if data is not None else None
        except ValueError:
            return None
        return record if isinstance(record, dict) else None

    def write_lock(self, name: str, record: Mapping[str, Any]) -> None:
        """Write (or refresh) the run's ``.running`` record with the time of this beat."""
        self.write_bytes(f"{name}/.running", json.dumps({**record, "beat": time.time()}).encode("utf-8"))

    def clear_staging(self, local: str | os.PathLike[str]) -> None:
        """Remove a local copy before a run is downloaded again (a retry starts from what storage holds)."""
        shutil.rmtree(local, ignore_errors=True)
