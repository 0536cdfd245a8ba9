"""Small virtual-camera DNGs (128x192 sensors) shared by the acquisition tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from neuralimaging.acquisition.virtual_camera import CAMERAS, synthesize

SMALL = (128, 192)


@pytest.fixture(scope="session")
def small_dngs(tmp_path_factory, photo_paths) -> dict[str, list[Path]]:
    """Two shots of two bundled photos per built-in camera, at 128x192: camera name -> DNG paths."""
    root = tmp_path_factory.mktemp("virtual")
    return {
        name: synthesize(photo_paths[1:3], name, root / name, shots_per_photo=2, seed=3, size=SMALL)
        for name in CAMERAS
    }
