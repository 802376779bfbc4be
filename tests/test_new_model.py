"""A new model is one file in models/ plus one registry line: a toy DP model registered here runs
through the data engine, training, evaluation, export (onnxruntime parity) and a capture
without any other code knowing its name."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from models import registry
from models.spec import IMG, DataSpec, EvalTask, ModelSpec, TensorSpec, chw


class _Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(6, 3, 3, padding=1)

    def forward(self, left, right):
        return (torch.clamp(0.5 * (left + right) + 0.1 * self.conv(torch.cat([left, right], 1)), 0, 1),)


TOY = ModelSpec(
    name="toy", description="a toy DP deblurrer", builder=lambda variant: _Toy(),
    inputs=[TensorSpec("left", 3, IMG, "left view"), TensorSpec("right", 3, IMG, "right view")],
    outputs=[TensorSpec("sharp", 3, IMG, "deblurred")], main_output="sharp",
    example_fn=lambda shapes, g: {"left": torch.rand(shapes["left"], generator=g),
                                  "right": torch.rand(shapes["right"], generator=g)},
    data=DataSpec(renderer="dp_refocus", capture="dual_pixel", fields=("left", "right")),
    inputs_from_fields=lambda f: {"left": chw(f["left"]), "right": chw(f["right"])},
    targets_from_fields=lambda f: {"sharp": chw(f["sharp"]), "combined": chw(f["combined"])},
    before_image=lambda ins: 0.5 * (ins["left"] + ins["right"]),
    loss=lambda out, tg: {"loss": F.mse_loss(out["sharp"], tg["sharp"])},
    eval_tasks=(EvalTask("deblur", "sharp", "sharp", before="combined", before_label="input (combined view)"),),
)


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setitem(registry._REGISTRY, "toy", TOY)  # the one registry line
    return TOY


def test_a_registered_model_trains_evaluates_exports_and_runs(toy, tmp_path):
    from export.pipeline import export_one
    from export.request import ExportRequest
    from runtime_py import run_capture
    from runtime_py.captures import open_capture
    from runtime_py.runners import load
    from synth import dataset
    from train import loop
    from train.evaluate import evaluate, test_split

    cfg = loop.load_config("toy", "tiny", {"steps": 2, "batch_size": 1, "pool_size": 2, "pool_image": 32, "patch": 32,
                                           "out": str(tmp_path / "runs"), "device": "cpu", "checkpoint_every": 2})
    summary = loop.train(cfg, log=lambda s: None)
    assert summary["steps"] == 2 and np.isfinite(summary["final_loss"])

    scores = evaluate("toy", toy.build("tiny"), test_split("toy", 2, 32), wiener=False)
    assert set(scores) == {"deblur"} and set(scores["deblur"]) == {"input (combined view)", "model"}

    row = export_one(ExportRequest(model="toy", target="onnx", precision="fp32", height=32, width=32,
                                   variant="tiny", out=tmp_path / "art", parity_count=1))
    assert row["verdict"] == "pass"

    dataset.generate(dataset.SynthConfig(camera="pixel4_dp", scenes=1, size=(48, 64), out=tmp_path / "cap",
                                         format="pixel", device="cpu"))
    runner = load(row["path"])
    inputs, _ = run_capture.model_inputs("toy", open_capture(tmp_path / "cap"))
    outputs = run_capture.run(runner, "toy", inputs)  # tiled: the artifact is 32x32
    assert outputs["sharp"].shape[-2:] == inputs["left"].shape[-2:]
    out = run_capture.write_outputs(tmp_path / "run", "toy", inputs, outputs, {})
    assert {p.name for p in out.iterdir()} == {"sharp.png", "comparison.png", "run.json"}
