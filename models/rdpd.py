"""RDPD: recurrent dual-pixel deblurring (seed 004, section 4, Fig. 6; MODELS.md 1).

Encoder (3x3 conv+ReLU pairs, 2x2 max-pool after each pair, one 3x3 conv to the bottleneck
width at 1/16) -> peephole ConvLSTM (seed 004 eq. 7-11) -> decoder (per level: nearest x2 +
2x2 conv, concatenate the encoder skip, two 3x3 convs) -> 3x3 conv to 3 (ReLU) -> 1x1 linear
conv -> clamp to [0, 1] (eq. 12). The state is explicit: ``forward(x, h, c) -> (y, h, c)``.
The variants and the SPEC (I/O, packing) are in ``rdpd_spec.py``, importable without PyTorch.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import ConvAct, ConvLSTMCell, upsample2, zero_mean
from .rdpd_spec import RDPD_VARIANTS, RDPDConfig  # the variants live with the SPEC (rdpd_spec.py)


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
