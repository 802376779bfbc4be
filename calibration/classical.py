"""Classical (non-learned) DP deblurring with a device's calibrated kernels (issue 13's baseline).

Per field patch (the kernels' grid; 168 px for the Pixel 4 stack): the defocus scale ``s`` that
best explains both views, i.e. the smallest residual of a joint two-view Wiener fit
``X = (conj(KL) L + conj(KR) R) / (|KL|^2 + |KR|^2 + nsr)``, ``||KL X - L||^2 + ||KR X - R||^2``,
with the patch's calibrated left/right kernels magnified by ``s`` (rotated 180 degrees for
``s < 0``, Xin et al., ICCV 2021); then Wiener deconvolution of ``(L + R) / 2`` with the combined
kernel at that scale, re-centred on its centroid (noise-to-signal 1e-2: the recorded centre
matters, an off-centre kernel shifts the image). Patches are processed with a margin of context
and blended with linear ramps across the patch borders.
"""
from __future__ import annotations

import math

import numpy as np

from calibration.kernel_stack import KernelSet, cell_windows, kernel_centre, magnify_kernel
from core.errors import UserError

NSR = 1e-2
SCALES = tuple(np.round(np.concatenate([-np.arange(2.0, 0.09, -0.1), [0.0], np.arange(0.1, 2.01, 0.1)]), 2))


class ClassicalError(UserError):
    """Inputs the classical deblurring cannot use."""


def _ramps(n: int, edges: np.ndarray, band: float) -> np.ndarray:
    """[cells, n] weights summing to 1: cell c covers [edges[c], edges[c+1]) and ramps linearly
    across each inner border over +-band px."""
    pos = np.arange(n) + 0.5
    cells = len(edges) - 1
    w = np.ones((cells, n))
    o = max(band, 0.5)
    for c in range(cells):
        if c > 0:
            w[c] *= np.clip((pos - (edges[c] - o)) / (2 * o), 0, 1)
        if c < cells - 1:
            w[c] *= np.clip((edges[c + 1] + o - pos) / (2 * o), 0, 1)
    return w


def _core(lo: float, hi: float, size: int) -> tuple[int, int]:
    a, b = int(math.ceil(lo)), int(math.floor(hi))
    if b - a > 2 * size:
        return a + size // 2, b - size // 2
    return a, b


def _otf(kernel: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """rfft2 of a kernel placed with its centre pixel at the origin (zero-phase)."""
    k = np.zeros(shape)
    f = kernel.shape[0]
    k[:f, :f] = kernel
    k = np.roll(k, (-(f // 2), -(f // 2)), axis=(0, 1))
    return np.fft.rfft2(k)


def _scaled_pair(kl: np.ndarray, kr: np.ndarray, s: float, size: int, centre) -> tuple[np.ndarray, np.ndarray]:
    if abs(s) * kl.shape[0] < 1.0:
        d = np.zeros((size, size))
        d[size // 2, size // 2] = 1.0
        return d, d.copy()
    return magnify_kernel(kl, s, size, centre), magnify_kernel(kr, s, size, centre)


def _grid_edges(ks: KernelSet, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Patch edges in image rows/columns: the kernels' crop when the image is their frame (outer
    patches extended to the image border), else the grid stretched over the image."""
    rows, cols = ks.grid
    h, w = shape
    if ks.crop and (ks.frame is None or tuple(ks.frame) == (h, w)) and ks.crop[0] + ks.crop[2] <= h \
            and ks.crop[1] + ks.crop[3] <= w:
        y0, x0 = ks.crop[0], ks.crop[1]
        ey = y0 + ks.patch * np.arange(rows + 1, dtype=float)
        ex = x0 + ks.patch * np.arange(cols + 1, dtype=float)
    else:
        ey, ex = np.linspace(0, h, rows + 1), np.linspace(0, w, cols + 1)
    ey[0], ey[-1], ex[0], ex[-1] = 0, h, 0, w
    return ey, ex


def classical_deblur(left: np.ndarray, right: np.ndarray, kernels: KernelSet, capture: int = 0,
                     scales=SCALES, nsr: float = NSR, return_scales: bool = False):
    """Deblur a DP capture (left/right views, H x W or H x W x C, linear values) with the
    calibrated kernels of ``kernels.captures[capture]`` (see the module docstring). Returns the
    image (float32, like ``left``), and with ``return_scales`` also the chosen scale per patch."""
    left = np.asarray(left, np.float64)
    right = np.asarray(right, np.float64)
    if left.shape != right.shape or left.ndim not in (2, 3):
        raise ClassicalError(f"left {left.shape} and right {right.shape} views must be equal H x W (x C) arrays")
    squeeze = left.ndim == 2
    if squeeze:
        left, right = left[..., None], right[..., None]
    h, w, c = left.shape
    cap = kernels.captures[capture]
    rows, cols = kernels.grid
    ey, ex = _grid_edges(kernels, (h, w))
    f = cap.left.shape[-1]
    smax = max(abs(s) for s in scales)
    size = 2 * math.ceil(smax * f / 2) + 1
    margin = size // 2 + 1
    band = 0.1 * float(min(np.diff(ey).min(), np.diff(ex).min()))
    wy, wx = _ramps(h, ey, band), _ramps(w, ex, band)
    out = np.zeros((h, w, c))
    chosen = np.zeros((rows, cols))
    for i, j, y0, y1, x0, x1 in cell_windows(wy, wx, margin):
        p = i * cols + j
        kl, kr = cap.left[p].astype(np.float64), cap.right[p].astype(np.float64)
        centre = kernel_centre(kl + kr)
        L, R = left[y0:y1, x0:x1], right[y0:y1, x0:x1]
        q = size // 2 + 1  # reflect padding: the periodic transform sees no wrap-around
        pad = ((q, q), (q, q), (0, 0))
        Lp, Rp = np.pad(L, pad, mode="reflect"), np.pad(R, pad, mode="reflect")
        shape = Lp.shape[:2]
        FL = np.fft.rfft2(Lp, axes=(0, 1))
        FR = np.fft.rfft2(Rp, axes=(0, 1))
        # the scale is judged on the patch's core: pixels whose blur footprint stays inside
        # the patch (near its border the neighbour's blur shows); the whole patch if too small
        cy0, cy1 = _core(ey[i], ey[i + 1], size)
        cx0, cx1 = _core(ex[j], ex[j + 1], size)
        inner = (slice(q + cy0 - y0, q + cy1 - y0), slice(q + cx0 - x0, q + cx1 - x0))
        best = (math.inf, 0.0, None)
        for s in scales:
            a, b = _scaled_pair(kl, kr, float(s), size, centre)
            KA, KB = _otf(a, shape)[..., None], _otf(b, shape)[..., None]
            X = (np.conj(KA) * FL + np.conj(KB) * FR) / (np.abs(KA) ** 2 + np.abs(KB) ** 2 + nsr)
            resid = np.fft.irfft2(KA * X - FL, s=shape, axes=(0, 1))[inner]
            resid2 = np.fft.irfft2(KB * X - FR, s=shape, axes=(0, 1))[inner]
            err = float((resid ** 2).sum() + (resid2 ** 2).sum())
            if err < best[0]:
                best = (err, float(s), (a, b))
        _, s, (a, b) = best
        chosen[i, j] = s
        comb = 0.5 * (a + b)
        comb = magnify_kernel(comb, 1.0, size, kernel_centre(comb))  # re-centred: no shift
        K = _otf(comb, shape)[..., None]
        M = np.fft.rfft2(0.5 * (Lp + Rp), axes=(0, 1))
        est = np.fft.irfft2(M * np.conj(K) / (np.abs(K) ** 2 + nsr), s=shape, axes=(0, 1))
        est = est[q:q + (y1 - y0), q:q + (x1 - x0)]
        weight = (wy[i, y0:y1, None] * wx[j, None, x0:x1])[..., None]
        out[y0:y1, x0:x1] += weight * est
    out = out.astype(np.float32)
    if squeeze:
        out = out[..., 0]
    return (out, chosen) if return_scales else out


# The public Pixel 4 calibration (Xin et al., ICCV 2021): a 6 x 8 grid of 168-px patches over the
# central 1008 x 1344 of the views, stored as blur_kernels_left.npy / blur_kernels_right.npy.
PIXEL4_GRID, PIXEL4_PATCH = (6, 8), 168
LABEL = "classical (calibrated kernels, per-patch scale, Wiener)"


def deblur_capture(left: np.ndarray, right: np.ndarray, calibration_dir) -> tuple[str, np.ndarray]:
    """``evaluate``'s classical baseline on one capture: the kernels of ``calibration_dir`` (a
    ``calibrate import`` folder, or the public stacks ``blur_kernels_{left,right}.npy`` in the Pixel 4
    layout, centred on the views), then :func:`classical_deblur`. Returns (row label, image)."""
    from pathlib import Path

    from calibration.kernel_stack import MANIFEST, import_stacks

    folder = Path(calibration_dir)
    if (folder / MANIFEST).is_file():
        kernels = KernelSet.load(folder)
    else:
        (rows, cols), patch = PIXEL4_GRID, PIXEL4_PATCH
        h, w = np.shape(left)[:2]
        if h < rows * patch or w < cols * patch:
            raise ClassicalError(f"{folder}: the Pixel 4 kernel grid ({rows * patch}x{cols * patch}) does not fit "
                                 f"views of {h}x{w}")
        crop = ((h - rows * patch) // 2, (w - cols * patch) // 2, rows * patch, cols * patch)
        kernels = import_stacks(folder / "blur_kernels_left.npy", folder / "blur_kernels_right.npy",
                                (rows, cols), patch, crop)
    return LABEL, classical_deblur(left, right, kernels)
