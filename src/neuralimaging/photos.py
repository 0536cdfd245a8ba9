"""Natural RGB photographs: the ones bundled inside installed packages (offline) and user folders.

The scenes the virtual camera photographs and the images analysed and compressed by the commands; both the
camera (``acquisition``) and the datasets (``data``) use them, so they live on the ground floor. Files are
decoded by :func:`neuralimaging.io.read_pixels`.

The default photo set is what scikit-image, scikit-learn and matplotlib ship inside their wheels (nothing is
downloaded): astronaut, chelsea, coffee, rocket, the motorcycle stereo pair (scikit-image), china and flower
(scikit-learn), and grace_hopper (matplotlib). Graphics, microscopy and astronomy images are left out.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from neuralimaging.errors import InputError
from neuralimaging.io import read_pixels

__all__ = ["PHOTO_SUFFIXES", "bundled_photos", "find_photos", "load_photo", "scene_of"]

_log = logging.getLogger(__name__)

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff")

_SKIMAGE = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "motorcycle_right.png")
_SKLEARN = ("china.jpg", "flower.jpg")
_MATPLOTLIB = ("grace_hopper.jpg",)


def bundled_photos() -> list[Path]:
    """Paths of the natural photographs shipped inside installed packages, in a fixed order."""
    import matplotlib
    import skimage
    import sklearn.datasets

    folders = (
        (Path(os.path.dirname(skimage.__file__)) / "data", _SKIMAGE),
        (Path(os.path.dirname(sklearn.datasets.__file__)) / "images", _SKLEARN),
        (Path(os.path.dirname(matplotlib.__file__)) / "mpl-data" / "sample_data", _MATPLOTLIB),
    )
    found = [folder / name for folder, names in folders for name in names if (folder / name).is_file()]
    if not found:
        raise InputError("no bundled photographs found in scikit-image, scikit-learn or matplotlib")
    _log.debug("%d bundled photographs: %s", len(found), ", ".join(p.name for p in found))
    return found


def scene_of(photo: str | os.PathLike) -> str:
    """The scene a photo shows: its name stem, without a stereo pair's ``_left`` / ``_right`` suffix.

    Photos of one scene stay on one side of a train / validation / test split.
    """
    stem = Path(photo).stem
    for suffix in ("_left", "_right"):
        if stem.endswith(suffix) and len(stem) > len(suffix):
            return stem[: -len(suffix)]
    return stem


def find_photos(source: str | os.PathLike) -> list[Path]:
    """Photos of a folder (JPEG/PNG/TIFF, sorted by name), or the bundled set for ``"default"``."""
    if str(source) == "default":
        return bundled_photos()
    folder = Path(source)
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder of photos (expected a directory of JPEG/PNG/TIFF files)")
    photos = sorted(p for p in folder.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES and p.is_file())
    if not photos:
        raise InputError(f"{folder}: no JPEG/PNG/TIFF photos found")
    return photos


def load_photo(path: str | os.PathLike) -> np.ndarray:
    """Read a photo as ``uint8 (H, W, 3)`` RGB (grey is repeated, alpha dropped, 16-bit rounded to 8 bits).

    Raises:
        InputError: naming the file when it is not a readable image (or is larger than the pixel limit).
    """
    try:
        pixels = read_pixels(path)
    except InputError as error:  # the toolkit's words for a photo
        raise InputError(str(error).replace("not a readable image", "not a readable photo", 1)) from error
    if pixels.dtype == np.uint16:
        return np.round(pixels / 257.0).astype(np.uint8)
    return pixels if pixels.flags.writeable else pixels.copy()
