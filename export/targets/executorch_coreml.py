"""ExecuTorch with the Core ML delegate (iOS): ``.pte`` (fp32, fp16) through the same lowering and
BundledProgram as the XNNPACK target; its runtime exists only on Apple platforms."""
from __future__ import annotations

from pathlib import Path

from core.host import IS_MACOS

from . import executorch
from .coreml import NOT_RUNNABLE_HERE
from .base import Context, Target


def _coreml_partitioner(ctx: Context):
    import coremltools as ct
    from executorch.backends.apple.coreml.compiler import CoreMLBackend
    from executorch.backends.apple.coreml.partition import CoreMLPartitioner

    prec = ct.precision.FLOAT16 if ctx.precision == "fp16" else ct.precision.FLOAT32
    specs = CoreMLBackend.generate_compile_specs(compute_precision=prec,
                                                 minimum_deployment_target=ct.target.iOS16)
    return CoreMLPartitioner(compile_specs=specs), "CoreMLBackend"


def convert(ctx: Context) -> dict:
    return executorch.lower(ctx, _coreml_partitioner, xnnpack=False)


def open_runtime(path: Path, input_names: list[str], output_names: list[str], threads: int = 1):
    if not IS_MACOS:
        raise RuntimeError("the ExecuTorch Core ML delegate runs on Apple platforms only")
    return executorch.open_runtime(path, input_names, output_names, threads)


_PALETTE = "use target coreml for palettised weights"

TARGET = Target(
    name="executorch-coreml",
    aliases=(),
    model_file="model.pte",
    description="ExecuTorch, Core ML delegate (.pte + .bpte)",
    capabilities={
        "fp32": None, "fp16": None,
        "int8-weights": "not wired up for the ExecuTorch Core ML delegate here; use target coreml "
                        "(int8-weights) or executorch (XNNPACK int8)",
        "int8": "Core ML delegate activation quantisation is not wired up here; use executorch (XNNPACK int8)",
        "int8-dynamic": "not supported by the Core ML delegate",
        "palette4": _PALETTE, "palette6": _PALETTE, "palette8": _PALETTE,
    },
    convert=convert,
    runtime_name="ExecuTorch runtime (Core ML delegate)",
    open_runtime=open_runtime,
    not_runnable_reason=NOT_RUNNABLE_HERE,
    tools=("executorch", "coremltools"),
    after_verify=executorch.bundle,
)
