"""Model-ready samples from the synthetic engine, built from a model's spec.

A renderer (``RENDERERS``, chosen by ``spec.data.renderer``) makes the physical *fields* of a
sample (``models.spec``: left, right, sharp, coc, wide, ultrawide...); the spec packs them into
its named inputs and targets. The renderers:
- ``dp_clip``: a DP clip of ``frames`` frames; the camera translates between frames (a random
  walk over a larger rendered scene) so a recurrent model sees a sequence.
- ``dual_camera``: W, UW aligned to W (warped with the ground-truth flow: occluded pixels show
  the occluder, as real alignment does), W's defocus map, a target defocus map (zero: all in
  focus), and W's scene rendered with the target defocus.
- ``dp_refocus``: DP views, a focus mask, all-in-focus and refocus renders, the signed CoC.
- ``prompt_scene``: named objects, a text prompt's query and its mask (``synth.prompt_scenes``).

Patches are drawn with seed 004's low-texture rejection: a few candidate crops, keep the one
with the most Sobel energy in its target. The radial map comes from the crop's position in a
full frame (``models.radial``). All arrays are float32 CHW (clips: T x C x H x W).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from dataclasses import replace as dc_replace
from functools import lru_cache

import cv2
import numpy as np

from calibration.cameras import RDPD_CAMERA_SETS, get_camera, get_pair
from models.radial import radial_map
from calibration.psf_bank import PSFBank
from synth.dp_sample import make_dp_sample
from synth.field_render import bank_provider
from synth.dual_camera import make_dual_camera_sample
from synth.photos import photo_textures
from synth.profiles import get_profile
from synth.prompt_scenes import prompt_scene
from synth.scenes import random_scene


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


def example_from_frames(spec, frames: list[dict], meta: dict | None = None) -> Example:
    """Pack per-frame fields with ``spec``: a sequence model gets a clip (T x C x H x W), any
    other model its single frame."""
    packed = [spec.pack(f) for f in frames]
    if spec.is_sequence:
        stack = lambda part: {k: np.stack([p[part][k] for p in packed]) for k in packed[0][part]}  # noqa: E731
        return Example(stack(0), stack(1), dict(meta or {}))
    (inputs, targets), = packed
    return Example(inputs, targets, dict(meta or {}))


# ----------------------------------------------------------------------------- renderers


@lru_cache(maxsize=4)
def load_bank(path: str) -> PSFBank:
    """A PSF bank file, read once per process (pool slots share it)."""
    return PSFBank.load(path)


def _bank_psf(psf_bank: str | None, rng: np.random.Generator):
    """The PSF provider of a ``--psf-bank`` file (field-varying when it has a field grid), or
    None for the Butterworth model's random parameters. Draws from ``rng`` only with a bank, so
    runs without one keep their random streams."""
    if not psf_bank:
        return None
    bank = load_bank(str(psf_bank))
    return bank_provider(bank, int(rng.integers(len(bank.params))))


def accepts_psf_bank(renderer: str) -> bool:
    """Whether a renderer of ``RENDERERS`` can render with a PSF bank."""
    return "psf_bank" in inspect.signature(RENDERERS[renderer]).parameters


def profile_dp_sample(rng: np.random.Generator, size, camera: str | None, profile: str | None,
               photos=None, refocus: bool = False, device="cpu", psf_bank: str | None = None,
               psf_params=None, channels: str | None = None, front_blur_px: tuple[float, float] | None = None):
    """One DP sample of ``size`` drawn from a data profile (``synth.profiles``): the camera, the
    front blur, the scene, the exposure, the noise; green-only cameras' views are copied to three
    channels, as the capture readers do; ``psf_bank`` renders with a (calibrated) PSF bank.
    Overrides for a fixed device (``synth.pixel4_set``): ``psf_params`` (one PSF shape instead of a
    random draw), ``channels`` ("green"/"rgb" instead of the profile's draw), ``front_blur_px``
    (the strongest front CoC range instead of the profile's). Returns (DPSample, camera)."""
    prof = get_profile(profile)
    cam = get_camera(camera or prof.dp_camera or RDPD_CAMERA_SETS[int(rng.integers(len(RDPD_CAMERA_SETS)))])
    if prof.grey_probability > 0:
        grey = rng.random() < prof.grey_probability
        cam = dc_replace(cam, channels="green" if grey else "rgb")
    if channels:
        cam = dc_replace(cam, channels=channels)
    if prof.focus_m:
        cam = dc_replace(cam, focus_distance=float(np.exp(rng.uniform(*np.log(prof.focus_m)))))
    if front_blur_px or prof.front_blur_px:
        front = -float(rng.uniform(*(front_blur_px or prof.front_blur_px)))
    else:
        front = -float(rng.uniform(*prof.front_blur_fraction)) * cam.max_coc_px
    near = min(max(cam.depth_range_m[0], cam.depth_for_coc(front)), 0.9 * cam.focus_distance)
    textures = photo_textures(photos) if prof.photo_textures else None
    scene = random_scene(prof.scene_kind, *size, seed=int(rng.integers(2**31)), near_m=near,
                         far_m=cam.depth_range_m[1], textures=textures)
    lo, hi = prof.exposure
    if hi != lo:
        scene.image = scene.image * np.float32(np.exp(rng.uniform(np.log(lo), np.log(hi))))
    s = make_dp_sample(scene, cam, rng=rng, distortion=False, refocus=refocus, device=device, noise=prof.noise,
                       psf=_bank_psf(psf_bank, rng), psf_params=psf_params)
    if cam.channels == "green":
        for name in ("sharp", "left", "right", "combined", "refocused"):
            if getattr(s, name) is not None:
                setattr(s, name, np.repeat(getattr(s, name), 3, axis=-1))
    return s, cam


def dp_clip(rng: np.random.Generator, size=(128, 128), frames: int = 4, camera: str | None = None,
            motion_px: float = 3.0, device="cpu", profile: str | None = None,
            photos=None, psf_bank: str | None = None) -> tuple[list[dict], dict]:
    """Fields of a DP clip (left, right, combined, sharp, coc, radial per frame) and its meta."""
    h, w = size
    m = int(np.ceil(motion_px * frames)) + 2
    big = (2 * h + 2 * m, 2 * w + 2 * m)  # room for texture-based crop choice and the motion
    s, cam = profile_dp_sample(rng, big, camera, profile, photos, device=device, psf_bank=psf_bank)
    y0, x0 = pick_textured_crop(s.sharp, (h + 2 * m, w + 2 * m), rng)
    fh, fw, top, left = _radial_for_crop(h, w, rng, margin=m)
    out = []
    pos = np.array([m, m], float)
    for _ in range(frames):
        yy, xx = int(round(pos[0])), int(round(pos[1]))
        sl = (slice(y0 + yy, y0 + yy + h), slice(x0 + xx, x0 + xx + w))
        f = {"left": s.left[sl], "right": s.right[sl], "sharp": s.sharp[sl], "coc": s.coc[sl],
             "radial": radial_map(h, w, fh, fw, top + yy - m, left + xx - m)}
        f["combined"] = 0.5 * (np.asarray(f["left"], np.float32) + np.asarray(f["right"], np.float32))
        out.append(f)
        pos = np.clip(pos + rng.normal(0, motion_px, 2), 0, 2 * m)
    return out, {"psf_params": s.meta["psf_params"], "camera": cam.name, "channels": cam.channels}


def dual_camera(rng: np.random.Generator, size=(128, 128), all_in_focus_prob: float = 0.5,
                device="cpu", profile: str | None = None, photos=None) -> tuple[list[dict], dict]:
    """Fields of a W/UW pair of the ``phone_w_uw`` cameras (see :func:`dual_camera_fields`);
    the data profile chooses the scenes."""
    h, w = size
    prof = get_profile(profile)
    pair = get_pair("phone_w_uw")
    near, far = pair["wide"].depth_range_m
    textures = photo_textures(photos) if prof.photo_textures else None
    scene = random_scene(prof.scene_kind, 2 * h, 2 * w, seed=int(rng.integers(2**31)), near_m=near, far_m=far,
                         textures=textures)
    s = make_dual_camera_sample(scene, pair["wide"], pair["ultrawide"], rng=rng, baseline_mm=pair["baseline_mm"],
                                size=(h, w), uw_resolution_factor=pair["uw_resolution_factor"],
                                white_balance_gains=pair["white_balance_gains"], device=device)
    return dual_camera_fields(s, rng, all_in_focus_prob)


def dual_camera_fields(s, rng: np.random.Generator, all_in_focus_prob: float = 0.5,
                       radial=None) -> tuple[list[dict], dict]:
    """Fields from a W/UW sample (``DualCameraSample`` or the same fields read from an npz shard):
    UW warped onto W with the ground-truth flow; with probability ``all_in_focus_prob`` the
    target defocus is zero (all in focus, target = sharp), else the sample's refocus target."""
    h, w = s.wide.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    uw = np.stack([cv2.remap(np.ascontiguousarray(s.ultrawide[..., c], dtype=np.float32), xs + s.flow_w_to_uw[..., 0],
                             ys + s.flow_w_to_uw[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
                   for c in range(3)], axis=-1)
    aif = rng.random() < all_in_focus_prob
    if radial is None:
        radial = radial_map(h, w, *_radial_for_crop(h, w, rng))
    fields = {"wide": s.wide, "ultrawide": uw, "defocus_wide": s.defocus_wide,
              "defocus_target": np.zeros((h, w), np.float32) if aif else s.defocus_target,
              "refocused": s.sharp if aif else s.refocused, "sharp": s.sharp, "occlusion": s.occlusion,
              "radial": radial}
    return [fields], {"all_in_focus": bool(aif)}


def dp_refocus(rng: np.random.Generator, size=(128, 128), camera: str | None = None,
               device="cpu", profile: str | None = None, photos=None,
               psf_bank: str | None = None) -> tuple[list[dict], dict]:
    """Fields of one DP frame with a focus mask and its refocus render."""
    s, cam = profile_dp_sample(rng, size, camera, profile, photos, refocus=True, device=device,
                        psf_bank=psf_bank)
    return [dp_fields(s)], {"psf_params": s.meta["psf_params"], "camera": cam.name, "channels": cam.channels}


def dp_fields(s) -> dict:
    """The fields of a DP sample (``DPSample`` or an npz shard's sample); absent ones are left out."""
    names = ("left", "right", "combined", "sharp", "coc", "focus_mask", "refocused")
    return {k: getattr(s, k) for k in names if getattr(s, k, None) is not None}


RENDERERS = {"dp_clip": dp_clip, "dual_camera": dual_camera, "dp_refocus": dp_refocus, "prompt_scene": prompt_scene}


def render_example(spec, rng: np.random.Generator, size=(128, 128), **options) -> Example:
    """One synthetic example for ``spec`` (its renderer, packed by the spec). ``options`` go to
    the renderer (``frames``, ``all_in_focus_prob``, ``device``...)."""
    frames, meta = RENDERERS[spec.data.renderer](rng, size, **options)
    return example_from_frames(spec, frames, meta)


def realistic_inputs(spec, height: int, width: int, count: int = 4, seed: int = 0,
                     variant: str = "mobile") -> list[dict[str, np.ndarray]]:
    """Model inputs (batch 1, NCHW float32, spec names) from the synthetic engine: realistic
    scenes for parity checks and int8 calibration. A sequence model gets its first frame with a
    zero state."""
    rng = np.random.default_rng([seed, 7919])
    return [first_frame(spec, render_example(spec, rng, (height, width), **_one_frame(spec)), variant)[0]
            for _ in range(count)]


def _one_frame(spec) -> dict:
    return {"frames": 1} if spec.is_sequence else {}


def first_frame(spec, ex: Example, variant: str = "mobile") -> tuple[dict, dict]:
    """(inputs, targets) of an example's first frame, batch 1 (NCHW): a sequence model's clip
    is cut to frame 0 and its recurrent inputs are the zero state."""
    cut = (lambda v: v[0]) if spec.is_sequence else (lambda v: v)
    inputs = {k: cut(v)[None] for k, v in ex.inputs.items()}
    h, w = next(iter(inputs.values())).shape[-2:]
    inputs.update({k: v.numpy() for k, v in spec.zero_state(variant, h, w).items()})
    return inputs, {k: cut(v)[None] for k, v in ex.targets.items()}
