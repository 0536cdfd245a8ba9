"""The bundled photographs are present offline and load as RGB."""

from __future__ import annotations

import numpy as np
import pytest

from neuralimaging.photos import find_photos, load_photo
from neuralimaging.errors import InputError


def test_bundled_photos_are_rgb(photos) -> None:
    assert len(photos) >= 8
    for photo in photos:
        assert photo.dtype == np.uint8 and photo.ndim == 3 and photo.shape[2] == 3
        assert min(photo.shape[:2]) >= 256


def test_folder_of_photos(tmp_path, photo_paths) -> None:
    (tmp_path / "a.txt").write_text("not a photo")
    (tmp_path / "b.png").write_bytes(photo_paths[0].read_bytes())
    assert [p.name for p in find_photos(tmp_path)] == ["b.png"]


def test_bad_photo_is_a_clean_error(tmp_path) -> None:
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(InputError, match="broken.jpg"):
        load_photo(bad)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no JPEG/PNG/TIFF"):
        find_photos(empty)
    with pytest.raises(InputError, match="not a folder"):
        find_photos(tmp_path / "missing")
