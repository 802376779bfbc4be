"""``make demo``: the main job end to end on bundled defaults, on the CPU in a few minutes.

Synthesise three small data sets (Canon-like DP in DPDD's format, Pixel DP, W/UW pairs) with
contact sheets, export the starter checkpoints of the DP models to ONNX with a parity check on
onnxruntime, and run each artifact on the synthetic Pixel capture (outputs + comparison image).
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable

from models.registry import get, names

# (camera, format, samples, size): the demo's data sets
DATA_SETS = (
    ("rdpd_set3", "dpdd", 6, (256, 256)),
    ("pixel4_dp", "pixel", 3, (192, 256)),
    ("phone_w_uw", "npz", 3, (192, 256)),
)
CAPTURE = "synth_pixel4_dp_pixel"  # the Pixel DP capture the models run on
EXPORT_SIZE = (128, 128)


def run_demo(out: Path, device: str = "auto", progress: Callable[[str], tuple] | None = None,
             status: Callable[[str], contextlib.AbstractContextManager] | None = None) -> dict:
    """Returns {"data": rows of the data sets, "chain": rows of checkpoint -> artifact -> run}.
    ``progress(description)`` gives (context manager, update(done, total)); ``status(text)`` a
    context manager shown during exports."""
    from export.pipeline import export_one
    from export.request import ExportRequest
    from runtime_py import run_capture
    from runtime_py.captures import open_capture
    from runtime_py.runners import load
    from synth import dataset

    progress = progress or (lambda _: (contextlib.nullcontext(), None))
    status = status or (lambda _: contextlib.nullcontext())
    out = Path(out)
    data = []
    for camera, fmt, n, size in DATA_SETS:
        target = out / f"synth_{camera}_{fmt}"
        cfg = dataset.SynthConfig(camera=camera, scenes=n, size=size, out=target, format=fmt, device=device, force=True)
        bar, update = progress(f"synth {camera}")
        kept: list = []
        with bar:
            record = dataset.generate(cfg, progress=update, keep=kept)
        sheet = dataset.write_preview(target, kept, f"{camera} ({fmt})")
        data.append({"camera": camera, "format": fmt, "samples": n, "size": f"{size[0]}x{size[1]}",
                     "samples_per_s": record["samples_per_second"], "sheet": str(sheet)})
    capture = open_capture(out / CAPTURE)
    chain = []
    for model in [n for n in names() if get(n).data.capture == "dual_pixel"]:  # the models a DP capture feeds
        req = ExportRequest(model=model, target="onnx", precision="fp32", height=EXPORT_SIZE[0], width=EXPORT_SIZE[1],
                            variant="mobile", out=out / "artifacts", force=True, parity_count=1)
        with status(f"exporting {model}-mobile to ONNX and checking parity"):
            row = export_one(req)
        runner = load(row["path"], threads=2)
        inputs, record = run_capture.model_inputs(model, capture)
        outputs = run_capture.run(runner, model, inputs)
        dest = run_capture.write_outputs(out / f"run_{model}", model, inputs, outputs, record, force=True)
        chain.append({"model": f"{model}-mobile", "artifact": row["path"], "runtime": runner.runtime,
                      "parity": row.get("verdict"), "outputs": str(dest / "comparison.png")})
    return {"data": data, "chain": chain}
