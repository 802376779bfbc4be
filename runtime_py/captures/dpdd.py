"""DPDD-layout folders (Abuolaim & Brown, ECCV 2020; our synth ``--format dpdd``):
``{split}_c/source/<n>.png`` (combined), ``{split}_l/source/<n>_L.png``, ``{split}_r/source/<n>_R.png``,
``{split}_c/target/<n>.png`` (all-in-focus), 16-bit PNG.

Values are kept as stored: DPDD's PNGs (and ours) are sRGB-encoded, so the arrays are sRGB
values in [0, 1] (value / 65535), not linear. Files are paired by sorted order within each
folder (as DPDD's own loaders do); portrait images are rotated 90 degrees clockwise to landscape.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from runtime_py.captures.common import Capture, CaptureError, read_image_unchanged

IMAGE_EXT = (".png",)


def find_splits(root: Path) -> list[str]:
    """Split names that have the four DPDD folders under ``root``."""
    root = Path(root)
    splits = []
    for c in sorted(root.glob("*_c")):
        split = c.name[:-2]
        if (c / "source").is_dir() and (root / f"{split}_l" / "source").is_dir() and (root / f"{split}_r" / "source").is_dir():
            splits.append(split)
    return splits


def _listing(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXT) if folder.is_dir() else []


class DPDDDataset:
    """``ds[i] -> (left, right, combined, target)``, float32 HxWx3 in [0, 1], RGB, sRGB-encoded
    as stored. ``target`` is None when the split has no ``_c/target`` folder."""

    def __init__(self, root, split: str | None = None, *, landscape: bool = True):
        self.root = Path(root)
        if not self.root.is_dir():
            raise CaptureError(f"{self.root}: DPDD root folder not found")
        splits = find_splits(self.root)
        if not splits:
            raise CaptureError(f"{self.root}: no DPDD split (needs <split>_c/source, <split>_l/source, <split>_r/source)")
        if split is None:
            split = "test" if "test" in splits else splits[0]
        if split not in splits:
            raise CaptureError(f"{self.root}: split {split!r} not found; found {splits}")
        self.split, self.landscape = split, landscape
        self._rotated: set[Path] = set()  # files turned to landscape on reading
        r = self.root
        self.combined = _listing(r / f"{split}_c" / "source")
        self.left = _listing(r / f"{split}_l" / "source")
        self.right = _listing(r / f"{split}_r" / "source")
        self.target = _listing(r / f"{split}_c" / "target")
        counts = {"combined": len(self.combined), "left": len(self.left), "right": len(self.right)}
        if self.target:
            counts["target"] = len(self.target)
        if len(set(counts.values())) != 1:
            raise CaptureError(f"{r}: split {split!r} has unequal file counts {counts}; cannot pair by sorted order")
        if not self.left:
            raise CaptureError(f"{r}: split {split!r} has no PNG files")

    def __len__(self) -> int:
        return len(self.left)

    def _read(self, path: Path) -> np.ndarray:
        img = read_image_unchanged(path, "DPDD image")
        if img.dtype != np.uint16:
            raise CaptureError(f"{path}: {img.dtype.itemsize * 8}-bit PNG; DPDD images are 16-bit")
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        x = img.astype(np.float32) / np.float32(65535.0)
        if self.landscape and x.shape[0] > x.shape[1]:
            x = np.ascontiguousarray(cv2.rotate(x, cv2.ROTATE_90_CLOCKWISE))
            self._rotated.add(path)
        return x

    def __getitem__(self, i: int):
        if not -len(self) <= i < len(self):
            raise IndexError(f"DPDD split {self.split!r} has {len(self)} samples, index {i}")
        files = [self.left[i], self.right[i], self.combined[i]] + ([self.target[i]] if self.target else [])
        arrays = [self._read(p) for p in files]
        shapes = {a.shape for a in arrays}
        if len(shapes) != 1:
            raise CaptureError(f"{files[0]}: sample {i} has images of different sizes "
                               f"{[f'{p.name}: {a.shape[1]}x{a.shape[0]}' for p, a in zip(files, arrays)]}")
        if not self.target:
            arrays.append(None)
        return tuple(arrays)

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def names(self, i: int) -> dict[str, str]:
        return {"left": self.left[i].name, "right": self.right[i].name, "combined": self.combined[i].name,
                "target": self.target[i].name if self.target else ""}

    def capture(self, i: int = 0) -> Capture:
        """Sample ``i`` as a :class:`Capture` (for ``inspect``)."""
        left, right, combined, target = self[i]
        arrays = {"left": left, "right": right, "combined": combined}
        if target is not None:
            arrays["target"] = target
        rec = {"format": "DPDD folders (16-bit PNG)", "root": str(self.root), "split": self.split,
               "splits": find_splits(self.root), "samples": len(self), "index": i, "files": self.names(i),
               "size": f"{left.shape[1]}x{left.shape[0]}", "bit_depth": 16, "black_level": 0, "white_level": 65535,
               "colour": "sRGB-encoded as stored (not linearised)", "pairing": "sorted order per folder",
               "orientation": "portrait rotated 90 deg clockwise to landscape" if self.landscape else "as stored",
               "pixel_aspect_y_over_x": 1.0}
        steps = [f"{', '.join(arrays)}: stored 16-bit values / 65535 (sRGB-encoded as stored, not linearised)"]
        if self.landscape and self.left[i] in self._rotated:
            steps.append("portrait images rotated 90 degrees clockwise to landscape")
        return Capture("dpdd", self.root, arrays, rec, processing=steps, transfer="srgb")
