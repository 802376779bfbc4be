"""PyTorch-side quantisation helpers: PT2E static int8 for XNNPACK and fp16 wrapping (used by the
ExecuTorch target, ``export.targets.executorch``).

PT2E (``prepare_pt2e`` -> calibrate on realistic samples -> ``convert_pt2e``) with the XNNPACK
quantizer, symmetric per-channel weights, per-tensor activations. A node filter keeps in float
what XNNPACK cannot run quantised on this stack (found on the three models, tiny variants):
- the ConvLSTM cell's element-wise gate math (the state outputs h_next/c_next as quantised
  delegate outputs make XNNPACK's shape propagation fail; c is unbounded anyway); its gate conv
  stays int8;
- convolutions whose weights are computed in the graph (UiD kernel bank), not constants;
- ops that depend on weights only (UiD's ``P_k`` embedding of the kernel bank): the ExecuTorch
  target constant-folds them, which lets XNNPACK take the convs that use them as weights.
Two graph fixes make UiD and DC2 programs loadable (issue 5; both were refused at every filter
level before): :func:`untie_shared_weights` before annotation (a module called twice shared its
fp32 bias between an int8 and a float conv: "Failed to create convolution node ...
xnn_status_invalid_parameter") and :func:`duplicate_shared_dequants` after conversion (a shared
dequantize made a float ``clamp`` read int8: "XNN Runtime creation failed with code:
xnn_status_unsupported_parameter"). The 1-channel-conv rule that used to be here was a misreading
of the first failure (UiD's 1-channel convs ``P_rgb``/``P_feat`` are the ones called twice).
"""
from __future__ import annotations

import copy

import torch
from torch import nn


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


def _depends_on_inputs(n) -> bool:
    """Whether a graph input (placeholder) is upstream of ``n`` (memoised in ``n.meta``)."""
    key = "_depends_on_inputs"
    if key not in n.meta:
        stack = [n]
        while stack:  # iterative post-order: deep graphs would overflow recursion
            m = stack[-1]
            if key in m.meta:
                stack.pop()
                continue
            if m.op == "placeholder":
                m.meta[key] = True
                stack.pop()
                continue
            todo = [a for a in m.all_input_nodes if key not in a.meta]
            if todo:
                stack.extend(todo)
                continue
            m.meta[key] = any(a.meta[key] for a in m.all_input_nodes)
            stack.pop()
    return n.meta[key]


def path_in_modules(path: str, modules: tuple[str, ...]) -> bool:
    """Whether module ``path`` ("model.composer.x") lies inside one of ``modules`` (paths of the
    model's own ``named_modules()``, matched on whole components: the export wraps the model)."""
    return any(f".{m}." in f".{path}." for m in modules)


def in_modules(n, modules: tuple[str, ...]) -> bool:
    """Whether FX node ``n`` was traced inside one of the module paths ``modules``."""
    return any(path_in_modules(v[0], modules) for v in (n.meta.get("nn_module_stack") or {}).values())


def xnnpack_node_filter(n, level: int = 0, float_modules: tuple[str, ...] = ()) -> bool:
    """True: quantise this node. Nodes inside ``float_modules`` (``ModelSpec.int8_float_modules``)
    stay float. ``level`` 1 also keeps convs with < 8 input or output channels
    float, level 2 grouped and transposed convs too (fallbacks for when XNNPACK rejects a level-0
    program; none of the three models needs them since :func:`untie_shared_weights` and
    :func:`duplicate_shared_dequants`)."""
    if n.op == "call_function" and not _depends_on_inputs(n):
        return False  # computed from weights only (UiD's P_k(kernel bank)): folded at lowering instead
    if float_modules and in_modules(n, float_modules):
        return False
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
            if level >= 1 and min(cin, cout) < 8:
                return False
        if level >= 2 and ("transpose" in str(n.target) or (len(n.args) > 8 and n.args[8] != 1)):
            return False
    return True


def _is_conv_or_linear(n) -> bool:
    return n.op == "call_function" and ("conv" in str(n.target) or "linear" in str(n.target))


def untie_shared_weights(gm: torch.fx.GraphModule) -> int:
    """Give each conv / linear call its own copy of weights and biases it shares with another call.

    A module applied more than once (UiD's siamese disparity stem runs on both views) gives one
    ``get_attr`` node per parameter with several conv users. The XNNPACK quantizer annotates a conv
    together with its weight and bias nodes and skips any conv whose nodes are already annotated,
    so only the first call is quantised and the second stays float while *sharing its fp32 bias
    node* with the int8 conv. The XNNPACK delegate defines each graph value once: the shared bias
    becomes either an fp32 tensor (used by the int8 conv) or an int32 one (used by the fp32 conv),
    and ``xnn_define_convolution_2d`` rejects the mismatched bias datatype at load ("Failed to
    create convolution node ... xnn_status_invalid_parameter"). A per-call copy (the same values;
    the model's parameters are untouched) lets both calls be quantised, each with its own int32
    bias (its scale is input scale x weight scale, which differs per call). Returns the number of
    copies made.
    """
    made = 0
    for node in list(gm.graph.nodes):
        if node.op != "get_attr":
            continue
        users = [u for u in node.users if _is_conv_or_linear(u)]
        if len(users) < 2:
            continue
        value = gm.get_parameter(node.target) if node.target in dict(gm.named_parameters()) else \
            gm.get_buffer(node.target)
        for user in users[1:]:
            name = f"_untied_{node.target.replace('.', '_')}_{made}"
            gm.register_parameter(name, nn.Parameter(value.detach().clone(), requires_grad=False))
            with gm.graph.inserting_before(user):
                copy_node = gm.graph.get_attr(name)
            copy_node.meta = dict(node.meta)
            user.replace_input_with(node, copy_node)
            made += 1
    return _recompiled(gm, made)


def _recompiled(gm: torch.fx.GraphModule, changes: int) -> int:
    """Check and regenerate ``gm`` after a graph edit (when there was one); returns ``changes``."""
    if changes:
        gm.graph.lint()
        gm.recompile()
    return changes


def duplicate_shared_dequants(gm: torch.fx.GraphModule) -> int:
    """Give every consumer of a shared ``dequantize_per_tensor`` node its own copy.

    torchao's ``DuplicateDQPass`` copies a shared dequantize only for *annotated* users. An op the
    XNNPACK quantizer does not annotate (``sub``, ``clamp``) that sits between quantised ops (DC2's
    blend ``w + m * (uw - w)``: the ``mul`` observes the ``sub`` output) keeps sharing its input
    dequantize with its siblings, e.g. the ``clamp`` of the ``refined_w`` graph output. XNNPACK's
    partitioner sees ``dq -> sub -> q``, lowers the ``sub`` as int8 and tags its input dequantize as
    implicit (folded away), which also removes it from the ``clamp``'s path: the float clamp gets an
    int8 input and an fp32 output, and XNNPACK refuses the mixed-type clamp when it creates the
    runtime ("XNN Runtime creation failed with code: xnn_status_unsupported_parameter"). With a
    private dequantize per user, the clamp keeps an explicit int8 -> fp32 convert. Returns the number
    of copies made (the graph computes the same values).
    """
    targets = (torch.ops.quantized_decomposed.dequantize_per_tensor.default,
               torch.ops.quantized_decomposed.dequantize_per_tensor.tensor)
    made = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or node.target not in targets or len(node.users) < 2:
            continue
        for user in list(node.users)[1:]:
            with gm.graph.inserting_after(node):
                copy_node = gm.graph.node_copy(node)
            user.replace_input_with(node, copy_node)
            made += 1
    return _recompiled(gm, made)


def pt2e_xnnpack_int8(model: nn.Module, args: tuple, calibration: list[tuple], level: int = 0,
                      float_modules: tuple[str, ...] = ()) -> nn.Module:
    """Static int8 (PT2E) for XNNPACK, calibrated on ``calibration`` (tuples of input tensors);
    ``float_modules`` stay float (see :func:`xnnpack_node_filter`)."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer, get_symmetric_quantization_config)
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    gm = torch.export.export(model, args).module()
    untie_shared_weights(gm)  # before annotation: every call of a shared conv gets quantised
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    quantizer.set_filter_function(lambda n: xnnpack_node_filter(n, level, float_modules))
    prepared = prepare_pt2e(gm, quantizer)
    with torch.no_grad():
        for sample in calibration:
            prepared(*sample)
    converted = convert_pt2e(prepared)
    duplicate_shared_dequants(converted)  # after DuplicateDQPass, which skips unannotated users
    return converted
