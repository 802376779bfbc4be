"""DC2: dual-camera defocus control (seed 001, supplement B and table 1; MODELS.md 2).

Two DRBNet-style refiners (one for W, one for the aligned UW) each predict the image at 1/8,
1/4, 1/2 and 1x (``estimate = image + dynamic_filter_7x7(image, kernel) + residual``); a fusion
network of ASPP blocks (seed 001 table 1), one per scale, predicts W/UW blending masks
(softmax over 2 channels) with a residual connection to the up-sampled previous mask logits;
the output at each scale is ``(1 - m_uw) * W_ref + m_uw * UW_ref``. The radial map is
concatenated to the inputs of all modules (average-pooled to each scale). The SPEC (I/O, packing)
is in ``dc2_spec.py``, importable without PyTorch.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import (ASPPBlock, ConvAct, ResizeConv, UpConv, clamp_mean_locked, dynamic_filter_7x7, res_stack,
                     upsample2)


CHROMA_FLOOR = 1e-3  # chroma (fraction of the range, summed over channels) below which an image is grey

SCALE_SUFFIX = ("_eighth", "_quarter", "_half", "")  # coarse -> fine, matching 1/8, 1/4, 1/2, 1

# seed 001 table 1: (atrous rates, channels) per scale, coarse -> fine
ASPP_TABLE: tuple[tuple[tuple[int, ...], tuple[int, ...]], ...] = (
    ((1, 3, 5), (16, 32, 2)),
    ((1, 3, 6, 12), (16, 32, 2)),
    ((1, 3, 6, 12, 15), (16, 32, 2)),
    ((1, 3, 6, 12, 15, 18), (16, 32, 32, 2)),
)


@dataclass(frozen=True)
class DC2Config:
    widths: tuple[int, int, int, int] = (32, 64, 128, 256)  # DRBNet levels 1, 1/2, 1/4, 1/8
    n_res_enc: int = 2  # residual blocks after each encoder conv
    n_res_mid: int = 3  # extra residual blocks at 1/8 (sized to DRBNet's ~11.7 M)
    n_res_dec: int = 2  # residual blocks after each decoder up-sampling (MODELS.md 2)
    fusion_mult: float = 1.0  # width multiplier on table 1's hidden channels (the final 2 stays)
    head_init_scale: float = 0.1  # kernel/residual heads start small: refiner ~ identity at init
    resize_up: bool = False  # decoder up-sampling: False = DRBNet's 4x4 stride-2 transposed conv
    #   (a 2/4/8-px grid), True = nearest x2 + 3x3 conv (blocks.ResizeConv)
    gate_tau: float = 0.1  # in-focus gate: g = clip(|defocus_wide - defocus_target| / tau, 0, 1)
    #   (normalised units; 0.1 = 1 px CoC); out = W + g * (pred - W - c): W where g = 0
    gate_floor: float = 0.0  # g -> floor + (1 - floor) g: 0 keeps W's in-focus pixels exactly; 1 lets
    #   the refined estimate in everywhere (it also denoises in-focus W: +0.6 dB on the phone split,
    #   sensor noise), the mean lock still holding W's channel means
    mean_lock: bool = True  # c above makes the gated residual zero-mean per channel (the output
    #   keeps W's channel means: refocusing and deblurring conserve them)
    anchor: bool = False  # each finer estimate starts from the input pooled to its scale plus the
    #   bilinear up-sampled correction of the coarser one (a Laplacian pyramid): the refiner is the
    #   identity at init and keeps the input's detail; False = DRBNet's up-sampled coarse estimate
    chroma_tau: float = 0.0  # > 0: each head's residual keeps its chroma only where the estimate it
    #   corrects has local chroma (:func:`chroma_locked`, full at ``chroma_tau`` of the range): grey
    #   in, grey out at every scale; 0 = free residual


DC2_VARIANTS: dict[str, DC2Config] = {
    "paper": DC2Config(),
    "mobile": DC2Config(widths=(8, 16, 32, 64), fusion_mult=0.25, resize_up=True, anchor=True,
                        chroma_tau=0.02, gate_floor=1.0),
    "tiny": DC2Config(widths=(4, 4, 8, 8), n_res_enc=1, n_res_mid=0, n_res_dec=1, fusion_mult=0.25,
                      resize_up=True, anchor=True, chroma_tau=0.02),
}

REFINER_IN_CH = 6  # image (3) + defocus_wide (1) + defocus_target (1) + radial (1)


class ScaleHead(nn.Module):
    """One DRBNet output scale: three convs on the current estimate, fused with the decoder
    features, then a 49-channel kernel head and a 3-channel residual head."""

    def __init__(self, ch: int, init_scale: float, chroma_tau: float = 0.0):
        super().__init__()
        self.chroma_tau = chroma_tau
        self.img = nn.Sequential(ConvAct(3, ch), ConvAct(ch, ch), ConvAct(ch, ch))
        self.fuse = ConvAct(2 * ch, ch)
        self.kernel = nn.Conv2d(ch, 49, 3, padding=1)
        self.residual = nn.Conv2d(ch, 3, 3, padding=1)
        with torch.no_grad():
            for conv in (self.kernel, self.residual):
                conv.weight.mul_(init_scale)
                conv.bias.mul_(init_scale)

    def forward(self, image: torch.Tensor, feat: torch.Tensor) -> torch.Tensor:
        f = self.fuse(torch.cat([self.img(image), feat], dim=1))
        residual = self.residual(f)
        if self.chroma_tau > 0:
            residual = chroma_locked(residual, image, self.chroma_tau)
        # the dynamic filter applies one kernel to all three channels: it cannot add chroma
        return image + dynamic_filter_7x7(image, self.kernel(f)) + residual


class DRBRefiner(nn.Module):
    """DRBNet-style refinement module: input ``[image, aux]`` -> estimates at 1/8, 1/4, 1/2, 1.

    Encoder: 3x3 conv + residual blocks at full size, stride-2 convs down to 1/8 (channels
    ``widths``); extra residual blocks at 1/8; decoder: 4x4 stride-2 transposed conv + LeakyReLU,
    add the encoder skip, residual blocks. The first estimate is the input image average-pooled
    to 1/8; each finer scale starts from the previous estimate up-sampled x2 (nearest), or with
    ``anchor`` from :func:`anchored_base`.
    """

    def __init__(self, cfg: DC2Config, in_ch: int = REFINER_IN_CH):
        super().__init__()
        w = cfg.widths
        self.enc = nn.ModuleList([nn.Sequential(ConvAct(in_ch, w[0]), res_stack(w[0], cfg.n_res_enc))])
        for k in range(1, 4):
            self.enc.append(nn.Sequential(ConvAct(w[k - 1], w[k], stride=2), res_stack(w[k], cfg.n_res_enc)))
        self.mid = res_stack(w[3], cfg.n_res_mid)
        up = ResizeConv if cfg.resize_up else UpConv
        self.up = nn.ModuleList([up(w[k + 1], w[k]) for k in (2, 1, 0)])
        self.dec = nn.ModuleList([res_stack(w[k], cfg.n_res_dec) for k in (2, 1, 0)])
        self.heads = nn.ModuleList([ScaleHead(w[k], cfg.head_init_scale, cfg.chroma_tau) for k in (3, 2, 1, 0)])
        self.anchor = cfg.anchor

    def forward(self, image: torch.Tensor, aux: torch.Tensor) -> list[torch.Tensor]:
        x = torch.cat([image, aux], dim=1)
        skips = []
        for level in self.enc:
            x = level(x)
            skips.append(x)
        feat = self.mid(skips[3])
        est = self.heads[0](F.avg_pool2d(image, 8), feat)
        outs = [est]
        for k in range(3):
            feat = self.dec[k](self.up[k](feat) + skips[2 - k])
            base = anchored_base(image, est, 4 >> k) if self.anchor else upsample2(est)
            est = self.heads[k + 1](base, feat)
            outs.append(est)
        return outs  # 1/8, 1/4, 1/2, 1


def chroma_locked(residual: torch.Tensor, image: torch.Tensor, tau: float) -> torch.Tensor:
    """The residual's grey part (channel mean) plus its chroma (the rest) scaled by
    ``clip((c - CHROMA_FLOOR) / tau, 0, 1)``, c the image's chroma (sum over channels of
    |x - channel mean|) averaged over 5 x 5 pixels: where the image is grey the correction is grey
    (a grey capture, e.g. the Pixel's green-only views, stays grey), where it has colour the
    residual is free. The floor keeps the rounding of the channel mean (1 ulp) from seeding colour
    that later scales would amplify."""
    grey = residual.mean(dim=1, keepdim=True)
    chroma = (image - image.mean(dim=1, keepdim=True)).abs().sum(dim=1, keepdim=True)
    weight = torch.clamp((F.avg_pool2d(chroma, 5, stride=1, padding=2) - CHROMA_FLOOR) / tau, 0.0, 1.0)
    return grey + weight * (residual - grey)


def anchored_base(image: torch.Tensor, coarse: torch.Tensor, factor: int) -> torch.Tensor:
    """The start of the estimate at 1/``factor``: the input pooled to that scale plus the coarse
    estimate's correction (coarse - input pooled to the coarse scale), up-sampled bilinearly.
    Equals the pooled input when the coarse estimate is the pooled input, so a refiner whose heads
    are near zero passes its input through with all its detail (nearest up-sampling of the
    correction would print a 2-px grid)."""
    fine = F.avg_pool2d(image, factor) if factor > 1 else image
    correction = coarse - F.avg_pool2d(fine, 2)
    return fine + F.interpolate(correction, scale_factor=2.0, mode="bilinear", align_corners=False)


def gate_map(defocus_wide: torch.Tensor, defocus_target: torch.Tensor, tau: float) -> torch.Tensor:
    """Where W already has the target defocus (its in-focus pixels for an all-in-focus target)
    g = 0; g = 1 once the two maps differ by ``tau`` or more (a fixed, parameter-free gate)."""
    return torch.clamp((defocus_wide - defocus_target).abs() / tau, 0.0, 1.0)


def gated(wide: torch.Tensor, pred: torch.Tensor, g: torch.Tensor, mean_lock: bool) -> torch.Tensor:
    """``W + g * (pred - W - c)`` clamped to [0, 1]: exactly W where g = 0. With ``mean_lock`` the
    per-channel constant c = sum(g d) / sum(g) (d = pred - W) makes the residual's mean zero, so the
    output keeps W's channel means (a blur whose PSF sums to 1 conserves them; the off white
    balance of UW must not leak in), and :func:`~models.blocks.clamp_mean_locked` moves the gated
    pixels by the mean error the clamp leaves. Export friendly: reductions, arithmetic and clamps."""
    d = pred - wide
    if not mean_lock:
        return torch.clamp(wide + g * d, 0.0, 1.0)
    g_sum = g.sum(dim=(-2, -1), keepdim=True) + 1e-6
    return clamp_mean_locked(wide + g * (d - (g * d).sum(dim=(-2, -1), keepdim=True) / g_sum), wide, g)


def blend(refined_w: torch.Tensor, refined_uw: torch.Tensor, mask_uw: torch.Tensor) -> torch.Tensor:
    """Mask-weighted blend: ``(1 - m_uw) * W + m_uw * UW`` (W mask + UW mask = 1)."""
    return refined_w + mask_uw * (refined_uw - refined_w)


class FusionNet(nn.Module):
    """Seed 001 fusion: one ASPP block per scale predicting W/UW mask logits.

    Inputs at scale s: refined W_s (3), refined UW_s (3), the previous masks up-sampled (2,
    not at 1/8) and the radial map (1). Logits_s = ASPP_s(inputs) + up(logits_{s-1}) (the
    residual connection; none at 1/8); masks_s = softmax(logits_s) over the 2 channels.
    """

    def __init__(self, cfg: DC2Config):
        super().__init__()
        blocks = []
        for k, (rates, chans) in enumerate(ASPP_TABLE):
            hidden = [max(1, round(c * cfg.fusion_mult)) for c in chans[:-1]] + [chans[-1]]
            cin = 3 + 3 + 1 + (0 if k == 0 else 2)
            blocks.append(ASPPBlock(cin, rates, hidden))
        self.blocks = nn.ModuleList(blocks)

    def forward(self, refined_w: list[torch.Tensor], refined_uw: list[torch.Tensor],
                radials: list[torch.Tensor]) -> list[torch.Tensor]:
        """Returns the 2-channel logits per scale (coarse -> fine)."""
        logits = []
        prev = None
        for k, block in enumerate(self.blocks):
            parts = [refined_w[k], refined_uw[k], radials[k]]
            if prev is None:
                out = block(torch.cat(parts, dim=1))
            else:
                up = upsample2(prev)
                out = block(torch.cat(parts + [torch.softmax(up, dim=1)], dim=1)) + up
            logits.append(out)
            prev = out
        return logits


class DC2(nn.Module):
    """Dual-camera defocus control.

    Inputs (NCHW): ``wide`` (3, [0,1]), ``ultrawide`` (3, [0,1], aligned to W),
    ``defocus_wide`` (1, >=0), ``defocus_target`` (1, >=0), ``radial`` (1, [0,1]).
    Outputs (tuple, order of :attr:`output_names`): images at 1x, 1/2, 1/4, 1/8; UW masks at
    1x, 1/2, 1/4, 1/8 (W mask = 1 - UW mask); refined W and UW at 1x. Images are clamped to
    [0, 1]. Height and width must be multiples of 8 (the registry asks for 16).
    ``mask_override`` (None or a float in [0, 1]) replaces the predicted UW masks by a
    constant: a Python-level switch for tests and ablations, never data-dependent.
    """

    output_names = (
        "image", "image_half", "image_quarter", "image_eighth",
        "mask_uw", "mask_uw_half", "mask_uw_quarter", "mask_uw_eighth",
        "refined_w", "refined_uw",
    )

    def __init__(self, config: DC2Config = DC2Config()):
        super().__init__()
        self.config = config
        self.refine_w = DRBRefiner(config)
        self.refine_uw = DRBRefiner(config)
        self.fusion = FusionNet(config)
        self.mask_override: float | None = None

    def forward(self, wide, ultrawide, defocus_wide, defocus_target, radial):
        aux = torch.cat([defocus_wide, defocus_target, radial], dim=1)
        ref_w = self.refine_w(wide, aux)
        ref_uw = self.refine_uw(ultrawide, aux)
        radials = [F.avg_pool2d(radial, f) for f in (8, 4, 2)] + [radial]
        logits = self.fusion(ref_w, ref_uw, radials)
        masks = [torch.softmax(lg, dim=1)[:, 1:2] for lg in logits]
        if self.mask_override is not None:
            masks = [torch.full_like(m, float(self.mask_override)) for m in masks]
        images = [blend(a, b, m) for a, b, m in zip(ref_w, ref_uw, masks)]
        if self.config.gate_tau > 0:
            g = gate_map(defocus_wide, defocus_target, self.config.gate_tau)
            if self.config.gate_floor > 0:
                g = self.config.gate_floor + (1.0 - self.config.gate_floor) * g
            pool = lambda t, f: F.avg_pool2d(t, f) if f > 1 else t  # noqa: E731
            images = [gated(pool(wide, f), im, pool(g, f), self.config.mean_lock)
                      for f, im in zip((8, 4, 2, 1), images)]
        c = lambda t: torch.clamp(t, 0.0, 1.0)  # noqa: E731
        return (
            c(images[3]), c(images[2]), c(images[1]), c(images[0]),
            masks[3], masks[2], masks[1], masks[0],
            c(ref_w[3]), c(ref_uw[3]),
        )


def build_dc2(variant: str = "paper") -> DC2:
    if variant not in DC2_VARIANTS:
        raise ValueError(f"unknown DC2 variant {variant!r}; valid: {', '.join(DC2_VARIANTS)}")
    return DC2(DC2_VARIANTS[variant]).eval()
