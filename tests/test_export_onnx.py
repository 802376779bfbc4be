"""ONNX artifact hygiene: int8 quantises only the convolutions, shipped files carry no exporter
debug metadata (stack traces were a third of DC2's file)."""
from __future__ import annotations

import onnx

from export import pipeline
from export.common import ExportRequest
from export.onnx_target import QUANTISED_OPS


def _onnx(tmp_path, precision):
    req = ExportRequest(model="uid", variant="tiny", target="onnx", precision=precision, height=32, width=32,
                        out=tmp_path / precision, calibration_count=2, parity_count=1, task_count=1)
    row = pipeline.export_one(req)
    return row, onnx.load(str(req.artifact_dir() / "model.onnx"))


def test_onnx_int8_quantises_only_convolutions_and_ships_without_debug_metadata(tmp_path):
    row, m = _onnx(tmp_path, "int8")
    assert row["verdict"] == "pass", row
    producers = {o: n for n in m.graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in m.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    conv_like = set(QUANTISED_OPS)
    quantize = [n for n in m.graph.node if n.op_type == "QuantizeLinear"]
    assert quantize
    for q in quantize:  # each activation is quantised only because a conv produces or reads it
        src = producers.get(q.input[0])
        readers = [c for dq in consumers.get(q.output[0], []) for c in consumers.get(dq.output[0], [])]
        assert (src is not None and src.op_type in conv_like) or any(c.op_type in conv_like for c in readers), \
            (q.name, src.op_type if src is not None else "graph input", [c.op_type for c in readers])
    assert not any(len(n.metadata_props) for n in m.graph.node)
    _, f = _onnx(tmp_path, "fp32")
    assert not any(len(n.metadata_props) for n in f.graph.node) and len(f.graph.value_info) == 0
