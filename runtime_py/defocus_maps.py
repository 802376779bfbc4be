"""Defocus maps for DC2 from a disparity map: ``defocus = A * |d - d_focus|``.

The focus disparity ``d_focus`` comes from a point (x, y) (median in a small window, robust to
an edge), a mask (mean disparity inside), or a value. ``A`` (aperture scale) converts disparity
units into CoC radius in pixels.

Why this is right: for a thin lens focused at s, the CoC radius of a point at depth d is
``r = K (1/s - 1/d) * s``-like, i.e. linear in inverse depth: ``|r| = A |1/d - 1/s|`` with
``A = f^2 / (N (s - f)) * s / pitch`` ~ ``f^2 / (N pitch)`` for s >> f (radius in px when 1/d is in
1/m and f in m). Disparity (stereo or iPhone's 1/m) is affine in inverse depth, so the map above is
the CoC up to the scale A.

``wide_capture_defocus`` is the W capture's own defocus (what DC2 must undo): the same formula
with A from W's focal length, f-number and pixel pitch and d_focus = 1 / focus distance,
applied to a metric disparity in 1/m.
"""
from __future__ import annotations

import math

import numpy as np
from core.errors import UserError


class DefocusError(UserError):
    """Bad inputs to a defocus map (non-finite disparity, focus point outside, empty mask...)."""


def _check_disparity(disp: np.ndarray) -> np.ndarray:
    d = np.asarray(disp)
    if d.ndim != 2:
        raise DefocusError(f"disparity must be a 2-D map, got shape {d.shape}")
    if not np.isfinite(d).all():
        raise DefocusError(f"disparity holds {int((~np.isfinite(d)).sum())} NaN/inf values")
    return d.astype(np.float32)


def focus_disparity(disp: np.ndarray, *, point: tuple[int, int] | None = None, mask: np.ndarray | None = None,
                    value: float | None = None, window: int = 5) -> tuple[float, str]:
    """``d_focus`` and how it was chosen: exactly one of ``point`` (x, y; median of a
    ``window`` x ``window`` patch), ``mask`` (mean inside) or ``value``."""
    d = _check_disparity(disp)
    given = [k for k, v in (("point", point), ("mask", mask), ("value", value)) if v is not None]
    if len(given) != 1:
        raise DefocusError(f"give exactly one of point, mask or value (got {given or 'none'})")
    if value is not None:
        if not math.isfinite(value):
            raise DefocusError(f"focus disparity value {value} is not finite")
        return float(value), f"value {value:g}"
    if point is not None:
        x, y = int(point[0]), int(point[1])
        h, w = d.shape
        if not (0 <= x < w and 0 <= y < h):
            raise DefocusError(f"focus point ({x}, {y}) is outside the {w}x{h} disparity map")
        r = window // 2
        patch = d[max(y - r, 0):y + r + 1, max(x - r, 0):x + r + 1]
        return float(np.median(patch)), f"point ({x}, {y}), median of {window}x{window}"
    m = np.asarray(mask, bool)
    if m.shape != d.shape:
        raise DefocusError(f"focus mask is {m.shape[1]}x{m.shape[0]}, disparity is {d.shape[1]}x{d.shape[0]}")
    if not m.any():
        raise DefocusError("focus mask is empty")
    return float(d[m].mean()), f"mask ({int(m.sum())} px), mean disparity inside"


def defocus_map(disp: np.ndarray, aperture_scale: float, *, point=None, mask=None, value=None,
                max_radius: float | None = None) -> tuple[np.ndarray, dict]:
    """``A * |d - d_focus|`` (float32, px), optionally clipped to ``max_radius``; and a record."""
    if not (math.isfinite(aperture_scale) and aperture_scale >= 0):
        raise DefocusError(f"aperture scale must be finite and >= 0, got {aperture_scale}")
    d = _check_disparity(disp)
    d_f, how = focus_disparity(d, point=point, mask=mask, value=value)
    out = np.float32(aperture_scale) * np.abs(d - np.float32(d_f))
    if max_radius is not None:
        out = np.minimum(out, np.float32(max_radius))
    rec = {"focus_disparity": d_f, "focus_from": how, "aperture_scale": aperture_scale,
           "defocus_range_px": [float(out.min()), float(out.max())], "max_radius": max_radius}
    return out.astype(np.float32), rec


def aperture_scale_px(focal_length_mm: float, f_number: float, pixel_pitch_um: float,
                      focus_distance_m: float | None = None, image_scale: float = 1.0) -> float:
    """A such that ``|CoC radius| [px] = A |1/d - 1/s|`` (1/d, 1/s in 1/m): thin lens,
    ``r = f^2 / (2 N (s - f)) * s |1/d - 1/s|`` (m) over the pixel pitch; ``image_scale`` for
    images resized from the native sensor (0.25: a 4032-px sensor seen as 1008 px)."""
    if min(focal_length_mm, f_number, pixel_pitch_um) <= 0:
        raise DefocusError("focal length, f-number and pixel pitch must be > 0")
    f = focal_length_mm * 1e-3
    s = focus_distance_m if focus_distance_m else float("inf")
    corr = 1.0 if math.isinf(s) else s / (s - f)
    radius_m = f * f / (2.0 * f_number) * corr  # CoC radius per unit of |1/d - 1/s|
    return radius_m / (pixel_pitch_um * 1e-6) * image_scale


def wide_capture_defocus(disp_inv_m: np.ndarray, *, focal_length_mm: float, f_number: float,
                         pixel_pitch_um: float, focus_distance_m: float, image_scale: float = 1.0,
                         max_radius: float | None = None) -> tuple[np.ndarray, dict]:
    """The W capture's own defocus estimate from a metric disparity (1/m): focus at
    1 / focus_distance, A from W's optics (see ``aperture_scale_px``)."""
    if focus_distance_m <= 0:
        raise DefocusError(f"focus distance must be > 0, got {focus_distance_m}")
    a = aperture_scale_px(focal_length_mm, f_number, pixel_pitch_um, focus_distance_m, image_scale)
    out, rec = defocus_map(disp_inv_m, a, value=1.0 / focus_distance_m, max_radius=max_radius)
    rec.update(model="thin lens, CoC radius = f^2 s / (2 N (s - f)) |1/d - 1/s| / pitch",
               focal_length_mm=focal_length_mm, f_number=f_number, pixel_pitch_um=pixel_pitch_um,
               focus_distance_m=focus_distance_m, image_scale=image_scale)
    return out, rec


METRIC_DISPARITY_UNITS = ("1/m", "1/meter", "1/metre", "m^-1", "diopter", "dioptre")


def wide_defocus_from_bundle(disp: np.ndarray, meta: dict, f_wide_px: float | None,
                             units: str | None) -> tuple[np.ndarray, dict]:
    """DC2's ``defocus_wide`` input for a UW+W bundle: the W capture's own CoC radius (px) from its
    metric disparity (1/m) and the capture's lens state in meta.json (``focus_distance_m``,
    ``f_number``, ``focal_length_mm``, top level or under ``wide``), through
    :func:`wide_capture_defocus`; the pixel pitch is ``focal_length_mm / f_wide_px`` so any image
    scale is accounted for. Without those facts: zeros (the network then treats W as sharp) and
    the list of what was missing, so the caller can say so."""
    wide = meta.get("wide") if isinstance(meta.get("wide"), dict) else {}
    pick = lambda key: wide.get(key, meta.get(key))  # noqa: E731
    s, n, f_mm = pick("focus_distance_m"), pick("f_number"), pick("focal_length_mm")
    missing = []
    if (units or "").strip().lower() not in METRIC_DISPARITY_UNITS:
        missing.append(f"disparity in 1/m (meta.json disparity.units is {units or 'not given'})")
    for key, val in (("focus_distance_m", s), ("f_number", n), ("focal_length_mm", f_mm)):
        if not val:
            missing.append(f"meta.json {key}")
    if not f_wide_px:
        missing.append("the wide camera's focal length in pixels")
    if missing:
        return np.zeros(disp.shape, np.float32), {"estimate": "zero (W treated as sharp)", "missing": missing}
    out, rec = wide_capture_defocus(disp, focal_length_mm=float(f_mm), f_number=float(n),
                                    pixel_pitch_um=float(f_mm) * 1e3 / float(f_wide_px),
                                    focus_distance_m=float(s))
    rec["estimate"] = "thin lens from metric disparity and meta.json"
    return out, rec
