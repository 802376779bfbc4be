"""UW -> W alignment (CAPTURES.md "Aligning UW to W").

1. Pre-align: a 3x3 matrix ``M`` from W pixel coordinates to UW pixel coordinates, from the
   focal lengths (``prealign_from_focal``: a centred scale) or, when they are unknown, from a
   homography fitted to ORB/SIFT matches (``prealign_from_features``). UW resampled through
   ``M`` onto W's grid leaves only the parallax for the flow.
2. Colour: before the flow, per-channel gain + offset that give UW W's mean and standard deviation
   (``match_moments``; a least-squares fit there is biased by the parallax and halved UW's
   contrast); after the flow, a least-squares fit on the non-occluded matched pixels.
3. Flow W -> pre-aligned UW, one of:
   - no depth: DIS optical flow W -> UW and back (``cv2.DISOpticalFlow``, preset ultrafast /
     fast / medium), 8-bit grey inputs;
   - with W's disparity (inverse depth, e.g. an iPhone portrait depth map): the parallax is
     ``flow = a * disparity + b`` (``ParallaxModel``: ``a`` = f * baseline along the baseline
     direction, ``b`` = pre-alignment residual), from the camera geometry
     (``parallax_from_geometry``) or fitted to the images (``fit_parallax``). Depth edges, where a
     low-resolution depth map is blurred, are re-decided by matching (``depth_guided_flow``).
     DIS initialised with that flow is available (``depth_refine="dis"``) but measured worse.
4. Backward warp: UW is sampled once, at ``M (x + flow)``, with ``cv2.remap`` from the original UW.
5. Occlusion: without depth, forward-backward consistency (UnFlow): occluded where
   ``|wf + wb(x + wf)|^2 > 0.01 (|wf|^2 + |wb(x + wf)|^2) + 0.5``; with depth, the z-buffer rule
   the engine's ground truth uses (``splat_occlusion``: a nearer W pixel lands on the same UW
   spot). Both add the pixels where ``M (x + wf)`` leaves UW.

Flow components are always remapped one channel at a time: OpenCV 5.0's INTER_LINEAR remap of
2-channel images differs slightly from its 1/3/4-channel path.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import cv2
import numpy as np
from core.atomic import write_image
from core.errors import UserError

PRESETS = {"ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST, "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
           "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM}


class AlignError(UserError):
    """Alignment that cannot be done (bad input, too few feature matches...)."""


@dataclass
class Prealignment:
    matrix: np.ndarray  # 3x3: homogeneous W pixel (x, y, 1) -> UW pixel, pixel centres at integers
    method: str
    detail: dict = field(default_factory=dict)

    def map_points(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        m = self.matrix
        w = m[2, 0] * x + m[2, 1] * y + m[2, 2]
        return ((m[0, 0] * x + m[0, 1] * y + m[0, 2]) / w).astype(np.float32), \
               ((m[1, 0] * x + m[1, 1] * y + m[1, 2]) / w).astype(np.float32)


def prealign_from_focal(wide_shape, uw_shape, f_wide_px: float, f_uw_px: float,
                        offset_px: tuple[float, float] = (0.0, 0.0)) -> Prealignment:
    """Both cameras on one axis, principal points at the image centres (plus ``offset_px`` in UW
    pixels): ``x_uw = s (x_w - c_w) + c_uw`` with ``s = f_uw / f_w`` (each in its own image's px)."""
    if not (f_wide_px > 0 and f_uw_px > 0):
        raise AlignError(f"focal lengths must be > 0 (wide {f_wide_px}, ultra-wide {f_uw_px})")
    h, w = wide_shape[:2]
    hu, wu = uw_shape[:2]
    s = f_uw_px / f_wide_px
    cxw, cyw, cxu, cyu = (w - 1) / 2, (h - 1) / 2, (wu - 1) / 2 + offset_px[0], (hu - 1) / 2 + offset_px[1]
    m = np.array([[s, 0, cxu - s * cxw], [0, s, cyu - s * cyw], [0, 0, 1]], np.float64)
    return Prealignment(m, "focal lengths", {"scale_uw_per_w": s, "fov_ratio": w * s / wu})


def prealign_from_features(wide: np.ndarray, uw: np.ndarray, method: str = "orb", max_features: int = 4000,
                           ransac_px: float = 3.0) -> Prealignment:
    """Homography W -> UW from feature matches (ORB or SIFT, ratio test, RANSAC)."""
    a, b = to_grey8(wide), to_grey8(uw)
    if method == "sift":
        det = cv2.SIFT_create(max_features)
        norm = cv2.NORM_L2
    elif method == "orb":
        det = cv2.ORB_create(max_features, scaleFactor=1.2, nlevels=10)
        norm = cv2.NORM_HAMMING
    else:
        raise AlignError(f"unknown feature method {method!r} (orb or sift)")
    ka, da = det.detectAndCompute(a, None)
    kb, db = det.detectAndCompute(b, None)
    if da is None or db is None or len(ka) < 8 or len(kb) < 8:
        raise AlignError(f"too few features for a homography (wide {len(ka)}, ultra-wide {len(kb)}): "
                         "give focal lengths in meta.json instead")
    matches = cv2.BFMatcher(norm).knnMatch(da, db, k=2)
    good = [m[0] for m in matches if len(m) == 2 and m[0].distance < 0.8 * m[1].distance]
    if len(good) < 12:
        raise AlignError(f"only {len(good)} feature matches pass the ratio test; cannot fit a homography")
    src = np.float32([ka[m.queryIdx].pt for m in good])
    dst = np.float32([kb[m.trainIdx].pt for m in good])
    h, inl = cv2.findHomography(src, dst, cv2.RANSAC, ransac_px)
    if h is None or int(inl.sum()) < 10:
        raise AlignError(f"homography fit failed ({0 if inl is None else int(inl.sum())} inliers of {len(good)})")
    return Prealignment(h, f"homography ({method.upper()} + RANSAC)", {"matches": len(good), "inliers": int(inl.sum())})


def warp_prealigned(uw: np.ndarray, pre: Prealignment, wide_shape) -> np.ndarray:
    """UW resampled onto W's grid through the pre-alignment only."""
    h, w = wide_shape[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    mx, my = pre.map_points(xs, ys)
    return cv2.remap(uw, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


# --------------------------------------------------------------------------------------------
# colour


@dataclass
class ColourFit:
    gain: np.ndarray  # per channel
    offset: np.ndarray
    model: str
    residual: float  # RMS after the fit on the fitting pixels

    def apply(self, img: np.ndarray) -> np.ndarray:
        return np.clip(img * self.gain.astype(np.float32) + self.offset.astype(np.float32), 0, 1).astype(np.float32)


def fit_colour(src: np.ndarray, dst: np.ndarray, mask: np.ndarray | None = None, model: str = "affine") -> ColourFit:
    """Per-channel ``dst ~ gain * src + offset`` (``affine``) or ``dst ~ gain * src`` (``gain``),
    least squares on ``mask`` pixels (ignores saturated and near-black pixels)."""
    s = src.reshape(-1, src.shape[-1] if src.ndim == 3 else 1).astype(np.float64)
    d = dst.reshape(s.shape).astype(np.float64)
    ok = np.all((s > 0.01) & (s < 0.99) & (d > 0.01) & (d < 0.99), axis=1)
    if mask is not None:
        ok &= mask.reshape(-1)
    if ok.sum() < 16:
        ok = np.ones(len(s), bool)
    gains, offsets, res = [], [], []
    for c in range(s.shape[1]):
        x, y = s[ok, c], d[ok, c]
        if model == "gain":
            g, o = float((x * y).sum() / max((x * x).sum(), 1e-12)), 0.0
        elif model == "affine":
            g, o = np.polyfit(x, y, 1) if x.std() > 1e-6 else (1.0, float(y.mean() - x.mean()))
        else:
            raise AlignError(f"unknown colour model {model!r} (gain, affine or none)")
        gains.append(g)
        offsets.append(o)
        res.append(np.mean((g * x + o - y) ** 2))
    return ColourFit(np.array(gains), np.array(offsets), model, float(np.sqrt(np.mean(res))))


def match_moments(src: np.ndarray, dst: np.ndarray, model: str = "affine", sigma: float = 2.0) -> ColourFit:
    """Per channel, the gain + offset (``affine``) or gain (``gain``) that give ``src`` the mean
    and standard deviation (``gain``: the mean) of ``dst``, both blurred by ``sigma`` px.

    Used before the flow, when the images are not aligned yet: global moments do not depend on
    the parallax, while a least-squares gain (cov / var) shrinks with the misalignment (0.4-0.6
    on the engine pairs, which halved UW's contrast and doubled DIS's error on textured pairs)."""
    if model not in ("affine", "gain"):
        raise AlignError(f"unknown colour model {model!r} (gain, affine or none)")
    a = cv2.GaussianBlur(np.asarray(src, np.float32), (0, 0), sigma) if sigma > 0 else np.asarray(src, np.float32)
    b = cv2.GaussianBlur(np.asarray(dst, np.float32), (0, 0), sigma) if sigma > 0 else np.asarray(dst, np.float32)
    a = a.reshape(-1, a.shape[-1] if a.ndim == 3 else 1).astype(np.float64)
    b = b.reshape(a.shape).astype(np.float64)
    ma, mb = a.mean(0), b.mean(0)
    if model == "gain":
        gain, offset = mb / np.maximum(ma, 1e-6), np.zeros_like(ma)
    else:
        sa, sb = a.std(0), b.std(0)
        gain = np.where(sa > 1e-6, sb / np.maximum(sa, 1e-6), 1.0)
        offset = mb - gain * ma
    res = float(np.sqrt(np.mean((a * gain + offset - b) ** 2)))
    return ColourFit(gain, offset, f"{model} (moments)", res)


# --------------------------------------------------------------------------------------------
# flow


def to_grey8(img: np.ndarray) -> np.ndarray:
    """Float [0, 1] (or uint8) image -> 8-bit single channel, as DIS requires."""
    if img.dtype == np.uint8:
        return cv2.cvtColor(img, cv2.COLOR_RGB2GRAY) if img.ndim == 3 else img
    x = img
    if x.ndim == 3:
        x = cv2.cvtColor(np.ascontiguousarray(x[..., :3], dtype=np.float32), cv2.COLOR_RGB2GRAY) if x.shape[2] >= 3 else x[..., 0]
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)


def dis_flow(a8: np.ndarray, b8: np.ndarray, preset: str = "fast") -> np.ndarray:
    """DIS flow from 8-bit grey ``a8`` to ``b8``: ``a(x) ~ b(x + flow(x))``, HxWx2 float32."""
    if preset not in PRESETS:
        raise AlignError(f"unknown DIS preset {preset!r}; choose from {sorted(PRESETS)}")
    dis = cv2.DISOpticalFlow_create(PRESETS[preset])
    return dis.calc(a8, b8, None)


def remap_channels(img: np.ndarray, map_x: np.ndarray, map_y: np.ndarray, border=cv2.BORDER_REPLICATE) -> np.ndarray:
    """``cv2.remap`` one channel at a time (OpenCV 5.0's 2-channel INTER_LINEAR path differs)."""
    if img.ndim == 2:
        return cv2.remap(img, map_x, map_y, cv2.INTER_LINEAR, borderMode=border)
    return np.stack([cv2.remap(np.ascontiguousarray(img[..., c]), map_x, map_y, cv2.INTER_LINEAR, borderMode=border)
                     for c in range(img.shape[2])], axis=-1)


def fb_occlusion(fwd: np.ndarray, bwd: np.ndarray, alpha1: float = 0.01, alpha2: float = 0.5) -> np.ndarray:
    """Forward-backward consistency (UnFlow): True where
    ``|wf + wb(x + wf)|^2 > alpha1 (|wf|^2 + |wb(x + wf)|^2) + alpha2``."""
    h, w = fwd.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    bw = remap_channels(bwd, xs + fwd[..., 0], ys + fwd[..., 1])
    diff = ((fwd + bw) ** 2).sum(-1)
    mag = (fwd ** 2).sum(-1) + (bw ** 2).sum(-1)
    return diff > alpha1 * mag + alpha2


def flow_to_colour(flow: np.ndarray, max_mag: float | None = None) -> np.ndarray:
    """Flow as an RGB uint8 colour-wheel image (hue = direction, saturation = magnitude)."""
    fx, fy = flow[..., 0], flow[..., 1]
    mag, ang = cv2.cartToPolar(fx.astype(np.float32), fy.astype(np.float32), angleInDegrees=True)
    m = max_mag or max(float(np.percentile(mag, 99)), 1e-6)
    hsv = np.zeros(flow.shape[:2] + (3,), np.uint8)
    hsv[..., 0] = (ang / 2).astype(np.uint8)
    hsv[..., 1] = np.clip(mag / m * 255, 0, 255).astype(np.uint8)
    hsv[..., 2] = 255
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


# --------------------------------------------------------------------------------------------
# depth-guided parallax


@dataclass
class ParallaxModel:
    """W's disparity ``D`` (inverse depth, any units) -> parallax flow on W's grid (W pixel ->
    pre-aligned UW, W px): ``flow(x) = a * D(x) + b``.

    ``a`` (2-vector, W px per disparity unit) is f * baseline along the baseline; ``b`` is what
    the pre-alignment leaves (principal-point offsets, or the offset of a relative depth map).
    ``nearer``: the unit vector along which points move as they get nearer (``+-a / |a|``; the
    sign is not ``a``'s when the disparity's units are reversed)."""
    a: np.ndarray
    b: np.ndarray
    source: str
    detail: dict = field(default_factory=dict)
    nearer: np.ndarray | None = None

    def flow(self, disparity: np.ndarray) -> np.ndarray:
        d = np.asarray(disparity, np.float32)
        return np.stack([np.float32(self.a[0]) * d + np.float32(self.b[0]),
                         np.float32(self.a[1]) * d + np.float32(self.b[1])], -1)

    @property
    def direction(self) -> np.ndarray:
        """Unit vector along which points move as they get nearer (``nearer``, else ``a / |a|``;
        +x when a = 0)."""
        if self.nearer is not None:
            return np.asarray(self.nearer, np.float64)
        n = float(np.hypot(*self.a))
        return np.asarray(self.a, np.float64) / n if n > 0 else np.array([1.0, 0.0])

    def to_dict(self) -> dict:
        return {"a": [round(float(v), 5) for v in self.a], "b": [round(float(v), 4) for v in self.b],
                "nearer": [round(float(v), 4) for v in self.direction], "source": self.source, **self.detail}


def parallax_from_geometry(f_wide_px: float, baseline_mm: float, direction=(1.0, 0.0),
                           offset_px=(0.0, 0.0)) -> ParallaxModel:
    """Disparity in 1/m (inverse depth): UW sits ``baseline_mm`` from W along ``direction`` (W
    image axes), so a point at depth Z appears ``f_wide_px * baseline / Z`` W pixels further
    against ``direction`` in (pre-aligned) UW: ``a = -f * baseline[m] * direction``. ``f_wide_px``
    is W's focal length in pixels of the W image being aligned."""
    if not (f_wide_px > 0 and baseline_mm > 0):
        raise AlignError(f"focal length and baseline must be > 0 (f {f_wide_px} px, baseline {baseline_mm} mm)")
    u = np.asarray(direction, np.float64)
    if u.shape != (2,) or not np.hypot(*u) > 0:
        raise AlignError(f"baseline direction must be a non-zero 2-vector, got {direction!r}")
    u = u / np.hypot(*u)
    return ParallaxModel(-f_wide_px * baseline_mm / 1000.0 * u, np.asarray(offset_px, np.float64), "geometry",
                         {"f_wide_px": float(f_wide_px), "baseline_mm": float(baseline_mm)}, nearer=-u)


def _pyramid_subs(h: int, w: int, max_pixels: int, min_side: int = 32) -> list[int]:
    """Powers of two, coarse to fine: from the coarsest level whose shorter side is at least
    ``min_side`` px down to the first level with at most ``max_pixels`` pixels."""
    lo = 1
    while h * w / lo ** 2 > max_pixels:
        lo *= 2
    hi = lo
    while min(h, w) / (hi * 2) >= min_side:
        hi *= 2
    subs, s = [], hi
    while s >= lo:
        subs.append(s)
        s //= 2
    return subs


def fit_parallax(wide_grey: np.ndarray, uw_grey: np.ndarray, disparity: np.ndarray,
                 model: ParallaxModel | None = None, *, fit_scale: bool | None = None, iterations: int = 6,
                 max_pixels: int = 150_000) -> ParallaxModel:
    """Fit ``flow = a * disparity + b`` to the images: robust (Tukey) Gauss-Newton on the grey
    difference between W and pre-aligned UW warped by the model, coarse to fine (from a level
    whose shorter side is 32-64 px, where the parallax is a few px so no starting value is
    needed, down to ``max_pixels``).

    Without ``model``, ``a`` and ``b`` are both fitted: the disparity's units, the baseline and its
    direction need not be known (iPhone depth maps are relative). With ``model`` (e.g. from
    ``parallax_from_geometry``) only ``b`` is fitted unless ``fit_scale``. Inputs: float grey
    images in [0, 1] on W's grid and the disparity at W's size."""
    h, w = wide_grey.shape
    if uw_grey.shape != (h, w) or disparity.shape != (h, w):
        raise AlignError(f"fit_parallax: shapes differ (wide {wide_grey.shape}, uw {uw_grey.shape}, "
                         f"disparity {disparity.shape})")
    fit_scale = (model is None) if fit_scale is None else fit_scale
    levels = _pyramid_subs(h, w, max_pixels)
    # the finest level once from full resolution, coarser levels by halving it
    fine = (max(w // levels[-1], 8), max(h // levels[-1], 8))
    area = cv2.INTER_AREA
    pyr = [tuple(np.ascontiguousarray(x, dtype=np.float32) if levels[-1] == 1 else
                 cv2.resize(np.ascontiguousarray(x, dtype=np.float32), fine, interpolation=area)
                 for x in (wide_grey, uw_grey, disparity))]
    for _ in levels[:-1]:
        ww, hh = pyr[-1][0].shape[1] // 2, pyr[-1][0].shape[0] // 2
        pyr.append(tuple(cv2.resize(x, (max(ww, 8), max(hh, 8)), interpolation=area) for x in pyr[-1]))
    pyr = pyr[::-1]  # coarse to fine, matching ``levels``
    d_fine = pyr[-1][2].astype(np.float64)
    mu, sd = float(d_fine.mean()), float(d_fine.std())
    if sd < 1e-9 * max(abs(mu), 1.0):  # constant disparity: a and b cannot be told apart
        sd, fit_scale = 1.0, False
    # fit on the normalised disparity n = (d - mu) / sd: flow = alpha n + beta (full-res px)
    if model is not None:
        alpha, beta = np.asarray(model.a, np.float64) * sd, np.asarray(model.b, np.float64) + np.asarray(model.a) * mu
    else:
        alpha, beta = np.zeros(2), np.zeros(2)
    def gauss_newton(level, alpha, beta, n_iter):
        """``n_iter`` robust Gauss-Newton steps at one level; returns the parameters, the median
        absolute residual (the score of a start) and the pixels used."""
        ws, us, dn, xs, ys, sx, sy = level
        hs, wsz = ws.shape
        wsf, alpha, beta = ws.ravel(), alpha.copy(), beta.copy()
        score, used = float("inf"), 0
        for _ in range(n_iter):
            mx = (xs + (alpha[0] * dn + beta[0]) * sx).astype(np.float32)
            my = (ys + (alpha[1] * dn + beta[1]) * sy).astype(np.float32)
            uw_w = cv2.remap(us, mx.reshape(hs, wsz), my.reshape(hs, wsz), cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REPLICATE)
            gx = (cv2.Sobel(uw_w, cv2.CV_32F, 1, 0, ksize=3) * np.float32(sx / 8)).ravel()
            gy = (cv2.Sobel(uw_w, cv2.CV_32F, 0, 1, ksize=3) * np.float32(sy / 8)).ravel()
            r = uw_w.ravel() - wsf
            inside = (mx >= 1) & (mx <= wsz - 2) & (my >= 1) & (my <= hs - 2)
            if inside.sum() < max(64, inside.size // 4):  # most of W must land inside UW
                return alpha, beta, float("inf"), 0
            ri = r[inside]
            score = float(np.median(np.abs(ri[:: max(1, ri.size // 20_000)])))  # a subsample suffices
            scale = max(1.4826 * score, 1e-4)
            wt = np.clip(1 - (r / np.float32(4.685 * scale)) ** 2, 0, None) ** 2
            wt[~inside] = 0
            cols = ([gx * dn, gy * dn] if fit_scale else []) + [gx, gy]
            jw = [c * wt for c in cols]
            hess = np.array([[float(np.dot(a, b)) for b in cols] for a in jw])
            hess += np.eye(len(cols)) * (1e-6 * np.trace(hess) / len(cols) + 1e-12)
            step = -np.linalg.solve(hess, np.array([float(np.dot(a, r)) for a in jw]))
            if fit_scale:
                alpha += step[:2]
                beta += step[2:]
            else:
                beta += step
            used = int((wt > 0).sum())
            if np.abs(step).max() < 5e-3:  # px per unit of the normalised disparity
                break
        return alpha, beta, score, used

    levels_data = []
    for ws, us, ds in pyr:
        hs, wsz = ws.shape
        levels_data.append((cv2.GaussianBlur(ws, (0, 0), 1.0), cv2.GaussianBlur(us, (0, 0), 1.0),
                            ((ds - np.float32(mu)) / np.float32(sd)).ravel(),
                            np.broadcast_to(np.arange(wsz, dtype=np.float32)[None, :], (hs, wsz)).ravel(),
                            np.broadcast_to(np.arange(hs, dtype=np.float32)[:, None], (hs, wsz)).ravel(),
                            wsz / w, hs / h))
    # coarsest level: several starts when the scale is free (direction and size unknown): no
    # parallax, and 3 coarse px per unit of normalised disparity along +-x and +-y; the best
    # after 4 steps goes on
    starts = [(alpha, beta)]
    if fit_scale and model is None:
        sx0 = levels_data[0][5]
        starts += [(np.array(v, np.float64) * 3.0 / sx0, beta) for v in ((1, 0), (-1, 0), (0, 1), (0, -1))]
    results = [gauss_newton(levels_data[0], a0, b0, 4) for a0, b0 in starts]
    alpha, beta, score, n_used = min(results, key=lambda t: t[2])
    for level in levels_data:
        alpha, beta, score, n_used = gauss_newton(level, alpha, beta, iterations)
    rms = score
    a = alpha / sd
    b = beta - a * mu
    # which way is nearer: a known model says; otherwise most parallax is positive (points move
    # towards the far side of the baseline by f B / Z >= 0, the pre-alignment residual being
    # smaller), so ``nearer`` is the side the flow mostly points to along a
    if model is not None:
        nearer = model.direction
    else:
        u = a / max(float(np.hypot(*a)), 1e-12)
        along = float(np.median((a[0] * d_fine + b[0]) * u[0] + (a[1] * d_fine + b[1]) * u[1]))
        nearer = u if along >= 0 else -u
    if not np.isfinite(rms):
        raise AlignError("fit_parallax: the disparity-driven warp leaves UW for most of W (bad disparity map or "
                         "pre-alignment?)")
    detail = {"fitted": "a, b" if fit_scale else "b", "levels": levels, "starts": len(starts), "pixels_used": n_used,
              "residual_median": round(rms, 5)}
    if model is not None:
        detail["prior"] = model.to_dict()
    return ParallaxModel(a, b, "fit" if model is None else f"{model.source} + fit", detail, nearer=np.asarray(nearer))


def depth_guided_flow(wide: np.ndarray, uw_pre: np.ndarray, disparity: np.ndarray, model: ParallaxModel, *,
                      edge_radius: int = 4, window: int = 9, edge_px: float = 1.0,
                      match_scale: int = 2, snap_prior: float = 8.0,
                      own_penalty: float = 4.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flow from W's disparity through ``model``, with the depth edges re-decided by matching.

    A low-resolution, smoothed depth map blurs each depth edge over a few pixels, where its flow
    is wrong by up to the disparity step. There, i.e. where the flow from the disparity varies by
    more than ``edge_px`` within ``edge_radius`` (about the depth map's pixel size on W), each
    pixel takes the local minimum, the local maximum or its own disparity.

    Snap: a step blurred symmetrically crosses the midpoint of its two sides where the step is,
    so an edge pixel belongs to the side (minimum or maximum) its own value is closer to. Match:
    whichever of the three makes W and UW agree best, by the sum of absolute colour differences
    of the images blurred by 1 px over a ``window`` x ``window`` W-px box, at 1/``match_scale``
    resolution (2: UW's own resolution on phones), plus penalties in units of a 2 % mean colour
    difference: ``snap_prior`` against the side opposite to the snap, ``own_penalty`` against
    the pixel's own (blurred) value. Where matching picks the snapped side, the full-resolution
    snap decides the pixel; where it overrides the snap or keeps the own value, its choice
    stands. Matching alone picked the wrong side at ~11 % of the pixels of the engine's
    dead-leaves pair (its window straddles the edge): EPE 0.89 -> 0.47 W px at 2 MP with the
    snap (``benchmarks/bench_align.py``). Elsewhere the disparity is used as is. Inputs: W and
    the colour-matched pre-aligned UW (float [0, 1] HxWx3) and the disparity at W's size.
    Returns the flow (HxWx2), the chosen disparity and the edge mask."""
    h, w = disparity.shape
    d0 = np.ascontiguousarray(disparity, dtype=np.float32)
    ker = cv2.getStructuringElement(cv2.MORPH_RECT, (2 * edge_radius + 1, 2 * edge_radius + 1))
    dmin, dmax = cv2.erode(d0, ker), cv2.dilate(d0, ker)
    edge = cv2.subtract(dmax, dmin) > np.float32(edge_px / max(float(np.hypot(*model.a)), 1e-12))
    if not edge.any():
        return model.flow(d0), d0, edge
    k = max(1, int(match_scale))
    hs, ws = (h // k, w // k) if k > 1 else (h, w)

    def small(x, interp):
        return cv2.resize(x, (ws, hs), interpolation=interp) if k > 1 else x

    to8 = lambda x: cv2.GaussianBlur(cv2.convertScaleAbs(np.ascontiguousarray(x[..., :3]), alpha=255.0), (0, 0), 1.0)  # noqa: E731
    w8, u8 = small(to8(wide), cv2.INTER_AREA), small(to8(uw_pre), cv2.INTER_AREA)
    win = max(3, (window // k) | 1)
    xs = np.arange(ws, dtype=np.float32)[None, :] * np.float32(w / ws) + np.float32((w / ws - 1) / 2)
    ys = np.arange(hs, dtype=np.float32)[:, None] * np.float32(h / hs) + np.float32((h / hs - 1) / 2)
    ax, ay, bx, by = (np.float32(v) for v in (*model.a, *model.b))
    sx, sy = np.float32(ws / w), np.float32(hs / h)
    ones = np.ones((1, 3), np.float32)

    def cost(d: np.ndarray) -> np.ndarray:
        # UW position (full-res coordinates of this level's pixel centres + flow), to this level
        mx = d * ax
        mx += xs + bx
        mx *= sx
        mx += np.float32((sx - 1) / 2)
        my = d * ay
        my += ys + by
        my *= sy
        my += np.float32((sy - 1) / 2)
        m1, m2 = cv2.convertMaps(mx, my, cv2.CV_16SC2)
        diff = cv2.absdiff(cv2.remap(u8, m1, m2, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE), w8)
        return cv2.boxFilter(cv2.transform(diff, ones), -1, (win, win))

    nearest = cv2.INTER_NEAREST
    snap = np.where(d0 > 0.5 * (dmin + dmax), np.uint8(2), np.uint8(1))  # 1: minimum side, 2: maximum
    snap_small = small(snap, nearest)
    unit = np.float32(3 * 255 * 0.02)  # cost of a 2 % mean absolute difference per channel
    best_c = cost(small(d0, nearest)).astype(np.float32) + np.float32(own_penalty) * unit
    label = np.zeros((hs, ws), np.uint8)
    for i, cand in ((1, dmin), (2, dmax)):
        c = cost(small(cand, nearest)).astype(np.float32)
        c[snap_small != i] += np.float32(snap_prior) * unit
        better = c < best_c
        np.copyto(best_c, c, where=better)
        label[better] = i
    agrees = label == snap_small
    if k > 1:
        label = cv2.resize(label, (w, h), interpolation=nearest)
        agrees = cv2.resize(agrees.view(np.uint8), (w, h), interpolation=nearest).astype(bool)
    label[agrees] = snap[agrees]  # the snapped side, decided at full resolution
    best_d = d0.copy()
    for i, cand in ((1, dmin), (2, dmax)):
        sel = (label == i) & edge
        best_d[sel] = cand[sel]
    return model.flow(best_d), best_d, edge


def splat_occlusion(flow: np.ndarray, direction, tol: float = 0.5, min_width: int = 3) -> np.ndarray:
    """W pixels hidden in UW behind nearer W pixels, for a flow that is parallax along
    ``direction`` (where points move as they get nearer; the scan runs along its dominant image
    axis). The engine's ground truth is a z-buffer (a nearer pixel lands on the same UW pixel);
    this is its scan form, an ordering test: p is occluded when a pixel behind it (against
    ``direction``, same row or column) lands at or past p's landing point, less ``tol`` px. It
    also flags what a near object narrower than its parallax jumps over, which a z-buffer leaves
    visible; on the engine pairs it scores a higher F1 with estimated flows than a rounded
    z-buffer (0.67 vs 0.64-0.67 at 2 MP), and it is O(pixels). A ``min_width`` x ``min_width``
    opening then drops thinner detections (mostly flow noise at re-decided edges: F1 0.67 ->
    0.71 on the engine's dead-leaves pair at 2 MP); 1 keeps them."""
    m = np.asarray(direction, np.float64)
    m = m / max(float(np.hypot(*m)), 1e-12)
    h, w = flow.shape[:2]
    s = flow[..., 0] * np.float32(m[0])
    s += flow[..., 1] * np.float32(m[1])
    s += np.arange(w, dtype=np.float32)[None, :] * np.float32(m[0])
    s += np.arange(h, dtype=np.float32)[:, None] * np.float32(m[1])
    horizontal = abs(m[0]) >= abs(m[1])
    if not horizontal:
        s = s.T
    if (m[0] if horizontal else m[1]) < 0:  # occluders come from larger x (or y): scan from the end
        s = s[:, ::-1]
    prev = np.empty_like(s)
    prev[:, 0] = -np.inf
    np.maximum.accumulate(s[:, :-1], axis=1, out=prev[:, 1:])  # max over the pixels behind
    occ = prev > s - np.float32(tol)
    if (m[0] if horizontal else m[1]) < 0:
        occ = occ[:, ::-1]
    occ = np.ascontiguousarray(occ.T if not horizontal else occ)
    if min_width > 1:
        occ = cv2.morphologyEx(occ.view(np.uint8), cv2.MORPH_OPEN, np.ones((min_width, min_width), np.uint8)) > 0
    return occ


# --------------------------------------------------------------------------------------------
# the pipeline


@dataclass
class AlignmentReport:
    preset: str
    prealign: str
    prealign_detail: dict
    colour_model: str
    colour_gain: list
    colour_offset: list
    colour_residual: float
    flow_mean_px: float  # parallax flow on W's grid (pre-aligned UW), W px
    flow_median_px: float
    flow_p95_px: float
    flow_max_px: float
    flow_mean_dx: float
    flow_mean_dy: float
    occluded_fraction: float
    out_of_frame_fraction: float
    fb_error_median_px: float  # NaN with depth (no backward flow)
    timings_ms: dict
    size: str
    flow_mode: str = "dis"  # dis | depth | depth+select | depth+dis
    parallax: dict = field(default_factory=dict)  # the ParallaxModel, with depth
    edge_fraction: float = 0.0  # pixels whose depth edge was re-decided (depth+select)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class AlignmentResult:
    warped: np.ndarray  # UW on W's grid, colour matched to W, float32 HxWx3
    flow: np.ndarray  # W pixel -> pre-aligned UW grid, HxWx2 W px (the parallax)
    mapping: np.ndarray  # W pixel -> UW pixel coordinates, HxWx2
    occlusion: np.ndarray  # HxW bool
    prealign: Prealignment
    report: AlignmentReport
    parallax: ParallaxModel | None = None  # with depth


DEPTH_REFINE = ("select", "dis", "none")


def resize_disparity(disparity: np.ndarray, shape) -> np.ndarray:
    """W's disparity map (any size with W's aspect ratio) -> float32 at W's size (linear)."""
    d = np.asarray(disparity)
    if d.ndim == 3 and d.shape[2] == 1:
        d = d[..., 0]
    if d.ndim != 2 or d.dtype.kind not in "fiu":
        raise AlignError(f"disparity must be a 2-D numeric map, got {d.dtype} {d.shape}")
    d = d.astype(np.float32)
    if not np.isfinite(d).all():
        raise AlignError("disparity holds NaN/inf values")
    h, w = shape[:2]
    if abs(d.shape[1] / d.shape[0] - w / h) > 0.01 * w / h:
        raise AlignError(f"disparity is {d.shape[1]}x{d.shape[0]}, its aspect ratio differs from W's {w}x{h}")
    return d if d.shape == (h, w) else cv2.resize(d, (w, h), interpolation=cv2.INTER_LINEAR)


def align_uw_to_w(wide: np.ndarray, ultrawide: np.ndarray, *, f_wide_px: float | None = None,
                  f_uw_px: float | None = None, prealign: Prealignment | None = None, preset: str = "fast",
                  colour: str = "affine", features: str = "orb", threads: int | None = None,
                  disparity: np.ndarray | None = None, parallax: ParallaxModel | None = None,
                  depth_refine: str = "select", edge_radius: int | None = None,
                  colour_prefit: str = "moments") -> AlignmentResult:
    """Align a UW image (its own size and field of view) to a W image (float [0, 1], HxWx3).

    With W's ``disparity`` (inverse depth in any units, any size with W's aspect ratio) the flow
    comes from it: ``parallax`` (e.g. ``parallax_from_geometry``) gives its scale and direction
    and only the offset is fitted, or, when None, both are fitted to the images
    (``fit_parallax``). ``depth_refine``: ``select`` re-decides depth edges by matching
    (``depth_guided_flow``, the default), ``dis`` uses the depth flow as DIS's initial flow
    (``preset``), ``none`` uses it as is. ``edge_radius`` (W px) defaults to the depth map's
    pixel size on W (at least 3; 0.25 % of W's longer side when the map is at W's size).
    ``colour_prefit``: ``moments`` (``match_moments``) or ``lsq`` (least squares on images
    blurred by 4 px, the behaviour before 2026-11-22, kept for comparison)."""
    if wide.ndim != 3 or ultrawide.ndim != 3:
        raise AlignError(f"wide and ultra-wide must be HxWx3 images, got {wide.shape} and {ultrawide.shape}")
    for name, a in (("wide", wide), ("ultra-wide", ultrawide)):
        if not np.isfinite(a).all():
            raise AlignError(f"{name} image holds NaN/inf values")
    if preset not in PRESETS:
        raise AlignError(f"unknown DIS preset {preset!r}; choose from {sorted(PRESETS)}")
    if depth_refine not in DEPTH_REFINE:
        raise AlignError(f"unknown depth_refine {depth_refine!r}; choose from {DEPTH_REFINE}")
    if threads is not None:
        cv2.setNumThreads(int(threads))
    h, w = wide.shape[:2]
    t: dict = {}
    t0 = time.perf_counter()
    if prealign is None:
        prealign = (prealign_from_focal(wide.shape, ultrawide.shape, f_wide_px, f_uw_px) if f_wide_px and f_uw_px
                    else prealign_from_features(wide, ultrawide, features))
    uw_pre = warp_prealigned(ultrawide.astype(np.float32), prealign, wide.shape)
    disp = None
    if disparity is not None:
        native_w = np.asarray(disparity).shape[1] if np.asarray(disparity).ndim >= 2 else w
        disp = resize_disparity(disparity, wide.shape)
        if edge_radius is None:
            edge_radius = (max(3, int(round(w / native_w))) if native_w < w else max(3, int(round(0.0025 * max(h, w)))))
    t["prealign"] = (time.perf_counter() - t0) * 1e3

    t0 = time.perf_counter()
    if colour != "none":
        if colour_prefit == "moments":
            pre_fit = match_moments(uw_pre, wide.astype(np.float32), model=colour)
        elif colour_prefit == "lsq":
            blur = lambda x: cv2.GaussianBlur(x, (0, 0), 4.0)  # noqa: E731
            pre_fit = fit_colour(blur(uw_pre), blur(wide.astype(np.float32)), model=colour)
        else:
            raise AlignError(f"unknown colour_prefit {colour_prefit!r} (moments or lsq)")
        uw_pre = pre_fit.apply(uw_pre)
    a8, b8 = to_grey8(wide), to_grey8(uw_pre)
    t["colour_pre"] = (time.perf_counter() - t0) * 1e3

    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    model, edge_frac, bwd = None, 0.0, None
    if disp is None:
        mode = "dis"
        t0 = time.perf_counter()
        fwd = dis_flow(a8, b8, preset)
        t["flow_forward"] = (time.perf_counter() - t0) * 1e3
        t0 = time.perf_counter()
        bwd = dis_flow(b8, a8, preset)
        t["flow_backward"] = (time.perf_counter() - t0) * 1e3
    else:
        t0 = time.perf_counter()
        model = fit_parallax(a8.astype(np.float32) / 255, b8.astype(np.float32) / 255, disp, parallax)
        t["parallax_fit"] = (time.perf_counter() - t0) * 1e3
        t0 = time.perf_counter()
        if depth_refine == "select":
            mode = "depth+select"
            fwd, _, edge = depth_guided_flow(wide, uw_pre, disp, model, edge_radius=edge_radius)
            edge_frac = float(edge.mean())
        elif depth_refine == "dis":
            mode = "depth+dis"
            dis = cv2.DISOpticalFlow_create(PRESETS[preset])
            fwd = dis.calc(a8, b8, np.ascontiguousarray(model.flow(disp)))
        else:
            mode = "depth"
            fwd = model.flow(disp)
        t["flow_forward"] = (time.perf_counter() - t0) * 1e3

    t0 = time.perf_counter()
    px, py = xs + fwd[..., 0], ys + fwd[..., 1]
    mx, my = prealign.map_points(px, py)
    hu, wu = ultrawide.shape[:2]
    outside = (mx < -0.5) | (mx > wu - 0.5) | (my < -0.5) | (my > hu - 0.5)
    inconsistent = fb_occlusion(fwd, bwd) if bwd is not None else splat_occlusion(fwd, model.direction)
    occ = inconsistent | outside
    warped = cv2.remap(ultrawide.astype(np.float32), mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    t["warp_occlusion"] = (time.perf_counter() - t0) * 1e3

    t0 = time.perf_counter()
    if colour != "none":
        post = fit_colour(warped, wide.astype(np.float32), mask=~occ, model=colour)
        warped = post.apply(warped)
    else:
        post = ColourFit(np.ones(3), np.zeros(3), "none", float("nan"))
    t["colour_post"] = (time.perf_counter() - t0) * 1e3
    t["total"] = sum(t.values())

    mag = np.hypot(fwd[..., 0], fwd[..., 1])
    if bwd is not None:
        bw_at = remap_channels(bwd, px, py)
        fb_med = float(np.median(np.hypot(*(fwd + bw_at).transpose(2, 0, 1))))
    else:
        fb_med = float("nan")
    rep = AlignmentReport(
        preset=preset, prealign=prealign.method, prealign_detail=prealign.detail, colour_model=post.model,
        colour_gain=[round(float(g), 4) for g in post.gain], colour_offset=[round(float(o), 4) for o in post.offset],
        colour_residual=round(post.residual, 5), flow_mean_px=float(mag.mean()), flow_median_px=float(np.median(mag)),
        flow_p95_px=float(np.percentile(mag, 95)), flow_max_px=float(mag.max()),
        flow_mean_dx=float(fwd[..., 0].mean()), flow_mean_dy=float(fwd[..., 1].mean()),
        occluded_fraction=float(occ.mean()), out_of_frame_fraction=float(outside.mean()),
        fb_error_median_px=fb_med, timings_ms={k: round(v, 2) for k, v in t.items()},
        size=f"{w}x{h}", flow_mode=mode, parallax=model.to_dict() if model is not None else {},
        edge_fraction=round(edge_frac, 4))
    return AlignmentResult(warped.astype(np.float32), fwd, np.stack([mx, my], -1), occ, prealign, rep, model)


def alignment_visual(wide: np.ndarray, result: AlignmentResult, path=None, max_width: int = 1600) -> np.ndarray:
    """2x2 panel (RGB uint8): W | warped UW / W with occlusion in red | flow colour wheel (with a
    wheel legend in the corner). Written as PNG when ``path`` is given."""
    to8 = lambda x: np.clip(np.rint(x * 255), 0, 255).astype(np.uint8)  # noqa: E731
    w8, u8 = to8(wide[..., :3]), to8(result.warped[..., :3])
    overlay = w8.copy()
    red = np.array([255, 0, 0], np.float32)
    overlay[result.occlusion] = (0.4 * overlay[result.occlusion] + 0.6 * red).astype(np.uint8)
    flow_rgb = flow_to_colour(result.flow)
    r = max(8, min(flow_rgb.shape[:2]) // 8)
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1].astype(np.float32)
    wheel = flow_to_colour(np.stack([xx, yy], -1), max_mag=float(r))
    inside = xx ** 2 + yy ** 2 <= r * r
    patch = flow_rgb[4:4 + 2 * r + 1, 4:4 + 2 * r + 1]
    patch[inside[: patch.shape[0], : patch.shape[1]]] = wheel[: patch.shape[0], : patch.shape[1]][inside[: patch.shape[0], : patch.shape[1]]]
    panel = np.vstack([np.hstack([w8, u8]), np.hstack([overlay, flow_rgb])])
    if panel.shape[1] > max_width:
        s = max_width / panel.shape[1]
        panel = cv2.resize(panel, (max_width, int(round(panel.shape[0] * s))), interpolation=cv2.INTER_AREA)
    if path is not None:
        write_image(path, panel[..., ::-1], "alignment visual")
    return panel


def alignment_metrics(result: AlignmentResult, gt_flow_w_to_uw: np.ndarray, gt_occlusion: np.ndarray) -> dict:
    """Against ground truth (``UW pixel = W pixel + gt_flow``): end-point error on GT
    non-occluded pixels in UW px and in W px (divided by the pre-alignment scale), and the
    occlusion mask's precision, recall and F1."""
    h, w = gt_occlusion.shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    gt = np.stack([xs + gt_flow_w_to_uw[..., 0], ys + gt_flow_w_to_uw[..., 1]], -1)
    err_uw = np.hypot(*(result.mapping - gt).transpose(2, 0, 1))
    m = result.prealign.matrix
    scale = float(np.sqrt(abs(np.linalg.det(m[:2, :2]))))  # UW px per W px
    vis = ~gt_occlusion
    tp = float((result.occlusion & gt_occlusion).sum())
    prec = tp / max(float(result.occlusion.sum()), 1.0)
    rec = tp / max(float(gt_occlusion.sum()), 1.0)
    f1 = 2 * prec * rec / max(prec + rec, 1e-12)
    e = err_uw[vis]
    return {"epe_uw_px": float(e.mean()), "epe_px": float(e.mean() / scale), "epe_median_px": float(np.median(e) / scale),
            "outliers_3px": float((e / scale > 3).mean()), "occlusion_precision": prec, "occlusion_recall": rec,
            "occlusion_f1": f1, "occluded_gt": float(gt_occlusion.mean()), "occluded_est": float(result.occlusion.mean())}
