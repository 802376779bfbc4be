"""Capture readers: Pixel DP (capture-app PGM, Xin et al. 14-bit PNG, Garg et al. layout), DPDD
folders, iPhone HEIC with disparity and UW+W bundle folders. ``open_capture(path)`` picks the
reader from the path; every reader returns float32 arrays in [0, 1] and a record of what it
detected and assumed, and raises :class:`CaptureError` (a ``ValueError``) naming file and problem."""
from __future__ import annotations

from pathlib import Path

from runtime_py.captures.common import Capture, CaptureError, Layout, apply_layout, check_level_overrides, read_pgm
from runtime_py.captures.dpdd import DPDDDataset, find_splits
from runtime_py.captures.iphone import (decode_depth_item, disparity_from_codes, focal_length_px, parse_xmp,
                                        read_bundle, read_heic)
from runtime_py.captures.pixel import GARG_RE, read_garg, read_pixel_pgm, read_pixel_png

__all__ = ["Capture", "CaptureError", "DPDDDataset", "open_capture", "read_pixel_pgm", "read_pixel_png",
           "read_garg", "read_heic", "read_bundle", "Layout", "apply_layout", "check_level_overrides", "read_pgm", "parse_xmp",
           "disparity_from_codes", "decode_depth_item", "focal_length_px", "detect_format"]


def detect_format(path) -> str:
    """Which reader handles ``path``: pixel_pgm, pixel_png, garg, dpdd, iphone_heic or bundle."""
    p = Path(path)
    if not p.exists():
        raise CaptureError(f"{p}: no such file or folder")
    if p.is_dir():
        names = {c.name.lower() for c in p.iterdir()}
        stems = {Path(n).stem for n in names}
        if "meta.json" in names or "wide" in stems or "ultrawide" in stems:
            return "bundle"
        if find_splits(p):
            return "dpdd"
        if any(GARG_RE.search(n) for n in names) or (p / "raw_left_pd").is_dir():
            return "garg"
        if any(n.endswith("_left.pgm") for n in names):
            return "pixel_pgm"
        if any(n.endswith("_left.png") for n in names):
            return "pixel_png"
        raise CaptureError(f"{p}: folder holds no known capture (a UW+W bundle with meta.json, DPDD "
                           "<split>_c/_l/_r folders, Garg raw_left_pd, *_left.pgm or *_left.png pairs)")
    name, suffix = p.name.lower(), p.suffix.lower()
    if suffix == ".pgm":
        return "pixel_pgm"
    if suffix in (".heic", ".heif"):
        return "iphone_heic"
    if GARG_RE.search(p.name):
        return "garg"
    if suffix == ".png" and p.parent.name in ("source", "target") and p.parent.parent.name[-2:] in ("_c", "_l", "_r"):
        return "dpdd"
    if suffix == ".png" and (name.endswith("_left.png") or name.endswith("_right.png")):
        return "pixel_png"
    raise CaptureError(f"{p}: unrecognised capture file (expected *_left/_right.pgm, NNN_left/_right.png, "
                       "result_pd_left_<view>.png, a DPDD PNG, .heic, or a folder)")


def _first(folder: Path, pattern: str) -> Path:
    hits = sorted(folder.glob(pattern))
    if not hits:
        raise CaptureError(f"{folder}: no {pattern}")
    return hits[0]


def open_capture(path, **options) -> Capture:
    """Read any supported capture. Options go to the reader (``black_level``, ``white_level``,
    ``bit_depth`` (DP sensor data only: validated here), ``vignetting``, ``view``, ``split``,
    ``index``; None means "not given"). A folder of several DP pairs
    opens its first pair (sorted); a DPDD root opens sample ``index`` (default 0)."""
    p = Path(path)
    kind = detect_format(p)
    levels = {k: options.get(k) for k in ("black_level", "white_level", "bit_depth") if options.get(k) is not None}
    check_level_overrides(**levels, where=str(p))
    if levels and kind not in ("pixel_pgm", "pixel_png", "garg"):
        given = ", ".join("--" + k.replace("_", "-") for k in levels)
        raise CaptureError(f"{p}: {given} apply to Pixel and Garg dual-pixel captures (16-bit sensor data), "
                           f"not to a {kind} capture")
    options = {k: v for k, v in options.items() if v is not None}
    if kind == "bundle":
        return read_bundle(p)
    if kind == "iphone_heic":
        return read_heic(p)
    if kind == "dpdd":
        index = options.pop("index", 0)
        if p.is_dir():
            return DPDDDataset(p, options.get("split")).capture(index)
        root, split = p.parent.parent.parent, p.parent.parent.name[:-2]
        ds = DPDDDataset(root, split)
        for listing in (ds.left, ds.right, ds.combined, ds.target):
            if p.resolve() in [q.resolve() for q in listing]:
                return ds.capture([q.resolve() for q in listing].index(p.resolve()))
        raise CaptureError(f"{p}: not found in the DPDD split {split!r} of {root}")
    if kind == "garg":
        target = p
        if p.is_dir() and (p / "raw_left_pd").is_dir():
            target = sorted(d for d in (p / "raw_left_pd").iterdir() if d.is_dir())[0]
        return read_garg(target, **options)
    if kind == "pixel_pgm":
        return read_pixel_pgm(_first(p, "*_left.pgm") if p.is_dir() else p, **options)
    return read_pixel_png(_first(p, "*_left.png") if p.is_dir() else p, **options)
