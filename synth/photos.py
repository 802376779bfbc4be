"""Real photographs for scene textures: a small public-domain/CC0 set that ships inside the
scikit-image wheel (read as files; nothing is downloaded), plus any folder the user points at.

The bundled set (licences from scikit-image's ``skimage.data`` docstrings): astronaut and
rocket (public domain, NASA / SpaceX), brick, grass and gravel (CC0 textures), camera (CC0,
L. Varshney), chelsea (CC0, S. van der Walt), coffee (CC0, R. Michetti).
"""
from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import cv2
import numpy as np

from core.errors import UserError
from synth.scenes import load_texture_folder, srgb_to_linear

BUNDLED = ("astronaut.png", "brick.png", "camera.png", "chelsea.png", "coffee.png", "grass.png",
           "gravel.png", "rocket.jpg")


class PhotoError(UserError):
    """The bundled photos are not installed, or a photo folder cannot be read."""


def bundled_dir() -> Path:
    """scikit-image's data folder (the package is a normal dependency: ``make`` installs it)."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise PhotoError("the bundled photos come with scikit-image, which is not installed "
                         "(run `make venv`, or pip install scikit-image)")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


@functools.lru_cache(maxsize=4)
def _bundled(max_side: int) -> tuple[np.ndarray, ...]:
    out = []
    folder = bundled_dir()
    for name in BUNDLED:
        path = folder / name
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            raise PhotoError(f"{path}: bundled photo missing or unreadable (reinstall scikit-image)")
        img = srgb_to_linear(img[:, :, ::-1].astype(np.float32) / 255.0)
        f = max_side / max(img.shape[:2])
        if f < 1:
            img = cv2.resize(img, (round(img.shape[1] * f), round(img.shape[0] * f)), interpolation=cv2.INTER_AREA)
        out.append(np.ascontiguousarray(np.clip(img, 0.0, 1.0), dtype=np.float32))
    return tuple(out)


def photo_textures(folder: str | Path | None = None, max_side: int = 512) -> list[np.ndarray]:
    """Linear RGB float32 photos in [0, 1]: the bundled set plus the images of ``folder``."""
    photos = list(_bundled(int(max_side)))
    if folder:
        photos += load_texture_folder(folder, max_side=max_side)
    return photos
