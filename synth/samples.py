"""Model-ready samples from the synthetic engine: inputs named as in the model registry, targets.

- RDPD: a DP clip of ``frames`` frames; the camera translates between frames (a random walk
  over a larger rendered scene) so the ConvLSTM sees a sequence; 7-channel input (L, R, radial).
- DC2: W, UW aligned to W (warped with the ground-truth flow: occluded pixels show the
  occluder, as real alignment does), W's defocus map, a target defocus map, radial map; target
  image = the refocused render, or the all-in-focus image when the target map is zero.
- UiD: DP views, a focus mask, all-in-focus and refocus targets, the signed CoC.

Patches are drawn with seed 004's low-texture rejection: a few candidate crops, keep the one
with the most Sobel energy in its target. The radial map comes from the crop's position in a
full frame (``models.radial``). All arrays are float32 CHW (clips: T x C x H x W).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from calibration.cameras import RDPD_CAMERA_SETS, get_camera, get_pair
from models.dc2 import DEFOCUS_NORM_PX
from models.radial import radial_map
from synth.dp_sample import make_dp_sample
from synth.dual_camera import make_dual_camera_sample
from synth.scenes import random_scene

UID_COC_NORM_PX = 40.0  # UiD defocus target: signed CoC / 40 px, in [-1, 1]
# Strongest front blur of a training/test example, as a fraction of the camera's 40 px CoC
# limit. 10-50 % (4-20 px) matches the blur of DPDD-like captures at these patch sizes; the
# synth command's own default (25-100 %) makes harder data sets.
FRONT_BLUR_FRACTION = (0.1, 0.5)


def _chw(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray((a[..., None] if a.ndim == 2 else a).transpose(2, 0, 1), dtype=np.float32)


def sobel_energy(img: np.ndarray) -> float:
    g = img.mean(axis=-1) if img.ndim == 3 else img
    gx = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3)
    return float(np.mean(gx * gx + gy * gy))


def pick_textured_crop(target: np.ndarray, size: tuple[int, int], rng: np.random.Generator,
                       candidates: int = 3, margin: int = 0) -> tuple[int, int]:
    """Top-left of the crop (of ``candidates`` random ones) with the most Sobel energy (seed 004)."""
    H, W = target.shape[:2]
    h, w = size
    best, best_e = (0, 0), -1.0
    for _ in range(candidates):
        y = int(rng.integers(margin, H - h - margin + 1))
        x = int(rng.integers(margin, W - w - margin + 1))
        e = sobel_energy(target[y:y + h, x:x + w])
        if e > best_e:
            best, best_e = (y, x), e
    return best


def _radial_for_crop(h: int, w: int, rng: np.random.Generator, frame_scale: float = 3.0, margin: int = 0):
    """Placement of an h x w crop at a random position (``margin`` px from the edges) in a frame
    ``frame_scale`` larger: (frame h, frame w, top, left) for ``models.radial.radial_map``."""
    fh, fw = int(h * frame_scale), int(w * frame_scale)
    top = int(rng.integers(margin, fh - h - margin + 1))
    left = int(rng.integers(margin, fw - w - margin + 1))
    return fh, fw, top, left


@dataclass
class Example:
    inputs: dict  # name -> float32 array (CHW, or TCHW for clips)
    targets: dict
    meta: dict = field(default_factory=dict)  # e.g. PSF parameters (for the Wiener baseline)


def rdpd_clip(rng: np.random.Generator, size=(128, 128), frames: int = 4, camera: str | None = None,
              motion_px: float = 3.0, device="cpu") -> Example:
    h, w = size
    cam = get_camera(camera or RDPD_CAMERA_SETS[int(rng.integers(len(RDPD_CAMERA_SETS)))])
    m = int(np.ceil(motion_px * frames)) + 2
    big = (2 * h + 2 * m, 2 * w + 2 * m)  # room for texture-based crop choice and the motion
    front = -float(rng.uniform(*FRONT_BLUR_FRACTION)) * cam.max_coc_px
    near = min(max(cam.depth_range_m[0], cam.depth_for_coc(front)), 0.9 * cam.focus_distance)
    scene = random_scene("mixed", *big, seed=int(rng.integers(2**31)), near_m=near, far_m=cam.depth_range_m[1])
    s = make_dp_sample(scene, cam, rng=rng, distortion=False, device=device)
    y0, x0 = pick_textured_crop(s.sharp, (h + 2 * m, w + 2 * m), rng)
    fh, fw, top, left = _radial_for_crop(h, w, rng, margin=m)
    xs, ts, cocs = [], [], []
    pos = np.array([m, m], float)
    for _ in range(frames):
        yy, xx = int(round(pos[0])), int(round(pos[1]))
        sl = (slice(y0 + yy, y0 + yy + h), slice(x0 + xx, x0 + xx + w))
        radial = radial_map(h, w, fh, fw, top + yy - m, left + xx - m)
        xs.append(np.concatenate([_chw(s.left[sl]), _chw(s.right[sl]), _chw(radial)]))
        ts.append(_chw(s.sharp[sl]))
        cocs.append(_chw(s.coc[sl]))
        pos = np.clip(pos + rng.normal(0, motion_px, 2), 0, 2 * m)
    return Example({"x": np.stack(xs)}, {"y": np.stack(ts), "combined": np.stack([
        0.5 * (x[:3] + x[3:6]) for x in xs]), "coc": np.stack(cocs)}, {"psf_params": s.meta["psf_params"],
                                                                          "camera": cam.name})


def dc2_sample(rng: np.random.Generator, size=(128, 128), all_in_focus_prob: float = 0.5, device="cpu") -> Example:
    h, w = size
    pair = get_pair("phone_w_uw")
    near, far = pair["wide"].depth_range_m
    scene = random_scene("mixed", 2 * h, 2 * w, seed=int(rng.integers(2**31)), near_m=near, far_m=far)
    s = make_dual_camera_sample(scene, pair["wide"], pair["ultrawide"], rng=rng, baseline_mm=pair["baseline_mm"],
                                size=(h, w), uw_resolution_factor=pair["uw_resolution_factor"],
                                white_balance_gains=pair["white_balance_gains"], device=device)
    return dc2_example(s, rng, all_in_focus_prob)


def dc2_example(s, rng: np.random.Generator, all_in_focus_prob: float = 0.5, radial=None) -> Example:
    """DC2 example from a W/UW sample (``DualCameraSample`` or the same fields read from an npz
    shard): UW warped onto W with the ground-truth flow, half all-in-focus / half refocus targets."""
    h, w = s.wide.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    uw = np.stack([cv2.remap(np.ascontiguousarray(s.ultrawide[..., c], dtype=np.float32), xs + s.flow_w_to_uw[..., 0],
                             ys + s.flow_w_to_uw[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
                   for c in range(3)], axis=-1)
    aif = rng.random() < all_in_focus_prob
    target_map = np.zeros((h, w), np.float32) if aif else s.defocus_target / DEFOCUS_NORM_PX
    target = s.sharp if aif else s.refocused
    if radial is None:
        radial = radial_map(h, w, *_radial_for_crop(h, w, rng))
    return Example(
        {"wide": _chw(s.wide), "ultrawide": _chw(uw),
         "defocus_wide": _chw(np.clip(s.defocus_wide / DEFOCUS_NORM_PX, 0, 1)),
         "defocus_target": _chw(np.clip(target_map, 0, 1)), "radial": _chw(radial)},
        {"image": _chw(target), "sharp": _chw(s.sharp), "occlusion": _chw(np.asarray(s.occlusion, np.float32))},
        {"all_in_focus": bool(aif)})


def uid_sample(rng: np.random.Generator, size=(128, 128), camera: str | None = None, device="cpu") -> Example:
    h, w = size
    cam = get_camera(camera or RDPD_CAMERA_SETS[int(rng.integers(len(RDPD_CAMERA_SETS)))])
    front = -float(rng.uniform(*FRONT_BLUR_FRACTION)) * cam.max_coc_px
    near = min(max(cam.depth_range_m[0], cam.depth_for_coc(front)), 0.9 * cam.focus_distance)
    scene = random_scene("mixed", h, w, seed=int(rng.integers(2**31)), near_m=near, far_m=cam.depth_range_m[1])
    s = make_dp_sample(scene, cam, rng=rng, distortion=False, refocus=True, device=device)
    return uid_example(s, {"psf_params": s.meta["psf_params"], "camera": cam.name})


def uid_example(s, meta: dict | None = None) -> Example:
    """UiD example from a DP sample with a refocus target (``DPSample`` or an npz shard's fields)."""
    return Example(
        {"left": _chw(s.left), "right": _chw(s.right), "focus_mask": _chw(np.asarray(s.focus_mask, np.float32))},
        {"all_in_focus": _chw(s.sharp), "refocused": _chw(s.refocused),
         "defocus": _chw(np.clip(s.coc / UID_COC_NORM_PX, -1, 1)), "combined": _chw(s.combined),
         "coc": _chw(s.coc)}, dict(meta or {}))


def rdpd_frame(left, right, sharp, combined, radial) -> Example:
    """A one-frame RDPD clip (single images: DPDD captures, npz shards): seed 004 trains on real
    single images (1 frame) alongside synthetic clips."""
    x = np.concatenate([_chw(left), _chw(right), _chw(radial)])
    return Example({"x": x[None]}, {"y": _chw(sharp)[None], "combined": _chw(combined)[None]})


SAMPLERS = {"rdpd": rdpd_clip, "dc2": dc2_sample, "uid": uid_sample}


def realistic_inputs(model: str, height: int, width: int, count: int = 4, seed: int = 0,
                     variant: str = "mobile") -> list[dict[str, np.ndarray]]:
    """Model inputs (batch 1, NCHW float32, registry names) from the synthetic engine: realistic
    scenes for parity checks and int8 calibration. RDPD gets single frames with zero state."""
    from models.registry import get

    spec = get(model)
    rng = np.random.default_rng([seed, 7919])
    out = []
    for _ in range(count):
        if model == "rdpd":
            ex = rdpd_clip(rng, (height, width), frames=1)
            item = {"x": ex.inputs["x"][0][None]}
            for name, shape in spec.input_shapes(variant, height, width).items():
                if name != "x":
                    item[name] = np.zeros(shape, np.float32)
        else:
            ex = SAMPLERS[model](rng, (height, width))
            item = {k: v[None] for k, v in ex.inputs.items()}
        out.append(item)
    return out
