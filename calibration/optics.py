"""Thin-lens optics: lens-sensor distance, aperture, signed circle of confusion (seed 004, eq. 1).

Units are explicit in every name: ``_mm`` millimetres, ``_m`` metres, ``_px`` pixels.
Sign convention: the CoC radius is positive for points *behind* the focal plane (d > s) and
negative in front of it (d < s). Because ``r = (q/2) (s'/s) (d - s)/d = K (1 - s/d)``, the
signed CoC is affine in inverse depth: ``r = K s (1/s - 1/d)`` (see :func:`coc_from_inverse_depth`).
"""
from __future__ import annotations

import numpy as np

ArrayLike = np.ndarray | float


def lens_sensor_distance_mm(focal_length_mm: float, focus_distance_mm: float) -> float:
    """s' = f s / (s - f): the image distance for a lens focused at s (seed 004, eq. 1)."""
    if focus_distance_mm <= focal_length_mm:
        raise ValueError(
            f"focus distance {focus_distance_mm} mm must be beyond the focal length {focal_length_mm} mm"
        )
    return focal_length_mm * focus_distance_mm / (focus_distance_mm - focal_length_mm)


def aperture_diameter_mm(focal_length_mm: float, f_number: float) -> float:
    """q = f / F."""
    if f_number <= 0:
        raise ValueError(f"f-number must be positive, got {f_number}")
    return focal_length_mm / f_number


def coc_gain_mm(focal_length_mm: float, f_number: float, focus_distance_mm: float) -> float:
    """K = (q/2) (s'/s): the CoC radius (mm on the sensor) of a point at infinity."""
    s_prime = lens_sensor_distance_mm(focal_length_mm, focus_distance_mm)
    return 0.5 * aperture_diameter_mm(focal_length_mm, f_number) * s_prime / focus_distance_mm


def signed_coc_mm(depth_mm: ArrayLike, focal_length_mm: float, f_number: float,
                  focus_distance_mm: float) -> ArrayLike:
    """Signed CoC radius on the sensor in mm: r = (q/2)(s'/s)(d - s)/d (seed 004, eq. 1)."""
    depth = np.asarray(depth_mm, dtype=np.float64)
    if np.any(~np.isfinite(depth)) or np.any(depth <= 0):
        raise ValueError("depth must be finite and positive")
    k = coc_gain_mm(focal_length_mm, f_number, focus_distance_mm)
    return k * (depth - focus_distance_mm) / depth


def signed_coc_px(depth_mm: ArrayLike, focal_length_mm: float, f_number: float,
                  focus_distance_mm: float, pixel_pitch_um: float) -> ArrayLike:
    """Signed CoC radius in pixels: :func:`signed_coc_mm` divided by the pixel pitch."""
    if pixel_pitch_um <= 0:
        raise ValueError(f"pixel pitch must be positive, got {pixel_pitch_um} um")
    return signed_coc_mm(depth_mm, focal_length_mm, f_number, focus_distance_mm) / (pixel_pitch_um * 1e-3)


def coc_from_inverse_depth(inverse_depth: ArrayLike, gain: float, focus_distance: float) -> ArrayLike:
    """Inverse-depth form r = K s (1/s - 1/d), same units as ``gain`` (``focus_distance`` and
    ``1/inverse_depth`` in one length unit). Affine in 1/d, which is why DP disparity (about
    0.85 r for an ideal disk) is an inverse-depth cue."""
    return gain * focus_distance * (1.0 / focus_distance - np.asarray(inverse_depth, dtype=np.float64))


def rdpd_code_coc_px(depth: ArrayLike, focal_length: float, f_number: float, focus: float,
                     max_coc_px: float = 40.0, max_depth: float = 250.0) -> np.ndarray:
    """CoC in pixels as RDPD's public generator computes it (OPTICS.md):
    ``round(scale (d - focus)/d)`` with ``scale = (f focus/(focus - f)) (f/N) / focus``, depth
    clipped to ``max_depth`` and the result clipped to +-``max_coc_px``. The camera sets are
    given in that code's own units, so this is kept separate from the physical form."""
    d = np.clip(np.asarray(depth, dtype=np.float64), None, max_depth)
    if np.any(~np.isfinite(d)) or np.any(d <= 0):
        raise ValueError("depth must be finite and positive")
    scale = (focal_length * focus / (focus - focal_length)) * (focal_length / f_number) / focus
    return np.clip(np.round(scale * (d - focus) / d), -max_coc_px, max_coc_px)
