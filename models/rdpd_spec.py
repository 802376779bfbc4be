"""RDPD's contract (``models.spec``): its variants, tensors, data, packing, before image and
loss, importable without PyTorch (the network, ``rdpd.py``, is imported when a model is built):
``run`` through an exported artifact reads this file only.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .spec import IMG, INF, DataSpec, EvalTask, ModelSpec, TensorSpec, chw, stack_chw


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


def _build(variant: str):
    from .rdpd import build_rdpd

    return build_rdpd(variant)


def _examples(shapes: dict, g, state: str = "random") -> dict:
    import torch

    from .examples import dp_pair
    from .radial import radial_map_torch

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
    return {"x": stack_chw(f["left"], f["right"], f["radial"])}


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
    from . import losses

    return losses.rdpd_loss(outputs["y"], targets["y"])


_STATE_CH = {v: c.bottleneck for v, c in RDPD_VARIANTS.items()}

SPEC = ModelSpec(
    name="rdpd",
    description="Recurrent dual-pixel deblurring (seed 004): DP pair + radial map -> sharp image, "
                "ConvLSTM state streamed frame by frame.",
    builder=_build,
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
