"""Files written whole, with the user's permissions, and names that stay inside the folder they belong to.

- :func:`atomic_write_bytes` / :func:`atomic_write_text`: temporary file in the same folder, fsync, rename,
  fsync of the folder; the file gets the mode the umask gives any new file (not ``mkstemp``'s 0600).
- :func:`replacing`: for writers that want a path (pandas, matplotlib): they write a temporary file next to
  the target, which replaces it only when complete.
- :func:`make_temp_dir`: a temporary folder with the umask's mode (not ``mkdtemp``'s 0700).
- :func:`write_manifest` / :func:`manifest_problem`: a folder's files listed with size and SHA-256, so a
  truncated or damaged file is found before it is used.
- :func:`check_relative` / :func:`inside`: a name that becomes a path (run name, stage, ``--name``) has no
  ``..``, no absolute path and, resolved, stays inside its root folder.

This module needs only the standard library, so commands that import it stay fast.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from neuralimaging.errors import InputError

__all__ = [
    "MANIFEST",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_component",
    "check_relative",
    "file_mode",
    "fsync_dir",
    "inside",
    "make_temp_dir",
    "manifest_problem",
    "replacing",
    "umask",
    "write_manifest",
]

MANIFEST = "manifest.json"
"""Name of the file :func:`write_manifest` writes."""


def umask() -> int:
    """The process's umask (read without changing it where ``/proc`` allows)."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def file_mode(directory: bool = False) -> int:
    """The mode a new file (or folder) gets from the umask: ``0o666 & ~umask`` (``0o777`` for folders)."""
    return (0o777 if directory else 0o666) & ~umask()


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Flush a folder's entries (a rename into it) to disk; a no-op where the filesystem cannot."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: a reader sees the old file or the new one, never part of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, file_mode())
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


@contextmanager
def replacing(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary path (same folder, same suffix) to write ``path`` through: when the block ends normally it
    replaces ``path`` (umask's mode, fsynced); when it fails, ``path`` is left as it was.

    Example::

        >>> with replacing("results.csv") as tmp:    # doctest: +SKIP
        ...     table.to_csv(tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, file_mode())
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def make_temp_dir(parent: str | os.PathLike[str], prefix: str) -> Path:
    """A new, uniquely named folder in ``parent`` with the umask's mode."""
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    os.chmod(folder, file_mode(directory=True))
    return folder


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(folder: str | os.PathLike[str], files: Mapping[str, bytes]) -> None:
    """Write ``files`` (name -> content) into ``folder``, each fsynced, then ``manifest.json`` listing them."""
    folder = Path(folder)
    listing = {}
    for name, data in files.items():
        with open(folder / name, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        listing[name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    with open(folder / MANIFEST, "w", encoding="utf-8") as handle:
        handle.write(json.dumps({"files": listing}, indent=1) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def manifest_problem(folder: str | os.PathLike[str], *, deep: bool = True) -> str | None:
    """What is wrong with a folder written by :func:`write_manifest`, or None when every file is intact.

    Args:
        folder: the folder.
        deep: also compare SHA-256 digests (else sizes only: fast, finds truncation).

    A folder without a manifest (written before manifests existed) is not checked (None).
    """
    folder = Path(folder)
    manifest = folder / MANIFEST
    if not manifest.exists():
        return None
    try:
        listing = json.loads(manifest.read_text(encoding="utf-8"))["files"]
        entries = [(str(name), int(info["size"]), str(info["sha256"])) for name, info in listing.items()]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        return f"{MANIFEST} is unreadable ({type(error).__name__})"
    for name, size, digest in entries:
        file = folder / name
        try:
            actual = file.stat().st_size
        except OSError:
            return f"{name} is missing"
        if actual != size:
            return f"{name} has {actual} bytes, expected {size}"
        if deep and _sha256(file) != digest:
            return f"{name} does not match its checksum"
    return None


def check_component(name: str, what: str) -> str:
    """``name`` if it is one plain path component (not empty, ``.`` or ``..``; no ``/``, ``\\`` or NUL).

    Raises:
        InputError: naming ``what`` and the value.
    """
    if not isinstance(name, str) or name in ("", ".", "..") or any(c in name for c in "/\\\x00"):
        raise InputError(f"{what} {name!r}: expected a plain name (no '/', '\\', '.' or '..')")
    return name


def check_relative(name: str, what: str) -> str:
    """``name`` if it is a relative path of plain components (``a/b/000``), never leaving its folder.

    Raises:
        InputError: for an absolute path, ``.``/``..`` or empty components, backslashes or NUL.
    """
    parts = name.split("/") if isinstance(name, str) else [""]
    if PurePosixPath(name).is_absolute() or any(p in ("", ".", "..") or "\\" in p or "\x00" in p for p in parts):
        raise InputError(f"{what} {name!r}: expected a relative path of plain names (no '..', '.', '\\' or leading '/')")
    return name


def inside(root: str | os.PathLike[str], name: str, what: str) -> Path:
    """``root / name`` after checking that ``name`` is a relative path that, resolved (links followed), stays
    inside ``root``.

    Raises:
        InputError: when ``name`` is not a plain relative path or leaves ``root``.
    """
    check_relative(name, what)
    root = Path(root)
    path = root / name
    base = root.resolve()
    if not path.resolve().is_relative_to(base):
        raise InputError(f"{what} {name!r}: leaves the folder {root}")
    return path
