"""``parity check``: a phone's outputs against a bundle's reference, with the common faults named.

Per output: shape, dtype, PSNR with Qualcomm AI Hub's definition (``psnr_aihub``: peak = the
reference's own max |ref|, so figures compare with AI Hub's), max and mean |diff|, an error
heatmap (PNG), and a verdict per precision threshold (``export.request.MIN_PSNR``). When the
outputs miss, the check tries the faults phone apps commonly make (``FAULTS``: NHWC/NCHW swap,
0-255 range, BGR/RGB swap) and names the one that explains the gap; a tampered or stale bundle
(sha256) and outputs of another artifact (``outputs/run.json``) are named too. Where the bundle
carries ground truth, the main output's task PSNR is reported overall and per blur band.
"""
from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np

from core.jsonfile import read_json
from core.atomic import atomic_dir, write_json

from .bundle import BLUR_BANDS, RUN_JSON, Bundle, open_bundle
from .tensors import BundleError, read_bin, read_npy

PSNR_CAP = 200.0  # identical outputs (JSON has no infinity)
VERDICT_PRECISIONS = ("fp32", "fp16", "int8")  # the verdict columns every check reports
MIN_GAIN_DB = 10.0  # a fault is named when undoing it gains at least this much and reaches a verdict
LAYOUT, RANGE, CHANNELS = "NHWC/NCHW swap", "0-255 range (expected 0-1)", "BGR/RGB swap"
FAULTS = (LAYOUT, RANGE, CHANNELS)
TAMPERED, OTHER_ARTIFACT = "tampered or stale bundle", "outputs from another artifact"
UNEXPLAINED = "outputs of another model or a broken runtime (no layout, range or channel fault explains them)"


def psnr_aihub(ref: np.ndarray, out: np.ndarray) -> float:
    """AI Hub's PSNR: 20 log10(max|ref| / RMS(out - ref)), capped at PSNR_CAP; -inf if not finite."""
    ref = np.asarray(ref, np.float64)
    out = np.asarray(out, np.float64)
    rms = math.sqrt(float(np.mean((out - ref) ** 2))) if out.size else 0.0
    if not math.isfinite(rms):
        return float("-inf")
    peak = float(np.max(np.abs(ref))) if ref.size else 0.0
    if rms == 0.0:
        return PSNR_CAP
    if peak == 0.0:
        peak = 1.0  # an all-zero reference: the error against unit scale
    return min(PSNR_CAP, 20.0 * math.log10(peak / rms))


def masked_psnr(ref: np.ndarray, out: np.ndarray, mask: np.ndarray, peak: float = 1.0) -> float | None:
    """PSNR over the pixels where ``mask`` (N1HW) holds, all channels; None when no pixel does."""
    m = np.broadcast_to(mask, ref.shape)
    if not m.any():
        return None
    mse = float(np.mean((np.asarray(out, np.float64)[m] - np.asarray(ref, np.float64)[m]) ** 2))
    return PSNR_CAP if mse == 0 else min(PSNR_CAP, 10 * math.log10(peak * peak / mse))


# --- reading the phone's outputs -----------------------------------------------------------------

def _read_raw(path: Path, shape: tuple) -> np.ndarray:
    """The file's values in stored (C) order as a flat float32 array; dtype and size checked."""
    return (read_npy(path, shape) if path.suffix == ".npy" else read_bin(path, shape)).reshape(-1)


def read_outputs(bundle: Bundle, outputs: Path) -> tuple[dict, dict | None]:
    """{sample: {output: (flat values, path)}} and ``run.json``; BundleError naming the file on a
    missing or extra tensor, a wrong dtype or size."""
    outputs = Path(outputs)
    if not outputs.is_dir():
        raise BundleError(f"{outputs}: no such outputs folder")
    names = {e["name"]: tuple(e["shape"]) for e in bundle.outputs}
    extra = sorted(p.name for p in outputs.iterdir() if p.name != RUN_JSON and not p.name.startswith(".")
                   and (not p.is_dir() or p.name not in bundle.samples))
    if extra:
        raise BundleError(f"{outputs}: unexpected entries {', '.join(extra)} (expected sample folders "
                          f"{', '.join(bundle.samples)} and optionally {RUN_JSON})")
    got: dict = {}
    for s in bundle.samples:
        d = outputs / s
        if not d.is_dir():
            raise BundleError(f"{d}: missing (one folder per bundle sample: {', '.join(bundle.samples)})")
        files = {p for p in d.iterdir() if not p.name.startswith(".")}
        known = set()
        got[s] = {}
        for n, shape in names.items():
            cands = [d / f"{n}.npy", d / f"{n}.bin"]
            present = [p for p in cands if p in files]
            if not present:
                raise BundleError(f"{d / (n + '.bin')}: missing (output {n!r}, float32 little-endian "
                                  f"{'x'.join(map(str, shape))})")
            known |= set(present)
            got[s][n] = (_read_raw(present[0], shape), present[0])
        unknown = sorted(p.name for p in files - known)
        if unknown:
            raise BundleError(f"{d}: extra tensors {', '.join(unknown)}; the model's outputs are "
                              f"{', '.join(names)}")
    run = None
    rj = outputs / RUN_JSON
    if rj.is_file():
        run = read_json(rj, BundleError)
        if not isinstance(run, dict):
            raise BundleError(f"{rj}: expected a JSON object")
    return got, run


# --- candidates: the output as written, and with each common fault undone ----------------------

def _candidates(flat: np.ndarray, shape: tuple) -> dict[tuple, np.ndarray]:
    """Interpretations of the values: key = the faults undone (empty: as written)."""
    n, c, h, w = shape
    layouts = {(): flat.reshape(shape)}
    if c > 1:
        layouts[(LAYOUT,)] = flat.reshape(n, h, w, c).transpose(0, 3, 1, 2)
    out = {}
    for (lk, a), scale, swap in itertools.product(layouts.items(), (False, True), (False, True)):
        if swap and c != 3:
            continue
        b = a / 255.0 if scale else a
        b = b[:, ::-1] if swap else b
        out[lk + ((RANGE,) if scale else ()) + ((CHANNELS,) if swap else ())] = b
    return out


def _stack(arrs: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([np.asarray(a, np.float64) for a in arrs], axis=0)


def compare_output(entry: dict, refs: list[np.ndarray], flats: list[np.ndarray], threshold: float) -> dict:
    """PSNR (worst sample, AI Hub definition), max/mean |diff| and the named faults of one output."""
    shape = tuple(entry["shape"])
    finite = all(np.isfinite(f).all() for f in flats)
    as_is = [f.reshape(shape) for f in flats]
    ps = [psnr_aihub(r, o) if finite else float("-inf") for r, o in zip(refs, as_is)]
    d = np.abs(_stack(as_is) - _stack(refs)) if finite else None
    res = {"name": entry["name"], "shape": list(shape), "dtype": "float32", "samples": len(refs),
           "psnr": round(min(ps), 3) if finite else None, "psnr_per_sample": [round(p, 3) for p in ps] if finite else None,
           "max_abs": float(d.max()) if finite else None, "mean_abs": float(d.mean()) if finite else None,
           "faults": [], "fixed_psnr": None}
    if not finite:
        res["faults"] = ["non-finite values (NaN or inf) in the output"]
        return res
    if min(ps) >= threshold:
        return res
    ref_all = _stack(refs)
    scores = {k: psnr_aihub(ref_all, _stack([_candidates(f, shape)[k] for f in flats]))
              for k in _candidates(flats[0], shape) if k}
    base = psnr_aihub(ref_all, _stack(as_is))
    if scores:
        best = max(scores, key=lambda k: (scores[k], -len(k)))
        if scores[best] >= base + MIN_GAIN_DB and scores[best] >= min(threshold, 30.0):
            res["faults"] = list(best)
            res["fixed_psnr"] = round(scores[best], 3)
    return res


def _heatmap(path: Path, name: str, ref: np.ndarray, out: np.ndarray, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    err = np.abs(np.asarray(out, np.float64) - np.asarray(ref, np.float64))[0].mean(axis=0)
    fig, ax = plt.subplots(figsize=(4.2, 3.6), dpi=100)
    im = ax.imshow(err, cmap="inferno", vmin=0.0, vmax=max(float(err.max()), 1e-12))
    ax.set_title(title, fontsize=8)
    ax.set_axis_off()
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="|out - ref| (channel mean)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def task_metric(bundle: Bundle, outs: dict) -> dict | None:
    """The main output's PSNR against ground truth (peak 1), device vs reference, overall and per blur band."""
    gt = bundle.manifest.get("ground_truth")
    if not gt:
        return None
    main = gt["output"]
    entry = next(e for e in bundle.outputs if e["name"] == main)
    shape = tuple(entry["shape"])
    rows: dict = {"all": {"device": [], "reference": [], "pixels": 0}}
    bands = [(lo, hi) for lo, hi in BLUR_BANDS] if gt.get("blur_map") else []
    keys = [f"{lo:g}-{hi:g} px" if math.isfinite(hi) else f">= {lo:g} px" for lo, hi in bands]
    for k in keys:
        rows[k] = {"device": [], "reference": [], "pixels": 0}
    for s in bundle.samples:
        truth, blur = bundle.ground_truth(s)
        dev = outs[s][main][0].reshape(shape)
        ref = bundle.reference(s, entry)
        full = np.ones((shape[0], 1, *shape[2:]), bool)
        masks = [("all", full)] + [(k, (blur >= lo) & (blur < hi)) for k, (lo, hi) in zip(keys, bands)]
        for k, m in masks:
            pd, pr = masked_psnr(truth, dev, m), masked_psnr(truth, ref, m)
            if pd is not None:
                rows[k]["device"].append(pd)
                rows[k]["reference"].append(pr)
                rows[k]["pixels"] += int(m.sum())
    out = {"output": main, "samples": len(bundle.samples), "peak": 1.0,
           "blur_map": gt.get("blur_map"), "bands": {}}
    for k, r in rows.items():
        if not r["device"]:
            continue
        dv, rf = float(np.mean(r["device"])), float(np.mean(r["reference"]))
        out["bands"][k] = {"device_psnr_db": round(dv, 3), "reference_psnr_db": round(rf, 3),
                           "delta_db": round(dv - rf, 3), "pixels": r["pixels"]}
    return out


def check(bundle_dir: str | Path, outputs: str | Path, device: str | None = None, out: str | Path | None = None,
          heatmaps: bool = True) -> dict:
    """Compare ``outputs`` (the app's ``outputs/`` folder) with the bundle; writes ``check.json`` and
    heatmaps to ``out`` (default ``<outputs>.check``); returns the result."""
    from export.request import MIN_PSNR

    bundle = open_bundle(bundle_dir)
    got, run = read_outputs(bundle, Path(outputs))
    if device is not None and not device.strip():
        raise BundleError("--device must name the device, e.g. 'Pixel 8'")
    art = bundle.artifact
    precision = art["precision"]
    threshold = MIN_PSNR[precision]
    faults: list[str] = []
    if bundle.changed:
        faults.append(f"{TAMPERED}: sha256 differs from bundle.json for {', '.join(bundle.changed)}")
    if run and run.get("artifact_sha256") and run["artifact_sha256"] != art.get("artifact_sha256"):
        faults.append(f"{OTHER_ARTIFACT}: {RUN_JSON} names model sha256 {str(run['artifact_sha256'])[:12]}..., "
                      f"the bundle's is {str(art.get('artifact_sha256'))[:12]}...")
    results = []
    for e in bundle.outputs:
        refs = [bundle.reference(s, e) for s in bundle.samples]
        flats = [got[s][e["name"]][0] for s in bundle.samples]
        r = compare_output(e, refs, flats, threshold)
        r["files"] = [str(got[s][e["name"]][1]) for s in bundle.samples]
        results.append(r)
    for r in results:
        for f in r["faults"]:
            faults.append(f"{f} in output {r['name']} (undoing it: {r['fixed_psnr']} dB)"
                          if r["fixed_psnr"] is not None else f"{f} in output {r['name']}")
    worst = min((r["psnr"] if r["psnr"] is not None else float("-inf")) for r in results)
    lowest = min(MIN_PSNR[p] for p in VERDICT_PRECISIONS)
    named = any(r["faults"] for r in results) or any(f.startswith(OTHER_ARTIFACT) for f in faults)
    if worst < lowest and not named:
        faults.append(f"{UNEXPLAINED}: worst PSNR {worst:.1f} dB")
    verdicts = {p: ("pass" if worst >= MIN_PSNR[p] else "fail") for p in dict.fromkeys((*VERDICT_PRECISIONS, precision))}
    verdict = "fail" if bundle.changed or worst < threshold or any(f.startswith(OTHER_ARTIFACT) for f in faults) \
        else "pass"
    res = {"schema": "defocus-parity-check/1", "bundle": str(bundle.root), "outputs": str(outputs),
           "device": device, "run": run, "artifact": art, "precision": precision, "threshold_db": threshold,
           "psnr_definition": "20*log10(max|ref| / RMS(out - ref)) (Qualcomm AI Hub)",
           "results": results, "worst_psnr_db": None if not math.isfinite(worst) else round(worst, 3),
           "verdicts": verdicts, "verdict": verdict, "faults": faults,
           "task": task_metric(bundle, got) if all(r["psnr"] is not None for r in results) else None}
    out = Path(out) if out is not None else Path(str(Path(outputs).resolve()) + ".check")
    with atomic_dir(out, replace=True, what="parity check", error=BundleError) as work:
        if heatmaps:
            for e, r in zip(bundle.outputs, results):
                if r["psnr"] is None:
                    continue
                i = int(np.argmin(r["psnr_per_sample"]))
                s = bundle.samples[i]
                png = f"heatmap_{e['name']}.png"
                _heatmap(work / png, e["name"], bundle.reference(s, e), got[s][e["name"]][0].reshape(e["shape"]),
                         f"{e['name']} sample {s}: {r['psnr']:.1f} dB, max |diff| {r['max_abs']:.3g}")
                r["heatmap"] = str(out / png)
        write_json(work / "check.json", res)
    res["report_dir"] = str(out)
    return res
