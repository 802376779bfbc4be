"""One synthetic dual-pixel sample: scene -> signed CoC -> layered DP render -> radial distortion
-> signal-dependent noise (seed 004, section 2 and 3), plus an optional refocus target.

Output arrays are float32 in [0, 1]; ``channels == "green"`` cameras (Pixel DP) keep only the
green channel, as the Pixel DP views do.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from calibration.cameras import CameraProfile
from calibration.dp_psf import PSFParams, PAPER_PARAM_GRID
from synth import degrade
from synth.render import COC_STEP, ParametricPSF, disparity_map, render_dp
from synth.scenes import Scene


@dataclass
class DPSample:
    sharp: np.ndarray  # H x W x C all-in-focus target (distorted like the views)
    left: np.ndarray  # H x W x C, noisy
    right: np.ndarray
    combined: np.ndarray  # (left + right) / 2, the conventional defocused image
    coc: np.ndarray  # H x W signed CoC radius, px
    disparity: np.ndarray  # H x W DP disparity (left - right centroid), px
    depth: np.ndarray  # H x W metres
    meta: dict = field(default_factory=dict)
    focus_mask: np.ndarray | None = None  # H x W bool: the region brought into focus
    refocused: np.ndarray | None = None  # H x W x C: same scene focused on focus_mask


def camera_channels(image: np.ndarray, camera: CameraProfile) -> np.ndarray:
    """RGB -> what the camera records (green only for Pixel DP views)."""
    return image[..., 1:2] if camera.channels == "green" else image


def sample_psf_params(rng: np.random.Generator) -> PSFParams:
    """One parameter set from the paper's grid (seed 004: n, alpha, beta; kappa = 0.14)."""
    return PAPER_PARAM_GRID[int(rng.integers(len(PAPER_PARAM_GRID)))]


def pick_focus_region(depth: np.ndarray, rng: np.random.Generator, tolerance: float = 0.02) -> np.ndarray:
    """A focus mask as a user's prompt would give: the pixels whose inverse depth is within
    ``tolerance`` (relative) of a random pixel's, i.e. the surface the user tapped."""
    h, w = depth.shape
    y, x = int(rng.integers(h)), int(rng.integers(w))
    inv = 1.0 / depth
    return np.abs(inv - inv[y, x]) <= tolerance * inv[y, x]


def make_dp_sample(scene: Scene, camera: CameraProfile, *, rng: np.random.Generator,
                   psf_params: PSFParams | None = None, noise_sigma: float | None = None,
                   noise_scale: float = 0.1, distortion: bool = True, max_layers: int = 500,
                   scale: float = 1.0, refocus: bool = False, psf=None, device="auto",
                   noise: str = "multiplicative") -> DPSample:
    """Render one DP sample of ``scene`` through ``camera``.

    ``noise_sigma`` defaults to a draw from the seed's set {0.05, ..., 0.5} times ``noise_scale``
    (the seed's values are relative to its own normalisation and are strong for real sensors).
    With ``refocus``, a focus region is picked and the scene is re-rendered focused on it (same
    aperture): the UiD refocus target. ``psf`` overrides the model PSFs with any provider, e.g.
    :class:`synth.render.BankPSF` over a calibrated PSF bank. ``noise="sensor"`` replaces the
    seed's multiplicative noise with Poisson-Gaussian sensor noise quantised to 14 bits
    (:func:`synth.degrade.sensor_noise`, the phone profile).
    """
    params = psf_params or sample_psf_params(rng)
    psf = psf or ParametricPSF(params)
    image = camera_channels(scene.image, camera)
    coc = camera.coc_px(scene.depth, scale=scale).astype(np.float32)
    views = _render(psf, image, coc, max_layers=max_layers, coc_step=COC_STEP, device=device)
    disp = disparity_map(coc, psf)
    sharp, left, right = image, views.left, views.right
    coeffs = list(camera.distortion) if distortion else []
    focus_mask = refocused = None
    focus_m = None
    extra = []
    if refocus:
        focus_mask = pick_focus_region(scene.depth, rng)
        focus_m = float(np.median(scene.depth[focus_mask]))
        coc_t = camera.coc_px(scene.depth, focus_distance_m=focus_m, scale=scale).astype(np.float32)
        refocused = _render(psf, image, coc_t, max_layers=max_layers, coc_step=COC_STEP, device=device).combined
        extra = [refocused]
    if any(abs(c) > 0 for c in coeffs):
        sharp, left, right, *extra = degrade.apply_distortion([sharp, left, right, *extra], coeffs)
        coc, disp, mask_f = degrade.apply_distortion(
            [coc, disp, (focus_mask if focus_mask is not None else np.zeros_like(coc)).astype(np.float32)],
            coeffs, interpolation=0)  # cv2.INTER_NEAREST for maps
        if focus_mask is not None:
            focus_mask = mask_f > 0.5
        if refocused is not None:
            refocused = extra[0]
    noise_meta = {}
    if noise == "sensor":
        shot, read = degrade.sample_sensor_noise(rng)
        left = degrade.sensor_noise(left, shot, read, rng)
        right = degrade.sensor_noise(right, shot, read, rng)
        sigma = 0.0
        noise_meta = {"noise_model": "sensor", "shot_gain": shot, "read_sigma": read}
    else:
        sigma = degrade.sample_noise_sigma(rng) * noise_scale if noise_sigma is None else noise_sigma
        left = degrade.signal_dependent_noise(left, sigma, rng)
        right = degrade.signal_dependent_noise(right, sigma, rng)
    meta = {
        "scene": scene.name, "scene_meta": scene.meta, "camera": camera.name,
        "psf_params": params.to_dict() if isinstance(psf, ParametricPSF) else getattr(psf, "describe", lambda: {})(), "noise_sigma": float(sigma), "distortion": coeffs,
        "render_scale": scale, "max_layers": max_layers, "layers": int(views.layer_radii.size),
        "coc_range_px": [float(coc.min()), float(coc.max())], **noise_meta,
    }
    if focus_mask is not None:
        meta["refocus"] = {"focus_distance_m": focus_m, "focus_pixels": int(focus_mask.sum())}
    return DPSample(_f32(sharp), _f32(left), _f32(right), _f32(0.5 * (left + right)), _f32(coc), _f32(disp),
                    _f32(scene.depth), meta, focus_mask, None if refocused is None else _f32(refocused))


def _render(psf, image, coc, **kwargs):
    """A provider with its own ``render`` (field-varying PSFs of a calibrated bank,
    ``synth.field_render.FieldPSF``) renders itself; any other goes through ``render_dp``."""
    if hasattr(psf, "render"):
        return psf.render(image, coc, **kwargs)
    return render_dp(image, coc, psf, **kwargs)


def _f32(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float32)
    return np.clip(a, 0.0, 1.0) if a.ndim == 3 else a
