"""Core ML: mlprogram from torch.export (TensorType inputs, named inputs/outputs), FLOAT32/FLOAT16
compute precision, int8 weights (``linear_quantize_weights``), palettised weights (k-means LUT),
model metadata for Xcode, and an inspection (op count, precision, size) that works on Linux.
Predictions (parity) need macOS."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from core.host import IS_MACOS

from .base import Target

# Core ML predictions (parity, activation calibration) need macOS; elsewhere parity is "not run".
NOT_RUNNABLE_HERE = None if IS_MACOS else "not run: Core ML predictions need macOS"


def _compress(mlmodel, precision: str, ctx):
    import coremltools.optimize.coreml as cto

    if precision == "int8-weights":
        cfg = cto.OptimizationConfig(global_config=cto.OpLinearQuantizerConfig(
            mode="linear_symmetric", dtype="int8", granularity="per_channel", weight_threshold=256))
        return cto.linear_quantize_weights(mlmodel, cfg), "linear_quantize_weights int8 per-channel (>= 256 elements)"
    if precision.startswith("palette"):
        bits = int(precision[len("palette"):])
        cfg = cto.OptimizationConfig(global_config=cto.OpPalettizerConfig(
            mode="kmeans", nbits=bits, granularity="per_tensor", weight_threshold=256))
        return cto.palettize_weights(mlmodel, cfg), f"palettize_weights k-means {bits}-bit LUT (>= 256 elements)"
    if precision == "int8":  # macOS only (refused up front elsewhere): calibrate activations by predict
        from coremltools.optimize.coreml.experimental import (OpActivationLinearQuantizerConfig,
                                                              linear_quantize_activations)

        act_cfg = cto.OptimizationConfig(global_config=OpActivationLinearQuantizerConfig(mode="linear_symmetric"))
        samples = [{k: np.asarray(s[k], np.float32) for k in ctx.input_names} for s in ctx.calibration]
        mlmodel = linear_quantize_activations(mlmodel, act_cfg, samples)
        mlmodel, _ = _compress(mlmodel, "int8-weights", ctx)
        return mlmodel, "linear_quantize_activations (macOS calibration) + int8 weights"
    return mlmodel, None


def inspect(mlmodel) -> dict:
    spec = mlmodel.get_spec()
    ops: dict[str, int] = {}
    for fn in spec.mlProgram.functions.values():
        for block in fn.block_specializations.values():
            for op in block.operations:
                ops[op.type] = ops.get(op.type, 0) + 1
    compressed = {k: v for k, v in ops.items() if k.startswith("constexpr")}
    return {"spec_version": int(spec.specificationVersion), "op_count": sum(ops.values()),
            "ops": dict(sorted(ops.items())), "compressed_weight_ops": compressed,
            "inputs": [i.name for i in spec.description.input], "outputs": [o.name for o in spec.description.output]}


def convert(ctx) -> dict:
    import coremltools as ct
    import torch

    ep = torch.export.export(ctx.model, ctx.args).run_decompositions({})
    fp16 = ctx.precision != "fp32"
    mlmodel = ct.convert(
        ep,
        inputs=[ct.TensorType(name=n, shape=tuple(a.shape)) for n, a in zip(ctx.input_names, ctx.args)],
        outputs=[ct.TensorType(name=n) for n in ctx.output_names],
        convert_to="mlprogram",
        compute_precision=ct.precision.FLOAT16 if fp16 else ct.precision.FLOAT32,
        minimum_deployment_target=ct.target.iOS16,
    )
    mlmodel, how = _compress(mlmodel, ctx.precision, ctx)
    spec = ctx.spec
    mlmodel.author = "defocus-toolchain export/"
    mlmodel.version = ctx.version
    mlmodel.short_description = f"{spec.name} ({ctx.variant}) {ctx.precision} {ctx.height}x{ctx.width}: {spec.description}"
    mlmodel.license = "see repository"
    for t in ctx.in_specs:
        mlmodel.input_description[t.name] = f"{t.description}; NCHW float32, range {list(t.value_range)}"
    for t in ctx.out_specs:
        mlmodel.output_description[t.name] = f"{t.description}; NCHW float32"
    mlmodel.user_defined_metadata.update({"model": spec.name, "variant": ctx.variant, "precision": ctx.precision,
                                          "size": f"{ctx.height}x{ctx.width}",
                                          "checkpoint_sha256": str(ctx.checkpoint_sha256 or "none (random init)")})
    mlmodel.save(str(ctx.workdir / "model.mlpackage"))
    notes = ["ct.convert(torch.export ... run_decompositions({}), mlprogram, iOS16)",
             f"compute precision {'FLOAT16' if fp16 else 'FLOAT32'}"]
    if how:
        notes.append(how)
    if not IS_MACOS:
        notes.append("converted and inspected on Linux; predictions need macOS")
    return {"backend": "Core ML (mlprogram)", "inspection": inspect(mlmodel), "notes": notes}


def open_runtime(path: Path, input_names: list[str], output_names: list[str], threads: int = 1):
    if not IS_MACOS:
        raise RuntimeError("Core ML predictions need macOS")
    import coremltools as ct

    m = ct.models.MLModel(str(path), compute_units=ct.ComputeUnit.CPU_ONLY)

    def run(inputs: dict) -> dict:
        res = m.predict({k: np.ascontiguousarray(inputs[k], np.float32) for k in input_names})
        return {n: np.asarray(res[n], np.float32) for n in output_names}
    return run


TARGET = Target(
    name="coreml",
    aliases=("mlpackage",),
    model_file="model.mlpackage",
    description="Core ML (.mlpackage)",
    capabilities={
        "fp32": None, "fp16": None, "int8-weights": None,
        "int8": (None if IS_MACOS else
                 "Core ML activation calibration (linear_quantize_activations) calls predict, which "
                 "needs macOS; on Linux ship int8-weights (or palette*), or use executorch/tflite/onnx int8"),
        "int8-dynamic": "Core ML has no dynamic activation quantisation; use int8-weights",
        "palette4": None, "palette6": None, "palette8": None,
    },
    convert=convert,
    runtime_name="Core ML (macOS, CPU_ONLY)",
    open_runtime=open_runtime,
    not_runnable_reason=NOT_RUNNABLE_HERE,
    tools=("coremltools",),
)
