"""Fit parametric DP PSF models to measured kernels (``calibrate fit``).

Two models, scored the way seed 004 scores PSF models (normalised 2-D cross-correlation, NCC):
- the five-parameter Butterworth DP model of seed 004 (eq. 2-4: signed radius r, order n,
  cut-off alpha, centre depth beta, smoothing kappa) plus a sub-pixel disk centre;
- the single-parameter model of Punnappurath et al. (ICCP 2020), as we read it: each view is
  the CoC disk of radius |r| cut in half by the vertical line through its centre (the half
  on the side the view sees; a translating half-disk as r changes sign), plus the same centre.

Fit = grid search (n in {3, 6, 9}, alpha, beta from the seed's ranges, r around the kernel's
second-moment size, both signs) then scipy's Nelder-Mead on the continuous parameters,
minimising 1 - NCC. Left and right are fitted separately (each view its own parameters) or
jointly (one parameter set, left/right by the model's mirror symmetry).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage, optimize

from calibration.dp_psf import IN_FOCUS_RADIUS, PSFParams, cross_correlation, disk_coverage, dual_pixel_psf

N_GRID = (3, 6, 9)
ALPHA_GRID = (0.4, 0.6, 0.8, 1.0)
BETA_GRID = (0.1, 0.2, 0.3, 0.4)
KAPPA0 = 0.14
POOR_NCC = 0.9  # below this a cell's fit is reported as poor


@dataclass
class Fit:
    """One fitted kernel (or left/right pair): model name, parameters, NCC per view."""

    model: str  # "butterworth" or "disk"
    radius: float  # signed, px
    centre: tuple[float, float]  # disk centre (dy, dx) from the array centre, px
    params: dict = field(default_factory=dict)  # butterworth: order, alpha, beta, kappa
    ncc: dict = field(default_factory=dict)  # "left"/"right" -> NCC
    evaluations: int = 0

    def to_dict(self) -> dict:
        return {"model": self.model, "radius": round(self.radius, 4),
                "centre": [round(c, 4) for c in self.centre], "params": self.params,
                "ncc": {k: round(v, 5) for k, v in self.ncc.items()}}


def butterworth_pair(radius: float, order: float, alpha: float, beta: float, kappa: float,
                     centre: tuple[float, float], size: int) -> tuple[np.ndarray, np.ndarray]:
    """Left/right Butterworth DP kernels (each summing to 1) at a sub-pixel disk centre."""
    left, right = dual_pixel_psf(radius, PSFParams(max(1, int(round(order))), alpha, beta, kappa), size,
                                 offset=centre)
    return 2 * left, 2 * right


def disk_pair(radius: float, centre: tuple[float, float], size: int) -> tuple[np.ndarray, np.ndarray]:
    """Left/right half-disk kernels (single-parameter model after Punnappurath et al., ICCP 2020):
    for r > 0 the left view holds the right half of the CoC disk (the same side as the Butterworth
    model's ramp), for r < 0 the left half; each sums to 1."""
    r = abs(radius)
    cov = disk_coverage(r, size, centre)
    q = 4
    half = size // 2
    xs = (np.arange(size * q) + 0.5) / q - 0.5 - half - centre[1]
    right_frac = (xs >= 0).reshape(size, q).mean(axis=1)  # fraction of each column right of the axis
    on_right = cov * right_frac[None, :]
    on_left = cov * (1 - right_frac)[None, :]
    a, b = (on_right, on_left) if radius >= 0 else (on_left, on_right)
    return a / max(a.sum(), 1e-12), b / max(b.sum(), 1e-12)


def moments(kernel: np.ndarray) -> tuple[float, float, float]:
    """(cy, cx, sy) of a kernel relative to the array centre: centroid and vertical std."""
    k = np.clip(np.asarray(kernel, np.float64), 0, None)
    cy, cx = ndimage.center_of_mass(k)
    c = k.shape[0] // 2
    yy = np.arange(k.shape[0])[:, None] - cy
    sy = math.sqrt(max(float((k * yy * yy).sum() / k.sum()), 1e-6))
    return cy - c, cx - c, sy


def _score(models: tuple[np.ndarray, ...], measured: tuple[np.ndarray, ...]) -> float:
    return 1.0 - float(np.mean([cross_correlation(m, k) for m, k in zip(models, measured)]))


def _views(which: str) -> tuple[int, ...]:
    return {"left": (0,), "right": (1,), "joint": (0, 1)}[which]


def _initial_guesses(measured: dict[str, np.ndarray], which: str) -> list[tuple[float, tuple[float, float]]]:
    """(signed radius, centre) starting points from the kernel moments: for a disk the vertical
    std is r/2 (the ramp is horizontal, so it does not change it); the half views' centroids sit
    about 0.42 r (4r/3pi) to the side of the disk centre, the side given by the sign."""
    ks = [measured[v] for v in ("left", "right") if v in measured]
    cy, cx, sy = moments(sum(ks))
    r0 = max(2.0 * sy, IN_FOCUS_RADIUS + 0.2)
    out = []
    for sign in (1.0, -1.0):
        if which == "joint":
            # left centroid right of right's for r > 0: the data choose the sign
            lx = moments(measured["left"])[1]
            rx = moments(measured["right"])[1]
            if (lx - rx) * sign < 0:
                continue
            centre = (cy, cx)
        else:
            view_sign = sign if which == "left" else -sign  # right view mirrors the left
            centre = (cy, cx - view_sign * 4 * r0 / (3 * math.pi))
        for scale in (0.85, 1.0):
            out.append((sign * r0 * scale, centre))
    return out or [(r0, (cy, cx))]


def fit_butterworth(measured: dict[str, np.ndarray], which: str = "joint", maxiter: int = 600) -> Fit:
    """Fit the Butterworth DP model to ``measured`` ("left"/"right" kernels summing to 1) for one
    view (``which`` = "left"/"right") or both with shared parameters ("joint")."""
    size = next(iter(measured.values())).shape[0]
    names = ("left", "right")
    idx = _views(which)
    target = tuple(measured[names[i]] for i in idx)
    evals = 0
    margin = size // 2 - 1

    def render(r, n, a, b, k, cy, cx):
        pair = butterworth_pair(r, n, a, b, k, (cy, cx), size)
        return tuple(pair[i] for i in idx)

    def valid(r, a, b, k, cy, cx):
        return (abs(r) > IN_FOCUS_RADIUS + 0.05 and 0.05 < a < 3 and 0.0 < b <= 1 and 0 <= k < 0.6
                and abs(r) + max(abs(cy), abs(cx)) < margin)

    best = (math.inf, None)
    for r0, (cy, cx) in _initial_guesses(measured, which):
        for n in N_GRID:
            for a in ALPHA_GRID:
                for b in BETA_GRID:
                    if not valid(r0, a, b, KAPPA0, cy, cx):
                        continue
                    s = _score(render(r0, n, a, b, KAPPA0, cy, cx), target)
                    evals += 1
                    if s < best[0]:
                        best = (s, (r0, n, a, b, KAPPA0, cy, cx))
    if best[1] is None:
        raise ValueError(f"kernel of {size} px is too small to fit a PSF")
    r0, n, a, b, k, cy, cx = best[1]

    def objective(x):
        nonlocal evals
        r, a_, b_, k_, cy_, cx_ = x
        if not valid(r, a_, b_, k_, cy_, cx_):
            return 2.0
        evals += 1
        return _score(render(r, n, a_, b_, k_, cy_, cx_), target)

    x0 = np.array([r0, a, b, k, cy, cx])
    step = np.array([0.1 * abs(r0) + 0.3, 0.1, 0.05, 0.04, 0.3, 0.3])
    res = optimize.minimize(objective, x0, method="Nelder-Mead",
                            options={"maxiter": maxiter, "xatol": 1e-3, "fatol": 1e-6,
                                     "initial_simplex": np.vstack([x0, x0 + np.diag(step)])})
    x = res.x if res.fun <= best[0] else x0
    # order: the neighbours of the grid's choice, at the refined shape
    r, a, b, k, cy, cx = x
    best_n, best_s = n, _score(render(r, n, a, b, k, cy, cx), target)
    for n2 in (n - 1.5, n + 1.5):
        if n2 >= 1:
            s = _score(render(r, n2, a, b, k, cy, cx), target)
            if s < best_s:
                best_n, best_s = n2, s
    n = best_n
    models = render(r, n, a, b, k, cy, cx)
    ncc = {names[i]: cross_correlation(m, measured[names[i]]) for i, m in zip(idx, models)}
    params = {"order": int(round(n)), "alpha": round(float(a), 4), "beta": round(float(b), 4),
              "kappa": round(float(k), 4)}
    return Fit("butterworth", float(r), (float(cy), float(cx)), params, ncc, evals)


def fit_disk(measured: dict[str, np.ndarray], which: str = "joint", maxiter: int = 300) -> Fit:
    """Fit the single-parameter half-disk model (radius + centre) the same way."""
    size = next(iter(measured.values())).shape[0]
    names = ("left", "right")
    idx = _views(which)
    target = tuple(measured[names[i]] for i in idx)
    margin = size // 2 - 1
    evals = 0

    def objective(x):
        nonlocal evals
        r, cy, cx = x
        if abs(r) <= IN_FOCUS_RADIUS or abs(r) + max(abs(cy), abs(cx)) >= margin:
            return 2.0
        evals += 1
        pair = disk_pair(r, (cy, cx), size)
        return _score(tuple(pair[i] for i in idx), target)

    best = None
    for r0, (cy, cx) in _initial_guesses(measured, which):
        for scale in (0.9, 1.0, 1.15):
            x0 = np.array([r0 * scale, cy, cx])
            res = optimize.minimize(objective, x0, method="Nelder-Mead",
                                    options={"maxiter": maxiter, "xatol": 1e-3, "fatol": 1e-6,
                                             "initial_simplex": np.vstack([x0, x0 + np.diag([0.5, 0.5, 0.5])])})
            if best is None or res.fun < best.fun:
                best = res
    r, cy, cx = best.x
    pair = disk_pair(r, (cy, cx), size)
    ncc = {names[i]: cross_correlation(pair[i], measured[names[i]]) for i in idx}
    return Fit("disk", float(r), (float(cy), float(cx)), {}, ncc, evals)


def model_kernels(fit: Fit, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The fitted model's left/right kernels (each summing to 1) on a ``size`` array."""
    if fit.model == "disk":
        return disk_pair(fit.radius, fit.centre, size)
    p = fit.params
    return butterworth_pair(fit.radius, p["order"], p["alpha"], p["beta"], p["kappa"], fit.centre, size)


def dp_disparity(left: np.ndarray, right: np.ndarray) -> float:
    """Measured DP disparity of a kernel pair: centroid(left) - centroid(right), px."""
    return float(moments(left)[1] - moments(right)[1])


def radial_fit(rho: np.ndarray, values: np.ndarray) -> dict:
    """Least-squares ``v = c0 + c2 rho^2`` over the field (rho: 0 at the centre, 1 in a corner):
    the field dependence of a fitted quantity; returns the coefficients and the RMS residual."""
    rho, values = np.asarray(rho, float), np.asarray(values, float)
    A = np.stack([np.ones_like(rho), rho * rho], 1)
    coef, *_ = np.linalg.lstsq(A, values, rcond=None)
    rms = float(np.sqrt(np.mean((A @ coef - values) ** 2)))
    return {"c0": float(coef[0]), "c2": float(coef[1]), "rms": rms}


def line_fit(x: np.ndarray, y: np.ndarray) -> dict:
    """``y = slope x + intercept`` by least squares, with the RMS residual and R^2."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    A = np.stack([x, np.ones_like(x)], 1)
    coef, *_ = np.linalg.lstsq(A, y, rcond=None)
    pred = A @ coef
    ss = float(((y - y.mean()) ** 2).sum())
    return {"slope": float(coef[0]), "intercept": float(coef[1]),
            "rms": float(np.sqrt(np.mean((pred - y) ** 2))),
            "r2": float(1 - ((pred - y) ** 2).sum() / ss) if ss > 0 else 1.0}
