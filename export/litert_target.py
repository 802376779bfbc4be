"""LiteRT (TFLite): litert-torch conversion; fp16 and int8 through ai-edge-quantizer recipes
(weight-only, dynamic, static with calibration samples); graph inputs and outputs stay float32."""
from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path

import numpy as np

from .common import ExportError

RECIPES = {"int8-weights": "weight_only_wi8_afp32", "int8-dynamic": "dynamic_wi8_afp32", "int8": "static_wi8_ai8"}


# Static int8 quantises only the convolution family; every other op (adds, muls, softmax, means,
# resizes, the kernel-bank depthwise convs) runs float between them, as on ONNX
# (export.onnx_target.QUANTISED_OPS). Quantising every op, the recipe's default, lost 12 dB on
# UiD, the error building up over its int8 element-wise graph with no single layer or op type to
# blame: uid-mobile 256x256 realistic parity 28.6 dB against 40.5 dB with this rule, same file
# size and speed (benchmarks/bench_litert_int8.py, docs/EXPORT.md). Use --litert-recipe to trade.
QUANTISED_OPS = ("CONV_2D", "CONV_2D_TRANSPOSE", "FULLY_CONNECTED")


def _recipe(precision: str) -> list:
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
        (static,) = rec
        rec = [{**static, "operation": op} for op in QUANTISED_OPS]
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


@contextlib.contextmanager
def _quiet():
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def convert(ctx) -> dict:
    import litert_torch

    path = ctx.workdir / "model.tflite"
    float_path = path if ctx.precision == "fp32" else ctx.workdir / "model-float.tflite"
    with _quiet():
        litert_torch.convert(ctx.model, ctx.args).export(str(float_path))
    notes = ["litert_torch.convert (NCHW graph I/O; the converter handles NHWC inside)"]
    if ctx.precision != "fp32":
        import ai_edge_quantizer as aeq

        custom = ctx.options.get("litert_recipe")
        rec = custom["entries"] if custom else _recipe(ctx.precision)
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
