"""Camera artefacts applied after dual-pixel rendering (seed 004, section 2.3).

* Radial distortion, division model (seed eq. 5)::

      (x_d, y_d) = (x_o, y_o) + (x_u - x_o, y_u - y_o) / (1 + c1 R^2 + c2 R^4 + ...)

  with ``R`` the radius of the *undistorted* point from the centre ``(x_o, y_o)``, normalised by
  the image half-diagonal ``0.5 * hypot(width, height)`` (pixels). Sign convention: ``c1 > 0``
  pulls points towards the centre more strongly at larger radius -> barrel; ``c1 < 0`` ->
  pincushion. The same maps are applied to left, right and sharp target (and, with
  ``INTER_NEAREST``, to CoC / disparity maps).
* Signal-dependent noise ``I + I o N``, ``N ~ N(0, sigma^2)``, independent draws per call.

Pixel centres are at integer coordinates; the default centre is ``((W-1)/2, (H-1)/2)``.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import cv2
import numpy as np

from core.errors import UserError

__all__ = [
    "division_distortion_maps",
    "distort_points",
    "apply_distortion",
    "signal_dependent_noise",
    "sample_noise_sigma",
    "NOISE_SIGMAS",
]

#: Seed 004 noise strengths {0.05, 0.055, ..., 0.5} (91 values).
NOISE_SIGMAS = tuple(float(v) for v in np.round(0.05 + 0.005 * np.arange(91), 3))

_REMAP_DTYPES = (np.uint8, np.uint16, np.int16, np.float32, np.float64)


class DistortionError(UserError):
    """A camera's distortion coefficients that cannot be applied (not finite, not invertible)."""


def _norm_coeffs(coeffs) -> tuple[float, ...]:
    c = tuple(float(v) for v in (coeffs if coeffs is not None else ()))
    if not all(np.isfinite(c)):
        raise DistortionError(f"distortion coefficients must be finite, got {c}")
    while c and c[-1] == 0.0:
        c = c[:-1]
    return c


def _centre(height: int, width: int, centre) -> tuple[float, float]:
    if centre is None:
        return (width - 1) / 2.0, (height - 1) / 2.0
    cx, cy = (float(v) for v in centre)
    return cx, cy


def _denominator(r: np.ndarray, c: tuple[float, ...]) -> np.ndarray:
    """1 + c1 R^2 + c2 R^4 + ... (Horner in R^2)."""
    r2 = r * r
    d = np.zeros_like(r)
    for ci in reversed(c):
        d = (d + ci) * r2
    return 1.0 + d


def _denominator_deriv(r: np.ndarray, c: tuple[float, ...]) -> np.ndarray:
    """d/dR of the denominator: sum 2 i c_i R^(2i-1)."""
    r2 = r * r
    d = np.zeros_like(r)
    for i in range(len(c), 0, -1):
        d = d * r2 + 2 * i * c[i - 1]
    return d * r


def _inverse_table(c: tuple[float, ...], rd_max: float, n: int = 4097):
    """Table (R_d, R_u) of the forward model R_d = R_u / D(R_u), monotonic, covering rd_max."""
    hi = max(rd_max, 1e-6)
    for _ in range(40):
        ru = np.linspace(0.0, hi, n)
        d = _denominator(ru, c)
        rd = ru / np.where(d > 0, d, np.nan)
        ok = np.isfinite(rd) & (d > 0)
        ok[1:] &= np.diff(rd) > 0
        bad = np.flatnonzero(~ok)
        if bad.size:  # model folds (or D <= 0) before reaching rd_max
            last = bad[0] - 1
            if last >= 1 and rd[last] >= rd_max:
                return rd[: last + 1], ru[: last + 1]
            raise DistortionError(
                f"division model with coefficients {c} is not invertible over the image "
                f"(max reachable normalised radius {np.nanmax(rd[: max(last, 1) + 1]):.4g} < "
                f"{rd_max:.4g}); use smaller coefficients"
            )
        if rd[-1] >= rd_max:
            return rd, ru
        hi *= 2.0
    raise DistortionError(f"division model with coefficients {c}: cannot cover radius {rd_max:.4g}")


@lru_cache(maxsize=16)
def _maps_cached(height: int, width: int, c: tuple[float, ...], centre: tuple[float, float]):
    cx, cy = centre
    norm = 0.5 * float(np.hypot(width, height))
    dx = np.arange(width, dtype=np.float64)[None, :] - cx
    dy = np.arange(height, dtype=np.float64)[:, None] - cy
    if not c:
        scale = np.ones((height, width))
    else:
        rd = np.hypot(dx, dy) / norm  # radius of each output (distorted) pixel
        tab_rd, tab_ru = _inverse_table(c, float(rd.max()))
        ru = np.interp(rd, tab_rd, tab_ru)
        for _ in range(2):  # Newton on f(R_u) = R_u / D(R_u) - R_d
            d = _denominator(ru, c)
            f = ru / d - rd
            fp = (d - ru * _denominator_deriv(ru, c)) / (d * d)
            ru = np.maximum(ru - f / fp, 0.0)
        scale = _denominator(ru, c)  # R_u / R_d = D(R_u): source = centre + (p - centre) * D
    map_x = (cx + dx * scale).astype(np.float32)
    map_y = (cy + dy * scale).astype(np.float32)
    map_x.setflags(write=False)
    map_y.setflags(write=False)
    return map_x, map_y


def division_distortion_maps(height: int, width: int, coeffs: Sequence[float], centre=None):
    """``cv2.remap`` maps (float32, read-only) producing the DISTORTED image from the undistorted
    one (seed eq. 5): for each output pixel at normalised radius R_d, the source radius R_u
    solves R_d = R_u / (1 + c1 R_u^2 + ...) (1-D table inverted with np.interp, then 2 Newton
    steps). ``centre`` = (x_o, y_o) in pixels. Raises ValueError if the model folds inside the
    image (e.g. c1 > 0.25 with the corner at R = 1). Zero coefficients give the exact pixel grid.
    """
    h, w = int(height), int(width)
    if h < 1 or w < 1:
        raise ValueError(f"bad size {height}x{width}")
    return _maps_cached(h, w, _norm_coeffs(coeffs), _centre(h, w, centre))


def distort_points(points, height: int, width: int, coeffs: Sequence[float], centre=None) -> np.ndarray:
    """Forward seed eq. 5 on undistorted pixel coordinates ``points`` (N x 2, x y) -> distorted."""
    c = _norm_coeffs(coeffs)
    cx, cy = _centre(int(height), int(width), centre)
    p = np.asarray(points, np.float64).reshape(-1, 2)
    norm = 0.5 * float(np.hypot(width, height))
    rel = p - (cx, cy)
    r = np.hypot(rel[:, 0], rel[:, 1]) / norm
    return (cx, cy) + rel / _denominator(r, c)[:, None]


def _remap(img: np.ndarray, mx, my, interp: int, border: int) -> np.ndarray:
    if img.dtype.type not in _REMAP_DTYPES:
        raise ValueError(f"apply_distortion: unsupported dtype {img.dtype} (use uint8/uint16/int16/float32/float64)")
    if img.ndim == 3 and img.shape[2] not in (1, 3, 4):
        # cv2.remap takes at most 4 channels, and (OpenCV 5) interpolates 2-channel images on a
        # coarser fixed-point grid than 1/3/4-channel ones: split so all channels match.
        step = 4 if img.shape[2] > 4 else 1
        parts = [_remap(img[:, :, i:i + step], mx, my, interp, border)
                 for i in range(0, img.shape[2], step)]
        return np.concatenate([p.reshape(*p.shape[:2], -1) for p in parts], axis=2)
    out = cv2.remap(np.ascontiguousarray(img), mx, my, interp, borderMode=border)
    return out.reshape(img.shape)


def apply_distortion(
    images: list[np.ndarray],
    coeffs: Sequence[float],
    interpolation: int | Sequence[int] = cv2.INTER_LINEAR,
    border: int = cv2.BORDER_REFLECT101,
    centre=None,
) -> list[np.ndarray]:
    """Apply the same division-model distortion (seed eq. 5) to every image (H x W or H x W x C,
    all the same H x W). ``interpolation`` may be one flag or one per image (e.g. INTER_NEAREST for
    CoC / disparity maps). Zero coefficients return exact copies."""
    images = list(images)
    if not images:
        return []
    interps = ([interpolation] * len(images) if isinstance(interpolation, (int, np.integer))
               else list(interpolation))
    if len(interps) != len(images):
        raise ValueError(f"apply_distortion: {len(interps)} interpolation flags for {len(images)} images")
    h, w = images[0].shape[:2]
    for i, im in enumerate(images):
        if im.ndim not in (2, 3) or im.shape[:2] != (h, w):
            raise ValueError(f"apply_distortion: images[{i}] has shape {im.shape}, expected {h}x{w}[xC]")
    c = _norm_coeffs(coeffs)
    if not c:
        return [im.copy() for im in images]
    mx, my = division_distortion_maps(h, w, c, centre)
    return [_remap(im, mx, my, int(f), border) for im, f in zip(images, interps)]


def signal_dependent_noise(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Seed sec. 2.3: ``I + I o N``, N ~ N(0, sigma^2) i.i.d. per pixel and channel, clipped to
    [0, 1]. Each call draws new noise from ``rng`` (call once per view: L and R independent).
    ``sigma == 0`` returns an unchanged copy. Float input; dtype is preserved."""
    image = np.asarray(image)
    if not np.issubdtype(image.dtype, np.floating):
        raise ValueError(f"signal_dependent_noise: float image in [0, 1] expected, got {image.dtype}")
    sigma = float(sigma)
    if not np.isfinite(sigma) or sigma < 0:
        raise ValueError(f"signal_dependent_noise: sigma must be finite and >= 0, got {sigma}")
    if sigma == 0.0:
        return image.copy()
    dt = np.float64 if image.dtype == np.float64 else np.float32
    n = rng.standard_normal(image.shape, dtype=dt)
    n *= dt(sigma)
    out = image.astype(dt) * (1 + n)
    np.clip(out, 0.0, 1.0, out=out)
    return out.astype(image.dtype, copy=False)


def sample_noise_sigma(rng: np.random.Generator, scale: float = 1.0) -> float:
    """``scale`` * a value drawn uniformly from seed 004's {0.05, 0.055, ..., 0.5}.

    Those values belong to the seed's own normalisation (synthetic CG data); as a multiplicative
    std (5-50 % of the signal at every level) they are strong for a real sensor, hence
    ``scale`` (e.g. 0.1-0.2 to mimic a phone ISP output at moderate gain)."""
    return float(scale) * NOISE_SIGMAS[int(rng.integers(len(NOISE_SIGMAS)))]


# Sensor noise of the phone profile (synth.profiles): Poisson-Gaussian in normalised linear
# units (white level = 1), then quantised to the 14-bit codes of a Pixel DP PNG above black 1024.
SHOT_GAIN_RANGE = (5e-5, 1e-3)  # variance per unit signal (shot noise)
READ_SIGMA_RANGE = (1e-4, 1e-3)  # read noise std
PIXEL_CODE_LEVELS = 16383 - 1024  # 14-bit white minus black


def sample_sensor_noise(rng: np.random.Generator) -> tuple[float, float]:
    """(shot gain a, read std b) drawn log-uniform: variance a * I + b^2."""
    a = float(np.exp(rng.uniform(*np.log(SHOT_GAIN_RANGE))))
    b = float(np.exp(rng.uniform(*np.log(READ_SIGMA_RANGE))))
    return a, b


def sensor_noise(image: np.ndarray, shot: float, read: float, rng: np.random.Generator,
                 levels: int = PIXEL_CODE_LEVELS) -> np.ndarray:
    """Heteroscedastic Gaussian approximation of Poisson-Gaussian noise,
    ``I + sqrt(a I + b^2) N(0, 1)``, clipped to [0, 1] and quantised to ``levels`` steps."""
    image = np.asarray(image, dtype=np.float32)
    std = np.sqrt(shot * np.clip(image, 0.0, 1.0) + read * read).astype(np.float32)
    noisy = image + std * rng.standard_normal(image.shape, dtype=np.float32)
    return (np.round(np.clip(noisy, 0.0, 1.0) * levels) / levels).astype(np.float32)
