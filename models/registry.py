"""Model registry: the one contract export, runtime and device tests read (ARCHITECTURE.md).

``get(name) -> ModelSpec`` for ``"rdpd"``, ``"dc2"``, ``"uid"``. A spec knows how to build each
variant (``paper``, ``mobile``, ``tiny``; eval mode, deterministic given ``torch.manual_seed``),
the named inputs and outputs (channels, value range, NCHW layout, recurrent state, spatial
scale), their concrete shapes, and realistic example inputs. Forward signatures take the
inputs positionally in ``spec.inputs`` order and return a tuple in ``spec.outputs`` order.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .dc2 import DC2_VARIANTS, build_dc2
from .radial import radial_map_torch
from .rdpd import RDPD_VARIANTS, build_rdpd
from .uid import UID_VARIANTS, build_uid

VARIANTS = ("paper", "mobile", "tiny")
INF = float("inf")


class UnknownModelError(KeyError):
    """Raised by :func:`get` for a name that is not registered; the message lists valid names."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class TensorSpec:
    """One named input or output tensor (always NCHW float32).

    ``channels`` is an int, or a per-variant mapping (RDPD state). ``scale`` is the spatial
    size relative to the model input (1/16 for RDPD state, 1/2 ... 1/8 for DC2 side outputs).
    ``value_range`` may hold infinities for unbounded tensors (``to_dict`` writes them as None).
    """

    name: str
    channels: int | Mapping[str, int]
    value_range: tuple[float, float]
    description: str
    layout: str = "NCHW"
    recurrent: bool = False
    scale: float = 1.0

    def channels_for(self, variant: str) -> int:
        if isinstance(self.channels, Mapping):
            if variant not in self.channels:
                raise ValueError(f"unknown variant {variant!r}; valid: {', '.join(self.channels)}")
            return int(self.channels[variant])
        return int(self.channels)

    def shape(self, variant: str, height: int, width: int, batch: int = 1) -> tuple[int, int, int, int]:
        h, w = height * self.scale, width * self.scale
        if h != int(h) or w != int(w):
            raise ValueError(f"{self.name}: {height}x{width} is not divisible by 1/{1 / self.scale:g}")
        return (batch, self.channels_for(variant), int(h), int(w))

    def to_dict(self, variant: str | None = None) -> dict:
        lo, hi = self.value_range
        d = {
            "name": self.name,
            "channels": self.channels_for(variant) if variant else (
                dict(self.channels) if isinstance(self.channels, Mapping) else self.channels),
            "value_range": [None if math.isinf(lo) else lo, None if math.isinf(hi) else hi],
            "layout": self.layout,
            "dtype": "float32",
            "recurrent": self.recurrent,
            "scale": self.scale,
            "description": self.description,
        }
        return d


@dataclass(frozen=True)
class ModelSpec:
    """Everything a consumer needs to build, feed and read one model."""

    name: str
    description: str
    builder: Callable[[str], nn.Module]
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    main_output: str
    example_fn: Callable[..., dict]
    variants: tuple[str, ...] = VARIANTS
    size_multiple: int = 16
    state_map: dict[str, str] = field(default_factory=dict)  # recurrent input -> output feeding it
    paper_params: float | None = None  # the paper's figure (parameters), for tables
    paper_note: str = ""

    # -- names --------------------------------------------------------------------------------
    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    @property
    def recurrent_inputs(self) -> list[str]:
        return [t.name for t in self.inputs if t.recurrent]

    def input(self, name: str) -> TensorSpec:
        return _by_name(self.inputs, name, f"{self.name} input")

    def output(self, name: str) -> TensorSpec:
        return _by_name(self.outputs, name, f"{self.name} output")

    # -- building -----------------------------------------------------------------------------
    def check_variant(self, variant: str) -> None:
        if variant not in self.variants:
            raise ValueError(f"unknown variant {variant!r} for {self.name}; valid: {', '.join(self.variants)}")

    def check_size(self, height: int, width: int) -> None:
        m = self.size_multiple
        if height <= 0 or width <= 0 or height % m or width % m:
            raise ValueError(
                f"{self.name} needs height and width that are positive multiples of {m}, got {height}x{width}"
            )

    def build(self, variant: str = "mobile") -> nn.Module:
        """A fresh model in eval mode (initialisation follows the global torch seed)."""
        self.check_variant(variant)
        return self.builder(variant).eval()

    # -- shapes and examples --------------------------------------------------------------------
    def input_shapes(self, variant: str, height: int, width: int, batch: int = 1) -> dict[str, tuple]:
        self.check_variant(variant)
        self.check_size(height, width)
        return {t.name: t.shape(variant, height, width, batch) for t in self.inputs}

    def output_shapes(self, variant: str, height: int, width: int, batch: int = 1) -> dict[str, tuple]:
        self.check_variant(variant)
        self.check_size(height, width)
        return {t.name: t.shape(variant, height, width, batch) for t in self.outputs}

    def example_inputs(self, height: int, width: int, variant: str = "mobile", batch: int = 1,
                       seed: int = 0, **kwargs) -> dict[str, torch.Tensor]:
        """Realistic inputs in ``spec.inputs`` order: images in [0, 1], radial map ``r/r_corner``,
        defocus maps >= 0, binary masks; deterministic for a given ``seed``."""
        shapes = self.input_shapes(variant, height, width, batch)
        g = torch.Generator().manual_seed(int(seed))
        out = self.example_fn(shapes, g, **kwargs)
        return {name: out[name].contiguous() for name in self.input_names}

    def to_dict(self, variant: str | None = None) -> dict:
        """JSON-ready description (for artifact manifests)."""
        return {
            "name": self.name,
            "description": self.description,
            "variants": list(self.variants),
            "variant": variant,
            "inputs": [t.to_dict(variant) for t in self.inputs],
            "outputs": [t.to_dict(variant) for t in self.outputs],
            "main_output": self.main_output,
            "size_multiple": self.size_multiple,
            "state_map": dict(self.state_map),
        }


def _by_name(specs: list[TensorSpec], name: str, what: str) -> TensorSpec:
    for t in specs:
        if t.name == name:
            return t
    raise KeyError(f"no {what} named {name!r}; valid: {', '.join(t.name for t in specs)}")


# ---------------------------------------------------------------------------------------------
# realistic example data
# ---------------------------------------------------------------------------------------------


def _smooth_image(b: int, h: int, w: int, g: torch.Generator) -> torch.Tensor:
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


def _box_blur(x: torch.Tensor, r: int = 1) -> torch.Tensor:
    k = 2 * r + 1
    return F.avg_pool2d(F.pad(x, (r, r, r, r), mode="replicate"), k, stride=1)


def _dp_pair(b: int, h: int, w: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Left/right DP views: a blurred scene shifted by +-1 px (opposite DP disparity)."""
    img = _box_blur(_smooth_image(b, h, w, g), 1)
    return torch.roll(img, 1, dims=-1), torch.roll(img, -1, dims=-1)


def _disparity(b: int, h: int, w: int, g: torch.Generator) -> torch.Tensor:
    """A plausible normalised inverse-depth map in [0, 1]: a ground ramp plus a blob."""
    y = torch.linspace(0, 1, h)[:, None].expand(h, w)
    x = torch.linspace(0, 1, w)[None, :].expand(h, w)
    maps = []
    for _ in range(b):
        cy, cx = torch.rand(2, generator=g).tolist()
        blob = torch.exp(-((y - (0.3 + 0.4 * cy)) ** 2 + (x - (0.3 + 0.4 * cx)) ** 2) / 0.02)
        maps.append((0.6 * y + 0.4 * blob).clamp(0, 1))
    return torch.stack(maps)[:, None]


def _centre_mask(b: int, h: int, w: int, g: torch.Generator) -> torch.Tensor:
    """A binary elliptical focus mask near the centre (a prompted subject)."""
    y = (torch.arange(h) + 0.5)[:, None] / h
    x = (torch.arange(w) + 0.5)[None, :] / w
    masks = []
    for _ in range(b):
        cy, cx, ry, rx = (0.35 + 0.3 * torch.rand(4, generator=g)).tolist()
        m = ((y - cy) / (0.4 * ry)) ** 2 + ((x - cx) / (0.4 * rx)) ** 2 <= 1.0
        masks.append(m.float())
    return torch.stack(masks)[:, None]


def _rdpd_examples(shapes: dict, g: torch.Generator, state: str = "random") -> dict:
    b, _, h, w = shapes["x"]
    left, right = _dp_pair(b, h, w, g)
    x = torch.cat([left, right, radial_map_torch(h, w, batch=b)], dim=1)
    if state == "zeros":
        hs, cs = torch.zeros(shapes["h"]), torch.zeros(shapes["c"])
    elif state == "random":  # a mid-sequence state: |h| < 1, c of order 1
        cs = 0.7 * torch.randn(shapes["c"], generator=g)
        hs = torch.sigmoid(torch.randn(shapes["h"], generator=g)) * torch.tanh(cs)
    else:
        raise ValueError(f"state must be 'random' or 'zeros', got {state!r}")
    return {"x": x, "h": hs, "c": cs}


def _dc2_examples(shapes: dict, g: torch.Generator) -> dict:
    b, _, h, w = shapes["wide"]
    sharp = _smooth_image(b, h, w, g)
    disp = _disparity(b, h, w, g)
    d_focus_w, d_focus_t = 0.8, 0.3  # capture focused near, target focused further away
    defocus_wide = (1.2 * (disp - d_focus_w).abs()).clamp(0, 1)
    defocus_target = (2.0 * (disp - d_focus_t).abs()).clamp(0, 1)
    wide = _box_blur(sharp, 2) * defocus_wide + sharp * (1 - defocus_wide)  # blur where defocused
    gains = torch.tensor([1.06, 1.0, 0.9]).view(1, 3, 1, 1)  # UW white balance is off
    ultrawide = (sharp * gains).clamp(0, 1)
    return {"wide": wide, "ultrawide": ultrawide, "defocus_wide": defocus_wide,
            "defocus_target": defocus_target, "radial": radial_map_torch(h, w, batch=b)}


def _uid_examples(shapes: dict, g: torch.Generator) -> dict:
    b, _, h, w = shapes["left"]
    left, right = _dp_pair(b, h, w, g)
    return {"left": left, "right": right, "focus_mask": _centre_mask(b, h, w, g)}


# ---------------------------------------------------------------------------------------------
# the three specs
# ---------------------------------------------------------------------------------------------

_IMG = (0.0, 1.0)

_RDPD = ModelSpec(
    name="rdpd",
    description="Recurrent dual-pixel deblurring (seed 004): DP pair + radial map -> sharp image, "
                "ConvLSTM state streamed frame by frame.",
    builder=build_rdpd,
    inputs=[
        TensorSpec("x", 7, _IMG, "left RGB, right RGB (DP views, [0,1]) and the radial map r/r_corner"),
        TensorSpec("h", {v: c.bottleneck for v, c in RDPD_VARIANTS.items()}, (-1.0, 1.0),
                   "ConvLSTM hidden state H_{t-1} (zeros at the first frame)", recurrent=True, scale=1 / 16),
        TensorSpec("c", {v: c.bottleneck for v, c in RDPD_VARIANTS.items()}, (-INF, INF),
                   "ConvLSTM memory cell C_{t-1} (zeros at the first frame)", recurrent=True, scale=1 / 16),
    ],
    outputs=[
        TensorSpec("y", 3, _IMG, "deblurred RGB, clamped to [0,1]"),
        TensorSpec("h_next", {v: c.bottleneck for v, c in RDPD_VARIANTS.items()}, (-1.0, 1.0),
                   "ConvLSTM hidden state H_t: feed back as h", recurrent=True, scale=1 / 16),
        TensorSpec("c_next", {v: c.bottleneck for v, c in RDPD_VARIANTS.items()}, (-INF, INF),
                   "ConvLSTM memory cell C_t: feed back as c", recurrent=True, scale=1 / 16),
    ],
    main_output="y",
    example_fn=_rdpd_examples,
    state_map={"h": "h_next", "c": "c_next"},
    paper_params=24.28e6,
    paper_note="RDPD 24.28 M (seed 003 table; MODELS.md: about 24.3 M)",
)

_DC2_IMG_OUT = [
    TensorSpec("image", 3, _IMG, "defocus-controlled RGB at full size (main output)"),
    TensorSpec("image_half", 3, _IMG, "output at 1/2 scale", scale=1 / 2),
    TensorSpec("image_quarter", 3, _IMG, "output at 1/4 scale", scale=1 / 4),
    TensorSpec("image_eighth", 3, _IMG, "output at 1/8 scale", scale=1 / 8),
    TensorSpec("mask_uw", 1, _IMG, "UW blending mask at full size (W mask = 1 - mask_uw)"),
    TensorSpec("mask_uw_half", 1, _IMG, "UW blending mask at 1/2 scale", scale=1 / 2),
    TensorSpec("mask_uw_quarter", 1, _IMG, "UW blending mask at 1/4 scale", scale=1 / 4),
    TensorSpec("mask_uw_eighth", 1, _IMG, "UW blending mask at 1/8 scale", scale=1 / 8),
    TensorSpec("refined_w", 3, _IMG, "W refined by its DRBNet module, full size"),
    TensorSpec("refined_uw", 3, _IMG, "UW refined by its DRBNet module, full size"),
]

_DC2 = ModelSpec(
    name="dc2",
    description="Dual-camera defocus control (seed 001): W + aligned UW + defocus maps -> image with "
                "the target defocus, via two DRBNet refiners and an ASPP fusion network.",
    builder=build_dc2,
    inputs=[
        TensorSpec("wide", 3, _IMG, "wide image W, RGB [0,1] (reference colours)"),
        TensorSpec("ultrawide", 3, _IMG, "ultra-wide image UW aligned to W, RGB [0,1]"),
        TensorSpec("defocus_wide", 1, _IMG,
                   "W's defocus map A|d - d_focus| (d: normalised disparity), >= 0, 1 = strongest blur"),
        TensorSpec("defocus_target", 1, _IMG, "target defocus map, same units; all zeros = all-in-focus"),
        TensorSpec("radial", 1, _IMG, "radial map r/r_corner of the full image"),
    ],
    outputs=_DC2_IMG_OUT,
    main_output="image",
    example_fn=_dc2_examples,
    paper_params=2 * 11.7e6,
    paper_note="DRBNet about 11.7 M per refiner (x2); the fusion network's size is not published",
)

_UID = ModelSpec(
    name="uid",
    description="User-instructed DP defocus control (seed 003): DP pair + focus mask -> all-in-focus, "
                "refocused image and signed defocus map, via a shared symmetric kernel bank.",
    builder=build_uid,
    inputs=[
        TensorSpec("left", 3, _IMG, "left DP view, RGB [0,1]"),
        TensorSpec("right", 3, _IMG, "right DP view, RGB [0,1]"),
        TensorSpec("focus_mask", 1, _IMG, "binary target focus mask (1 = make sharp), from a prompt"),
    ],
    outputs=[
        TensorSpec("all_in_focus", 3, _IMG, "deblurred RGB (main output)"),
        TensorSpec("refocused", 3, _IMG, "RGB refocused on the masked region"),
        TensorSpec("defocus", 1, (-1.0, 1.0), "signed defocus map F_D of the capture, [-1,1]"),
    ],
    main_output="all_in_focus",
    example_fn=_uid_examples,
    paper_params=3.12e6,
    paper_note="UiD 3.12 M, 495 GFLOPs at an unstated size (seed 003 table)",
)

_REGISTRY: dict[str, ModelSpec] = {s.name: s for s in (_RDPD, _DC2, _UID)}
assert set(RDPD_VARIANTS) == set(DC2_VARIANTS) == set(UID_VARIANTS) == set(VARIANTS)


def names() -> list[str]:
    """Registered model names."""
    return list(_REGISTRY)


def get(name: str) -> ModelSpec:
    """The spec of ``name`` (case-insensitive); :class:`UnknownModelError` lists valid names."""
    key = str(name).lower()
    if key not in _REGISTRY:
        raise UnknownModelError(f"unknown model {name!r}; valid: {', '.join(_REGISTRY)}")
    return _REGISTRY[key]
