"""Synthetic phone wide (W) + ultra-wide (UW) pairs for DC2 and for the UW->W alignment code.

Geometry (our documented model): both cameras look along the same axis; UW sits ``baseline_mm``
to the right of W, so a point at depth d shifts left in UW by ``disp = f_W[px] * B / d`` W
pixels. The UW sees a field of view ``fov_ratio`` times W's (the scene is generated with a
margin around W's crop) at ``uw_resolution_factor`` of W's angular resolution.

Per sample: W (shallow depth of field, the capture's focus), UW (deep depth of field, lower
resolution, white-balance gains, its own noise), ground-truth flow from each W pixel to UW pixel
coordinates and the W pixels occluded in UW (z-buffer), W's defocus map |CoC_W|, and a refocus
target (same scene, another focus distance and aperture) with its defocus map.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from calibration.cameras import CameraProfile
from calibration.dp_psf import PSFParams
from synth import degrade
from synth.render import COC_STEP, ParametricPSF, render_dp
from synth.scenes import Scene


@dataclass
class DualCameraSample:
    wide: np.ndarray  # H x W x 3
    ultrawide: np.ndarray  # Hu x Wu x 3, full UW field of view
    sharp: np.ndarray  # H x W x 3 all-in-focus from W's viewpoint
    depth: np.ndarray  # H x W metres (W viewpoint)
    defocus_wide: np.ndarray  # H x W |CoC| of the W capture, px
    defocus_target: np.ndarray  # H x W |CoC| of the refocus target, px
    refocused: np.ndarray  # H x W x 3 target: W re-rendered with target focus and aperture
    flow_w_to_uw: np.ndarray  # H x W x 2: W pixel (x, y) -> UW pixel (x + fx, y + fy), UW pixel units
    occlusion: np.ndarray  # H x W bool: W pixels not visible in UW
    meta: dict = field(default_factory=dict)

    def uw_prealigned(self) -> np.ndarray:
        """UW cropped to W's field of view and resized to W's size (FOV pre-alignment with the
        known geometry); what remains is the parallax the optical flow must find."""
        h, w = self.wide.shape[:2]
        m = self.meta
        scale = m["uw_resolution_factor"]
        x0, y0 = m["margin_x"] * scale, m["margin_y"] * scale
        mat = np.float32([[scale, 0, x0], [0, scale, y0]])
        return cv2.warpAffine(self.ultrawide, mat, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_REFLECT101)


def uw_view_disparity(disp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Forward-splat W's per-pixel disparity (px, leftward shift) into the UW viewpoint with a
    z-buffer (nearer = larger disparity wins). Returns (UW-frame disparity, hole mask); holes
    (disocclusions) are filled from the farther neighbour along the row."""
    h, w = disp.shape
    target = np.rint(np.arange(w)[None, :] - disp).astype(np.int64)
    out = np.full((h, w), -np.inf)
    rows = np.repeat(np.arange(h)[:, None], w, axis=1)
    valid = (target >= 0) & (target < w)
    order = np.argsort(disp[valid], kind="stable")  # far first, near last: near overwrites
    ys, xs, ds = rows[valid][order], target[valid][order], disp[valid][order]
    out[ys, xs] = ds
    holes = ~np.isfinite(out)
    if holes.any():
        # fill each hole with the smaller (farther) of the nearest valid values left and right
        idx = np.where(~holes, np.arange(w)[None, :], -1)
        left_idx = np.maximum.accumulate(idx, axis=1)
        idx_r = np.where(~holes, np.arange(w)[None, :], w)
        right_idx = np.minimum.accumulate(idx_r[:, ::-1], axis=1)[:, ::-1]
        lv = np.where(left_idx >= 0, np.take_along_axis(out, np.clip(left_idx, 0, w - 1), 1), np.inf)
        rv = np.where(right_idx < w, np.take_along_axis(out, np.clip(right_idx, 0, w - 1), 1), np.inf)
        fill = np.minimum(lv, rv)
        fill[~np.isfinite(fill)] = 0.0
        out = np.where(holes, fill, out)
    return out.astype(np.float32), holes


def _occluded_in_uw(disp: np.ndarray, uw_disp: np.ndarray, tol: float = 0.5) -> np.ndarray:
    """A W pixel is occluded when something nearer lands where it lands in UW, or it leaves UW."""
    h, w = disp.shape
    target = np.rint(np.arange(w)[None, :] - disp).astype(np.int64)
    inside = (target >= 0) & (target < w)
    seen = np.take_along_axis(uw_disp, np.clip(target, 0, w - 1), 1)
    return ~inside | (seen > disp + tol)


def make_dual_camera_sample(scene: Scene, wide: CameraProfile, ultrawide: CameraProfile, *,
                            rng: np.random.Generator, baseline_mm: float, size: tuple[int, int],
                            scale: float = 0.25, fov_ratio: float = 2.0, uw_resolution_factor: float = 0.5,
                            white_balance_gains=((0.9, 1.1), (0.95, 1.05), (0.9, 1.1)),
                            noise_sigma: float = 0.01, psf_params: PSFParams = PSFParams(),
                            target_f_number: float | None = None, device="auto") -> DualCameraSample:
    """Render a W/UW pair from ``scene`` (which must be ``fov_ratio`` times ``size``, W's crop in
    its centre). ``scale`` is the render scale relative to the native sensors (0.25: a 4032-px
    sensor rendered 1008 px wide). The capture focuses on a random depth of the scene."""
    h, w = size
    H, W = scene.depth.shape
    my, mx = (H - h) // 2, (W - w) // 2
    if my < 0 or mx < 0:
        raise ValueError(f"scene {scene.depth.shape} is smaller than the W crop {size}")
    depth = scene.depth.astype(np.float64)
    f_px = wide.focal_length / (wide.pixel_pitch_um * 1e-3) * scale
    disp = (f_px * baseline_mm / (depth * 1000.0)).astype(np.float32)  # leftward shift in UW, W px
    psf = ParametricPSF(psf_params)

    # W: focus on a random pixel of the crop's depth; render the crop with a margin for the kernels
    crop_depth = depth[my:my + h, mx:mx + w]
    focus_m = float(crop_depth[int(rng.integers(h)), int(rng.integers(w))])
    coc_w = wide.coc_px(depth, focus_distance_m=focus_m, scale=scale)
    pad = int(math.ceil(np.abs(coc_w).max())) + 2
    y0, y1, x0, x1 = max(my - pad, 0), min(my + h + pad, H), max(mx - pad, 0), min(mx + w + pad, W)
    crop = (slice(my - y0, my - y0 + h), slice(mx - x0, mx - x0 + w))
    w_img = render_dp(scene.image[y0:y1, x0:x1], coc_w[y0:y1, x0:x1], psf, coc_step=COC_STEP, device=device).combined[crop]

    # refocus target: another focus distance and a wider aperture on W's geometry
    target_focus = float(crop_depth[int(rng.integers(h)), int(rng.integers(w))])
    target_n = target_f_number or float(wide.f_number * rng.uniform(0.5, 1.0))
    coc_t = wide.coc_px(depth, focus_distance_m=target_focus, f_number=target_n, scale=scale)
    pad_t = int(math.ceil(np.abs(coc_t).max())) + 2
    ty0, ty1, tx0, tx1 = max(my - pad_t, 0), min(my + h + pad_t, H), max(mx - pad_t, 0), min(mx + w + pad_t, W)
    tcrop = (slice(my - ty0, my - ty0 + h), slice(mx - tx0, mx - tx0 + w))
    refocused = render_dp(scene.image[ty0:ty1, tx0:tx1], coc_t[ty0:ty1, tx0:tx1], psf, coc_step=COC_STEP, device=device).combined[tcrop]

    # UW: the whole scene seen from the UW position, deep depth of field, then downsampled
    uw_disp, holes = uw_view_disparity(disp)
    map_x = (np.arange(W)[None, :] + uw_disp).astype(np.float32)
    map_y = np.repeat(np.arange(H, dtype=np.float32)[:, None], W, axis=1)
    uw_sharp = cv2.remap(scene.image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
    uw_depth = np.maximum(f_px * baseline_mm / np.maximum(uw_disp, 1e-3) / 1000.0, 1e-3)
    # UW CoC in its own pixels is ultrawide.coc_px; on this grid (W pixels) it is 1/uw_resolution_factor larger
    coc_uw = ultrawide.coc_px(uw_depth, focus_distance_m=max(focus_m, 1.0), scale=scale) / uw_resolution_factor
    uw_img = render_dp(uw_sharp, coc_uw.astype(np.float32), psf, coc_step=COC_STEP, device=device).combined
    uw_size = (int(round(W * uw_resolution_factor)), int(round(H * uw_resolution_factor)))
    uw_img = cv2.resize(uw_img, uw_size, interpolation=cv2.INTER_AREA)
    gains = np.array([rng.uniform(*g) for g in white_balance_gains], np.float32)
    uw_img = np.clip(uw_img * gains, 0, 1)

    # ground truth: W pixel -> UW pixel coordinates, and occlusion
    occl_full = _occluded_in_uw(disp, uw_disp)
    ys, xs = np.mgrid[my:my + h, mx:mx + w].astype(np.float32)
    s = uw_resolution_factor
    # pixel centres: UW pixel u covers W-grid [u/s - 0.5 .. ]; centre mapping x_uw = (x_w + 0.5) s - 0.5
    fx = ((xs - disp[my:my + h, mx:mx + w] + 0.5) * s - 0.5) - (xs - mx)
    fy = ((ys + 0.5) * s - 0.5) - (ys - my)
    flow = np.stack([fx, fy], axis=-1).astype(np.float32)

    w_img = degrade.signal_dependent_noise(w_img, noise_sigma, rng)
    uw_img = degrade.signal_dependent_noise(uw_img, noise_sigma * 1.5, rng)
    meta = {
        "scene": scene.name, "wide": wide.name, "ultrawide": ultrawide.name, "baseline_mm": baseline_mm,
        "render_scale": scale, "fov_ratio": fov_ratio, "uw_resolution_factor": s,
        "margin_x": mx, "margin_y": my, "focus_distance_m": focus_m, "f_number": wide.f_number,
        "target_focus_distance_m": target_focus, "target_f_number": target_n,
        "white_balance_gains": gains.tolist(), "noise_sigma": noise_sigma,
        "disparity_range_px": [float(disp.min()), float(disp.max())],
        "occluded_fraction": float(occl_full[my:my + h, mx:mx + w].mean()),
        "flow_convention": "UW pixel = W pixel (x, y) + flow; pixel centres at integers",
    }
    return DualCameraSample(
        wide=w_img.astype(np.float32), ultrawide=uw_img.astype(np.float32),
        sharp=scene.image[my:my + h, mx:mx + w].astype(np.float32), depth=crop_depth.astype(np.float32),
        defocus_wide=np.abs(coc_w[my:my + h, mx:mx + w]).astype(np.float32),
        defocus_target=np.abs(coc_t[my:my + h, mx:mx + w]).astype(np.float32),
        refocused=refocused.astype(np.float32), flow_w_to_uw=flow,
        occlusion=occl_full[my:my + h, mx:mx + w], meta=meta)
