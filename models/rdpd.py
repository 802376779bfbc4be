"""RDPD: recurrent dual-pixel deblurring (seed 004, section 4, Fig. 6; MODELS.md 1).

Encoder (3x3 conv+ReLU pairs, 2x2 max-pool after each pair, one 3x3 conv to the bottleneck
width at 1/16) -> peephole ConvLSTM (seed 004 eq. 7-11) -> decoder (per level: nearest x2 +
2x2 conv, concatenate the encoder skip, two 3x3 convs) -> 3x3 conv to 3 (ReLU) -> 1x1 linear
conv -> clamp to [0, 1] (eq. 12). The state is explicit: ``forward(x, h, c) -> (y, h, c)``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import losses
from .blocks import ConvAct, ConvLSTMCell, upsample2, zero_mean
from .examples import dp_pair
from .radial import radial_map_torch
from .spec import IMG, INF, DataSpec, EvalTask, ModelSpec, TensorSpec, chw


@dataclass(frozen=True)
class RDPDConfig:
    widths: tuple[int, ...] = (32, 64, 128, 256)  # encoder levels (half of DPDNet, seed 004)
    bottleneck: int = 512  # conv before the ConvLSTM and ConvLSTM hidden channels
    in_ch: int = 7  # left RGB + right RGB + radial map
    dropout: float = 0.4  # ConvLSTM input dropout in training (seed 004)
    residual: bool = False  # our addition for small CPU-trained variants: y = clamp(combined + head)
    # our addition (issue 13): with ``residual``, the head is linear (no ReLU before the 1x1 conv,
    # which limited the residual to a positive cone of 3 maps: colour casts) and the residual has
    # zero mean per channel (``blocks.zero_mean``: brightness and colour kept)
    linear_residual: bool = False

    @property
    def scale(self) -> int:
        return 2 ** len(self.widths)


RDPD_VARIANTS: dict[str, RDPDConfig] = {
    "paper": RDPDConfig(),
    # mobile: width multiplier 0.25 on the deep levels, but 16-48 channels at 1x-1/4: with 8 at full
    # resolution the net could not even overfit one batch (docs/MODELS.md, "RDPD mobile widths")
    "mobile": RDPDConfig(widths=(16, 32, 48, 64), bottleneck=128, residual=True, linear_residual=True),
    "tiny": RDPDConfig(widths=(4, 4, 8, 8), bottleneck=16, residual=True, linear_residual=True),
}


class _UpLevel(nn.Module):
    """nearest x2 + 2x2 conv (TF 'same' padding: one extra row/col at bottom/right) + skip + 2 convs."""

    def __init__(self, cin: int, skip: int, cout: int):
        super().__init__()
        self.up_conv = nn.Conv2d(cin, cout, 2)
        self.conv1 = ConvAct(cout + skip, cout, act="relu")
        self.conv2 = ConvAct(cout, cout, act="relu")

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.up_conv(F.pad(upsample2(x), (0, 1, 0, 1))))
        return self.conv2(self.conv1(torch.cat([x, skip], dim=1)))


class RDPD(nn.Module):
    """Recurrent DP deblurring network; inputs ``x`` (7 ch), ``h``, ``c`` (state at 1/16).

    Returns ``(y, h_next, c_next)``; ``y`` is the deblurred RGB in [0, 1].
    Height and width must be multiples of 16.
    """

    output_names = ("y", "h_next", "c_next")

    def __init__(self, config: RDPDConfig = RDPDConfig()):
        super().__init__()
        self.config = config
        w = config.widths
        self.enc = nn.ModuleList()
        cin = config.in_ch
        for cw in w:
            self.enc.append(nn.Sequential(ConvAct(cin, cw, act="relu"), ConvAct(cw, cw, act="relu")))
            cin = cw
        self.pre_lstm = ConvAct(w[-1], config.bottleneck, act="relu")
        self.lstm = ConvLSTMCell(config.bottleneck, config.bottleneck, 3, dropout=config.dropout)
        self.dec = nn.ModuleList()
        cin = config.bottleneck
        for cw in reversed(w):
            self.dec.append(_UpLevel(cin, cw, cw))
            cin = cw
        self.head = ConvAct(w[0], 3, act=None if config.linear_residual else "relu")
        self.linear = nn.Conv2d(3, 3, 1)
        if config.residual:  # start as the identity on the combined view (L + R) / 2
            nn.init.zeros_(self.linear.weight)
            nn.init.zeros_(self.linear.bias)

    @property
    def hidden_channels(self) -> int:
        return self.config.bottleneck

    def init_state(self, batch: int, height: int, width: int, device=None, dtype=torch.float32):
        """Zero ``(h, c)`` for a ``height x width`` input (state lives at 1/16 scale)."""
        s = self.config.scale
        if height % s or width % s:
            raise ValueError(f"RDPD needs height and width multiples of {s}, got {height}x{width}")
        shape = (batch, self.hidden_channels, height // s, width // s)
        if device is None:
            device = self.linear.weight.device
        return torch.zeros(shape, device=device, dtype=dtype), torch.zeros(shape, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor):
        skips = []
        f = x
        for level in self.enc:
            f = level(f)
            skips.append(f)
            f = F.max_pool2d(f, kernel_size=2, stride=2)  # explicit stride: Core ML needs it
        f = self.pre_lstm(f)
        h_next, c_next = self.lstm(f, h, c)
        f = h_next  # o_t of Fig. 6 is the hidden output o o tanh(C) (eq. 11)
        for level, skip in zip(self.dec, reversed(skips)):
            f = level(f, skip)
        y = self.linear(self.head(f))
        if self.config.linear_residual:
            y = zero_mean(y)
        if self.config.residual:
            y = y + 0.5 * (x[:, 0:3] + x[:, 3:6])
        y = torch.clamp(y, 0.0, 1.0)
        return y, h_next, c_next

    def run_sequence(self, frames: torch.Tensor, state=None) -> torch.Tensor:
        """Run ``frames [B, T, 7, H, W]`` from a zero state (or ``state=(h, c)``) -> ``[B, T, 3, H, W]``."""
        if frames.dim() != 5:
            raise ValueError(f"frames must be [B, T, C, H, W], got shape {tuple(frames.shape)}")
        b, t, _, hh, ww = frames.shape
        h, c = state if state is not None else self.init_state(b, hh, ww, frames.device, frames.dtype)
        outs = []
        for k in range(t):
            y, h, c = self(frames[:, k], h, c)
            outs.append(y)
        return torch.stack(outs, dim=1)


def build_rdpd(variant: str = "paper") -> RDPD:
    if variant not in RDPD_VARIANTS:
        raise ValueError(f"unknown RDPD variant {variant!r}; valid: {', '.join(RDPD_VARIANTS)}")
    return RDPD(RDPD_VARIANTS[variant]).eval()


# --------------------------------------------------------------------------- the spec (models/spec.py)

def _examples(shapes: dict, g: torch.Generator, state: str = "random") -> dict:
    b, _, h, w = shapes["x"]
    left, right = dp_pair(b, h, w, g)
    x = torch.cat([left, right, radial_map_torch(h, w, batch=b)], dim=1)
    if state == "zeros":
        hs, cs = torch.zeros(shapes["h"]), torch.zeros(shapes["c"])
    elif state == "random":  # a mid-sequence state: |h| < 1, c of order 1
        cs = 0.7 * torch.randn(shapes["c"], generator=g)
        hs = torch.sigmoid(torch.randn(shapes["h"], generator=g)) * torch.tanh(cs)
    else:
        raise ValueError(f"state must be 'random' or 'zeros', got {state!r}")
    return {"x": x, "h": hs, "c": cs}


def _inputs(f: dict) -> dict:
    """x = left RGB, right RGB, radial map (7 channels)."""
    return {"x": np.concatenate([chw(f["left"]), chw(f["right"]), chw(f["radial"])])}


def _targets(f: dict) -> dict:
    """y = the sharp frame; the combined view (the do-nothing baseline) and the signed CoC when known."""
    out = {"y": chw(f["sharp"]), "combined": chw(f["combined"])}
    if "coc" in f:
        out["coc"] = chw(f["coc"])
    return out


def _before(inputs: dict) -> np.ndarray:
    """The conventional photo: the mean of the two DP views."""
    x = inputs["x"]
    return 0.5 * (x[..., :3, :, :] + x[..., 3:6, :, :])


def _loss(outputs: dict, targets: dict) -> dict:
    return losses.rdpd_loss(outputs["y"], targets["y"])


_STATE_CH = {v: c.bottleneck for v, c in RDPD_VARIANTS.items()}

SPEC = ModelSpec(
    name="rdpd",
    description="Recurrent dual-pixel deblurring (seed 004): DP pair + radial map -> sharp image, "
                "ConvLSTM state streamed frame by frame.",
    builder=build_rdpd,
    inputs=[
        TensorSpec("x", 7, IMG, "left RGB, right RGB (DP views, [0,1]) and the radial map r/r_corner"),
        TensorSpec("h", _STATE_CH, (-1.0, 1.0), "ConvLSTM hidden state H_{t-1} (zeros at the first frame)",
                   recurrent=True, scale=1 / 16),
        TensorSpec("c", _STATE_CH, (-INF, INF), "ConvLSTM memory cell C_{t-1} (zeros at the first frame)",
                   recurrent=True, scale=1 / 16),
    ],
    outputs=[
        TensorSpec("y", 3, IMG, "deblurred RGB, clamped to [0,1]"),
        TensorSpec("h_next", _STATE_CH, (-1.0, 1.0), "ConvLSTM hidden state H_t: feed back as h",
                   recurrent=True, scale=1 / 16),
        TensorSpec("c_next", _STATE_CH, (-INF, INF), "ConvLSTM memory cell C_t: feed back as c",
                   recurrent=True, scale=1 / 16),
    ],
    main_output="y",
    example_fn=_examples,
    state_map={"h": "h_next", "c": "c_next"},
    paper_params=24.28e6,
    paper_note="RDPD 24.28 M (seed 003 table; MODELS.md: about 24.3 M)",
    data=DataSpec(renderer="dp_clip", capture="dual_pixel", fields=("left", "right", "radial"),
                  test_options=({"frames": 4},)),
    inputs_from_fields=_inputs,
    targets_from_fields=_targets,
    before_image=_before,
    radial_input=("x", 6),
    loss=_loss,
    eval_tasks=(EvalTask("deblur", "y", "y", before="combined", before_label="input (combined view)", wiener=True),),
)
