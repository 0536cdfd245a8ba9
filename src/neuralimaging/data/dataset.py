"""Prepared datasets: normalized RGGB stacks and python-ISP targets of a folder of RAW files.

Layout of a prepared folder::

    dataset.json          camera, settings, train/val/test split, failed files
    rggb/<name>.npy       float32 (4, h, w) in [0, 1] (or uint16 = round(x * 65535) with rggb_dtype="uint16")
    targets/<name>.png    python-ISP output (3, 2h, 2w): 8-bit PNG, rounded (default), or 16-bit PNG
    meta/<name>.json      metadata of the RAW file and of the shot; written last, marks the sample done

:func:`prepare` is resumable and idempotent: samples whose ``meta`` file exists are skipped, files LibRaw
cannot read are reported and skipped (and retried on the next run). The split into training, validation and
test images is deterministic and proportional (``val_fraction=0.15``, ``test_fraction=0.2`` of whatever is
there; the paper used 120/30 training/validation images of 150 and no test split). Shots of the same scene
(virtual cameras record it; the two photos of a stereo pair are one scene) stay on one side, so validation
and test never see a crop of a training scene. Tune on validation; report on test.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import time
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tifffile

from neuralimaging.acquisition.bayer import normalize
from neuralimaging.acquisition.isp import GAMMAS, develop_rggb
from neuralimaging.acquisition.raw import read_raw
from neuralimaging.acquisition.virtual_camera import SIDECAR
from neuralimaging.errors import InputError, NeuralImagingError
from neuralimaging.io import read_pixels, save_image

__all__ = ["RAW_SUFFIXES", "SPLITS", "Dataset", "PrepareReport", "Sample", "find_raw_files", "prepare"]

_log = logging.getLogger(__name__)

RAW_SUFFIXES = (
    ".dng", ".nef", ".nrw", ".cr2", ".cr3", ".crw", ".arw", ".srf", ".sr2", ".raf", ".orf", ".rw2", ".pef",
    ".srw", ".3fr", ".erf", ".kdc", ".dcr", ".mos", ".mrw", ".x3f", ".iiq", ".rwl", ".raw",
)  # fmt: skip
INDEX = "dataset.json"
SPLITS = ("train", "val", "test")
_FORMAT_VERSION = 1


def find_raw_files(raw_dir: str | os.PathLike) -> list[Path]:
    """RAW files of a folder (by suffix, case-insensitive), sorted by name."""
    folder = Path(raw_dir)
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder of RAW files (expected a directory)")
    return sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in RAW_SUFFIXES and not p.name.startswith(".")
    )


class Sample:
    """One prepared image: ``rggb`` ``float32 (4, h, w)``, ``target`` ``float32 (3, 2h, 2w)``, ``meta``.

    Arrays are loaded lazily: the stack is memory-mapped, the target PNG is decoded once and kept as integers
    (``float32`` views are made on access, or per patch by :meth:`patch`).
    """

    def __init__(self, name: str, rggb_path: Path, target_path: Path, meta: dict) -> None:
        self.name = name
        self.meta = meta
        self.rggb_path = rggb_path
        self.target_path = target_path
        self._rggb: np.ndarray | None = None
        self._target: np.ndarray | None = None

    def __repr__(self) -> str:
        return f"Sample({self.name!r}, shape={tuple(self.meta.get('shape', ()))})"

    def _stack(self) -> np.ndarray:
        if self._rggb is None:
            try:
                stack = np.load(self.rggb_path, mmap_mode="r")
            except (OSError, ValueError) as error:
                reason = str(error).splitlines()[0] if str(error) else type(error).__name__
                raise InputError(f"{self.rggb_path}: not a readable RGGB stack ({reason})") from error
            if stack.ndim != 3 or stack.shape[0] != 4:
                raise InputError(f"{self.rggb_path}: expected an RGGB stack (4, h, w), got {stack.shape}")
            self._rggb = stack
        return self._rggb

    def _pixels(self) -> np.ndarray:
        if self._target is None:
            self._target = read_pixels(self.target_path)
        return self._target

    @staticmethod
    def _to_float(array: np.ndarray) -> np.ndarray:
        if array.dtype == np.float32:
            return np.array(array, dtype=np.float32, copy=True)
        scale = np.float32(255.0 if array.dtype == np.uint8 else 65535.0)
        return array.astype(np.float32) / scale

    @property
    def shape(self) -> tuple[int, int]:
        """``(h, w)`` of the RGGB stack."""
        return tuple(self._stack().shape[-2:])  # type: ignore[return-value]

    @property
    def rggb(self) -> np.ndarray:
        """``float32 (4, h, w)`` in [0, 1]."""
        return self._to_float(self._stack())

    @property
    def target(self) -> np.ndarray:
        """``float32 (3, 2h, 2w)`` in [0, 1]."""
        return np.ascontiguousarray(self._to_float(self._pixels()).transpose(2, 0, 1))

    def patch(self, y: int, x: int, size: int) -> tuple[np.ndarray, np.ndarray]:
        """RAW patch at ``(y, x)`` of the stack and the RGB patch at ``(2y, 2x)``: ``(4, s, s)``, ``(3, 2s, 2s)``."""
        raw = self._to_float(self._stack()[:, y : y + size, x : x + size])
        rgb = self._to_float(self._pixels()[2 * y : 2 * (y + size), 2 * x : 2 * (x + size)]).transpose(2, 0, 1)
        return raw, np.ascontiguousarray(rgb)


@dataclass
class Dataset:
    """A prepared dataset: ``train``, ``val`` and ``test`` lists of :class:`Sample`, and the ``camera`` name."""

    path: Path
    camera: str
    train: list[Sample]
    val: list[Sample]
    settings: dict = field(default_factory=dict)
    test: list[Sample] = field(default_factory=list)

    @property
    def samples(self) -> list[Sample]:
        """All samples: training, validation, then test."""
        return self.train + self.val + self.test

    def split(self, name: str) -> list[Sample]:
        """The samples of split ``name`` (``train``, ``val`` or ``test``); an empty split is an error."""
        if name not in SPLITS:
            raise InputError(f"split must be one of {', '.join(SPLITS)}, got {name!r}")
        samples = getattr(self, name)
        if not samples:
            raise InputError(f"{self.path}: the dataset has no {name} images (prepare it again to split off a {name} set)")
        return samples

    @classmethod
    def load(cls, data_dir: str | os.PathLike) -> Dataset:
        """Open a folder written by :func:`prepare`."""
        folder = Path(data_dir)
        index_path = folder / INDEX
        if not index_path.is_file():
            raise InputError(f"{folder}: not a prepared dataset (no {INDEX}; run `neuralimaging data prepare`)")
        try:
            index = json.loads(index_path.read_text())
        except ValueError as error:
            raise InputError(f"{index_path}: corrupt dataset index ({error})") from error

        def build(names: Sequence[str]) -> list[Sample]:
            samples = []
            for name in names:
                meta_path = folder / "meta" / f"{name}.json"
                if not meta_path.is_file():
                    raise InputError(f"{meta_path}: missing; the dataset is incomplete, rerun `data prepare`")
                try:
                    meta = json.loads(meta_path.read_text())
                    samples.append(Sample(name, folder / meta["rggb_file"], folder / meta["target_file"], meta))
                except (ValueError, KeyError, TypeError) as error:
                    reason = f"{meta_path}: corrupt sample metadata ({error!r}); rerun `data prepare`"
                    raise InputError(reason) from error
            return samples

        try:
            train, val, camera = build(index["train"]), build(index["val"]), index["camera"]
            test = build(index.get("test", []))
        except (KeyError, TypeError) as error:
            raise InputError(f"{index_path}: corrupt dataset index (missing {error})") from error
        if not train:
            raise InputError(f"{folder}: dataset has no training images")
        return cls(path=folder, camera=camera, train=train, val=val, settings=index.get("settings", {}), test=test)


@dataclass
class PrepareReport:
    """What :func:`prepare` did."""

    out_dir: Path
    camera: str
    total: int
    prepared: list[str]
    skipped: list[str]
    failed: list[tuple[str, str]]
    train: int
    val: int
    megapixels: float
    seconds: float
    test: int = 0

    def summary(self) -> str:
        """One line for people."""
        return (
            f"{self.camera}: {len(self.prepared)} prepared, {len(self.skipped)} already done, {len(self.failed)} "
            f"failed; split {self.train} train / {self.val} val / {self.test} test; {self.megapixels:.1f} MP; "
            f"{self.seconds:.1f} s -> {self.out_dir}"
        )


def _shot_info(path: Path) -> dict:
    """The virtual camera's per-shot JSON (ImageDescription of its DNGs), or {}."""
    if path.suffix.lower() != ".dng":
        return {}
    try:
        with tifffile.TiffFile(path) as tif:
            tag = tif.pages[0].tags.get(270)
            value = json.loads(tag.value) if tag is not None else {}
            return value if isinstance(value, dict) else {}
    except (tifffile.TiffFileError, ValueError, OSError, KeyError, IndexError):
        return {}


def _atomic_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def _prepare_one(source: Path, out: Path, settings: dict) -> dict:
    raw = read_raw(source)
    rggb = normalize(raw)
    target = develop_rggb(rggb, raw.cam_to_srgb, gamma=settings["gamma"])
    name = source.stem
    rggb_file = Path("rggb") / f"{name}.npy"
    target_file = Path("targets") / f"{name}.png"
    stored = rggb if settings["rggb_dtype"] == "float32" else np.round(rggb * 65535.0).astype(np.uint16)
    tmp = out / "rggb" / f".{name}.tmp.npy"
    np.save(tmp, stored)
    os.replace(tmp, out / rggb_file)
    save_image(out / target_file, target, bits=settings["target_bits"])
    meta = {
        "name": name,
        "source": str(source),
        "camera": settings["camera"],
        "make": raw.make,
        "model": raw.model,
        "cfa": raw.cfa,
        "black_level": raw.black_level.tolist(),
        "white_level": raw.white_level,
        "wb_gains": raw.wb_gains.tolist(),
        "cam_to_srgb": raw.cam_to_srgb.tolist(),
        "orientation": raw.orientation,
        "sensor_shape": list(raw.mosaic.shape),
        "shape": list(rggb.shape[1:]),
        "rggb_file": rggb_file.as_posix(),
        "target_file": target_file.as_posix(),
        "shot": _shot_info(source),
    }
    _atomic_json(out / "meta" / f"{name}.json", meta)
    return meta


def _split(
    metas: dict[str, dict], val_fraction: float, test_fraction: float, seed: int
) -> tuple[list[str], list[str], list[str]]:
    """Deterministic proportional split into training, validation and test images, by scene.

    Images of one scene (``shot.scene``, else ``shot.photo``, else the file itself) stay together. Scenes are
    taken in the order of a seeded hash of their name (stable when files are added or removed): first into
    the validation set (training needs one), then into the test set, each scene where it brings the split's
    size closer to its share and leaves a scene to train on; the rest train.
    """
    groups: dict[str, list[str]] = {}
    for name, meta in sorted(metas.items()):
        shot = meta.get("shot") or {}
        key = shot.get("scene") or shot.get("photo") or name
        groups.setdefault(key, []).append(name)
    total = len(metas)
    order = sorted(groups, key=lambda key: (zlib.crc32(f"{seed}:{key}".encode()), key))
    chosen: dict[str, list[str]] = {"test": [], "val": []}
    for split, fraction in (("val", val_fraction), ("test", test_fraction)):
        want = fraction * total if total >= 2 and fraction > 0 else 0.0
        for key in list(order):
            size, group = len(chosen[split]), groups[key]
            left = total - len(chosen["test"]) - len(chosen["val"]) - len(group)
            if want <= 0 or left < 1 or (size > 0 and abs(size + len(group) - want) >= abs(size - want)):
                continue
            chosen[split] += group
            order.remove(key)
    held = set(chosen["test"]) | set(chosen["val"])
    return sorted(n for n in metas if n not in held), sorted(chosen["val"]), sorted(chosen["test"])


def _camera_name(raw_dir: Path, files: Sequence[Path]) -> str:
    sidecar = raw_dir / SIDECAR
    if sidecar.is_file():
        try:
            return json.loads(sidecar.read_text())["profile"]["name"]
        except (ValueError, KeyError, TypeError, OSError):
            pass
    for path in files:
        try:
            raw = read_raw(path)
        except (NeuralImagingError, OSError):
            continue
        if raw.model:
            return f"{raw.make} {raw.model}".strip().lower().replace(" ", "-")
    return raw_dir.name


def prepare(
    raw_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    camera: str | None = None,
    target_bits: int = 8,
    rggb_dtype: str = "float32",
    gamma: str = "2.2",
    val_fraction: float = 0.15,
    test_fraction: float = 0.2,
    seed: int = 0,
    workers: int = 1,
    progress: Callable[[int, int, str, str | None], None] | None = None,
) -> PrepareReport:
    """Turn a folder of RAW files (real or virtual) into a training set (see module docstring).

    Args:
        raw_dir: folder of RAW files (DNG, NEF, CR2, ...).
        out_dir: output folder (created; rerunning continues where it stopped).
        camera: name recorded in the dataset; default: the virtual camera's sidecar, else make-model.
        target_bits: 8 (rounded PNG, the paper's) or 16.
        rggb_dtype: ``"float32"`` or ``"uint16"`` storage of the stacks.
        gamma: ``"2.2"`` (paper) or ``"srgb"`` for the targets.
        val_fraction: share of images in the validation split (paper: 30 of 150 = 0.2).
        test_fraction: share of images in the test split (the paper had none).
        seed: seed of the split.
        workers: processes developing in parallel (1 = in this process).
        progress: callable ``(done, total, file_name, error_or_None)`` after each file.

    Returns:
        :class:`PrepareReport`. Broken files are listed in ``failed`` and skipped; they do not stop the run.
    """
    start = time.perf_counter()
    source_dir = Path(raw_dir)
    files = find_raw_files(source_dir)
    if not files:
        raise InputError(f"{source_dir}: no RAW files found (expected {', '.join(RAW_SUFFIXES[:6])}, ...)")
    if target_bits not in (8, 16):
        raise InputError(f"target_bits must be 8 or 16, got {target_bits}")
    if rggb_dtype not in ("float32", "uint16"):
        raise InputError(f"rggb_dtype must be float32 or uint16, got {rggb_dtype!r}")
    if gamma not in GAMMAS:
        raise InputError(f"gamma must be one of {', '.join(GAMMAS)}, got {gamma!r}")
    for key, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise InputError(f"{key} must be in [0, 1), got {value}")
    if val_fraction + test_fraction >= 1.0:
        raise InputError(f"val_fraction + test_fraction must be below 1, got {val_fraction + test_fraction}")
    names = [p.stem for p in files]
    if len(set(names)) != len(names):
        shared = ", ".join(sorted(p.name for p in files if names.count(p.stem) > 1))
        raise InputError(f"{source_dir}: several RAW files share a name stem ({shared}); rename them")
    out = Path(out_dir)
    camera_name = camera or _camera_name(source_dir, files)
    settings = {
        "camera": camera_name,
        "target_bits": target_bits,
        "rggb_dtype": rggb_dtype,
        "gamma": gamma,
        "pipeline": "python",
        "format_version": _FORMAT_VERSION,
    }
    index_path = out / INDEX
    if index_path.is_file():
        try:
            old = json.loads(index_path.read_text()).get("settings", {})
        except ValueError:
            old = {}
        if old and old != settings:
            changed = ", ".join(f"{k}: {old.get(k)!r} -> {v!r}" for k, v in settings.items() if old.get(k) != v)
            raise InputError(f"{out}: already prepared with other settings ({changed}); use a new output folder")
    for sub in ("rggb", "targets", "meta"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    if not index_path.is_file():
        _atomic_json(index_path, {"camera": camera_name, "settings": settings, "train": [], "val": [], "failed": {}})

    todo = [p for p in files if not (out / "meta" / f"{p.stem}.json").is_file()]
    skipped = [p.stem for p in files if p not in todo]
    _log.info("%s: %d RAW files of camera %s, %d already prepared", raw_dir, len(files), camera_name, len(skipped))
    prepared: list[str] = []
    failed: list[tuple[str, str]] = []
    done = len(skipped)

    def record(path: Path, error: BaseException | None) -> None:
        nonlocal done
        done += 1
        if error is None:
            prepared.append(path.stem)
            _log.info("prepared %s (%d of %d)", path.name, done, len(files))
        else:
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            if not isinstance(error, (NeuralImagingError, OSError, ValueError)):  # a bug or a library's failure
                reason = f"{type(error).__name__}: {reason}"
            failed.append((path.name, reason))
            _log.info("failed %s (%d of %d): %s", path.name, done, len(files), reason)
        if progress:
            progress(done, len(files), path.name, None if error is None else failed[-1][1])

    # Any failure of one file (bad input, or e.g. a RuntimeError inside a library) is recorded and the batch
    # carries on; only interrupts (KeyboardInterrupt, SystemExit) stop it.
    expected = (Exception,)
    if workers > 1 and len(todo) > 1:
        # spawn: LibRaw uses OpenMP, which can deadlock in forked children
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [(path, pool.submit(_prepare_one, path, out, settings)) for path in todo]
            for path, future in futures:
                try:
                    future.result()
                    record(path, None)
                except expected as error:
                    record(path, error)
    else:
        for path in todo:
            try:
                _prepare_one(path, out, settings)
                record(path, None)
            except expected as error:
                record(path, error)

    metas = {}
    for name in names:
        meta_path = out / "meta" / f"{name}.json"
        if meta_path.is_file():
            metas[name] = json.loads(meta_path.read_text())
    train, val, test = _split(metas, val_fraction, test_fraction, seed)
    _atomic_json(
        index_path,
        {"camera": camera_name, "settings": settings, "train": train, "val": val, "test": test,
         "failed": dict(failed)},
    )
    megapixels = sum(4 * m["shape"][0] * m["shape"][1] for m in metas.values()) / 1e6
    return PrepareReport(
        out_dir=out,
        camera=camera_name,
        total=len(files),
        prepared=prepared,
        skipped=skipped,
        failed=failed,
        train=len(train),
        val=len(val),
        megapixels=megapixels,
        seconds=time.perf_counter() - start,
        test=len(test),
    )
