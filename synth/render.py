"""Layered dual-pixel defocus rendering (seed 004, section 3).

The all-in-focus image is split into depth layers by signed CoC (at most ``max_layers``, 500 in
the seed). Back to front, each layer's masked image *and* its mask are convolved with the
layer's PSF and composited with the "over" operator, the blurred mask being the alpha:
``C <- conv(I m, K) + (1 - conv(m, K)) C`` and ``A <- conv(m, K) + (1 - conv(m, K)) A``.
The result is ``C / A``: the division removes the darkening at image borders and at the seams
between layers, so a uniform scene stays uniform.

Each DP view is rendered with its own PSF scaled to sum to 1 (2x the seed's half-PSF), so left
and right are stored at full brightness as DPDD stores them; ``combined = (left + right) / 2`` is
the seed's ``I_l + I_r``.

Two implementations of the same algorithm:
- :func:`render_dp_reference`: per layer ``cv2.filter2D`` over the whole image (the reference);
- :func:`render_dp`: PyTorch FFT convolution on CPU or GPU, per layer restricted to where the
  layer has pixels (its bounding box, or the occupied tiles of a grid, whichever FFT work is
  smaller), channels and both views batched in one transform, kernel spectra cached.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import cv2
import numpy as np
import scipy.fft
import torch
from scipy import ndimage

from calibration.dp_psf import PSFParams, centroid_x, dual_pixel_psf, dp_disparity_px
from calibration.psf_bank import PSFBank
from core.errors import UserError

PSFProvider = Callable[[float], tuple[np.ndarray, np.ndarray]]
EPS = 1e-6
COC_STEP = 0.25  # px: CoC quantisation of the data engine (finer is invisible, coarser shows bands)


class RenderError(UserError):
    """Inputs the renderer cannot use (shape mismatch, NaN CoC...)."""


@dataclass
class DPViews:
    left: np.ndarray  # H x W x C float32, full brightness
    right: np.ndarray
    combined: np.ndarray  # (left + right) / 2
    layer_radii: np.ndarray  # signed CoC of each layer, px


class ParametricPSF:
    """PSFs straight from the Butterworth model (seed 004, eq. 2-4), cached per radius."""

    def __init__(self, params: PSFParams = PSFParams()):
        self.params = params
        self._cached = lru_cache(maxsize=2048)(lambda r: dual_pixel_psf(r, self.params))

    def __call__(self, radius: float) -> tuple[np.ndarray, np.ndarray]:
        return self._cached(round(float(radius), 4))

    def disparity(self, radius: float) -> float:
        return dp_disparity_px(radius, self.params)


class BankPSF:
    """PSFs from a PSF bank file (e.g. calibrated on a device), one parameter set."""

    def __init__(self, bank: PSFBank, param_index: int = 0):
        self.bank, self.param_index = bank, param_index

    def describe(self) -> dict:
        return {"psf_bank": self.bank.camera, "param_index": self.param_index,
                "params": self.bank.params[self.param_index], "provenance": self.bank.provenance}

    def __call__(self, radius: float) -> tuple[np.ndarray, np.ndarray]:
        r = float(np.clip(radius, self.bank.radii[0], self.bank.radii[-1]))
        return self.bank.psf(r, self.param_index)

    def disparity(self, radius: float) -> float:
        left, right = self(radius)
        return centroid_x(left) - centroid_x(right)


def _check_inputs(image: np.ndarray, coc: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3:
        raise RenderError(f"image must be H x W or H x W x C, got shape {image.shape}")
    if coc.shape != image.shape[:2]:
        raise RenderError(f"CoC map {coc.shape} and image {image.shape[:2]} differ in size")
    if not np.all(np.isfinite(coc)):
        raise RenderError("CoC map holds NaN or infinite values")
    if not np.all(np.isfinite(image)):
        raise RenderError("image holds NaN or infinite values")
    return image.astype(np.float32, copy=False)


def assign_layers(coc: np.ndarray, max_layers: int = 500, step: float | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Split a signed CoC map into depth layers: (labels H x W int32, layer radii [L]).

    When the map has at most ``max_layers`` distinct values (e.g. RDPD's integer CoCs) each value
    is a layer; otherwise the CoC range is cut into ``max_layers`` equal bins, each rendered at
    its centre. ``step`` (px) first rounds the CoC to multiples of ``step`` (0.25 px is
    invisible and keeps continuous maps to a few dozen layers). Layers without pixels are dropped. Radii ascend, i.e. front (most negative CoC,
    nearest) to back.
    """
    if max_layers < 1:
        raise RenderError(f"max_layers must be >= 1, got {max_layers}")
    coc = coc.astype(np.float64)
    if step:
        coc = np.round(coc / step) * step
    values, inverse = np.unique(np.round(coc, 4), return_inverse=True)
    if values.size <= max_layers:
        return inverse.reshape(coc.shape).astype(np.int32), values
    lo, hi = float(coc.min()), float(coc.max())
    width = (hi - lo) / max_layers
    labels = np.clip(np.floor((coc - lo) / width), 0, max_layers - 1).astype(np.int32)
    used, labels = np.unique(labels, return_inverse=True)
    return labels.reshape(coc.shape).astype(np.int32), lo + (used + 0.5) * width


def _normalised_views(psf: PSFProvider, radius: float) -> tuple[np.ndarray, np.ndarray]:
    left, right = psf(radius)
    return (left / left.sum()).astype(np.float32), (right / right.sum()).astype(np.float32)


def render_dp_reference(image: np.ndarray, coc: np.ndarray, psf: PSFProvider,
                        max_layers: int = 500, coc_step: float | None = None) -> DPViews:
    """The straightforward reference: per layer and view, ``cv2.filter2D`` on the whole image
    (zero border), composited back to front."""
    image = _check_inputs(image, coc)
    labels, radii = assign_layers(coc, max_layers, coc_step)
    h, w, c = image.shape
    views = []
    for view in (0, 1):
        acc_c = np.zeros((h, w, c), np.float32)
        acc_a = np.zeros((h, w), np.float32)
        for i in range(radii.size - 1, -1, -1):  # back (largest CoC) to front
            kernel = _normalised_views(psf, float(radii[i]))[view]
            flipped = np.ascontiguousarray(kernel[::-1, ::-1])  # filter2D correlates; we convolve
            mask = (labels == i).astype(np.float32)
            col = cv2.filter2D(image * mask[..., None], -1, flipped, borderType=cv2.BORDER_CONSTANT)
            alpha = cv2.filter2D(mask, -1, flipped, borderType=cv2.BORDER_CONSTANT)
            col = col.reshape(h, w, c)
            acc_c = col + (1.0 - alpha)[..., None] * acc_c
            acc_a = alpha + (1.0 - alpha) * acc_a
        views.append(acc_c / np.maximum(acc_a, EPS)[..., None])
    return DPViews(views[0], views[1], 0.5 * (views[0] + views[1]), radii)


class _SpectrumCache:
    """rfft2 of padded kernel pairs, keyed by (radius, FFT shape); kernels depend only on radius."""

    def __init__(self, psf: PSFProvider, device: torch.device, maxsize: int = 512):
        self.psf, self.device, self.maxsize = psf, device, maxsize
        self._store: dict = {}

    def get(self, radius: float, shape: tuple[int, int]) -> torch.Tensor:
        key = (round(radius, 4), shape)
        spec = self._store.get(key)
        if spec is None:
            left, right = _normalised_views(self.psf, radius)
            k = torch.from_numpy(np.stack([left, right])).to(self.device)
            spec = torch.fft.rfft2(k, s=shape)  # [2, ny, nx//2+1]
            if len(self._store) >= self.maxsize:
                self._store.pop(next(iter(self._store)))
            self._store[key] = spec
        return spec


def _fft_len(n: int) -> int:
    return scipy.fft.next_fast_len(n, real=True)


def _fft_cost(shape: tuple[int, int]) -> float:
    n = shape[0] * shape[1]
    return n * math.log2(max(n, 2))


def _occupied_tiles(mask: np.ndarray, tile: int) -> np.ndarray:
    h, w = mask.shape
    th, tw = math.ceil(h / tile), math.ceil(w / tile)
    padded = np.zeros((th * tile, tw * tile), bool)
    padded[:h, :w] = mask
    return np.argwhere(padded.reshape(th, tile, tw, tile).any(axis=(1, 3)))


def _plan_regions(mask: np.ndarray, half: int, fft_sizes: tuple[int, ...]) -> list[tuple[int, int, int, int]]:
    """Input regions (y0, y1, x0, x1) of a cropped layer mask to convolve: the whole crop, or the
    occupied tiles of a grid (overlap-add), whichever candidate needs the least FFT work. Tiles
    are sized so that tile + k - 1 is exactly one of ``fft_sizes`` (no wasted padding)."""
    h, w = mask.shape
    k = 2 * half + 1
    best_cost = _fft_cost((_fft_len(h + k - 1), _fft_len(w + k - 1)))
    best: list[tuple[int, int, int, int]] = [(0, h, 0, w)]
    for n in fft_sizes:
        tile = n - k + 1
        if tile < 16 or tile >= max(h, w):
            continue
        occupied = _occupied_tiles(mask, tile)
        cost = len(occupied) * _fft_cost((n, n))
        if cost < best_cost:
            best_cost = cost
            best = [(ty * tile, min((ty + 1) * tile, h), tx * tile, min((tx + 1) * tile, w)) for ty, tx in occupied]
    return best


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``auto`` -> CUDA when present, else CPU."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class _torch_threads:
    """Temporarily set PyTorch's intra-op threads (restored on exit)."""

    def __init__(self, n: int | None):
        self.n, self.old = n, None

    def __enter__(self):
        if self.n:
            self.old = torch.get_num_threads()
            torch.set_num_threads(self.n)

    def __exit__(self, *exc):
        if self.old:
            torch.set_num_threads(self.old)


def render_dp(*args, threads: int | None = 1, **kwargs) -> DPViews:
    """Fast renderer (see :func:`_render_dp`). On CPU it runs with ``threads`` intra-op threads
    (default 1): the per-layer transforms are small, and with more threads PyTorch's thread
    barriers cost 10-20x when another process shares the cores (ad-hoc check: 0.3 s vs 4.5 s per
    256x256 sample on a busy 2-core machine). Parallelise data generation across processes
    (DataLoader workers) instead. ``threads=None`` keeps PyTorch's setting."""
    with _torch_threads(threads):
        return _render_dp(*args, **kwargs)


@torch.no_grad()
def _render_dp(image: np.ndarray, coc: np.ndarray, psf: PSFProvider, max_layers: int = 500,
              coc_step: float | None = None, device: str | torch.device | None = "auto",
              tile_fft_sizes: tuple[int, ...] = (48, 64, 80, 96, 128, 160, 192, 256),
              spectra: _SpectrumCache | None = None) -> DPViews:
    """Fast renderer: the algorithm of :func:`render_dp_reference` with FFT convolution.

    Exact up to float32 rounding: each region is zero-padded to at least ``region + k - 1``, so
    the circular FFT convolution equals the linear one, and overlapping outputs of tiles add up
    (overlap-add) because convolution is linear.
    """
    image = _check_inputs(image, coc)
    dev = resolve_device(device)
    labels, radii = assign_layers(coc, max_layers, coc_step)
    h, w, c = image.shape
    spectra = spectra or _SpectrumCache(psf, dev)
    img_t = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).to(dev)  # C,H,W
    acc_c = torch.zeros((2, c, h, w), device=dev)
    acc_a = torch.zeros((2, 1, h, w), device=dev)
    layer_buf = torch.zeros((2, c + 1, h, w), device=dev)
    boxes = ndimage.find_objects(labels + 1)  # one bounding box per layer, one pass
    for i in range(radii.size - 1, -1, -1):
        radius = float(radii[i])
        half = spectra.psf(radius)[0].shape[0] // 2
        k = 2 * half + 1
        by, bx = boxes[i]
        mask_np = labels[by, bx] == i
        regions = [(y0 + by.start, y1 + by.start, x0 + bx.start, x1 + bx.start)
                   for y0, y1, x0, x1 in _plan_regions(mask_np, half, tile_fft_sizes)]
        mask_t = torch.from_numpy(mask_np).to(dev, img_t.dtype)[None]
        layer = torch.cat([img_t[:, by, bx] * mask_t, mask_t])  # C+1, box
        oy, ox = by.start, bx.start
        # output footprint of this layer: union of regions grown by the kernel half-size
        oy0 = max(min(r[0] for r in regions) - half, 0)
        oy1 = min(max(r[1] for r in regions) + half, h)
        ox0 = max(min(r[2] for r in regions) - half, 0)
        ox1 = min(max(r[3] for r in regions) + half, w)
        layer_buf[:, :, oy0:oy1, ox0:ox1] = 0
        groups: dict[tuple[int, int], list] = {}
        for reg in regions:
            shape = (_fft_len(reg[1] - reg[0] + k - 1), _fft_len(reg[3] - reg[2] + k - 1))
            groups.setdefault(shape, []).append(reg)
        for shape, regs in groups.items():
            batch = torch.zeros((len(regs), c + 1) + shape, device=dev)
            for j, (y0, y1, x0, x1) in enumerate(regs):
                batch[j, :, : y1 - y0, : x1 - x0] = layer[:, y0 - oy:y1 - oy, x0 - ox:x1 - ox]
            spec = torch.fft.rfft2(batch)  # [n, C+1, ny, nx']
            kspec = spectra.get(radius, shape)  # [2, ny, nx']
            out = torch.fft.irfft2(spec[:, None] * kspec[None, :, None], s=shape)  # [n, 2, C+1, ny, nx]
            for j, (y0, y1, x0, x1) in enumerate(regs):
                # full linear-conv output index t maps to image row y0 - half + t
                ty0, tx0 = max(half - y0, 0), max(half - x0, 0)
                ty1 = min(y1 - y0 + k - 1, h - y0 + half)
                tx1 = min(x1 - x0 + k - 1, w - x0 + half)
                layer_buf[:, :, y0 - half + ty0: y0 - half + ty1, x0 - half + tx0: x0 - half + tx1] += \
                    out[j, :, :, ty0:ty1, tx0:tx1]
        col = layer_buf[:, :c, oy0:oy1, ox0:ox1]
        alpha = layer_buf[:, c:, oy0:oy1, ox0:ox1]
        keep = 1 - alpha
        acc_c[:, :, oy0:oy1, ox0:ox1].mul_(keep).add_(col)
        acc_a[:, :, oy0:oy1, ox0:ox1].mul_(keep).add_(alpha)
    views = (acc_c / acc_a.clamp_min(EPS)).permute(0, 2, 3, 1).cpu().numpy()
    left, right = np.ascontiguousarray(views[0]), np.ascontiguousarray(views[1])
    return DPViews(left, right, 0.5 * (left + right), radii)


def disparity_map(coc: np.ndarray, psf) -> np.ndarray:
    """Per-pixel DP disparity (left centroid - right centroid, px) for a signed CoC map,
    tabulated on the map's distinct values (or 256 samples) and interpolated."""
    lo, hi = float(coc.min()), float(coc.max())
    grid = np.unique(np.round(coc, 2)) if np.unique(np.round(coc, 2)).size <= 256 else np.linspace(lo, hi, 256)
    disp = np.array([psf.disparity(float(r)) for r in grid])
    return np.interp(coc, grid, disp).astype(np.float32)
