"""Image quality metrics, one of each for the whole project: PSNR, SSIM (Gaussian window, Wang
et al. 2004 constants), MAE. Training, evaluation, export parity and plots all use these.

LPIPS is left out: no package here ships its weights, and nothing is downloaded at run time.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def psnr(pred: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray, peak: float = 1.0) -> float:
    """10 log10(peak^2 / MSE) in float64: +inf for identical images, -inf when the MSE is not finite."""
    mse = torch.mean((_t(pred).double() - _t(target).double()) ** 2).item()
    if not math.isfinite(mse):
        return float("-inf")
    return float("inf") if mse == 0 else 10.0 * math.log10(peak * peak / mse)


def mae(pred, target) -> float:
    return torch.mean(torch.abs(_t(pred).double() - _t(target).double())).item()


def ssim(pred, target, peak: float = 1.0, sigma: float = 1.5, size: int = 11) -> float:
    """Mean SSIM over channels (images NCHW or CHW), valid-region Gaussian windows."""
    x, y = _t(pred).double(), _t(target).double()
    if x.ndim == 3:
        x, y = x[None], y[None]
    c = x.shape[1]
    g = torch.exp(-((torch.arange(size, dtype=torch.float64) - size // 2) ** 2) / (2 * sigma * sigma))
    g = (g / g.sum())
    win = (g[:, None] * g[None, :]).expand(c, 1, size, size).contiguous()
    f = lambda t: F.conv2d(t, win, groups=c)
    mx, my = f(x), f(y)
    sxx, syy, sxy = f(x * x) - mx * mx, f(y * y) - my * my, f(x * y) - mx * my
    c1, c2 = (0.01 * peak) ** 2, (0.03 * peak) ** 2
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return s.mean().item()


def _t(a) -> torch.Tensor:
    return a.detach() if isinstance(a, torch.Tensor) else torch.from_numpy(np.asarray(a))


def grid_peak_ratio(image, periods=(2, 4, 8), guard: int = 2, ring: int = 4) -> float:
    """How strongly ``image`` (H x W or C x H x W, averaged over channels) carries a periodic grid
    of 2, 4 or 8 px, the signature of stride-2 up-sampling (transposed-conv checkerboards): the
    largest ratio of the power at a grid frequency (k/period cycles per px along y, x or both) to
    the median power of the ring of frequencies around it (``guard`` bins excluded). Natural and
    blurred images stay near 1-3; a visible grid gives hundreds to thousands."""
    a = np.asarray(image, dtype=np.float64)
    if a.ndim == 3:
        a = a.mean(axis=0)
    h, w = a.shape
    a = (a - a.mean()) * np.outer(np.hanning(h), np.hanning(w))
    power = np.abs(np.fft.fft2(a)) ** 2
    worst = 0.0
    for p in periods:
        ys = {0} | {round(k * h / p) for k in range(1, p)}
        xs = {0} | {round(k * w / p) for k in range(1, p)}
        for fy in ys:
            for fx in xs:
                if fy == 0 and fx == 0:
                    continue
                yy, xx = np.meshgrid(np.arange(fy - ring - guard, fy + ring + guard + 1),
                                     np.arange(fx - ring - guard, fx + ring + guard + 1), indexing="ij")
                far = (np.abs(yy - fy) > guard) | (np.abs(xx - fx) > guard)
                near_dc = (np.minimum(yy % h, h - yy % h) <= guard) & (np.minimum(xx % w, w - xx % w) <= guard)
                around = power[yy[far & ~near_dc] % h, xx[far & ~near_dc] % w]
                peak = power[fy % h, fx % w]
                worst = max(worst, float(peak / (np.median(around) + 1e-30)))
    return worst
