"""A Pixel 4 DP capture set in the public layout, with all-in-focus ground truth (issue 13).

The held-out real set the models are judged on (17 Pixel 4 captures, Xin et al.'s layout) is not
in this repository. This writes a local stand-in in the same files, so ``cli.py evaluate --data``
and ``cli.py run`` read it with no manual step and the model, the input and the classical
baseline are scored the way the real set scores them:

- ``NNN_left.png`` / ``NNN_right.png``: single-channel 16-bit PNGs, 14-bit values on black level
  1024 (white 1024 + 16383), the green-only DP views;
- ``gt_all_in_focus_im/NNN_gt.png``: the sharp scene on the scale of (L+R)/2 over the central 2/3
  of each side of the views (1008 x 1344 of 1512 x 2016 in the real set), planted a few pixels off
  centre so ``evaluate`` has to locate it;
- ``calibration/``: a ``calibrate import``-style kernels folder holding the rendering PSF at a
  reference radius on a grid of 168-px patches (the real calibration's patch), so the classical
  baseline runs as it would with a device's calibrated kernels.

Scenes come from a data profile (``phone``: Pixel 4 DP optics focused at 0.3-1 m, front blur
2-9 px CoC, i.e. a DP disparity up to about 5 px as in the real calibration, sensor noise,
dark to bright exposures, photo-textured layers) rendered with ONE PSF shape for the whole set,
as one device has.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from calibration.dp_psf import PSFParams, dual_pixel_psf, kernel_size
from calibration.kernel_stack import Capture, KernelSet
from core.atomic import atomic_dir
from core.errors import UserError
from synth.dataset import RECORD_NAME
from synth.writers import XIN_BITS, XIN_BLACK, XIN_GT_FOLDER, xin_codes

PATCH = 168  # the real calibration's patch (a 6 x 8 grid over 1008 x 1344)
REFERENCE_RADIUS = 10.0  # px: the calibrated kernels' CoC radius (the real stack's |r| is about 11)
DEVICE_PSF = PSFParams(order=3, alpha=0.6, beta=0.2)  # one shape for the whole set
MAX_SHIFT = 6  # px: the ground truth is planted up to this far from the centred position


class Pixel4SetError(UserError):
    """A capture set that cannot be written (size, folder)."""


def _write_png(path: Path, image: np.ndarray) -> None:
    if not cv2.imwrite(str(path), image):
        raise Pixel4SetError(f"{path}: could not write the PNG")


def reference_kernels(shape: tuple[int, int], params: PSFParams = DEVICE_PSF,
                      radius: float = REFERENCE_RADIUS) -> KernelSet:
    """The rendering PSF at ``radius`` on every cell of a grid of ``PATCH``-px patches centred
    on views of ``shape`` (the layout of the public calibration, which covers the central part)."""
    h, w = shape
    rows, cols = h // PATCH, w // PATCH
    if rows < 1 or cols < 1:
        raise Pixel4SetError(f"views of {h}x{w} hold no {PATCH}-px calibration patch; use at least {PATCH}x{PATCH}")
    kl, kr = dual_pixel_psf(radius, params, kernel_size(radius))
    kl, kr = (kl / kl.sum()).astype(np.float32), (kr / kr.sum()).astype(np.float32)
    n = rows * cols
    crop = ((h - rows * PATCH) // 2, (w - cols * PATCH) // 2, rows * PATCH, cols * PATCH)
    cap = Capture("reference", np.stack([kl] * n), np.stack([kr] * n), focus=radius)
    return KernelSet((rows, cols), PATCH, [cap], crop, (h, w),
                     provenance={"source": "synth.pixel4_set: the rendering PSF", "psf": params.to_dict(),
                                 "radius_px": radius})


def gt_box(shape: tuple[int, int], rng: np.random.Generator) -> tuple[int, int, int, int]:
    """(y, x, h, w) of the ground truth: the central 2/3 of each side, shifted by up to MAX_SHIFT."""
    h, w = shape
    gh, gw = (2 * h) // 3, (2 * w) // 3
    dy, dx = (int(v) for v in rng.integers(-MAX_SHIFT, MAX_SHIFT + 1, 2))
    y = int(np.clip((h - gh) // 2 + dy, 0, h - gh))
    x = int(np.clip((w - gw) // 2 + dx, 0, w - gw))
    return y, x, gh, gw


def write_pixel4_set(out: Path, scenes: int = 6, size: tuple[int, int] = (504, 672), seed: int = 0,
                     profile: str = "phone", force: bool = False, device: str = "cpu",
                     progress: Callable[[int, int], None] | None = None, keep: list | None = None,
                     keep_n: int = 4) -> dict:
    """Write ``scenes`` captures of ``size`` (views, H x W) into ``out`` atomically; returns the
    record (also written as ``RECORD_NAME``: per scene the ground truth's box, the exposure's
    peak code, the blur range, the focus distance). The first ``keep_n`` samples are appended to
    ``keep`` when a list is given (``synth``'s contact sheet)."""
    from synth.samples import profile_dp_sample  # the profile's draw of camera, scene, exposure and noise

    h, w = size
    if scenes < 1:
        raise Pixel4SetError(f"--scenes must be at least 1, got {scenes}")
    kernels = reference_kernels((h, w))
    record = {"tool": "defocus-toolchain synth --format pixel4_gt", "created_unix": int(time.time()),
              "profile": profile, "size": [h, w], "seed": seed,
              "levels": {"black": XIN_BLACK, "white": XIN_BLACK + 2 ** XIN_BITS - 1},
              "psf": DEVICE_PSF.to_dict(), "reference_radius_px": REFERENCE_RADIUS, "samples": []}
    t0 = time.perf_counter()
    with atomic_dir(Path(out), replace=force, what="capture set", error=Pixel4SetError) as tmp:
        (tmp / XIN_GT_FOLDER).mkdir()
        for i in range(scenes):
            rng = np.random.default_rng([seed, i])
            s, cam = profile_dp_sample(rng, (h, w), "pixel4_dp", profile, psf_params=DEVICE_PSF,
                                       channels="green", device=device)
            y, x, gh, gw = gt_box((h, w), rng)
            stem = f"{i:03d}"
            left, right, sharp = (np.asarray(a, np.float32)[..., 0] for a in (s.left, s.right, s.sharp))
            _write_png(tmp / f"{stem}_left.png", xin_codes(left))
            _write_png(tmp / f"{stem}_right.png", xin_codes(right))
            _write_png(tmp / XIN_GT_FOLDER / f"{stem}_gt.png", xin_codes(sharp[y:y + gh, x:x + gw]))
            coc = np.asarray(s.coc, np.float32)
            record["samples"].append({
                "name": stem, "gt_offset": [y, x], "gt_size": [gh, gw], "focus_m": cam.focus_distance,
                "coc_px": [round(float(coc.min()), 2), round(float(coc.max()), 2)],
                "peak_code": int(xin_codes(np.maximum(left, right)).max())})
            if keep is not None and len(keep) < keep_n:
                keep.append(s)
            if progress:
                progress(i + 1, scenes)
        kernels.save(tmp / "calibration")
        record["seconds"] = round(time.perf_counter() - t0, 2)
        record["samples_per_second"] = round(scenes / max(record["seconds"], 1e-9), 3)
        (tmp / RECORD_NAME).write_text(json.dumps(record, indent=1))
    return record
