"""PyTorch-side quantisation helpers: PT2E static int8 for XNNPACK, fp16 wrapping, output selection.

PT2E (``prepare_pt2e`` -> calibrate on realistic samples -> ``convert_pt2e``) with the XNNPACK
quantizer, symmetric per-channel weights, per-tensor activations. A node filter keeps in float
what XNNPACK cannot run quantised on this stack (found on the three models, tiny variants):
- the ConvLSTM cell's element-wise gate math (the state outputs h_next/c_next as quantised
  delegate outputs make XNNPACK's shape propagation fail; c is unbounded anyway); its gate conv
  stays int8;
- convolutions whose weights are computed in the graph (UiD kernel bank), not constants;
- convolutions with one input or output channel (UiD's CoC maps: "Failed to create convolution
  node ... xnn_status_invalid_parameter").
"""
from __future__ import annotations

import copy

import torch
from torch import nn


class SelectOutputs(nn.Module):
    """Return only the outputs at ``indices`` (``--outputs main``)."""

    def __init__(self, model: nn.Module, indices: list[int]):
        super().__init__()
        self.model = model
        self.indices = list(indices)

    def forward(self, *xs):
        outs = self.model(*xs)
        return tuple(outs[i] for i in self.indices)


class Fp16(nn.Module):
    """fp16 weights and compute with float32 graph inputs and outputs (casts at the edges)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = copy.deepcopy(model).half().eval()

    def forward(self, *xs):
        outs = self.model(*[x.half() for x in xs])
        return tuple(o.float() for o in outs)


def _is_conv(n) -> bool:
    return n.op == "call_function" and "conv" in str(n.target) and len(n.args) > 1


def xnnpack_node_filter(n, level: int = 0) -> bool:
    """True: quantise this node. ``level`` 1 also keeps convs with < 8 input or output channels
    float, level 2 grouped and transposed convs too (used when XNNPACK rejects a level-0 program)."""
    stack = n.meta.get("nn_module_stack") or {}
    in_lstm = any("ConvLSTMCell" in str(v[1]) for v in stack.values())
    if in_lstm and not _is_conv(n):
        return False
    if _is_conv(n):
        w = n.args[1]
        if getattr(w, "op", None) != "get_attr":
            return False
        val = w.meta.get("val")
        if val is not None and val.dim() == 4:
            transposed = "transpose" in str(n.target)
            cin, cout = (val.shape[0], val.shape[1]) if transposed else (val.shape[1], val.shape[0])
            if cin == 1 or cout == 1 or (level >= 1 and min(cin, cout) < 8):
                return False
        if level >= 2 and ("transpose" in str(n.target) or (len(n.args) > 8 and n.args[8] != 1)):
            return False
    return True


def pt2e_xnnpack_int8(model: nn.Module, args: tuple, calibration: list[tuple], level: int = 0) -> nn.Module:
    """Static int8 (PT2E) for XNNPACK, calibrated on ``calibration`` (tuples of input tensors)."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer, get_symmetric_quantization_config)
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    gm = torch.export.export(model, args).module()
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    quantizer.set_filter_function(lambda n: xnnpack_node_filter(n, level))
    prepared = prepare_pt2e(gm, quantizer)
    with torch.no_grad():
        for sample in calibration:
            prepared(*sample)
    return convert_pt2e(prepared)
