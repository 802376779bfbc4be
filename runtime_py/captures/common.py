"""Shared pieces of the capture readers: the error type, the ``Capture`` record, safe image
decoding and the encoding detection (bit depth, black and white level) of 16-bit sensor data."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from core.errors import UserError


class CaptureError(UserError):
    """A capture that cannot be read: names the file and the problem."""


@dataclass
class Capture:
    """What a reader found. ``arrays`` holds float32 images in [0, 1] (``left``/``right`` for DP,
    ``wide``/``ultrawide`` for W/UW, RGB HxWx3 or grey HxW) and maps in their own units
    (``disparity``); ``record`` says what was detected and what was assumed."""

    kind: str
    path: Path
    arrays: dict[str, np.ndarray]
    record: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    def __getattr__(self, name: str):
        arrays = self.__dict__.get("arrays", {})
        if name in arrays:
            return arrays[name]
        raise AttributeError(f"{self.kind} capture has no {name!r} (has {sorted(arrays)})")

    def to_square_pixels(self) -> "Capture":
        """Resample anisotropic DP views (Pixel: 2x horizontal, 4x vertical binning) to square
        pixels by stretching vertically by the pixel aspect ratio; columns, and therefore the
        horizontal DP disparity in pixels, are unchanged. A no-op for square-pixel captures."""
        aspect = float(self.record.get("pixel_aspect_y_over_x", 1.0))
        if aspect == 1.0:
            return self
        out = {}
        for name, a in self.arrays.items():
            h, w = a.shape[:2]
            new_h = int(round(h * aspect))
            interp = cv2.INTER_NEAREST if a.dtype == bool else cv2.INTER_LINEAR
            out[name] = cv2.resize(a, (w, new_h), interpolation=interp)
        rec = dict(self.record)
        rec.update(pixel_aspect_y_over_x=1.0, square_pixels_resampled=f"vertical x{aspect:g} (linear), "
                   "columns unchanged: horizontal disparity in px is preserved", size_before=list(
                       next(iter(self.arrays.values())).shape[:2]))
        return Capture(self.kind, self.path, out, rec, dict(self.meta))

    def summary(self) -> list[tuple[str, str]]:
        """(key, value) rows for a table: arrays (shape, range) then the record."""
        rows = []
        for name, a in self.arrays.items():
            finite = a[np.isfinite(a)] if a.dtype.kind == "f" else a
            rng = f"[{float(finite.min()):.4g}, {float(finite.max()):.4g}]" if finite.size else "empty"
            rows.append((name, f"{'x'.join(map(str, a.shape))} {a.dtype} {rng}"))
        for key, value in self.record.items():
            rows.append((key, str(value)))
        return rows


# --------------------------------------------------------------------------------------------
# decoding


def check_file(path: Path, what: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise CaptureError(f"{path}: {what} not found")
    if not path.is_file():
        raise CaptureError(f"{path}: {what} is not a file")
    if path.stat().st_size == 0:
        raise CaptureError(f"{path}: {what} is empty (0 bytes)")
    return path


def read_image_unchanged(path: Path, what: str = "image") -> np.ndarray:
    """Decode PNG/JPEG/TIFF with OpenCV unchanged (bit depth kept, BGR -> RGB)."""
    path = check_file(path, what)
    data = np.fromfile(str(path), np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise CaptureError(f"{path}: {what} could not be decoded (corrupt or truncated file?)")
    if path.suffix.lower() == ".png" and b"IEND" not in data[-16:].tobytes():
        raise CaptureError(f"{path}: {what} is truncated (PNG has no IEND chunk)")
    if img.ndim == 3 and img.shape[2] == 4:
        img = img[..., :3]
    if img.ndim == 3 and img.shape[2] == 3:
        img = np.ascontiguousarray(img[..., ::-1])
    return img


def read_pgm(path: Path) -> tuple[np.ndarray, dict]:
    """Binary PGM (P5): 8-bit or 16-bit big-endian samples. Returns (values, header)."""
    path = check_file(path, "PGM file")
    raw = path.read_bytes()
    if raw[:2] != b"P5":
        raise CaptureError(f"{path}: not a binary PGM (magic {raw[:2]!r}, expected b'P5')")
    fields, pos = [], 2
    while len(fields) < 3:
        while pos < len(raw) and raw[pos:pos + 1].isspace():
            pos += 1
        if raw[pos:pos + 1] == b"#":  # comment to end of line
            while pos < len(raw) and raw[pos:pos + 1] not in (b"\n", b"\r"):
                pos += 1
            continue
        start = pos
        while pos < len(raw) and raw[pos:pos + 1].isdigit():
            pos += 1
        if start == pos:
            raise CaptureError(f"{path}: malformed PGM header")
        fields.append(int(raw[start:pos]))
    pos += 1  # one whitespace byte after maxval
    w, h, maxval = fields
    if w <= 0 or h <= 0 or not 0 < maxval < 65536:
        raise CaptureError(f"{path}: bad PGM header (width {w}, height {h}, maxval {maxval})")
    bps = 2 if maxval > 255 else 1
    need = w * h * bps
    have = len(raw) - pos
    if have < need:
        raise CaptureError(f"{path}: truncated PGM: {w}x{h} at {8 * bps} bits needs {need} bytes of data, "
                           f"file has {have}")
    values = np.frombuffer(raw, ">u2" if bps == 2 else np.uint8, w * h, pos).reshape(h, w)
    return values.astype(np.uint16 if bps == 2 else np.uint8), {"width": w, "height": h, "maxval": maxval,
                                                                 "bytes_per_sample": bps}


def check_finite(a: np.ndarray, path: Path, what: str) -> None:
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        n = int((~np.isfinite(a)).sum())
        raise CaptureError(f"{path}: {what} holds {n} NaN/inf values")


# --------------------------------------------------------------------------------------------
# encoding detection


@dataclass
class Encoding:
    bit_depth: int  # bits of the sensor data
    scale: float  # 16-bit value per sensor code (65535/1023 for 10-bit scaled, 16 for Garg, 1)
    black_level: float  # in stored (file) units
    white_level: float  # in stored (file) units
    notes: list = field(default_factory=list)

    def normalise(self, values: np.ndarray) -> np.ndarray:
        x = (values.astype(np.float32) - np.float32(self.black_level)) / np.float32(self.white_level - self.black_level)
        return np.clip(x, 0.0, 1.0)

    def to_record(self) -> dict:
        return {"bit_depth": self.bit_depth, "code_scale": round(self.scale, 4),
                "black_level": round(self.black_level, 2), "white_level": round(self.white_level, 2),
                "black_level_code": round(self.black_level / self.scale, 2),
                "white_level_code": round(self.white_level / self.scale, 2), "encoding_notes": self.notes}


def _is_scaled(values: np.ndarray, scale: float, tol: float = 0.02) -> bool:
    codes = values / scale
    return bool(np.all(np.abs(codes - np.round(codes)) <= tol))


def detect_encoding(values: np.ndarray, path: Path, *, nominal_black_code: float, family: str,
                    black_level: float | None = None, white_level: float | None = None,
                    bit_depth: int | None = None) -> Encoding:
    """Bit depth, code scale, black and white level of 16-bit sensor values (file units).

    Order: explicit overrides; scaled data (every value a multiple of 65535/(2^k-1), or of 16 for
    Garg's 10-bit x16); otherwise unscaled k-bit from the maximum. Black level: the family's
    nominal code unless the histogram floor (0.01th percentile) is far below it (then 0: data
    already black-subtracted), recorded either way."""
    if values.dtype != np.uint16:
        raise CaptureError(f"{path}: {values.dtype.itemsize * 8}-bit data; {family} captures are 16-bit")
    v = values.astype(np.float64)
    sample = v.ravel()[:: max(1, v.size // 200_000)]
    vmax = float(v.max())
    notes: list[str] = []
    scale = 1.0
    if bit_depth is not None:
        if bit_depth not in (8, 10, 12, 14, 16):
            raise CaptureError(f"{path}: unsupported bit_depth override {bit_depth}")
        scale = 65535.0 / (2 ** bit_depth - 1) if _is_scaled(sample, 65535.0 / (2 ** bit_depth - 1)) and bit_depth < 16 else 1.0
        depth = bit_depth
        notes.append(f"bit depth {bit_depth} given by caller")
    else:
        depth = 16
        garg = vmax > 0 and _is_scaled(sample, 16.0, 0.0) and vmax <= 1023 * 16
        for k in (10, 12, 14):
            if vmax > 0 and not (garg and family.startswith("Garg")) and _is_scaled(sample, 65535.0 / (2 ** k - 1)):
                depth, scale = k, 65535.0 / (2 ** k - 1)
                notes.append(f"values are multiples of {scale:.4f}: {k}-bit data scaled to 16 bits")
                break
        else:
            if garg:
                depth, scale = 10, 16.0
                notes.append("values are multiples of 16 and <= 16368: 10-bit data scaled by 16 (Garg layout)")
            else:
                black_guess = nominal_black_code
                for k in (10, 12, 14):
                    if vmax <= 2 ** k - 1 + black_guess:
                        depth = k
                        break
                notes.append(f"unscaled data, maximum {vmax:.0f}: assumed {depth}-bit"
                             + (f" plus black level {black_guess:g}" if black_guess else ""))
    max_code = 2 ** depth - 1
    floor_code = float(np.percentile(sample, 0.01)) / scale
    if black_level is not None:
        black = float(black_level)
        notes.append(f"black level {black:g} given by caller (file units)")
    else:
        black_code = nominal_black_code
        if black_code and floor_code < 0.5 * black_code:
            notes.append(f"histogram floor {floor_code:.1f} codes is far below the nominal black level "
                         f"{black_code:g}: assumed already black-subtracted (black 0)")
            black_code = 0.0
        elif black_code:
            agree = "agrees" if floor_code <= 1.5 * black_code else "is above (no dark pixels in view)"
            notes.append(f"black level {black_code:g} codes (nominal for {family}); histogram floor "
                         f"{floor_code:.1f} codes {agree}")
        black = black_code * scale
    if white_level is not None:
        white = float(white_level)
        notes.append(f"white level {white:g} given by caller (file units)")
    elif scale != 1.0:
        white = max_code * scale  # the sensor's full scale (e.g. 1023 -> 65535)
    else:
        white = black + max_code if black and depth == 14 else float(max_code)  # Xin et al.: (x-1024)/(2^14-1)
    if white <= black:
        raise CaptureError(f"{path}: white level {white:g} <= black level {black:g} for {depth}-bit data "
                           "(wrong bit_depth/black_level/white_level?)")
    if vmax > white * 1.001 + 0.5:
        raise CaptureError(f"{path}: values up to {vmax:.0f} exceed the white level {white:.0f} of "
                           f"{depth}-bit data (wrong bit_depth/white_level?)")
    return Encoding(depth, scale, black, white, notes)
