"""UiD: user-instructed dual-pixel defocus control (seed 003; K3DN design, MODELS.md 3).

DP pair + target focus mask -> all-in-focus image, refocused image, signed defocus map.

1. Backbone: stride-2 encoder of ``cat(left, right)`` to 1/8 (widths 48, 96, 192 at paper
   size) with residual blocks per level.
2. Disparity branch: a shared (siamese) stem on each view to 1/8, a 4-level cost volume
   (horizontal shifts -1.5, -0.5, 0.5, 1.5 px at 1/8) fused with the backbone into ``F_G``.
3. Defocus control (seed 003): ``F_D = 2 tanh(||F_G|| / rho) - 1``; at test time (always, here:
   the mask is an input) ``F_D_trg = F_D - mean(F_D over mask)``; ``F_init = J(F_G) * F_D``;
   ``F_coc = R o F_G + P_feat(P_rgb(F_init))``.
4. Kernel retrieval (seed 003): ``a = softmax(P_k(K) . P_coc(F_coc))`` per pixel over the N
   kernels of a :class:`~models.blocks.SymmetricKernelBank`.
5. Deblur through the inverse kernels (mixing weights from ``F_D``), refined by the decoder
   (transposed convs + skips; the last level also sees the raw 6-channel input); reblur of the
   all-in-focus image through the *same* kernels with weights from ``F_D_trg``.
The inverse kernels are a buffer computed when weights load: the eval graph has no FFT.
The SPEC (I/O, packing) is in ``uid_spec.py``, importable without PyTorch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import (ConvAct, ResizeConv, SymmetricKernelBank, UpConv, channel_softmax, clamp_mean_locked, res_stack,
                     upsample2, zero_mean)


@dataclass(frozen=True)
class UiDConfig:
    widths: tuple[int, int, int] = (48, 96, 192)  # backbone at 1/2, 1/4, 1/8
    out_ch: int = 24  # decoder width at full size
    n_res_enc: int = 2
    n_res_dec: tuple[int, int, int] = (0, 2, 2)  # decoder residual blocks at 1/8, 1/4, 1/2
    stem_ch: int = 32  # siamese stem of the disparity branch
    geo_ch: int = 64  # F_G channels
    embed_ch: int = 32  # kernel-retrieval embedding (P_k, P_coc)
    n_kernels: int = 16
    kernel_size: int = 9
    inv_size: int = 17
    disparity_levels: tuple[float, ...] = (-1.5, -0.5, 0.5, 1.5)
    rho: float = 4.0
    # issue 13: nearest + conv up-sampling (no transposed-conv grid) and a zero-mean decoder
    # residual (brightness and colour kept); the paper variant keeps transposed convs
    resize_up: bool = False
    # issue 13: the all-in-focus output keeps the input's channel means after its clamp to [0, 1]
    # (blocks.clamp_mean_locked; worst phone-split example 1.08 % off before)
    mean_lock: bool = False


UID_VARIANTS: dict[str, UiDConfig] = {
    "paper": UiDConfig(),
    "mobile": UiDConfig(widths=(24, 48, 96), out_ch=16, stem_ch=16, geo_ch=32, embed_ch=16, n_kernels=8,
                        resize_up=True, mean_lock=True),
    "tiny": UiDConfig(widths=(8, 8, 16), out_ch=4, n_res_enc=1, n_res_dec=(0, 1, 1), stem_ch=4, geo_ch=8,
                      embed_ch=4, n_kernels=4, kernel_size=5, inv_size=9, resize_up=True),
}


class SmoothUp(nn.Module):
    """Up-sampling by ``2**steps``: per step nearest x2 then a fixed 3x3 binomial blur.

    Used for the 1/8-scale defocus map and mixing logits, so that kernels change smoothly.
    """

    def __init__(self, steps: int = 3):
        super().__init__()
        self.steps = steps
        b = torch.tensor([1.0, 2.0, 1.0])
        self.register_buffer("blur", (b[:, None] * b[None, :] / 16.0)[None, None], persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        weight = self.blur.expand(c, 1, 3, 3)
        for _ in range(self.steps):
            x = F.conv2d(F.pad(upsample2(x), (1, 1, 1, 1), mode="replicate"), weight, groups=c)
        return x


def shift_w(x: torch.Tensor, s: int) -> torch.Tensor:
    """``y[..., j] = x[..., j + s]`` with replicate borders (static pad + slice)."""
    if s == 0:
        return x
    w = x.shape[-1]
    p = abs(s)
    xp = F.pad(x, (p, p, 0, 0), mode="replicate")
    return xp[..., p + s : p + s + w]


def cost_volume(fl: torch.Tensor, fr: torch.Tensor, levels) -> torch.Tensor:
    """Correlation ``mean_c fl(x) * fr(x + d)`` for each (half-integer) disparity ``d``."""
    shifted = {}
    out = []
    for d in levels:
        lo, hi = math.floor(d), math.ceil(d)
        for s in (lo, hi):
            if s not in shifted:
                shifted[s] = shift_w(fr, s)
        frd = shifted[lo] if lo == hi else (shifted[lo] * (hi - d) + shifted[hi] * (d - lo))
        out.append((fl * frd).mean(dim=1, keepdim=True))
    return torch.cat(out, dim=1)


def shift_defocus(defocus: torch.Tensor, mask: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Seed 003 test-time control: ``F_D_trg = F_D - mean(F_D over the mask)`` per image.

    ``mask`` has the same spatial size (soft weights allowed). An empty mask leaves the map
    unchanged (the mean is taken as 0), with no data-dependent branch.
    """
    num = (defocus * mask).sum(dim=(-2, -1), keepdim=True)
    den = mask.sum(dim=(-2, -1), keepdim=True)
    return defocus - num / (den + eps)


class UiD(nn.Module):
    """User-instructed DP defocus control.

    Inputs: ``left``, ``right`` (3 each, [0,1]), ``focus_mask`` (1, binary, 1 = keep sharp).
    Outputs: ``all_in_focus`` (3, [0,1]), ``refocused`` (3, [0,1]), ``defocus`` (1, signed
    ``F_D`` in [-1, 1] of the capture, before the mask shift). H, W multiples of 8.
    """

    output_names = ("all_in_focus", "refocused", "defocus")

    def __init__(self, config: UiDConfig = UiDConfig()):
        super().__init__()
        self.config = config
        c1, c2, c3 = config.widths
        g, e = config.geo_ch, config.embed_ch
        self.enc = nn.ModuleList([
            nn.Sequential(ConvAct(6, c1, stride=2), res_stack(c1, config.n_res_enc)),
            nn.Sequential(ConvAct(c1, c2, stride=2), res_stack(c2, config.n_res_enc)),
            nn.Sequential(ConvAct(c2, c3, stride=2), res_stack(c3, config.n_res_enc)),
        ])
        s = config.stem_ch
        self.stem = nn.Sequential(ConvAct(3, s, stride=2), ConvAct(s, s, stride=2), ConvAct(s, s, stride=2))
        nd = len(config.disparity_levels)
        self.cost_feat = ConvAct(nd, s)
        self.geo = nn.Sequential(ConvAct(c3 + s, g), res_stack(g, 1))
        # defocus control (seed 003)
        self.J = nn.Conv2d(g, g, 1)
        self.P_rgb = nn.Conv2d(g, 1, 1)
        self.P_feat = nn.Conv2d(1, g, 1)
        self.R = nn.Parameter(torch.ones(1, g, 1, 1))
        # kernel retrieval (seed 003)
        self.bank = SymmetricKernelBank(config.n_kernels, config.kernel_size, config.inv_size)
        self.P_k = nn.Linear(config.kernel_size**2, e)
        self.P_coc = nn.Conv2d(g, e, 1)
        self.up8 = SmoothUp(3)
        # decoder
        self.dec_in = nn.Conv2d(c3 + g, c3, 1)
        self.dec = nn.ModuleList([res_stack(c, n) for c, n in zip((c3, c2, c1), config.n_res_dec)])
        up = ResizeConv if config.resize_up else UpConv
        self.up = nn.ModuleList([up(c3, c2), up(c2, c1), up(c1, config.out_ch)])
        self.out = nn.Sequential(ConvAct(config.out_ch + 6 + 3, config.out_ch), nn.Conv2d(config.out_ch, 3, 3, padding=1))
        with torch.no_grad():  # start as "deblur through the bank only"
            self.out[-1].weight.mul_(0.1)
            self.out[-1].bias.zero_()

    # -- pieces, exposed for tests and training losses ------------------------------------
    def geometry(self, left: torch.Tensor, right: torch.Tensor):
        """Backbone skips and ``F_G`` (1/8 scale)."""
        x = torch.cat([left, right], dim=1)
        skips = []
        f = x
        for level in self.enc:
            f = level(f)
            skips.append(f)
        cost = cost_volume(self.stem(left), self.stem(right), self.config.disparity_levels)
        f_g = self.geo(torch.cat([f, self.cost_feat(cost)], dim=1))
        return x, skips, f_g

    def defocus_map(self, f_g: torch.Tensor) -> torch.Tensor:
        """``F_D = 2 tanh(Norm(F_G) / rho) - 1`` with Norm the channel L2 norm (seed 003)."""
        norm = torch.sqrt((f_g * f_g).sum(dim=1, keepdim=True) + 1e-6)
        return 2.0 * torch.tanh(norm / self.config.rho) - 1.0

    def coc_features(self, f_g: torch.Tensor, f_d: torch.Tensor):
        """``F_init = J(F_G) F_D``, CoC map ``P_rgb(F_init)``, ``F_coc = R o F_G + P_feat(coc)``."""
        coc = self.P_rgb(self.J(f_g) * f_d)
        return self.R * f_g + self.P_feat(coc), coc

    def mixing_logits(self, f_coc: torch.Tensor) -> torch.Tensor:
        """``P_k(K) . P_coc(F_coc)``: one logit per bank kernel (1/8 scale)."""
        emb = self.P_k(self.bank.current_kernels().flatten(1))  # [N, E]
        return F.conv2d(self.P_coc(f_coc), emb[:, :, None, None])

    def forward(self, left: torch.Tensor, right: torch.Tensor, focus_mask: torch.Tensor):
        x, skips, f_g = self.geometry(left, right)
        f_d = self.defocus_map(f_g)
        f_d_trg = shift_defocus(f_d, F.avg_pool2d(focus_mask, 8))
        f_coc, _ = self.coc_features(f_g, f_d)
        f_coc_trg, _ = self.coc_features(f_g, f_d_trg)
        a_deb = channel_softmax(self.up8(self.mixing_logits(f_coc)))
        a_reb = channel_softmax(self.up8(self.mixing_logits(f_coc_trg)))

        blurred = 0.5 * (left + right)
        deblurred = self.bank.apply_bank(blurred, self.bank.inverse_kernels(), a_deb)
        d = self.dec[0](self.dec_in(torch.cat([skips[2], f_coc], dim=1)))
        d = self.dec[1](self.up[0](d) + skips[1])
        d = self.dec[2](self.up[1](d) + skips[0])
        d = self.up[2](d)
        residual = self.out(torch.cat([d, x, deblurred], dim=1))
        aif = deblurred + (zero_mean(residual) if self.config.resize_up else residual)
        refocused = self.bank.apply_bank(aif, self.bank.current_kernels(), a_reb)
        defocus = torch.clamp(self.up8(f_d), -1.0, 1.0)
        aif_out = clamp_mean_locked(aif, blurred) if self.config.mean_lock else torch.clamp(aif, 0.0, 1.0)
        return aif_out, torch.clamp(refocused, 0.0, 1.0), defocus


def build_uid(variant: str = "paper") -> UiD:
    if variant not in UID_VARIANTS:
        raise ValueError(f"unknown UiD variant {variant!r}; valid: {', '.join(UID_VARIANTS)}")
    return UiD(UID_VARIANTS[variant]).eval()
