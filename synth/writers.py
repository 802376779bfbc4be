"""Writers for synthetic samples, in the real on-disk formats (CAPTURES.md, MODELS.md section 4).

- DPDD layout: 16-bit sRGB PNG, ``{split}_c/source/<name>.png``, ``{split}_l/source/<name>_L.png``,
  ``{split}_r/source/<name>_R.png``, ``{split}_c/target/<name>.png``.
- Pixel layout: what Google's DP capture app writes: ``<yyyyMMdd_HHmmss_SSS>_left.pgm`` /
  ``_right.pgm``, binary P5, 16-bit big-endian, green channel, linear, 10-bit data with the black
  level added and the white level 1023 scaled to 65535. Ground truth (which a phone cannot
  capture) goes to ``ground_truth/`` in the same encoding.
- npz shards: float16 images and float32 maps, numeric arrays only (loadable without pickle).
"""
from __future__ import annotations

import datetime as _dt
from pathlib import Path

import cv2
import numpy as np

from calibration.cameras import CameraProfile


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    """IEC 61966-2-1 sRGB encoding of linear values in [0, 1]."""
    x = np.clip(x, 0.0, 1.0)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055)


def write_png16(path: Path, image: np.ndarray, srgb: bool = True) -> None:
    """16-bit PNG (RGB -> BGR for OpenCV), sRGB-encoded unless ``srgb`` is False."""
    x = linear_to_srgb(image) if srgb else np.clip(image, 0, 1)
    x = np.round(x * 65535.0).astype(np.uint16)
    if x.ndim == 3 and x.shape[2] == 3:
        x = x[..., ::-1]
    elif x.ndim == 3:
        x = x[..., 0]
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), x):
        raise OSError(f"{path}: OpenCV could not write the PNG")


def pixel_dn16(image: np.ndarray, camera: CameraProfile) -> np.ndarray:
    """Linear [0, 1] green values -> the 16-bit numbers a Pixel DP capture holds: 10-bit data
    ``black + x (white - black)``, rounded, then scaled by 65535 / 1023."""
    g = image[..., 0] if image.ndim == 3 else image
    max_code = 2 ** camera.bit_depth - 1
    dn = np.round(camera.black_level + np.clip(g, 0, 1) * (camera.white_level - camera.black_level))
    return np.round(dn * (65535.0 / max_code)).astype(np.uint16)


XIN_BLACK, XIN_BITS = 1024, 14  # Pixel 4 PNG layout (Xin et al.): 14-bit data on black 1024 in 16-bit PNGs
XIN_GT_FOLDER = "gt_all_in_focus_im"  # its all-in-focus ground truth: <folder>/NNN_gt.png


def xin_codes(image: np.ndarray) -> np.ndarray:
    """Linear [0, 1] green values (H x W, or H x W x C: channel 0) -> the Pixel 4 PNG layout's
    16-bit codes ``1024 + x (2^14 - 1)``."""
    g = image[..., 0] if image.ndim == 3 else image
    return np.round(XIN_BLACK + np.clip(g, 0, 1) * (2 ** XIN_BITS - 1)).astype(np.uint16)


def write_pgm16(path: Path, values: np.ndarray) -> None:
    """Binary PGM (P5), maxval 65535, big-endian samples as the PGM format requires."""
    if values.dtype != np.uint16 or values.ndim != 2:
        raise ValueError(f"{path}: PGM writer needs a 2-D uint16 array, got {values.dtype} {values.shape}")
    h, w = values.shape
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(f"P5\n{w} {h}\n65535\n".encode("ascii"))
        fh.write(values.astype(">u2").tobytes())


def pixel_capture_name(index: int, base: _dt.datetime = _dt.datetime(2026, 1, 1, 12, 0, 0)) -> str:
    """``yyyyMMdd_HHmmss_SSS`` as the capture app names files; one synthetic capture per 250 ms."""
    t = base + _dt.timedelta(milliseconds=250 * index)
    return t.strftime("%Y%m%d_%H%M%S_") + f"{t.microsecond // 1000:03d}"


def write_dpdd_sample(root: Path, split: str, name: str, sample) -> list[Path]:
    paths = [root / f"{split}_c" / "source" / f"{name}.png", root / f"{split}_l" / "source" / f"{name}_L.png",
             root / f"{split}_r" / "source" / f"{name}_R.png", root / f"{split}_c" / "target" / f"{name}.png"]
    for path, img in zip(paths, (sample.combined, sample.left, sample.right, sample.sharp)):
        write_png16(path, img)
    return paths


def write_pixel_sample(root: Path, index: int, sample, camera: CameraProfile) -> list[Path]:
    stem = pixel_capture_name(index)
    paths = [root / f"{stem}_left.pgm", root / f"{stem}_right.pgm", root / "ground_truth" / f"{stem}_sharp.pgm"]
    for path, img in zip(paths, (sample.left, sample.right, sample.sharp)):
        write_pgm16(path, pixel_dn16(img, camera))
    return paths


DP_FIELDS = ("sharp", "left", "right", "combined", "coc", "disparity", "depth")
DUAL_FIELDS = ("wide", "ultrawide", "sharp", "depth", "defocus_wide", "defocus_target", "refocused",
               "flow_w_to_uw", "occlusion")


def write_npz_shard(path: Path, samples: list, fields: tuple[str, ...]) -> Path:
    """Stack ``fields`` of ``samples`` into one compressed npz: images as float16, maps float32."""
    arrays = {}
    for f in fields:
        stack = np.stack([getattr(s, f) for s in samples])
        if stack.dtype == bool:
            arrays[f] = stack
        elif stack.ndim == 4 and f not in ("flow_w_to_uw",):
            arrays[f] = stack.astype(np.float16)
        else:
            arrays[f] = stack.astype(np.float32)
    for f in ("focus_mask", "refocused"):
        if f not in fields and all(getattr(s, f, None) is not None for s in samples):
            v = np.stack([getattr(s, f) for s in samples])
            arrays[f] = v if v.dtype == bool else v.astype(np.float16)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)
    return path
