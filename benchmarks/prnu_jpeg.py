"""PRNU camera identification on JPEG-compressed camera shots: the weakest same-camera PCE and the largest
other-camera PCE, for the residual and matching settings that could lift a weak match.

Data (made here, cached in ``--work``): four virtual camera bodies, two of each of two models (nikon-d90 and
canon-5d2, each with a second body that differs only in its PRNU seed), at 1024x1024. Per body: 10 flat-field
shots at base ISO (the fingerprint set) and 16 photo shots at random ISO of four kinds, 4 each:

- ``normal``: 2x2 tiles of the bundled photos at about their own pixel pitch;
- ``textured``: 4x4 tiles of the photos reduced 3x (three times the detail per pixel: foliage, fabric);
- ``dark``: the normal scenes at 20% brightness (sRGB);
- ``bright``: the normal shots rendered 1.8x brighter after development, highlights clipped (an over-exposed
  JPEG: the virtual camera itself never clips, its exposure stays at or under 1).

Every shot is developed with the python ISP and saved as a JPEG by libjpeg (Pillow, 4:2:0 as cameras do) at
each quality. A fingerprint is estimated from the 10 flat fields of a body at that quality and matched with
every photo of all four bodies (aligned, ``search=0``). Reported per setting and quality: PCE of the 3 weakest
same-camera photos, the median, the number under the threshold 60, and the largest other-camera PCE, split
into the same model's other body and the other model, with the count over 60.

Settings: ``default`` is ``prnu.match`` as shipped, ``before`` the matching before the weighted residual and
the saturation mask became its defaults; ``*+grid-pce`` take the PCE energy on the 8x8 grid only; the others
vary ``before``. ``--seed`` picks an independent data set (0: the set the defaults were chosen on; 1:
validation; 2: the test set of ``docs/analysis.md``); use one ``--work`` folder per seed.

    python benchmarks/prnu_jpeg.py --work /tmp/prnu-jpeg                  # data (first run) + all settings
    python benchmarks/prnu_jpeg.py --work /tmp/prnu-jpeg-2 --seed 2 --settings before,default --json out.json
    python benchmarks/prnu_jpeg.py --work /tmp/prnu-jpeg --crop 512      # quarter shots: 4x faster, PCE ~4x lower
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import time
from pathlib import Path
from unittest import mock

import numpy as np
from PIL import Image

from neuralimaging.forensics import prnu

SIZE = (1024, 1024)
QUALITIES = (95, 90, 75, 50)
KINDS = ("normal", "textured", "dark", "bright")
BRIGHT_GAIN = 1.8
PER_KIND = 4
FLATS = 10


# ------------------------------------------------------------------------------------------------- data


def _bodies(seed: int = 0) -> dict[str, object]:
    """The four bodies; data set ``seed`` > 0 gives every body another PRNU pattern."""
    from neuralimaging.acquisition.virtual_camera import CAMERAS

    bodies = {}
    for name in ("nikon-d90", "canon-5d2"):
        profile = CAMERAS[name]
        base = profile.prnu_seed + 1000 * seed
        bodies[f"{name}-a"] = dataclasses.replace(profile, name=f"{name}-a", prnu_seed=base)
        bodies[f"{name}-b"] = dataclasses.replace(profile, name=f"{name}-b", prnu_seed=base + 1)
    return bodies


def _tile(photo: np.ndarray, side: int, rng: np.random.Generator) -> np.ndarray:
    """A random ``side x side`` crop of ``photo`` (enlarged, bicubic, only when smaller than ``side``)."""
    h, w = photo.shape[:2]
    scale = max(1.0, side / h, side / w)
    if scale > 1.0:
        photo = np.asarray(Image.fromarray(photo).resize((int(np.ceil(w * scale)), int(np.ceil(h * scale))), Image.BICUBIC))
        h, w = photo.shape[:2]
    top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    return photo[top : top + side, left : left + side]


def make_scenes(folder: Path, seed: int = 0) -> list[Path]:
    """The photo scenes (PNG, 1024x1024): ``normal_k``, ``textured_k``, ``dark_k``."""
    from neuralimaging.photos import bundled_photos, load_photo

    folder.mkdir(parents=True, exist_ok=True)
    photos = [load_photo(p) for p in bundled_photos()]
    reduced = [np.asarray(Image.fromarray(p).resize((p.shape[1] // 3, p.shape[0] // 3), Image.LANCZOS)) for p in photos]
    rng = np.random.default_rng(seed)
    paths = []
    for k in range(PER_KIND):
        canvas = np.zeros((*SIZE, 3), np.uint8)
        half = SIZE[0] // 2
        for i in range(4):
            y, x = divmod(i, 2)
            canvas[y * half : (y + 1) * half, x * half : (x + 1) * half] = _tile(photos[int(rng.integers(len(photos)))], half, rng)
        textured = np.zeros_like(canvas)
        quarter = SIZE[0] // 4
        for i in range(16):
            y, x = divmod(i, 4)
            textured[y * quarter : (y + 1) * quarter, x * quarter : (x + 1) * quarter] = _tile(
                reduced[int(rng.integers(len(reduced)))], quarter, rng)
        dark = np.round(canvas.astype(np.float64) * 0.2).astype(np.uint8)
        for kind, image in (("normal", canvas), ("textured", textured), ("dark", dark)):
            path = folder / f"{kind}_{k}.png"
            Image.fromarray(image).save(path)
            paths.append(path)
    return paths


def make_data(work: Path, seed: int = 0) -> dict[str, dict[str, list[Path]]]:
    """Developed shots (8-bit PNG) per body: ``{"flat": [...], "photo": [...]}``; cached in ``work``.

    ``seed`` picks the data set: other scenes, shots, flat fields and PRNU patterns for every value (0 is the
    set the matching settings were chosen on, 1 the validation set, 2 the test set)."""
    from neuralimaging.acquisition.isp import develop
    from neuralimaging.acquisition.virtual_camera import synthesize, synthesize_flat_fields
    from neuralimaging.io import save_image

    scenes = sorted((work / "scenes").glob("*.png")) or make_scenes(work / "scenes", seed)
    data: dict[str, dict[str, list[Path]]] = {}
    for index, (name, body) in enumerate(_bodies(seed).items()):
        raw = work / "raw" / name
        flats = synthesize_flat_fields(body, raw / "flat", FLATS, seed=1000 * seed + index, size=SIZE)
        shots = synthesize(scenes, body, raw / "photo", shots_per_photo=1, seed=1000 * seed + 100 + index, size=SIZE)
        data[name] = {}
        for kind, paths in (("flat", flats), ("photo", shots)):
            developed = []
            for path in paths:
                target = work / "developed" / name / f"{path.stem}.png"
                if not target.is_file():
                    save_image(target, develop(path, "python"))
                developed.append(target)
                if "_normal_" in path.stem:
                    bright = target.with_name(target.name.replace("_normal_", "_bright_"))
                    if not bright.is_file():
                        with Image.open(target) as image:
                            pixels = np.asarray(image, dtype=np.float64) * BRIGHT_GAIN
                        Image.fromarray(np.clip(np.round(pixels), 0, 255).astype(np.uint8)).save(bright)
                    developed.append(bright)
            data[name][kind] = developed
    return data


CROP: int | None = None
"""Side of the top-left square the shots are cut to before compression (``--crop``); None keeps them whole."""


def jpeg(path: Path, quality: int) -> np.ndarray:
    """The developed shot (cut to :data:`CROP`) saved by libjpeg at ``quality`` (4:2:0) and decoded:
    float32 ``(3, H, W)``."""
    buffer = io.BytesIO()
    with Image.open(path) as image:
        if CROP:
            image = image.crop((0, 0, CROP, CROP))
        image.convert("RGB").save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.asarray(decoded.convert("RGB"), dtype=np.float32).transpose(2, 0, 1) / 255.0


# --------------------------------------------------------------------------------------------- settings

Setting = dict[str, object]

BEFORE: Setting = {"weighting": None, "saturation": None}
"""``prnu.match`` before the residual weighting and the saturation mask became its defaults."""

SETTINGS: dict[str, Setting] = {
    "default": {},  # prnu.match as shipped: weighted residual, clipped pixels out of I K
    "before": BEFORE,
    "default+grid-pce": {"grid": 8},
    "before+grid-pce": {**BEFORE, "grid": 8},
    # variations of the matching before the change (measured against "before")
    "sigma5": {**BEFORE, "sigma": 5.0},
    "radius2": {**BEFORE, "radius": 2},
    "grid8": {**BEFORE, "period": 8},
    "saturation": {**BEFORE, "saturation": 254 / 255},
    "whiten": {**BEFORE, "whiten": 16},
    "whiten+saturation": {**BEFORE, "whiten": 16, "saturation": 254 / 255, "floor": 1.0},
    "whiten0.1+saturation": {**BEFORE, "whiten": 16, "saturation": 254 / 255, "floor": 0.1},
    "template-k": {**BEFORE, "template": "k"},
}


def _zero_mean_period(period: int) -> contextlib.AbstractContextManager:
    """Within the context, the residual and the fingerprint zero-mean every ``period x period`` grid phase
    (``period`` 2: unchanged). Replaced where the two modules look the function up."""
    from neuralimaging.forensics.prnu import fingerprints, residuals

    def zero_mean(x: np.ndarray, *, lattice: bool = True) -> np.ndarray:
        out = np.array(x, dtype=np.float32, copy=True)
        for i in range(period):
            for j in range(period):
                view = out[..., i::period, j::period]
                view -= view.mean(axis=(-2, -1), keepdims=True)
                view -= view.mean(axis=-1, keepdims=True)
                view -= view.mean(axis=-2, keepdims=True)
        return out

    stack = contextlib.ExitStack()
    if period != 2:
        for module in (residuals, fingerprints):
            stack.enter_context(mock.patch.object(module, "zero_mean", zero_mean))
    return stack


def _local_whiten(residual: np.ndarray, window: int, floor: float | None = None) -> np.ndarray:
    """``W / (local var(W) + floor x median)`` over ``window x window`` boxes: the matched filter under noise
    whose variance varies (``floor`` None: 1e-3 x the mean variance)."""
    from scipy.ndimage import uniform_filter

    var = uniform_filter(residual.astype(np.float64) ** 2, window, mode="reflect")
    regular = 1e-3 * var.mean() if floor is None else floor * float(np.median(var))
    return (residual / (var + regular)).astype(np.float32)


def run_setting(setting: Setting, data: dict, quality: int, cache: dict) -> dict:
    """Fingerprints of every body and PCE of every photo against every fingerprint for one setting."""
    sigma = float(setting.get("sigma", prnu.DEFAULT_SIGMA))
    radius = int(setting.get("radius", 5))
    period = int(setting.get("period", 2))
    whiten = int(setting.get("whiten", 0))
    options = {name: setting[name] for name in ("saturation", "weighting", "grid") if name in setting}
    key = (quality, sigma, period)
    with _zero_mean_period(period):
        if key not in cache:
            fingerprints = {body: prnu.fingerprint([jpeg(p, quality) for p in shots["flat"]], sigma=sigma)
                            for body, shots in data.items()}
            residuals = {}
            for body, shots in data.items():
                for path in shots["photo"]:
                    image = jpeg(path, quality)
                    residuals[(body, path.stem)] = (image, prnu.noise_residual(image, sigma=sigma))
            cache.clear()
            cache[key] = (fingerprints, residuals)
    fingerprints, residuals = cache[key]
    rows = []
    for (body, stem), (image, residual) in residuals.items():
        if whiten:
            residual = _local_whiten(residual, whiten, setting.get("floor"))  # type: ignore[arg-type]
        for model_body, k in fingerprints.items():
            if setting.get("template") == "k":  # prnu-python's: W against K alone, no intensity
                pce = prnu.pce(prnu.crosscorr(residual, k), radius=radius).pce
            else:
                pce = prnu.match(k, image, sigma=sigma, residual=residual, radius=radius, **options).pce  # type: ignore[arg-type]
            rows.append({"photo_body": body, "photo": stem, "kind": stem.split("_")[1], "fingerprint": model_body,
                         "pce": pce})
    return summarize(rows)


def summarize(rows: list[dict]) -> dict:
    same = sorted((r for r in rows if r["photo_body"] == r["fingerprint"]), key=lambda r: r["pce"])
    model = lambda body: body.rsplit("-", 1)[0]  # noqa: E731
    sibling = [r["pce"] for r in rows if r["photo_body"] != r["fingerprint"] and model(r["photo_body"]) == model(r["fingerprint"])]
    other = [r["pce"] for r in rows if model(r["photo_body"]) != model(r["fingerprint"])]
    return {
        "same_weakest": [(r["pce"], f"{r['photo_body']}/{r['photo']}") for r in same[:3]],
        "same_median": float(np.median([r["pce"] for r in same])),
        "same_below_60": sum(r["pce"] <= prnu.PCE_THRESHOLD for r in same),
        "same_by_kind_min": {k: min(r["pce"] for r in same if r["kind"] == k) for k in KINDS},
        "same_photos": len(same),
        "sibling_max": max(sibling),
        "other_model_max": max(other),
        "other_above_60": sum(p > prnu.PCE_THRESHOLD for p in sibling + other),
        "others": len(sibling) + len(other),
        "other_strongest": max((r for r in rows if r["photo_body"] != r["fingerprint"]), key=lambda r: r["pce"]),
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", required=True, help="folder for the virtual-camera data (reused when present)")
    parser.add_argument("--seed", type=int, default=0,
                        help="data set: 0 (the set the settings were chosen on), 1 (validation), 2 (test), ...; one --work per seed")
    parser.add_argument("--settings", default=",".join(SETTINGS), help="comma-separated setting names")
    parser.add_argument("--qualities", default=",".join(map(str, QUALITIES)))
    parser.add_argument("--json", default=None, help="write all figures here")
    parser.add_argument("--crop", type=int, default=None, help="cut the shots to their top-left CROP x CROP pixels")
    args = parser.parse_args()
    global CROP
    CROP = args.crop
    start = time.perf_counter()
    data = make_data(Path(args.work), args.seed)
    print(f"data ready in {time.perf_counter() - start:.0f} s")
    results: dict = {}
    for quality in (int(q) for q in args.qualities.split(",")):
        cache: dict = {}
        for name in args.settings.split(","):
            t0 = time.perf_counter()
            figures = run_setting(SETTINGS[name], data, quality, cache)
            results[f"{name}@{quality}"] = figures
            weakest = ", ".join(f"{p:.1f}" for p, _ in figures["same_weakest"])
            kinds = ", ".join(f"{k} {v:.0f}" for k, v in figures["same_by_kind_min"].items())
            print(f"q{quality} {name:<14} weakest same {weakest} (median {figures['same_median']:.0f}, "
                  f"{figures['same_below_60']}/{figures['same_photos']} <= 60; min by kind: {kinds}) | "
                  f"other body max {figures['sibling_max']:.1f}, other model max {figures['other_model_max']:.1f}, "
                  f"{figures['other_above_60']}/{figures['others']} > 60 "
                  f"[{time.perf_counter() - t0:.0f} s]", flush=True)
            strongest = figures["other_strongest"]
            print(f"    strongest other-camera: {strongest['photo_body']}/{strongest['photo']} against "
                  f"{strongest['fingerprint']}: {strongest['pce']:.1f}", flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
