"""Parameter and MAC counts (fvcore-style: convolutions and matrix products only).

MACs come from :class:`torch.utils.flop_counter.FlopCounterMode` (``MAC = FLOP / 2``), which
counts conv, transposed conv, matmul/linear and attention; element-wise work (activations,
the 49 multiply-adds of the dynamic filter, gating) is not counted, as in fvcore. Models are
built on the ``meta`` device by default, so the paper variants at 512x512 count in well under
a second and allocate nothing.
"""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from core.errors import UserError


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (buffers such as the UiD inverse kernels are not counted)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def count_macs(model: nn.Module, inputs: Sequence[torch.Tensor] | Mapping[str, torch.Tensor]) -> int:
    """Multiply-accumulates of one forward pass on ``inputs`` (positional, or a dict in order)."""
    args = tuple(inputs.values()) if isinstance(inputs, Mapping) else tuple(inputs)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(*args)
    return counter.get_total_flops() // 2


def measure(name: str, variant: str, height: int = 512, width: int = 512, device: str = "meta") -> dict:
    """``{"model", "variant", "params", "macs", "gmac", "height", "width"}`` for one registry entry."""
    from .registry import get

    spec = get(name)
    spec.check_size(height, width)
    with torch.device(device):
        model = spec.build(variant)
    shapes = spec.input_shapes(variant, height, width)
    inputs = [torch.zeros(shapes[t.name], device=device) for t in spec.inputs]
    macs = count_macs(model, inputs)
    return {
        "model": name,
        "variant": variant,
        "params": count_params(model),
        "macs": macs,
        "gmac": macs / 1e9,
        "height": height,
        "width": width,
    }


def model_table(
    height: int = 512,
    width: int = 512,
    names: Iterable[str] | None = None,
    variants: Iterable[str] | None = None,
) -> list[dict]:
    """One row per model and variant: params, GMAC at ``height x width``, inputs, outputs,
    and the paper's parameter count where the seeds give one (``paper_params``)."""
    from .registry import get, names as all_names

    rows = []
    for name in names or all_names():
        spec = get(name)
        for variant in variants or spec.variants:
            if variant not in spec.variants:
                raise UserError(f"unknown variant {variant!r} for {name}; valid: {', '.join(spec.variants)}")
            row = measure(name, variant, height, width)
            row["inputs"] = ", ".join(f"{t.name}[{t.channels_for(variant)}]" for t in spec.inputs)
            row["outputs"] = ", ".join(f"{t.name}[{t.channels_for(variant)}]" for t in spec.outputs)
            row["paper_params"] = spec.paper_params if variant == "paper" else None
            rows.append(row)
    return rows
