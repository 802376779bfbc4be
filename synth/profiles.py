"""Data profiles: the distribution a training pool or test split is drawn from (one home).

A profile fixes what a sample looks like as a device records it: the camera (its optics give
the blur range), the blur of the strongest front object, the noise model and level, the share
of green-only (grey) captures, the exposure range and the scenes (procedural dead leaves, or
photo-textured layers with larger smooth regions).

- ``default``: the engine's original distribution (RDPD's five camera sets, front blur of
  4-20 px CoC, multiplicative noise, colour, dense dead leaves and slanted planes).
- ``phone``: what a phone records (issue 13): for DP models the Pixel 4 DP optics (focus at
  0.3-1 m: front blur 2-9 px CoC, back blur at most about 7 px, i.e. a DP disparity of a few px), half of
  the samples green-only as the Pixel DP views are (copied to three channels, as the capture
  reader does), Poisson-Gaussian sensor noise with 14-bit quantisation, exposures from dark to
  bright (real raw captures are linear and often dark), and scenes of a few large photo-textured
  layers (``scenes.photo_layers``). DC2 keeps the phone W/UW pair and gets the same scenes.
"""
from __future__ import annotations

from dataclasses import dataclass

from core.errors import UserError


class ProfileError(UserError):
    """Unknown data profile."""


@dataclass(frozen=True)
class DataProfile:
    name: str
    description: str
    dp_camera: str | None  # None: one of RDPD's camera sets per sample
    front_blur_px: tuple[float, float] | None  # strongest front CoC (px); None: fraction of max
    front_blur_fraction: tuple[float, float]  # used when front_blur_px is None
    noise: str  # "multiplicative" (seed 004 sec. 2.3) or "sensor" (Poisson-Gaussian, quantised)
    grey_probability: float  # share of DP samples recorded green-only (copied to 3 channels)
    exposure: tuple[float, float]  # scene brightness gain range (log-uniform)
    focus_m: tuple[float, float] | None  # focus distance range (log-uniform); None: the camera's
    scene_kind: str  # synth.scenes kind
    photo_textures: bool  # texture scenes with the bundled photos (+ a user folder)


PROFILES: dict[str, DataProfile] = {
    "default": DataProfile(
        "default", "the engine's original distribution: RDPD camera sets, front blur 4-20 px, colour",
        dp_camera=None, front_blur_px=None, front_blur_fraction=(0.1, 0.5), noise="multiplicative",
        grey_probability=0.0, exposure=(1.0, 1.0), focus_m=None, scene_kind="mixed", photo_textures=False),
    "phone": DataProfile(
        "phone", "Pixel 4 DP optics focused at 0.3-1 m (front blur 2-9 px, back <= 7 px), half green-only, sensor noise, "
        "dark to bright exposures, photo-textured layered scenes",
        dp_camera="pixel4_dp", front_blur_px=(2.0, 9.0), front_blur_fraction=(0.0, 0.0), noise="sensor",
        grey_probability=0.5, exposure=(0.15, 1.0), focus_m=(0.3, 1.0), scene_kind="photo_layers",
        photo_textures=True),
}

DEFAULT_PROFILE = "default"


def get_profile(name: str | None) -> DataProfile:
    """The profile called ``name`` (None: the default one)."""
    key = name or DEFAULT_PROFILE
    if key not in PROFILES:
        raise ProfileError(f"unknown data profile {key!r}; choose one of {', '.join(PROFILES)}")
    return PROFILES[key]
