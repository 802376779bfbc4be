"""Run an artifact on its real runtime and compare it with the PyTorch fp32 reference.

``load_runner(target, model_file, input_names, output_names)`` returns a callable
``run(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]`` (the shape of
``runtime_py.runners``): onnxruntime, the ExecuTorch runtime, the LiteRT interpreter, and Core ML
on macOS. ``compare`` gives per-output shape check, PSNR, max and mean |diff|.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import numpy as np

from .common import IS_MACOS

PSNR_CAP = 200.0  # identical outputs: reported as 200 dB (JSON has no infinity)
Runner = Callable[[dict], dict]


# --- runners (load artifact + named inputs -> named outputs) ----------------------------------

def onnx_runner(path: Path, input_names: list[str], output_names: list[str], threads: int = 1) -> Runner:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]

    def run(inputs: dict) -> dict:
        return dict(zip(names, sess.run(None, {k: np.ascontiguousarray(inputs[k], np.float32) for k in input_names})))
    return run


def executorch_runner(path: Path, input_names: list[str], output_names: list[str], threads: int = 1) -> Runner:
    import torch
    from executorch.runtime import Runtime

    import executorch.kernels.quantized  # noqa: F401  (out variants of quantize/dequantize ops)

    method = Runtime.get().load_program(str(path)).load_method("forward")

    def run(inputs: dict) -> dict:
        outs = method.execute([torch.from_numpy(np.array(inputs[k], np.float32, copy=True)) for k in input_names])
        return {n: o.detach().numpy().astype(np.float32, copy=False) for n, o in zip(output_names, outs)}
    return run


def litert_runner(path: Path, input_names: list[str], output_names: list[str], threads: int = 1) -> Runner:
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
    return run


def coreml_runner(path: Path, input_names: list[str], output_names: list[str], threads: int = 1) -> Runner:
    if not IS_MACOS:
        raise RuntimeError("Core ML predictions need macOS")
    import coremltools as ct

    m = ct.models.MLModel(str(path), compute_units=ct.ComputeUnit.CPU_ONLY)

    def run(inputs: dict) -> dict:
        res = m.predict({k: np.ascontiguousarray(inputs[k], np.float32) for k in input_names})
        return {n: np.asarray(res[n], np.float32) for n in output_names}
    return run


def executorch_coreml_runner(path: Path, input_names: list[str], output_names: list[str], threads: int = 1) -> Runner:
    if not IS_MACOS:
        raise RuntimeError("the ExecuTorch Core ML delegate runs on Apple platforms only")
    return executorch_runner(path, input_names, output_names, threads)


RUNNERS = {"onnx": onnx_runner, "executorch": executorch_runner, "tflite": litert_runner,
           "coreml": coreml_runner, "executorch-coreml": executorch_coreml_runner}
RUNTIME_NAMES = {"onnx": "onnxruntime (CPUExecutionProvider)", "executorch": "ExecuTorch runtime (XNNPACK)",
                 "tflite": "LiteRT interpreter (ai_edge_litert, XNNPACK)", "coreml": "Core ML (macOS, CPU_ONLY)",
                 "executorch-coreml": "ExecuTorch runtime (Core ML delegate)"}


def load_runner(target: str, model_file: Path, input_names: list[str], output_names: list[str],
                threads: int = 1) -> Runner:
    return RUNNERS[target](Path(model_file), list(input_names), list(output_names), threads)


# --- metrics ------------------------------------------------------------------------------------

def psnr(ref: np.ndarray, got: np.ndarray, peak: float | None = None) -> float:
    ref = np.asarray(ref, np.float64)
    got = np.asarray(got, np.float64)
    mse = float(np.mean((ref - got) ** 2))
    if peak is None or not math.isfinite(peak) or peak <= 0:
        peak = float(ref.max() - ref.min()) or 1.0
    if not math.isfinite(mse):
        return float("-inf")
    if mse <= 0:
        return PSNR_CAP
    return min(PSNR_CAP, 10.0 * math.log10(peak * peak / mse))


def output_peak(tensor_spec) -> float | None:
    lo, hi = tensor_spec.value_range
    return (hi - lo) if math.isfinite(lo) and math.isfinite(hi) else None


def compare(ref: dict, got: dict, out_specs: list) -> dict:
    """Per output: shapes, shape_ok, psnr, max_abs, mean_abs (a missing output fails its shape check)."""
    res = {}
    for t in out_specs:
        r = np.asarray(ref[t.name], np.float32)
        g = got.get(t.name)
        if g is None:
            res[t.name] = {"shape": None, "ref_shape": list(r.shape), "shape_ok": False, "psnr": None,
                           "max_abs": None, "mean_abs": None, "error": "output missing"}
            continue
        g = np.asarray(g, np.float32)
        ok = tuple(g.shape) == tuple(r.shape)
        entry = {"shape": list(g.shape), "ref_shape": list(r.shape), "shape_ok": ok}
        if ok:
            d = np.abs(g.astype(np.float64) - r)
            finite = bool(np.isfinite(g).all())
            entry.update(psnr=round(psnr(r, g, output_peak(t)), 3) if finite else None,
                         max_abs=float(d.max()) if finite else None, mean_abs=float(d.mean()) if finite else None)
            if not finite:
                entry["error"] = "non-finite values in the output"
        else:
            entry.update(psnr=None, max_abs=None, mean_abs=None,
                         error=f"shape {tuple(g.shape)} != reference {tuple(r.shape)}")
        res[t.name] = entry
    return res


def merge_worst(results: list[dict]) -> dict:
    """Worst case over several samples, per output (min PSNR, max of max |diff|, mean of means)."""
    out = {}
    for name in results[0]:
        es = [r[name] for r in results]
        ok = all(e["shape_ok"] for e in es)
        ps = [e["psnr"] for e in es]
        entry = {"shape": es[0]["shape"], "ref_shape": es[0]["ref_shape"], "shape_ok": ok, "samples": len(es)}
        if ok and all(p is not None for p in ps):
            entry.update(psnr=min(ps), max_abs=max(e["max_abs"] for e in es),
                         mean_abs=float(np.mean([e["mean_abs"] for e in es])))
        else:
            entry.update(psnr=None, max_abs=None, mean_abs=None,
                         error=next((e.get("error") for e in es if e.get("error")), "failed"))
        out[name] = entry
    return out
