"""Checkpoints: safetensors weights + a JSON sidecar (ARCHITECTURE.md). Never pickle.

``model.safetensors`` holds the weights; ``model.json`` beside it holds ``format``,
``schema_version``, ``model``, ``variant``, ``dtype``, ``config``, ``training_data``, ``steps``,
``metrics`` and the ``sha256`` of the weights file. Loading checks the sidecar, the hash, the
model name, and refuses unknown or missing keys with a clear error. Writes are atomic.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from core.jsonfile import read_json
from core.atomic import atomic_file, write_json
from core.hashing import sha256_path
from core.errors import UserError

if TYPE_CHECKING:  # PyTorch only where tensors are read or written: checkpoint_meta runs without it
    import torch
    from torch import nn

FORMAT = "defocus-checkpoint"
SCHEMA_VERSION = 1


class CheckpointError(UserError):
    """A checkpoint that is missing, corrupt, of another model, or does not fit the model."""


def sidecar_path(path: str | Path) -> Path:
    return Path(path).with_suffix(".json")


def weights_path(path: str | Path) -> Path:
    p = Path(path)
    return p if p.suffix == ".safetensors" else p.with_suffix(".safetensors")


def save_checkpoint(path: str | Path, model: nn.Module | dict, *, name: str, variant: str,
                    dtype: torch.dtype | None = None, config: dict | None = None,
                    training_data: dict | None = None, steps: int = 0, metrics: dict | None = None,
                    extra: dict | None = None) -> Path:
    """Write weights (cast to ``dtype``, float32 by default; fp16 halves the size) and the
    sidecar, atomically."""
    import torch
    from safetensors.torch import save_file
    from torch import nn

    dtype = dtype or torch.float32
    state = model.state_dict() if isinstance(model, nn.Module) else model
    tensors = {k: (v.detach().to("cpu", dtype) if v.is_floating_point() else v.detach().cpu()).contiguous()
               for k, v in state.items()}
    wpath = weights_path(path)
    with atomic_file(wpath) as tmp:
        save_file(tensors, str(tmp), metadata={"format": FORMAT, "model": name})
    meta = {
        "format": FORMAT, "schema_version": SCHEMA_VERSION, "model": name, "variant": variant,
        "dtype": str(dtype).replace("torch.", ""), "config": config or {}, "training_data": training_data or {},
        "steps": int(steps), "metrics": metrics or {}, "sha256": sha256_path(wpath),
        "weights_file": wpath.name, **(extra or {}),
    }
    write_json(sidecar_path(wpath), meta, allow_nan=True)
    return wpath


def checkpoint_meta(path: str | Path, expected_model: str | None = None) -> dict:
    """The sidecar metadata after every check that does not read the tensors (sidecar format,
    model, the weights' sha256): what a cached export of these weights is keyed on, without
    importing PyTorch."""
    wpath = weights_path(path)
    meta_path = sidecar_path(wpath)
    if not wpath.is_file():
        raise CheckpointError(f"{wpath}: checkpoint weights not found")
    meta = read_json(meta_path, CheckpointError, "checkpoint sidecar (JSON) not found next to the weights",
                     "sidecar is not valid JSON")
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{meta_path}: not a {FORMAT} sidecar (format {meta.get('format')!r})")
    if meta.get("schema_version") != SCHEMA_VERSION:
        raise CheckpointError(f"{meta_path}: schema version {meta.get('schema_version')} is not supported")
    if expected_model and meta.get("model") != expected_model:
        raise CheckpointError(f"{wpath}: checkpoint is of model {meta.get('model')!r}, not {expected_model!r}")
    digest = sha256_path(wpath)
    if meta.get("sha256") != digest:
        raise CheckpointError(f"{wpath}: sha256 {digest[:12]}... does not match the sidecar's "
                              f"{str(meta.get('sha256'))[:12]}... (corrupt or replaced file)")
    return meta


def read_checkpoint(path: str | Path, expected_model: str | None = None) -> tuple[dict, dict]:
    """(state dict as float32 tensors, sidecar metadata), after every check."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    meta = checkpoint_meta(path, expected_model)
    wpath = weights_path(path)
    try:
        tensors = load_file(str(wpath))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{wpath}: unreadable safetensors file ({exc})") from None
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in tensors.items()}
    return state, meta


def load_into(model: nn.Module, state: dict, source: str | Path = "checkpoint") -> None:
    """Load a state dict strictly, with a readable list of what does not fit."""
    own = model.state_dict()
    unknown = sorted(set(state) - set(own))
    missing = sorted(set(own) - set(state))
    wrong = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if unknown or missing or wrong:
        parts = []
        if unknown:
            parts.append(f"unknown keys {unknown[:5]}{' ...' if len(unknown) > 5 else ''}")
        if missing:
            parts.append(f"missing keys {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if wrong:
            parts.append("shape mismatch " + ", ".join(f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
                                                        for k in wrong[:3]))
        raise CheckpointError(f"{source}: does not fit {type(model).__name__}: " + "; ".join(parts))
    model.load_state_dict(state, strict=True)


def load_matching(model: nn.Module, state: dict) -> list[str]:
    """Load the tensors of ``state`` whose name and shape fit ``model`` (a warm start across an
    architecture change); returns the names of the model's tensors left as initialised."""
    own = model.state_dict()
    fit = {k: v for k, v in state.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    model.load_state_dict(fit, strict=False)
    return sorted(set(own) - set(fit))


def load_model(path: str | Path, expected_model: str | None = None, device: str | torch.device = "cpu"
               ) -> tuple[nn.Module, dict]:
    """Build the checkpoint's model and variant from the registry and load its weights (eval mode)."""
    from models.registry import get

    state, meta = read_checkpoint(path, expected_model)
    model = get(meta["model"]).build(meta["variant"])
    load_into(model, state, weights_path(path))
    return model.to(device).eval(), meta
