"""Pixel dual-pixel captures (CAPTURES.md): Google's capture app (``*_left.pgm``/``*_right.pgm``),
Xin et al.'s 14-bit PNG pairs (``NNN_left.png``/``NNN_right.png`` + ``calibration/white_sheet_*``)
and Garg et al.'s layout (``raw_left_pd/<capture>/result_pd_left_<view>.png``).

All return a :class:`Capture` with ``left``/``right`` float32 HxW in [0, 1] (green, linear) and a
record of the levels: each layout's facts (never inferred from the data), the caller's overrides,
and the remaining guesses with their sources. DP disparity is horizontal; 2016x756-like views have pixels
twice as tall as wide (``pixel_aspect_y_over_x = 2``): see ``Capture.to_square_pixels``.
"""
from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np

from core.jsonfile import read_json
from synth.writers import XIN_BITS, XIN_BLACK  # the layout's levels: one home, beside its writer
from runtime_py.captures.common import Capture, CaptureError, Encoding, Layout, apply_layout, read_image_unchanged, read_pgm

PIXEL_BLACK_CODE = 64.0  # 10-bit codes, Pixel DP capture app (nominal SENSOR_DYNAMIC_BLACK_LEVEL)
GARG_SCALE, GARG_WHITE = 16.0, 16368.0  # Garg et al.: 10-bit data x 16
VIGNETTE_WINDOW = 101
ANISOTROPIC_RATIO = 2016 / 756  # width / height of the Pixel DP views (2x horizontal, 4x vertical binning)

XIN_LAYOUT = Layout(
    family="Pixel 4 PNG (Xin et al.)", bit_depth=XIN_BITS, code_scale=1.0, black=XIN_BLACK,
    white=XIN_BLACK + 2 ** XIN_BITS - 1, black_source="Pixel 4 PNG layout (Xin et al.): black level 1024",
    white_source="Pixel 4 PNG layout: 14-bit data on black 1024 (1024 + 2^14 - 1)",
    depth_source="Pixel 4 PNG layout: 14-bit", depth_white=lambda k, black: black + 2 ** k - 1)
GARG_LAYOUT = Layout(
    family="Garg et al.", bit_depth=10, code_scale=GARG_SCALE, black=0.0, white=GARG_WHITE,
    black_source="Garg et al. layout: black already subtracted (0)",
    white_source="Garg et al. layout: 10-bit data x 16 (1023 x 16)", depth_source="Garg et al. layout: 10-bit x 16",
    depth_white=lambda k, black: (2 ** k - 1) * GARG_SCALE)


def pgm_layout(maxval: int) -> Layout:
    """The capture app's PGM: samples scaled to the header's maxval (the white level); 10-bit
    sensor data when maxval is 65535. The black level is not stored: the nominal 64/1023 of full
    scale is a guess (the exact value is the capture's SENSOR_DYNAMIC_BLACK_LEVEL)."""
    depth = 10 if maxval == 65535 else int(maxval).bit_length()
    scale = maxval / (2 ** depth - 1)
    return Layout(
        family="Pixel DP capture app PGM", bit_depth=depth, code_scale=scale, black=PIXEL_BLACK_CODE * scale,
        white=float(maxval), black_source=f"nominal black level of the Pixel DP capture app ({PIXEL_BLACK_CODE:g} of "
        "1023, CAPTURES.md); the PGM does not store the capture's SENSOR_DYNAMIC_BLACK_LEVEL: give --black-level "
        "or <stem>.json if known", white_source=f"PGM header maxval {maxval}", black_guess=True,
        depth_source=("Pixel DP capture app: 10-bit data scaled to maxval 65535" if maxval == 65535
                      else f"PGM header maxval {maxval}"), depth_white=lambda k, black: float(maxval),
        container_max=float(maxval))


def pixel_aspect(shape: tuple[int, int], override: float | None = None) -> tuple[float, str, bool]:
    """y/x pixel aspect of DP views: (aspect, why, guessed). Unless given, the shape decides (2
    for the 2016x756 geometry, w/h ~ 8/3; else 1): a guess, since no layout stores it and a crop
    of an anisotropic capture cannot be told from its shape."""
    if override is not None:
        return float(override), "given by caller", False
    h, w = shape
    if abs(w / h - ANISOTROPIC_RATIO) < 0.05:
        return 2.0, f"{w}x{h} has the Pixel DP view shape (w/h = 8/3): 2x horizontal, 4x vertical binning", True
    if abs(w / h - 4 / 3) < 0.01:
        return 1.0, f"{w}x{h} has the shape of the released Pixel 4 views (2016x1512, square pixels)", True
    return 1.0, f"{w}x{h} (w/h = {w / h:.3f}): square pixels assumed", True


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
    raw = read_json(side, CaptureError)
    if not isinstance(raw, dict):
        raise CaptureError(f"{side}: must hold a JSON object")
    return {k: raw[k] for k in ("black_level", "white_level", "bit_depth") if k in raw}


def _check_pair(left: np.ndarray, right: np.ndarray, lp: Path, rp: Path) -> None:
    if left.shape != right.shape:
        raise CaptureError(f"{rp}: right view is {right.shape[1]}x{right.shape[0]} but left view {lp.name} is "
                           f"{left.shape[1]}x{left.shape[0]}: the two DP views must have the same size")


def _normalise_pair(lv, rv, lp, rp, layout: Layout, overrides: dict,
                    source: str | dict = "given by caller") -> tuple[np.ndarray, np.ndarray, Encoding]:
    _check_pair(lv, rv, lp, rp)
    enc = apply_layout(np.concatenate([lv.ravel(), rv.ravel()]), lp, layout, override_source=source, **overrides)
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


def _record(fmt: str, files, left: np.ndarray, enc: Encoding, aspect: tuple[float, str, bool], **extra) -> dict:
    asp, why, guessed = aspect
    rec = {"format": fmt, "files": [str(f) for f in files], "size": f"{left.shape[1]}x{left.shape[0]}",
           "channels": "green (linear)", **enc.to_record(), **extra, "pixel_aspect_y_over_x": asp,
           "pixel_aspect_reason": why, "normalisation": "(value - black) / (white - black), clipped to [0, 1]"}
    if guessed:
        rec["guesses"] = [*rec["guesses"], f"pixel_aspect_y_over_x {asp:g}: {why}"]
    rec["warnings"] = list(enc.warnings)
    return rec


def _steps(enc: Encoding) -> list[str]:
    return [f"left, right: {enc.describe()}"]


def read_pixel_pgm(path, *, black_level=None, white_level=None, bit_depth=None, aspect=None) -> Capture:
    """Google's DP capture app: ``<stamp>_left.pgm`` / ``_right.pgm``, P5 16-bit big-endian."""
    lp, rp, stem = _pair(Path(path), ".pgm")
    lv, lh = read_pgm(lp)
    rv, rh = read_pgm(rp)
    if lh["bytes_per_sample"] != 2 or rh["bytes_per_sample"] != 2:
        bad = lp if lh["bytes_per_sample"] != 2 else rp
        raise CaptureError(f"{bad}: 8-bit PGM (maxval {(lh if bad == lp else rh)['maxval']}); the Pixel DP "
                           "capture app writes 16-bit samples")
    if lh["maxval"] != rh["maxval"]:
        raise CaptureError(f"{rp}: PGM maxval {rh['maxval']}, the left view {lp.name} has {lh['maxval']}")
    side = _sidecar_levels(lp, stem)
    ov = _overrides(black_level, white_level, bit_depth)
    source = {}
    for k in ov:
        if ov[k] is not None:
            source[k] = "given by caller"
        elif k in side:
            ov[k], source[k] = side[k], f"sidecar {stem}.json"
    left, right, enc = _normalise_pair(lv, rv, lp, rp, pgm_layout(lh["maxval"]), ov, source)
    rec = _record("Pixel DP capture app (PGM P5, 16-bit big-endian)", (lp, rp), left, enc,
                  pixel_aspect(left.shape, aspect), pgm_maxval=lh["maxval"], metadata_sidecar=bool(side))
    return Capture("pixel_pgm", lp, {"left": left, "right": right}, rec, processing=_steps(enc))


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
    """Xin et al. Pixel 4 data: ``NNN_left.png``/``NNN_right.png`` 16-bit PNG, 14-bit + black 1024
    whatever the content (a dark capture is read with the same scale as a bright one)."""
    lp, rp, stem = _pair(Path(path), ".png")
    lv, rv = _grey16(lp, "left DP view"), _grey16(rp, "right DP view")
    left, right, enc = _normalise_pair(lv, rv, lp, rp, XIN_LAYOUT, _overrides(black_level, white_level, bit_depth))
    steps = _steps(enc)
    vig = "disabled by caller"
    if vignetting:
        gain, vig = _vignetting_gain(lp.parent / "calibration", enc, left.shape)
        if gain is not None:
            right = np.clip(right * gain, 0, 1).astype(np.float32)
            steps.append(f"vignetting corrected: {vig}, gain {float(gain.min()):.3f}..{float(gain.max()):.3f}, "
                         "clipped to [0, 1]")
    if not vig.startswith("right *="):
        steps.append(f"vignetting not corrected: {vig}")
    rec = _record("Pixel 4 DP PNG pair (Xin et al.)", (lp, rp), left, enc, pixel_aspect(left.shape, aspect),
                  vignetting_correction=vig)
    return Capture("pixel_png", lp, {"left": left, "right": right}, rec, processing=steps)


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
    left, right, enc = _normalise_pair(lv, rv, lp, rp, GARG_LAYOUT, _overrides(black_level, white_level, bit_depth))
    rec = _record("Garg et al. dual-pixel layout", (lp, rp), left, enc, pixel_aspect(left.shape, aspect), view=view)
    return Capture("garg", lp, {"left": left, "right": right}, rec, processing=_steps(enc))
