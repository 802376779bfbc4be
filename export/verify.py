"""Run an artifact on its real runtime and compare it with the PyTorch fp32 reference.

``load_runner(target, model_file, input_names, output_names)`` returns a callable
``run(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]`` (the shape of
``runtime_py.runners``): onnxruntime, the ExecuTorch runtime, the LiteRT interpreter, and Core ML
on macOS. ``compare`` gives per-output shape check, PSNR, max and mean |diff|.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np


PSNR_CAP = 200.0  # identical outputs: reported as 200 dB (JSON has no infinity)


# --- runners: the per-runtime backends live in runtime_py.runners (one interface for all) ---------

from runtime_py.runners import BACKENDS as RUNNERS, RUNTIME_NAMES, Runner, load_backend as load_runner  # noqa: E402,F401


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
