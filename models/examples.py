"""Realistic example inputs for any model (``ModelSpec.example_inputs``): smooth natural-looking
images, DP pairs, disparity maps and focus masks made from a torch generator, fast and
deterministic. Used for export tracing, shapes and random-but-plausible parity inputs.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def smooth_image(b: int, h: int, w: int, g: torch.Generator) -> torch.Tensor:
    """A natural-looking image: a few octaves of up-sampled noise plus a little texture."""
    img = torch.zeros(b, 3, h, w)
    for k, amp in ((4, 0.5), (16, 0.3), (64, 0.15)):
        lh, lw = max(2, math.ceil(h * k / max(h, w))), max(2, math.ceil(w * k / max(h, w)))
        low = torch.rand(b, 3, lh, lw, generator=g)
        img += amp * F.interpolate(low, size=(h, w), mode="bilinear", align_corners=False)
    img += 0.02 * torch.rand(b, 3, h, w, generator=g)
    img = (img - img.amin(dim=(1, 2, 3), keepdim=True)) / (img.amax(dim=(1, 2, 3), keepdim=True)
                                                          - img.amin(dim=(1, 2, 3), keepdim=True) + 1e-6)
    return img.clamp(0, 1)


def box_blur(x: torch.Tensor, r: int = 1) -> torch.Tensor:
    k = 2 * r + 1
    return F.avg_pool2d(F.pad(x, (r, r, r, r), mode="replicate"), k, stride=1)


def dp_pair(b: int, h: int, w: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Left/right DP views: a blurred scene shifted by +-1 px (opposite DP disparity)."""
    img = box_blur(smooth_image(b, h, w, g), 1)
    return torch.roll(img, 1, dims=-1), torch.roll(img, -1, dims=-1)


def disparity(b: int, h: int, w: int, g: torch.Generator) -> torch.Tensor:
    """A plausible normalised inverse-depth map in [0, 1]: a ground ramp plus a blob."""
    y = torch.linspace(0, 1, h)[:, None].expand(h, w)
    x = torch.linspace(0, 1, w)[None, :].expand(h, w)
    maps = []
    for _ in range(b):
        cy, cx = torch.rand(2, generator=g).tolist()
        blob = torch.exp(-((y - (0.3 + 0.4 * cy)) ** 2 + (x - (0.3 + 0.4 * cx)) ** 2) / 0.02)
        maps.append((0.6 * y + 0.4 * blob).clamp(0, 1))
    return torch.stack(maps)[:, None]


def centre_mask(b: int, h: int, w: int, g: torch.Generator) -> torch.Tensor:
    """A binary elliptical focus mask near the centre (a prompted subject)."""
    y = (torch.arange(h) + 0.5)[:, None] / h
    x = (torch.arange(w) + 0.5)[None, :] / w
    masks = []
    for _ in range(b):
        cy, cx, ry, rx = (0.35 + 0.3 * torch.rand(4, generator=g)).tolist()
        m = ((y - cy) / (0.4 * ry)) ** 2 + ((x - cx) / (0.4 * rx)) ** 2 <= 1.0
        masks.append(m.float())
    return torch.stack(masks)[:, None]
