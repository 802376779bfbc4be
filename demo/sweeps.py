"""DC2 focus and aperture sweeps (seed 001, section A: "simulate changing the focus distance and
aperture smoothly, like a DSLR"), written as MP4, WebM and an animated WebP.

The target defocus map is ``A * |d - d_focus|`` over the capture's disparity
(``runtime_py.defocus_maps``): a focus sweep moves ``d_focus`` from the nearest to the farthest
disparities at a fixed ``A``; an aperture sweep opens ``A`` from 0 (all in focus) with the focus
held on the nearest subject. Everything else (W, UW aligned to W, W's own defocus) is computed
once by ``runtime_py.run_capture.model_inputs`` and reused for every frame.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from models.dc2_spec import DEFOCUS_NORM_PX  # the packing of DC2's defocus-map inputs (as run_capture uses it)
from models.registry import get
from runtime_py import run_capture
from runtime_py.defocus_maps import defocus_map

TARGET_INPUT = "defocus_target"
NEAR_Q, FAR_Q = 95, 5  # disparity percentiles of the nearest / farthest focus (robust to stray pixels)


def scale_for(disp: np.ndarray, aperture: float) -> float:
    """px per disparity unit for an aperture setting (run_capture's convention: aperture 1 makes
    the scene's disparity range span the defocus input's full scale)."""
    return aperture * DEFOCUS_NORM_PX / (float(np.ptp(disp)) or 1.0)


def focus_sweep(disp: np.ndarray, frames: int, aperture: float = 1.5) -> list[tuple[str, np.ndarray]]:
    """(label, target defocus map in px) with the focus moving from near to far."""
    near, far = np.percentile(disp, [NEAR_Q, FAR_Q])
    a = scale_for(disp, aperture)
    return [(f"focus {i + 1}/{frames} (d={d:.3g})", defocus_map(disp, a, value=float(d))[0])
            for i, d in enumerate(np.linspace(near, far, frames))]


def aperture_sweep(disp: np.ndarray, frames: int, max_aperture: float = 2.0) -> list[tuple[str, np.ndarray]]:
    """(label, target defocus map in px) with the aperture opening from 0, focus on the nearest subject."""
    near = float(np.percentile(disp, NEAR_Q))
    return [(f"aperture {ap:.2f}", defocus_map(disp, scale_for(disp, ap), value=near)[0])
            for ap in np.linspace(0.0, max_aperture, frames)]


def render(runner, model: str, inputs: dict, targets: list[tuple[str, np.ndarray]],
           progress=None, record: dict | None = None) -> list[np.ndarray]:
    """One output frame (HxWx3 float in [0, 1]) per target defocus map, through ``runner``, in the
    capture's encoding (``record`` of ``run_capture.model_inputs``)."""
    spec_main = get(model).main_output
    frames = []
    for i, (_, t) in enumerate(targets):
        feed = dict(inputs)
        feed[TARGET_INPUT] = np.clip(t / DEFOCUS_NORM_PX, 0, 1)[None, None].astype(np.float32)
        out = run_capture.in_capture_encoding(model, run_capture.run(runner, model, feed), record or {})
        frames.append(np.clip(out[spec_main][0].transpose(1, 2, 0), 0, 1))
        if progress:
            progress(i + 1, len(targets))
    return frames


def gradient_energy(image: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean squared gradient magnitude of the grey image (inside ``mask``): falls as blur grows."""
    g = image.mean(axis=2) if image.ndim == 3 else image
    gy, gx = np.gradient(g.astype(np.float64))
    e = gx * gx + gy * gy
    return float(e[mask].mean() if mask is not None else e.mean())


def background_mask(disp: np.ndarray, fraction: float = 0.4) -> np.ndarray:
    """The farthest ``fraction`` of the pixels (smallest disparity): what blurs as the aperture opens."""
    return disp <= np.percentile(disp, 100 * fraction)


def _u8(frame: np.ndarray) -> np.ndarray:
    return np.round(np.clip(frame, 0, 1) * 255).astype(np.uint8)


def write_video(frames: list[np.ndarray], path: Path, fps: float, fourcc: str) -> Path:
    """Frames (RGB float) through OpenCV's writer; a ping-pong loop (forward then back)."""
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
    if not writer.isOpened():
        raise OSError(f"{path}: OpenCV cannot write {fourcc} video here")
    try:
        for f in frames + frames[-2:0:-1]:
            writer.write(cv2.cvtColor(_u8(f), cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    return path


def write_webp(frames: list[np.ndarray], path: Path, fps: float) -> Path:
    """An animated WebP (Pillow), looping, same ping-pong as the videos."""
    from PIL import Image

    seq = [Image.fromarray(_u8(f)) for f in frames + frames[-2:0:-1]]
    seq[0].save(path, save_all=True, append_images=seq[1:], duration=int(round(1000 / fps)), loop=0, quality=85)
    return path


def write_sweep(frames: list[np.ndarray], folder: Path, stem: str, fps: float = 8.0) -> dict:
    """``stem``.mp4 (mp4v), ``stem``.webm (VP8: what a browser plays) and ``stem``.webp in ``folder``."""
    return {"mp4": write_video(frames, folder / f"{stem}.mp4", fps, "mp4v").name,
            "webm": write_video(frames, folder / f"{stem}.webm", fps, "VP80").name,
            "webp": write_webp(frames, folder / f"{stem}.webp", fps).name,
            "frames": len(frames), "loop_frames": 2 * len(frames) - 2, "fps": fps}
