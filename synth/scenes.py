"""Scene sources for the synthetic defocus engine (OPTICS.md, "Scene sources").

A :class:`Scene` is an all-in-focus linear-RGB image plus a metric depth map, the input of the
layered dual-pixel renderer (seed 004, section 3). Sources:

* :func:`dead_leaves` - random occluding shapes with power-law radii (density ~ r^-3), one depth
  per leaf (uniform in inverse depth), painted far to near so occlusion boundaries are real.
* :func:`slanted_plane` - a textured plane, inverse depth linear across the image, optionally
  with fronto-parallel objects in front (z-tested against the plane).
* :func:`fronto_plane` - one depth everywhere.
* :func:`from_files` - any image + depth map the user supplies.

All random generators use ``np.random.default_rng(seed)`` only: same seed, bit-identical scene.
Image coordinates: pixel centres at integer (x, y), x to the right, y down.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
from core.errors import UserError

__all__ = [
    "Scene",
    "SceneError",
    "Leaf",
    "validate_scene",
    "srgb_to_linear",
    "sample_leaf_radii",
    "sample_leaves",
    "paint_leaves",
    "dead_leaves",
    "slanted_plane",
    "fronto_plane",
    "from_files",
    "load_texture_folder",
    "random_scene",
    "SCENE_KINDS",
    "IMAGE_EXTENSIONS",
]

SCENE_KINDS = ("dead_leaves", "slanted_plane", "mixed", "photo_layers")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
LEAF_SHAPES = ("disc", "ellipse", "rect", "polygon")
_DEFAULT_SHAPE_PROBS = {"disc": 0.3, "ellipse": 0.25, "rect": 0.25, "polygon": 0.2}

# Procedural texture kinds (index = code used internally).
_TEX_PINK, _TEX_GRATING, _TEX_CHECKER, _TEX_GRADIENT, _TEX_IMAGE = range(5)
_PROCEDURAL_PROBS = np.array([0.3, 0.3, 0.15, 0.25])


class SceneError(UserError):
    """Invalid scene input; the message names the source (file path or generator)."""


@dataclass
class Scene:
    image: np.ndarray  # H x W x 3 float32, linear RGB in [0, 1]
    depth: np.ndarray  # H x W float32, metres, finite, > 0
    name: str
    meta: dict = field(default_factory=dict)  # generator and its parameters (JSON-serialisable)


# --------------------------------------------------------------------------------------------
# validation and small helpers


def check_depth_values(depth: np.ndarray, source, inf_hint: str = "") -> None:
    """NaN, infinite and non-positive depths are each a :class:`SceneError` naming ``source``."""
    floating = np.issubdtype(depth.dtype, np.floating)
    n_nan = int(np.isnan(depth).sum()) if floating else 0
    if n_nan:
        raise SceneError(f"{source}: depth has {n_nan} NaN values")
    n_inf = int(np.isinf(depth).sum()) if floating else 0
    if n_inf:
        raise SceneError(f"{source}: depth has {n_inf} infinite values{inf_hint}")
    n_bad = int((depth <= 0).sum())
    if n_bad:
        raise SceneError(
            f"{source}: depth has {n_bad} values <= 0 (min {float(depth.min()):.4g}); "
            "depth must be > 0 metres (0 often marks missing depth: fill it first)"
        )


def validate_scene(image, depth, source: str) -> None:
    """Raise :class:`SceneError` (message starts with ``source``) unless image/depth form a scene.

    Checks: numpy arrays; image H x W x 3 floating point, finite, in [0, 1]; depth H x W, finite,
    > 0; same H x W; non-empty.
    """
    if not isinstance(image, np.ndarray):
        raise SceneError(f"{source}: image is a {type(image).__name__}, expected a numpy array")
    if not isinstance(depth, np.ndarray):
        raise SceneError(f"{source}: depth is a {type(depth).__name__}, expected a numpy array")
    if image.ndim != 3 or image.shape[2] != 3:
        raise SceneError(f"{source}: image has shape {image.shape}, expected H x W x 3 (RGB)")
    if depth.ndim != 2:
        raise SceneError(f"{source}: depth has shape {depth.shape}, expected H x W")
    if image.shape[:2] != depth.shape:
        raise SceneError(
            f"{source}: image size {image.shape[1]}x{image.shape[0]} and depth size "
            f"{depth.shape[1]}x{depth.shape[0]} (WxH) differ"
        )
    if image.size == 0:
        raise SceneError(f"{source}: empty image ({image.shape})")
    if not np.issubdtype(image.dtype, np.floating):
        raise SceneError(f"{source}: image dtype {image.dtype}, expected float in [0, 1]")
    if not np.issubdtype(depth.dtype, np.floating) and not np.issubdtype(depth.dtype, np.integer):
        raise SceneError(f"{source}: depth dtype {depth.dtype} is not numeric")
    bad = ~np.isfinite(image)
    if bad.any():
        raise SceneError(f"{source}: image has {int(bad.sum())} NaN/inf values")
    lo, hi = float(image.min()), float(image.max())
    if lo < 0.0 or hi > 1.0:
        raise SceneError(f"{source}: image values span [{lo:.4g}, {hi:.4g}], expected [0, 1]")
    check_depth_values(depth, source)


def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    """IEC 61966-2-1 sRGB decoding of values in [0, 1] (float32)."""
    x = np.asarray(x, dtype=np.float32)
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4).astype(np.float32)


def _f32_bounds(lo: float, hi: float) -> tuple[np.float32, np.float32]:
    """float32 bounds that stay inside [lo, hi] after rounding."""
    lo32, hi32 = np.float32(lo), np.float32(hi)
    if float(lo32) < lo:
        lo32 = np.nextafter(lo32, np.float32(np.inf))
    if float(hi32) > hi:
        hi32 = np.nextafter(hi32, np.float32(-np.inf))
    return lo32, hi32


def _clip_depth(depth: np.ndarray, near: float, far: float) -> np.ndarray:
    lo, hi = _f32_bounds(near, far)
    return np.clip(depth.astype(np.float32), lo, hi)


def _check_range(near_m: float, far_m: float, source: str) -> tuple[float, float]:
    near, far = float(near_m), float(far_m)
    if not (math.isfinite(near) and math.isfinite(far) and 0 < near <= far):
        raise SceneError(f"{source}: need 0 < near_m <= far_m (finite), got {near_m}, {far_m}")
    return near, far


def _check_size(height: int, width: int, source: str) -> tuple[int, int]:
    h, w = int(height), int(width)
    if h < 2 or w < 2 or h != height or w != width:
        raise SceneError(f"{source}: size must be integers >= 2, got {height}x{width}")
    return h, w


def _seed_meta(seed):
    return int(seed) if isinstance(seed, (int, np.integer)) else str(seed)


def _prepare_textures(textures, source: str) -> list[np.ndarray]:
    out = []
    for i, t in enumerate(textures or ()):
        t = np.asarray(t)
        if t.ndim == 2:
            t = np.repeat(t[:, :, None], 3, axis=2)
        if t.ndim != 3 or t.shape[2] not in (3, 4) or t.shape[0] < 2 or t.shape[1] < 2:
            raise SceneError(f"{source}: textures[{i}] has shape {t.shape}, expected H x W (x 3)")
        if t.dtype == np.float32 and t.shape[2] == 3 and t.flags.c_contiguous:
            out.append(t)  # fast path (e.g. from load_texture_folder): no per-call full scan
            continue
        t = np.ascontiguousarray(t[:, :, :3], dtype=np.float32)
        if not np.isfinite(t).all() or t.min() < 0 or t.max() > 1:
            raise SceneError(f"{source}: textures[{i}] must be finite float in [0, 1]")
        out.append(t)
    return out


# --------------------------------------------------------------------------------------------
# leaves: geometry, depth, painting


@dataclass
class Leaf:
    """One dead-leaves shape. ``radius`` is the major half-size in pixels, ``aspect`` the
    minor/major ratio (ellipse, rect), ``angle`` the rotation in radians, ``vertices`` the
    polygon vertices relative to the centre for a unit radius, ``depth`` in metres.
    ``shape == "full"`` covers the whole image (background)."""

    shape: str
    cx: float = 0.0
    cy: float = 0.0
    radius: float = 1.0
    depth: float = 1.0
    aspect: float = 1.0
    angle: float = 0.0
    vertices: tuple | None = None


def sample_leaf_radii(rng: np.random.Generator, n: int, r_min: float, r_max: float) -> np.ndarray:
    """Radii with density ~ r^-3 on [r_min, r_max] (dead-leaves statistics), inverse CDF."""
    if not (0 < r_min < r_max):
        raise SceneError(f"dead_leaves: need 0 < r_min < r_max, got {r_min}, {r_max}")
    a, b = r_min ** -2.0, r_max ** -2.0
    u = rng.random(n)
    return np.clip((a - u * (a - b)) ** -0.5, r_min, r_max)


def sample_leaves(
    rng: np.random.Generator,
    n: int,
    height: int,
    width: int,
    *,
    near_m: float,
    far_m: float,
    r_min: float,
    r_max: float,
    shape_probs: dict | None = None,
) -> list[Leaf]:
    """``n`` random leaves: power-law radii, uniform centres, depth uniform in inverse depth
    between 1/far and 1/near (so defocus is spread evenly)."""
    probs = dict(_DEFAULT_SHAPE_PROBS if shape_probs is None else shape_probs)
    unknown = set(probs) - set(LEAF_SHAPES)
    if unknown or not probs:
        raise SceneError(f"dead_leaves: shape_probs keys must be in {LEAF_SHAPES}, got {sorted(probs)}")
    names = list(probs)
    p = np.array([float(probs[k]) for k in names])
    if (p < 0).any() or p.sum() <= 0:
        raise SceneError(f"dead_leaves: shape_probs must be >= 0 with a positive sum, got {probs}")
    p = p / p.sum()
    radii = sample_leaf_radii(rng, n, r_min, r_max)
    cx = rng.uniform(-0.5, width - 0.5, n)
    cy = rng.uniform(-0.5, height - 0.5, n)
    kinds = rng.choice(len(names), size=n, p=p)
    aspect = rng.uniform(0.3, 1.0, n)
    angle = rng.uniform(0.0, np.pi, n)
    inv = rng.uniform(1.0 / far_m, 1.0 / near_m, n)
    depth = np.clip(1.0 / inv, near_m, far_m)
    n_vert = rng.integers(3, 9, n)
    leaves = []
    for i in range(n):
        shape = names[kinds[i]]
        verts = None
        if shape == "polygon":
            k = int(n_vert[i])
            th = np.sort(rng.uniform(0.0, 2 * np.pi, k))
            rr = rng.uniform(0.5, 1.0, k)
            verts = tuple((float(a), float(b)) for a, b in zip(rr * np.cos(th), rr * np.sin(th)))
        leaves.append(
            Leaf(shape, float(cx[i]), float(cy[i]), float(radii[i]), float(depth[i]),
                 float(aspect[i]), float(angle[i]), verts)
        )
    return leaves


_SHIFT = 4
_ONE = 1 << _SHIFT


def _fixed(x) -> int:
    return int(round(float(x) * _ONE))


def _draw_leaf(img: np.ndarray, leaf: Leaf, value: int) -> None:
    """Fill ``leaf`` with ``value`` (cv2 drawing, sub-pixel precision, no anti-aliasing)."""
    s = leaf.shape
    c = (_fixed(leaf.cx), _fixed(leaf.cy))
    if s == "full":
        img[...] = value
    elif s == "disc":
        cv2.circle(img, c, _fixed(leaf.radius), value, -1, cv2.LINE_8, _SHIFT)
    elif s == "ellipse":
        axes = (_fixed(leaf.radius), _fixed(leaf.radius * leaf.aspect))
        cv2.ellipse(img, c, axes, math.degrees(leaf.angle), 0, 360, value, -1, cv2.LINE_8, _SHIFT)
    elif s in ("rect", "polygon"):
        if s == "rect":
            rel = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]], np.float64)
            rel[:, 1] *= leaf.aspect
        else:
            rel = np.asarray(leaf.vertices, np.float64).reshape(-1, 2)
        ca, sa = math.cos(leaf.angle), math.sin(leaf.angle)
        rot = np.array([[ca, sa], [-sa, ca]])  # row vectors: p @ rot == R(angle) p
        pts = rel @ rot * leaf.radius + (leaf.cx, leaf.cy)
        pts = np.round(pts * _ONE).astype(np.int32)
        if s == "rect":
            cv2.fillConvexPoly(img, pts, value, cv2.LINE_8, _SHIFT)
        else:
            cv2.fillPoly(img, [pts], value, cv2.LINE_8, _SHIFT)
    else:
        raise SceneError(f"dead_leaves: unknown leaf shape {s!r}")


def paint_leaves(height: int, width: int, leaves: Sequence[Leaf]) -> tuple[np.ndarray, np.ndarray]:
    """Paint leaves far to near (sorted by depth, ties in list order); return ``(labels, depth)``.

    ``labels`` (int32) holds the index in ``leaves`` of the leaf visible at each pixel (-1 where
    none), ``depth`` (float32) that leaf's depth (inf where none): every pixel's depth is that of
    the nearest leaf covering it, so occlusion boundaries are physically consistent.
    """
    labels = np.full((int(height), int(width)), -1, np.int32)
    order = sorted(range(len(leaves)), key=lambda i: -leaves[i].depth)
    for i in order:
        _draw_leaf(labels, leaves[i], i)
    depths = np.array([lf.depth for lf in leaves] + [np.inf], np.float32)
    return labels, depths[labels]  # label -1 picks the trailing inf


# --------------------------------------------------------------------------------------------
# textures


def _noise_fields(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Two periodic, unit-std noise fields: 1/f amplitude (pink) and 1/f^0.5 (rougher)."""
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    f = np.hypot(fx, fy)
    f[0, 0] = 1.0
    spec = np.fft.rfft2(rng.standard_normal((2, h, w)))
    spec[0] *= f ** -1.0
    spec[1] *= f ** -0.5
    spec[:, 0, 0] = 0.0
    out = np.fft.irfft2(spec, s=(h, w))
    out /= out.std(axis=(1, 2), keepdims=True) + 1e-12
    return out.astype(np.float32)


def _random_colours(rng: np.random.Generator, n: int) -> np.ndarray:
    """Colours uniform in sRGB, desaturated by a random amount, decoded to linear."""
    c = rng.uniform(0.04, 0.98, (n, 3))
    grey = c.mean(axis=1, keepdims=True)
    c = grey + (c - grey) * rng.uniform(0.15, 1.0, (n, 1))
    return srgb_to_linear(c)


def _sample_texture_params(rng: np.random.Generator, n: int, n_textures: int,
                           texture_probability: float) -> dict:
    """Per-leaf texture parameters (all drawn up front, vectorised)."""
    p = _PROCEDURAL_PROBS / _PROCEDURAL_PROBS.sum()
    kind = rng.choice(4, size=n, p=p)
    if n_textures:
        kind = np.where(rng.random(n) < texture_probability, _TEX_IMAGE, kind)
    prm = {
        "kind": kind.astype(np.int8),
        "c0": _random_colours(rng, n),
        "c1": _random_colours(rng, n),
        "angle": rng.uniform(0.0, np.pi, n),
        "period": np.exp(rng.uniform(np.log(2.5), np.log(48.0), n)),
        "phase": rng.uniform(0.0, 2 * np.pi, n),
        "square": rng.random(n) < 0.5,
        "amp": np.where(kind == _TEX_PINK, rng.uniform(0.1, 0.6, n), rng.uniform(0.0, 0.15, n)),
        "w_a": rng.uniform(0.2, 1.0, (n, 1)) + rng.uniform(-0.2, 0.2, (n, 3)),
        "w_b": rng.uniform(-0.6, 0.6, (n, 3)),
        "off_x": rng.integers(0, 1 << 30, n),
        "off_y": rng.integers(0, 1 << 30, n),
        "tex": rng.integers(0, max(n_textures, 1), n),
        "tex_scale": np.exp(rng.uniform(np.log(0.6), np.log(1.6), n)),
        "tex_u": rng.random(n),
        "tex_v": rng.random(n),
        "gain": rng.uniform(0.6, 1.15, n),
    }
    return prm


def _reflect(t: np.ndarray, n: int) -> np.ndarray:
    """Reflect continuous coordinates into [0, n - 1]."""
    period = 2.0 * (n - 1)
    t = np.mod(t, period)
    return np.where(t > n - 1, period - t, t)


def _bilinear(tex: np.ndarray, tx: np.ndarray, ty: np.ndarray) -> np.ndarray:
    h, w = tex.shape[:2]
    tx, ty = _reflect(tx, w), _reflect(ty, h)
    x0 = np.minimum(tx.astype(np.int32), w - 2)
    y0 = np.minimum(ty.astype(np.int32), h - 2)
    fx = (tx - x0).astype(np.float32)[:, None]
    fy = (ty - y0).astype(np.float32)[:, None]
    flat = tex.reshape(-1, tex.shape[2])
    i00 = y0 * w + x0
    top = flat[i00] * (1 - fx) + flat[i00 + 1] * fx
    bot = flat[i00 + w] * (1 - fx) + flat[i00 + w + 1] * fx
    return top * (1 - fy) + bot * fy


def _shade(labels: np.ndarray, leaves: Sequence[Leaf], prm: dict, noise: np.ndarray,
           textures: list[np.ndarray], base: np.ndarray | None = None) -> np.ndarray:
    """Texture every pixel from the parameters of its visible leaf (vectorised over pixels).

    Pixels with label -1 keep ``base`` (zeros if None).
    """
    h, w = labels.shape
    image = np.zeros((h, w, 3), np.float32) if base is None else base.copy()
    flat_img = image.reshape(-1, 3)
    idx = np.flatnonzero(labels.ravel() >= 0)
    if idx.size == 0:
        return image
    lbl = labels.ravel()[idx]
    ys, xs = np.divmod(idx, w)
    cx = np.array([lf.cx for lf in leaves], np.float32)[lbl]
    cy = np.array([lf.cy for lf in leaves], np.float32)[lbl]
    rad = np.array([lf.radius for lf in leaves], np.float32)[lbl]
    u = xs.astype(np.float32) - cx
    v = ys.astype(np.float32) - cy
    ang = prm["angle"].astype(np.float32)[lbl]
    ca, sa = np.cos(ang), np.sin(ang)
    up = u * ca + v * sa
    vp = v * ca - u * sa
    kind = prm["kind"][lbl]
    t = np.zeros(idx.size, np.float32)  # blend factor between c0 and c1

    sel = np.flatnonzero(kind == _TEX_GRATING)
    if sel.size:
        li = lbl[sel]
        s = 0.5 + 0.5 * np.sin(up[sel] * (2 * np.pi / prm["period"][li]) + prm["phase"][li])
        t[sel] = np.where(prm["square"][li], (s > 0.5).astype(np.float32), s)
    sel = np.flatnonzero(kind == _TEX_CHECKER)
    if sel.size:
        per = prm["period"][lbl[sel]]
        t[sel] = (np.floor(up[sel] / per) + np.floor(vp[sel] / per)) % 2
    sel = np.flatnonzero(kind == _TEX_GRADIENT)
    if sel.size:
        t[sel] = np.clip(0.5 + up[sel] / (2.0 * rad[sel]), 0.0, 1.0)

    c0 = prm["c0"].astype(np.float32)[lbl]
    c1 = prm["c1"].astype(np.float32)[lbl]
    col = c0 + (c1 - c0) * t[:, None]

    # 1/f noise modulation (every leaf; strong for "pink" leaves), periodic fields -> wrap.
    nf = noise.shape[0]
    gy = (ys + prm["off_y"][lbl]) % h
    gx = (xs + prm["off_x"][lbl]) % w
    g = gy * w + gx
    na = noise[0].ravel()[g][:, None]
    nb = noise[1].ravel()[g][:, None] if nf > 1 else 0.0
    mod = na * prm["w_a"].astype(np.float32)[lbl] + nb * prm["w_b"].astype(np.float32)[lbl]
    col *= 1.0 + prm["amp"].astype(np.float32)[lbl, None] * mod

    sel = np.flatnonzero(kind == _TEX_IMAGE)
    if sel.size:
        li = lbl[sel]
        tex_ids = prm["tex"][li]
        for k in np.unique(tex_ids):
            sub = sel[tex_ids == k]
            lk = lbl[sub]
            tex = textures[int(k)]
            th, tw = tex.shape[:2]
            sc = prm["tex_scale"][lk]
            tx = prm["tex_u"][lk] * (tw - 1) + up[sub] * sc
            ty = prm["tex_v"][lk] * (th - 1) + vp[sub] * sc
            col[sub] = _bilinear(tex, tx, ty) * prm["gain"][lk, None].astype(np.float32)

    flat_img[idx] = np.clip(col, 0.0, 1.0)
    return image


# --------------------------------------------------------------------------------------------
# generators


def _default_leaf_params(h: int, w: int, n_leaves, r_min, r_max, source: str):
    m = min(h, w)
    r_min = max(1.5, 0.008 * m) if r_min is None else float(r_min)
    r_max = max(r_min * 1.5, 0.3 * m) if r_max is None else float(r_max)
    if not (0 < r_min < r_max):
        raise SceneError(f"{source}: need 0 < r_min < r_max, got {r_min}, {r_max}")
    if n_leaves is None:
        # E[r^2] under density ~ r^-3; ~0.75 * pi r^2 mean area over the shape mix; coverage 2.5.
        er2 = 2.0 * math.log(r_max / r_min) / (r_min ** -2 - r_max ** -2)
        n_leaves = int(np.clip(round(2.5 * h * w / (0.75 * math.pi * er2)), 32, 4000))
    n_leaves = int(n_leaves)
    if n_leaves < 0:
        raise SceneError(f"{source}: n_leaves must be >= 0, got {n_leaves}")
    return n_leaves, r_min, r_max


def _render_leaves(rng, h, w, *, near, far, n_leaves, r_min, r_max, shape_probs, textures,
                   texture_probability):
    """Background leaf at ``far`` + ``n_leaves`` random leaves -> (image, depth, labels, leaves)."""
    bg = Leaf("full", (w - 1) / 2.0, (h - 1) / 2.0, 0.5 * math.hypot(h, w), far)
    leaves = [bg] + sample_leaves(rng, n_leaves, h, w, near_m=near, far_m=far, r_min=r_min,
                                  r_max=r_max, shape_probs=shape_probs)
    labels, depth = paint_leaves(h, w, leaves)
    prm = _sample_texture_params(rng, len(leaves), len(textures), texture_probability)
    noise = _noise_fields(rng, h, w)
    image = _shade(labels, leaves, prm, noise, textures)
    return image, _clip_depth(depth, near, far), labels, leaves


def dead_leaves(
    height: int,
    width: int,
    *,
    seed,
    near_m: float,
    far_m: float,
    n_leaves: int | None = None,
    textures: Sequence[np.ndarray] | None = None,
    r_min: float | None = None,
    r_max: float | None = None,
    shape_probs: dict | None = None,
    texture_probability: float = 0.5,
) -> Scene:
    """Dead-leaves scene: occluding discs/ellipses/rectangles/polygons, radii ~ r^-3 on
    [r_min, r_max] (defaults 0.8 % and 30 % of the short side), each leaf at a depth uniform in
    inverse depth on [1/far, 1/near], painted far to near over a background leaf at ``far_m``.

    ``n_leaves`` defaults to about 2.5x coverage of the image (clipped to [32, 4000]). Leaf
    textures: smooth colour + 1/f noise, gratings (sine or square), checkerboards, colour
    gradients, and (with probability ``texture_probability``) random rotated/scaled crops of
    ``textures`` (H x W x 3 float [0, 1], e.g. from :func:`load_texture_folder`).
    """
    src = "dead_leaves"
    h, w = _check_size(height, width, src)
    near, far = _check_range(near_m, far_m, src)
    tex = _prepare_textures(textures, src)
    n, r_min, r_max = _default_leaf_params(h, w, n_leaves, r_min, r_max, src)
    rng = np.random.default_rng(seed)
    image, depth, labels, leaves = _render_leaves(
        rng, h, w, near=near, far=far, n_leaves=n, r_min=r_min, r_max=r_max,
        shape_probs=shape_probs, textures=tex, texture_probability=texture_probability)
    validate_scene(image, depth, src)
    meta = {
        "generator": src, "seed": _seed_meta(seed), "height": h, "width": w,
        "near_m": near, "far_m": far, "n_leaves": n, "r_min": r_min, "r_max": r_max,
        "shape_probs": {k: float(v) for k, v in
                        (_DEFAULT_SHAPE_PROBS if shape_probs is None else shape_probs).items()},
        "n_textures": len(tex), "texture_probability": float(texture_probability),
        "n_visible_leaves": int(np.unique(labels).size),
    }
    return Scene(image, depth, f"dead_leaves_{meta['seed']}", meta)


def _collage(rng, h, w, textures) -> np.ndarray:
    """Flat (depth-free) dead-leaves texture used to paint planes."""
    n, r_min, r_max = _default_leaf_params(h, w, None, None, None, "collage")
    image, _, _, _ = _render_leaves(rng, h, w, near=1.0, far=2.0, n_leaves=n, r_min=r_min,
                                    r_max=r_max, shape_probs=None, textures=textures,
                                    texture_probability=0.5)
    return image


def _slanted_plane(rng, h, w, near, far, tex, direction, n_objects):
    theta = float(rng.uniform(0.0, 2 * np.pi)) if direction is None else float(direction)
    nx, ny = math.cos(theta), math.sin(theta)
    image = _collage(rng, h, w, tex)
    ys, xs = np.mgrid[0:h, 0:w]
    proj = xs * nx + ys * ny
    corners = [0.0, (w - 1) * nx, (h - 1) * ny, (w - 1) * nx + (h - 1) * ny]
    pmin, pmax = min(corners), max(corners)
    t = (proj - pmin) / (pmax - pmin)  # 0 at the far side, 1 at the near side
    inv = 1.0 / far + t * (1.0 / near - 1.0 / far)
    depth = 1.0 / inv
    n_obj = int(n_objects)
    if n_obj > 0:
        m = min(h, w)
        labels = np.full((h, w), -1, np.int32)
        leaves = sample_leaves(rng, n_obj, h, w, near_m=near, far_m=far,
                               r_min=0.05 * m, r_max=0.2 * m)
        for lf in leaves:  # fronto-parallel, in front of the plane at its centre
            cxi = int(np.clip(round(lf.cx), 0, w - 1))
            cyi = int(np.clip(round(lf.cy), 0, h - 1))
            lf.depth = float(1.0 / rng.uniform(inv[cyi, cxi], 1.0 / near))
        order = sorted(range(n_obj), key=lambda i: -leaves[i].depth)
        mask = np.zeros((h, w), np.uint8)
        for i in order:  # z-test: an object hides the plane only where it is nearer
            mask[:] = 0
            _draw_leaf(mask, leaves[i], 1)
            hit = (mask > 0) & (leaves[i].depth < depth)
            labels[hit] = i
            depth[hit] = leaves[i].depth
        prm = _sample_texture_params(rng, n_obj, len(tex), 0.5)
        image = _shade(labels, leaves, prm, _noise_fields(rng, h, w), tex, base=image)
    return image, _clip_depth(depth, near, far), theta


def slanted_plane(
    height: int,
    width: int,
    *,
    seed,
    near_m: float,
    far_m: float,
    textures: Sequence[np.ndarray] | None = None,
    direction: float | None = None,
    n_objects: int = 0,
) -> Scene:
    """Textured plane whose inverse depth is linear along ``direction`` (radians from +x towards
    +y; random if None): 1/far at the image corner furthest against the direction, 1/near at
    the corner furthest along it (a plane under perspective has inverse depth affine in image
    coordinates). The texture is a flat dead-leaves collage painted in the image plane (no
    foreshortening). ``n_objects`` fronto-parallel leaves are added in front of the plane
    (depth between near and the plane's depth at their centre, z-tested per pixel).
    """
    src = "slanted_plane"
    h, w = _check_size(height, width, src)
    near, far = _check_range(near_m, far_m, src)
    tex = _prepare_textures(textures, src)
    rng = np.random.default_rng(seed)
    image, depth, theta = _slanted_plane(rng, h, w, near, far, tex, direction, n_objects)
    validate_scene(image, depth, src)
    meta = {
        "generator": src, "seed": _seed_meta(seed), "height": h, "width": w, "near_m": near,
        "far_m": far, "direction_rad": theta, "direction": [math.cos(theta), math.sin(theta)],
        "n_objects": int(n_objects), "n_textures": len(tex),
    }
    return Scene(image, depth, f"slanted_plane_{meta['seed']}", meta)


def fronto_plane(
    height: int,
    width: int,
    *,
    depth_m: float,
    seed,
    textures: Sequence[np.ndarray] | None = None,
) -> Scene:
    """Textured fronto-parallel plane: depth ``depth_m`` everywhere (float32)."""
    src = "fronto_plane"
    h, w = _check_size(height, width, src)
    d, _ = _check_range(depth_m, depth_m, src)
    tex = _prepare_textures(textures, src)
    rng = np.random.default_rng(seed)
    image = _collage(rng, h, w, tex)
    depth = np.full((h, w), np.float32(d), np.float32)
    validate_scene(image, depth, src)
    meta = {"generator": src, "seed": _seed_meta(seed), "height": h, "width": w,
            "depth_m": d, "n_textures": len(tex)}
    return Scene(image, depth, f"fronto_plane_{meta['seed']}", meta)


def random_scene(
    kind: str,
    height: int,
    width: int,
    *,
    seed,
    near_m: float,
    far_m: float,
    textures: Sequence[np.ndarray] | None = None,
) -> Scene:
    """Scene of ``kind`` ("dead_leaves", "slanted_plane" or "mixed": 60/40 of the two, or
    "photo_layers": 6-30 large occluding layers, 80 % textured with ``textures`` (photos), so the
    scene has the larger smooth regions and real textures of photographs) with its own
    parameters (leaf count, radius range, objects in front, direction) drawn from ``seed``."""
    src = f"random_scene({kind!r})"
    if kind not in SCENE_KINDS:
        raise SceneError(f"{src}: kind must be one of {SCENE_KINDS}")
    h, w = _check_size(height, width, src)
    near, far = _check_range(near_m, far_m, src)
    tex = _prepare_textures(textures, src)
    rng = np.random.default_rng(seed)
    chosen = kind
    if kind == "mixed":
        chosen = "dead_leaves" if rng.random() < 0.6 else "slanted_plane"
    meta = {"generator": "random_scene", "kind": kind, "chosen": chosen,
            "seed": _seed_meta(seed), "height": h, "width": w, "near_m": near, "far_m": far,
            "n_textures": len(tex)}
    if chosen == "photo_layers":
        if not tex:
            raise SceneError(f"{src}: photo_layers scenes need photos (textures); none given")
        m = min(h, w)
        r_min = float(rng.uniform(0.05, 0.12)) * m
        r_max = max(2.0 * r_min, float(rng.uniform(0.35, 0.7)) * m)
        n = int(rng.integers(6, 30))
        image, depth, _, _ = _render_leaves(
            rng, h, w, near=near, far=far, n_leaves=n, r_min=r_min, r_max=r_max,
            shape_probs=None, textures=tex, texture_probability=0.8)
        meta.update(n_leaves=n, r_min=r_min, r_max=r_max)
    elif chosen == "dead_leaves":
        m = min(h, w)
        r_min = max(1.5, float(rng.uniform(0.004, 0.015)) * m)
        r_max = max(2.0 * r_min, float(rng.uniform(0.15, 0.4)) * m)
        n, r_min, r_max = _default_leaf_params(h, w, None, r_min, r_max, src)
        n = int(np.clip(round(n * rng.uniform(0.6, 1.4)), 32, 4000))
        image, depth, _, _ = _render_leaves(
            rng, h, w, near=near, far=far, n_leaves=n, r_min=r_min, r_max=r_max,
            shape_probs=None, textures=tex, texture_probability=0.5)
        meta.update(n_leaves=n, r_min=r_min, r_max=r_max)
    else:
        n_obj = int(rng.integers(0, 4))
        image, depth, theta = _slanted_plane(rng, h, w, near, far, tex, None, n_obj)
        meta.update(n_objects=n_obj, direction_rad=theta)
    validate_scene(image, depth, src)
    return Scene(image, depth, f"{chosen}_{meta['seed']}", meta)


# --------------------------------------------------------------------------------------------
# files


def _decode(path: Path, what: str) -> np.ndarray:
    if not path.exists():
        raise SceneError(f"{path}: {what} file not found")
    if not path.is_file():
        raise SceneError(f"{path}: {what} path is not a file")
    try:
        data = np.fromfile(str(path), np.uint8)
        img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    except (OSError, cv2.error) as e:
        raise SceneError(f"{path}: cannot read {what} file ({e})") from e
    if img is None:
        raise SceneError(f"{path}: cannot decode {what} file (corrupt or unsupported format)")
    return img


def _read_image(path, srgb: bool = True) -> np.ndarray:
    """8/16-bit (or float) image file -> H x W x 3 float32 RGB in [0, 1].

    Integer images are taken as sRGB-encoded and decoded to linear when ``srgb`` (else scaled
    only); float files (e.g. TIFF) are taken as linear and must lie in [0, 1].
    """
    path = Path(path)
    img = _decode(path, "image")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    elif img.ndim == 3 and img.shape[2] in (3, 4):
        img = img[:, :, 2::-1]  # BGR(A) -> RGB, alpha dropped
    else:
        raise SceneError(f"{path}: unsupported image layout {img.shape}")
    if img.dtype == np.uint8:
        out = img.astype(np.float32) / 255.0
    elif img.dtype == np.uint16:
        out = img.astype(np.float32) / 65535.0
    elif np.issubdtype(img.dtype, np.floating):
        out = img.astype(np.float32)
        if not np.isfinite(out).all() or out.min() < 0 or out.max() > 1:
            raise SceneError(f"{path}: float image must be finite and in [0, 1]")
        return np.ascontiguousarray(out)
    else:
        raise SceneError(f"{path}: unsupported image dtype {img.dtype} (use 8/16-bit)")
    return np.ascontiguousarray(srgb_to_linear(out) if srgb else out)


def _read_depth(path, units: str, scale: float, max_depth_m) -> np.ndarray:
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        if not path.is_file():
            raise SceneError(f"{path}: depth file not found")
        try:
            raw = np.load(str(path), allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise SceneError(f"{path}: cannot read .npy depth ({e})") from e
        if not isinstance(raw, np.ndarray) or not (
            np.issubdtype(raw.dtype, np.floating) or np.issubdtype(raw.dtype, np.integer)
        ):
            raise SceneError(f"{path}: depth array must be numeric, got {getattr(raw, 'dtype', type(raw))}")
    elif suffix in (".png", ".tif", ".tiff"):
        raw = _decode(path, "depth")
    elif suffix == ".exr":
        raise SceneError(f"{path}: OpenEXR depth is not supported; convert it to .npy or 16-bit PNG")
    else:
        raise SceneError(f"{path}: unsupported depth format {suffix!r} (use .npy or 16-bit .png)")
    if raw.ndim == 3 and raw.shape[2] == 1:
        raw = raw[:, :, 0]
    if raw.ndim != 2:
        raise SceneError(f"{path}: depth must be single-channel H x W, got shape {raw.shape}")
    val = raw.astype(np.float64) * float(scale)
    with np.errstate(divide="ignore", invalid="ignore"):
        if units == "m":
            depth = val
        elif units == "mm":
            depth = val / 1000.0
        elif units == "inverse":
            depth = 1.0 / val
        else:
            raise SceneError(f"{path}: depth_units must be 'm', 'mm' or 'inverse', got {units!r}")
    if max_depth_m is not None:
        depth = np.where(np.isnan(depth), depth, np.minimum(depth, float(max_depth_m)))
    check_depth_values(depth, path, " (set max_depth_m to clamp)")
    return depth.astype(np.float32)


def from_files(
    image_path,
    depth_path,
    *,
    depth_units: str = "m",
    depth_scale: float = 1.0,
    srgb: bool = True,
    max_depth_m: float | None = None,
    name: str | None = None,
) -> Scene:
    """Scene from an image file (8/16-bit PNG/JPG; sRGB decoded to linear unless ``srgb=False``;
    grey replicated, alpha dropped) and a depth file (16-bit PNG or .npy, loaded with
    ``allow_pickle=False``; EXR is not supported). Depth = stored value * ``depth_scale`` in
    ``depth_units``: "m", "mm" or "inverse" (1/m). ``max_depth_m`` clamps far depth (e.g. inverse
    depth 0 = infinity). Any problem raises :class:`SceneError` naming the file.
    """
    image = _read_image(image_path, srgb)
    depth = _read_depth(depth_path, depth_units, depth_scale, max_depth_m)
    if image.shape[:2] != depth.shape:
        raise SceneError(
            f"{image_path} ({image.shape[1]}x{image.shape[0]}) and {depth_path} "
            f"({depth.shape[1]}x{depth.shape[0]}): image and depth sizes (WxH) differ"
        )
    validate_scene(image, depth, f"{image_path} + {depth_path}")
    meta = {"generator": "from_files", "image_path": str(image_path), "depth_path": str(depth_path),
            "depth_units": depth_units, "depth_scale": float(depth_scale), "srgb": bool(srgb),
            "max_depth_m": None if max_depth_m is None else float(max_depth_m)}
    return Scene(image, depth, name or Path(image_path).stem, meta)


def load_texture_folder(folder, *, srgb: bool = True, max_side: int | None = 1024) -> list[np.ndarray]:
    """All images (``IMAGE_EXTENSIONS``, sorted by name) in ``folder`` as H x W x 3 float32 linear
    RGB in [0, 1] (see :func:`from_files` for decoding), downscaled (INTER_AREA) so the longest
    side is at most ``max_side``. Missing/empty folder or an unreadable image -> SceneError."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SceneError(f"{folder}: texture folder not found")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise SceneError(f"{folder}: no images ({', '.join(IMAGE_EXTENSIONS)}) in texture folder")
    out = []
    for p in files:
        img = _read_image(p, srgb)
        if min(img.shape[:2]) < 2:
            raise SceneError(f"{p}: texture too small ({img.shape[1]}x{img.shape[0]})")
        if max_side and max(img.shape[:2]) > max_side:
            f = max_side / max(img.shape[:2])
            size = (max(2, round(img.shape[1] * f)), max(2, round(img.shape[0] * f)))
            img = np.clip(cv2.resize(img, size, interpolation=cv2.INTER_AREA), 0.0, 1.0)
        out.append(np.ascontiguousarray(img, dtype=np.float32))
    return out
