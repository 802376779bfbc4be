"""The demo's model runs on its sample captures, through exported artifacts (``cli.py run``'s code):
the DP restoration model on the Pixel burst (its recurrent state carried frame to frame), the
dual-camera model on the UW+W bundle (refocus, and all-in-focus for the intermediate outputs of
seed 001 section C), the prompted refocusing model on the DPDD-layout scene of named objects with a
text prompt (``cli.py run --prompt``: the prompt mask head finds the region, the model refocuses on it).

Which model takes which capture comes from the specs (``data.capture``, ``is_sequence``,
``state_map``), not from names. The refocusing prompt is one place: :func:`refocus_prompt`.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from models.registry import get
from runtime_py import run_capture
from runtime_py.captures import open_capture
from runtime_py.runners import load

SEQUENCE_MODEL, DUAL_CAMERA, PROMPTED = "sequence", "dual_camera", "prompted"


def role(model: str) -> str | None:
    """What the demo does with a model: a sequence model runs on the burst, a dual-camera model on
    the bundle, a DP model that takes a focus mask on the object scene with a text prompt. None for
    the others (the prompt mask head: it runs inside the prompted run, from its checkpoint)."""
    spec = get(model)
    if spec.data.capture == "dual_camera":
        return DUAL_CAMERA
    if spec.is_sequence:
        return SEQUENCE_MODEL
    return PROMPTED if "focus_mask" in spec.data.fields else None


def demo_models() -> list[str]:
    """The registered models the demo exports and runs (those with a :func:`role`)."""
    from models.registry import names

    return [m for m in names() if role(m) is not None]


def refocus_prompt(objects: list[dict], which: int = 0) -> dict:
    """The text prompt of the prompted refocusing run, naming ``objects[which]`` of the demo's
    object scene by colour and shape: ``run_on_capture`` keywords, the CLI flag, the object."""
    o = objects[which]
    text = f"the {o['colour']} {o['shape']}"
    return {"kwargs": {"prompts": {"prompt": text}}, "flag": f'--prompt "{text}"', "text": text, "object": o["index"]}


def _mask_and_truth(run_folder: Path, labels: Path, index: int) -> tuple[np.ndarray, np.ndarray]:
    """A prompted run's ``mask.png`` and object ``index``'s true region (``objects_labels.png``)."""
    mask = cv2.imread(str(Path(run_folder) / "mask.png"), cv2.IMREAD_GRAYSCALE) > 127
    return mask, cv2.imread(str(labels), cv2.IMREAD_GRAYSCALE) == index


def mask_iou(run_folder: Path, labels: Path, index: int) -> float:
    """IoU of a prompted run's mask with object ``index``'s true region."""
    mask, truth = _mask_and_truth(run_folder, labels, index)
    return float((mask & truth).sum() / max((mask | truth).sum(), 1))


def mask_precision(run_folder: Path, labels: Path, index: int) -> float:
    """Share of a prompted run's mask that lies on object ``index``'s true region."""
    mask, truth = _mask_and_truth(run_folder, labels, index)
    return float((mask & truth).sum() / max(mask.sum(), 1))


def nearest_point(disp: np.ndarray) -> tuple[int, int]:
    """(x, y) of the nearest subject: the maximum of the smoothed disparity."""
    sm = cv2.blur(disp.astype(np.float32), (15, 15))
    y, x = np.unravel_index(int(np.argmax(sm)), sm.shape)
    return int(x), int(y)


def run_burst(model: str, artifact: Path, frames: list[str], out: Path, threads: int = 2) -> dict:
    """Every burst frame through the artifact, the state outputs fed back as the next frame's state
    inputs (``spec.state_map``); the last frame's outputs are written like ``cli.py run``'s."""
    spec = get(model)
    runner = load(artifact, threads=threads)
    state, record, inputs, outputs, notes = None, {}, {}, {}, []
    for i, path in enumerate(frames):
        inputs, record = run_capture.model_inputs(model, open_capture(path))
        h, w = next(iter(inputs.values())).shape[-2:]
        if runner.size is not None and tuple(runner.size) != (h, w):  # tiled: state restarts per frame
            outputs = run_capture.run(runner, model, inputs, processing=record["processing"])
            notes.append(f"frame {i}: tiled, state from zero")
            continue
        if state is None:
            state = {k: v.numpy() for k, v in spec.zero_state(runner.manifest.get("variant") or "mobile", h, w).items()}
        outputs = runner({**inputs, **state})
        state = {inp: outputs[o] for inp, o in spec.state_map.items()}
    record["burst"] = {"frames": [str(p) for p in frames], "state": "carried frame to frame" if not notes else notes}
    shown = {k: v for k, v in outputs.items() if k not in spec.state_map.values()}
    run_capture.write_outputs(out, model, inputs, shown, record, force=True)
    return {"path": str(out), "frames": len(frames), "runtime": runner.runtime, "outputs": sorted(shown)}


def run_one(model: str, artifact: Path, capture: str, out: Path, **kw) -> dict:
    """``cli.py run`` on one capture."""
    res = run_capture.run_on_capture(model, Path(capture), out, artifact=artifact, force=True, **kw)
    return {"path": str(res["path"]), "runtime": res["runtime"], "outputs": list(res["outputs"])}


def section_c(folder: Path, dest: Path) -> Path:
    """Seed 001 section C: W, aligned UW, refined W, refined UW, W mask and UW mask side by side
    (from a dual-camera run's output PNGs; the W mask is 1 - the UW mask)."""
    def rd(name):
        a = cv2.imread(str(folder / f"{name}.png"), cv2.IMREAD_UNCHANGED).astype(np.float32) / 65535
        return np.repeat(a[..., None], 3, 2) if a.ndim == 2 else a
    mask = rd("mask_uw")
    tiles = [rd("refined_w"), rd("refined_uw"), 1 - mask, mask, rd("image")]
    gap = np.ones((tiles[0].shape[0], 6, 3), np.float32)
    row = np.concatenate([x for t in tiles for x in (t, gap)][:-1], axis=1)
    cv2.imwrite(str(dest), np.round(np.clip(row, 0, 1) * 255).astype(np.uint8))
    return dest
