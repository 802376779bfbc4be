"""ONNX: the dynamo exporter (named inputs/outputs), optional static int8 (QDQ) with onnxruntime's
quantiser calibrated on realistic samples; runs on onnxruntime's CPU provider."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from .base import Target


# Quantised op types: the convolutions, plus the activations and data-movement ops between them
# (onnxruntime fuses DQ -> op -> Q into QLinearLeakyRelu / uint8 MaxPool, Concat, Resize), so a
# conv's uint8 output feeds the next conv without a float round trip. Convolutions alone left a
# QuantizeLinear/DequantizeLinear pair around every activation: rdpd-mobile 256x256, one thread,
# int8 1.26x faster than fp32 with convolutions only, 1.9x with these, parity of y 46.7 ->
# 51.5 dB (docs/BENCHMARKS.md, "int8 that pays"). Element-wise arithmetic (the 49-tap dynamic
# filter, blends, residual adds, gates) stays float: QDQ pairs around it cost more file size and
# accuracy than they save (adding Add/Mul/Sigmoid/Tanh: 1.1x slower on rdpd).
QUANTISED_OPS = ["Conv", "ConvTranspose", "MatMul", "Gemm", "Relu", "LeakyRelu", "MaxPool", "Concat", "Resize"]


# Initializers that keep their PyTorch names after slimming (weights and biases, float or int8), so a
# viewer such as Netron still shows which layer a tensor belongs to.
_NAMED_INITIALIZERS = (".weight", ".bias", "weight_quantized", "bias_quantized")


def slim(path) -> int:
    """Shrink an ONNX file in place without changing what it computes; returns the bytes saved.

    Drops the exporter's per-node debug metadata (stack traces, module names), the cached
    intermediate shapes and the node names, and renames intermediate values and quantisation
    parameters to short ids (``v0``, ``v1``...). Graph inputs, outputs and the weight/bias
    initializers keep their names. On DC2 (3,100 nodes, 844 of them slices of the 49-tap dynamic
    filter) the names alone were 12 % of the int8 file."""
    import onnx

    before = path.stat().st_size
    m = onnx.load(str(path))
    g = m.graph
    for node in g.node:
        del node.metadata_props[:]
        node.doc_string = ""
        node.name = ""
    del g.value_info[:]
    # control flow: sub-graphs may refer to outer names, so keep every name
    keep_all = any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for n in g.node for a in n.attribute)
    keep = {v.name for v in g.input} | {v.name for v in g.output}
    keep |= {t.name for t in g.initializer if t.name.endswith(_NAMED_INITIALIZERS)}
    short: dict[str, str] = {}

    def rename(name: str) -> str:
        if keep_all or not name or name in keep:
            return name
        return short.setdefault(name, f"v{len(short)}")

    for t in g.initializer:
        t.name = rename(t.name)
    for node in g.node:
        node.input[:] = [rename(n) for n in node.input]
        node.output[:] = [rename(n) for n in node.output]
    onnx.checker.check_model(m)
    tmp = path.with_suffix(".tmp.onnx")
    onnx.save(m, str(tmp))
    tmp.replace(path)
    return before - path.stat().st_size


def nodes_in_modules(path, modules: tuple[str, ...]) -> list[str]:
    """Names of the nodes the dynamo exporter traced inside ``modules`` (its
    ``pkg.torch.onnx.name_scopes`` metadata; ``ModelSpec.int8_float_modules``)."""
    import ast

    import onnx

    from ..quantize import path_in_modules

    if not modules:
        return []
    names = []
    for node in onnx.load(str(path), load_external_data=False).graph.node:
        scopes = next((ast.literal_eval(p.value) for p in node.metadata_props
                       if p.key == "pkg.torch.onnx.name_scopes"), [])
        if any(path_in_modules(s, modules) for s in scopes):
            names.append(node.name)
    return names


def grouped_convs(path) -> list[str]:
    """Names of the grouped (depthwise) Conv nodes of an ONNX file. They stay float under int8, as
    on LiteRT: UiD's kernel bank, its inverse and the smooth up-sampling blur are depthwise convs
    whose weights (an inverse kernel's large centre and small ringing tails) do not survive int8."""
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    return [n.name for n in m.graph.node if n.op_type == "Conv"
            and any(a.name == "group" and a.i > 1 for a in n.attribute)]


class _Reader:
    """onnxruntime CalibrationDataReader over a list of input dicts."""

    def __init__(self, samples: list[dict], names: list[str]):
        self._it = iter([{k: np.ascontiguousarray(s[k], np.float32) for k in names} for s in samples])

    def get_next(self):
        return next(self._it, None)

    def rewind(self):  # pragma: no cover - not used by quantize_static's MinMax path
        pass


def convert(ctx) -> dict:
    import onnx
    import torch

    path = ctx.workdir / "model.onnx"
    float_path = ctx.workdir / ("model-float.onnx" if ctx.precision == "int8" else "model.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(ctx.model, ctx.args, str(float_path), dynamo=True, input_names=ctx.input_names,
                          output_names=ctx.output_names, external_data=False, verbose=False)
    notes = ["torch.onnx.export(dynamo=True)"]
    if ctx.precision == "int8":
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
        from onnxruntime.quantization.shape_inference import quant_pre_process

        pre = ctx.workdir / "model-pre.onnx"
        try:
            quant_pre_process(str(float_path), str(pre), skip_symbolic_shape=True)
        except Exception:  # pre-processing is an optimisation; quantise the raw graph if it fails
            pre = float_path
        float_convs = grouped_convs(pre)
        float_nodes = nodes_in_modules(pre, ctx.spec.int8_float_modules)
        quantize_static(str(pre), str(path), _Reader(ctx.calibration, ctx.input_names),
                        quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                        op_types_to_quantize=QUANTISED_OPS, nodes_to_exclude=float_convs + float_nodes)
        for p in {float_path, pre}:
            p.unlink(missing_ok=True)
        notes.append("onnxruntime quantize_static: QDQ, per-channel int8 weights, uint8 activations (MinMax), "
                     f"ops {'/'.join(QUANTISED_OPS)}; {len(float_convs)} grouped (depthwise) convs kept float"
                     + (f"; {len(float_nodes)} nodes of {', '.join(ctx.spec.int8_float_modules)} kept float"
                        if float_nodes else ""))
    saved = slim(path)
    notes.append(f"slimmed: debug metadata, node names and long value names dropped ({saved / 1e6:.2f} MB)")
    m = onnx.load(str(path), load_external_data=False)
    ops: dict[str, int] = {}
    for node in m.graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    return {"backend": "onnxruntime", "opset": [{"domain": o.domain or "ai.onnx", "version": o.version}
                                                for o in m.opset_import],
            "op_count": sum(ops.values()), "ops": dict(sorted(ops.items())), "notes": notes}


def open_runtime(path: Path, input_names: list[str], output_names: list[str], threads: int = 1):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]

    def run(inputs: dict) -> dict:
        return dict(zip(names, sess.run(None, {k: np.ascontiguousarray(inputs[k], np.float32) for k in input_names})))
    run.session = sess  # for callers that check the session's options (threads)
    return run


_PALETTE = "palettisation is a Core ML feature"

TARGET = Target(
    name="onnx",
    aliases=(),
    model_file="model.onnx",
    description="ONNX (.onnx)",
    concurrent_runs=True,
    capabilities={
        "fp32": None, "int8": None,
        "fp16": "onnxruntime's CPU provider lacks fp16 kernels for most ops, so parity cannot run here; "
                "use fp32 (mobile GPUs take fp16 as a runtime option) or int8",
        "int8-weights": "onnxruntime has no weight-only int8 for Conv; use int8 (static QDQ)",
        "int8-dynamic": "onnxruntime dynamic quantisation (ConvInteger) is slow on mobile; use int8 (static QDQ)",
        "palette4": _PALETTE, "palette6": _PALETTE, "palette8": _PALETTE,
    },
    convert=convert,
    runtime_name="onnxruntime (CPUExecutionProvider)",
    open_runtime=open_runtime,
    not_runnable_reason=None,
    tools=("onnx", "onnxruntime", "onnxscript"),
)
