"""The demo's calibration: the chart rendered through a known PSF bank, then estimated and fitted.

The known bank is the Butterworth DP model of seed 004 with a small field grid (the radius grows
towards the corners); the chart goes through a mild homography, that bank's PSFs at two focus
settings, per-view vignetting, noise, and is written as 14-bit DP pairs on black 1024 (the Pixel 4
PNG layout) beside a white-sheet folder. ``calibration.estimate`` and ``calibration.bank_fit``
then run with short settings, as ``calibrate estimate`` / ``calibrate fit`` do. The recovered
radii are compared with the truth: the demo says how close the fit came.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from calibration.bank_fit import build_bank, fit_kernel_set
from calibration.chart import make_chart, save_chart
from calibration.estimate import estimate
from calibration.report import write_report
from core.atomic import atomic_dir
from synth.chart_capture import chart_capture, field_truth_bank, mild_homography, vignetting_gains

FOCUS = {"near": -4.0, "far": 3.0}  # signed CoC radius (px) at the field centre per focus setting
TRUTH_GRID = (2, 3)


def to_14bit(view16: np.ndarray) -> np.ndarray:
    """16-bit full-scale codes -> the Pixel 4 PNG layout: 14-bit data on black 1024."""
    return np.round(1024 + view16.astype(np.float64) / 65535 * (2 ** 14 - 1)).astype(np.uint16)


def render_captures(root: Path, shape: tuple[int, int], chart_size: tuple[int, int], seed: int) -> dict:
    """chart.png/.json, captures/NAME_{left,right}.png (+ captures.json) and white/ under ``root``."""
    rng = np.random.default_rng(seed)
    chart = make_chart(*chart_size, seed=seed + 1, noise_cell=2)
    save_chart(chart, root / "chart.png")
    H = mild_homography(chart_size, shape)
    truth, vig = field_truth_bank(TRUTH_GRID, "demo truth"), vignetting_gains(shape)
    for sub in ("captures", "white"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for name, r in FOCUS.items():
        for view, img in zip(("left", "right"), chart_capture(chart.image, H, shape, truth, r, rng, vig)):
            cv2.imwrite(str(root / "captures" / f"{name}_{view}.png"), to_14bit(img))
    (root / "captures" / "captures.json").write_text(json.dumps(FOCUS))
    for view, img in zip(("left", "right"), chart_capture(chart.image, H, shape, truth, 0.0, rng, vig, white=True)):
        cv2.imwrite(str(root / "white" / f"sheet_{view}.png"), to_14bit(img))
    return {"chart": root / "chart.json", "captures": root / "captures", "white": root / "white"}


def run_calibration(out: Path, shape=(480, 576), chart_size=(1000, 800), grid=(2, 3), kernel_size=31,
                    iterations=40, seed: int = 0, progress: Callable[[int, int], None] | None = None) -> dict:
    """Render, estimate, fit, write the bank and its report into ``out`` (replaced whole).
    Returns the summary figures, the truth comparison and the paths (relative to ``out``)."""
    with atomic_dir(out, replace=True, what="demo calibration") as work:
        paths = render_captures(work, shape, chart_size, seed)
        ks = estimate(paths["captures"], paths["chart"], grid=grid, kernel_size=kernel_size,
                      white_dir=paths["white"], iterations=iterations, progress=progress)
        ks.save(work / "kernels", force=True)
        result = fit_kernel_set(ks, views="both", disk=True)
        bank = build_bank(ks, result, camera="demo", max_radius=12.0, mode="kernels")
        bank_path = bank.save(work / "bank.npz")
        write_report(work / "bank_report", ks, result, bank_path.name)
        s = result["summary"]
        truth = {c["name"]: float(np.median([abs(cell["radius"]) for cell in c["cells"]])) for c in result["captures"]}
        summary = {"kernels": s["kernels"], "butterworth_ncc_mean": s["butterworth_ncc_mean"],
                   "butterworth_ncc_min": s["butterworth_ncc_min"], "disk_ncc_mean": s.get("disk_ncc_mean"),
                   "radius_disparity": s["radius_disparity"].get("line"),
                   "median_radius_px": {k: {"recovered": round(v, 2), "truth": abs(FOCUS[k])} for k, v in truth.items()},
                   "grid": list(grid), "capture": f"{shape[1]}x{shape[0]}", "kernel_size": kernel_size,
                   "iterations": iterations, "focus_settings": FOCUS,
                   "files": {"bank": "bank.npz", "report": "bank_report/report.html", "captures": "captures",
                             "white": "white", "chart": "chart.png"}}
        (work / "summary.json").write_text(json.dumps(summary, indent=1, default=float))
    return summary
