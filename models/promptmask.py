"""Prompt mask head: DP pair + text query -> the mask of what the prompt names (seed 003, issue 16).

Seed 003 prompts UiD with text: ``q_cls = F_m(I, T, q_cls)``, ``M_trg = F_g(q_cls, F_sam)``. SAM
cannot ship here (no package carries its weights), so the image side is ours and small:

1. ``F_sam`` (our stand-in): a stride-2 encoder of ``cat(left, right)`` to 1/8, with a DP cost
   volume at 1/2 (shifts -2..2 px) fused at 1/4, so depth order ("the nearest object") is seen.
2. ``F_m``: the query ``T`` (the frozen 384-d MiniLM embedding, ``models.text_encoder``, a 1 x 1
   tensor input so the exported graph never holds the text encoder) is projected to ``q`` and
   refined by two rounds of single-head cross-attention over the 1/8 features:
   ``q <- q + W_o sum softmax(K q / sqrt d) V`` (+ an MLP), giving ``q_cls``.
3. ``F_g``: the decoder FiLM-modulates the 1/8 and 1/4 features with ``q_cls``
   (``f (1 + gamma) + beta``), up-samples with nearest + conv, and the mask logit at 1/2 is the
   per-pixel dot product of the decoder features with a projection of ``q_cls`` (SAM's mask
   decoder does the same), up-sampled x2 with a binomial blur.
4. ``presence``: sigmoid of a projection of ``q_cls``: whether the prompt names anything in the
   scene at all (trained on prompts naming absent objects), the text prompt's confidence.
Everything is convs, 1x1 convs on the query, a flatten + softmax: it exports to every target.
The SPEC (I/O, packing, loss) is in ``promptmask_spec.py``, importable without PyTorch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .blocks import ConvAct, ResizeConv, res_stack
from .text_encoder import DIM
from .uid import SmoothUp, cost_volume


@dataclass(frozen=True)
class PromptMaskConfig:
    widths: tuple[int, int, int] = (32, 64, 128)  # encoder at 1/2, 1/4, 1/8
    stem_ch: int = 16  # siamese stem of the cost volume (1/2)
    query_ch: int = 128  # d: the query / attention width
    mask_ch: int = 32  # decoder features dotted with the query at 1/2
    n_res: int = 2
    rounds: int = 2  # cross-attention rounds of F_m
    disparity_levels: tuple[float, ...] = (-2.0, -1.0, 0.0, 1.0, 2.0)


PROMPT_MASK_VARIANTS: dict[str, PromptMaskConfig] = {
    "paper": PromptMaskConfig(),
    "mobile": PromptMaskConfig(widths=(16, 32, 64), stem_ch=12, query_ch=64, mask_ch=16, n_res=1),
    "tiny": PromptMaskConfig(widths=(4, 8, 8), stem_ch=4, query_ch=8, mask_ch=4, n_res=1, rounds=1),
}


class CrossAttention(nn.Module):
    """One round of ``F_m``: the 1 x 1 query attends over the image features (single head)."""

    def __init__(self, feat_ch: int, d: int):
        super().__init__()
        self.k = nn.Conv2d(feat_ch, d, 1)
        self.v = nn.Conv2d(feat_ch, d, 1)
        self.o = nn.Conv2d(d, d, 1)
        self.mlp = nn.Sequential(nn.Conv2d(d, 2 * d, 1), nn.GELU(), nn.Conv2d(2 * d, d, 1))
        self.scale = 1.0 / math.sqrt(d)

    def forward(self, q: torch.Tensor, feat: torch.Tensor) -> torch.Tensor:
        logits = (self.k(feat) * q).sum(dim=1, keepdim=True) * self.scale  # B x 1 x h x w
        b, _, h, w = logits.shape
        a = torch.softmax(logits.reshape(b, 1, h * w), dim=-1).reshape(b, 1, h, w)
        q = q + self.o((a * self.v(feat)).sum(dim=(2, 3), keepdim=True))
        return q + self.mlp(q)


class FiLM(nn.Module):
    """``f (1 + gamma(q)) + beta(q)``, gamma and beta 1x1 convs of the query (start at identity)."""

    def __init__(self, d: int, ch: int):
        super().__init__()
        self.gb = nn.Conv2d(d, 2 * ch, 1)
        nn.init.zeros_(self.gb.weight)
        nn.init.zeros_(self.gb.bias)
        self.ch = ch

    def forward(self, f: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        gb = self.gb(q)
        return f * (1.0 + gb[:, : self.ch]) + gb[:, self.ch:]


class PromptMask(nn.Module):
    """Inputs ``left``, ``right`` (3 each, [0,1]) and ``query`` (384 x 1 x 1, a unit MiniLM
    embedding). Outputs ``mask`` (1, [0,1], full size) and ``presence`` (1 x 1 x 1, [0,1])."""

    output_names = ("mask", "presence")

    def __init__(self, config: PromptMaskConfig = PromptMaskConfig()):
        super().__init__()
        self.config = config
        c1, c2, c3 = config.widths
        d, s = config.query_ch, config.stem_ch
        self.enc0 = nn.Sequential(ConvAct(6, c1, stride=2), res_stack(c1, config.n_res))
        self.stem = ConvAct(3, s, stride=2)
        self.cost_feat = ConvAct(len(config.disparity_levels), s)
        self.enc1 = nn.Sequential(ConvAct(c1 + s, c2, stride=2), res_stack(c2, config.n_res))
        self.enc2 = nn.Sequential(ConvAct(c2, c3, stride=2), res_stack(c3, config.n_res))
        self.q_in = nn.Sequential(nn.Conv2d(DIM, d, 1), nn.GELU(), nn.Conv2d(d, d, 1))
        self.attn = nn.ModuleList([CrossAttention(c3, d) for _ in range(config.rounds)])
        self.presence = nn.Conv2d(d, 1, 1)
        self.film2 = FiLM(d, c3)
        self.dec2 = res_stack(c3, 1)
        self.up2 = ResizeConv(c3, c2)
        self.film1 = FiLM(d, c2)
        self.dec1 = res_stack(c2, 1)
        self.up1 = ResizeConv(c2, c1)
        self.emb = nn.Conv2d(c1, config.mask_ch, 3, padding=1)
        self.q_mask = nn.Conv2d(d, config.mask_ch + 1, 1)  # per-channel weights + a bias
        self.up = SmoothUp(1)

    def forward(self, left: torch.Tensor, right: torch.Tensor, query: torch.Tensor):
        f0 = self.enc0(torch.cat([left, right], dim=1))
        cost = cost_volume(self.stem(left), self.stem(right), self.config.disparity_levels)
        f1 = self.enc1(torch.cat([f0, self.cost_feat(cost)], dim=1))
        f2 = self.enc2(f1)
        q = self.q_in(query)
        for layer in self.attn:
            q = layer(q, f2)
        presence = torch.sigmoid(self.presence(q))
        d = self.dec2(self.film2(f2, q))
        d = self.dec1(self.film1(self.up2(d) + f1, q))
        e = self.emb(self.up1(d) + f0)
        wq = self.q_mask(q)
        m = self.config.mask_ch
        logit = (e * wq[:, :m]).sum(dim=1, keepdim=True) / math.sqrt(m) + wq[:, m:]
        return torch.sigmoid(self.up(logit)), presence


def build_promptmask(variant: str = "mobile") -> PromptMask:
    if variant not in PROMPT_MASK_VARIANTS:
        raise ValueError(f"unknown prompt-mask variant {variant!r}; valid: {', '.join(PROMPT_MASK_VARIANTS)}")
    return PromptMask(PROMPT_MASK_VARIANTS[variant]).eval()
