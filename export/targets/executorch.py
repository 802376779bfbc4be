"""ExecuTorch with the XNNPACK delegate: ``.pte`` (fp32, fp16, PT2E static int8), a delegation
summary, and a BundledProgram ``.bpte`` carrying a verified test case (inputs + expected outputs).

``lower`` and ``bundle`` are shared with the Core ML delegate target (``executorch_coreml``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from ..fold import fold_constants
from .base import Context, ReferenceCase, Target


def _delegation(edge) -> dict:
    from executorch.devtools.backend_debug import get_delegation_info

    info = get_delegation_info(edge.exported_program().graph_module)
    fallback = {k: v.non_delegated for k, v in info.delegation_by_operator.items() if v.non_delegated}
    delegated = {k: v.delegated for k, v in info.delegation_by_operator.items() if v.delegated}
    return {"delegated_subgraphs": int(info.num_delegated_subgraphs),
            "delegated_nodes": int(info.num_delegated_nodes),
            "non_delegated_nodes": int(info.num_non_delegated_nodes),
            "delegated_ops": dict(sorted(delegated.items())),
            "fallback_ops": dict(sorted(fallback.items()))}


def _xnnpack_partitioner(ctx):
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

    return XnnpackPartitioner(), "XnnpackBackend"


def _loads(path: Path) -> bool:
    """Whether the ExecuTorch runtime accepts the program (XNNPACK compiles delegates at load)."""
    from executorch.runtime import Runtime

    try:
        Runtime.get().load_program(str(path)).load_method("forward")
        return True
    except Exception:
        return False


def lower(ctx: Context, partitioner: Callable, xnnpack: bool) -> dict:
    """torch.export -> constant folding -> ``partitioner(ctx)`` -> ``model.pte`` in ``ctx.workdir``.
    ``xnnpack``: the XNNPACK path, where fp16 wraps the model (fp16 weights and compute, float32
    I/O) and static int8 (PT2E) retries with more convs float when the runtime refuses the program."""
    import torch

    import executorch.kernels.quantized  # noqa: F401  (out variants of quantize/dequantize)
    from executorch.exir import to_edge_transform_and_lower

    from ..quantize import Fp16, pt2e_xnnpack_int8

    notes = []
    path = ctx.workdir / "model.pte"
    levels = (0, 1, 2) if ctx.precision == "int8" else (None,)
    for level in levels:
        model, args = ctx.model, ctx.args
        if ctx.precision == "int8":
            model = pt2e_xnnpack_int8(model, args, ctx.calibration_args, level, ctx.spec.int8_float_modules)
        elif ctx.precision == "fp16" and xnnpack:
            model = Fp16(model)
        ep = fold_constants(torch.export.export(model, args))
        part, backend = partitioner(ctx)
        edge = to_edge_transform_and_lower(ep, partitioner=[part])
        delegation = _delegation(edge)
        program = edge.to_executorch()
        path.write_bytes(program.buffer)
        if level is None or not xnnpack or _loads(path):
            break
        notes.append(f"XNNPACK refused the int8 program at filter level {level}; keeping more convs float")
    else:
        raise RuntimeError("XNNPACK could not load the int8 program at any filter level")
    if ctx.precision == "int8":
        notes.append(f"PT2E static int8 (XNNPACKQuantizer, symmetric per-channel weights), filter level {level}: "
                     "ConvLSTM gate math and computed-weight convs kept float"
                     + (", plus convs with < 8 channels" if level >= 1 else "")
                     + (", grouped and transposed convs" if level >= 2 else "")
                     + (f"; float modules: {', '.join(ctx.spec.int8_float_modules)}" if ctx.spec.int8_float_modules else ""))
    elif ctx.precision == "fp16" and xnnpack:
        notes.append("fp16 weights and compute, float32 graph I/O (casts at the edges)")
    return {"backend": backend, "delegation": delegation, "notes": notes,
            "extra_files": []}


def convert(ctx: Context) -> dict:
    return lower(ctx, _xnnpack_partitioner, xnnpack=True)


def bundle(ctx: Context, model_file: Path, case: ReferenceCase) -> dict:
    """A BundledProgram ``model.bpte`` beside ``model_file`` with one test case (the verified inputs
    and expected outputs) for on-device checks; returns the manifest's ``bundled_program`` entry."""
    import torch
    from executorch.devtools import BundledProgram
    from executorch.devtools.bundled_program.config import MethodTestCase, MethodTestSuite
    from executorch.devtools.bundled_program.serialize import serialize_from_bundled_program_to_flatbuffer

    def dense(a: np.ndarray) -> torch.Tensor:  # numpy [None] views carry 0 strides ExecuTorch refuses
        t = torch.from_numpy(a)
        return torch.empty(tuple(t.shape), dtype=t.dtype).copy_(t)

    inputs = [dense(case.inputs[n]) for n in ctx.input_names]
    expected = [dense(case.expected[n]) for n in ctx.output_names]
    suite = MethodTestSuite(method_name="forward", test_cases=[MethodTestCase(inputs=inputs, expected_outputs=expected)])
    buf = serialize_from_bundled_program_to_flatbuffer(BundledProgram(None, [suite], pte_file_path=str(model_file)))
    path = Path(model_file).with_name("model.bpte")
    path.write_bytes(buf)
    return {"bundled_program": {"file": path.name, "test_cases": 1, "expected_outputs_from": case.source,
                                "bytes": len(buf)}}


def _set_threads(threads: int) -> None:
    """The runtime's (process-wide) XNNPACK thread pool size; by default it is one per core."""
    try:
        from executorch.extension.pybindings.portable_lib import _unsafe_reset_threadpool
    except ImportError:  # pragma: no cover - a build without the thread-pool bindings
        return
    if threads and threads > 0:
        _unsafe_reset_threadpool(int(threads))


def open_runtime(path: Path, input_names: list[str], output_names: list[str], threads: int = 1):
    import torch
    from executorch.runtime import Runtime

    import executorch.kernels.quantized  # noqa: F401  (out variants of quantize/dequantize ops)

    _set_threads(threads)
    method = Runtime.get().load_program(str(path)).load_method("forward")

    def run(inputs: dict) -> dict:
        outs = method.execute([torch.from_numpy(np.array(inputs[k], np.float32, copy=True)) for k in input_names])
        return {n: o.detach().numpy().astype(np.float32, copy=False) for n, o in zip(output_names, outs)}
    return run


_PALETTE = "palettisation is a Core ML feature (use target coreml)"

TARGET = Target(
    name="executorch",
    aliases=("et", "pte", "executorch-xnnpack"),
    model_file="model.pte",
    description="ExecuTorch, XNNPACK delegate (.pte + .bpte)",
    capabilities={
        "fp32": None, "fp16": None, "int8": None,
        "int8-weights": "XNNPACK has no weight-only int8 (use int8 = PT2E static, or target coreml/tflite)",
        "int8-dynamic": "XNNPACK dynamic int8 covers linear layers only; these models are convolutional "
                        "(use int8 = PT2E static)",
        "palette4": _PALETTE, "palette6": _PALETTE, "palette8": _PALETTE,
    },
    convert=convert,
    runtime_name="ExecuTorch runtime (XNNPACK)",
    open_runtime=open_runtime,
    not_runnable_reason=None,
    tools=("executorch", "torchao"),
    after_verify=bundle,
    device_bench_tool="executor_runner",
)
