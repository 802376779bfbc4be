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
