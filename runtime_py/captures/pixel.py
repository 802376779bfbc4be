"""Pixel dual-pixel captures (CAPTURES.md): Google's capture app (``*_left.pgm``/``*_right.pgm``),
Xin et al.'s 14-bit PNG pairs (``NNN_left.png``/``NNN_right.png`` + ``calibration/white_sheet_*``)
and Garg et al.'s layout (``raw_left_pd/<capture>/result_pd_left_<view>.png``).

All return a :class:`Capture` with ``left``/``right`` float32 HxW in [0, 1] (green, linear) and a
record of the detected encoding. DP disparity is horizontal; 2016x756-like views have pixels
twice as tall as wide (``pixel_aspect_y_over_x = 2``): see ``Capture.to_square_pixels``.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np

from runtime_py.captures.common import Capture, CaptureError, Encoding, detect_encoding, read_image_unchanged, read_pgm

PIXEL_BLACK_CODE = 64.0  # 10-bit codes, Pixel DP capture app (SENSOR_DYNAMIC_BLACK_LEVEL ~ 64)
XIN_BLACK = 1024.0  # Xin et al. 14-bit PNGs
VIGNETTE_WINDOW = 101
ANISOTROPIC_RATIO = 2016 / 756  # width / height of the Pixel DP views (2x horizontal, 4x vertical binning)


def pixel_aspect(shape: tuple[int, int], override: float | None = None) -> tuple[float, str]:
    """y/x pixel aspect of DP views: 2 for the 2016x756 geometry (w/h ~ 8/3), else 1."""
    if override is not None:
        return float(override), "given by caller"
    h, w = shape
    if abs(w / h - ANISOTROPIC_RATIO) < 0.05:
        return 2.0, f"{w}x{h} has the Pixel DP view shape (w/h = 8/3): 2x horizontal, 4x vertical binning"
    return 1.0, f"{w}x{h} (w/h = {w / h:.3f}): square pixels assumed"


def _pair(path: Path, suffix: str) -> tuple[Path, Path, str]:
    """``X_left.ext``/``X_right.ext`` from either file or the stem ``X``."""
    name = path.name
    for side in ("_left", "_right"):
        if name.endswith(side + suffix):
            stem = name[: -len(side + suffix)]
            return path.with_name(stem + "_left" + suffix), path.with_name(stem + "_right" + suffix), stem
    return path.with_name(name + "_left" + suffix), path.with_name(name + "_right" + suffix), name


def _sidecar_levels(left: Path, stem: str) -> dict:
    """Optional ``<stem>.json`` next to the views with black_level / white_level (file units)."""
    side = left.with_name(stem + ".json")
    if not side.is_file():
        return {}
    try:
        raw = json.loads(side.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CaptureError(f"{side}: not valid JSON ({exc})") from None
    return {k: raw[k] for k in ("black_level", "white_level", "bit_depth") if k in raw}


def _check_pair(left: np.ndarray, right: np.ndarray, lp: Path, rp: Path) -> None:
    if left.shape != right.shape:
        raise CaptureError(f"{rp}: right view is {right.shape[1]}x{right.shape[0]} but left view {lp.name} is "
                           f"{left.shape[1]}x{left.shape[0]}: the two DP views must have the same size")


def _normalise_pair(lv, rv, lp, rp, *, nominal_black, family, overrides) -> tuple[np.ndarray, np.ndarray, Encoding]:
    _check_pair(lv, rv, lp, rp)
    enc = detect_encoding(np.concatenate([lv.ravel(), rv.ravel()]), lp, nominal_black_code=nominal_black,
                          family=family, **overrides)
    return enc.normalise(lv), enc.normalise(rv), enc


def _overrides(black_level, white_level, bit_depth) -> dict:
    return {"black_level": black_level, "white_level": white_level, "bit_depth": bit_depth}


def _grey16(path: Path, what: str) -> np.ndarray:
    img = read_image_unchanged(path, what)
    if img.ndim == 3:
        raise CaptureError(f"{path}: {what} has {img.shape[2]} channels; DP views are single-channel (green)")
    if img.dtype != np.uint16:
        raise CaptureError(f"{path}: {what} is {img.dtype.itemsize * 8}-bit; DP views are 16-bit PNGs")
    return img


def read_pixel_pgm(path, *, black_level=None, white_level=None, bit_depth=None, aspect=None) -> Capture:
    """Google's DP capture app: ``<stamp>_left.pgm`` / ``_right.pgm``, P5 16-bit big-endian."""
    lp, rp, stem = _pair(Path(path), ".pgm")
    lv, lh = read_pgm(lp)
    rv, rh = read_pgm(rp)
    if lh["bytes_per_sample"] != 2 or rh["bytes_per_sample"] != 2:
        bad = lp if lh["bytes_per_sample"] != 2 else rp
        raise CaptureError(f"{bad}: 8-bit PGM (maxval {(lh if bad == lp else rh)['maxval']}); the Pixel DP "
                           "capture app writes 16-bit samples")
    side = _sidecar_levels(lp, stem)
    ov = _overrides(black_level, white_level, bit_depth)
    for k, v in side.items():
        if ov.get(k) is None:
            ov[k] = v
    left, right, enc = _normalise_pair(lv, rv, lp, rp, nominal_black=PIXEL_BLACK_CODE, family="Pixel DP", overrides=ov)
    asp, why = pixel_aspect(left.shape, aspect)
    rec = {"format": "Pixel DP capture app (PGM P5, 16-bit big-endian)", "files": [str(lp), str(rp)],
           "size": f"{left.shape[1]}x{left.shape[0]}", "channels": "green (linear)", **enc.to_record(),
           "pgm_maxval": lh["maxval"], "pixel_aspect_y_over_x": asp, "pixel_aspect_reason": why,
           "metadata_sidecar": bool(side), "normalisation": "(value - black) / (white - black), clipped to [0, 1]"}
    return Capture("pixel_pgm", lp, {"left": left, "right": right}, rec)


def _vignetting_gain(calib_dir: Path, enc: Encoding, shape) -> tuple[np.ndarray | None, str]:
    wl, wr = calib_dir / "white_sheet_left.png", calib_dir / "white_sheet_right.png"
    if not (wl.is_file() and wr.is_file()):
        return None, f"not applied: no {calib_dir.name}/white_sheet_{{left,right}}.png"
    a, b = _grey16(wl, "white sheet (left)"), _grey16(wr, "white sheet (right)")
    if a.shape != tuple(shape) or b.shape != tuple(shape):
        raise CaptureError(f"{wl}: white sheet is {a.shape[1]}x{a.shape[0]}, captures are {shape[1]}x{shape[0]}")
    la, lb = enc.normalise(a), enc.normalise(b)
    ratio = la / np.maximum(lb, 1e-4)
    gain = cv2.blur(ratio, (VIGNETTE_WINDOW, VIGNETTE_WINDOW), borderType=cv2.BORDER_REFLECT)
    return gain, f"right *= box{VIGNETTE_WINDOW}(white_left / white_right) (Xin et al.)"


def read_pixel_png(path, *, black_level=None, white_level=None, bit_depth=None, aspect=None,
                   vignetting: bool = True) -> Capture:
    """Xin et al. Pixel 4 data: ``NNN_left.png``/``NNN_right.png`` 16-bit PNG, 14-bit + black 1024."""
    lp, rp, stem = _pair(Path(path), ".png")
    lv, rv = _grey16(lp, "left DP view"), _grey16(rp, "right DP view")
    left, right, enc = _normalise_pair(lv, rv, lp, rp, nominal_black=XIN_BLACK, family="Pixel 4 PNG (Xin et al.)",
                                       overrides=_overrides(black_level, white_level, bit_depth))
    vig = "disabled by caller"
    if vignetting:
        gain, vig = _vignetting_gain(lp.parent / "calibration", enc, left.shape)
        if gain is not None:
            right = np.clip(right * gain, 0, 1).astype(np.float32)
    asp, why = pixel_aspect(left.shape, aspect)
    rec = {"format": "Pixel 4 DP PNG pair (Xin et al.)", "files": [str(lp), str(rp)],
           "size": f"{left.shape[1]}x{left.shape[0]}", "channels": "green (linear)", **enc.to_record(),
           "vignetting_correction": vig, "pixel_aspect_y_over_x": asp, "pixel_aspect_reason": why,
           "normalisation": "(value - black) / (white - black), clipped to [0, 1]"}
    return Capture("pixel_png", lp, {"left": left, "right": right}, rec)


GARG_RE = re.compile(r"result_pd_(left|right)_(.+)\.png$")


def garg_files(path: Path, view: str | None = None) -> tuple[Path, Path, str]:
    """Left/right files of a Garg et al. capture from a file or the ``raw_left_pd/<capture>`` folder."""
    path = Path(path)
    if path.is_file():
        m = GARG_RE.search(path.name)
        if not m:
            raise CaptureError(f"{path}: not a Garg et al. file (result_pd_left_<view>.png)")
        capture_dir, view = path.parent, m.group(2)
    else:
        capture_dir = path
        views = sorted(GARG_RE.search(p.name).group(2) for p in capture_dir.glob("result_pd_left_*.png"))
        if not views:
            raise CaptureError(f"{capture_dir}: no result_pd_left_<view>.png in this Garg capture folder")
        view = view or ("center" if "center" in views else views[0])
    capture = capture_dir.name
    root = capture_dir.parent.parent
    lp = root / "raw_left_pd" / capture / f"result_pd_left_{view}.png"
    rp = root / "raw_right_pd" / capture / f"result_pd_right_{view}.png"
    if not rp.is_file():
        raise CaptureError(f"{rp}: right view of Garg capture {capture!r} ({view}) not found")
    return lp, rp, view


def read_garg(path, *, view: str | None = None, black_level=None, white_level=None, bit_depth=None,
              aspect=None) -> Capture:
    """Garg et al. (ICCV 2019): 16-bit PNG, 10-bit data scaled by 16, divided by 16368."""
    lp, rp, view = garg_files(path, view)
    lv, rv = _grey16(lp, "left DP view"), _grey16(rp, "right DP view")
    left, right, enc = _normalise_pair(lv, rv, lp, rp, nominal_black=0.0, family="Garg et al.",
                                       overrides=_overrides(black_level, white_level, bit_depth))
    asp, why = pixel_aspect(left.shape, aspect)
    rec = {"format": "Garg et al. dual-pixel layout", "files": [str(lp), str(rp)], "view": view,
           "size": f"{left.shape[1]}x{left.shape[0]}", "channels": "green (linear)", **enc.to_record(),
           "pixel_aspect_y_over_x": asp, "pixel_aspect_reason": why,
           "normalisation": "(value - black) / (white - black), clipped to [0, 1]"}
    return Capture("garg", lp, {"left": left, "right": right}, rec)
