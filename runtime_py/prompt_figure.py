"""The pictures of a prompted run (issue 16): ``mask.png`` (8-bit, 255 = the prompted region) and
``prompt.png``, the prompt drawn on the input, the mask over it and the refocused result side by
side (matplotlib, through ``synth.preview``'s helpers)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from core.atomic import write_image


def prompt_extras(folder: Path, spec, inputs: dict, outputs: dict, chosen) -> None:
    """Write mask.png and prompt.png into ``folder`` (the run's temporary output folder)."""
    write_image(Path(folder) / "mask.png", np.round(chosen.mask * 255).astype(np.uint8), "PNG")
    before = spec.before_image({k: v[0] for k, v in inputs.items()}).transpose(1, 2, 0)
    name = spec.refocus_output or spec.main_output
    result = outputs[name][0].transpose(1, 2, 0)
    prompt_figure(Path(folder) / "prompt.png", before, chosen.mask, result, chosen.kind, chosen.record,
                  chosen.confidence, result_title=name)


def prompt_figure(path: Path, image: np.ndarray, mask: np.ndarray, result: np.ndarray, kind: str, record: dict,
                  confidence: float, result_title: str = "refocused") -> Path:
    """Three panels: input + prompt, mask over the input, result (images linear RGB in [0, 1])."""
    from synth.preview import plt, save_figure, show_image

    fig, ax = plt.subplots(1, 3, figsize=(11, 3.9))
    label = {"text": f'"{record.get("prompt", "")}"', "point": f"point {record.get('point')}",
             "box": f"box {record.get('box')}"}.get(kind, kind)
    show_image(ax[0], image, f"input, prompt: {label}")
    if kind == "point":
        ax[0].plot(*record["point"], marker="+", color="yellow", markersize=14, mew=2)
    if kind == "box":
        x0, y0, x1, y1 = record["box"]
        ax[0].add_patch(plt.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, color="yellow", lw=1.5))
    shown = np.clip(image, 0, 1) * 0.45
    shown[mask > 0.5] = np.clip(image[mask > 0.5], 0, 1)
    show_image(ax[1], shown, f"mask ({int((mask > 0.5).sum())} px, confidence {confidence:.2f})")
    show_image(ax[2], result, result_title)
    return save_figure(fig, path)
