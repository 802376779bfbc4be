"""Camera profiles as data (``calibration/cameras.json``, or any JSON file of the same shape).

A profile says how depth becomes a signed CoC in pixels and how the sensor writes its files
(channels, bit depth, black and white level), so the renderer and the writers share one truth.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from calibration import optics
from core.errors import UserError

PROFILES_FILE = Path(__file__).with_name("cameras.json")


class CameraError(UserError):
    """An unknown camera name or a malformed camera profile file."""


@dataclass(frozen=True)
class CameraProfile:
    name: str
    description: str
    coc_model: str  # "physical" (mm, m, um) or "rdpd-code" (RDPD generator units)
    focal_length: float  # mm for physical cameras
    f_number: float
    focus_distance: float  # m for physical cameras
    width: int
    height: int
    channels: str = "rgb"  # "rgb" or "green" (Pixel DP views)
    bit_depth: int = 16
    black_level: int = 0
    white_level: int = 65535
    distortion: tuple[float, ...] = (0.0, 0.0)
    max_coc_px: float = 40.0
    max_depth_m: float = 250.0
    depth_range_m: tuple[float, float] = (0.5, 250.0)
    pixel_pitch_um: float | None = None
    pixel_pitch_y_um: float | None = None
    extra: dict = field(default_factory=dict)

    def coc_gain_px(self, focus_distance_m: float | None = None, f_number: float | None = None) -> float:
        """K in ``r = K (1 - s/d)``: the CoC radius in pixels of a point at infinity."""
        s = self.focus_distance if focus_distance_m is None else focus_distance_m
        n = self.f_number if f_number is None else f_number
        if self.coc_model == "rdpd-code":
            f = self.focal_length
            return (f * s / (s - f)) * (f / n) / s
        return optics.coc_gain_mm(self.focal_length, n, s * 1000.0) / (self.pixel_pitch_um * 1e-3)

    def coc_px(self, depth_m: np.ndarray | float, *, focus_distance_m: float | None = None,
               f_number: float | None = None, scale: float = 1.0, quantise: bool | None = None) -> np.ndarray:
        """Signed CoC radius in pixels (seed 004, eq. 1), clipped to +-max_coc_px.

        ``scale`` is the render scale relative to the native sensor (0.5 = half resolution).
        RDPD-code cameras round to whole pixels like RDPD's generator (``quantise`` overrides).
        """
        d = np.asarray(depth_m, dtype=np.float64)
        if np.any(~np.isfinite(d)) or np.any(d <= 0):
            raise CameraError(f"camera {self.name}: depth must be finite and > 0")
        d = np.minimum(d, self.max_depth_m)
        s = self.focus_distance if focus_distance_m is None else focus_distance_m
        r = self.coc_gain_px(s, f_number) * (d - s) / d * scale
        if quantise if quantise is not None else self.coc_model == "rdpd-code":
            r = np.round(r)
        return np.clip(r, -self.max_coc_px, self.max_coc_px)

    def depth_for_coc(self, coc_px: float, scale: float = 1.0) -> float:
        """The depth (m) whose signed CoC is ``coc_px``: inverts r = K (1 - s/d)."""
        k = self.coc_gain_px() * scale
        ratio = 1.0 - coc_px / k
        if ratio <= 0:
            return float("inf")
        return self.focus_distance / ratio

    def to_dict(self) -> dict:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "extra"}
        out["distortion"] = list(self.distortion)
        out["depth_range_m"] = list(self.depth_range_m)
        out.update(self.extra)
        return out


_KNOWN = set(CameraProfile.__dataclass_fields__)
_ALIASES = {"focal_length_mm": "focal_length", "focus_distance_m": "focus_distance"}


def _profile_from_dict(name: str, raw: dict, source: str) -> CameraProfile:
    kwargs: dict = {"name": name, "extra": {}}
    for key, value in raw.items():
        key = _ALIASES.get(key, key)
        if key in _KNOWN:
            kwargs[key] = tuple(value) if isinstance(value, list) else value
        else:
            kwargs["extra"][key] = value
    missing = {"coc_model", "focal_length", "f_number", "focus_distance", "width", "height"} - set(kwargs)
    if missing:
        raise CameraError(f"{source}: camera '{name}' lacks {sorted(missing)}")
    if kwargs["coc_model"] not in ("physical", "rdpd-code"):
        raise CameraError(f"{source}: camera '{name}' has unknown coc_model {kwargs['coc_model']!r}")
    if kwargs["coc_model"] == "physical" and not kwargs.get("pixel_pitch_um"):
        raise CameraError(f"{source}: physical camera '{name}' needs pixel_pitch_um")
    kwargs.setdefault("description", name)
    return CameraProfile(**kwargs)


@lru_cache(maxsize=8)
def load_profiles(path: str | None = None) -> tuple[dict[str, CameraProfile], dict[str, dict]]:
    """Read a camera profile file: (cameras by name, camera pairs by name)."""
    file = Path(path) if path else PROFILES_FILE
    try:
        raw = json.loads(file.read_text())
    except FileNotFoundError:
        raise CameraError(f"{file}: camera profile file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CameraError(f"{file}: not a valid JSON camera profile file ({exc})") from None
    if not isinstance(raw, dict) or "cameras" not in raw:
        raise CameraError(f"{file}: no 'cameras' table")
    cams = {n: _profile_from_dict(n, c, str(file)) for n, c in raw["cameras"].items()}
    pairs = raw.get("pairs", {})
    for pname, pair in pairs.items():
        for role in ("wide", "ultrawide"):
            if pair.get(role) not in cams:
                raise CameraError(f"{file}: pair '{pname}' names unknown {role} camera {pair.get(role)!r}")
    return cams, pairs


def camera_names() -> list[str]:
    return sorted(load_profiles()[0])


def get_camera(name: str) -> CameraProfile:
    """A camera by name (``rdpd_set1``..``rdpd_set5``, ``canon_5d4``, ``pixel4_dp``,
    ``phone_wide``, ``phone_ultrawide``), or ``path/to/file.json:name`` for a user's file."""
    path = None
    if ":" in name and name.split(":", 1)[0].endswith(".json"):
        path, name = name.split(":", 1)
    cams, _ = load_profiles(path)
    if name not in cams:
        raise CameraError(f"unknown camera '{name}'; known cameras: {', '.join(sorted(cams))}")
    return cams[name]


def get_pair(name: str = "phone_w_uw") -> dict:
    """A wide/ultra-wide pair description with the two profiles resolved."""
    cams, pairs = load_profiles()
    if name not in pairs:
        raise CameraError(f"unknown camera pair '{name}'; known pairs: {', '.join(sorted(pairs))}")
    pair = dict(pairs[name])
    pair["wide"], pair["ultrawide"] = cams[pair["wide"]], cams[pair["ultrawide"]]
    return pair


RDPD_CAMERA_SETS = tuple(f"rdpd_set{i}" for i in range(1, 6))
