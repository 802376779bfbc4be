"""Image quality metrics, one of each for the whole project: PSNR, SSIM (Gaussian window, Wang
et al. 2004 constants), MAE. Training, evaluation, export parity and plots all use these.

LPIPS is left out: no package here ships its weights, and nothing is downloaded at run time.
"""
from __future__ import annotations

import math

import numpy as np
import torch


def psnr(pred: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray, peak: float = 1.0) -> float:
    """10 log10(peak^2 / MSE) in float64: +inf for identical images, -inf when the MSE is not finite."""
    mse = torch.mean((_t(pred).double() - _t(target).double()) ** 2).item()
    if not math.isfinite(mse):
        return float("-inf")
    return float("inf") if mse == 0 else 10.0 * math.log10(peak * peak / mse)


def mae(pred, target) -> float:
    return torch.mean(torch.abs(_t(pred).double() - _t(target).double())).item()


def ssim(pred, target, peak: float = 1.0, sigma: float = 1.5, size: int = 11) -> float:
    """Mean SSIM over channels (images NCHW or CHW), valid-region Gaussian windows. The window is
    separable: two 1-D passes in float64 (OpenCV), the same sums as the 2-D window and about 20x
    faster than a 2-D float64 convolution on a 3 MP image."""
    import cv2

    x, y = _t(pred).double().cpu().numpy(), _t(target).double().cpu().numpy()
    if x.ndim == 3:
        x, y = x[None], y[None]
    g = np.exp(-((np.arange(size, dtype=np.float64) - size // 2) ** 2) / (2 * sigma * sigma))
    g /= g.sum()
    r = size // 2
    valid = lambda t: cv2.sepFilter2D(t, cv2.CV_64F, g, g, borderType=cv2.BORDER_REFLECT)[r:t.shape[0] - r,  # noqa: E731
                                                                                         r:t.shape[1] - r]
    c1, c2 = (0.01 * peak) ** 2, (0.03 * peak) ** 2
    total, count = 0.0, 0
    for a, b in zip(x.reshape(-1, *x.shape[-2:]), y.reshape(-1, *y.shape[-2:])):
        a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
        mx, my = valid(a), valid(b)
        sxx, syy, sxy = valid(a * a) - mx * mx, valid(b * b) - my * my, valid(a * b) - mx * my
        s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
        total, count = total + float(s.sum()), count + s.size
    return total / count if count else float("nan")


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
