"""Training losses (seed 004 for RDPD, seed 001 for DC2, seed 003 for UiD)."""
from __future__ import annotations

import functools

import cv2
import numpy as np
import torch
import torch.nn.functional as F

EDGE_KERNEL_SIZES = (3, 7, 11)
LAMBDA_X, LAMBDA_Y = 0.03, 0.02  # seed 004


@functools.lru_cache(maxsize=8)
def _sobel_pair(ksize: int) -> tuple[np.ndarray, np.ndarray]:
    """Sobel derivative kernels of size ``ksize`` (OpenCV's separable construction), scaled to
    unit L1 norm so the three scales weigh alike."""
    dx, sy = cv2.getDerivKernels(1, 0, ksize, normalize=False)
    gx = np.outer(sy.ravel(), dx.ravel()).astype(np.float32)
    gx /= np.abs(gx).sum()
    return gx, np.ascontiguousarray(gx.T)


def sobel(x: torch.Tensor, ksize: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel horizontal and vertical Sobel responses (replicate padding)."""
    gx, gy = _sobel_pair(ksize)
    c = x.shape[1]
    k = torch.from_numpy(np.stack([gx, gy]))[:, None].to(x).repeat(c, 1, 1, 1)  # [2c,1,k,k]
    p = ksize // 2
    out = F.conv2d(F.pad(x, (p, p, p, p), mode="replicate"), k, groups=c)
    return out[:, 0::2], out[:, 1::2]


def edge_loss(pred: torch.Tensor, target: torch.Tensor, kernel_sizes=EDGE_KERNEL_SIZES,
              lambda_x: float = LAMBDA_X, lambda_y: float = LAMBDA_Y) -> torch.Tensor:
    """Multi-scale Sobel edge loss (seed 004): sum over kernel sizes of
    lambda_x MSE(Gx pred, Gx target) + lambda_y MSE(Gy pred, Gy target)."""
    total = pred.new_zeros(())
    for k in kernel_sizes:
        px, py = sobel(pred, k)
        tx, ty = sobel(target, k)
        total = total + lambda_x * F.mse_loss(px, tx) + lambda_y * F.mse_loss(py, ty)
    return total


def rdpd_loss(pred: torch.Tensor, target: torch.Tensor) -> dict:
    """MSE + multi-scale edge loss (seed 004); works on [B,3,H,W] or [B,T,3,H,W]."""
    if pred.ndim == 5:
        pred, target = pred.flatten(0, 1), target.flatten(0, 1)
    mse = F.mse_loss(pred, target)
    edge = edge_loss(pred, target)
    return {"loss": mse + edge, "mse": mse, "edge": edge}


DC2_SCALE_WEIGHTS = {"image": 1.0, "image_half": 0.5, "image_quarter": 0.25, "image_eighth": 0.125}


def dc2_loss(outputs: dict, target: torch.Tensor) -> dict:
    """Multi-scale reconstruction loss over DC2's 1x..1/8 outputs against the target
    average-pooled to each scale (seed 001), plus the edge loss at full resolution."""
    terms = {}
    total = target.new_zeros(())
    for name, w in DC2_SCALE_WEIGHTS.items():
        out = outputs[name]
        factor = target.shape[-1] // out.shape[-1]
        t = F.avg_pool2d(target, factor) if factor > 1 else target
        terms[name] = F.mse_loss(out, t)
        total = total + w * terms[name]
    terms["edge"] = edge_loss(outputs["image"], target)
    terms["loss"] = total + terms["edge"]
    return terms


LAMBDA_COC, LAMBDA_GRAD = 0.1, 0.05  # our choice: seed 003 names the terms, not their weights


def gradient_l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """L1 between the finite-difference gradients of two maps (smoothness of the CoC map)."""
    dx = lambda t: t[..., :, 1:] - t[..., :, :-1]
    dy = lambda t: t[..., 1:, :] - t[..., :-1, :]
    return F.l1_loss(dx(a), dx(b)) + F.l1_loss(dy(a), dy(b))


def uid_loss(outputs: dict, targets: dict) -> dict:
    """L_deb + L_reb + lambda_coc L_coc + lambda_grad L_coc_grad (seed 003)."""
    deb = F.mse_loss(outputs["all_in_focus"], targets["all_in_focus"]) + \
        edge_loss(outputs["all_in_focus"], targets["all_in_focus"])
    reb = F.mse_loss(outputs["refocused"], targets["refocused"])
    coc = F.l1_loss(outputs["defocus"], targets["defocus"])
    grad = gradient_l1(outputs["defocus"], targets["defocus"])
    return {"loss": deb + reb + LAMBDA_COC * coc + LAMBDA_GRAD * grad, "deblur": deb, "reblur": reb,
            "coc": coc, "coc_grad": grad}
