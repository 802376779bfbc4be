"""Shared pieces of the capture readers: the error type, the ``Capture`` record, safe image
decoding and the levels (bit depth, black and white level) of 16-bit sensor data: each layout's
facts, the caller's overrides on top, and every remaining guess named with its source."""
from __future__ import annotations

import os
from contextlib import contextmanager
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
    (``disparity``); ``record`` says what was detected and what was assumed; ``processing``
    lists what was done to the values, appended by each step as it happens (``run.json``)."""

    kind: str
    path: Path
    arrays: dict[str, np.ndarray]
    record: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)
    processing: list = field(default_factory=list)
    transfer: str = "linear"  # "srgb": images sRGB-encoded as stored (iPhone, DPDD); raw DP views are linear

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
        sizes = []
        for name, a in self.arrays.items():
            h, w = a.shape[:2]
            new_h = int(round(h * aspect))
            interp = cv2.INTER_NEAREST if a.dtype == bool else cv2.INTER_LINEAR
            out[name] = cv2.resize(a, (w, new_h), interpolation=interp)
            sizes.append(f"{name} {w}x{h} -> {w}x{new_h}")
        rec = dict(self.record)
        rec.update(pixel_aspect_y_over_x=1.0, square_pixels_resampled=f"vertical x{aspect:g} (linear), "
                   "columns unchanged: horizontal disparity in px is preserved", size_before=list(
                       next(iter(self.arrays.values())).shape[:2]))
        step = (f"resampled to square pixels: vertical x{aspect:g} (linear), columns unchanged "
                f"({'; '.join(sizes)})")
        return Capture(self.kind, self.path, out, rec, dict(self.meta), [*self.processing, step], self.transfer)

    def summary(self) -> list[tuple[str, str]]:
        """(key, value) rows for a table: arrays (shape, range) then the record."""
        rows = []
        for name, a in self.arrays.items():
            finite = a[np.isfinite(a)] if a.dtype.kind == "f" else a
            rng = f"[{float(finite.min()):.4g}, {float(finite.max()):.4g}]" if finite.size else "empty"
            rows.append((name, f"{'x'.join(map(str, a.shape))} {a.dtype} {rng}"))
        for key, value in self.record.items():
            if key == "guesses":
                rows += [("GUESS", g) for g in value] or [("guesses", "none: every level is fixed by the format "
                                                           "or given")]
                continue
            rows.append((key, str(value)))
        rows += [("processing", step) for step in self.processing]
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


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def check_png_structure(path: Path, data: bytes, what: str) -> None:
    """Walk a PNG's chunks (lengths, CRCs, IEND) so that a truncated or corrupt file is refused
    with one clear message before libpng sees it (libpng would print its own line to stderr)."""
    import zlib

    if data[:8] != PNG_SIGNATURE:
        raise CaptureError(f"{path}: {what} is not a PNG (bad signature)")
    pos = 8
    while True:
        if pos + 8 > len(data):
            raise CaptureError(f"{path}: {what} is truncated (PNG ends at byte {len(data)} inside a chunk header, "
                               "no IEND chunk)")
        length = int.from_bytes(data[pos:pos + 4], "big")
        kind = data[pos + 4:pos + 8]
        end = pos + 12 + length
        if not kind.isalpha():
            raise CaptureError(f"{path}: {what} is corrupt (no valid PNG chunk at byte {pos})")
        if end > len(data):
            raise CaptureError(f"{path}: {what} is truncated ({kind.decode('latin-1')} chunk at byte {pos} needs "
                               f"{length} bytes, the file ends at byte {len(data)})")
        if zlib.crc32(data[pos + 4:pos + 8 + length]) != int.from_bytes(data[end - 4:end], "big"):
            raise CaptureError(f"{path}: {what} is corrupt (CRC mismatch in the {kind.decode('latin-1')} chunk at "
                               f"byte {pos})")
        if kind == b"IEND":
            return
        pos = end


@contextmanager
def quiet_stderr(messages: list):
    """Collect what C libraries write to file descriptor 2 (libpng's ``libpng error`` lines)
    into ``messages`` instead of the terminal."""
    import sys
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            messages += [m.strip() for m in tmp.read().decode("utf-8", "replace").splitlines() if m.strip()]


def read_image_unchanged(path: Path, what: str = "image") -> np.ndarray:
    """Decode PNG/JPEG/TIFF with OpenCV unchanged (bit depth kept, BGR -> RGB). PNGs are checked
    chunk by chunk first; the decoder's own stderr lines become part of the error."""
    path = check_file(path, what)
    raw = path.read_bytes()
    if path.suffix.lower() == ".png":
        check_png_structure(path, raw, what)
    said: list[str] = []
    with quiet_stderr(said):
        img = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None:
        detail = f": {said[-1]}" if said else ""
        raise CaptureError(f"{path}: {what} could not be decoded (corrupt or truncated file?){detail}")
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
# levels: what a layout fixes, what the caller overrides, what remains a guess


OVER_WHITE_LIMIT = 0.01  # above the white level: up to 1 % of the values are clipped (warned), more is an error


@dataclass(frozen=True)
class Layout:
    """Black/white level and bit depth of one on-disk layout, in stored (file) units, each with
    its source. ``*_guess`` marks a value the format does not fix (a nominal value). ``depth_white``
    maps a caller's ``--bit-depth K`` to the white level the layout's way."""

    family: str
    bit_depth: int
    code_scale: float  # file units per sensor code (65535/1023 for the capture app's 10-bit scaling)
    black: float
    white: float
    black_source: str
    white_source: str
    depth_source: str
    black_guess: bool = False
    white_guess: bool = False
    depth_guess: bool = False
    depth_white: object = None  # callable (K, black) -> white; None: white is 2^K - 1
    container_max: float = 65535.0


@dataclass
class Encoding:
    bit_depth: int  # bits of the sensor data
    scale: float  # file units per sensor code
    black_level: float  # in stored (file) units
    white_level: float  # in stored (file) units
    sources: dict = field(default_factory=dict)  # bit_depth / black_level / white_level -> where it came from
    guesses: list = field(default_factory=list)  # values nothing fixed (each says its source)
    warnings: list = field(default_factory=list)

    def normalise(self, values: np.ndarray) -> np.ndarray:
        x = (values.astype(np.float32) - np.float32(self.black_level)) / np.float32(self.white_level - self.black_level)
        return np.clip(x, 0.0, 1.0)

    def describe(self) -> str:
        """The normalisation as one processing step (sources in ``level_sources``)."""
        guess = lambda k: " (a guess)" if any(g.startswith(k) for g in self.guesses) else ""  # noqa: E731
        return (f"(value - {self.black_level:g}) / {self.white_level - self.black_level:g}, clipped to [0, 1]: "
                f"black level {self.black_level:g}{guess('black_level')}, white level {self.white_level:g}"
                f"{guess('white_level')}")

    def to_record(self) -> dict:
        return {"bit_depth": self.bit_depth, "code_scale": round(self.scale, 4),
                "black_level": round(self.black_level, 2), "white_level": round(self.white_level, 2),
                "black_level_code": round(self.black_level / self.scale, 2),
                "white_level_code": round(self.white_level / self.scale, 2), "level_sources": dict(self.sources),
                "guesses": list(self.guesses)}


def check_level_overrides(black_level=None, white_level=None, bit_depth=None, where: str = "") -> None:
    """Reject impossible ``--black-level/--white-level/--bit-depth`` before any file is read."""
    pre = f"{where}: " if where else ""
    if bit_depth is not None and not (isinstance(bit_depth, (int, np.integer)) and 1 <= int(bit_depth) <= 16):
        raise CaptureError(f"{pre}--bit-depth must be an integer from 1 to 16, got {bit_depth!r}")
    for name, v in (("--black-level", black_level), ("--white-level", white_level)):
        if v is not None and not (np.isfinite(float(v)) and 0 <= float(v) <= 65535):
            raise CaptureError(f"{pre}{name} must be within [0, 65535] (stored 16-bit units), got {v!r}")
    if black_level is not None and white_level is not None and float(black_level) >= float(white_level):
        raise CaptureError(f"{pre}--black-level {black_level:g} must be below --white-level {white_level:g}")


def apply_layout(values: np.ndarray, path: Path, layout: Layout, *, black_level=None, white_level=None,
                 bit_depth=None, override_source: str | dict = "given by caller") -> Encoding:
    """The encoding of ``values`` (file units): the layout's facts, the caller's overrides on top.
    Nothing is inferred from the data: a dark capture and a bright one get the same scale. Values
    above the white level: up to 1 % are clipped with a warning, more is a :class:`CaptureError`.
    ``override_source``: where the overrides came from (one text, or one per option name)."""
    said = lambda k: override_source.get(k, "given by caller") if isinstance(override_source, dict) else override_source  # noqa: E731
    check_level_overrides(black_level, white_level, bit_depth, str(path))
    if values.dtype != np.uint16:
        raise CaptureError(f"{path}: {values.dtype.itemsize * 8}-bit data; {layout.family} captures are 16-bit")
    depth, scale = layout.bit_depth, layout.code_scale
    black, white = layout.black, layout.white
    sources = {"bit_depth": layout.depth_source, "black_level": layout.black_source, "white_level": layout.white_source}
    guessed = {"bit_depth": layout.depth_guess, "black_level": layout.black_guess, "white_level": layout.white_guess}
    if black_level is not None:
        black, sources["black_level"], guessed["black_level"] = float(black_level), said("black_level"), False
    if bit_depth is not None:
        depth, sources["bit_depth"], guessed["bit_depth"] = int(bit_depth), said("bit_depth"), False
        if white_level is None:
            white = float(layout.depth_white(depth, black) if layout.depth_white else 2 ** depth - 1)
            sources["white_level"], guessed["white_level"] = f"from bit depth {depth} ({said('bit_depth')})", False
    if white_level is not None:
        white, sources["white_level"], guessed["white_level"] = float(white_level), said("white_level"), False
    if white <= black:
        raise CaptureError(f"{path}: white level {white:g} ({sources['white_level']}) is not above the black level "
                           f"{black:g} ({sources['black_level']})")
    if white > layout.container_max:
        raise CaptureError(f"{path}: white level {white:g} ({sources['white_level']}) is above the largest value "
                           f"the file can hold ({layout.container_max:g})")
    guesses = [f"{k} {v:g}: {sources[k]}" for k, v in (("bit_depth", depth), ("black_level", black),
                                                       ("white_level", white)) if guessed[k]]
    warnings: list[str] = []
    over = int(np.count_nonzero(values > white))
    if over:
        frac = over / values.size
        vmax = int(values.max())
        if frac > OVER_WHITE_LIMIT:
            raise CaptureError(f"{path}: {100 * frac:.1f} % of the values (up to {vmax}) are above the white level "
                               f"{white:g} ({sources['white_level']}): not a {layout.family} file, or give "
                               "--white-level/--bit-depth")
        warnings.append(f"{over} values ({100 * frac:.3f} %, up to {vmax}) above the white level {white:g}: clipped to 1")
    sample = values.ravel()[:: max(1, values.size // 200_000)]
    below = float(np.mean(sample < black / 2)) if black > 0 else 0.0
    if below > 0.05:
        warnings.append(f"{100 * below:.0f} % of the values are below half the black level {black:g}: already "
                        "black-subtracted? (give --black-level 0)")
    return Encoding(depth, scale, black, white, sources, guesses, warnings)
