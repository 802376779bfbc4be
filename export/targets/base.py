"""What a target is (ARCHITECTURE.md, "Target"), and what the pipeline hands to it.

A :class:`Target` holds every fact about one export target: its name and aliases, the file it
writes, which precisions it can export (and why not the others), how to convert, which runtime
runs its file and how to open it, whether that runtime exists on this host, the packages whose
versions the manifest records, and an optional hook run after verification. The pipeline, the
parity check, the manifest, the runners and the CLI help read these objects; none of them branches
on a target's name.

Cheap to import: no torch, no converter. Heavy imports stay inside the target modules' functions.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch

TOOLCHAIN_VERSION = "0.1.0"

# open_runtime(model_file, input_names, output_names, threads) -> run(named inputs) -> named outputs
RunFn = Callable[[dict], dict]
OpenRuntime = Callable[[Path, list, list, int], RunFn]


@dataclass
class Context:
    """What a target's ``convert`` needs (built by ``export.pipeline.export_one``); the model file
    and any side files go into ``workdir``, the artifact folder being built."""

    spec: Any
    variant: str
    target: str
    precision: str
    height: int
    width: int
    model: "torch.nn.Module"
    args: tuple
    input_names: list[str]
    output_names: list[str]
    in_specs: list
    out_specs: list
    workdir: Path
    calibration: list[dict] = field(default_factory=list)
    checkpoint_sha256: str | None = None
    version: str = TOOLCHAIN_VERSION
    options: dict = field(default_factory=dict)  # target-specific (ExportRequest.extra), e.g. litert_recipe

    @property
    def calibration_args(self) -> list[tuple]:
        import torch

        return [tuple(torch.from_numpy(s[n]) for n in self.input_names) for s in self.calibration]


@dataclass
class ReferenceCase:
    """One verified test case a target may ship with its artifact (ExecuTorch's BundledProgram):
    named inputs, the expected named outputs and where those came from."""

    inputs: "dict[str, np.ndarray]"
    expected: "dict[str, np.ndarray]"
    source: str


@dataclass(eq=False)
class Target:
    """One export target. ``capabilities`` maps every precision to None (supported) or the reason
    it is refused; ``convert(ctx)`` writes ``model_file`` into ``ctx.workdir`` and returns the
    manifest's ``conversion`` entries; ``open_runtime`` raises RuntimeError when the runtime cannot
    run here; ``after_verify(ctx, model_file, case)`` (optional) runs once parity is known and
    returns more ``conversion`` entries; ``check(request)`` (optional) refuses target-specific
    options before any conversion (raises ExportError)."""

    name: str
    aliases: tuple[str, ...]
    model_file: str
    capabilities: Mapping[str, str | None]
    convert: Callable[[Context], dict]
    runtime_name: str
    open_runtime: OpenRuntime
    not_runnable_reason: str | None  # why parity cannot run on this host (None: it can)
    tools: tuple[str, ...]  # packages (distribution names) whose versions the manifest records
    description: str = ""
    after_verify: Callable[[Context, Path, ReferenceCase], dict] | None = None
    check: Callable[[Any], None] | None = None
    # The on-device benchmark tool that runs this target's file on Android (``cli.py bench --device
    # adb:SERIAL``; device_tests.parsers reads its log): "benchmark_model", "executor_runner" or None.
    device_bench_tool: str | None = None
    # Its runtime runs one loaded model on several inputs at once from several threads (onnxruntime:
    # Run is thread-safe): `run` then puts --threads tiles side by side, one intra-op thread each.
    concurrent_runs: bool = False

    def capability(self, precision: str) -> str | None:
        """None when this target can export ``precision``, else the reason it cannot."""
        return self.capabilities.get(precision, f"{precision} is not supported by {self.name}")
