"""``calibrate fit``: fit the DP PSF models to every kernel of a kernels folder and build a bank.

For each capture and grid cell: the Butterworth model (seed 004, eq. 2-4) per view (separately)
and/or for the left/right pair with shared parameters (jointly), and the single-parameter
half-disk model (Punnappurath et al., ICCP 2020) for comparison, each scored by NCC. Then the
field dependence (per cell, and ``|r| = c0 + c2 rho^2`` over the normalised field radius rho), the
cells where the fit is poor, and the relation between signed radius and measured DP disparity
across the captures' focus settings. The bank (``calibration.psf_bank``, schema 2) tabulates the
field-median model over a radius range and carries the field grid and the vignetting maps.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from calibration.dp_psf import PSFParams
from calibration.kernel_stack import KernelSet, kernel_centre, magnify_kernel
from calibration.psf_bank import FieldGrid, PSFBank
from calibration.psf_fit import POOR_NCC, Fit, dp_disparity, fit_butterworth, fit_disk, line_fit, radial_fit
from core.errors import UserError

VIEWS = ("both", "separate", "joint")
MIN_FOCUS_SETTINGS = 2


class FitError(UserError):
    """A fit request that cannot be carried out (bad option, too few focus settings...)."""


def _cell_fit(left: np.ndarray, right: np.ndarray, views: str, disk: bool) -> dict:
    measured = {"left": left, "right": right}
    out: dict = {"disparity": dp_disparity(left, right)}
    if views in ("joint", "both"):
        out["joint"] = fit_butterworth(measured, "joint")
    if views in ("separate", "both"):  # "both": each view refined from the pair's joint fit
        init = out.get("joint")
        fl = fit_butterworth({"left": left}, "left", init=init)
        fr = fit_butterworth({"right": right}, "right", init=init)
        out["separate"] = {"left": fl, "right": fr}
    if disk:
        out["disk"] = fit_disk(measured, "joint")
        out["disk_separate"] = {v: fit_disk({v: measured[v]}, v) for v in ("left", "right")}
    if "separate" in out:  # per-kernel quality: each view with its own parameters
        fl, fr = out["separate"]["left"], out["separate"]["right"]
        out["ncc"] = [fl.ncc["left"], fr.ncc["right"]]
        radius = 0.5 * (fl.radius + fr.radius)
        params = {k: 0.5 * (fl.params[k] + fr.params[k]) for k in fl.params}
    if "joint" in out:  # one disk per cell: its radius and shape are the cell's
        j = out["joint"]
        if "separate" not in out:
            out["ncc"] = [j.ncc["left"], j.ncc["right"]]
        radius, params = j.radius, dict(j.params)
    out["radius"], out["params"] = float(radius), params
    return out


def fit_kernel_set(ks: KernelSet, views: str = "both", disk: bool = True, poor: float = POOR_NCC,
                   progress: Callable[[int, int], None] | None = None) -> dict:
    """Fit every kernel of every capture; returns a JSON-ready result with per-cell fits and the
    summary figures (see the module docstring)."""
    if views not in VIEWS:
        raise FitError(f"--views must be one of {', '.join(VIEWS)}, got {views!r}")
    rows, cols = ks.grid
    total = len(ks.captures) * rows * cols
    done = 0
    rho = ks.normalised_radius()
    captures = []
    for cap in ks.captures:
        cells = []
        for p in range(rows * cols):
            c = _cell_fit(cap.left[p].astype(np.float64), cap.right[p].astype(np.float64), views, disk)
            c.update(index=p, row=p // cols, col=p % cols, rho=float(rho[p]))
            cells.append(c)
            done += 1
            if progress:
                progress(done, total)
        captures.append({"name": cap.name, "focus": cap.focus, "cells": cells})
    return {"grid": [rows, cols], "patch": ks.patch, "views": views, "poor_threshold": poor,
            "captures": captures, "summary": summarise(captures, rho, poor, views, disk)}


def _fits(cell: dict, key: str) -> list[Fit]:
    v = cell.get(key)
    if v is None:
        return []
    return list(v.values()) if isinstance(v, dict) else [v]


def summarise(captures: list[dict], rho: np.ndarray, poor: float, views: str, disk: bool) -> dict:
    """Mean/min NCC per model, the poor cells, field dependence, radius-disparity relation."""
    cells = [c for cap in captures for c in cap["cells"]]
    ncc_bw = np.array([n for c in cells for n in c["ncc"]])
    s: dict = {"kernels": int(ncc_bw.size), "butterworth_ncc_mean": float(ncc_bw.mean()),
               "butterworth_ncc_min": float(ncc_bw.min())}
    if views in ("joint", "both"):
        joint = np.array([n for c in cells for n in c["joint"].ncc.values()])
        s.update(joint_ncc_mean=float(joint.mean()), joint_ncc_min=float(joint.min()))
    if disk:
        dj = np.array([n for c in cells for n in c["disk"].ncc.values()])
        ds = np.array([f.ncc[v] for c in cells for v, f in c["disk_separate"].items()])
        s.update(disk_ncc_mean=float(ds.mean()), disk_ncc_min=float(ds.min()), disk_joint_ncc_mean=float(dj.mean()))
    poor_cells = []
    for cap in captures:
        for c in cap["cells"]:
            worst = min(c["ncc"])
            if worst < poor:
                poor_cells.append({"capture": cap["name"], "row": c["row"], "col": c["col"], "ncc": round(worst, 4)})
    s["poor_cells"] = poor_cells
    # field dependence: |r| relative to each capture's median, against the field radius
    rel = []
    for cap in captures:
        r = np.array([abs(c["radius"]) for c in cap["cells"]])
        rel.append(r / max(float(np.median(r)), 1e-9))
    rel_mean = np.mean(rel, axis=0)
    s["field_radius_fit"] = radial_fit(rho, rel_mean)
    s["field_ncc_fit"] = radial_fit(rho, [np.mean([min(cap["cells"][p]["ncc"]) for cap in captures])
                                         for p in range(len(rho))])
    s["radius_disparity"] = radius_disparity(captures)
    return s


def radius_disparity(captures: list[dict]) -> dict:
    """Line ``disparity = slope * radius + intercept`` over every cell of every capture. Needs at
    least two distinct focus settings (one setting gives a cluster, not a line)."""
    settings = {str(cap["focus"] if cap["focus"] is not None else cap["name"]) for cap in captures}
    r = np.array([c["radius"] for cap in captures for c in cap["cells"]])
    d = np.array([c["disparity"] for cap in captures for c in cap["cells"]])
    out = {"focus_settings": len(settings), "points": [[round(float(a), 4), round(float(b), 4)] for a, b in zip(r, d)]}
    if len(settings) < MIN_FOCUS_SETTINGS or np.ptp(r) < 0.5:
        out["line"] = None
        out["reason"] = (f"{len(settings)} focus setting(s); the radius-disparity line needs at least "
                         f"{MIN_FOCUS_SETTINGS} with different blur")
        return out
    out["line"] = line_fit(r, d)
    return out


def build_bank(ks: KernelSet, result: dict, camera: str = "calibrated", max_radius: float = 40.0,
               step: float = 1.0, mode: str = "params") -> PSFBank:
    """The bank of a fit: the field-median Butterworth model on radii [-max_radius, max_radius],
    plus the field grid (per-cell parameters, radius gain, NCC; mode ``kernels`` also stores the
    reference capture's measured kernels, recentred on each pair's centroid) and vignetting."""
    if mode not in ("params", "kernels"):
        raise FitError(f"--field-mode must be params or kernels, got {mode!r}")
    if not max_radius > 0 or not step > 0:
        raise FitError(f"--max-radius and the radius step must be > 0, got {max_radius}, {step}")
    rows, cols = ks.grid
    caps = result["captures"]
    keys = ("order", "alpha", "beta", "kappa")
    per = np.array([[[c["params"][k] for k in keys] for c in cap["cells"]] for cap in caps])  # [C, P, 4]
    # n, alpha and beta trade off against each other (alpha hardly matters once D0 >> r), so
    # element-wise medians of fits can be a shape no fit had: pick whole parameter sets instead
    cell_params = []
    for p in range(rows * cols):
        uses = [(ks.captures[ci], caps[ci]["cells"][p]) for ci in range(len(caps))]
        cell_params.append(_consensus([per[ci, p] for ci in range(len(caps))], uses, p))
    params = np.array(cell_params).reshape(rows, cols, 4)
    # radius gain: sum over captures of the cell's |r| over the sum of the captures' medians, so
    # the most defocused captures (relative errors smallest) weigh most
    radii_abs = np.array([[abs(c["radius"]) for c in cap["cells"]] for cap in caps])  # [C, P]
    gain = (radii_abs.sum(axis=0) / max(float(np.median(radii_abs, axis=1).sum()), 1e-9)).reshape(rows, cols)
    ncc = np.array([[min(c["ncc"]) for c in cap["cells"]] for cap in caps]).mean(axis=0).reshape(rows, cols)
    spread = np.linspace(0, rows * cols - 1, min(rows * cols, 12)).round().astype(int)
    uses = [(ks.captures[ci], caps[ci]["cells"][p], p) for ci in range(len(caps)) for p in spread]
    med = _consensus(cell_params, [(c, cell) for c, cell, _ in uses], [p for _, _, p in uses])
    median_params = PSFParams(max(1, int(round(med[0]))), float(med[1]), float(med[2]), float(med[3]))
    radii = np.arange(-max_radius, max_radius + step / 2, step)
    bank = PSFBank.from_model(radii, [median_params], camera=camera)
    field = FieldGrid(params, gain, ncc, mode, meta={
        "crop": list(ks.crop) if ks.crop else None, "frame": list(ks.frame) if ks.frame else None,
        "patch": ks.patch, "source": "calibrate fit"})
    if mode == "kernels":
        ref = int(np.argmax([np.median([abs(c["radius"]) for c in cap["cells"]]) for cap in caps]))
        cap = ks.captures[ref]
        f = cap.left.shape[-1]
        left = np.zeros((rows, cols, f, f), np.float32)
        right = np.zeros_like(left)
        for p in range(rows * cols):
            centre = kernel_centre(cap.left[p] + cap.right[p])
            left[p // cols, p % cols] = magnify_kernel(cap.left[p], 1.0, f, centre)
            right[p // cols, p % cols] = magnify_kernel(cap.right[p], 1.0, f, centre)
        field.left, field.right = left, right
        field.ref_radius = np.array([c["radius"] for c in caps[ref]["cells"]]).reshape(rows, cols)
        field.meta["reference_capture"] = cap.name
    bank.field = field
    bank.vignetting = dict(ks.vignetting) if ks.vignetting else None
    s = result["summary"]
    bank.provenance = {"source": "calibrate fit", "kernels": ks.provenance, "views": result["views"],
                       "butterworth_ncc_mean": round(s["butterworth_ncc_mean"], 4),
                       "captures": [c["name"] for c in caps],
                       "radius_disparity": s["radius_disparity"].get("line")}
    return bank


def _consensus(candidates, uses, index) -> np.ndarray:
    """The candidate (order, alpha, beta, kappa) whose model, at each use's own fitted radius and
    centre, best matches the measured kernels (mean NCC over uses and views). ``uses``: (capture,
    fitted cell) pairs; ``index``: the kernel index, one for all uses or one per use."""
    from calibration.dp_psf import cross_correlation
    from calibration.psf_fit import butterworth_pair

    idx = index if isinstance(index, list) else [index] * len(uses)
    best, best_score = np.asarray(candidates[0], float), -np.inf
    seen = set()
    for cand in candidates:
        key = tuple(np.round(cand, 4))
        if key in seen:
            continue
        seen.add(key)
        n, a, b, k = cand
        scores = []
        for (cap, cell), p in zip(uses, idx):
            fit = cell.get("joint") or cell["separate"]["left"]
            size = cap.left.shape[-1]
            ml, mr = butterworth_pair(cell["radius"], n, a, b, k, tuple(fit.centre), size)
            scores += [cross_correlation(ml, cap.left[p]), cross_correlation(mr, cap.right[p])]
        if np.mean(scores) > best_score:
            best, best_score = np.asarray(cand, float), float(np.mean(scores))
    return best


def to_json(result: dict) -> dict:
    """The fit result with every :class:`Fit` as a dict (for fit.json)."""
    def conv(o):
        if isinstance(o, Fit):
            return o.to_dict()
        if isinstance(o, dict):
            return {k: conv(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [conv(v) for v in o]
        if isinstance(o, (np.floating, np.integer)):
            return o.item()
        if isinstance(o, float) and not math.isfinite(o):
            return None
        return o
    return conv(result)
