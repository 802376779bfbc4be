"""LiteRT (TFLite; target name ``tflite``, aliases ``litert``/``tfl``): litert-torch conversion;
fp16 and int8 through ai-edge-quantizer recipes (weight-only, dynamic, static with calibration
samples) or the user's recipe (``--litert-recipe``, :func:`load_recipe`); graph inputs and
outputs stay float32. Runs on the LiteRT interpreter (``ai_edge_litert``)."""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
from pathlib import Path

import numpy as np

from ..request import ExportError
from .base import Target

RECIPES = {"int8-weights": "weight_only_wi8_afp32", "int8-dynamic": "dynamic_wi8_afp32", "int8": "static_wi8_ai8"}


# Static int8 quantises only the convolution family (and, below, the data movement between
# convolutions); every other op (adds, muls, softmax, means, bilinear resizes, the kernel-bank
# depthwise convs) runs float between them, as on ONNX
# (export.targets.onnx.QUANTISED_OPS). Quantising every op, the recipe's default, lost 12 dB on
# UiD, the error building up over its int8 element-wise graph with no single layer or op type to
# blame: uid-mobile 256x256 realistic parity 28.6 dB against 40.5 dB with this rule, same file
# size and speed (benchmarks/bench_litert_int8.py, docs/EXPORT.md). Use --litert-recipe to trade.
#
# Issue 17: also the data movement between convolutions (max pooling, concatenation, nearest
# up-sampling: no arithmetic; concatenation requantises its inputs to one scale, which the parity
# gate checks), which kept a DEQUANTIZE/QUANTIZE pair around each: rdpd-mobile 256x256, one
# thread, int8 1275 -> 732 ms (fp32 3705 / 3202 ms in the same process on a loaded box), parity
# unchanged (worst output 49.0 dB). ai-edge-quantizer 0.10 has no min-max int8 rule for
# LEAKY_RELU ("Unsupported operation LEAKY_RELU"), so UiD's and DC2's activations stay float (with
# their DEQUANTIZE/QUANTIZE, inside the XNNPACK delegate). Rewriting LeakyReLU as max(x, a x) or
# (1-a) relu(x) + a x quantises but is slower: XNNPACK takes neither int8 MAXIMUM nor a lone int8
# RELU (bench_litert_int8.py --study leaky).
QUANTISED_OPS = ("CONV_2D", "CONV_2D_TRANSPOSE", "FULLY_CONNECTED", "MAX_POOL_2D", "CONCATENATION",
                 "RESIZE_NEAREST_NEIGHBOR")


def module_scope_regex(path: str) -> str:
    """The ai-edge-quantizer scope regex of module ``path`` ("enc0", "a.b"). litert-torch names
    an op's output tensor by its module stack, one ``<class qualname>_<attribute>`` component per
    level joined by "/" (then ";N"), so a module is a run of components ending in its attributes."""
    parts = "/".join(rf"[A-Za-z0-9.]*_{re.escape(a)}" for a in path.split("."))
    return rf"(^|/){parts}(/|;|$)"


def _recipe(precision: str, float_modules: tuple[str, ...] = ()) -> list:
    from ai_edge_quantizer import recipe

    if precision == "fp16":
        return [{"regex": ".*", "operation": "*", "algorithm_key": "float_casting",
                 "op_config": {"weight_tensor_config": {"num_bits": 16, "dtype": "FLOAT"},
                               "compute_precision": "FLOAT", "explicit_dequantize": True}}]
    rec = list(getattr(recipe, RECIPES[precision])())
    if precision == "int8":
        # Ops without an entry are not quantised, so graph I/O stays float32 (the default recipe
        # would make it int8). DEPTHWISE_CONV_2D stays float: UiD's kernel bank and its inverse are
        # depthwise convs whose weights (an inverse kernel's large centre and small ringing tails)
        # do not survive int8 (uid-tiny realistic-set PSNR 7.1 dB -> 35.2 dB with this rule).
        # ``float_modules`` (ModelSpec.int8_float_modules): later entries win in ai-edge-quantizer
        (static,) = rec
        rec = [{**static, "operation": op} for op in QUANTISED_OPS]
        rec += [{"regex": module_scope_regex(m), "operation": "*", "algorithm_key": "no_quantize"}
                for m in float_modules]
    return rec


RECIPE_KEYS = ("regex", "operation", "algorithm_key")


def load_recipe(path) -> list[dict]:
    """A user's ai-edge-quantizer recipe (JSON: a list of ``{"regex", "operation",
    "algorithm_key", "op_config"}`` entries, as ``ai_edge_quantizer.recipe`` functions return),
    used instead of this module's rule, e.g. to quantise more op types for speed. Raises
    ExportError naming the file and the problem."""
    path = Path(path)
    try:
        rec = json.loads(path.read_text())
    except FileNotFoundError:
        raise ExportError(f"{path}: LiteRT recipe not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ExportError(f"{path}: not a JSON recipe ({exc})") from None
    if not isinstance(rec, list) or not rec:
        raise ExportError(f"{path}: a LiteRT recipe is a non-empty JSON list of entries")
    for i, entry in enumerate(rec):
        missing = [k for k in RECIPE_KEYS if not isinstance(entry, dict) or k not in entry]
        if missing:
            raise ExportError(f"{path}: entry {i} lacks {', '.join(missing)} (each entry needs {', '.join(RECIPE_KEYS)})")
    return rec


def recipe_option(path, target: str) -> dict:
    """``ExportRequest.extra`` entries for ``--litert-recipe PATH`` given with ``--target target``
    (this target, one of its aliases, or all); the recipe is read and checked now."""
    if target.lower() != "all":
        from . import get

        if get(target.lower()).name != TARGET.name:
            raise ExportError(f"--litert-recipe applies to --target tflite (or all), not {target}")
    return {"litert_recipe": {"path": str(path), "entries": load_recipe(path)}}


def check(req) -> None:
    """Options only this target reads, refused before any conversion."""
    if req.extra.get("litert_recipe") is not None and req.precision == "fp32":
        raise ExportError("--litert-recipe quantises: pass --precision int8, int8-weights, int8-dynamic or fp16")


@contextlib.contextmanager
def _quiet():
    with contextlib.redirect_stdout(io.StringIO()):
        yield


# Issue 17: sub-graphs that depend only on weights are folded into constants before conversion
# (export.fold, as for ExecuTorch). XNNPACK takes a convolution only when its weight is a
# constant; UiD builds some in forward from buffers (the kernel bank and its inverse repeated per
# image channel, SmoothUp's expanded binomial blur), so without folding those depthwise convs (the
# 17x17 inverse bank at full resolution among them) and their BROADCAST_TO/RESHAPE ran on LiteRT's
# own kernels, outside the delegate. Same outputs (fp32 max |diff| 4e-7); uid-mobile 512x512, 2
# threads: int8 1.08x faster, fp32 unchanged (benchmarks/bench_litert_int8.py --study folding;
# docs/BENCHMARKS.md, "int8 that pays?"). DC2 has nothing to fold: its file is byte-identical.
CONSTANT_FOLDING = True


def convert(ctx) -> dict:
    import litert_torch

    path = ctx.workdir / "model.tflite"
    float_path = path if ctx.precision == "fp32" else ctx.workdir / "model-float.tflite"
    model = ctx.model
    if CONSTANT_FOLDING:
        from ..fold import folded_module

        model = folded_module(ctx.model, ctx.args)
    with _quiet():
        litert_torch.convert(model, ctx.args).export(str(float_path))
    notes = ["litert_torch.convert (NCHW graph I/O; the converter handles NHWC inside; weight-only "
             "sub-graphs folded into constants so XNNPACK takes the convolutions that use them)"]
    if ctx.precision != "fp32":
        import ai_edge_quantizer as aeq

        custom = ctx.options.get("litert_recipe")
        rec = custom["entries"] if custom else _recipe(ctx.precision, ctx.spec.int8_float_modules)
        try:
            q = aeq.Quantizer(str(float_path), rec)
        except (ValueError, KeyError, TypeError) as exc:
            raise ExportError(f"LiteRT recipe {custom['path'] if custom else '(built-in)'} rejected by "
                              f"ai-edge-quantizer: {exc}") from None
        with _quiet():
            calib = None
            if q.need_calibration:
                feeds = [{f"args_{i}": np.ascontiguousarray(s[n], np.float32) for i, n in enumerate(ctx.input_names)}
                         for s in ctx.calibration]
                calib = q.calibrate({"serving_default": feeds}, num_threads=1)
            q.quantize(calib).export_model(str(path), overwrite=True)
        os.unlink(float_path)
        if custom:
            notes.append(f"ai-edge-quantizer recipe from {custom['path']} ({len(rec)} entries, the user's)")
        else:
            notes.append(f"ai-edge-quantizer recipe {RECIPES.get(ctx.precision, 'float_casting fp16 weights')}"
                         + (f"; only {'/'.join(QUANTISED_OPS)} quantised, graph I/O float32"
                            if ctx.precision == "int8" else ""))
    info = {"backend": "LiteRT (XNNPACK delegate by default)", "notes": notes}
    if ctx.precision != "fp32":
        info["recipe"] = rec
    return info


def open_runtime(path: Path, input_names: list[str], output_names: list[str], threads: int = 1):
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path), num_threads=threads)
    sig = interp.get_signature_runner()
    sig_in = interp.get_signature_list()["serving_default"]["inputs"]  # args_0, args_1, ...
    sig_out = interp.get_signature_list()["serving_default"]["outputs"]  # output_0, ...

    def _key(s: str) -> int:
        return int(s.rsplit("_", 1)[-1])

    arg_names = sorted(sig_in, key=_key)
    out_keys = sorted(sig_out, key=_key)

    def run(inputs: dict) -> dict:
        res = sig(**{a: np.ascontiguousarray(inputs[k], np.float32) for a, k in zip(arg_names, input_names)})
        return {n: np.asarray(res[k], np.float32) for n, k in zip(output_names, out_keys)}

    def delegation() -> dict:
        """Delegate partitions and fallback ops after a run (XNNPACK, the default delegate)."""
        return {"name": "XNNPACK", **xnnpack_split(interp)}
    run.delegation = delegation
    return run


def xnnpack_split(interp) -> dict:
    """Which ops of an interpreter that has run are on the XNNPACK delegate and which fall back to
    LiteRT's own kernels (single-threaded for most ops, and each one splits the delegated graph).

    The Python API lists the model's ops and, after them, one DELEGATE node per partition, but not
    the execution plan. An op with an output leaving a partition (a DELEGATE output) was delegated;
    an op feeding a DELEGATE node or a graph output without that is a fallback op, and so is every
    op upstream of a fallback op through outputs that leave no partition; the remaining ops live
    inside partitions. Returns ``{"partitions", "on_delegate", "fallback_ops": {op: count}}``."""
    import collections

    g = interp._interpreter  # the Python API has no public node list
    nodes = range(g.NumNodes())
    name = {i: g.NodeName(i) for i in nodes}
    ins = {i: [t for t in g.NodeInputs(i) if t >= 0] for i in nodes}
    outs = {i: list(g.NodeOutputs(i)) for i in nodes}
    parts = [i for i in nodes if name[i] == "DELEGATE"]
    part_in = {t for i in parts for t in ins[i]}
    part_out = {t for i in parts for t in outs[i]}
    graph_out = set(g.OutputIndices())
    ops = [i for i in nodes if name[i] != "DELEGATE"]
    producer = {t: i for i in ops for t in outs[i]}
    inside = {i for i in ops if any(t in part_out for t in outs[i])}
    fallback = {i for i in ops if i not in inside and any(t in part_in or t in graph_out for t in outs[i])}
    todo = list(fallback)
    while todo:
        for t in ins[todo.pop()]:
            p = producer.get(t)
            if p is not None and p not in inside and p not in fallback:
                fallback.add(p)
                todo.append(p)
    counts = collections.Counter(name[i] for i in fallback)
    return {"partitions": len(parts), "on_delegate": len(ops) - len(fallback), "fallback_ops": dict(counts.most_common())}


_PALETTE = "palettisation (k-means LUT weights) is a Core ML feature"

TARGET = Target(
    name="tflite",
    aliases=("litert", "tfl"),
    model_file="model.tflite",
    description="LiteRT (.tflite)",
    capabilities={
        "fp32": None,
        "fp16": None,  # fp16 weights (float_casting recipe); compute precision is a runtime choice
        "int8-weights": None, "int8": None, "int8-dynamic": None,
        "palette4": _PALETTE, "palette6": _PALETTE, "palette8": _PALETTE,
    },
    convert=convert,
    runtime_name="LiteRT interpreter (ai_edge_litert, XNNPACK)",
    open_runtime=open_runtime,
    not_runnable_reason=None,
    tools=("litert-torch", "ai-edge-litert", "ai-edge-quantizer", "executorch"),  # executorch: export.fold
    check=check,
    device_bench_tool="benchmark_model",
)
