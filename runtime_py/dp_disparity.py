"""A full-resolution DP defocus map from the two views alone, on the image's superpixels.

Point and box prompts grow regions on a disparity. A plain DP capture has none, and UiD's defocus
output is smooth (1/8-resolution features) and not object-accurate. This estimator needs no
network; it works per SLIC superpixel (an object's edge is mostly a superpixel edge, so few
matching windows straddle two depths). The superpixels see colour and a dense, noisy first
estimate of the same cost (per pixel over a 9 x 9 box), so a depth edge without a colour edge
is a superpixel edge too.

1. cross-blur cost (seed 004, eq. 2-4: ``left = I * h_L(r)``, ``right = I * h_R(r)``, so
   ``left * h_R(r) = right * h_L(r)`` exactly at the true signed CoC radius ``r``): for each
   candidate ``r`` the squared difference of the cross-blurred, local-mean-removed views
   (exposure and vignetting differences cancel), summed over channels and over each superpixel,
   each pixel weighted by the inverse of its local signal energy (so a sharp, contrasty part of a
   superpixel that straddles an edge does not outvote the rest) and each candidate divided by
   its kernels' noise gain ``((|h_L|^2 + |h_R|^2) / 2)^0.25`` (blurring also averages noise away,
   which would favour large ``r``; the full power over-corrects towards 0). A plain shift match
   of the views is weaker where the blur is large (20 scenes: correlation of the per-object
   estimate with the truth 0.84 vs 0.92 for the cross blur);
2. per superpixel the arg-min ``r`` (parabolic sub-step) and a confidence: how far the cost rises
   away from its minimum (beyond +-1 px) relative to it, ``rise / (rise + 1)``: 0 on a
   textureless patch;
3. a map for display and confidence: a weighted least-squares fill over the superpixel graph
   (each superpixel stays near its estimate in proportion to its confidence and follows its
   neighbours in proportion to their colour similarity);
4. the same at several superpixel sizes (``LEVELS``, one filtering pass): a superpixel that
   straddles two objects at one size seldom does at all of them, so the prompts grow a region
   at each level and keep the pixels most levels agree on (``runtime_py.prompts``).

Units: signed CoC radius in px of the Butterworth DP PSF (``calibration.dp_psf``); its sign is
the DP disparity's (left - right centroid).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

MAX_RADIUS = 6.0  # px: candidate signed CoC radii span +-MAX_RADIUS
STEP = 0.25
PIXELS_PER_SEGMENT = 200  # measured (40 dev scenes): 60 / 100 / 200 px per superpixel -> point IoU 0.75 / 0.77 / 0.81
COMPACTNESS = 48.0  # SLIC, Lab units. 4-20 measured first (16 kept two touching same-colour objects apart); then
# 16 / 32 / 48 / 64 with the levels' vote, point IoU at 96 px on 4 sets of 20 scenes: 0.869 / 0.886 / 0.887 / 0.886
# (mean), 192 px 0.914 / 0.914 / 0.920 / 0.917: compact superpixels make compact matching windows, and fewer thin
# superpixels hugging a blurred outline carry a region across it
DEPTH_WEIGHT = 8.0  # Lab units per px of CoC: the dense estimate as SLIC's fourth feature (0 / 4 / 8 / 15 measured)
LEVELS = (400, 300, 200, 150, 100, 80, 50)  # px per superpixel of the levels the prompts vote over (step 4)


@dataclass
class DPDisparity:
    labels: np.ndarray  # H x W superpixel index
    radii: np.ndarray  # K candidate signed CoC radii, px
    cost: np.ndarray  # K x S matching cost per candidate and superpixel
    segment_radius: np.ndarray  # S arg-min radius
    segment_confidence: np.ndarray  # S in [0, 1)
    colour: np.ndarray  # S x 3 mean CIELab colour
    pairs: tuple[np.ndarray, np.ndarray]  # adjacent superpixels (a < b)
    disparity: np.ndarray  # H x W the filled map (step 3), px
    levels: tuple = ()  # the estimates at every superpixel size of LEVELS (step 4), this one among them

    @property
    def confidence(self) -> np.ndarray:
        return self.segment_confidence[self.labels]

    def neighbours(self) -> list[list[int]]:
        out: list[list[int]] = [[] for _ in range(self.cost.shape[1])]
        for a, b in zip(*self.pairs):
            out[a].append(int(b))
            out[b].append(int(a))
        return out


def _views(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, np.float32)
    return a[..., None] if a.ndim == 2 else a


def _rgb(image: np.ndarray) -> np.ndarray:
    img = np.clip(_views(image), 0, 1)
    return np.repeat(img, 3, 2) if img.shape[2] == 1 else img[..., :3]


def superpixels(image: np.ndarray, pixels_per_segment: int = PIXELS_PER_SEGMENT,
                depth: np.ndarray | None = None) -> np.ndarray:
    """SLIC labels (0..n-1, consecutive) of the display-like image in CIELab (scikit-image), with
    ``depth`` (H x W, already in Lab-like units) as a fourth feature when given."""
    from skimage.segmentation import slic

    h, w = image.shape[:2]
    feats = lab_colour(image)
    if depth is not None:
        feats = np.concatenate([feats, depth[..., None].astype(np.float32)], axis=2)
    span = max(float(feats.max() - feats.min()), 1e-6)  # slic rescales the features to [0, 1]
    lab = slic(feats, n_segments=max(8, h * w // pixels_per_segment), compactness=COMPACTNESS / span,
               start_label=0, channel_axis=-1, convert2lab=False)
    return np.unique(lab, return_inverse=True)[1].reshape(h, w)


def segment_means(values: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """S x C: the mean of ``values`` (H x W [x C]) per label."""
    v = _views(values)
    n = int(labels.max()) + 1
    cnt = np.maximum(np.bincount(labels.ravel(), minlength=n), 1)
    return np.stack([np.bincount(labels.ravel(), weights=v[..., c].ravel(), minlength=n) / cnt
                     for c in range(v.shape[2])], 1)


def adjacency(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 4-connected adjacent label pairs (a < b), each once."""
    a = np.concatenate([labels[:, :-1].ravel(), labels[:-1, :].ravel()])
    b = np.concatenate([labels[:, 1:].ravel(), labels[1:, :].ravel()])
    keep = a != b
    pairs = np.unique(np.sort(np.stack([a[keep], b[keep]], 1), axis=1), axis=0)
    return pairs[:, 0], pairs[:, 1]


def cross_blur_cost(left: np.ndarray, right: np.ndarray, labels, radii: np.ndarray, window: int = 15,
                    dense: int = 0):
    """K x S: ``sum over superpixel and channels of (left * h_R(r) - right * h_L(r))^2`` (step 1);
    ``labels`` a list of label maps: one K x S array per map, from one filtering pass."""
    from calibration.dp_psf import IN_FOCUS_RADIUS, dual_pixel_psf

    def prep(v):
        return v - cv2.blur(v, (window, window)).reshape(v.shape)

    lv, rv = prep(_views(left)), prep(_views(right))
    maps = [] if labels is None else [labels] if isinstance(labels, np.ndarray) else list(labels)
    ns, flats = [int(lab.max()) + 1 for lab in maps], [lab.ravel() for lab in maps]
    energy = cv2.blur((lv * lv + rv * rv).sum(axis=2), (9, 9))
    weight = (1.0 / (energy + 0.1 * np.median(energy))).ravel()
    outs = [np.empty((len(radii), n), np.float64) for n in ns]
    best = np.full(lv.shape[:2], np.inf, np.float32)
    best_r = np.zeros(lv.shape[:2], np.float32)
    total = np.zeros(lv.shape[:2], np.float32)
    for k, r in enumerate(radii):
        if abs(r) < IN_FOCUS_RADIUS:
            a, b, gain = lv, rv, 1.0
        else:  # filter2D correlates: flip the kernels to convolve
            hl, hr = (np.asarray(h / h.sum(), np.float32)[::-1, ::-1] for h in dual_pixel_psf(float(r)))
            a = cv2.filter2D(lv, -1, hr, borderType=cv2.BORDER_REFLECT).reshape(lv.shape)
            b = cv2.filter2D(rv, -1, hl, borderType=cv2.BORDER_REFLECT).reshape(rv.shape)
            gain = float((hl ** 2).sum() + (hr ** 2).sum()) / 2
        c = ((a - b) ** 2).sum(axis=2) / gain ** 0.25
        if dense:
            cd = cv2.blur(c, (dense, dense))
            better = cd < best
            best[better], best_r[better] = cd[better], r
            total += cd
        if maps:
            cw = c.ravel() * weight
            for out, flat, n in zip(outs, flats, ns):
                out[k] = np.bincount(flat, weights=cw, minlength=n)
    out = outs[0] if isinstance(labels, np.ndarray) else outs
    if dense:
        return out, best_r, np.clip(1 - best * len(radii) / np.maximum(total, 1e-12), 0, 1)
    return out


def dense_estimate(left: np.ndarray, right: np.ndarray, radii: np.ndarray, window: int = 9,
                   sigma: float = 2.0) -> np.ndarray:
    """H x W: the per-pixel arg-min radius of the cross-blur cost over a ``window`` box, smoothed by
    a confidence-weighted Gaussian (confidence: 1 - min / mean of the pixel's cost curve). Noisy,
    but it marks depth edges that colour does not (an object painted like its background)."""
    _, r_pix, conf = cross_blur_cost(left, right, None, radii, dense=window)
    wgt = conf ** 2 + 1e-3
    return cv2.GaussianBlur(r_pix * wgt, (0, 0), sigma) / cv2.GaussianBlur(wgt, (0, 0), sigma)


def subpixel_argmin(cost: np.ndarray, radii: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per column: the arg-min candidate with a parabolic sub-step, and the minimum cost."""
    k = np.argmin(cost, axis=0)
    cols = np.arange(cost.shape[1])
    km, kp = np.clip(k - 1, 0, len(radii) - 1), np.clip(k + 1, 0, len(radii) - 1)
    c0, cm, cp = cost[k, cols], cost[km, cols], cost[kp, cols]
    den = cm - 2 * c0 + cp
    ok = (den > 1e-12) & (km != k) & (kp != k)
    off = np.where(ok, 0.5 * (cm - cp) / np.where(ok, den, 1.0), 0.0)
    step = radii[1] - radii[0] if len(radii) > 1 else 1.0
    return radii[k] + np.clip(off, -0.5, 0.5) * step, c0


def propagate(values: np.ndarray, conf: np.ndarray, colour: np.ndarray, pairs, smooth: float = 1.0,
              sigma: float = 8.0) -> np.ndarray:
    """``min sum_s conf_s (x_s - v_s)^2 + smooth sum_(s,t) w_st (x_s - x_t)^2`` with
    ``w_st = exp(-|Lab_s - Lab_t|^2 / sigma^2)`` (step 3), a sparse solve."""
    from scipy.sparse import coo_matrix, diags
    from scipy.sparse.linalg import spsolve

    ia, ib = pairs
    n = values.size
    w = smooth * np.exp(-((colour[ia] - colour[ib]) ** 2).sum(1) / sigma ** 2)
    lap = coo_matrix((np.concatenate([-w, -w]), (np.concatenate([ia, ib]), np.concatenate([ib, ia]))), (n, n))
    deg = np.bincount(ia, w, n) + np.bincount(ib, w, n)
    eps = 1e-6
    return np.asarray(spsolve((lap + diags(deg + conf + eps)).tocsr(), conf * values + eps * np.median(values)))


def lab_colour(image: np.ndarray) -> np.ndarray:
    """H x W x 3 CIELab (L 0..100) of the display-like image."""
    return cv2.cvtColor(np.ascontiguousarray(_rgb(image) ** (1 / 2.2), np.float32), cv2.COLOR_RGB2Lab)


def dp_disparity(left: np.ndarray, right: np.ndarray, max_radius: float = MAX_RADIUS, step: float = STEP,
                 pixels_per_segment: int = PIXELS_PER_SEGMENT, levels: tuple = LEVELS) -> DPDisparity:
    """The DP views (H x W [x C], linear [0, 1]) -> :class:`DPDisparity` at ``pixels_per_segment``
    (see the module), holding in ``levels`` the estimates at every size of ``levels`` (step 4)."""
    left, right = _views(left), _views(right)
    image = 0.5 * (left + right)
    radii = np.arange(-max_radius, max_radius + step / 2, step, dtype=np.float64)
    sizes = sorted(set(levels) | {pixels_per_segment}, reverse=True)
    depth = DEPTH_WEIGHT * dense_estimate(left, right, radii)
    labels = [superpixels(image, p, depth) for p in sizes]
    costs = cross_blur_cost(left, right, labels, radii)
    lab_image = lab_colour(image)
    out = [_estimate(lab, cost, radii, lab_image) for lab, cost in zip(labels, costs)]
    main = out[sizes.index(pixels_per_segment)]
    main.levels = tuple(out)
    return main


def _estimate(labels: np.ndarray, cost: np.ndarray, radii: np.ndarray, lab_image: np.ndarray) -> DPDisparity:
    """Steps 2-3 on one superpixel map and its cost."""
    seg_r = subpixel_argmin(cost, radii)[0]
    c_min = cost.min(axis=0)
    far = np.abs(radii[:, None] - seg_r[None]) >= 1.0
    rise = np.where(far, cost, np.inf).min(axis=0) / np.maximum(c_min, 1e-12) - 1.0
    rise = np.clip(np.nan_to_num(rise, posinf=0.0), 0, None)
    conf = rise / (rise + 1.0)
    colour = segment_means(lab_image, labels)
    pairs = adjacency(labels)
    filled = propagate(seg_r, conf, colour, pairs) if len(pairs[0]) else seg_r
    return DPDisparity(labels, radii, cost, seg_r, conf, colour, pairs, filled[labels].astype(np.float32))
