"""The prompt mask head's contract (``models.spec``): tensors, data, packing, before image and
loss, importable without PyTorch (the network, ``promptmask.py``, is imported when a model is
built), and its *concepts*: the attributes a prompt can name, which the network's query and
pixel posteriors range over.

A prompt names an object by attributes (colour, shape, texture: any of them may be left out) or
names a role (the nearest object, the farthest object, the background). Each attribute has one
more class than values: "any" on the query side (the prompt does not say), "none" on the pixel
side (the pixel is background). :func:`concept_labels` reads these labels from a prompt of the
synthetic vocabulary (training targets only; at run time the network reads the embedding).
"""
from __future__ import annotations

import numpy as np

from .spec import IMG, DataSpec, EvalTask, ModelSpec, TensorSpec, chw
from .text_encoder import DIM

COLOURS = ("red", "green", "blue", "yellow", "purple", "orange")
SHAPES = ("disc", "square", "triangle", "cross")
TEXTURES = ("plain", "striped", "checked")
ATTRIBUTES = {"colour": COLOURS, "shape": SHAPES, "texture": TEXTURES}
ROLE_PROMPTS = {"the nearest object": "nearest", "the farthest object": "farthest", "the background": "background"}
ROLES = tuple(ROLE_PROMPTS.values())
KINDS = ("object",) + ROLES  # what a prompt names: an object by attributes, or a role


def concept_labels(text: str) -> np.ndarray:
    """``[colour, shape, texture, kind]`` class indices of a vocabulary prompt; an attribute the
    prompt leaves out gets index ``len(values)`` ("any")."""
    t = " ".join(str(text).lower().split())
    if t in ROLE_PROMPTS:
        kind = KINDS.index(ROLE_PROMPTS[t])
        return np.array([len(v) for v in ATTRIBUTES.values()] + [kind], np.float32)
    words = set(t.split())
    idx = [next((i for i, v in enumerate(values) if v in words), len(values)) for values in ATTRIBUTES.values()]
    return np.array(idx + [0], np.float32)


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
            "combined": chw(f["combined"]), "no_mask": np.zeros((1, *m.shape), np.float32),
            "concepts": chw(f["concepts"]), "roles": chw(f["roles"]),
            "query_labels": np.asarray(f["query_labels"], np.float32).reshape(-1, 1, 1)}


def _before(inputs: dict) -> np.ndarray:
    return 0.5 * (inputs["left"] + inputs["right"])


def soft_iou(pred, target, eps: float = 1.0):
    """Per-image soft IoU (B,), 1 for an empty prediction of an empty target."""
    inter = (pred * target).sum(dim=(1, 2, 3))
    union = (pred + target - pred * target).sum(dim=(1, 2, 3))
    return (inter + eps) / (union + eps)


def _concept_terms(outputs: dict, targets: dict) -> dict:
    """The concept supervision of the training-only outputs: cross-entropy of the pixel
    attribute values on object pixels (1/2 scale) against the objects' attributes, BCE of the
    objectness and role logits, and cross-entropy of the query's attributes and kind against
    the prompt's labels."""
    import torch
    import torch.nn.functional as F

    pix, roles, query = outputs["pixel_logits"], outputs["role_logits"], outputs["query_logits"]
    h, w = pix.shape[-2:]
    lab = F.interpolate(targets["concepts"], size=(h, w), mode="nearest").long()
    role_t = F.interpolate(targets["roles"], size=(h, w), mode="nearest")
    is_object = (lab[:, :1] < len(COLOURS)).float()
    qlab = targets["query_labels"].flatten(1).long()
    sizes = [len(v) for v in ATTRIBUTES.values()]
    count = is_object.sum().clamp_min(1.0)  # background pixels hold index n: not scored
    pixel = sum(F.cross_entropy(p, lab[:, i], ignore_index=n, reduction="sum") / count
                for i, (p, n) in enumerate(zip(torch.split(pix, sizes, dim=1), sizes)))
    q_sizes = [n + 1 for n in sizes] + [len(KINDS)]
    text = sum(F.cross_entropy(q.flatten(1), qlab[:, i]) for i, q in enumerate(torch.split(query, q_sizes, dim=1)))
    maps = F.binary_cross_entropy_with_logits(roles, torch.cat([is_object, role_t], dim=1))
    return {"pixel_ce": pixel, "role_bce": maps, "query_ce": text}


def _loss(outputs: dict, targets: dict) -> dict:
    """BCE + soft-IoU loss on the mask, BCE on presence, and (training) the concept terms."""
    import torch.nn.functional as F

    m, t = outputs["mask"].clamp(1e-6, 1 - 1e-6), targets["mask"]
    bce = F.binary_cross_entropy(m, t)
    iou = 1.0 - soft_iou(m, t).mean()
    p = outputs["presence"].clamp(1e-6, 1 - 1e-6)
    pres = F.binary_cross_entropy(p, targets["presence"])
    terms = {"bce": bce, "iou_loss": iou, "presence": pres}
    if "pixel_logits" in outputs and "concepts" in targets:
        terms.update(_concept_terms(outputs, targets))
    total = bce + iou + 0.2 * pres + sum(v for k, v in terms.items() if k in ("pixel_ce", "role_bce", "query_ce"))
    return {"loss": total, **terms}


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
    aux_outputs=("pixel_logits", "role_logits", "query_logits"),
    # F_g multiplies posteriors in [0, 1]: quantised per tensor it flipped whole masks; the grey
    # views and enc0 carry the DP cue (left/right differences) that int8 blurs (ExecuTorch
    # realistic parity 1.9 dB -> 30.4 (composer) -> 35.9 (all three); docs/BENCHMARKS.md, prompted focus)
    int8_float_modules=("grey", "enc0", "composer", "up"),
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
