"""UiD's contract (``models.spec``): tensors, data, packing, before image and loss, importable
without PyTorch (the network, ``uid.py``, is imported when a model is built): ``run`` through an
exported artifact reads this file only.
"""
from __future__ import annotations

import numpy as np

from .spec import IMG, DataSpec, EvalTask, ModelSpec, TensorSpec, chw


def _build(variant: str):
    from .uid import build_uid

    return build_uid(variant)


COC_NORM_PX = 40.0  # the defocus output: signed CoC / 40 px, in [-1, 1]


def _examples(shapes: dict, g) -> dict:
    from .examples import centre_mask, dp_pair

    b, _, h, w = shapes["left"]
    left, right = dp_pair(b, h, w, g)
    return {"left": left, "right": right, "focus_mask": centre_mask(b, h, w, g)}


def _inputs(f: dict) -> dict:
    return {"left": chw(f["left"]), "right": chw(f["right"]),
            "focus_mask": chw(np.asarray(f["focus_mask"], np.float32))}


def _targets(f: dict) -> dict:
    """all-in-focus and refocused images, the signed defocus map (CoC / COC_NORM_PX), and the
    combined view and CoC for the baselines."""
    return {"all_in_focus": chw(f["sharp"]), "refocused": chw(f["refocused"]),
            "defocus": chw(np.clip(f["coc"] / COC_NORM_PX, -1, 1)), "combined": chw(f["combined"]),
            "coc": chw(f["coc"])}


def _before(inputs: dict) -> np.ndarray:
    return 0.5 * (inputs["left"] + inputs["right"])


def _loss(outputs: dict, targets: dict) -> dict:
    from . import losses

    return losses.uid_loss(outputs, targets)


SPEC = ModelSpec(
    name="uid",
    description="User-instructed DP defocus control (seed 003): DP pair + focus mask -> all-in-focus, "
                "refocused image and signed defocus map, via a shared symmetric kernel bank.",
    builder=_build,
    inputs=[
        TensorSpec("left", 3, IMG, "left DP view, RGB [0,1]"),
        TensorSpec("right", 3, IMG, "right DP view, RGB [0,1]"),
        TensorSpec("focus_mask", 1, IMG, "binary target focus mask (1 = make sharp), from a prompt"),
    ],
    outputs=[
        TensorSpec("all_in_focus", 3, IMG, "deblurred RGB (main output)"),
        TensorSpec("refocused", 3, IMG, "RGB refocused on the masked region"),
        TensorSpec("defocus", 1, (-1.0, 1.0), "signed defocus map F_D of the capture, [-1,1]"),
    ],
    main_output="all_in_focus",
    example_fn=_examples,
    paper_params=3.12e6,
    paper_note="UiD 3.12 M, 495 GFLOPs at an unstated size (seed 003 table)",
    data=DataSpec(renderer="dp_refocus", capture="dual_pixel", fields=("left", "right", "focus_mask"), refocus=True),
    inputs_from_fields=_inputs,
    targets_from_fields=_targets,
    before_image=_before,
    disparity_output="defocus",
    refocus_output="refocused",
    loss=_loss,
    eval_tasks=(EvalTask("deblur", "all_in_focus", "all_in_focus", before="combined",
                         before_label="input (combined view)", wiener=True),
                EvalTask("refocus", "refocused", "refocused", before="combined", before_label="input (combined view)")),
)
