"""One runner interface for every backend (ARCHITECTURE.md "Runner" contract).

``load(artifact_dir) -> Runner`` reads the artifact's ``manifest.json`` and opens the model on its
real runtime, the one its target object names (``export.targets``: onnxruntime, the ExecuTorch
runtime, the LiteRT interpreter, or Core ML, macOS only; elsewhere a clear error).
``TorchRunner.from_checkpoint(path)`` runs a PyTorch checkpoint behind the same interface.
``runner(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]`` with the manifest's names;
inputs are checked against the manifest (names, shapes, finite values).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from core.jsonfile import read_json
from core.errors import UserError
from export import targets

Backend = Callable[[dict], dict]  # named inputs -> named outputs (a target's open_runtime returns one)
TORCH_RUNTIME = "PyTorch eager"


class RunnerError(UserError):
    """An artifact that cannot be opened, or inputs that do not match its manifest."""


# --- the checked runner ---------------------------------------------------------------------------

class ModelRunner:
    """A backend plus its I/O contract. ``shapes`` None means any spatial size (torch)."""

    def __init__(self, backend: Backend, input_names: list[str], output_names: list[str],
                 shapes: dict[str, tuple] | None, runtime: str, source: str, manifest: dict | None = None):
        self._backend, self.input_names, self.output_names = backend, list(input_names), list(output_names)
        self.shapes, self.runtime, self.source, self.manifest = shapes, runtime, source, manifest or {}

    @property
    def size(self) -> tuple[int, int] | None:
        """The fixed (H, W) of an exported model, None for a PyTorch runner."""
        return tuple(self.manifest["size"]) if self.manifest.get("size") else None

    def check(self, inputs: dict) -> dict:
        missing = [n for n in self.input_names if n not in inputs]
        unknown = [n for n in inputs if n not in self.input_names]
        if missing or unknown:
            raise RunnerError(f"{self.source}: inputs {sorted(inputs)} do not match the model's "
                              f"{self.input_names} (missing {missing}, unknown {unknown})")
        out = {}
        for n in self.input_names:
            a = np.asarray(inputs[n], np.float32)
            if self.shapes is not None and tuple(a.shape) != tuple(self.shapes[n]):
                raise RunnerError(f"{self.source}: input {n!r} has shape {tuple(a.shape)}, the artifact "
                                  f"expects {tuple(self.shapes[n])} (exported models have static shapes: tile)")
            if not np.all(np.isfinite(a)):
                raise RunnerError(f"{self.source}: input {n!r} holds NaN or infinite values")
            out[n] = a
        return out

    def __call__(self, inputs: dict) -> dict:
        outs = self._backend(self.check(inputs))
        return {n: np.asarray(outs[n], np.float32) for n in self.output_names if n in outs}


def load(artifact_dir: str | Path, threads: int = 1) -> ModelRunner:
    """Open an artifact folder written by ``cli.py export`` on its real runtime."""
    d = Path(artifact_dir)
    mpath = d / "manifest.json"
    manifest = read_json(mpath, RunnerError, "missing (not an artifact folder written by `cli.py export`)")
    try:
        target, model_file = manifest["target"], d / manifest["model_file"]
        ins = [(i["name"], tuple(i["shape"])) for i in manifest["inputs"]]
        outs = [o["name"] for o in manifest["outputs"]]
    except (KeyError, TypeError) as exc:
        raise RunnerError(f"{mpath}: manifest lacks {exc}") from None
    if Path(manifest["model_file"]).is_absolute() or ".." in Path(manifest["model_file"]).parts:
        raise RunnerError(f"{mpath}: model_file {manifest['model_file']!r} escapes the artifact folder")
    if not model_file.exists():
        raise RunnerError(f"{model_file}: the manifest's model file is missing")
    if target not in targets.names():
        raise RunnerError(f"unknown runtime target {target!r}; known: {', '.join(targets.names())}")
    t = targets.get(target)
    try:
        backend = t.open_runtime(model_file, [n for n, _ in ins], list(outs), threads)
    except RuntimeError as exc:  # e.g. Core ML off macOS
        raise RunnerError(f"{d}: cannot run {target} here: {exc}") from None
    return ModelRunner(backend, [n for n, _ in ins], outs, dict(ins), t.runtime_name, str(d), manifest)


class TorchRunner(ModelRunner):
    """A PyTorch model (eager, float32, any size that is a multiple of 16) behind the same interface."""

    @classmethod
    def from_checkpoint(cls, path: str | Path, expected_model: str | None = None, device: str = "cpu") -> "TorchRunner":
        from models.checkpoint import load_model

        model, meta = load_model(path, expected_model, device)
        return cls.from_model(model, meta["model"], str(path), meta)

    @classmethod
    def from_model(cls, model, name: str, source: str = "torch", meta: dict | None = None) -> "TorchRunner":
        import torch

        from models.registry import get

        spec = get(name)

        def run(inputs: dict) -> dict:
            with torch.no_grad():
                outs = model(*[torch.from_numpy(inputs[n]) for n in spec.input_names])
            return {n: o.numpy() for n, o in zip(spec.output_names, outs)}

        return cls(run, spec.input_names, spec.output_names, None, TORCH_RUNTIME, source,
                   {"model": name, "variant": (meta or {}).get("variant")})
