"""ONNX artifact hygiene: int8 quantises only the listed op types (non-grouped convolutions and the
activations / data movement between them), shipped files carry no exporter debug metadata (stack traces
were a third of DC2's file)."""
from __future__ import annotations

import onnx

from export import pipeline
from export.request import ExportRequest
from export.targets.onnx import QUANTISED_OPS


def _onnx(tmp_path, precision):
    req = ExportRequest(model="uid", variant="tiny", target="onnx", precision=precision, height=32, width=32,
                        out=tmp_path / precision, calibration_count=2, parity_count=1, task_count=1)
    row = pipeline.export_one(req)
    return row, onnx.load(str(req.artifact_dir() / "model.onnx"))


def test_onnx_int8_quantises_only_the_listed_ops_and_ships_without_debug_metadata(tmp_path):
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
    # activations between convolutions run on uint8 (no float round trip between two int8 convs)
    lrelu = [n for n in m.graph.node if n.op_type == "LeakyRelu"]
    assert lrelu and all(producers[n.input[0]].op_type == "DequantizeLinear" for n in lrelu)
    for q in quantize:  # each activation is quantised only because a listed op produces or reads it
        src = producers.get(q.input[0])
        readers = [c for dq in consumers.get(q.output[0], []) for c in consumers.get(dq.output[0], [])]
        assert (src is not None and src.op_type in conv_like) or any(c.op_type in conv_like for c in readers), \
            (q.name, src.op_type if src is not None else "graph input", [c.op_type for c in readers])
    grouped = [n for n in m.graph.node if n.op_type == "Conv" and any(a.name == "group" and a.i > 1 for a in n.attribute)]
    assert grouped  # UiD's kernel bank: depthwise convs keep float weights (int8 ruins inverse kernels)
    assert all(n.input[1] not in producers or producers[n.input[1]].op_type != "DequantizeLinear" for n in grouped)
    assert not any(len(n.metadata_props) or n.name for n in m.graph.node)
    _, f = _onnx(tmp_path, "fp32")
    assert not any(len(n.metadata_props) for n in f.graph.node) and len(f.graph.value_info) == 0


def test_slim_keeps_outputs_bit_exact_and_weight_names(tmp_path):
    """slim() renames intermediate values and drops node names: same outputs, smaller file, weights
    still named after their PyTorch parameters, graph I/O names untouched."""
    import numpy as np
    import onnxruntime as ort
    import torch

    from export.targets.onnx import slim

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.LeakyReLU(0.1),
                              torch.nn.Conv2d(8, 3, 3, padding=1)).eval()
    x = torch.rand(1, 3, 16, 16)
    path = tmp_path / "net.onnx"
    torch.onnx.export(net, (x,), str(path), dynamo=True, input_names=["image"], output_names=["out"],
                      external_data=False)
    feed = {"image": x.numpy()}
    before = ort.InferenceSession(str(path)).run(None, feed)[0]
    size = path.stat().st_size
    saved = slim(path)
    assert saved > 0 and path.stat().st_size == size - saved
    after = ort.InferenceSession(str(path)).run(None, feed)[0]
    np.testing.assert_array_equal(before, after)
    m = onnx.load(str(path))
    assert [i.name for i in m.graph.input] == ["image"] and [o.name for o in m.graph.output] == ["out"]
    assert all(n.name == "" for n in m.graph.node)
    assert {"0.weight", "2.weight"} <= {t.name for t in m.graph.initializer}
    internal = {o for n in m.graph.node for o in n.output} - {"out"}
    assert internal and all(len(o) <= 6 for o in internal)
