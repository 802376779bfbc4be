"""The prompt mask head's contract (``models.spec``): tensors, data, packing, before image and
loss, importable without PyTorch (the network, ``promptmask.py``, is imported when a model is
built).
"""
from __future__ import annotations

import numpy as np

from .spec import IMG, DataSpec, EvalTask, ModelSpec, TensorSpec, chw
from .text_encoder import DIM


def _build(variant: str):
    from .promptmask import build_promptmask

    return build_promptmask(variant)


def _examples(shapes: dict, g) -> dict:
    import torch

    from .examples import dp_pair

    b, _, h, w = shapes["left"]
    left, right = dp_pair(b, h, w, g)
    q = torch.randn(b, DIM, 1, 1, generator=g)
    return {"left": left, "right": right, "query": q / q.norm(dim=1, keepdim=True)}


def _inputs(f: dict) -> dict:
    return {"left": chw(f["left"]), "right": chw(f["right"]),
            "query": np.asarray(f["query"], np.float32).reshape(DIM, 1, 1)}


def _targets(f: dict) -> dict:
    m = np.asarray(f["prompt_mask"], np.float32)
    return {"mask": chw(m), "presence": np.full((1, 1, 1), float(m.max() > 0), np.float32),
            "combined": chw(f["combined"]), "no_mask": np.zeros((1, *m.shape), np.float32)}


def _before(inputs: dict) -> np.ndarray:
    return 0.5 * (inputs["left"] + inputs["right"])


def soft_iou(pred, target, eps: float = 1.0):
    """Per-image soft IoU (B,), 1 for an empty prediction of an empty target."""
    inter = (pred * target).sum(dim=(1, 2, 3))
    union = (pred + target - pred * target).sum(dim=(1, 2, 3))
    return (inter + eps) / (union + eps)


def _loss(outputs: dict, targets: dict) -> dict:
    """BCE + soft-IoU loss on the mask, BCE on presence."""
    import torch.nn.functional as F

    m, t = outputs["mask"].clamp(1e-6, 1 - 1e-6), targets["mask"]
    bce = F.binary_cross_entropy(m, t)
    iou = 1.0 - soft_iou(m, t).mean()
    p = outputs["presence"].clamp(1e-6, 1 - 1e-6)
    pres = F.binary_cross_entropy(p, targets["presence"])
    return {"loss": bce + iou + 0.2 * pres, "bce": bce, "iou_loss": iou, "presence": pres}


SPEC = ModelSpec(
    name="promptmask",
    description="Prompt mask head (seed 003 F_m/F_g): DP pair + 384-d MiniLM text query -> the mask of the "
                "named object and the prompt's presence score; the focus mask of UiD.",
    builder=_build,
    inputs=[
        TensorSpec("left", 3, IMG, "left DP view, RGB [0,1]"),
        TensorSpec("right", 3, IMG, "right DP view, RGB [0,1]"),
        TensorSpec("query", DIM, (-1.0, 1.0), "MiniLM sentence embedding of the prompt (unit norm), 1x1",
                   spatial=(1, 1)),
    ],
    outputs=[
        TensorSpec("mask", 1, IMG, "probability that a pixel belongs to what the prompt names (main output)"),
        TensorSpec("presence", 1, IMG, "probability that the prompt names anything in the scene", spatial=(1, 1)),
    ],
    main_output="mask",
    example_fn=_examples,
    paper_note="seed 003 uses SAM + a text query; no SAM ships here: our own small image encoder",
    data=DataSpec(renderer="prompt_scene", capture="dual_pixel", fields=("left", "right", "query"),
                  test_options=({"split": "unseen"}, {"split": "train"})),
    inputs_from_fields=_inputs,
    targets_from_fields=_targets,
    before_image=_before,
    loss=_loss,
    eval_tasks=(EvalTask("mask", "mask", "mask", before="no_mask", before_label="empty mask"),),
)
