"""The photo set moved to the ground floor: :mod:`neuralimaging.photos` (re-exported here for old imports)."""

from neuralimaging.photos import PHOTO_SUFFIXES, bundled_photos, find_photos, load_photo, scene_of

__all__ = ["PHOTO_SUFFIXES", "bundled_photos", "find_photos", "load_photo", "scene_of"]
