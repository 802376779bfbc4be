"""iPhone captures: portrait HEIC with a disparity auxiliary image (pillow-heif), and the UW+W
bundle folder (``wide.*``, ``ultrawide.*``, optional ``disparity.*``, ``meta.json``).

Disparity decoding (CAPTURES.md): 8-bit codes of a float disparity,
``disparity = d_min + code / 255 * (d_max - d_min)`` (1/m, relative), the range from the HEVC
depth representation info (``d_min``/``d_max``) or XMP ``apdi:FloatMinValue/FloatMaxValue``.
Colour images are kept as stored (sRGB-encoded), divided by 2^bits - 1.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import cv2
import numpy as np

from core.jsonfile import read_json
from runtime_py.captures.common import Capture, CaptureError, check_file, check_finite, read_image_unchanged

IMAGE_EXT = (".heic", ".heif", ".jpg", ".jpeg", ".png", ".tif", ".tiff")
DISPARITY_EXT = (".png", ".npy", ".tif", ".tiff", ".exr")
DEPTH_REPRESENTATIONS = {0: "uniform_inverse_Z", 1: "uniform_disparity", 2: "uniform_Z", 3: "nonuniform_disparity"}


# --------------------------------------------------------------------------------------------
# XMP and disparity codes


def parse_xmp(xmp: bytes | str | None) -> dict:
    """``prefix:Name`` values of an XMP packet (attributes, elements and rdf:Seq lists) as
    {"prefix:Name": float | str | list}. Enough for Apple's ``apdi:`` depth fields."""
    if not xmp:
        return {}
    text = xmp.decode("utf-8", "replace") if isinstance(xmp, (bytes, bytearray)) else str(xmp)
    out: dict = {}

    def conv(v: str):
        try:
            return float(v)
        except ValueError:
            return v.strip()

    for key, val in re.findall(r'([A-Za-z][\w]*:[A-Za-z][\w]*)="([^"]*)"', text):
        if not key.startswith(("xmlns:", "rdf:", "x:")):
            out[key] = conv(val)
    for key, body in re.findall(r"<([A-Za-z]\w*:[A-Za-z]\w*)>(.*?)</\1>", text, flags=re.S):
        if key.startswith(("rdf:", "x:")):
            continue
        items = re.findall(r"<rdf:li[^>]*>(.*?)</rdf:li>", body, flags=re.S)
        if items:
            out[key] = [conv(i) for i in items]
        elif "<" not in body:
            out[key] = conv(body)
    return out


def disparity_from_codes(codes: np.ndarray, d_min: float, d_max: float) -> np.ndarray:
    """Stored integer codes -> float disparity: ``d_min + code / max_code * (d_max - d_min)``."""
    if not (math.isfinite(d_min) and math.isfinite(d_max)) or d_max <= d_min:
        raise CaptureError(f"disparity range [{d_min}, {d_max}] is not a valid float range")
    max_code = 255.0 if codes.dtype == np.uint8 else 65535.0
    return (np.float32(d_min) + codes.astype(np.float32) / np.float32(max_code) * np.float32(d_max - d_min)).astype(np.float32)


def intrinsics_from_xmp(x: dict) -> dict | None:
    """fx, fy, cx, cy and reference size from ``apdi:IntrinsicMatrix`` (9 values; row- or
    column-major: the principal point is whichever pair is off the diagonal's last row/column)."""
    m = x.get("apdi:IntrinsicMatrix")
    if not isinstance(m, list) or len(m) != 9:
        return None
    m = [float(v) for v in m]
    cx, cy = (m[2], m[5]) if abs(m[2]) + abs(m[5]) > abs(m[6]) + abs(m[7]) else (m[6], m[7])
    out = {"fx": m[0], "fy": m[4], "cx": cx, "cy": cy}
    for k, name in (("apdi:IntrinsicMatrixReferenceWidth", "reference_width"),
                    ("apdi:IntrinsicMatrixReferenceHeight", "reference_height"), ("apdi:PixelSize", "pixel_size_mm")):
        if isinstance(x.get(k), float):
            out[name] = x[k]
    return out


def decode_depth_item(codes: np.ndarray, info_meta: dict | None, xmp: dict) -> tuple[np.ndarray, dict]:
    """Float disparity from a depth item's codes, its representation info and XMP."""
    rec: dict = {"stored_size": f"{codes.shape[1]}x{codes.shape[0]}", "stored_dtype": str(codes.dtype)}
    meta = info_meta or {}
    rep = meta.get("representation_type")
    rep_name = DEPTH_REPRESENTATIONS.get(rep, str(rep)) if rep is not None else None
    if meta.get("d_min") is not None and meta.get("d_max") is not None:
        lo, hi, src = float(meta["d_min"]), float(meta["d_max"]), "HEVC depth representation info (d_min, d_max)"
    elif "apdi:FloatMinValue" in xmp and "apdi:FloatMaxValue" in xmp:
        lo, hi, src = float(xmp["apdi:FloatMinValue"]), float(xmp["apdi:FloatMaxValue"]), "XMP apdi:FloatMin/MaxValue"
    else:
        raise CaptureError("depth image has no float range (no d_min/d_max representation info, no XMP "
                           "apdi:FloatMinValue/FloatMaxValue): cannot decode disparity")
    if rep_name not in (None, "uniform_disparity"):
        raise CaptureError(f"depth representation {rep_name!r} is not supported (only uniform disparity)")
    disp = disparity_from_codes(codes, lo, hi)
    rec.update(range=[lo, hi], range_source=src, representation=rep_name or "uniform_disparity (assumed)",
               units="1/m (relative)", formula="d_min + code/255 * (d_max - d_min)")
    if "apdi:NativeFormat" in xmp:
        rec["native_format"] = xmp["apdi:NativeFormat"]
    return disp, rec


# --------------------------------------------------------------------------------------------
# HEIC


def _heif():
    try:
        import pillow_heif
    except ImportError as exc:  # pragma: no cover - a dependency of the project
        raise CaptureError(f"reading HEIC needs pillow-heif ({exc})") from None
    return pillow_heif


EXIF_TAGS = {"focal_length_mm": (0x920A, "EXIF FocalLength"),
             "focal_length_35mm": (0xA405, "EXIF FocalLengthIn35mmFilm"), "f_number": (0x829D, "EXIF FNumber")}


def exif_optics(exif: bytes | None) -> dict:
    """Focal length (mm, and 35 mm equivalent) and f-number from EXIF: {name: {value, source}}."""
    if not exif:
        return {}
    from PIL import Image
    from PIL.ExifTags import IFD

    try:
        tags = Image.Exif()
        tags.load(exif)
        sub = dict(tags.get_ifd(IFD.Exif))
    except (ValueError, TypeError, SyntaxError, OSError, KeyError):
        return {}
    out = {}
    for name, (tag, source) in EXIF_TAGS.items():
        value = sub.get(tag, tags.get(tag))
        try:
            value = float(value) if value is not None else None
        except (TypeError, ValueError, ZeroDivisionError):
            value = None
        if value and math.isfinite(value) and value > 0:
            out[name] = {"value": round(value, 4), "source": source}
    return out


def _primary_c(heif):
    """pillow-heif's C-level handle of the primary image (None if its layout changes)."""
    images = getattr(heif, "_images", None)
    return getattr(images[getattr(heif, "primary_index", 0)], "_c_image", None) if images else None


def _depth_status(data: bytes, heif, info: dict) -> tuple[list, list[str], list]:
    """(decoded depth images as (codes, representation info, depth item id)), reasons why depth
    items present in the file cannot be decoded, and the file's depth items (``heif_boxes``)."""
    from runtime_py.captures.heif_boxes import depth_items

    items = depth_items(data)
    raw = list(getattr(_primary_c(heif), "depth_image_list", None) or [])
    reasons = [f"libheif could not open depth image {i + 1} of {len(raw)}" for i, d in enumerate(raw) if d is None]
    decoded = []
    for n, d in enumerate(info.get("depth_images") or []):
        try:
            codes = np.asarray(d)
        except (ValueError, RuntimeError, OSError, EOFError, SyntaxError) as exc:
            reasons.append(f"depth image {n + 1}: {exc}")
            continue
        decoded.append((codes[..., 0] if codes.ndim == 3 else codes, d.info.get("metadata"),
                        items[n].id if n < len(items) else None))
    if not decoded and not reasons and items:
        kinds = ", ".join(f"item {i.id} of type {i.type!r}" for i in items)
        reasons.append(f"{kinds} ({items[0].aux_type}); the HEIF decoder (libheif via pillow-heif) does not deliver "
                       "it (an item type it cannot decode)")
    return decoded, reasons, items


def read_heic_image(path: Path) -> tuple[np.ndarray, dict, list]:
    """(RGB float32 [0, 1], info dict, decoded depth images) of a HEIC's primary image. ``info``
    gains ``depth_undecodable`` (reasons), ``depth_item_xmp`` and ``camera_intrinsic_matrix``."""
    path = check_file(path, "HEIC file")
    ph = _heif()
    try:
        heif = ph.open_heif(str(path), convert_hdr_to_8bit=False)
        arr = np.asarray(heif)
    except (ValueError, EOFError, SyntaxError, RuntimeError, OSError) as exc:
        raise CaptureError(f"{path}: HEIC could not be decoded ({exc})") from None
    bits = int(heif.info.get("bit_depth", 8))
    if arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[..., :3]
    # pillow-heif gives uint8 for 8-bit images and uint16 (values scaled to 16 bits) for 10/12-bit
    img = arr.astype(np.float32) / np.float32(255.0 if arr.dtype == np.uint8 else 65535.0)
    info = dict(heif.info)
    info["bit_depth"] = bits
    data = path.read_bytes()
    depths, reasons, items = _depth_status(data, heif, info)
    info["depth_undecodable"] = reasons
    info["depth_items"] = [f"item {i.id} ({i.type}, {i.aux_type})" for i in items]
    if depths and depths[0][2] is not None:
        from runtime_py.captures.heif_boxes import xmp_of

        info["depth_item_xmp"] = xmp_of(data, depths[0][2])
    cmin = getattr(_primary_c(heif), "camera_intrinsic_matrix", None)
    if cmin:
        info["camera_intrinsic_matrix"] = cmin
    return np.clip(img, 0, 1), info, depths


def heic_intrinsics(info: dict, xmp: dict, depth_xmp: dict, width: int) -> tuple[dict, list[str]]:
    """Intrinsics and optics of a HEIC, each value with its source: the depth item's calibration
    data (its XMP ``apdi:IntrinsicMatrix``), the primary's XMP, the HEIF ``cmin`` property, EXIF
    (focal length in mm, 35 mm equivalent, f-number); and what is missing."""
    out: dict = {}
    for where, x in (("depth item calibration data (XMP apdi:IntrinsicMatrix)", depth_xmp),
                     ("primary image XMP (apdi:IntrinsicMatrix)", xmp)):
        k = intrinsics_from_xmp(x)
        if k:
            out["matrix"] = {**k, "source": where}
            break
    cmin = info.get("camera_intrinsic_matrix")
    if "matrix" not in out and cmin:
        fx, fy, cx, cy = (float(v) for v in tuple(cmin)[:4])
        out["matrix"] = {"fx": fx, "fy": fy, "cx": cx, "cy": cy, "source": "HEIF camera intrinsic matrix (cmin)"}
    out.update(exif_optics(info.get("exif")))
    if "matrix" in out:
        ref = out["matrix"].get("reference_width", width)
        out["focal_px"] = {"value": round(out["matrix"]["fx"] * width / ref, 2),
                           "source": out["matrix"]["source"] + (f", scaled {width}/{ref:g}" if ref != width else "")}
    elif "focal_length_35mm" in out:
        f35 = out["focal_length_35mm"]["value"]
        out["focal_px"] = {"value": round(width * f35 / 36.0, 2), "source": f"EXIF 35 mm equivalent ({f35:g} mm on a "
                           "36 mm wide frame): an estimate, the principal point is not known"}
    missing = [what for n, what in (("matrix", "intrinsic matrix (no apdi:IntrinsicMatrix in the depth item's or "
                                  "primary's XMP, no HEIF cmin)"), ("focal_length_mm", "EXIF FocalLength"),
                                 ("focal_length_35mm", "EXIF FocalLengthIn35mmFilm"), ("f_number", "EXIF FNumber"),
                                 ("focal_px", "focal length in pixels")) if n not in out]
    return out, missing


def read_heic(path) -> Capture:
    """Portrait HEIC: main image as ``wide`` and, when present, the depth item as ``disparity``.
    A depth item the decoder cannot deliver is reported (``record["disparity"]``), not an error:
    what needs the disparity (``run``) refuses with that reason."""
    path = Path(path)
    img, info, depths = read_heic_image(path)
    xmp = parse_xmp(info.get("xmp"))
    depth_xmp = parse_xmp(info.get("depth_item_xmp"))
    rec = {"format": "HEIC (pillow-heif)", "files": [str(path)], "size": f"{img.shape[1]}x{img.shape[0]}",
           "bit_depth": info["bit_depth"], "colour": "as stored (sRGB-encoded)",
           "auxiliary_images": {k: len(v) for k, v in (info.get("aux") or {}).items()},
           "depth_items": info["depth_items"]}
    if any("portraiteffectsmatte" in k for k in (info.get("aux") or {})):
        rec["portrait_matte"] = "present (person matte, not disparity; not read)"
    arrays = {"wide": img}
    steps = [f"wide: stored {info['bit_depth']}-bit values / {2 ** info['bit_depth'] - 1} (sRGB-encoded as stored)"]
    disp = None
    if depths:
        codes, rep, _ = depths[0]
        try:
            disp, drec = decode_depth_item(codes, rep, {**xmp, **depth_xmp})
        except CaptureError as exc:
            info["depth_undecodable"].append(str(exc))
    if disp is not None:
        check_finite(disp, path, "disparity")
        arrays["disparity"] = disp
        rec["disparity"] = drec
        rec["disparity_range"] = [float(disp.min()), float(disp.max())]
        steps.append(f"disparity: {drec['formula']} (range from {drec['range_source']})")
    elif info["depth_undecodable"]:
        rec["disparity"] = "depth item present but cannot be decoded: " + "; ".join(info["depth_undecodable"])
    else:
        rec["disparity"] = "no depth image in this HEIC"
    intr, missing = heic_intrinsics(info, xmp, depth_xmp, img.shape[1])
    rec["intrinsics"] = intr or "none found"
    rec["intrinsics_missing"] = missing
    return Capture("iphone_heic", path, arrays, rec, {"xmp": xmp, "depth_xmp": depth_xmp}, steps, transfer="srgb")


# --------------------------------------------------------------------------------------------
# UW + W bundle


def focal_length_px(cam: dict, width: int) -> tuple[float | None, str]:
    """Focal length in pixels of an image ``width`` wide from a bundle camera entry: intrinsics
    (scaled by width / reference_width), focal_length_px, fov_deg (horizontal), or
    focal_length_35mm (36 mm wide frame)."""
    if not isinstance(cam, dict):
        return None, "no camera entry"
    k = cam.get("intrinsics")
    if k is not None:
        fx = float(np.asarray(k, dtype=np.float64).reshape(3, 3)[0, 0])
        ref = float(cam.get("intrinsics_reference_width", width))
        return fx * width / ref, "intrinsics"
    if cam.get("focal_length_px"):
        ref = float(cam.get("reference_width", width))
        return float(cam["focal_length_px"]) * width / ref, "focal_length_px"
    if cam.get("fov_deg"):
        return width / 2 / math.tan(math.radians(float(cam["fov_deg"])) / 2), "fov_deg (horizontal)"
    if cam.get("focal_length_35mm"):
        return width * float(cam["focal_length_35mm"]) / 36.0, "focal_length_35mm"
    return None, "no intrinsics, focal_length_px, fov_deg or focal_length_35mm"


def _find(folder: Path, stem: str, exts) -> Path | None:
    hits = [p for p in sorted(folder.iterdir()) if p.stem.lower() == stem and p.suffix.lower() in exts]
    return hits[0] if hits else None


def _read_colour(path: Path, what: str) -> tuple[np.ndarray, dict, list]:
    if path.suffix.lower() in (".heic", ".heif"):
        return read_heic_image(path)
    img = read_image_unchanged(path, what)
    if img.dtype not in (np.uint8, np.uint16):
        raise CaptureError(f"{path}: {what} has unsupported sample type {img.dtype}")
    bits = 8 if img.dtype == np.uint8 else 16
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    return img.astype(np.float32) / np.float32(2 ** bits - 1), {"bit_depth": bits}, []


def _read_disparity(path: Path, meta: dict, missing: list) -> tuple[np.ndarray | None, dict]:
    dmeta = meta.get("disparity") or {}
    rec = {"file": path.name}
    if path.suffix.lower() == ".npy":
        try:
            disp = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise CaptureError(f"{path}: not a readable .npy array ({exc})") from None
        if disp.ndim == 3 and disp.shape[2] == 1:
            disp = disp[..., 0]
        if disp.ndim != 2 or disp.dtype.kind not in "fiu":
            raise CaptureError(f"{path}: disparity must be a 2-D numeric array, got {disp.dtype} {disp.shape}")
        disp = disp.astype(np.float32)
        rec["encoding"] = "float array as stored"
    else:
        flags = cv2.IMREAD_UNCHANGED | (cv2.IMREAD_ANYDEPTH if path.suffix.lower() == ".exr" else 0)
        check_file(path, "disparity file")
        raw = cv2.imdecode(np.fromfile(str(path), np.uint8), flags)
        if raw is None:
            raise CaptureError(f"{path}: disparity image could not be decoded (corrupt or truncated?)")
        if raw.ndim == 3:
            raise CaptureError(f"{path}: disparity image has {raw.shape[2]} channels, expected 1")
        if raw.dtype.kind == "f":
            disp = raw.astype(np.float32)
            rec["encoding"] = "float image as stored"
        else:
            max_code = float(np.iinfo(raw.dtype).max)
            if "range" in dmeta:
                lo, hi = map(float, dmeta["range"])
                disp = disparity_from_codes(raw, lo, hi)
                rec["encoding"] = f"{raw.dtype.itemsize * 8}-bit codes -> range [{lo:g}, {hi:g}]"
            elif "scale" in dmeta:
                disp = raw.astype(np.float32) * np.float32(dmeta["scale"]) + np.float32(dmeta.get("offset", 0.0))
                rec["encoding"] = f"code * {dmeta['scale']} + {dmeta.get('offset', 0.0)}"
            else:
                missing.append(f"meta.json disparity.range or disparity.scale (to decode {path.name}, "
                               f"{raw.dtype.itemsize * 8}-bit codes up to {max_code:.0f})")
                return None, rec
    check_finite(disp, path, "disparity")
    rec["units"] = dmeta.get("units", "unknown (meta.json disparity.units not given)")
    return disp, rec


def read_bundle(path) -> Capture:
    """UW + W capture folder. Raises :class:`CaptureError` listing everything required that is
    missing; optional gaps (focal lengths, disparity, white balance) go to ``record['warnings']``."""
    folder = Path(path)
    if not folder.is_dir():
        raise CaptureError(f"{folder}: bundle folder not found")
    wide_p, uw_p = _find(folder, "wide", IMAGE_EXT), _find(folder, "ultrawide", IMAGE_EXT)
    disp_p, meta_p = _find(folder, "disparity", DISPARITY_EXT), folder / "meta.json"
    missing: list[str] = []
    warnings: list[str] = []
    if wide_p is None:
        missing.append(f"wide image (wide.{{{','.join(e[1:] for e in IMAGE_EXT)}}})")
    if uw_p is None:
        missing.append(f"ultra-wide image (ultrawide.{{{','.join(e[1:] for e in IMAGE_EXT)}}})")
    meta: dict = {}
    if not meta_p.is_file():
        missing.append("meta.json")
    else:
        meta = read_json(meta_p, CaptureError)
        if not isinstance(meta, dict):
            raise CaptureError(f"{meta_p}: must hold a JSON object")
    if missing:
        raise CaptureError(f"{folder}: incomplete UW+W bundle, missing: " + "; ".join(missing))
    wide, winfo, wdepths = _read_colour(wide_p, "wide image")
    uw, _, _ = _read_colour(uw_p, "ultra-wide image")
    arrays = {"wide": wide, "ultrawide": uw}
    rec: dict = {"format": "UW+W bundle folder", "files": [p.name for p in (wide_p, uw_p, disp_p, meta_p) if p],
                 "wide_size": f"{wide.shape[1]}x{wide.shape[0]}", "ultrawide_size": f"{uw.shape[1]}x{uw.shape[0]}",
                 "bit_depth": winfo.get("bit_depth"), "colour": "as stored (sRGB-encoded)"}
    for role, img in (("wide", wide), ("ultrawide", uw)):
        f, how = focal_length_px(meta.get(role, {}), img.shape[1])
        rec[f"{role}_focal_px"] = None if f is None else round(f, 2)
        if f is None:
            warnings.append(f"meta.json {role}: {how}; alignment falls back to a feature homography")
        else:
            rec[f"{role}_focal_source"] = how
    if rec["wide_focal_px"] and rec["ultrawide_focal_px"]:
        rec["fov_ratio"] = round(rec["wide_focal_px"] / rec["ultrawide_focal_px"] * uw.shape[1] / wide.shape[1], 4)
    for key in ("baseline_mm", "white_balance", "device", "focus_distance_m", "f_number"):
        if key in meta:
            rec[key] = meta[key]
    for key in ("focus_distance_m", "f_number"):
        if key not in meta and key not in (meta.get("wide") or {}):
            warnings.append(f"meta.json lacks {key} (needed for the W capture's own defocus estimate)")
    if "white_balance" not in meta:
        warnings.append("meta.json lacks white_balance (colour matching will fit gains from the images)")
    disp = None
    if disp_p is not None:
        disp, drec = _read_disparity(disp_p, meta, missing)
        rec["disparity"] = drec
    elif wdepths or winfo.get("depth_undecodable"):
        try:
            if not wdepths:
                raise CaptureError("; ".join(winfo["depth_undecodable"]))
            codes, rep, _ = wdepths[0]
            disp, drec = decode_depth_item(codes, rep, {**parse_xmp(winfo.get("xmp")),
                                                        **parse_xmp(winfo.get("depth_item_xmp"))})
            rec["disparity"] = {"file": f"{wide_p.name} (depth item)", **drec}
        except CaptureError as exc:
            warnings.append(f"{wide_p.name}: depth item present but cannot be decoded: {exc}")
    else:
        warnings.append("no disparity (disparity.{png,npy,tif,exr} or a depth item in wide.heic)")
    if missing:
        raise CaptureError(f"{folder}: incomplete UW+W bundle, missing: " + "; ".join(missing))
    if disp is not None:
        hw, dw = wide.shape[:2], disp.shape
        if abs(dw[1] / dw[0] - hw[1] / hw[0]) > 0.01 * hw[1] / hw[0]:
            raise CaptureError(f"{folder / rec['disparity']['file'].split(' ')[0]}: disparity is {dw[1]}x{dw[0]}, "
                               f"its aspect ratio differs from the wide image's {hw[1]}x{hw[0]}")
        if dw != hw:
            disp = cv2.resize(disp, (hw[1], hw[0]), interpolation=cv2.INTER_LINEAR)
            rec["disparity"]["resampled"] = f"{dw[1]}x{dw[0]} -> {hw[1]}x{hw[0]} (linear)"
        arrays["disparity"] = disp
        rec["disparity_range"] = [float(disp.min()), float(disp.max())]
    rec["warnings"] = warnings
    return Capture("bundle", folder, arrays, rec, meta, transfer="srgb")
