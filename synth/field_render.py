"""Field-varying dual-pixel rendering: a layer on top of :func:`synth.render.render_dp`.

A calibrated PSF bank with a field grid (``calibration.psf_bank.FieldGrid``) holds one PSF model
per cell of a rows x cols grid stretched over the rendered image. Each cell is rendered by the
ordinary layered renderer with its own PSFs, on its region grown by the blend overlap plus the
largest kernel's half-size (so every output pixel it contributes sees its full neighbourhood),
and the cells are blended with separable linear ramps across the cell borders (weights sum to 1
everywhere). The bank's per-view vignetting maps, when present, multiply the views relative to
their mean (the DP views' left/right fall-off; the combined image keeps the target's brightness).
"""
from __future__ import annotations

import math
from functools import lru_cache

import cv2
import numpy as np

from calibration.dp_psf import PSFParams, centroid_x, dual_pixel_psf
from calibration.kernel_stack import cell_windows, kernel_centre, magnify_kernel
from calibration.psf_bank import PSFBank
from synth.render import BankPSF, DPViews, render_dp

BLEND = 0.25  # half-width of the blend band across a cell border, as a fraction of the cell


def _ramps(n: int, cells: int, blend: float = BLEND) -> np.ndarray:
    """[cells, n] 1-D weights: cell c is 1 inside, ramps linearly to 0 across each inner border
    over +-blend*cell; the weights of all cells sum to 1 at every position."""
    pos = np.arange(n) + 0.5
    size = n / cells
    o = max(blend * size, 0.5)
    w = np.ones((cells, n))
    for c in range(cells):
        if c > 0:
            w[c] *= np.clip((pos - (c * size - o)) / (2 * o), 0, 1)
        if c < cells - 1:
            w[c] *= np.clip(((c + 1) * size + o - pos) / (2 * o), 0, 1)
    return w


class CellPSF:
    """PSFs of one field cell: the Butterworth model with the cell's parameters at radius
    ``gain * r`` (mode ``params``), or the cell's measured kernels magnified by
    ``gain * r / ref_radius`` (mode ``kernels``); halves sum to 1/2 like every provider."""

    def __init__(self, bank: PSFBank, i: int, j: int):
        f = bank.field
        self.gain = float(f.gain[i, j])
        self.mode = f.mode
        self.params: PSFParams = f.cell_params(i, j)
        if self.mode == "kernels":
            self.ref = float(f.ref_radius[i, j])
            self.kl, self.kr = f.left[i, j].astype(np.float64), f.right[i, j].astype(np.float64)
            self.centre = kernel_centre(self.kl + self.kr)  # one centre for both: keeps the disparity
        self._cached = lru_cache(maxsize=1024)(self._make)

    def _make(self, radius: float) -> tuple[np.ndarray, np.ndarray]:
        r = radius * self.gain
        if self.mode == "params" or abs(self.ref) < 1e-6:
            return dual_pixel_psf(r, self.params)
        s = r / self.ref
        size = 2 * (math.ceil(abs(s) * self.kl.shape[0] / 2)) + 1
        left = magnify_kernel(self.kl, s, size, self.centre)
        right = magnify_kernel(self.kr, s, size, self.centre)
        return 0.5 * left / left.sum(), 0.5 * right / right.sum()

    def __call__(self, radius: float) -> tuple[np.ndarray, np.ndarray]:
        return self._cached(round(float(radius), 4))


class FieldPSF(BankPSF):
    """A PSF provider over a bank with a field grid. As a plain provider (``psf(r)``, used for
    disparity maps) it is the bank's field-median model; :meth:`render` renders field-varying."""

    def __init__(self, bank: PSFBank, param_index: int = 0, blend: float = BLEND):
        super().__init__(bank, param_index)
        if bank.field is None:
            raise ValueError("FieldPSF needs a PSF bank with a field grid")
        rows, cols = bank.field.shape
        self.blend = blend
        self.cells = [[CellPSF(bank, i, j) for j in range(cols)] for i in range(rows)]

    def describe(self) -> dict:
        return {**super().describe(), "field_grid": list(self.bank.field.shape), "field_mode": self.bank.field.mode,
                "vignetting": bool(self.bank.vignetting)}

    def render(self, image: np.ndarray, coc: np.ndarray, **kwargs) -> DPViews:
        """Per-cell layered renders blended across the cell borders, then vignetting."""
        rows, cols = self.bank.field.shape
        h, w = coc.shape
        wy, wx = _ramps(h, rows, self.blend), _ramps(w, cols, self.blend)
        rmax = float(np.abs(coc).max()) if coc.size else 0.0
        gmax = float(self.bank.field.gain.max())
        half = max(c(rmax)[0].shape[0] // 2 for row in self.cells for c in row) if rmax > 0 else 0
        half = max(half, math.ceil(rmax * gmax) + 2)
        img = image[..., None] if image.ndim == 2 else image
        acc_l = np.zeros(img.shape, np.float32)
        acc_r = np.zeros(img.shape, np.float32)
        radii = []
        for i, j, y0, y1, x0, x1 in cell_windows(wy, wx, half):
            views = render_dp(img[y0:y1, x0:x1], coc[y0:y1, x0:x1], self.cells[i][j], **kwargs)
            weight = (wy[i, y0:y1, None] * wx[j, None, x0:x1])[..., None].astype(np.float32)
            acc_l[y0:y1, x0:x1] += weight * views.left
            acc_r[y0:y1, x0:x1] += weight * views.right
            radii.append(views.layer_radii)
        if self.bank.vignetting:
            acc_l *= self._gain_map("left", h, w)
            acc_r *= self._gain_map("right", h, w)
        return DPViews(acc_l, acc_r, 0.5 * (acc_l + acc_r), np.unique(np.concatenate(radii)))

    def _gain_map(self, view: str, h: int, w: int) -> np.ndarray:
        """The view's gain relative to the two views' mean: the left/right asymmetry of the DP
        views is reproduced while their mean (the conventional image) keeps the brightness of
        the sharp target, which carries no vignetting either."""
        vig = self.bank.vignetting
        g = vig[view].astype(np.float32) / (0.5 * (vig["left"] + vig["right"])).astype(np.float32)
        return cv2.resize(g, (w, h), interpolation=cv2.INTER_LINEAR)[..., None]

    def disparity(self, radius: float) -> float:
        left, right = self(radius)
        return centroid_x(left) - centroid_x(right)


def bank_provider(bank: PSFBank, param_index: int = 0) -> BankPSF:
    """The provider a data set renders with: field-varying when the bank has a field grid."""
    return FieldPSF(bank, param_index) if bank.field is not None else BankPSF(bank, param_index)
