"""Parity: run an artifact on its real runtime and compare it with the PyTorch fp32 reference.

``verify`` runs both on random inputs (uniform in each input's range) and on realistic synthetic
scenes, compares every output (shape, PSNR, max and mean |diff|, worst over samples), decides the
verdict on the gated sets, and for lossy precisions adds the task metric (PSNR against the ground
truth of the synthetic test split, float vs quantised). It returns ``parity.json``'s content and
the verified test case a target may ship (ExecuTorch's BundledProgram).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from core.host import host_info
from core.metrics import psnr as _psnr

from . import calibration_data as cd
from .artifact import PARITY_SCHEMA
from .request import CALIBRATED, QUANTISED, ExportRequest
from .targets import Context, ReferenceCase, Target

if TYPE_CHECKING:  # pragma: no cover
    from .pipeline import RunCache

PSNR_CAP = 200.0  # identical outputs: reported as 200 dB (JSON has no infinity)
REFERENCE = "PyTorch eager fp32"


# --- metrics ------------------------------------------------------------------------------------

def psnr(ref: np.ndarray, got: np.ndarray, peak: float | None = None) -> float:
    """PSNR (core.metrics.psnr) with the parity rules: ``peak`` None or not a positive number = the
    reference's own range (1 when flat), capped at PSNR_CAP dB; -inf when the error is not finite."""
    ref = np.asarray(ref, np.float64)
    got = np.asarray(got, np.float64)
    if peak is None or not math.isfinite(peak) or peak <= 0:
        peak = float(ref.max() - ref.min()) or 1.0
    return min(PSNR_CAP, _psnr(got, ref, peak))


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


# --- verdict ------------------------------------------------------------------------------------

def gated_sets(precision: str) -> list[str]:
    """Sets whose PSNR decides the verdict. Static int8 is calibrated on realistic scenes: uniform noise
    lies outside its activation ranges, so the random set is reported but does not gate int8."""
    return ["realistic"] if precision in CALIBRATED else ["random", "realistic"]


def verdict(sets: dict, threshold: float, gated: list[str]) -> tuple[str, list[str]]:
    failures = []
    for set_name, outs in sets.items():
        if set_name not in gated:
            continue
        for name, e in outs.items():
            if not e["shape_ok"]:
                failures.append(f"{set_name}/{name}: {e.get('error', 'shape mismatch')}")
            elif e["psnr"] is None:
                failures.append(f"{set_name}/{name}: {e.get('error', 'no PSNR')}")
            elif e["psnr"] < threshold:
                failures.append(f"{set_name}/{name}: {e['psnr']:.1f} dB < {threshold:g} dB")
    return ("fail" if failures else "pass"), failures


# --- runs ---------------------------------------------------------------------------------------

def torch_run(model, names: list[str], out_names: list[str], inputs: dict) -> dict:
    """The PyTorch reference: ``model`` eager on named numpy inputs -> named numpy outputs."""
    import torch

    with torch.no_grad():
        outs = model(*[torch.from_numpy(np.ascontiguousarray(inputs[n], np.float32)) for n in names])
    return {n: o.detach().numpy() for n, o in zip(out_names, outs)}


def skipped(req: ExportRequest) -> dict:
    """parity.json when verification was not asked for (``ExportRequest.verify`` False)."""
    return {"schema": PARITY_SCHEMA, "target": req.target, "precision": req.precision, "runtime": None,
            "ran": False, "reason": "verification skipped (--no-verify)", "threshold_db": req.threshold,
            "sets": {}, "task": None, "verdict": "not run", "failures": []}


def verify(req: ExportRequest, spec, ctx: Context, target: Target, model_file: Path, cache: "RunCache",
           log: Callable[[str], None]) -> tuple[dict, ReferenceCase]:
    """(parity.json content, the first realistic sample with its expected outputs: the runtime's
    when parity ran here, else the PyTorch reference's)."""
    h, w, v = req.height, req.width, req.variant
    names, out_names = ctx.input_names, ctx.output_names
    reason = target.not_runnable_reason
    rnd = [cd.random_inputs(spec, v, h, w, req.seed)]
    real = cache.get(("real", spec.name, v, h, w, req.parity_count, req.seed + 1),
                     lambda: cd.synthetic_inputs(spec, v, h, w, req.parity_count, req.seed + 1))
    ref = {k: [torch_run(ctx.model, names, out_names, s) for s in sets] for k, sets in
           (("random", rnd), ("realistic", real))}
    parity = {"schema": PARITY_SCHEMA, "target": req.target, "precision": req.precision,
              "runtime": target.runtime_name, "ran": False, "reason": reason,
              "threshold_db": req.threshold, "gated_sets": gated_sets(req.precision),
              "reference": f"{REFERENCE} (same weights, same outputs)",
              "inputs": {"random": {"count": 1, "seed": req.seed, "kind": "uniform in each input's value range"},
                         "realistic": {"count": len(real), "seed": req.seed + 1,
                                       "kind": "synth.samples.realistic_inputs (synthetic scenes)"}},
              "sets": {}, "task": None, "verdict": "not run", "failures": []}
    case = ReferenceCase(real[0], ref["realistic"][0], REFERENCE)
    if reason is not None:
        return parity, case
    log(f"{spec.name}: verifying {req.target} {req.precision} on {target.runtime_name}")
    run = target.open_runtime(model_file, names, out_names, 1)
    got = {"random": [run(s) for s in rnd], "realistic": [run(s) for s in real]}
    sets = {k: merge_worst([compare(r, g, ctx.out_specs) for r, g in zip(ref[k], got[k])]) for k in ref}
    verdict_, failures = verdict(sets, req.threshold, gated_sets(req.precision))
    parity.update(ran=True, sets=sets, verdict=verdict_, failures=failures)
    case = ReferenceCase(real[0], got["realistic"][0], f"{target.runtime_name} on {host_info()['machine']}")
    if req.precision in QUANTISED:
        parity["task"] = task_metric(req, spec, ctx, run, cache)
    return parity, case


def task_metric(req: ExportRequest, spec, ctx: Context, run, cache: "RunCache") -> dict:
    """PSNR of the main output against the ground truth on the synthetic test split, float vs quantised."""
    h, w, v = req.height, req.width, req.variant
    pairs = cache.get(("task", spec.name, v, h, w, req.task_count, req.seed + 2),
                      lambda: cd.task_split(spec, v, h, w, req.task_count, req.seed + 2))
    main = spec.main_output
    f_ps, q_ps = [], []
    for inputs, target in pairs:
        f_ps.append(psnr(target, torch_run(ctx.model, ctx.input_names, ctx.output_names, inputs)[main], 1.0))
        q_ps.append(psnr(target, run(inputs)[main], 1.0))
    f, q = float(np.mean(f_ps)), float(np.mean(q_ps))
    return {"output": main, "samples": len(pairs), "seed": req.seed + 2, "split": "synthetic test split "
            "(synth.samples.render_example)", "float_psnr_db": round(f, 3), "quantised_psnr_db": round(q, 3),
            "delta_db": round(q - f, 3)}
