"""``calibrate estimate``: left/right PSFs over the field from captures of the chart.

Per capture (a left/right pair of images: ``NAME_L.png``/``NAME_R.png`` as DPDD stores views,
or ``NAME_left.*``/``NAME_right.*`` as Pixel DP captures are named; 8- or 16-bit, grey or colour):
1. saturated pixels (>= 98 % of full scale) are masked; a capture with too many is refused;
2. vignetting: with white-sheet captures, per-view gain maps (the white view box-averaged
   101 x 101, divided by its maximum) flat-field each view;
3. the chart's ArUco markers are found on the mean of the views and the chart -> capture
   homography fitted (RANSAC) on their corners; the sharp chart is warped into the capture
   (integrated over each capture pixel);
4. on a rows x cols grid of square patches over the noise field, each view's PSF is solved by
   regularised least squares: a Fourier-domain Tikhonov solution (gradient penalty) as the
   start, then projected accelerated gradient (FISTA) on the exact "valid" convolution model
   with the saturated pixels masked, non-negativity enforced, and the result normalised to 1;
5. per patch: the relative residual, the saturated fraction, the chart texture, and a
   confidence combining them.
The relation between signed radius and disparity needs captures at two or more focus settings
(``captures.json`` beside the captures may map each capture name to its focus setting; without
it every capture counts as its own setting).
"""
from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import scipy.fft
from scipy import ndimage

from calibration.chart import Chart, load_chart
from calibration.kernel_stack import Capture, KernelSet
from core.errors import UserError

SATURATION_LEVEL = 0.98
MAX_SATURATED = 0.02
MIN_MARKERS = 3
VIGNETTING_BOX = 101
IMAGE_SUFFIXES = (".png", ".pgm", ".tif", ".tiff", ".jpg", ".jpeg")
_PAIR = re.compile(r"^(?P<name>.+?)[_-](?P<view>L|R|left|right)$", re.IGNORECASE)


class EstimateError(UserError):
    """Captures the estimation cannot use (missing, unpaired, saturated, chart not found...)."""


# ------------------------------------------------------------------------------- reading


def read_view(path: Path) -> tuple[np.ndarray, float]:
    """(grey float image in [0, 1], full-scale fraction saturated) of an 8/16-bit image file."""
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise EstimateError(f"{path}: not a readable image")
    if img.dtype == np.uint8:
        full = 255.0
    elif img.dtype == np.uint16:
        full = 65535.0
    elif np.issubdtype(img.dtype, np.floating):
        full = 1.0
    else:
        raise EstimateError(f"{path}: unsupported pixel type {img.dtype}")
    img = img.astype(np.float32) / full
    if img.ndim == 3:
        img = img[..., :3].mean(axis=2)  # BGR order does not matter for the mean
    return img, full


def find_pairs(folder: Path) -> dict[str, tuple[Path, Path]]:
    """name -> (left, right) image paths in ``folder``."""
    if not folder.is_dir():
        raise EstimateError(f"{folder}: captures folder not found")
    found: dict[str, dict[str, Path]] = {}
    for p in sorted(folder.iterdir()):
        if p.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        m = _PAIR.match(p.stem)
        if m:
            view = "left" if m.group("view").lower() in ("l", "left") else "right"
            found.setdefault(m.group("name"), {})[view] = p
    pairs = {}
    for name, views in found.items():
        if set(views) != {"left", "right"}:
            missing = ({"left", "right"} - set(views)).pop()
            raise EstimateError(f"{folder}: capture {name!r} has no {missing} view "
                                f"(expected {name}_L/{name}_R or {name}_left/{name}_right)")
        pairs[name] = (views["left"], views["right"])
    if not pairs:
        raise EstimateError(f"{folder}: no capture pairs (NAME_L.png + NAME_R.png, or NAME_left.* + NAME_right.*)")
    return pairs


def focus_settings(folder: Path, names: list[str]) -> dict[str, float | str]:
    """Focus setting per capture from ``captures.json`` ({name: focus}) or the name itself."""
    path = folder / "captures.json"
    if not path.is_file():
        return {n: n for n in names}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise EstimateError(f"{path}: not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise EstimateError(f"{path}: expected an object mapping capture names to focus settings")
    missing = [n for n in names if n not in data]
    if missing:
        raise EstimateError(f"{path}: no focus setting for capture(s) {', '.join(missing)}")
    return {n: data[n] for n in names}


# ------------------------------------------------------------------------------- geometry


def detect_markers(image: np.ndarray, chart: Chart, source: str) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """(capture points, chart points, ids found) of the chart's marker corners in ``image``."""
    lo, hi = np.percentile(image, (0.5, 99.5))
    img8 = np.clip((image - lo) / max(hi - lo, 1e-6) * 255, 0, 255).astype(np.uint8)
    d = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, chart.geometry["dictionary"]))
    params = cv2.aruco.DetectorParameters()
    params.cornerRefinementMethod = cv2.aruco.CORNER_REFINE_SUBPIX
    corners, ids, _ = cv2.aruco.ArucoDetector(d, params).detectMarkers(img8)
    known = {m["id"]: np.asarray(m["corners"], np.float64) - 0.5 for m in chart.geometry["markers"]}
    cap_pts, chart_pts, found = [], [], []
    if ids is not None:
        for c, i in zip(corners, ids.ravel()):
            if int(i) in known and int(i) not in found:
                cap_pts.append(c.reshape(4, 2))
                chart_pts.append(known[int(i)])
                found.append(int(i))
    if not found:
        raise EstimateError(f"{source}: chart not found (no ArUco markers of {chart.geometry['dictionary']}); "
                            "is the whole chart in view and in reasonable focus?")
    if len(found) < MIN_MARKERS:
        raise EstimateError(f"{source}: too few chart markers: found {len(found)} (ids {sorted(found)}) of "
                            f"{len(known)}, need {MIN_MARKERS}")
    return np.concatenate(cap_pts), np.concatenate(chart_pts), sorted(found)


def fit_homography(cap_pts: np.ndarray, chart_pts: np.ndarray, source: str) -> np.ndarray:
    """Chart -> capture homography (pixel-centre coordinates) by RANSAC on the marker corners."""
    H, inliers = cv2.findHomography(chart_pts, cap_pts, cv2.RANSAC, 3.0)
    if H is None or inliers.sum() < 8:
        raise EstimateError(f"{source}: the chart markers do not agree on a homography")
    return H


def warp_chart(chart: np.ndarray, H: np.ndarray, shape: tuple[int, int], factor: int = 2) -> np.ndarray:
    """The chart as the capture sees it, integrated over each capture pixel: warped (bilinear)
    onto a grid ``factor`` x finer than the capture, then area-averaged; a chart finer than that
    grid is area-averaged down to it first (no aliasing)."""
    h, w = chart.shape
    S = np.array([[factor, 0, 0.5 * factor - 0.5], [0, factor, 0.5 * factor - 0.5], [0, 0, 1]])
    Hf = S @ H  # chart -> fine capture grid
    x, y, z = Hf @ np.array([w / 2, h / 2, 1.0])
    jac = (Hf[:2, :2] * z - np.outer([x, y], Hf[2, :2])) / (z * z)  # local scale at the chart centre
    scale = math.sqrt(abs(np.linalg.det(jac)))
    if scale < 0.9:
        nw, nh = max(1, int(round(w * scale))), max(1, int(round(h * scale)))
        small = cv2.resize(chart, (nw, nh), interpolation=cv2.INTER_AREA)
        sx, sy = nw / w, nh / h
        T = np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1]])  # u' = (u + .5) s - .5
        Hf = Hf @ np.linalg.inv(T)
        chart = small
    fine = cv2.warpPerspective(chart.astype(np.float32), Hf, (shape[1] * factor, shape[0] * factor),
                               flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=1.0)
    return cv2.resize(fine, (shape[1], shape[0]), interpolation=cv2.INTER_AREA)


def grid_region(H: np.ndarray, chart: Chart, shape: tuple[int, int], grid: tuple[int, int],
                margin: int) -> tuple[int, int, int, int, int]:
    """(y, x, h, w, patch) of a rows x cols grid of square patches inside the chart's noise
    field as seen in the capture, ``margin`` px inside its edges."""
    x0, y0, x1, y1 = chart.noise_rect
    pts = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float64).reshape(-1, 1, 2) - 0.5
    q = cv2.perspectiveTransform(pts, H).reshape(4, 2)
    left, right = max(q[0, 0], q[3, 0]), min(q[1, 0], q[2, 0])
    top, bottom = max(q[0, 1], q[1, 1]), min(q[2, 1], q[3, 1])
    left, top = max(left, 0) + margin, max(top, 0) + margin
    right, bottom = min(right, shape[1] - 1) - margin, min(bottom, shape[0] - 1) - margin
    rows, cols = grid
    patch = int(min((bottom - top) / rows, (right - left) / cols))
    if patch < 16:
        raise EstimateError(f"the chart's noise field covers too little of the capture for a {rows}x{cols} grid "
                            f"(patches would be {patch} px); use a smaller --grid or fill the frame with the chart")
    h, w = rows * patch, cols * patch
    y = int(round((top + bottom - h) / 2))
    x = int(round((left + right - w) / 2))
    return y, x, h, w, patch


# ------------------------------------------------------------------------------- PSF solve


def _grad_penalty_spectrum(shape: tuple[int, int]) -> np.ndarray:
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.rfftfreq(shape[1])[None, :]
    return (2 - 2 * np.cos(2 * np.pi * fy)) + (2 - 2 * np.cos(2 * np.pi * fx))


def solve_psf(sharp: np.ndarray, blurred: np.ndarray, size: int, mask: np.ndarray | None = None,
              reg: float = 1e-3, iterations: int = 100) -> tuple[np.ndarray, float]:
    """PSF ``k`` (size x size, >= 0, sums to 1) with ``valid(sharp * k) ~ blurred`` (``sharp`` is
    the blurred patch grown by size // 2 on each side). Both are made zero-mean (unknown black
    level and gain); ``reg`` weighs the squared gradient of ``k`` relative to the chart's power.
    Returns (kernel, relative residual over unmasked pixels)."""
    half = size // 2
    P = blurred.shape
    if sharp.shape != (P[0] + 2 * half, P[1] + 2 * half):
        raise ValueError(f"sharp patch {sharp.shape} must be the blurred patch {P} grown by {half}")
    m = np.ones(P) if mask is None else mask.astype(np.float64)
    S = sharp.astype(np.float64) - sharp.mean()
    B = blurred.astype(np.float64)
    B = (B - (B * m).sum() / max(m.sum(), 1)) * m
    # 1. Fourier-domain Tikhonov start: the blurred patch against the sharp patch's centre, both
    #    tapered (Hann) so the periodic transform sees no edges
    win = np.outer(np.hanning(P[0]), np.hanning(P[1]))
    Sc = S[half:half + P[0], half:half + P[1]] * win
    Bw = B * win
    fs, fb = np.fft.rfft2(Sc), np.fft.rfft2(Bw)
    power = float(np.mean(np.abs(fs) ** 2))
    K = np.conj(fs) * fb / (np.abs(fs) ** 2 + reg * power * _grad_penalty_spectrum(P) + 1e-3 * power)
    k_full = np.fft.fftshift(np.fft.irfft2(K, s=P))
    cy, cx = P[0] // 2, P[1] // 2
    k = np.clip(k_full[cy - half:cy + half + 1, cx - half:cx + half + 1], 0, None)
    if k.sum() <= 0:
        k = np.full((size, size), 1.0 / size ** 2)
    # 2. projected FISTA on the exact model, masked, with the gradient penalty. The "valid"
    #    convolution and its adjoint (a correlation) are exact as circular ones of the sharp
    #    patch's size M = P + size - 1: the wrap-around never reaches the valid rows.
    M = S.shape
    N = (scipy.fft.next_fast_len(M[0], real=True), scipy.fft.next_fast_len(M[1], real=True))
    FS = scipy.fft.rfft2(S, N)
    vy, vx = slice(size - 1, size - 1 + P[0]), slice(size - 1, size - 1 + P[1])

    def A(k_):
        return scipy.fft.irfft2(FS * scipy.fft.rfft2(k_, N), N)[vy, vx] * m

    def At(r_):
        corr = scipy.fft.irfft2(FS * np.conj(scipy.fft.rfft2(r_, N)), N)  # corr[v] = sum_p S[p + v] r[p]
        return corr[size - 1::-1, size - 1::-1]

    lam = reg * float((S * S).mean()) * m.sum()

    def grad_pen(k_):
        return lam * ndimage.laplace(k_, mode="constant") * -1.0

    v = np.random.default_rng(0).standard_normal((size, size))  # Lipschitz constant, power iteration
    for _ in range(10):
        v = At(A(v)) + grad_pen(v)
        v /= np.linalg.norm(v)
    L = float(np.linalg.norm(At(A(v)) + grad_pen(v))) * 1.1
    Ak = A(k)
    k = k * ((B * Ak).sum() / max((Ak ** 2).sum(), 1e-30))  # best scale of the start
    y, t = k.copy(), 1.0
    for _ in range(iterations):
        g = At(A(y) - B) + grad_pen(y)
        k_new = np.clip(y - g / L, 0, None)
        change = np.linalg.norm(k_new - k) / max(np.linalg.norm(k_new), 1e-30)
        t_new = (1 + math.sqrt(1 + 4 * t * t)) / 2
        y = k_new + ((t - 1) / t_new) * (k_new - k)
        k, t = k_new, t_new
        if change < 1e-5:
            break
    res = float(np.linalg.norm(A(k) - B) / max(np.linalg.norm(B), 1e-30))
    total = k.sum()
    if total <= 0:
        raise EstimateError("the PSF solve found no signal (patch without chart texture?)")
    return k / total, res


# ------------------------------------------------------------------------------- the command


def vignetting_maps(white_dir: Path, shape: tuple[int, int]) -> dict[str, np.ndarray]:
    """Per-view gain maps from white-sheet captures (mean over all white pairs): box-averaged
    101 x 101, divided by the maximum of the two views' mean (so left/right keep their ratio)."""
    pairs = find_pairs(white_dir)
    acc = {"left": np.zeros(shape), "right": np.zeros(shape)}
    for name, (lp, rp) in pairs.items():
        for view, p in (("left", lp), ("right", rp)):
            img, _ = read_view(p)
            if img.shape != shape:
                raise EstimateError(f"{p}: white capture is {img.shape[1]}x{img.shape[0]}, the captures are "
                                    f"{shape[1]}x{shape[0]}")
            sat = float((img >= SATURATION_LEVEL).mean())
            if sat > MAX_SATURATED:
                raise EstimateError(f"{p}: saturated white capture ({sat:.1%} of pixels at full scale); "
                                    "lower the exposure")
            acc[view] += cv2.blur(img.astype(np.float64), (VIGNETTING_BOX, VIGNETTING_BOX),
                                  borderType=cv2.BORDER_REFLECT)
    peak = max(float((0.5 * (acc["left"] + acc["right"])).max()), 1e-12)
    return {v: np.clip(a / peak, 0.05, None).astype(np.float32) for v, a in acc.items()}


def estimate(captures_dir: str | Path, chart_path: str | Path, grid: tuple[int, int] = (6, 8),
             kernel_size: int = 41, white_dir: str | Path | None = None, reg: float = 1e-3,
             iterations: int = 100, min_focus_settings: int = 2, max_saturated: float = MAX_SATURATED,
             progress: Callable[[int, int], None] | None = None) -> KernelSet:
    """Estimate the left/right PSF of every grid patch of every capture (see the module docstring)."""
    captures_dir = Path(captures_dir)
    chart = load_chart(chart_path)
    if kernel_size < 3 or kernel_size % 2 == 0:
        raise EstimateError(f"--kernel-size must be odd and >= 3, got {kernel_size}")
    if grid[0] < 1 or grid[1] < 1:
        raise EstimateError(f"--grid must be at least 1x1, got {grid[0]}x{grid[1]}")
    pairs = find_pairs(captures_dir)
    focus = focus_settings(captures_dir, list(pairs))
    n_settings = len({str(f) for f in focus.values()})
    if n_settings < min_focus_settings:
        raise EstimateError(f"{captures_dir}: {n_settings} focus setting(s) among the captures, the radius-disparity "
                            f"line needs at least {min_focus_settings} (capture the chart at several focus "
                            "settings; name them in captures.json, or pass --min-focus-settings 1)")
    half = kernel_size // 2
    vig = None
    shape = None
    captures = []
    total = None
    done = 0
    region = None
    seconds, per_capture = [], {}
    cpu = []
    for name, (lp, rp) in pairs.items():
        t0, c0 = time.perf_counter(), time.process_time()
        left, _ = read_view(lp)
        right, _ = read_view(rp)
        if left.shape != right.shape:
            raise EstimateError(f"{lp} ({left.shape[1]}x{left.shape[0]}) and {rp} ({right.shape[1]}x{right.shape[0]}): "
                                "the views of a capture differ in size")
        if shape is None:
            shape = left.shape
            if white_dir is not None:
                vig = vignetting_maps(Path(white_dir), shape)
        elif left.shape != shape:
            raise EstimateError(f"{lp}: capture is {left.shape[1]}x{left.shape[0]}, the first was {shape[1]}x{shape[0]}")
        sat_l, sat_r = left >= SATURATION_LEVEL, right >= SATURATION_LEVEL
        mean = 0.5 * (left + right)
        try:
            cap_pts, chart_pts, ids = detect_markers(mean, chart, f"{lp}")
        except EstimateError:
            frame_sat = float(np.mean(sat_l | sat_r))
            if frame_sat > max_saturated:  # clipping is the likelier cause: say so
                raise EstimateError(f"{lp}: saturated capture ({frame_sat:.1%} of the frame at full scale) and the "
                                    "chart's markers are not found; lower the exposure") from None
            raise
        H = fit_homography(cap_pts, chart_pts, f"{lp}")
        sharp = warp_chart(chart.image, H, shape)
        y, x, h, w, patch = grid_region(H, chart, shape, grid, half + 2)
        if region is None:
            region = (y, x, h, w, patch)
            total = len(pairs) * grid[0] * grid[1]
        saturated = float(np.mean(sat_l[y:y + h, x:x + w] | sat_r[y:y + h, x:x + w]))
        if saturated > max_saturated:
            raise EstimateError(f"{lp}: saturated capture ({saturated:.1%} of the chart's pixels at full scale, "
                                f"at most {max_saturated:.0%} allowed); lower the exposure or the screen brightness")
        if vig is not None:
            left, right = left / vig["left"], right / vig["right"]
        # the grid is placed once (first capture); later captures use the same field positions
        y, x, h, w, patch = region
        kl, kr, diag = [], [], {"confidence": [], "residual": [], "saturation": [], "texture": []}
        for i in range(grid[0]):
            for j in range(grid[1]):
                py, px = y + i * patch, x + j * patch
                sl = (slice(py, py + patch), slice(px, px + patch))
                ext = (slice(py - half, py + patch + half), slice(px - half, px + patch + half))
                S = sharp[ext]
                texture = float(S.std())
                res = []
                for view, img, sat, out in (("left", left, sat_l, kl), ("right", right, sat_r, kr)):
                    mask = ~sat[sl]
                    k, r = solve_psf(S, img[sl], kernel_size, mask, reg, iterations)
                    out.append(k.astype(np.float32))
                    res.append(r)
                sat_frac = float(np.mean(sat_l[sl] | sat_r[sl]))
                residual = max(res)
                conf = max(0.0, 1 - residual) * (1 - sat_frac) * min(1.0, texture / 0.25)
                for key, v in (("confidence", conf), ("residual", residual), ("saturation", sat_frac),
                               ("texture", texture)):
                    diag[key].append(round(v, 5))
                done += 1
                if progress:
                    progress(done, total)
        captures.append(Capture(name, np.stack(kl), np.stack(kr), focus[name], diag))
        seconds.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        per_capture[name] = {"markers": ids, "saturated": round(saturated, 6), "homography": H.tolist()}
    y, x, h, w, patch = region
    prov = {"source": "estimate", "captures": str(captures_dir), "chart": str(chart_path),
            "white": str(white_dir) if white_dir else None, "kernel_size": kernel_size, "reg": reg,
            "iterations": iterations, "seconds_per_capture": [round(s, 3) for s in seconds],
            "cpu_seconds_per_capture": [round(s, 3) for s in cpu],
            "per_capture": per_capture}
    return KernelSet(grid, patch, captures, (y, x, h, w), tuple(shape), vig, prov)
