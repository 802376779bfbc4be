"""DC2's contract (``models.spec``): tensors, data, packing, before image and loss, importable
without PyTorch (the network, ``dc2.py``, is imported when a model is built): ``run`` through an
exported artifact reads this file only.
"""
from __future__ import annotations

import numpy as np

from .spec import IMG, DataSpec, EvalTask, ModelSpec, TensorSpec, chw

DEFOCUS_NORM_PX = 10.0  # defocus-map inputs are |CoC| / 10 px clipped to [0, 1] (1 = strongest blur)


def _build(variant: str):
    from .dc2 import build_dc2

    return build_dc2(variant)


def _examples(shapes: dict, g) -> dict:
    import torch

    from .examples import box_blur, disparity, smooth_image
    from .radial import radial_map_torch

    b, _, h, w = shapes["wide"]
    sharp = smooth_image(b, h, w, g)
    disp = disparity(b, h, w, g)
    d_focus_w, d_focus_t = 0.8, 0.3  # capture focused near, target focused further away
    defocus_wide = (1.2 * (disp - d_focus_w).abs()).clamp(0, 1)
    defocus_target = (2.0 * (disp - d_focus_t).abs()).clamp(0, 1)
    wide = box_blur(sharp, 2) * defocus_wide + sharp * (1 - defocus_wide)  # blur where defocused
    gains = torch.tensor([1.06, 1.0, 0.9]).view(1, 3, 1, 1)  # UW white balance is off
    ultrawide = (sharp * gains).clamp(0, 1)
    return {"wide": wide, "ultrawide": ultrawide, "defocus_wide": defocus_wide,
            "defocus_target": defocus_target, "radial": radial_map_torch(h, w, batch=b)}


def _inputs(f: dict) -> dict:
    """W, UW aligned to W, the two defocus maps (|CoC| px -> [0, 1] by DEFOCUS_NORM_PX), radial map."""
    return {"wide": chw(f["wide"]), "ultrawide": chw(f["ultrawide"]),
            "defocus_wide": chw(np.clip(f["defocus_wide"] / DEFOCUS_NORM_PX, 0, 1)),
            "defocus_target": chw(np.clip(f["defocus_target"] / DEFOCUS_NORM_PX, 0, 1)),
            "radial": chw(f["radial"])}


def _targets(f: dict) -> dict:
    """image = W's scene rendered with the target defocus (the sharp image when it is all zeros)."""
    from . import losses

    label, weight = losses.oracle_label(chw(f["wide"]), chw(f["ultrawide"]), chw(f["refocused"]))
    return {"image": chw(f["refocused"]), "sharp": chw(f["sharp"]),
            "occlusion": chw(np.asarray(f["occlusion"], np.float32)),
            "oracle_uw": label, "oracle_weight": weight}


def _before(inputs: dict) -> np.ndarray:
    return inputs["wide"]


def _loss(outputs: dict, targets: dict) -> dict:
    from . import losses

    return losses.dc2_loss(outputs, targets["image"], targets.get("oracle_uw"), targets.get("oracle_weight"))


def _task(name: str, all_in_focus: bool) -> EvalTask:
    return EvalTask(name, "image", "image", before="wide", before_label="input (W)",
                    when=("all_in_focus", all_in_focus), alternative="ultrawide",
                    alternative_label="input (aligned UW)", oracle_label="oracle per-pixel W/UW")


SPEC = ModelSpec(
    name="dc2",
    description="Dual-camera defocus control (seed 001): W + aligned UW + defocus maps -> image with "
                "the target defocus, via two DRBNet refiners and an ASPP fusion network.",
    builder=_build,
    inputs=[
        TensorSpec("wide", 3, IMG, "wide image W, RGB [0,1] (reference colours)"),
        TensorSpec("ultrawide", 3, IMG, "ultra-wide image UW aligned to W, RGB [0,1]"),
        TensorSpec("defocus_wide", 1, IMG,
                   "W's defocus map A|d - d_focus| (d: normalised disparity), >= 0, 1 = strongest blur"),
        TensorSpec("defocus_target", 1, IMG, "target defocus map, same units; all zeros = all-in-focus"),
        TensorSpec("radial", 1, IMG, "radial map r/r_corner of the full image"),
    ],
    outputs=[
        TensorSpec("image", 3, IMG, "defocus-controlled RGB at full size (main output)"),
        TensorSpec("image_half", 3, IMG, "output at 1/2 scale", scale=1 / 2),
        TensorSpec("image_quarter", 3, IMG, "output at 1/4 scale", scale=1 / 4),
        TensorSpec("image_eighth", 3, IMG, "output at 1/8 scale", scale=1 / 8),
        TensorSpec("mask_uw", 1, IMG, "UW blending mask at full size (W mask = 1 - mask_uw)"),
        TensorSpec("mask_uw_half", 1, IMG, "UW blending mask at 1/2 scale", scale=1 / 2),
        TensorSpec("mask_uw_quarter", 1, IMG, "UW blending mask at 1/4 scale", scale=1 / 4),
        TensorSpec("mask_uw_eighth", 1, IMG, "UW blending mask at 1/8 scale", scale=1 / 8),
        TensorSpec("refined_w", 3, IMG, "W refined by its DRBNet module, full size"),
        TensorSpec("refined_uw", 3, IMG, "UW refined by its DRBNet module, full size"),
    ],
    main_output="image",
    example_fn=_examples,
    paper_params=2 * 11.7e6,
    paper_note="DRBNet about 11.7 M per refiner (x2); the fusion network's size is not published",
    data=DataSpec(renderer="dual_camera", capture="dual_camera",
                  fields=("wide", "ultrawide", "defocus_wide", "defocus_target", "radial"),
                  test_options=({"all_in_focus_prob": 1.0}, {"all_in_focus_prob": 0.0})),  # half each task
    inputs_from_fields=_inputs,
    targets_from_fields=_targets,
    before_image=_before,
    radial_input=("radial", 0),
    loss=_loss,
    eval_tasks=(_task("all-in-focus", True), _task("refocus", False)),
)
