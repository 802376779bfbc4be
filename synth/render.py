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
- :func:`render_dp`: FFT convolution (scipy.fft on CPU, PyTorch on GPU), per layer restricted
  to where the layer has pixels (its bounding box, or the occupied tiles of a grid, whichever
  costs less), channels and both views batched in one transform, kernel spectra cached. On CPU,
  layers with large kernels are rendered on a coarser grid (pyramid level ``s``: box-average
  down, a matched low-resolution kernel, bicubic up) when the white-noise RMS error of that
  approximation, computed per kernel, is at most ``max_error`` (see :func:`decimation_error`);
  consecutive layers on one level are composited there and upsampled once.
"""
from __future__ import annotations

import hashlib
import math
import weakref
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import cv2
import numpy as np
import scipy.fft
import torch

from calibration.dp_psf import PSFParams, centroid_x, dual_pixel_psf, dp_disparity_px
from calibration.psf_bank import PSFBank
from core.errors import UserError

PSFProvider = Callable[[float], tuple[np.ndarray, np.ndarray]]
EPS = 1e-6
COC_STEP = 0.25  # px: CoC quantisation of the data engine (finer is invisible, coarser shows bands)
# pyramid rendering (CPU): levels tried, and the largest white-noise RMS error (per unit input
# variance) of a layer's kernel pair at a level for it to be used (see decimation_error)
PYRAMID_FACTORS = (2, 3, 4, 6, 8)
# 1e-2 (was 4e-3, issue 17): bench_synth.py 6.4x -> 10.6x the reference at one thread, 60.5 ->
# 54.4 dB against it; the white-noise test scenes (the worst case) 64-70 -> 53.7-57.2 dB, where
# 2e-2 fell to 49.0 dB on one of them (docs/BENCHMARKS.md)
PYRAMID_MAX_ERROR = 1e-2
# smaller kernels are rendered exactly without trying the pyramid (a shortcut: checked for the
# paper's orders n = 3 and 9, no PSF below |r| = 12 px passes level 2 at 4e-3; at a larger error
# it may leave a kernel exact that could go coarse, which is always allowed)
PYRAMID_MIN_KERNEL = 25


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
    rounded = np.round(coc, 4)
    # a strided sample with more distinct values than max_layers settles it without sorting all
    if np.unique(rounded.ravel()[:: max(1, rounded.size // 4096)]).size <= max_layers:
        values, inverse = np.unique(rounded, return_inverse=True)
        if values.size <= max_layers:
            return inverse.reshape(coc.shape).astype(np.int32), values
    lo, hi = float(coc.min()), float(coc.max())
    width = (hi - lo) / max_layers
    labels = np.clip(np.floor((coc - lo) / width), 0, max_layers - 1).astype(np.int32)
    present = np.bincount(labels.ravel(), minlength=max_layers) > 0
    remap = np.cumsum(present).astype(np.int32) - 1  # bin -> index among the bins with pixels
    return remap[labels], lo + (np.flatnonzero(present) + 0.5) * width


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
    """rfft2 of padded kernel pairs, keyed by (radius, pyramid factor, FFT shape); kernels depend
    only on radius. Also caches the pyramid factor chosen per radius. At most ``max_bytes`` of
    spectra (oldest dropped first). :meth:`for_psf` keeps one per PSF provider across calls."""

    _shared: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()

    def __init__(self, psf: PSFProvider, device: torch.device, max_bytes: int = 128 << 20):
        self.psf, self.device, self.max_bytes = psf, device, max_bytes
        self._store: dict = {}
        self._bytes = 0
        self._kernels: dict = {}
        self._factors: dict = {}

    def kernels(self, radius: float, factor: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """The (left, right) kernel pair on the grid of pyramid ``factor`` (1: full resolution)."""
        key = (round(radius, 4), factor)
        pair = self._kernels.get(key)
        if pair is None:
            pair = _normalised_views(self.psf, radius)
            if factor > 1:
                pair = tuple(_pyramid_cached("kernel", k, factor) for k in pair)
            self._kernels[key] = pair
        return pair

    def factor(self, radius: float, max_error: float, factors: tuple[int, ...]) -> int:
        """The pyramid factor of a radius: the levels are tried coarser and coarser (the error
        grows with the factor) while the white-noise error of both kernels is <= max_error."""
        key = (round(radius, 4), max_error, factors)
        if key not in self._factors:
            chosen = 1
            pair = self.kernels(radius)
            if pair[1].shape == pair[0].shape and np.array_equal(pair[1], pair[0][:, ::-1]):
                pair = pair[:1]  # mirror images: the (mirror-symmetric) pyramid errs alike
            for f in sorted(x for x in factors if x > 1):
                if min(pair[0].shape) < max(4 * f + 1, PYRAMID_MIN_KERNEL) or any(
                        _pyramid_cached("error", k, f) > max_error for k in pair):
                    break
                chosen = f
            self._factors[key] = chosen
        return self._factors[key]

    def get(self, radius: float, shape: tuple[int, int], factor: int = 1) -> torch.Tensor:
        key = (round(radius, 4), factor, shape)
        spec = self._store.get(key)
        if spec is None:
            left, right = self.kernels(radius, factor)
            k = np.stack([left, right]).astype(np.float32)
            if self.device.type == "cpu":  # scipy's FFT (numpy arrays): faster than torch's on CPU
                spec = scipy.fft.rfft2(k, s=shape)  # [2, ny, nx//2+1]
            else:
                spec = torch.fft.rfft2(torch.from_numpy(k).to(self.device), s=shape)
            size = spec.nbytes if isinstance(spec, np.ndarray) else spec.numel() * spec.element_size()
            while self._store and self._bytes + size > self.max_bytes:
                old = self._store.pop(next(iter(self._store)))
                self._bytes -= old.nbytes if isinstance(old, np.ndarray) else old.numel() * old.element_size()
            self._store[key] = spec
            self._bytes += size
        return spec

    @classmethod
    def for_psf(cls, psf: PSFProvider, device: torch.device) -> "_SpectrumCache":
        """The cache of this PSF provider on ``device`` (kept while the provider lives)."""
        try:
            per_device = cls._shared.setdefault(psf, {})
        except TypeError:  # not weak-referenceable or not hashable: a cache for this call
            return cls(psf, device)
        if str(device) not in per_device:
            per_device[str(device)] = cls(psf, device)
        return per_device[str(device)]


def _keys_cubic(t: np.ndarray, a: float = -0.75) -> np.ndarray:
    """OpenCV's bicubic interpolation kernel (Keys, a = -0.75)."""
    t = np.abs(t)
    return np.where(t <= 1, (a + 2) * t ** 3 - (a + 3) * t ** 2 + 1,
                    np.where(t < 2, a * t ** 3 - 5 * a * t ** 2 + 8 * a * t - 4 * a, 0.0))


def _down_up_transfer(n: int, factor: int) -> np.ndarray:
    """Zero-phase transfer of box-average down then bicubic up by ``factor``, along one axis,
    at the n frequencies of an n-point coarse grid (the part a coarse kernel must undo)."""
    f = np.fft.fftfreq(n) / factor  # full-resolution cycles per pixel
    box = np.cos(2 * np.pi * np.outer(f, np.arange(factor) - (factor - 1) / 2)).sum(1) / factor
    taps = np.arange(-2 * factor, 2 * factor + 1) + (0.5 if factor % 2 == 0 else 0.0)
    taps = taps[np.abs(taps) < 2 * factor]
    cubic = (_keys_cubic(taps / factor)[None] * np.cos(2 * np.pi * np.outer(f, taps))).sum(1)
    return box * cubic / factor


def decimated_kernel(kernel: np.ndarray, factor: int) -> np.ndarray:
    """Kernel for pyramid level ``factor``: ``up(k_s * down(x)) ~= k * x`` with ``down`` the
    factor x factor box average and ``up`` OpenCV's bicubic resize. Built in the Fourier domain
    (the kernel's spectrum on the coarse grid's frequencies, divided by the down/up transfer),
    made spatial, cropped to ceil(half / factor) + 3 pixels each side and rescaled to the
    kernel's sum."""
    kh, kw = kernel.shape
    hsy, hsx = math.ceil((kh // 2) / factor) + 3, math.ceil((kw // 2) / factor) + 3
    ny, nx = scipy.fft.next_fast_len(4 * hsy + 2), scipy.fft.next_fast_len(4 * hsx + 2)
    # the kernel's DFT on a grid factor x finer than the coarse one, kept at the bins k that are
    # the coarse grid's frequencies k / n (|k| < n / 2), one axis at a time; the phase ramp
    # centres the kernel on index 0
    ky = np.fft.fftfreq(ny, 1.0 / ny)
    kx = np.fft.fftfreq(nx, 1.0 / nx)
    cols = scipy.fft.fft(kernel, n=factor * ny, axis=0)[ky.astype(int) % (factor * ny)]
    cols *= np.exp(2j * np.pi * ky * (kh // 2) / (factor * ny))[:, None]
    spec = scipy.fft.fft(cols, n=factor * nx, axis=1)[:, kx.astype(int) % (factor * nx)]
    spec *= np.exp(2j * np.pi * kx * (kw // 2) / (factor * nx))[None, :]
    spec /= np.outer(_down_up_transfer(ny, factor), _down_up_transfer(nx, factor))
    spatial = np.fft.fftshift(np.real(scipy.fft.ifft2(spec)))
    cy, cx = ny // 2, nx // 2
    small = spatial[cy - hsy: cy + hsy + 1, cx - hsx: cx + hsx + 1]
    # the crop drops a little of the tails: restore the kernel's sum (uniform areas keep their level)
    small = small * (kernel.sum() / small.sum())
    return small.astype(np.float32)


def _pyramid_up(planes: np.ndarray, factor: int) -> np.ndarray:
    h, w = planes.shape[:2]
    out = cv2.resize(planes, (w * factor, h * factor), interpolation=cv2.INTER_CUBIC)
    return out.reshape(h * factor, w * factor, -1)


def decimation_error(kernel: np.ndarray, factor: int, worst: bool = True) -> tuple[float | None, float]:
    """Error of rendering with ``kernel`` at pyramid level ``factor`` instead of exactly, as
    (worst case, white noise): the largest absolute error for any input with values in [0, 1]
    (sum of |error| of the impulse responses reaching one output pixel), and the RMS error for
    unit-variance white noise (root of the sum of squares). The operator is periodic with period
    ``factor``: an impulse anywhere in a coarse pixel gives the same coarse response, so the
    ``factor``^2 phases are one upsampled kernel against ``factor``^2 shifts of the exact one.
    ``worst=False`` skips the worst case (None): the level choice needs the white-noise figure."""
    kh, kw = kernel.shape
    f = factor
    small = decimated_kernel(kernel, f)
    sh, sw = small.shape
    # coarse impulse response (impulse / f^2 after the box average) in a 2-pixel zero frame
    coarse = np.zeros((sh + 4, sw + 4), np.float32)
    coarse[2:-2, 2:-2] = small / f ** 2
    approx = _pyramid_up(coarse[..., None], f)[..., 0]
    # the coarse centre pixel covers fine rows cy0 .. cy0 + f - 1
    cy0, cx0 = (2 + sh // 2) * f, (2 + sw // 2) * f
    err = np.broadcast_to(approx, (f, f) + approx.shape).copy()
    k32 = kernel.astype(np.float32)
    for py in range(f):
        for px in range(f):
            y0, x0 = cy0 + py - kh // 2, cx0 + px - kw // 2
            err[py, px, y0:y0 + kh, x0:x0 + kw] -= k32
    # [impulse phase y, x, coarse row, output phase y, coarse col, output phase x]
    err = err.reshape(f * f * approx.shape[0] // f, f, approx.shape[1] // f, f)
    white = float(np.sqrt(np.einsum("aybx,aybx->yx", err, err, dtype=np.float64).max()))
    if not worst:
        return None, white
    return float(np.abs(err).sum(axis=(0, 2), dtype=np.float64).max()), white


_PYRAMID_CACHE: dict = {"kernel": {}, "error": {}}
_PYRAMID_CACHE_SIZE = {"kernel": 4096, "error": 65536}  # coarse kernels are a few kB, errors two floats


def _pyramid_cached(kind: str, kernel: np.ndarray, factor: int):
    """``decimated_kernel`` / ``decimation_error`` cached by the kernel's bytes (new PSF
    provider objects with the same kernels, e.g. one per sample, reuse them)."""
    store = _PYRAMID_CACHE[kind]
    key = (hashlib.blake2b(np.ascontiguousarray(kernel).tobytes(), digest_size=16).digest(), kernel.shape, factor)
    if key not in store:
        if len(store) >= _PYRAMID_CACHE_SIZE[kind]:
            store.pop(next(iter(store)))
        store[key] = (decimated_kernel(kernel, factor) if kind == "kernel"
                      else decimation_error(kernel, factor, worst=False)[1])
    return store[key]



@lru_cache(maxsize=4096)
def _fft_len(n: int) -> int:
    return scipy.fft.next_fast_len(n, real=True)


def _fft_cost(shape: tuple[int, int]) -> float:
    n = shape[0] * shape[1]
    return n * math.log2(max(n, 2))


def _occupied_tiles(mask: np.ndarray, tile: int, pixels: tuple[np.ndarray, np.ndarray] | None = None
                    ) -> np.ndarray:
    """(row, col) of the ``tile`` x ``tile`` cells holding a pixel of ``mask`` (from its pixel
    coordinates when given: cost ~ pixel count)."""
    ys, xs = pixels if pixels is not None else np.nonzero(mask)
    tw = math.ceil(mask.shape[1] / tile)
    cells = np.flatnonzero(np.bincount((ys // tile) * tw + xs // tile))
    return np.stack([cells // tw, cells % tw], axis=1)


TILE_OVERHEAD = 64 * 64  # per-region bookkeeping, in the FFT cost of this many pixels (measured)


def _plan_regions(mask: np.ndarray, half: int, fft_sizes: tuple[int, ...],
                  pixels: tuple[np.ndarray, np.ndarray] | None = None) -> list[tuple[int, int, int, int]]:
    """Input regions (y0, y1, x0, x1) of a cropped layer mask to convolve: the whole crop, or the
    occupied tiles of a grid (overlap-add), whichever candidate needs the least work (FFT work
    plus a fixed cost per region). Tiles are sized so that tile + k - 1 is exactly one of
    ``fft_sizes`` (no wasted padding)."""
    h, w = mask.shape
    k = 2 * half + 1
    overhead = _fft_cost((TILE_OVERHEAD, 1))
    best_cost = _fft_cost((_fft_len(h + k - 1), _fft_len(w + k - 1))) + overhead
    best: list[tuple[int, int, int, int]] = [(0, h, 0, w)]
    for n in fft_sizes:
        tile = n - k + 1
        if tile < 16 or tile >= max(h, w):
            continue
        pixels = pixels if pixels is not None else np.nonzero(mask)
        occupied = _occupied_tiles(mask, tile, pixels)
        cost = len(occupied) * (_fft_cost((n, n)) + overhead)
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


_FFT_WORKERS = [1]  # scipy.fft workers of the CPU renderer (set by render_dp)


def render_dp(*args, threads: int | None = 1, **kwargs) -> DPViews:
    """Fast renderer (see :func:`_render_dp`). On CPU, ``threads`` (default 1) are scipy.fft
    workers over the batched transforms only; every other operation runs on one PyTorch thread:
    with more, PyTorch's thread barriers cost 10-20x when another process shares the cores
    (ad-hoc check: 0.3 s vs 4.5 s per 256x256 sample on a busy 2-core machine), whereas
    scipy's workers each take whole transforms. For data generation, parallelise across
    processes (``synth --shard``, DataLoader workers) rather than threads.
    ``threads=None``: PyTorch's current setting for both."""
    n = torch.get_num_threads() if threads is None else threads
    if n < 1:
        raise RenderError(f"threads must be >= 1, got {threads}")
    old = _FFT_WORKERS[0]
    _FFT_WORKERS[0] = n
    try:
        with _torch_threads(1 if threads else None):
            return _render_dp(*args, **kwargs)
    finally:
        _FFT_WORKERS[0] = old


def _convolve_full(layer: torch.Tensor, mask: np.ndarray, half: tuple[int, int], kspec: Callable,
                   fft_sizes: tuple[int, ...], pixels: tuple[np.ndarray, np.ndarray] | None = None
                   ) -> torch.Tensor:
    """Full linear convolution of planes ``layer`` [N, h, w] with a kernel pair of half-sizes
    ``half`` (rows, cols): [2, N, h + 2 hy, w + 2 hx], output (t, u) at input (t - hy, u - hx).

    Only the regions :func:`_plan_regions` picks are transformed (crop or occupied tiles), each
    zero-padded to at least region + k - 1 so the circular FFT convolution equals the linear
    one; overlapping tile outputs add up (overlap-add) because convolution is linear.
    ``kspec(shape)`` gives the kernel pair's rfft2 at an FFT shape; ``pixels`` (rows, cols of
    the mask's pixels) saves a scan of the mask."""
    n, h, w = layer.shape
    hy, hx = half
    ky, kx = 2 * hy + 1, 2 * hx + 1
    cpu = layer.device.type == "cpu"
    groups: dict[tuple[int, int], list] = {}
    for reg in _plan_regions(mask, max(hy, hx), fft_sizes, pixels):
        shape = (_fft_len(reg[1] - reg[0] + ky - 1), _fft_len(reg[3] - reg[2] + kx - 1))
        groups.setdefault(shape, []).append(reg)
    single = len(groups) == 1 and next(iter(groups.values())) == [(0, h, 0, w)]
    if cpu:  # scipy.fft on numpy views of the tensors (no copies)
        layer = layer.numpy()
        out_full = None if single else np.zeros((2, n, h + ky - 1, w + kx - 1), np.float32)
    else:
        out_full = None if single else torch.zeros((2, n, h + ky - 1, w + kx - 1), device=layer.device)
    for shape, regs in groups.items():
        if cpu:
            batch = np.zeros((len(regs), n) + shape, np.float32)
        else:
            batch = torch.zeros((len(regs), n) + shape, device=layer.device)
        for j, (y0, y1, x0, x1) in enumerate(regs):
            batch[j, :, : y1 - y0, : x1 - x0] = layer[:, y0:y1, x0:x1]
        if cpu:
            spec = scipy.fft.rfft2(batch, workers=_FFT_WORKERS[0])  # [r, N, ny, nx']
            out = scipy.fft.irfft2(spec[:, None] * kspec(shape)[None, :, None], s=shape,
                                   workers=_FFT_WORKERS[0])  # [r, 2, N, ny, nx]
        else:
            spec = torch.fft.rfft2(batch)
            out = torch.fft.irfft2(spec[:, None] * kspec(shape)[None, :, None], s=shape)
        if single:  # the whole crop: its output as it is
            out_full = out[0, :, :, : h + ky - 1, : w + kx - 1]
            break
        for j, (y0, y1, x0, x1) in enumerate(regs):
            out_full[:, :, y0:y1 + ky - 1, x0:x1 + kx - 1] += out[j, :, :, : y1 - y0 + ky - 1, : x1 - x0 + kx - 1]
    return torch.from_numpy(out_full) if cpu else out_full


def _over(acc: torch.Tensor, layer: torch.Tensor) -> None:
    """In place: ``acc <- layer + (1 - alpha) acc`` ("over"), for [2, C+1, h, w] planes whose
    last channel is alpha (colour premultiplied by the blurred mask)."""
    acc.mul_(1 - layer[:, -1:]).add_(layer)


class _CoarseGroup:
    """Consecutive layers rendered at one pyramid level, composited on the coarse grid.

    The coarse grid covers the image (coarse pixel j holds fine pixels ``f (j - 2)`` to
    ``f (j - 2) + f - 1``, a 2-pixel frame for the bicubic taps). Each layer's planes are
    box-averaged onto it straight from the layer's pixels (cost ~ its pixel count), convolved
    exactly with the coarse kernel pair and composited ("over", back to front) into the group's
    colour and alpha; :meth:`upsample` brings the group to full resolution once. The over
    operator is associative, so compositing the group first and then over the image is the
    reference's order; the approximation is the coarse grid."""

    FRAME = 2

    def __init__(self, factor: int, h: int, w: int, c: int):
        self.factor, self.h, self.w, self.c = factor, h, w, c
        self.hc, self.wc = -(-h // factor) + 2 * self.FRAME, -(-w // factor) + 2 * self.FRAME
        self.acc = torch.zeros((2, c + 1, self.hc, self.wc))  # colour planes, then alpha

    def add(self, image: np.ndarray, ys: np.ndarray, xs: np.ndarray, small_half: tuple[int, int],
            kspec: Callable, fft_sizes: tuple[int, ...]) -> None:
        """Composite the layer of pixels (ys, xs) over the group."""
        f, c, fr = self.factor, self.c, self.FRAME
        cy, cx = ys // f + fr, xs // f + fr
        y0, x0 = int(cy.min()), int(cx.min())
        hb, wb = int(cy.max()) + 1 - y0, int(cx.max()) + 1 - x0
        idx = (cy - y0) * wb + (cx - x0)
        planes = np.empty((c + 1, hb * wb), np.float32)
        for ch in range(c):
            planes[ch] = np.bincount(idx, weights=image[ys, xs, ch], minlength=hb * wb)
        planes[c] = np.bincount(idx, minlength=hb * wb)
        planes *= 1.0 / (f * f)
        planes = planes.reshape(c + 1, hb, wb)
        sy, sx = small_half
        full = _convolve_full(torch.from_numpy(planes), planes[c] > 0, small_half, kspec, fft_sizes,
                              np.divmod(np.unique(idx), wb))
        top_c, left_c = y0 - sy, x0 - sx
        gy0, gx0 = max(top_c, 0), max(left_c, 0)
        gy1, gx1 = min(top_c + full.shape[2], self.hc), min(left_c + full.shape[3], self.wc)
        part = full[:, :, gy0 - top_c:gy1 - top_c, gx0 - left_c:gx1 - left_c]
        _over(self.acc[:, :, gy0:gy1, gx0:gx1], part)

    def upsample(self) -> torch.Tensor:
        """The group's colour and alpha planes [2, C+1, H, W] at full resolution."""
        f, c, fr = self.factor, self.c, self.FRAME
        both = self.acc.reshape(2 * (c + 1), self.hc, self.wc)
        up = _pyramid_up(np.ascontiguousarray(both.permute(1, 2, 0).numpy()), f)
        up = up[f * fr: f * fr + self.h, f * fr: f * fr + self.w]
        return torch.from_numpy(np.ascontiguousarray(up.transpose(2, 0, 1))).reshape(2, c + 1, self.h, self.w)


@torch.no_grad()
def _render_dp(image: np.ndarray, coc: np.ndarray, psf: PSFProvider, max_layers: int = 500,
              coc_step: float | None = None, device: str | torch.device | None = "auto",
              tile_fft_sizes: tuple[int, ...] = (48, 64, 80, 96, 128, 160, 192, 256),
              spectra: _SpectrumCache | None = None, max_error: float | None = None,
              pyramid_factors: tuple[int, ...] = PYRAMID_FACTORS) -> DPViews:
    """Fast renderer: the algorithm of :func:`render_dp_reference` with FFT convolution.

    Full-resolution layers are exact up to float32 rounding (see :func:`_convolve_full`). On CPU
    a layer whose kernel pair renders at a pyramid level (one of ``pyramid_factors``) with a
    white-noise RMS error (:func:`decimation_error`) of at most ``max_error`` is rendered there
    (:func:`_pyramid_layer`); ``max_error=None`` means :data:`PYRAMID_MAX_ERROR` on CPU and 0
    (exact, the GPU path as before) on other devices; 0 turns the pyramid off.
    """
    image = _check_inputs(image, coc)
    dev = resolve_device(device)
    if max_error is None:
        max_error = PYRAMID_MAX_ERROR if dev.type == "cpu" else 0.0
    if max_error and dev.type != "cpu":
        raise RenderError("pyramid rendering (max_error > 0) runs on CPU only; use max_error=0 on "
                          f"{dev.type}")
    labels, radii = assign_layers(coc, max_layers, coc_step)
    h, w, c = image.shape
    spectra = spectra or _SpectrumCache.for_psf(psf, dev)
    img_t = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).to(dev)  # C,H,W
    acc = torch.zeros((2, c + 1, h, w), device=dev)  # per view: colour planes, then alpha
    # each layer's pixels (flat indices), from one sort of the labels
    order = np.argsort(labels.ravel(), kind="stable")
    ends = np.cumsum(np.bincount(labels.ravel(), minlength=radii.size))
    group: _CoarseGroup | None = None

    for i in range(radii.size - 1, -1, -1):  # back (largest CoC) to front
        radius = float(radii[i])
        ys, xs = np.divmod(order[(ends[i - 1] if i else 0): ends[i]], w)
        factor = spectra.factor(radius, max_error, tuple(pyramid_factors)) if max_error else 1
        if group is not None and group.factor != factor:
            _over(acc, group.upsample())
            group = None
        if factor > 1:
            group = group or _CoarseGroup(factor, h, w, c)
            sh, sw = spectra.kernels(radius, factor)[0].shape
            group.add(image, ys, xs, (sh // 2, sw // 2),
                      lambda shape: spectra.get(radius, shape, factor), tile_fft_sizes)
            continue
        kh, kw = spectra.kernels(radius)[0].shape
        y0, x0 = int(ys.min()), int(xs.min())
        by, bx = ys - y0, xs - x0
        mask_np = np.zeros((int(by.max()) + 1, int(bx.max()) + 1), bool)
        mask_np[by, bx] = True
        if dev.type == "cpu":  # planes straight from the pixels
            planes = np.zeros((c + 1,) + mask_np.shape, np.float32)
            planes[:c, by, bx] = image[ys, xs].T
            planes[c, by, bx] = 1.0
            layer = torch.from_numpy(planes)
        else:
            mask_t = torch.from_numpy(mask_np).to(dev, img_t.dtype)[None]
            box = img_t[:, y0:y0 + mask_np.shape[0], x0:x0 + mask_np.shape[1]]
            layer = torch.cat([box * mask_t, mask_t])  # C+1, box
        full = _convolve_full(layer, mask_np, (kh // 2, kw // 2),
                              lambda shape: spectra.get(radius, shape), tile_fft_sizes, (by, bx))
        top, left = y0 - kh // 2, x0 - kw // 2
        # clip the layer's output to the image
        y0, x0 = max(top, 0), max(left, 0)
        y1, x1 = min(top + full.shape[2], h), min(left + full.shape[3], w)
        _over(acc[:, :, y0:y1, x0:x1], full[:, :, y0 - top:y1 - top, x0 - left:x1 - left])
    if group is not None:
        _over(acc, group.upsample())
    views = (acc[:, :c] / acc[:, c:].clamp_min(EPS)).permute(0, 2, 3, 1).cpu().numpy()
    left, right = np.ascontiguousarray(views[0]), np.ascontiguousarray(views[1])
    return DPViews(left, right, 0.5 * (left + right), radii)


def disparity_map(coc: np.ndarray, psf) -> np.ndarray:
    """Per-pixel DP disparity (left centroid - right centroid, px) for a signed CoC map,
    tabulated on the map's distinct values (or 256 samples) and interpolated."""
    lo, hi = float(coc.min()), float(coc.max())
    grid = np.unique(np.round(coc, 2)) if np.unique(np.round(coc, 2)).size <= 256 else np.linspace(lo, hi, 256)
    disp = np.array([psf.disparity(float(r)) for r in grid])
    return np.interp(coc, grid, disp).astype(np.float32)
