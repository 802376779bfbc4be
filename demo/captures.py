"""The demo's sample captures, in the real device formats the capture readers take.

- ``pixel_burst/``: a Pixel DP burst (the capture app's ``<time>_left.pgm`` / ``_right.pgm``, one
  frame per 250 ms, the camera moving a little between frames), for RDPD;
- ``pixel4_png/``: a Pixel 4 DP pair in Xin et al.'s layout (``001_left.png`` / ``001_right.png``,
  14-bit data on black 1024 in 16-bit PNG) with ``calibration/white_sheet_{left,right}.png``
  (the right view is darker, as real DP views are: the reader's vignetting correction undoes it),
  for UiD;
- ``dpdd_objects/``: a DPDD-layout DP pair (Canon, RGB, ``test_{c,l,r}/source``) of a scene of named
  objects (:data:`PROMPT_OBJECTS`, ``synth.prompt_scenes``), for UiD's text prompt; beside it
  ``objects.json`` (names, CoCs) and ``objects_labels.png`` (0 background, i = object i), the truth;
- ``iphone_bundle/``: an iPhone-style UW+W bundle (``wide.png``, ``ultrawide.png`` at twice the
  field of view and half the resolution, ``disparity.png`` as 16-bit codes of 1/m with its range
  in ``meta.json``, focal lengths and the W lens state), for DC2.
All rendered by the data engine from photo-textured scenes (``synth``), written whole.
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from calibration.cameras import get_camera, get_pair
from core.atomic import atomic_dir
from synth import samples
from synth.dual_camera import make_dual_camera_sample
from synth.photos import photo_textures
from synth.scenes import random_scene
from synth.writers import pixel_capture_name, pixel_dn16, write_pgm16, write_png16, xin_codes

# the named objects of the prompt scene (colour, shape, texture): ones the starter mask head finds
PROMPT_OBJECTS = (("blue", "disc", "plain"), ("orange", "cross", "striped"), ("yellow", "square", "checked"))
RIGHT_VIEW_GAIN = 0.8  # the white sheet's right view: how much darker the right DP view is


def _png(path: Path, codes: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), codes):
        raise OSError(f"{path}: OpenCV could not write the PNG")


def write_pixel_burst(folder: Path, frames: list[dict]) -> list[Path]:
    """The burst's frames as the Pixel capture app writes them; returns the left views in order."""
    cam = get_camera("pixel4_dp")
    lefts = []
    for i, f in enumerate(frames):
        stem = pixel_capture_name(i)
        write_pgm16(folder / f"{stem}_left.pgm", pixel_dn16(np.asarray(f["left"]), cam))
        write_pgm16(folder / f"{stem}_right.pgm", pixel_dn16(np.asarray(f["right"]), cam))
        lefts.append(folder / f"{stem}_left.pgm")
    return lefts


def write_pixel4_png(folder: Path, frame: dict) -> Path:
    """A Xin et al. pair + white sheet; the stored right view carries the white sheet's fall-off."""
    h, w = np.asarray(frame["left"]).shape[:2]
    _png(folder / "001_left.png", xin_codes(np.asarray(frame["left"])))
    _png(folder / "001_right.png", xin_codes(np.asarray(frame["right"]) * RIGHT_VIEW_GAIN))
    _png(folder / "calibration" / "white_sheet_left.png", xin_codes(np.full((h, w), 0.8, np.float32)))
    _png(folder / "calibration" / "white_sheet_right.png", xin_codes(np.full((h, w), 0.8 * RIGHT_VIEW_GAIN, np.float32)))
    return folder / "001_left.png"


def write_bundle(folder: Path, size: tuple[int, int], seed: int) -> Path:
    """A UW+W bundle of a photo-textured scene (engine geometry: UW 12 mm to the right of W)."""
    pair = get_pair("phone_w_uw")
    h, w = size
    rng = np.random.default_rng([seed, 3])
    near, far = pair["wide"].depth_range_m
    scene = random_scene("mixed", 2 * h, 2 * w, seed=int(rng.integers(2**31)), near_m=near, far_m=far,
                         textures=photo_textures())
    s = make_dual_camera_sample(scene, pair["wide"], pair["ultrawide"], rng=rng, baseline_mm=pair["baseline_mm"],
                                size=(h, w), uw_resolution_factor=pair["uw_resolution_factor"],
                                white_balance_gains=pair["white_balance_gains"], device="cpu")
    write_png16(folder / "wide.png", s.wide)
    write_png16(folder / "ultrawide.png", s.ultrawide)
    disp = (1.0 / s.depth).astype(np.float32)
    lo, hi = float(disp.min()), float(disp.max())
    _png(folder / "disparity.png", np.round((disp - lo) / max(hi - lo, 1e-9) * 65535).astype(np.uint16))
    f_w = pair["wide"].focal_length / (pair["wide"].pixel_pitch_um * 1e-3) * s.meta["render_scale"]
    f_uw = f_w * s.ultrawide.shape[1] / (w * s.meta.get("fov_ratio", 2.0))
    meta = {"device": "synthetic iPhone-style bundle (defocus toolchain demo)",
            "wide": {"focal_length_px": f_w, "focal_length_mm": pair["wide"].focal_length},
            "ultrawide": {"focal_length_px": f_uw}, "baseline_mm": pair["baseline_mm"],
            "focus_distance_m": s.meta["focus_distance_m"], "f_number": s.meta["f_number"],
            "disparity": {"range": [lo, hi], "units": "1/m"}}
    (folder / "meta.json").write_text(json.dumps(meta, indent=1))
    return folder


def write_object_scene(folder: Path, size: tuple[int, int], seed: int) -> dict:
    """A named-object scene (:data:`PROMPT_OBJECTS`) through the layered DP renderer, in DPDD layout,
    with its truth; returns {"objects": [...], "labels": file name}."""
    from synth.prompt_scenes import object_scene, render_dp
    from synth.writers import write_dpdd_sample

    rng = np.random.default_rng([seed, 4])
    sc = object_scene(rng, size, "train", attributes=list(PROMPT_OBJECTS))
    write_dpdd_sample(folder, "test", "objects", render_dp(sc, rng))
    _png(folder / "objects_labels.png", sc.labels.astype(np.uint8))
    objects = [{"index": i + 1, "name": o.name, "colour": o.colour, "shape": o.shape, "texture": o.texture,
                "coc_px": round(o.coc, 3)} for i, o in enumerate(sc.objects)]
    (folder / "objects.json").write_text(json.dumps({"objects": objects, "background_coc_px": sc.background_coc,
                                                     "labels": "objects_labels.png"}, indent=1))
    return {"objects": objects, "labels": "objects_labels.png"}


def make_captures(out: Path, burst_size: tuple[int, int], size: tuple[int, int], frames: int = 4,
                  seed: int = 0) -> dict:
    """Write the three capture sets under ``out`` (replaced whole); returns their paths."""
    rng = np.random.default_rng([seed, 1])
    burst, _ = samples.dp_clip(rng, burst_size, frames=frames, camera="pixel4_dp", profile="phone", motion_px=1.5)
    single, _ = samples.dp_clip(np.random.default_rng([seed, 2]), size, frames=1, camera="pixel4_dp", profile="phone")
    with atomic_dir(out, replace=True, what="demo captures") as work:
        lefts = write_pixel_burst(work / "pixel_burst", burst)
        png = write_pixel4_png(work / "pixel4_png", single[0])
        scene = write_object_scene(work / "dpdd_objects", size, seed)
        write_bundle(work / "iphone_bundle", size, seed)
    return {"pixel_burst": [str(out / "pixel_burst" / p.name) for p in lefts],
            "pixel4_png": str(out / "pixel4_png" / png.name), "iphone_bundle": str(out / "iphone_bundle"),
            "dpdd_objects": str(out / "dpdd_objects"), "objects": scene["objects"],
            "objects_labels": str(out / "dpdd_objects" / scene["labels"])}
