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


LAMBDA_REFINED = 0.25  # our choice: each refiner's full-size estimate against the target
LAMBDA_MASK = 0.01  # our choice: weighted BCE of the full-size UW mask against the oracle choice


def oracle_label(wide: np.ndarray, ultrawide: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Label and weight (1 x H x W each) for DC2's UW mask from C x H x W arrays: label 1 where
    the aligned UW is closer to the target than W (the per-pixel oracle of
    ``train.evaluate.oracle_pick``, ties to W), weight |err_W - err_UW| (squared errors summed
    over channels): pixels where the two inputs are equally good do not pull the mask."""
    ew = ((wide - target) ** 2).sum(0)
    eu = ((ultrawide - target) ** 2).sum(0)
    return (eu < ew).astype(np.float32)[None], np.abs(ew - eu).astype(np.float32)[None]


def weighted_bce(p: torch.Tensor, label: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """sum(w * BCE(p, label)) / sum(w) for probabilities ``p``."""
    bce = F.binary_cross_entropy(p.clamp(1e-4, 1 - 1e-4), label, reduction="none")
    return (weight * bce).sum() / (weight.sum() + 1e-8)


def refined_oracle(refined_w: torch.Tensor, refined_uw: torch.Tensor, target: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`oracle_label` on the two estimates the blend mixes (N x 3 x H x W tensors, no
    gradient): label 1 where the refined UW is closer to the target than the refined W."""
    with torch.no_grad():
        ew = ((refined_w - target) ** 2).sum(1, keepdim=True)
        eu = ((refined_uw - target) ** 2).sum(1, keepdim=True)
        return (eu < ew).to(target.dtype), (ew - eu).abs()


def dc2_loss(outputs: dict, target: torch.Tensor, oracle_uw: torch.Tensor | None = None,
             oracle_weight: torch.Tensor | None = None) -> dict:
    """Multi-scale reconstruction loss over DC2's 1x..1/8 outputs against the target
    average-pooled to each scale (seed 001), plus the edge loss at full resolution. Two
    supervision terms of ours (issue 13): the refined W and UW at full size against the target
    (``LAMBDA_REFINED`` each: the refiners learn to refocus on their own, not only through the
    blend) and a weighted BCE on the full-size UW mask (``LAMBDA_MASK``: keeps the mask from
    collapsing to W everywhere). Its label is the per-pixel choice between the refined W and
    UW (:func:`refined_oracle`), what the blend mixes; the raw-input label ``oracle_uw`` is the
    fallback for outputs without them. The raw label was wrong where the refiner had already
    deblurred W: with it the phone starter's blend was 0.1 dB below its refined W alone."""
    terms = {}
    total = target.new_zeros(())
    for name, w in DC2_SCALE_WEIGHTS.items():
        out = outputs[name]
        factor = target.shape[-1] // out.shape[-1]
        t = F.avg_pool2d(target, factor) if factor > 1 else target
        terms[name] = F.mse_loss(out, t)
        total = total + w * terms[name]
    terms["edge"] = edge_loss(outputs["image"], target)
    total = total + terms["edge"]
    if "refined_w" in outputs:
        terms["refined_w"] = F.mse_loss(outputs["refined_w"], target)
        terms["refined_uw"] = F.mse_loss(outputs["refined_uw"], target)
        total = total + LAMBDA_REFINED * (terms["refined_w"] + terms["refined_uw"])
    if "mask_uw" in outputs and "refined_w" in outputs:
        oracle_uw, oracle_weight = refined_oracle(outputs["refined_w"], outputs["refined_uw"], target)
    if oracle_uw is not None and "mask_uw" in outputs:
        terms["mask_bce"] = weighted_bce(outputs["mask_uw"], oracle_uw, oracle_weight)
        total = total + LAMBDA_MASK * terms["mask_bce"]
    terms["loss"] = total
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
