"""The dual-pixel PSF model of seed 004 (eq. 2-4): a Butterworth-shaped donut split by a ramp.

Left/right convention (stored in every PSF bank header as ``LEFT_RIGHT_CONVENTION``): for a
positive signed CoC radius (point behind the focal plane) the left PSF is the donut weighted by
a ramp rising from 0 at the left edge of the disk to 1 at its right edge, so its centroid lies
to the right of the centre; the right PSF is its mirror about the vertical axis. For a negative
radius left and right swap. DP disparity (left centroid minus right centroid) therefore has the
sign of the CoC. Each half sums to 1/2, so ``left + right`` is the combined PSF (sums to 1).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

LEFT_RIGHT_CONVENTION = (
    "r>0 (behind focus): left PSF = donut * ramp rising left->right (centroid right of centre), "
    "right PSF = mirror of left about the vertical axis; r<0: left and right swap; each sums to 1/2"
)
IN_FOCUS_RADIUS = 0.5  # |r| below half a pixel renders as a delta
_SUPERSAMPLE = 4


@dataclass(frozen=True)
class PSFParams:
    """Shape parameters of the Butterworth DP PSF (seed 004, eq. 2-3)."""

    order: int = 3  # n, Butterworth order (paper: 3, 6, 9)
    alpha: float = 0.6  # cut-off control, D0 = 2|r| / alpha (paper: 0.4 .. 1)
    beta: float = 0.2  # minimum relative intensity at the centre, > 0 (paper: 0.1 .. 0.4)
    kappa: float = 0.14  # Gaussian smoothing std as a fraction of |r|

    def __post_init__(self) -> None:
        if self.order < 1 or self.alpha <= 0 or not 0 < self.beta <= 1 or self.kappa < 0:
            raise ValueError(f"invalid PSF parameters {self}: need order >= 1, alpha > 0, 0 < beta <= 1, kappa >= 0")

    def to_dict(self) -> dict:
        return asdict(self)


PAPER_PARAM_GRID = tuple(
    PSFParams(n, a, b, 0.14) for n in (3, 6, 9) for a in (0.4, 0.6, 0.8, 1.0) for b in (0.1, 0.2, 0.3, 0.4)
)


def kernel_size(radius: float) -> int:
    """Odd kernel size holding a disk of |radius| plus one pixel for smoothing spill."""
    return 2 * (math.ceil(abs(radius)) + 1) + 1


def _centred_grid(size: int, supersample: int = 1, offset: tuple[float, float] = (0.0, 0.0)
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (x, y) relative to the kernel centre moved by ``offset`` (dy, dx)."""
    half = size // 2
    step = 1.0 / supersample
    coords = np.arange(-half - 0.5 + step / 2, half + 0.5, step)
    return np.meshgrid(coords - offset[1], coords - offset[0])


def _box_downsample(a: np.ndarray, factor: int) -> np.ndarray:
    h, w = a.shape
    return a.reshape(h // factor, factor, w // factor, factor).mean(axis=(1, 3))


def disk_coverage(radius: float, size: int, offset: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """C: fraction of each pixel covered by a disk of ``|radius|`` centred ``offset`` (dy, dx) px
    from the array centre (4x4 supersampled)."""
    x, y = _centred_grid(size, _SUPERSAMPLE, offset)
    return _box_downsample((x * x + y * y <= radius * radius).astype(np.float64), _SUPERSAMPLE)


def butterworth_profile(radius: float, params: PSFParams, size: int | None = None,
                        offset: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """H = B' o C before smoothing (seed 004, eq. 2-3): B = 1 / (1 + (D0/rho)^(2n)) rescaled to
    [beta, 1] over the disk, times the disk coverage. Centre = beta, rim = 1 (the donut)."""
    r = abs(radius)
    size = size or kernel_size(r)
    coverage = disk_coverage(r, size, offset)
    x, y = _centred_grid(size, 1, offset)
    rho = np.hypot(x, y)
    d0 = 2.0 * r / params.alpha
    with np.errstate(divide="ignore", over="ignore"):
        b = 1.0 / (1.0 + (d0 / np.maximum(rho, 1e-12)) ** (2 * params.order))
    inside = coverage > 0
    b_min, b_max = b[inside].min(), b[inside].max()
    if b_max - b_min < 1e-12:
        scaled = np.ones_like(b)
    else:
        scaled = params.beta + (1.0 - params.beta) * (b - b_min) / (b_max - b_min)
    return scaled * coverage


def dual_pixel_psf(radius: float, params: PSFParams = PSFParams(), size: int | None = None,
                   offset: tuple[float, float] = (0.0, 0.0)) -> tuple[np.ndarray, np.ndarray]:
    """Left and right DP PSFs for a signed CoC radius in pixels (seed 004, eq. 2-4).

    Returns two float64 ``size x size`` kernels (default :func:`kernel_size`), each summing to
    1/2. |r| < 0.5 px is in focus: both are half a delta. ``offset`` (dy, dx) moves the disk's
    centre off the array centre by sub-pixel amounts (measured kernels are rarely centred); with
    an offset the right PSF is the left one mirrored about the disk's vertical axis.
    """
    if not math.isfinite(radius):
        raise ValueError(f"PSF radius must be finite, got {radius}")
    offset = (float(offset[0]), float(offset[1]))
    r = abs(radius)
    size = size or kernel_size(r)
    if size % 2 == 0:
        raise ValueError(f"kernel size must be odd, got {size}")
    if r < IN_FOCUS_RADIUS:
        delta = np.zeros((size, size))
        delta[size // 2, size // 2] = 0.5
        return delta, delta.copy()
    if size < 2 * math.ceil(r) + 1:
        raise ValueError(f"kernel size {size} is too small for radius {radius}")
    shifted = offset != (0.0, 0.0)
    if shifted and size < 2 * math.ceil(r + max(abs(offset[0]), abs(offset[1]))) + 1:
        raise ValueError(f"kernel size {size} is too small for radius {radius} at offset {offset}")
    h = butterworth_profile(r, params, size, offset)
    sigma = params.kappa * r
    if sigma > 0.1:
        h = ndimage.gaussian_filter(h, sigma, mode="constant", truncate=3.0)
    x, _ = _centred_grid(size, 1, offset)
    ramp = np.clip((x + r) / (2.0 * r), 0.0, 1.0)
    left = h * ramp
    left /= 2.0 * left.sum()
    if shifted:  # mirror about the disk's axis: the same profile with the ramp reversed
        right = h * np.clip((r - x) / (2.0 * r), 0.0, 1.0)
        right /= 2.0 * right.sum()
    else:
        right = left[:, ::-1].copy()
    if radius < 0:
        left, right = right, left
    return left, right


def combined_psf(radius: float, params: PSFParams = PSFParams(), size: int | None = None) -> np.ndarray:
    """The combined (non-DP) PSF ``left + right``; sums to 1."""
    left, right = dual_pixel_psf(radius, params, size)
    return left + right


def centroid_x(kernel: np.ndarray) -> float:
    """Horizontal centroid of a kernel relative to its centre, in pixels."""
    x, _ = _centred_grid(kernel.shape[0])
    return float((kernel * x).sum() / kernel.sum())


def dp_disparity_px(radius: float, params: PSFParams = PSFParams()) -> float:
    """DP disparity of a point at this signed CoC: centroid(left) - centroid(right), in pixels."""
    left, right = dual_pixel_psf(radius, params)
    return centroid_x(left) - centroid_x(right)


def cross_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Normalised 2-D cross-correlation at zero shift: seed 004's similarity between PSFs."""
    size = max(a.shape[0], b.shape[0])
    a, b = _pad_to(a, size), _pad_to(b, size)
    a0, b0 = a - a.mean(), b - b.mean()
    return float((a0 * b0).sum() / math.sqrt((a0 * a0).sum() * (b0 * b0).sum() + 1e-300))


def _pad_to(k: np.ndarray, size: int) -> np.ndarray:
    p = (size - k.shape[0]) // 2
    return np.pad(k, p) if p > 0 else k
