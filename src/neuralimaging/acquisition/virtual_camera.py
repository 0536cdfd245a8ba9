"""Virtual cameras: ordinary RGB photos unprocessed into realistic Bayer RAW files (DNG).

Unprocessing follows Brooks et al. 2019, "Unprocessing Images for Learned Raw Denoising" (CVPR), run in
reverse order of the paper's python ISP (:mod:`neuralimaging.acquisition.isp`), with the camera's optics
added in front of the sensor:

1. frame the photo on the sensor at its own pixel pitch: a random crop (and horizontal flip) of at most the
   sensor's size, turned to landscape when that keeps more of it; a photo is never resampled, so no
   interpolation traces enter the RAW data (the sensor pixel is the photo pixel);
2. inverse tone curve (Brooks et al.'s inverse smoothstep, :func:`inverse_tone_curve`: a rendered photo's
   S-curve deepened its shadows), inverse gamma ``x ** 2.2`` (the python ISP's default curve) and a random
   exposure factor;
3. optics, in linear light at the sensor's pitch: a Gaussian lens blur of ``psf_sigma`` pixels and a
   four-spot birefringent optical low-pass filter whose spots lie ``olpf`` pixels apart
   (:func:`optics_mtf`);
4. inverse colour matrix: linear sRGB -> camera RGB with ``inv(cam_to_srgb)`` of the profile's real
   XYZ->camera matrix (so the python ISP maps it back);
5. inverse white balance with random per-shot gains, highlight-preserving (Brooks' ``safe_invert_gains``);
6. mosaic with the profile's CFA;
7. photo-response non-uniformity: the signal is multiplied by ``1 + K`` with the sensor's fixed PRNU factor K
   (:meth:`CameraProfile.prnu`, zero-mean Gaussian, the ground truth for the PRNU experiments; a shot smaller
   than the sensor sees its top-left window);
8. Poisson-Gaussian noise, variance ``shot * x + read`` with ``log(read) = 2.18 log(shot) + 1.20 + N(0, 0.26)``
   (Brooks et al., Sec. 3.1) and ``shot`` log-uniform in the profile's range (``iso="random"``) or its lowest
   value (``iso="base"``, the camera's base ISO);
9. black level, white level, quantization to the profile's bit depth, written as an uncompressed DNG with the
   DNG ``NoiseProfile`` tag a calibrated camera writes: ``(shot, exp(2.18 log(shot) + 1.20))``, the noise model
   at the shot's ISO without the per-shot deviation of the read noise.

:func:`synthesize_flat_fields` writes flat-field shots (a bright, smooth, nearly uniform scene, as the
Lukas-Fridrich-Goljan protocol prescribes for estimating a PRNU fingerprint) at base ISO by default.

:func:`synthetic_shots` is a simpler camera without a RAW pipeline: photos multiplied by ``1 + K`` in RGB,
with additive noise, for testing PRNU estimators.

The built-in profiles are read from ``cameras.yaml`` (:data:`CAMERA_TABLE`): colour matrices from LibRaw's
``adobe_coeff`` table (LibRaw 0.22 ``src/tables/colordata.cpp``, the same values as dcraw's; divided by 10000),
CFA patterns chosen so that the four profiles cover the four Bayer patterns (the Nikon D90 really is GBRG, as
in the paper). DNG files are written by :mod:`neuralimaging.acquisition.dng`. Where the optics and noise
figures come from, and how they were calibrated against the paper's NIP fidelity, is in
``docs/virtual-camera.md``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import scipy.fft
import yaml
from PIL import Image

from neuralimaging.acquisition.bayer import check_cfa, mosaic_rgb
from neuralimaging.acquisition.dng import write_dng
from neuralimaging.acquisition.raw import cam_to_srgb_from_xyz
from neuralimaging.photos import find_photos, load_photo, scene_of
from neuralimaging.errors import InputError

__all__ = [
    "CAMERAS",
    "CAMERA_TABLE",
    "FLAT_FIELD_SEED",
    "ISO_SETTINGS",
    "SIDECAR",
    "CameraProfile",
    "flat_field_scene",
    "get_camera",
    "load_cameras",
    "inverse_tone_curve",
    "noise_profile",
    "parse_size",
    "shot_size",
    "shots_megapixels",
    "optics_mtf",
    "apply_optics",
    "synthesize",
    "synthesize_flat_fields",
    "synthetic_shots",
    "unprocess",
    "write_dng",
]

SIDECAR = "camera.json"
ISO_SETTINGS = ("random", "base")
"""How a shot's noise level is chosen: ``random`` (log-uniform in the profile's ``shot_noise`` range, as in
Brooks et al.) or ``base`` (the range's lowest value: the camera's base ISO)."""


def _check_iso(iso: str) -> None:
    if iso not in ISO_SETTINGS:
        raise InputError(f"iso must be one of {', '.join(ISO_SETTINGS)}, got {iso!r}")


def _log_read_noise(shot_noise: float) -> float:
    """Brooks et al.'s fit of the read noise to the shot noise, without its random term: ``2.18 log(shot) + 1.20``."""
    return 2.18 * np.log(shot_noise) + 1.20


@dataclass(frozen=True)
class CameraProfile:
    """A virtual camera: sensor, colour and noise characteristics.

    Attributes:
        name: short identifier (``nikon-d90``).
        make: maker of the camera whose colour matrix is used.
        model: model of that camera.
        cfa: Bayer pattern of the sensor.
        xyz_to_cam: XYZ (D65) -> camera matrix, 9 values row-major (LibRaw adobe_coeff / 10000).
        bits: bit depth of the ADC (12 or 14).
        black_level: black level in DN (same for the four sites).
        white_level: saturation in DN.
        size: default sensor size ``(H, W)``, both even.
        prnu_sigma: standard deviation of the PRNU factor K.
        prnu_seed: seed of K (fixed per camera).
        shot_noise: range ``(low, high)`` of the shot-noise parameter (variance per unit signal, normalized
            units: 1 / full-well electrons at base ISO), sampled log-uniformly per shot; the built-in profiles
            span base ISO to 4x base, daylight shooting.
        red_gain: range of the as-shot red white-balance gain.
        blue_gain: range of the as-shot blue white-balance gain.
        psf_sigma: standard deviation of the lens's Gaussian point-spread function, in pixels (0: none).
        olpf: distance between the four spots of the optical low-pass filter, in pixels (0: no filter).
    """

    name: str
    make: str
    model: str
    cfa: str
    xyz_to_cam: tuple[float, ...]
    bits: int
    black_level: int
    white_level: int
    size: tuple[int, int]
    prnu_sigma: float
    prnu_seed: int
    shot_noise: tuple[float, float]
    red_gain: tuple[float, float] = (1.9, 2.4)
    blue_gain: tuple[float, float] = (1.5, 1.9)
    psf_sigma: float = 0.0
    olpf: float = 0.0

    def __post_init__(self) -> None:
        check_cfa(self.cfa)
        if not 0.0 <= self.psf_sigma <= 8.0:
            raise InputError(f"camera {self.name}: psf_sigma must be in [0, 8] pixels, got {self.psf_sigma}")
        if not 0.0 <= self.olpf <= 1.0:
            raise InputError(f"camera {self.name}: olpf must be in [0, 1] pixels, got {self.olpf}")
        height, width = self.size
        if height % 2 or width % 2 or height < 16 or width < 16:
            raise InputError(f"camera {self.name}: sensor size must be even and >= 16, got {height}x{width}")
        if not 0 <= self.black_level < self.white_level <= 2**self.bits - 1:
            raise InputError(f"camera {self.name}: need 0 <= black < white <= 2^bits - 1")
        if len(self.xyz_to_cam) != 9:
            raise InputError(f"camera {self.name}: xyz_to_cam needs 9 values, got {len(self.xyz_to_cam)}")

    @property
    def megapixels(self) -> float:
        """Sensor size in megapixels."""
        return self.size[0] * self.size[1] / 1e6

    @property
    def cam_to_srgb(self) -> np.ndarray:
        """``(3, 3)`` white-balanced camera RGB -> linear sRGB (dcraw's derivation)."""
        return cam_to_srgb_from_xyz(np.asarray(self.xyz_to_cam).reshape(3, 3))

    def with_size(self, size: tuple[int, int] | str | None) -> CameraProfile:
        """The same camera with another sensor size (``None`` keeps it); K is regenerated at that size."""
        if size is None:
            return self
        return dataclasses.replace(self, size=parse_size(size))

    def prnu(self) -> np.ndarray:
        """The sensor's true PRNU factor K: ``float32 (H, W)``, zero-mean Gaussian with ``prnu_sigma``.

        Deterministic from ``prnu_seed`` and the sensor size; every shot of the camera is multiplied by
        ``1 + K`` before noise (see module docstring).
        """
        rng = np.random.default_rng(self.prnu_seed)
        return (rng.standard_normal(self.size) * self.prnu_sigma).astype(np.float32)

    def to_dict(self) -> dict:
        """Plain JSON/YAML-able description."""
        data = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}


CAMERA_TABLE = "cameras.yaml"
"""The built-in profiles, one entry per camera name, in the package's ``acquisition`` folder."""


def load_cameras(path: str | os.PathLike | None = None) -> dict[str, CameraProfile]:
    """Camera profiles from a YAML table ``{name: {field: value}}`` (default: the built-in :data:`CAMERA_TABLE`).

    Raises:
        InputError: a file that is not such a table, or a profile with unknown, missing or invalid fields.
    """
    if path is None:
        text = resources.files("neuralimaging.acquisition").joinpath(CAMERA_TABLE).read_text(encoding="utf-8")
        where = CAMERA_TABLE
    else:
        try:
            text, where = Path(path).read_text(encoding="utf-8"), str(path)
        except OSError as error:
            raise InputError(f"{path}: cannot read the camera table ({error.strerror})") from error
    try:
        table = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise InputError(f"{where}: not valid YAML ({str(error).splitlines()[0]})") from error
    if not isinstance(table, dict) or not table:
        raise InputError(f"{where}: expected a table of camera profiles {{name: {{field: value}}}}")
    tuples = {field.name for field in dataclasses.fields(CameraProfile) if "tuple" in str(field.type)}
    cameras = {}
    for name, fields in table.items():
        if not isinstance(fields, dict):
            raise InputError(f"{where}: camera {name!r} must be a table of fields, got {fields!r}")
        try:
            values = {key: tuple(value) if key in tuples else value for key, value in fields.items()}
            cameras[str(name)] = CameraProfile(name=str(name), **values)
        except (TypeError, InputError) as error:
            raise InputError(f"{where}: camera {name!r}: {error}") from error
    return cameras


CAMERAS: dict[str, CameraProfile] = load_cameras()
"""The built-in virtual cameras by name, read once from :data:`CAMERA_TABLE`."""


def get_camera(camera: str | CameraProfile) -> CameraProfile:
    """A profile by name (or the profile itself)."""
    if isinstance(camera, CameraProfile):
        return camera
    if camera not in CAMERAS:
        raise InputError(f"unknown camera {camera!r}; expected one of {', '.join(CAMERAS)}")
    return CAMERAS[camera]


def parse_size(size: str | Sequence[int]) -> tuple[int, int]:
    """``"480x640"`` or ``(480, 640)`` -> ``(480, 640)``; both must be even and >= 16."""
    try:
        if isinstance(size, str):
            height, width = (int(v) for v in size.lower().split("x"))
        else:
            height, width = (int(v) for v in size)
    except (ValueError, TypeError) as error:
        raise InputError(f"sensor size must look like HxW (e.g. 480x640), got {size!r}") from error
    if height % 2 or width % 2 or height < 16 or width < 16:
        raise InputError(f"sensor size must be even and >= 16 in both directions, got {height}x{width}")
    return height, width


def optics_mtf(shape: tuple[int, int], psf_sigma: float, olpf: float) -> np.ndarray:
    """Modulation transfer function of the camera's optics on an ``(H, W)`` pixel grid (``rfft2`` layout).

    The lens is a Gaussian point-spread function of standard deviation ``psf_sigma`` pixels, MTF
    ``exp(-2 pi^2 sigma^2 (fx^2 + fy^2))``; the optical low-pass filter splits each ray into four spots at
    ``(+-d/2, +-d/2)`` pixels, MTF ``cos(pi d fx) cos(pi d fy)`` (zero at ``1 / (2d)`` cycles per pixel: at the
    Nyquist frequency for the classic ``d = 1``). Frequencies ``fx, fy`` in cycles per pixel.

    Returns:
        ``float64 (H, W // 2 + 1)``, 1 at zero frequency.
    """
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.rfftfreq(shape[1])[None, :]
    mtf = np.exp(-2.0 * np.pi**2 * psf_sigma**2 * (fx**2 + fy**2))
    return mtf * np.cos(np.pi * olpf * fx) * np.cos(np.pi * olpf * fy)


def apply_optics(linear: np.ndarray, psf_sigma: float, olpf: float) -> np.ndarray:
    """Blur linear-light images ``(..., H, W)`` by the camera's optics (:func:`optics_mtf`).

    The image is mirrored at its edges (by 4 sigma + 2 pixels) before the Fourier transform, so nothing wraps
    around. Returns float64 of the input's shape; the input itself when there are no optics.
    """
    if psf_sigma <= 0 and olpf <= 0:
        return linear
    pad = int(np.ceil(4 * psf_sigma)) + 2
    height, width = linear.shape[-2:]
    widths = [(0, 0)] * (linear.ndim - 2) + [(min(pad, height - 1), min(pad, height - 1)),
                                                (min(pad, width - 1), min(pad, width - 1))]
    padded = np.pad(np.asarray(linear, dtype=np.float64), widths, mode="reflect")
    mtf = optics_mtf(padded.shape[-2:], psf_sigma, olpf)
    blurred = scipy.fft.irfft2(scipy.fft.rfft2(padded, workers=-1) * mtf, s=padded.shape[-2:], workers=-1)
    top, left = widths[-2][0], widths[-1][0]
    return blurred[..., top : top + height, left : left + width]


def shot_size(photo_shape: tuple[int, int], sensor: tuple[int, int]) -> tuple[tuple[int, int], bool]:
    """The largest even frame of a ``photo_shape`` photo on a ``sensor`` without resampling it.

    Returns:
        ``(height, width)`` of the shot and whether the photo is turned by 90 degrees (a portrait photo on a
        landscape sensor, as a camera held upright) because that keeps more of it.
    """
    def fit(h: int, w: int) -> tuple[int, int]:
        return min(h, sensor[0]) // 2 * 2, min(w, sensor[1]) // 2 * 2

    upright, turned = fit(*photo_shape), fit(photo_shape[1], photo_shape[0])
    if turned[0] * turned[1] > upright[0] * upright[1]:
        return turned, True
    return upright, False


def _frame(
    photo: np.ndarray, sensor: tuple[int, int], rng: np.random.Generator, exact: bool = False, name: str = "photo"
) -> tuple[np.ndarray, dict]:
    """Frame a photo on the sensor at its own pixel pitch: a random crop of :func:`shot_size` (the whole
    sensor when ``exact``), a random horizontal flip; never resampled.

    Returns ``float32 (3, h, w)`` sRGB in [0, 1] and what was done (``crop`` in the photo as turned,
    ``rotated``, ``flip``).

    Raises:
        InputError: with ``exact``, when the photo is smaller than the sensor both upright and turned.
    """
    ph, pw = photo.shape[:2]
    (height, width), rotated = shot_size((ph, pw), sensor)
    if exact and (height, width) != tuple(sensor):
        raise InputError(
            f"{name}: a {ph}x{pw} photo cannot fill the {sensor[0]}x{sensor[1]} sensor; the virtual camera never "
            "upscales (choose a smaller sensor size or larger photos)"
        )
    if min(height, width) < 16:
        raise InputError(f"{name}: a {ph}x{pw} photo is too small for a shot (at least 16x16 pixels)")
    if rotated:
        photo = np.rot90(photo)
        ph, pw = pw, ph
    top = int(rng.integers(0, ph - height + 1))
    left = int(rng.integers(0, pw - width + 1))
    flip = bool(rng.random() < 0.5)
    crop = photo[top : top + height, left : left + width].astype(np.float32) / 255.0
    if flip:
        crop = crop[:, ::-1]
    info = {"crop": [top, left, height, width], "rotated": rotated, "flip": flip}
    return np.ascontiguousarray(crop.transpose(2, 0, 1)), info


def unprocess(
    rgb: np.ndarray,
    camera: CameraProfile,
    rng: np.random.Generator,
    *,
    prnu: np.ndarray | None = None,
    noise: bool = True,
    iso: str = "random",
    optics: bool = True,
) -> tuple[np.ndarray, dict]:
    """Turn an sRGB frame into a noisy raw mosaic (steps 2-9 of the module docstring).

    Args:
        rgb: ``float32 (3, h, w)`` in [0, 1], ``h, w`` even and at most the sensor's size (a smaller frame is
            the sensor's top-left window).
        camera: the profile.
        rng: source of the per-shot randomness (exposure, white balance, noise level, noise).
        prnu: K of the sensor (computed from the profile when None), at least ``(h, w)``.
        noise: add the Poisson-Gaussian noise. With False the mosaic is noise-free, while the per-shot
            parameters (noise levels included) are drawn from ``rng`` as with True: the same ``rng`` state
            gives the same shot without its noise (ground truth for PRNU oracles).
        iso: ``"random"`` (noise level log-uniform in the profile's range) or ``"base"`` (its lowest value);
            :data:`ISO_SETTINGS`. Both draw the same random numbers, so a shot differs only in its noise.
        optics: blur by the profile's lens and optical low-pass filter (:func:`apply_optics`).

    Returns:
        ``uint16 (h, w)`` mosaic in DN and the per-shot parameters (``wb_gains``, ``exposure``, ``shot_noise``,
        ``read_noise``).
    """
    height, width = rgb.shape[1:]
    if rgb.ndim != 3 or rgb.shape[0] != 3 or height % 2 or width % 2:
        raise InputError(f"expected an sRGB frame (3, h, w) with even h and w, got shape {rgb.shape}")
    if height > camera.size[0] or width > camera.size[1]:
        raise InputError(f"a {height}x{width} frame does not fit the {camera.name} sensor {camera.size[0]}x{camera.size[1]}")
    _check_iso(iso)
    k = camera.prnu() if prnu is None else prnu
    if k.shape[0] < height or k.shape[1] < width:
        raise InputError(f"PRNU of {k.shape[0]}x{k.shape[1]} is smaller than the {height}x{width} frame")
    k = k[:height, :width]
    linear = np.power(inverse_tone_curve(rgb), 2.2)
    exposure = rng.uniform(0.6, 1.0)
    linear *= exposure
    if optics:
        linear = apply_optics(linear, camera.psf_sigma, camera.olpf)
    srgb_to_cam = np.linalg.inv(camera.cam_to_srgb)
    cam = np.einsum("ij,jhw->ihw", srgb_to_cam, linear)
    red = rng.uniform(*camera.red_gain)
    blue = rng.uniform(*camera.blue_gain)
    inverse = np.array([1.0 / red, 1.0, 1.0 / blue])[:, None, None]
    grey = cam.mean(axis=0, keepdims=True)
    mask = (np.maximum(grey - 0.9, 0.0) / 0.1) ** 2  # Brooks' highlight-preserving inversion
    cam = cam * np.maximum(mask + (1.0 - mask) * inverse, inverse)
    mosaic = mosaic_rgb(np.clip(cam, 0.0, 1.0), camera.cfa)
    mosaic = mosaic * (1.0 + k.astype(np.float64))
    log_low, log_high = np.log(camera.shot_noise[0]), np.log(camera.shot_noise[1])
    shot = float(np.exp(rng.uniform(log_low, log_high)))
    if iso == "base":
        shot = float(camera.shot_noise[0])
    read = float(np.exp(_log_read_noise(shot) + rng.normal(0.0, 0.26)))
    if noise:
        variance = np.maximum(mosaic, 0.0) * shot + read
        noisy = mosaic + rng.standard_normal(mosaic.shape) * np.sqrt(variance)
    else:
        noisy = mosaic
    scale = camera.white_level - camera.black_level
    dn = np.round(camera.black_level + noisy * scale)
    dn = np.clip(dn, 0, camera.white_level).astype(np.uint16)
    info = {
        "wb_gains": [red, 1.0, blue],
        "exposure": exposure,
        "shot_noise": shot,
        "read_noise": read,
    }
    return dn, info


def inverse_tone_curve(rgb: np.ndarray) -> np.ndarray:
    """Undo the global tone curve a camera renders its photos with: Brooks et al.'s inverse smoothstep.

    Rendered photos carry an S-shaped tone curve (deeper shadows, brighter highlights) on top of the gamma;
    Brooks et al. (Sec. 3.2) model it as ``smoothstep(x) = 3 x^2 - 2 x^3`` and invert it with
    ``0.5 - sin(asin(1 - 2 y) / 3)``. Input and output in [0, 1], float64.
    """
    y = np.clip(np.asarray(rgb, dtype=np.float64), 0.0, 1.0)
    return 0.5 - np.sin(np.arcsin(1.0 - 2.0 * y) / 3.0)


def noise_profile(shot_noise: float) -> tuple[float, float]:
    """The DNG NoiseProfile ``(S, O)`` a calibrated camera records at a shot-noise level: ``S = shot_noise`` and
    the read noise Brooks et al.'s fit predicts for it, ``O = exp(2.18 log(S) + 1.20)`` (normalized units)."""
    return float(shot_noise), float(np.exp(_log_read_noise(shot_noise)))


def flat_field_scene(size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A flat-field scene (an overcast sky or an evenly lit wall): bright, smooth and nearly uniform.

    A level of 0.75-0.9 (sRGB) with a slight colour tint (+-4% per channel), a gentle linear gradient (up to
    +-6% across the frame) and a lens-like radial fall-off (up to 10% at the corners); no texture, so that a
    denoiser leaves the sensor noise and the PRNU in its residual and nothing of the scene.

    Returns:
        ``float32 (3, H, W)`` in [0, 1].
    """
    height, width = size
    y = np.linspace(-1.0, 1.0, height)[:, None]
    x = np.linspace(-1.0, 1.0, width)[None, :]
    level = rng.uniform(0.75, 0.9)
    tint = rng.uniform(0.96, 1.04, size=3)
    gy, gx = rng.uniform(-0.03, 0.03, size=2)
    falloff = rng.uniform(0.0, 0.05)
    shading = (1.0 + gy * y + gx * x) * (1.0 - falloff * (x**2 + y**2))
    scene = level * tint[:, None, None] * shading[None]
    return np.clip(scene, 0.0, 1.0).astype(np.float32)


def _write_sidecar(out_dir: Path, camera: CameraProfile, shots: dict[str, dict]) -> None:
    sidecar = out_dir / SIDECAR
    existing: dict = {}
    if sidecar.is_file():
        try:
            existing = json.loads(sidecar.read_text())
        except (OSError, ValueError):
            existing = {}
    if existing.get("profile") != camera.to_dict():
        existing = {}
    merged = {**existing.get("shots", {}), **shots}
    data = {
        "profile": camera.to_dict(),
        "sensor_megapixels": camera.megapixels,
        "shots": dict(sorted(merged.items())),
    }
    tmp = sidecar.with_name(f".{SIDECAR}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, sidecar)


def shots_megapixels(out_dir: str | os.PathLike, paths: Sequence[str | os.PathLike]) -> float:
    """Megapixels of the shots ``paths`` as recorded in ``out_dir``'s ``camera.json`` sidecar."""
    try:
        data = json.loads((Path(out_dir) / SIDECAR).read_text())
    except (OSError, ValueError):
        return 0.0
    shots, total = data.get("shots", {}), 0
    default = data.get("profile", {}).get("size", [0, 0])
    for path in paths:
        shot = shots.get(Path(path).name, {})
        height, width = shot.get("crop", [0, 0, *default])[2:]
        total += int(height) * int(width)
    return total / 1e6


def synthesize(
    photos: str | os.PathLike | Sequence[str | os.PathLike],
    camera: str | CameraProfile,
    out_dir: str | os.PathLike,
    *,
    shots_per_photo: int = 16,
    seed: int = 0,
    size: tuple[int, int] | str | None = None,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
    on_error: Callable[[Path, str], None] | None = None,
    iso: str = "random",
) -> list[Path]:
    """Write ``shots_per_photo`` DNG shots of every photo as taken by ``camera``.

    Each shot frames the photo at its own pixel pitch (never resampled): a random crop and flip as large as
    the photo and the sensor allow (:func:`shot_size`), or of exactly ``size``, with its own exposure, white
    balance and noise level, the camera's optics, the sensor's fixed PRNU and Poisson-Gaussian noise. Everything is deterministic
    from ``seed`` (shot ``k`` of photo ``i`` uses ``default_rng([seed, i, k])``, so all cameras frame a photo
    alike for one seed); existing files are kept unless ``overwrite`` (so an interrupted run resumes). A
    ``camera.json`` sidecar in ``out_dir`` records the profile and the parameters of every shot.

    Args:
        photos: a folder of JPEG/PNG/TIFF photos, ``"default"`` (photos bundled with installed packages), or a
            list of photo files.
        camera: profile or its name in :data:`CAMERAS`.
        out_dir: output folder (created).
        shots_per_photo: shots per photo (>= 1).
        seed: seed of all randomness except K (which belongs to the camera).
        size: sensor size ``(H, W)`` or ``"HxW"`` overriding the profile's; every shot then has exactly this
            size (a photo too small for it fails). Default: the profile's sensor, each shot as large as its
            photo allows.
        overwrite: rewrite existing files.
        progress: optional callable ``(done, total)`` called after each shot.
        on_error: optional callable ``(photo, reason)``: with it, a photo that cannot be read or framed is
            reported and skipped (its shots are left out); without it, the :class:`InputError` is raised.
        iso: ``"random"`` (default: every shot its own noise level) or ``"base"`` (:data:`ISO_SETTINGS`).

    Returns:
        Paths of the DNG files, named ``<camera>_<photo>_<k>.dng``, in photo then shot order.
    """
    profile = get_camera(camera).with_size(size)
    if shots_per_photo < 1:
        raise InputError(f"shots_per_photo must be >= 1, got {shots_per_photo}")
    _check_iso(iso)
    if isinstance(photos, (str, os.PathLike)):
        sources = find_photos(photos)
    else:
        sources = [Path(p) for p in photos]
        if not sources:
            raise InputError("no photos given")
    by_stem: dict[str, Path] = {}
    for source in sources:  # shots are named after the photo's stem: two photos must not share one
        if source.stem in by_stem:
            raise InputError(f"{source}: has the same name stem as {by_stem[source.stem]}; rename one of them")
        by_stem[source.stem] = source
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    k = profile.prnu()
    written: list[Path] = []
    shots: dict[str, dict] = {}
    total = len(sources) * shots_per_photo
    done = 0
    for index, source in enumerate(sources):
        photo = None
        first = len(written)
        for shot in range(shots_per_photo):
            target = out / f"{profile.name}_{source.stem}_{shot:02d}.dng"
            keep = target.is_file() and not overwrite
            rng = np.random.default_rng([seed, index, shot])
            if not keep:
                try:
                    photo = load_photo(source) if photo is None else photo
                    rgb, fit = _frame(photo, profile.size, rng, exact=size is not None, name=str(source))
                except InputError as error:
                    if on_error is None:
                        raise
                    on_error(source, str(error))
                    del written[first:]
                    done = (index + 1) * shots_per_photo
                    if progress:
                        progress(done, total)
                    break
            written.append(target)
            done += 1
            if keep:
                if progress:
                    progress(done, total)
                continue
            meta = {"photo": source.name, "scene": scene_of(source), "shot": shot, "seed": seed,
                    "camera": profile.name, **fit}
            shots[target.name] = _shoot(target, rgb, profile, rng, k, iso, meta)
            if progress:
                progress(done, total)
    _write_sidecar(out, profile, shots)
    return written


def _shoot(
    target: Path, rgb: np.ndarray, profile: CameraProfile, rng: np.random.Generator, k: np.ndarray, iso: str, meta: dict
) -> dict:
    """Unprocess one sRGB frame into a DNG at ``target``; returns ``meta`` with the shot's parameters."""
    mosaic, params = unprocess(rgb, profile, rng, prnu=k, iso=iso)
    meta = {**meta, **params}
    if iso != "random":
        meta["iso"] = iso
    neutral = [1.0 / params["wb_gains"][0], 1.0, 1.0 / params["wb_gains"][2]]
    write_dng(
        target,
        mosaic,
        cfa=profile.cfa,
        black_level=profile.black_level,
        white_level=profile.white_level,
        as_shot_neutral=neutral,
        xyz_to_cam=profile.xyz_to_cam,
        make="neuralimaging",
        model=f"virtual {profile.name}",
        description=json.dumps(meta),
        noise_profile=noise_profile(params["shot_noise"]),
    )
    return meta


FLAT_FIELD_SEED = 7_000_001
"""Second entry of the seed sequence of flat-field shots (``default_rng([seed, FLAT_FIELD_SEED, k])``), which
keeps them apart from the photo shots (``[seed, photo index, k]``)."""


def synthesize_flat_fields(
    camera: str | CameraProfile,
    out_dir: str | os.PathLike,
    count: int = 30,
    *,
    seed: int = 0,
    size: tuple[int, int] | str | None = None,
    iso: str = "base",
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> list[Path]:
    """Write ``count`` flat-field DNG shots (:func:`flat_field_scene`) of ``camera``: reference images for its PRNU.

    Chen, Fridrich, Goljan & Lukas (2008) estimate a camera's fingerprint from about 20-50 bright, smooth,
    unsaturated images (sky, walls) at a low ISO: the scene leaks nothing into the noise residual and the
    PRNU term ``x K`` is large against the shot noise. The shots go through :func:`unprocess` like photo shots
    (exposure, white balance, the same K, Poisson-Gaussian noise, at the profile's base ISO by default), are
    named ``<camera>_flat_<k>.dng`` and recorded in the folder's ``camera.json``; existing files are kept unless
    ``overwrite``.

    Args:
        camera: profile or its name in :data:`CAMERAS`.
        out_dir: output folder (created); keep it apart from the photo shots of a training set.
        count: number of shots (>= 1).
        seed: seed of the per-shot randomness (shot ``k`` uses ``default_rng([seed, FLAT_FIELD_SEED, k])``).
        size: sensor size ``(H, W)`` or ``"HxW"`` overriding the profile's.
        iso: ``"base"`` (default) or ``"random"`` (:data:`ISO_SETTINGS`).
        overwrite: rewrite existing files.
        progress: optional callable ``(done, total)`` called after each shot.

    Returns:
        Paths of the DNG files in shot order.
    """
    profile = get_camera(camera).with_size(size)
    if count < 1:
        raise InputError(f"count must be >= 1 flat-field shot, got {count}")
    _check_iso(iso)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    k = profile.prnu()
    written: list[Path] = []
    shots: dict[str, dict] = {}
    for shot in range(count):
        target = out / f"{profile.name}_flat_{shot:02d}.dng"
        written.append(target)
        if not (target.is_file() and not overwrite):
            rng = np.random.default_rng([seed, FLAT_FIELD_SEED, shot])
            rgb = flat_field_scene(profile.size, rng)
            meta = {"scene": "flat field", "shot": shot, "seed": seed, "camera": profile.name}
            shots[target.name] = _shoot(target, rgb, profile, rng, k, iso, meta)
        if progress:
            progress(shot + 1, count)
    _write_sidecar(out, profile, shots)
    return written


def synthetic_shots(
    photos: Sequence[np.ndarray],
    k: np.ndarray,
    n: int,
    *,
    noise: float = 0.01,
    zoom: float = 1.5,
    seed: int = 0,
) -> list[np.ndarray]:
    """Shots of a synthetic camera with PRNU ``k``: ``clip(X (1 + K) + N(0, noise^2))`` (Chen et al. 2008, eq. 1).

    Every shot frames its scene anew, as a hand-held camera does: the photos are used in turn (a fresh
    random order for every round), each enlarged (bicubic) by a random factor between the smallest that
    covers ``k`` (1 for photos that already do) and ``zoom`` times that, cropped at a random place, turned by
    a random multiple of 90 degrees (square ``k``; 0 or 180 otherwise) and mirrored at random. So shots
    practically never share pixel-aligned content, which would make the denoiser's content leak add up
    coherently in a fingerprint. This tests PRNU estimators where the true K is known without a RAW
    pipeline; :func:`synthesize` does the same through a sensor model.

    Args:
        photos: ``uint8 (H, W, 3)`` photographs (e.g. :func:`neuralimaging.photos.load_photo`).
        k: true PRNU factor ``(S, S')``, typically ``N(0, 0.01^2)``.
        n: number of shots.
        noise: standard deviation of the additive noise (image units).
        zoom: largest extra enlargement (>= 1; 1 keeps the covering size).
        seed: seed of the framing and the noise.

    Returns:
        ``n`` float32 ``(3, S, S')`` images in [0, 1].
    """
    if not photos:
        raise InputError("synthetic_shots: needs at least one photo")
    if zoom < 1.0:
        raise InputError(f"synthetic_shots: zoom must be >= 1, got {zoom}")
    k = np.asarray(k, dtype=np.float32)
    size_y, size_x = k.shape
    rng = np.random.default_rng(seed)
    order = np.concatenate([rng.permutation(len(photos)) for _ in range(n // len(photos) + 1)])[:n]
    shots = []
    for index in order:
        photo = photos[int(index)]
        h, w = photo.shape[:2]
        scale = max(size_y / h, size_x / w, 1.0) * float(rng.uniform(1.0, zoom))
        h, w = max(size_y, math.ceil(h * scale)), max(size_x, math.ceil(w * scale))
        if (h, w) != photo.shape[:2]:
            photo = np.asarray(Image.fromarray(photo).resize((w, h), Image.BICUBIC))
        top, left = int(rng.integers(h - size_y + 1)), int(rng.integers(w - size_x + 1))
        crop = photo[top : top + size_y, left : left + size_x].transpose(2, 0, 1).astype(np.float32) / 255.0
        turns = int(rng.integers(4)) if size_y == size_x else 2 * int(rng.integers(2))
        crop = np.rot90(crop, turns, axes=(1, 2))
        if rng.random() < 0.5:
            crop = crop[:, :, ::-1]
        shot = crop * (1.0 + k) + rng.normal(0.0, noise, crop.shape).astype(np.float32)
        shots.append(np.clip(shot, 0.0, 1.0).astype(np.float32))
    return shots
