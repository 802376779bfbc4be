"""UW -> W alignment (CAPTURES.md "Aligning UW to W").

1. Pre-align: a 3x3 matrix ``M`` from W pixel coordinates to UW pixel coordinates, from the
   focal lengths (``prealign_from_focal``: a centred scale) or, when they are unknown, from a
   homography fitted to ORB/SIFT matches (``prealign_from_features``). UW resampled through
   ``M`` onto W's grid leaves only the parallax for the flow.
2. Colour: a per-channel gain + offset fitted on blurred images before the flow (so DIS sees the
   same brightness) and refined on the non-occluded matched pixels after it.
3. DIS optical flow W -> pre-aligned UW and back (``cv2.DISOpticalFlow``, preset ultrafast /
   fast / medium), 8-bit grey inputs.
4. Backward warp: UW is sampled once, at ``M (x + flow)``, with ``cv2.remap`` from the original UW.
5. Occlusion: forward-backward consistency (UnFlow): occluded where
   ``|wf + wb(x + wf)|^2 > 0.01 (|wf|^2 + |wb(x + wf)|^2) + 0.5`` or ``M (x + wf)`` leaves UW.

Flow components are always remapped one channel at a time: OpenCV 5.0's INTER_LINEAR remap of
2-channel images differs slightly from its 1/3/4-channel path.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

PRESETS = {"ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST, "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
           "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM}


class AlignError(ValueError):
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
    fb_error_median_px: float
    timings_ms: dict
    size: str

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


def align_uw_to_w(wide: np.ndarray, ultrawide: np.ndarray, *, f_wide_px: float | None = None,
                  f_uw_px: float | None = None, prealign: Prealignment | None = None, preset: str = "fast",
                  colour: str = "affine", features: str = "orb", threads: int | None = None) -> AlignmentResult:
    """Align a UW image (its own size and field of view) to a W image (float [0, 1], HxWx3)."""
    if wide.ndim != 3 or ultrawide.ndim != 3:
        raise AlignError(f"wide and ultra-wide must be HxWx3 images, got {wide.shape} and {ultrawide.shape}")
    for name, a in (("wide", wide), ("ultra-wide", ultrawide)):
        if not np.isfinite(a).all():
            raise AlignError(f"{name} image holds NaN/inf values")
    if preset not in PRESETS:
        raise AlignError(f"unknown DIS preset {preset!r}; choose from {sorted(PRESETS)}")
    if threads is not None:
        cv2.setNumThreads(int(threads))
    h, w = wide.shape[:2]
    t: dict = {}
    t0 = time.perf_counter()
    if prealign is None:
        prealign = (prealign_from_focal(wide.shape, ultrawide.shape, f_wide_px, f_uw_px) if f_wide_px and f_uw_px
                    else prealign_from_features(wide, ultrawide, features))
    uw_pre = warp_prealigned(ultrawide.astype(np.float32), prealign, wide.shape)
    t["prealign"] = (time.perf_counter() - t0) * 1e3

    t0 = time.perf_counter()
    if colour != "none":
        blur = lambda x: cv2.GaussianBlur(x, (0, 0), 4.0)  # noqa: E731 - parallax-tolerant statistics
        pre_fit = fit_colour(blur(uw_pre), blur(wide.astype(np.float32)), model=colour)
        uw_pre = pre_fit.apply(uw_pre)
    a8, b8 = to_grey8(wide), to_grey8(uw_pre)
    t["colour_pre"] = (time.perf_counter() - t0) * 1e3

    t0 = time.perf_counter()
    fwd = dis_flow(a8, b8, preset)
    t["flow_forward"] = (time.perf_counter() - t0) * 1e3
    t0 = time.perf_counter()
    bwd = dis_flow(b8, a8, preset)
    t["flow_backward"] = (time.perf_counter() - t0) * 1e3

    t0 = time.perf_counter()
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    px, py = xs + fwd[..., 0], ys + fwd[..., 1]
    mx, my = prealign.map_points(px, py)
    hu, wu = ultrawide.shape[:2]
    outside = (mx < -0.5) | (mx > wu - 0.5) | (my < -0.5) | (my > hu - 0.5)
    inconsistent = fb_occlusion(fwd, bwd)
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
    bw_at = remap_channels(bwd, px, py)
    fb_err = np.hypot(*(fwd + bw_at).transpose(2, 0, 1))
    rep = AlignmentReport(
        preset=preset, prealign=prealign.method, prealign_detail=prealign.detail, colour_model=post.model,
        colour_gain=[round(float(g), 4) for g in post.gain], colour_offset=[round(float(o), 4) for o in post.offset],
        colour_residual=round(post.residual, 5), flow_mean_px=float(mag.mean()), flow_median_px=float(np.median(mag)),
        flow_p95_px=float(np.percentile(mag, 95)), flow_max_px=float(mag.max()),
        flow_mean_dx=float(fwd[..., 0].mean()), flow_mean_dy=float(fwd[..., 1].mean()),
        occluded_fraction=float(occ.mean()), out_of_frame_fraction=float(outside.mean()),
        fb_error_median_px=float(np.median(fb_err)), timings_ms={k: round(v, 2) for k, v in t.items()},
        size=f"{w}x{h}")
    return AlignmentResult(warped.astype(np.float32), fwd, np.stack([mx, my], -1), occ, prealign, rep)


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
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(path), panel[..., ::-1]):
            raise OSError(f"{path}: could not write the alignment visual")
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
