"""PRNU benchmark: speed of residual extraction and fingerprint estimation, and fingerprint quality.

Speed (1-Mpx images, 1024x1024 RGB, float32 in [0, 1]):
- residual extraction (:func:`noise_residual`, the full matching residual) in images/s, grey and per-channel;
- fingerprint estimation from 30 images (target: <= 2.5 s on the 2-core dev CPU), best and
  median over repeats, grey and per-channel.

Quality (correlation of the estimated with the true K):
- synthetic RGB camera ``clip(X (1 + K) + N(0, 0.01^2))``, K ~ N(0, 0.01^2), X the bundled photos framed
  anew for every shot (:func:`virtual_camera.synthetic_shots`: random zoom, crop, quarter turn, mirror) at 1024x1024
  (the setting of prnu-python's published 0.952), next to the oracle that knows the clean X
  (``W = Y - X``: the best any denoiser can do on these images) and the denoiser's content leak (the
  fingerprint of the clean shots);
- virtual-camera DNGs (:mod:`neuralimaging.acquisition.virtual_camera`, nikon-d90 at 296x296, the largest square the
  bundled photos fill without upscaling) developed
  with the python ISP: PRNU on the Bayer mosaic, demosaiced, gamma; compared with the true K and with K as
  the ISP passes it on (a flat grey mosaic developed with and without ``1 + K``); plus PCE against 10 other
  shots of the camera and 10 shots of another camera;
- what any estimator can reach on those virtual-camera shots: oracles that know each shot's noise-free
  mosaic (``W = Y - X`` on the Bayer mosaic itself, before demosaicing), with the plain ML sums and with the
  ML sums weighted by each pixel's true noise variance ``shot * x + read``, from 30 and 90 shots (the
  paper's fingerprint set).

- the RAW-domain fingerprint (:func:`prnu.raw_fingerprint`, on the Bayer mosaic of the DNGs, weighted by their
  NoiseProfile): from 30 flat-field shots at base ISO (the fingerprinting protocol of Chen et al. 2008;
  ``virtual_camera.synthesize_flat_fields``), at random ISO, and from 30 photo shots; wall time of the
  estimate (DNG reading included), correlation with the true K, the developed-image fingerprint of the same
  flat fields for comparison, and PCE (:func:`prnu.match_raw`) of 10 photo shots of the camera and 10 of
  another camera.

The quality figures are given for the default denoiser sigma (3) and the reference toolboxes' 5.

    python benchmarks/prnu.py                 # everything (about 4 minutes on the dev CPU)
    python benchmarks/prnu.py --skip-virtual  # speed and the synthetic camera only
    python benchmarks/prnu.py --skip-speed    # quality only
    python benchmarks/prnu.py --only-raw      # the RAW-domain fingerprint only (about a minute)
    python benchmarks/prnu.py --json out.json
    python benchmarks/prnu.py --skip-speed --skip-virtual --noise 0.0025  # a quieter synthetic camera
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from neuralimaging.acquisition.virtual_camera import synthetic_shots
from neuralimaging.photos import bundled_photos, load_photo
from neuralimaging.forensics import prnu

SIZE = 1024
VIRTUAL_SIZE = 296
"""Sensor side of the virtual-camera parts: the largest even square every bundled photo fills without being
upscaled (the smallest, chelsea, is 300 pixels high); the virtual camera never resamples a photo."""


def _timed(fn, repeats: int) -> list[float]:
    return _timed_result(fn, repeats)[0]


def _timed_result(fn, repeats: int) -> tuple[list[float], object]:
    """Wall times of ``repeats`` calls of ``fn`` and the last call's result."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return times, result


def _load() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def speed(shots: list[np.ndarray], repeats: int) -> dict:
    out: dict = {"load_before": _load()}
    for color in ("gray", "rgb"):
        few = shots[:5]
        times = _timed(lambda: [prnu.noise_residual(s, color=color) for s in few], repeats)  # noqa: B023
        out[f"residual_{color}_images_per_s"] = {"best": len(few) / min(times), "median": len(few) / statistics.median(times)}
        times = _timed(lambda: prnu.fingerprint(shots, color=color), repeats)  # noqa: B023
        out[f"fingerprint30_{color}_s"] = {"best": min(times), "median": statistics.median(times)}
        out[f"fingerprint_{color}_images_per_s"] = {"best": len(shots) / min(times), "median": len(shots) / statistics.median(times)}
    for color in ("gray", "rgb"):  # CPU seconds on one thread: less sensitive to other processes' load
        cpu = []
        for _ in range(repeats):
            start = time.process_time()
            prnu.fingerprint(shots, color=color, workers=1)
            cpu.append(time.process_time() - start)
        out[f"fingerprint30_{color}_cpu_s_one_thread"] = {"best": min(cpu), "median": statistics.median(cpu)}
    out["load_after"] = _load()
    return out


def synthetic(photos: list[np.ndarray], k: np.ndarray, shots: list[np.ndarray]) -> dict:
    clean = synthetic_shots(photos, np.zeros_like(k), len(shots), noise=0.0, seed=3)  # same framing, no K
    gray = [prnu.to_gray(s) for s in shots]
    gray_clean = [prnu.to_gray(c) for c in clean]
    oracle = sum((y - x) * y for y, x in zip(gray, gray_clean, strict=True)) / sum(y * y for y in gray)
    out = {"oracle": prnu.ncc(prnu.wiener_dft(prnu.zero_mean(oracle)), k)}
    for sigma in (3.0, 5.0):
        for color in ("gray", "rgb"):
            out[f"sigma{sigma:g}_{color}"] = prnu.ncc(prnu.fingerprint(shots, sigma=sigma, color=color), k)
        # what the denoiser leaks of the scene: the "fingerprint" of the clean shots (no K, no noise), as a
        # fraction of the true K's standard deviation
        leak = prnu.fingerprint(clean, sigma=sigma)
        out[f"sigma{sigma:g}_content_leak_std_over_k_std"] = float(leak.std() / k.std())
    return out


def virtual(n_fingerprint: int = 30) -> dict:
    from neuralimaging.acquisition.isp import develop, develop_mosaic
    from neuralimaging.acquisition.virtual_camera import CAMERAS, synthesize

    size = (VIRTUAL_SIZE, VIRTUAL_SIZE)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        paths = synthesize("default", "nikon-d90", Path(tmp) / "a", shots_per_photo=5, seed=0, size=size)
        others = synthesize("default", "canon-5d2", Path(tmp) / "b", shots_per_photo=2, seed=1, size=size)[:10]
        order = np.random.default_rng(0).permutation(len(paths))
        images = [develop(paths[i], "python") for i in order[: n_fingerprint + 10]]
        other_images = [develop(p, "python") for p in others]
        prepare = time.perf_counter() - start
    camera = CAMERAS["nikon-d90"].with_size(size)
    truth = camera.prnu()
    # K as the python ISP passes it on: develop a flat grey mosaic with and without the PRNU (the ceiling for
    # any estimator working on developed images, since demosaicing mixes K of neighbouring sites)
    flat = np.full(size, 0.2, dtype=np.float32)
    with_k = prnu.to_gray(develop_mosaic(flat * (1 + truth), camera.cfa, camera.cam_to_srgb))
    without = prnu.to_gray(develop_mosaic(flat, camera.cfa, camera.cam_to_srgb))
    developed_k = with_k / without - 1
    out: dict = {
        "fingerprint_images": n_fingerprint,
        "developed_k_vs_true_k": prnu.ncc(developed_k, truth),
        "prepare_s": prepare,
    }
    other_k = CAMERAS["canon-5d2"].with_size(size).prnu()
    for sigma in (prnu.DEFAULT_SIGMA, 5.0):  # the default and the toolboxes' setting
        start = time.perf_counter()
        k = prnu.fingerprint(images[:n_fingerprint], sigma=sigma)
        seconds = time.perf_counter() - start
        same = [prnu.match(k, im, sigma=sigma).pce for im in images[n_fingerprint:]]
        other = [prnu.match(k, im, sigma=sigma).pce for im in other_images]
        out[f"sigma{sigma:g}"] = {
            "fingerprint_s": seconds,
            "correlation_with_true_k": prnu.ncc(k, truth),
            "correlation_with_developed_k": prnu.ncc(k, developed_k),
            "correlation_with_other_camera_k": prnu.ncc(k, other_k),
            "pce_same_camera": {"min": min(same), "median": float(np.median(same)), "max": max(same)},
            "pce_other_camera": {"min": min(other), "median": float(np.median(other)), "max": max(other)},
        }
    return out


def virtual_oracle(counts: tuple[int, ...] = (30, 90)) -> dict:
    """Ceilings for the virtual camera: ML estimates of K from the noise alone, on the mosaic."""
    from neuralimaging.acquisition.virtual_camera import CAMERAS, _frame, unprocess

    size = (VIRTUAL_SIZE, VIRTUAL_SIZE)
    camera = CAMERAS["nikon-d90"].with_size(size)
    truth = camera.prnu()
    photos = [load_photo(p) for p in bundled_photos()]
    scale = camera.white_level - camera.black_level
    sums = {name: [np.zeros(size), np.zeros(size)] for name in ("plain", "noise_weighted")}
    out: dict = {}
    mean_signal = []
    for n in range(max(counts)):
        photo, shot = n % len(photos), n // len(photos)
        rng = np.random.default_rng([0, photo, shot])  # framed and drawn as synthesize(seed=0) does
        rgb, _ = _frame(photos[photo], camera.size, rng, exact=True)
        state = rng.bit_generator.state
        noisy, info = unprocess(rgb, camera, rng, prnu=truth)
        rng.bit_generator.state = state
        clean, _ = unprocess(rgb, camera, rng, prnu=np.zeros_like(truth), noise=False)
        y = (noisy.astype(np.float64) - camera.black_level) / scale
        x = (clean.astype(np.float64) - camera.black_level) / scale
        mean_signal.append(float(x.mean()))
        weight = 1.0 / (x * info["shot_noise"] + info["read_noise"])
        for name, w in (("plain", 1.0), ("noise_weighted", weight)):
            sums[name][0] += (y - x) * x * w
            sums[name][1] += x * x * w
        if n + 1 in counts:
            out[f"{n + 1}_shots"] = {name: prnu.ncc((num / den).astype(np.float32), truth) for name, (num, den) in sums.items()}
    out["mean_linear_signal"] = float(np.mean(mean_signal))
    return out


def raw_domain(n_fingerprint: int = 30, repeats: int = 3) -> dict:
    """RAW-domain fingerprints of the virtual nikon-d90 from flat fields and from photos (see the docstring)."""
    from neuralimaging.acquisition.isp import develop
    from neuralimaging.acquisition.virtual_camera import CAMERAS, synthesize, synthesize_flat_fields

    size = (VIRTUAL_SIZE, VIRTUAL_SIZE)
    truth = CAMERAS["nikon-d90"].with_size(size).prnu()
    out: dict = {"fingerprint_images": n_fingerprint}
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        sets = {
            "flat_field_base_iso": synthesize_flat_fields("nikon-d90", Path(tmp) / "flat", n_fingerprint, size=size),
            "flat_field_random_iso": synthesize_flat_fields("nikon-d90", Path(tmp) / "flat-r", n_fingerprint, size=size,
                                                            iso="random"),
            "photos_random_iso": synthesize("default", "nikon-d90", Path(tmp) / "a", shots_per_photo=5, size=size),
        }
        photos = sets["photos_random_iso"]
        order = np.random.default_rng(0).permutation(len(photos))
        sets["photos_random_iso"] = [photos[i] for i in order[:n_fingerprint]]
        tests = [photos[i] for i in order[n_fingerprint : n_fingerprint + 10]]
        others = synthesize("default", "canon-5d2", Path(tmp) / "b", shots_per_photo=2, seed=1, size=size)[:10]
        out["synthesize_s"] = time.perf_counter() - start
        fingerprints = {}
        for name, paths in sets.items():
            entry: dict = {}
            for weights in ("auto", "none"):
                times, k = _timed_result(lambda: prnu.raw_fingerprint(paths, weights=weights),  # noqa: B023
                                         repeats if weights == "auto" else 1)
                fingerprints[name, weights] = k
                entry[f"weights_{weights}"] = {"correlation_with_true_k": prnu.ncc(k, truth),
                                               "fingerprint_s_best": min(times),
                                               "fingerprint_s_median": statistics.median(times)}
            out[name] = entry
        flat = sets["flat_field_base_iso"]
        k = fingerprints["flat_field_base_iso", "auto"]
        developed = [develop(p, "python") for p in flat]
        out["flat_field_base_iso"]["developed_python_isp_gray"] = prnu.ncc(prnu.fingerprint(developed), truth)
        same = [prnu.match_raw(k, p).pce for p in tests]
        other = [prnu.match_raw(k, p).pce for p in others]
        out["pce_of_photo_shots_flat_field_fingerprint"] = {
            "same_camera": {"min": min(same), "median": float(np.median(same)), "max": max(same)},
            "other_camera": {"min": min(other), "median": float(np.median(other)), "max": max(other)},
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-virtual", action="store_true")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--noise", type=float, default=0.01, help="additive noise std of the synthetic camera")
    parser.add_argument("--skip-raw", action="store_true", help="leave out the RAW-domain fingerprint")
    parser.add_argument("--only-raw", action="store_true", help="only the RAW-domain fingerprint")
    args = parser.parse_args()
    if args.only_raw:
        results = {"cpu_threads": len(os.sched_getaffinity(0)), "raw_domain": raw_domain(repeats=args.repeats)}
        print(json.dumps(results, indent=1), flush=True)
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))
        return

    photos = [load_photo(p) for p in bundled_photos()]
    k = np.random.default_rng(1).normal(0, 0.01, (SIZE, SIZE)).astype(np.float32)
    shots = synthetic_shots(photos, k, 30, noise=args.noise, seed=3)
    results: dict = {"cpu_threads": len(os.sched_getaffinity(0))}
    if not args.skip_speed:
        results["speed"] = speed(shots, args.repeats)
        print(json.dumps(results, indent=1), flush=True)
    results["synthetic_camera_correlation"] = synthetic(photos, k, shots)
    print(json.dumps(results["synthetic_camera_correlation"], indent=1), flush=True)
    if not args.skip_virtual:
        results["virtual_camera"] = virtual()
        print(json.dumps(results["virtual_camera"], indent=1), flush=True)
        results["virtual_camera_oracle"] = virtual_oracle()
        print(json.dumps(results["virtual_camera_oracle"], indent=1), flush=True)
    if not args.skip_raw:
        results["raw_domain"] = raw_domain(repeats=args.repeats)
        print(json.dumps(results["raw_domain"], indent=1), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
