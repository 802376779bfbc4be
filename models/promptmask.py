"""Prompt mask head: DP pair + text query -> the mask of what the prompt names (seed 003, issue 16).

Seed 003 prompts UiD with text: ``q_cls = F_m(I, T, q_cls)``, ``M_trg = F_g(q_cls, F_sam)``. SAM
cannot ship here (no package carries its weights), so the image side is ours and small, and both
sides meet in a space of named *concepts* (``promptmask_spec``: colour, shape, texture, role):

1. ``F_sam`` (our stand-in), two query-free paths to per-pixel posteriors at 1/2: an objectness
   ``O(x)`` (sigmoid; the sum of both paths' logits), for each attribute a its value given that
   the pixel is an object's, ``P_a(x, v)`` (softmax), and the role maps ``R_r(x)`` (sigmoid).
   - *Form* (shape, texture, roles): a stride-2 encoder of the two views' grey projections to
     1/8, with a DP cost volume at 1/2 (shifts -2..2 px) fused at 1/4, so depth order ("the
     nearest object") is seen; the 1/8 features get the scene's pooled context (mean and max)
     and a decoder brings them back to 1/2. The grey projection ``sum_c w_c I_c`` uses the
     channel mean at run time and random weights in training, so the form path cannot tell
     colours apart: with colour visible it learned that a red object is never a disc (no red
     disc is in the training scenes) and called 97 % of held-out red-disc pixels another shape.
   - *Colour*: two small convs of the RGB views (receptive field 7 px, too small for shape).
2. ``F_m``: a linear map of the frozen MiniLM embedding ``T`` (a 1 x 1 input, so the exported
   graph never holds the text encoder) to the query's posteriors: ``q_a(v)`` per attribute (its
   values + "any") and ``k`` over kinds (object, nearest, farthest, background). It learns from
   the prompts' concept labels only (through the mask it learned that "disc" prompts never mean
   red: "the red disc" came out as any colour).
3. ``F_g`` (:func:`compose`): the mask is the probability that a pixel is what the prompt names,
   ``M = k_object O prod_a f_a + sum_r k_r R_r`` with ``f_a(x) = sum_v q_a(v) P_a(x, v) + q_a(any)``,
   up-sampled x2 with a binomial blur. (Objectness enters once: with a "none" class per
   attribute it entered once per attribute and an unsure object vanished.)
4. ``presence``: the largest 4x4-averaged mask value: whether the prompt names anything here.

Why factorised: the first head (cross-attention + FiLM over the raw query) memorised the
colour-shape pairs it was trained on and reached 0.49 IoU on held-out pairs; a linear probe of
MiniLM recovers the colour, shape and texture of every held-out vocabulary prompt exactly, and
the product composes them (measured in docs/BENCHMARKS.md). In training mode the network also
returns its logits (``ModelSpec.aux_outputs``), which the concept labels supervise.
Everything is convs, softmax over channels, products and pooling: it exports to every target.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import ConvAct, ResizeConv, res_stack
from .promptmask_spec import ATTRIBUTES, KINDS, ROLES
from .text_encoder import DIM
from .uid import SmoothUp, cost_volume

VALUE_SIZES = tuple(len(v) for v in ATTRIBUTES.values())  # pixel side: P_a(x, v), colour first
QUERY_SIZES = tuple(n + 1 for n in VALUE_SIZES)  # query side: the values + "any"
QUERY_CH = sum(QUERY_SIZES) + len(KINDS)
N_MAPS = 1 + len(ROLES)  # role logits: objectness, then the roles


@dataclass(frozen=True)
class PromptMaskConfig:
    widths: tuple[int, int, int] = (32, 64, 128)  # encoder at 1/2, 1/4, 1/8
    stem_ch: int = 16  # siamese stem of the cost volume (1/2)
    n_res: int = 2
    colour_ch: int = 16  # the colour path's width
    disparity_levels: tuple[float, ...] = (-2.0, -1.0, 0.0, 1.0, 2.0)


PROMPT_MASK_VARIANTS: dict[str, PromptMaskConfig] = {
    "paper": PromptMaskConfig(),
    "mobile": PromptMaskConfig(widths=(16, 32, 64), stem_ch=12, n_res=2),
    "tiny": PromptMaskConfig(widths=(4, 8, 8), stem_ch=4, n_res=1, colour_ch=4),
}


def compose(pixel_logits: torch.Tensor, role_logits: torch.Tensor, query_logits: torch.Tensor) -> torch.Tensor:
    """F_g: ``M = k_object O prod_a f_a + sum_r k_r R_r``, the probability that a pixel is what the
    query names (module docstring, item 3), at the pixel logits' scale. ``role_logits``:
    objectness then the roles; ``query_logits``: the attributes' values + any, then the kinds."""
    q_attr = torch.split(query_logits[:, :sum(QUERY_SIZES)], QUERY_SIZES, dim=1)
    kind = torch.softmax(query_logits[:, sum(QUERY_SIZES):], dim=1)
    maps = torch.sigmoid(role_logits)
    m = kind[:, :1] * maps[:, :1]
    for p_l, q_l in zip(torch.split(pixel_logits, VALUE_SIZES, dim=1), q_attr):
        p, q = torch.softmax(p_l, dim=1), torch.softmax(q_l, dim=1)
        m = m * ((p * q[:, :-1]).sum(dim=1, keepdim=True) + q[:, -1:])
    return m + (kind[:, 1:] * maps[:, 1:]).sum(dim=1, keepdim=True)


class GreyViews(nn.Module):
    """The views' grey projections and their pair (no parameters): the channel mean, or in
    training per-sample random non-negative channel weights summing to 1, so that the form
    features are colour-blind. A module of its own so that int8 exports keep it float: its
    left/right differences are the DP cue (``promptmask_spec.SPEC.int8_float_modules``)."""

    def forward(self, left: torch.Tensor, right: torch.Tensor):
        if self.training:
            w = -torch.log(torch.rand(left.shape[0], 3, 1, 1, device=left.device).clamp_min(1e-6))
            w = w / w.sum(dim=1, keepdim=True)  # uniform on the simplex (Dirichlet(1, 1, 1))
        else:
            w = torch.full((1, 3, 1, 1), 1.0 / 3.0, device=left.device, dtype=left.dtype)
        left, right = (left * w).sum(dim=1, keepdim=True), (right * w).sum(dim=1, keepdim=True)
        return left, right, torch.cat([left, right], dim=1)


class Composer(nn.Module):
    """F_g and presence from the heads' outputs (no parameters). A module of its own so that
    int8 exports can keep it float (``promptmask_spec.SPEC.int8_float_modules``): quantised, its
    products of posteriors flipped whole masks (ExecuTorch realistic parity 1.9 dB; 34.2 dB with
    it and the other float modules kept float)."""

    def forward(self, colour: torch.Tensor, form: torch.Tensor, query_logits: torch.Tensor):
        n_form, n_colour = sum(VALUE_SIZES[1:]), VALUE_SIZES[0]
        pixel_logits = torch.cat([colour[:, :n_colour], form[:, :n_form]], dim=1)
        objectness = colour[:, n_colour:] + form[:, n_form:n_form + 1]
        role_logits = torch.cat([objectness, form[:, n_form + 1:]], dim=1)
        m = compose(pixel_logits, role_logits, query_logits)
        presence = F.avg_pool2d(m, 4).amax(dim=(2, 3), keepdim=True)
        return m, presence, pixel_logits, role_logits


class PromptMask(nn.Module):
    """Inputs ``left``, ``right`` (3 each, [0,1]) and ``query`` (384 x 1 x 1, a unit MiniLM
    embedding). Outputs ``mask`` (1, [0,1], full size) and ``presence`` (1 x 1 x 1, [0,1]);
    in training mode also ``pixel_logits`` (attribute values), ``role_logits`` (objectness and
    roles; both 1/2 scale) and ``query_logits``."""

    output_names = ("mask", "presence")

    def __init__(self, config: PromptMaskConfig = PromptMaskConfig()):
        super().__init__()
        self.config = config
        c1, c2, c3 = config.widths
        s = config.stem_ch
        self.grey = GreyViews()
        self.enc0 = nn.Sequential(ConvAct(2, c1, stride=2), res_stack(c1, config.n_res))
        self.stem = ConvAct(1, s, stride=2)
        self.cost_feat = ConvAct(len(config.disparity_levels), s)
        self.enc1 = nn.Sequential(ConvAct(c1 + s, c2, stride=2), res_stack(c2, config.n_res))
        self.enc2 = nn.Sequential(ConvAct(c2, c3, stride=2), res_stack(c3, config.n_res))
        self.context = nn.Conv2d(2 * c3, c3, 1)
        self.dec2 = res_stack(c3, config.n_res)
        self.up2 = ResizeConv(c3, c2)
        self.dec1 = res_stack(c2, 1)
        self.up1 = ResizeConv(c2, c1)
        self.dec0 = res_stack(c1, 1)
        self.form_head = nn.Conv2d(c1, sum(VALUE_SIZES[1:]) + N_MAPS, 3, padding=1)  # values, O, roles
        self.colour_head = nn.Sequential(ConvAct(6, config.colour_ch, stride=2), ConvAct(config.colour_ch, config.colour_ch),
                                         nn.Conv2d(config.colour_ch, VALUE_SIZES[0] + 1, 1))  # colours, O
        self.query_head = nn.Conv2d(DIM, QUERY_CH, 1)  # F_m: linear in the embedding
        self.up = SmoothUp(1)
        self.composer = Composer()

    def features(self, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        """The form path's decoder features at 1/2 (query-free, colour-blind)."""
        left, right, pair = self.grey(left, right)
        f0 = self.enc0(pair)
        cost = cost_volume(self.stem(left), self.stem(right), self.config.disparity_levels)
        f1 = self.enc1(torch.cat([f0, self.cost_feat(cost)], dim=1))
        f2 = self.enc2(f1)
        pooled = torch.cat([f2.mean(dim=(2, 3), keepdim=True), f2.amax(dim=(2, 3), keepdim=True)], dim=1)
        d = self.dec2(f2 + self.context(pooled))
        d = self.dec1(self.up2(d) + f1)
        return self.dec0(self.up1(d) + f0)

    def forward(self, left: torch.Tensor, right: torch.Tensor, query: torch.Tensor):
        form = self.form_head(self.features(left, right))
        colour = self.colour_head(torch.cat([left, right], dim=1))
        query_logits = self.query_head(query)
        # F_m learns from the prompts' concept labels only: the mask loss would teach it the
        # training pairs (a "disc" prompt never meant a red object) and not the words
        m, presence, pixel_logits, role_logits = self.composer(
            colour, form, query_logits.detach() if self.training else query_logits)
        mask = self.up(m).clamp(0.0, 1.0)
        if self.training:
            return mask, presence, pixel_logits, role_logits, query_logits
        return mask, presence


def build_promptmask(variant: str = "mobile") -> PromptMask:
    if variant not in PROMPT_MASK_VARIANTS:
        raise ValueError(f"unknown prompt-mask variant {variant!r}; valid: {', '.join(PROMPT_MASK_VARIANTS)}")
    return PromptMask(PROMPT_MASK_VARIANTS[variant]).eval()
