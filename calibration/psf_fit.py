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

from calibration.dp_psf import IN_FOCUS_RADIUS, cross_correlation

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


def disk_area(radius: float, size: int, centre: tuple[float, float] = (0.0, 0.0), sub: int = 4) -> np.ndarray:
    """Fraction of each pixel covered by the disk: ``sub`` sub-rows per pixel, each row's chord
    overlap with the pixel computed exactly. Smooth in r and the centre (the 4x4 point sampling
    of ``dp_psf.disk_coverage`` is piecewise constant, which stalls a simplex search) and ~10x
    faster; the two agree to the sampling error."""
    r = abs(radius)
    half = size // 2
    px = np.arange(size) - half
    sy = (np.arange(size * sub) + 0.5) / sub - 0.5 - half - centre[0]
    h = np.sqrt(np.clip(r * r - sy * sy, 0, None))[:, None]
    lo, hi = centre[1] - h, centre[1] + h
    cover = np.clip(np.minimum(hi, px + 0.5) - np.maximum(lo, px - 0.5), 0, 1)
    return cover.reshape(size, sub, size).mean(axis=1)


def butterworth_pair(radius: float, order: float, alpha: float, beta: float, kappa: float,
                     centre: tuple[float, float], size: int) -> tuple[np.ndarray, np.ndarray]:
    """Left/right Butterworth DP kernels (seed 004, eq. 2-4; each summing to 1 here) at a
    sub-pixel disk centre: the construction of ``dp_psf.dual_pixel_psf`` with :func:`disk_area`."""
    r = abs(radius)
    if r < IN_FOCUS_RADIUS:
        delta = np.zeros((size, size))
        delta[size // 2, size // 2] = 1.0
        return delta, delta.copy()
    cov = disk_area(r, size, centre)
    half = size // 2
    x = (np.arange(size) - half - centre[1])[None, :]
    y = (np.arange(size) - half - centre[0])[:, None]
    rho = np.maximum(np.hypot(x, y), 1e-12)
    with np.errstate(over="ignore"):
        b = 1.0 / (1.0 + (2.0 * r / alpha / rho) ** (2 * order))
    inside = cov > 0
    lo, hi = b[inside].min(), b[inside].max()
    scaled = np.ones_like(b) if hi - lo < 1e-12 else beta + (1 - beta) * (b - lo) / (hi - lo)
    hmap = scaled * cov
    if kappa * r > 0.1:
        hmap = ndimage.gaussian_filter(hmap, kappa * r, mode="constant", truncate=3.0)
    ramp = np.clip((x + r) / (2 * r), 0, 1)
    left, right = hmap * ramp, hmap * (1 - ramp)
    left, right = left / left.sum(), right / right.sum()
    return (left, right) if radius >= 0 else (right, left)


def disk_pair(radius: float, centre: tuple[float, float], size: int) -> tuple[np.ndarray, np.ndarray]:
    """Left/right half-disk kernels (single-parameter model after Punnappurath et al., ICCP 2020):
    for r > 0 the left view holds the right half of the CoC disk (the same side as the Butterworth
    model's ramp), for r < 0 the left half; each sums to 1."""
    r = abs(radius)
    cov = disk_area(r, size, centre)
    half = size // 2
    px = np.arange(size) - half - centre[1]
    right_frac = np.clip(px + 0.5, 0, 1)  # fraction of each column right of the disk's axis
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
        for scale in (0.7, 0.775, 0.85, 0.925, 1.0):
            out.append((sign * r0 * scale, centre))
    return out or [(r0, (cy, cx))]


def _crop(k: np.ndarray, size: int) -> np.ndarray:
    c, h = k.shape[0] // 2, size // 2
    return k[c - h:c + h + 1, c - h:c + h + 1]


def _window(size: int, guesses) -> int:
    """Working size of the fit: the kernel's support with room, at most the array (speed)."""
    need = max(abs(r) * 1.4 + max(abs(c[0]), abs(c[1])) for r, c in guesses) + 4
    return int(min(size, 2 * math.ceil(need) + 1))


def _search_setup(measured: dict[str, np.ndarray], which: str):
    """What both model fits search over: the kernel size, the views fitted, the starting guesses
    and the window around the support (with the measured kernels cut to it)."""
    size = next(iter(measured.values())).shape[0]
    names = ("left", "right")
    idx = _views(which)
    guesses = _initial_guesses(measured, which)
    win = _window(size, guesses)
    target = tuple(_crop(measured[names[i]], win) for i in idx)
    return size, names, idx, guesses, win, target, win // 2 - 1


def fit_butterworth(measured: dict[str, np.ndarray], which: str = "joint", maxiter: int = 500,
                    restarts: int = 2, starts_n: int = 3, init: Fit | None = None) -> Fit:
    """Fit the Butterworth DP model to ``measured`` ("left"/"right" kernels summing to 1) for one
    view (``which`` = "left"/"right") or both with shared parameters ("joint").

    Search on a window around the support (the array centre stays the centre): pick the best
    starting (signed radius, centre) at mid-range shape parameters, grid over n, alpha, beta
    there, Nelder-Mead on (r, alpha, beta, kappa, centre) at that n with one restart, then the
    integer orders around it. NCC is reported on the full array. With ``init`` (e.g. the joint
    fit of the pair, when fitting one view) the search starts there instead of the grid."""
    size, names, idx, guesses, win, target, margin = _search_setup(measured, which)
    evals = 0

    def render(r, n, a, b, k, cy, cx, at=win):
        pair = butterworth_pair(r, n, a, b, k, (cy, cx), at)
        return tuple(pair[i] for i in idx)

    def valid(r, a, b, k, cy, cx):
        return (abs(r) > IN_FOCUS_RADIUS + 0.05 and 0.05 < a < 3 and 0.0 < b <= 1 and 0 <= k < 0.6
                and abs(r) + max(abs(cy), abs(cx)) < margin)

    def score(r, n, a, b, k, cy, cx):
        nonlocal evals
        if not valid(r, a, b, k, cy, cx):
            return 2.0
        evals += 1
        return _score(render(r, n, a, b, k, cy, cx), target)

    if init is not None:
        guesses = [(init.radius, tuple(init.centre))]
        win = max(win, _window(size, guesses))
        target = tuple(_crop(measured[names[i]], win) for i in idx)
        margin = win // 2 - 1
    grid = []  # (score, r0, n, x) over the grid
    if init is None:
        first = min(guesses, key=lambda g: score(g[0], 6, 0.6, 0.2, KAPPA0, *g[1]))  # the sign
        for r0, (cy, cx) in [g for g in guesses if g[0] * first[0] > 0]:
            for n in N_GRID:
                for a in ALPHA_GRID:
                    for b in BETA_GRID:
                        grid.append((score(r0, n, a, b, KAPPA0, cy, cx), r0, n,
                                     np.array([r0, a, b, KAPPA0, cy, cx])))
    else:
        p = init.params
        x0 = np.array([init.radius, p["alpha"], p["beta"], p["kappa"], *init.centre])
        grid = [(score(init.radius, p["order"], *x0[1:]), init.radius, p["order"], x0)]
    grid.sort(key=lambda g: g[0])
    if not grid or grid[0][0] >= 2.0:
        raise ValueError(f"kernel of {size} px is too small to fit a PSF")
    starts, seen = [], set()
    for g in grid:  # the best grid point of each of the best starting radii
        if g[1] not in seen:
            seen.add(g[1])
            starts.append(g)
        if len(starts) == starts_n:
            break

    # Nelder-Mead on (r, alpha, beta, sigma = kappa |r|, cy, cx): the blur in px is nearly
    # independent of r, where kappa trades off against r; restarted while it improves
    def refine(n, x, fun):
        def nm_score(v):
            return score(v[0], n, v[1], v[2], v[3] / max(abs(v[0]), 1e-6), v[4], v[5])

        x = np.array([x[0], x[1], x[2], x[3] * abs(x[0]), x[4], x[5]])
        for _ in range(restarts + 1):
            step = np.array([0.05 * abs(x[0]) + 0.3, 0.1, 0.05, 0.3, 0.3, 0.3])
            res = optimize.minimize(nm_score, x, method="Nelder-Mead",
                                    options={"maxiter": maxiter, "xatol": 1e-4, "fatol": 1e-9,
                                             "initial_simplex": np.vstack([x, x + np.diag(step)])})
            gain = fun - res.fun
            if res.fun < fun:
                x, fun = res.x, res.fun
            if gain < 1e-6:
                break
        return fun, n, np.array([x[0], x[1], x[2], x[3] / max(abs(x[0]), 1e-6), x[4], x[5]])

    fun, n, x = min((refine(g[2], g[3], g[0]) for g in starts), key=lambda t: t[0])
    for n2 in range(max(1, n - 3), n + 4):
        sc = score(x[0], n2, *x[1:])
        if sc < fun:
            n, fun = n2, sc
    r, a, b, k, cy, cx = x
    models = render(r, n, a, b, k, cy, cx, at=size)
    ncc = {names[i]: cross_correlation(m, measured[names[i]]) for i, m in zip(idx, models)}
    params = {"order": int(n), "alpha": round(float(a), 4), "beta": round(float(b), 4),
              "kappa": round(float(k), 4)}
    return Fit("butterworth", float(r), (float(cy), float(cx)), params, ncc, evals)


def fit_disk(measured: dict[str, np.ndarray], which: str = "joint", maxiter: int = 300) -> Fit:
    """Fit the single-parameter half-disk model (radius + centre) the same way."""
    size, names, idx, guesses, win, target, margin = _search_setup(measured, which)
    evals = 0

    def objective(x):
        nonlocal evals
        r, cy, cx = x
        if abs(r) <= IN_FOCUS_RADIUS or abs(r) + max(abs(cy), abs(cx)) >= margin:
            return 2.0
        evals += 1
        pair = disk_pair(r, (cy, cx), win)
        return _score(tuple(pair[i] for i in idx), target)

    starts = [np.array([r0 * scale, cy, cx]) for r0, (cy, cx) in guesses
              for scale in (0.9, 1.05, 1.25)]
    starts.sort(key=objective)
    best = None
    for x0 in starts[:2]:  # refine the two best starting points
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
