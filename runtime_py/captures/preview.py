"""A preview PNG of a capture: its images side by side at a common height (linear DP views get
a display gamma), disparity as a colour map."""
from __future__ import annotations


import cv2
import numpy as np

from core.atomic import write_image
from runtime_py.captures.common import Capture

LINEAR_KINDS = ("pixel_pgm", "pixel_png", "garg")


def _to_rgb8(a: np.ndarray, name: str, linear: bool) -> np.ndarray:
    if name == "disparity" or a.ndim == 2 and a.dtype.kind == "f" and not linear and name not in ("left", "right"):
        lo, hi = np.percentile(a, [1, 99])
        x = np.clip((a - lo) / max(hi - lo, 1e-9), 0, 1)
        return cv2.applyColorMap(np.rint(x * 255).astype(np.uint8), cv2.COLORMAP_TURBO)[..., ::-1]
    x = np.clip(a, 0, 1)
    if linear:
        x = x ** (1 / 2.2)
    x = np.rint(x * 255).astype(np.uint8)
    return np.repeat(x[..., None], 3, 2) if x.ndim == 2 else x[..., :3]


def capture_preview(cap: Capture, path=None, height: int = 384) -> np.ndarray:
    """RGB uint8 strip of every array of ``cap`` (label on top), written as PNG if ``path``."""
    tiles = []
    for name, a in cap.arrays.items():
        img = _to_rgb8(a, name, cap.kind in LINEAR_KINDS)
        aspect = float(cap.record.get("pixel_aspect_y_over_x", 1.0))
        h, w = img.shape[:2]
        new_w = max(1, int(round(w * height / (h * aspect))))
        img = np.ascontiguousarray(cv2.resize(img, (new_w, height), interpolation=cv2.INTER_AREA))
        cv2.putText(img, name, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 2, cv2.LINE_AA)
        tiles.append(img)
        tiles.append(np.zeros((height, 4, 3), np.uint8))
    panel = np.hstack(tiles[:-1])
    if path is not None:
        write_image(path, panel[..., ::-1], "preview PNG")
    return panel
