"""Synthetic captures of the calibration chart (tests and ``benchmarks/bench_calibration.py``).

The chart is warped into the capture by a homography (rendered at 4x from the full chart and
area-averaged: finer than the estimator's own warp, so the two do not share an approximation), blurred per view by field-varying DP PSFs
(:class:`synth.field_render.FieldPSF` over a bank with a field grid, at one signed radius: a flat
chart at one focus setting), multiplied by per-view vignetting gains, mapped through a black
level and gain, given signal-dependent Gaussian noise, and quantised to 16 bits.
"""
from __future__ import annotations

import cv2
import numpy as np

from calibration.dp_psf import PSFParams
from calibration.psf_bank import FieldGrid, PSFBank
from synth.field_render import FieldPSF


def warp_supersampled(chart: np.ndarray, H: np.ndarray, shape: tuple[int, int], factor: int = 4) -> np.ndarray:
    """Chart -> capture (pixel-centre homography ``H``), rendered at ``factor`` x and area-averaged."""
    S = np.array([[factor, 0, 0.5 * factor - 0.5], [0, factor, 0.5 * factor - 0.5], [0, 0, 1]])
    big = cv2.warpPerspective(chart.astype(np.float32), S @ H, (shape[1] * factor, shape[0] * factor),
                              flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=1.0)
    return cv2.resize(big, (shape[1], shape[0]), interpolation=cv2.INTER_AREA)


def vignetting_gains(shape: tuple[int, int], strength: float = 0.3, tilt: float = 0.08) -> dict[str, np.ndarray]:
    """Smooth per-view gains: radial fall-off ``1 - strength * rho^2`` and opposite horizontal
    tilts for the two views (DP views see the two halves of the aperture)."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ny, nx = (yy - h / 2) / (h / 2), (xx - w / 2) / (w / 2)
    radial = 1 - strength * (nx * nx + ny * ny) / 2
    return {"left": (radial * (1 - tilt * nx)).astype(np.float32),
            "right": (radial * (1 + tilt * nx)).astype(np.float32)}


def chart_capture(chart: np.ndarray, H: np.ndarray, shape: tuple[int, int], bank: PSFBank, radius: float,
                  rng: np.random.Generator, vignetting: dict[str, np.ndarray] | None = None,
                  black: float = 0.04, gain: float = 0.8, noise: float = 0.004, blend: float = 0.05,
                  white: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(left, right) uint16 views of the chart (or of a white sheet with ``white``)."""
    sharp = np.ones(shape, np.float32) if white else warp_supersampled(chart, H, shape)
    coc = np.full(shape, float(radius), np.float32)
    psf = FieldPSF(bank, blend=blend)
    views = psf.render(sharp[..., None], coc, device="cpu")
    out = []
    for view, img in (("left", views.left[..., 0]), ("right", views.right[..., 0])):
        if vignetting is not None:
            img = img * vignetting[view]
        img = black + gain * img
        img = img + rng.standard_normal(img.shape).astype(np.float32) * noise * np.sqrt(np.clip(img, 0, None) / 0.5)
        out.append(np.clip(np.round(img * 65535), 0, 65535).astype(np.uint16))
    return out[0], out[1]


def mild_homography(chart_size: tuple[int, int], capture: tuple[int, int], fill: float = 0.96,
                    tilt: float = 2e-5, rotate_deg: float = 1.5) -> np.ndarray:
    """A chart -> capture homography: the chart (w, h) scaled to ``fill`` of the capture,
    centred, rotated a little, with a slight perspective tilt (pixel-centre coordinates)."""
    cw, ch = chart_size
    h, w = capture
    s = fill * min(w / cw, h / ch)
    a = np.deg2rad(rotate_deg)
    T1 = np.array([[1, 0, -cw / 2], [0, 1, -ch / 2], [0, 0, 1]], float)
    R = np.array([[s * np.cos(a), -s * np.sin(a), 0], [s * np.sin(a), s * np.cos(a), 0], [0, 0, 1]])
    P = np.array([[1, 0, 0], [0, 1, 0], [tilt, -tilt / 2, 1]])
    T2 = np.array([[1, 0, w / 2 - 0.5], [0, 1, h / 2 - 0.5], [0, 0, 1]], float)
    return T2 @ P @ R @ T1


def field_truth_bank(grid: tuple[int, int], camera: str = "truth") -> PSFBank:
    """A known field-varying bank to render chart captures with (``benchmarks/bench_calibration.py``,
    the demo): Butterworth DP PSFs whose radius grows by 8 % and whose shape changes a little
    towards the corners of a ``grid`` of field cells."""
    rows, cols = grid
    ii, jj = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    rho = np.hypot((ii + 0.5) / rows - 0.5, (jj + 0.5) / cols - 0.5) / np.hypot(0.5, 0.5)
    params = np.stack([np.full((rows, cols), 9.0), 0.5 + 0.1 * rho, 0.2 + 0.1 * rho, np.full((rows, cols), 0.14)], -1)
    bank = PSFBank.from_model(np.arange(-10, 10.5, 1.0), [PSFParams(9, 0.5, 0.2)], camera=camera)
    bank.field = FieldGrid(params, 1 + 0.08 * rho ** 2, None, "params")
    return bank
