"""Each target on its real runtime (tiny variants, 32x32): fp32 parity, one int8 path per target,
RDPD's explicit state, Core ML conversion + inspection with parity recorded as not run on Linux.
Conversions take 10-60 s each on this machine: marked slow (``make test-all`` runs them)."""
from __future__ import annotations

import json
import platform

import pytest
import torch

from export import pipeline
from export.common import ExportRequest


def _export(tmp_path, model="uid", target="onnx", precision="fp32", size=32, **kw):
    req = ExportRequest(model=model, variant="tiny", target=target, precision=precision, height=size, width=size,
                        out=tmp_path, calibration_count=2, parity_count=1, task_count=2, **kw)
    row = pipeline.export_one(req)
    d = req.artifact_dir()
    return row, json.loads((d / "manifest.json").read_text()), json.loads((d / "parity.json").read_text()), d


@pytest.mark.slow
@pytest.mark.parametrize("target", ["executorch", "tflite"])
def test_fp32_parity_on_runtime(tmp_path, target):
    row, man, par, d = _export(tmp_path, target=target)
    assert par["ran"] and row["verdict"] == "pass", row
    assert min(e["psnr"] for s in par["sets"].values() for e in s.values()) >= 60
    if target == "executorch":
        deleg = man["conversion"]["delegation"]
        assert deleg["delegated_nodes"] > 0 and "fallback_ops" in deleg
        assert (d / "model.bpte").stat().st_size > 0 and man["conversion"]["bundled_program"]["test_cases"] == 1


@pytest.mark.slow
@pytest.mark.parametrize("target", ["onnx", "executorch", "tflite"])
def test_int8_static_with_task_metric(tmp_path, target):
    row, man, par, _ = _export(tmp_path, target=target, precision="int8")
    assert man["calibration"]["source"] == "synthetic" and man["calibration"]["count"] == 2
    assert par["ran"] and par["task"]["samples"] == 2 and "delta_db" in par["task"]
    assert par["gated_sets"] == ["realistic"]


@pytest.mark.slow
def test_tflite_weight_only_int8(tmp_path):
    row, man, par, _ = _export(tmp_path, target="tflite", precision="int8-weights")
    assert row["verdict"] == "pass", row


@pytest.mark.slow
def test_rdpd_state_inputs_and_outputs(tmp_path):
    row, man, par, _ = _export(tmp_path, model="rdpd", target="executorch", outputs="main")
    assert [i["name"] for i in man["inputs"]] == ["x", "h", "c"]
    assert [o["name"] for o in man["outputs"]] == ["y", "h_next", "c_next"]  # state survives --outputs main
    from models.registry import get

    expected = list(get("rdpd").output_shapes("tiny", 32, 32)["h_next"])  # hidden channels at 1/16 scale
    assert man["outputs"][1]["shape"] == expected and man["inputs"][1]["shape"] == expected
    assert row["verdict"] == "pass", row


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "int8-weights"])
def test_coreml_converts_and_inspects(tmp_path, precision):
    row, man, par, d = _export(tmp_path, target="coreml", precision=precision)
    insp = man["conversion"]["inspection"]
    assert insp["op_count"] > 0 and insp["inputs"] == ["left", "right", "focus_mask"]
    assert insp["outputs"] == ["all_in_focus", "refocused", "defocus"]
    assert (d / "model.mlpackage").is_dir()
    if precision == "int8-weights":
        assert insp["compressed_weight_ops"]
    if platform.system() != "Darwin":
        assert par["ran"] is False and par["verdict"] == "not run"
        assert par["reason"] == "not run: Core ML predictions need macOS"
