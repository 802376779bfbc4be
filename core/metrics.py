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
