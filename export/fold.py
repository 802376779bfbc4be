"""Constant folding of weight-only sub-graphs before lowering, shared by the ExecuTorch and LiteRT
targets.

XNNPACK delegates a convolution only when its weight is a constant. UiD computes some weights
from buffers in ``forward`` (the kernel bank ``repeat``-ed per image channel in ``apply_bank``,
``SmoothUp``'s ``expand``-ed binomial blur): constant in eval, but ops in the exported graph, so
those convolutions ran outside the delegate (ExecuTorch's portable kernels, LiteRT's own kernels).
Folding gives the same values (computed once, by the same PyTorch ops). ``aten.full`` is never
folded (a filled map stays one op instead of a stored tensor: litert-torch's own runtime folding
stored DC2's at 512x512, +0.34 MB), nor are quantize/dequantize ops (int8 weights stay int8).
"""
from __future__ import annotations


def fold_constants(ep):
    """Constant-propagate the sub-graphs of an ExportedProgram that depend only on parameters and
    buffers; returns the new ExportedProgram."""
    import torch
    from executorch.exir.operator.util import _QUANT_PRIMITIVES
    from executorch.exir.passes.constant_prop_pass import constant_prop_pass

    return constant_prop_pass(ep, custom_skip_targets={torch.ops.aten.full.default, *_QUANT_PRIMITIVES})


def folded_module(model, args: tuple):
    """``model`` exported with ``args`` and folded, as a module to hand to a converter that exports
    again (litert-torch)."""
    import torch

    return fold_constants(torch.export.export(model, args)).module()
