"""ExecuTorch: XNNPACK ``.pte`` (fp32, fp16, PT2E static int8) or the Core ML delegate ``.pte`` (iOS),
plus a delegation summary and a BundledProgram ``.bpte`` carrying test inputs and expected outputs.
"""
from __future__ import annotations

from pathlib import Path

import torch

from .quantize import Fp16, pt2e_xnnpack_int8


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


def _partitioner(ctx):
    if ctx.target == "executorch-coreml":
        import coremltools as ct
        from executorch.backends.apple.coreml.compiler import CoreMLBackend
        from executorch.backends.apple.coreml.partition import CoreMLPartitioner

        prec = ct.precision.FLOAT16 if ctx.precision == "fp16" else ct.precision.FLOAT32
        specs = CoreMLBackend.generate_compile_specs(compute_precision=prec,
                                                     minimum_deployment_target=ct.target.iOS16)
        return CoreMLPartitioner(compile_specs=specs), "CoreMLBackend"
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

    return XnnpackPartitioner(), "XnnpackBackend"


def _fold_constants(ep):
    """Constant-propagate sub-graphs that depend only on parameters and buffers.

    XNNPACK delegates a convolution only when its weight is a constant. UiD computes some weights
    from buffers in ``forward`` (the kernel bank ``repeat``-ed per image channel in
    ``apply_bank``, ``SmoothUp``'s ``expand``-ed binomial blur): constant in eval, but ops in the
    exported graph, so those convs ran on ExecuTorch's portable kernels. Folding them gives the
    same values (computed once, by the same PyTorch ops) and lets XNNPACK take the convs.
    Quantize/dequantize ops are never folded: int8 weights stay int8.
    """
    from executorch.exir.operator.util import _QUANT_PRIMITIVES
    from executorch.exir.passes.constant_prop_pass import constant_prop_pass

    return constant_prop_pass(ep, custom_skip_targets={torch.ops.aten.full.default, *_QUANT_PRIMITIVES})


def _loads(path: Path) -> bool:
    """Whether the ExecuTorch runtime accepts the program (XNNPACK compiles delegates at load)."""
    from executorch.runtime import Runtime

    try:
        Runtime.get().load_program(str(path)).load_method("forward")
        return True
    except Exception:
        return False


def convert(ctx) -> dict:
    import executorch.kernels.quantized  # noqa: F401  (out variants of quantize/dequantize)
    from executorch.exir import to_edge_transform_and_lower

    notes = []
    path = ctx.workdir / "model.pte"
    levels = (0, 1, 2) if ctx.precision == "int8" else (None,)
    for level in levels:
        model, args = ctx.model, ctx.args
        if ctx.precision == "int8":
            model = pt2e_xnnpack_int8(model, args, ctx.calibration_args, level)
        elif ctx.precision == "fp16" and ctx.target == "executorch":
            model = Fp16(model)
        ep = _fold_constants(torch.export.export(model, args))
        partitioner, backend = _partitioner(ctx)
        edge = to_edge_transform_and_lower(ep, partitioner=[partitioner])
        delegation = _delegation(edge)
        program = edge.to_executorch()
        path.write_bytes(program.buffer)
        if level is None or ctx.target != "executorch" or _loads(path):
            break
        notes.append(f"XNNPACK refused the int8 program at filter level {level}; keeping more convs float")
    else:
        raise RuntimeError("XNNPACK could not load the int8 program at any filter level")
    if ctx.precision == "int8":
        notes.append(f"PT2E static int8 (XNNPACKQuantizer, symmetric per-channel weights), filter level {level}: "
                     "ConvLSTM gate math and computed-weight convs kept float"
                     + (", plus convs with < 8 channels" if level >= 1 else "")
                     + (", grouped and transposed convs" if level >= 2 else ""))
    elif ctx.precision == "fp16" and ctx.target == "executorch":
        notes.append("fp16 weights and compute, float32 graph I/O (casts at the edges)")
    ctx.program = program  # for the bundled program written after the runtime check
    return {"backend": backend, "delegation": delegation, "notes": notes,
            "extra_files": []}


def write_bundled(ctx, inputs: list[torch.Tensor], expected: list[torch.Tensor], source: str) -> dict:
    """A BundledProgram ``.bpte`` with one test case (inputs + expected outputs) for on-device checks."""
    from executorch.devtools import BundledProgram
    from executorch.devtools.bundled_program.config import MethodTestCase, MethodTestSuite
    from executorch.devtools.bundled_program.serialize import serialize_from_bundled_program_to_flatbuffer

    def dense(t: torch.Tensor) -> torch.Tensor:  # numpy [None] views carry 0 strides ExecuTorch refuses
        return torch.empty(tuple(t.shape), dtype=t.dtype).copy_(t)

    inputs, expected = [dense(t) for t in inputs], [dense(t) for t in expected]
    suite = MethodTestSuite(method_name="forward",
                            test_cases=[MethodTestCase(inputs=list(inputs), expected_outputs=list(expected))])
    buf = serialize_from_bundled_program_to_flatbuffer(BundledProgram(ctx.program, [suite]))
    path = Path(ctx.workdir) / "model.bpte"
    path.write_bytes(buf)
    return {"file": path.name, "test_cases": 1, "expected_outputs_from": source, "bytes": len(buf)}
