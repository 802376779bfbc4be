"""PSF calibration end to end on synthetic captures, with known truth.

The chart is rendered into a 768 x 896 capture through a mild homography, known field-varying
Butterworth DP PSFs (a 6 x 7 field grid: |r| grows by 8 % and the shape changes towards the
corners), per-view vignetting, a black level, signal-dependent noise and 16-bit quantisation, at
three focus settings (signed radius -6, +3.5, +7 px at the field centre) plus a held-out one
(+5 px) and a white sheet. Then ``calibrate estimate`` (3 x 4 patches, 31-px kernels) and
``calibrate fit`` (joint Butterworth + half-disk) recover the kernels. Figures: kernel NCC vs the
truth (target >= 0.95), radius error (target <= 0.5 px), seconds per capture, Butterworth vs
half-disk NCC, the radius-disparity line, and the PSNR of re-rendering the held-out capture
through the recovered bank (its field grid of measured kernels, magnified per radius, or of fitted
Butterworth parameters), next to re-rendering through the truth parameters (the noise ceiling),
the field-median fitted model, and the default model. Table, then one JSON line.

    .venv/bin/python benchmarks/bench_calibration.py [--grid 3x4] [--out /tmp/bench_calibration]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from calibration.bank_fit import build_bank, fit_kernel_set  # noqa: E402
from calibration.chart import make_chart, save_chart  # noqa: E402
from calibration.dp_psf import PSFParams, cross_correlation, dual_pixel_psf  # noqa: E402
from calibration.estimate import estimate  # noqa: E402
from calibration.kernel_stack import kernel_centre  # noqa: E402
from calibration.psf_bank import FieldGrid, PSFBank  # noqa: E402
from core.sizes import parse_size  # noqa: E402
from synth.chart_capture import chart_capture, field_truth_bank, mild_homography, vignetting_gains, warp_supersampled  # noqa: E402
from synth.field_render import FieldPSF  # noqa: E402
from synth.render import ParametricPSF, render_dp  # noqa: E402

SHAPE = (768, 896)
CHART = (1400, 1100)  # W, H
TRUTH_GRID = (6, 7)
FOCUS = {"f1": -6.0, "f2": 3.5, "f3": 7.0}
HELD_OUT = 5.0
KERNEL = 31


def truth_bank() -> PSFBank:
    return field_truth_bank(TRUTH_GRID)


def truth_cell(bank: PSFBank, y: float, x: float) -> tuple[int, int]:
    rows, cols = bank.field.shape
    return int(y // (SHAPE[0] / rows)), int(x // (SHAPE[1] / cols))


def psnr_affine(pred: np.ndarray, target: np.ndarray) -> float:
    """PSNR after the best affine photometric match of ``pred`` to ``target`` (unknown black level
    and gain), over the target's range."""
    A = np.stack([pred.ravel(), np.ones(pred.size)], 1)
    coef, *_ = np.linalg.lstsq(A, target.ravel(), rcond=None)
    mse = float(np.mean((A @ coef - target.ravel()) ** 2))
    peak = float(target.max() - target.min())
    return 10 * np.log10(peak * peak / max(mse, 1e-20))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--grid", default="3x4")
    ap.add_argument("--out", type=Path, default=None, help="keep captures, kernels, bank and report here")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    grid = parse_size(args.grid, minimum=1)
    root = args.out or Path(tempfile.mkdtemp(prefix="bench_calibration_"))
    caps, white = root / "captures", root / "white"
    caps.mkdir(parents=True, exist_ok=True)
    white.mkdir(exist_ok=True)
    rng = np.random.default_rng(args.seed)

    chart = make_chart(*CHART, seed=args.seed + 1, noise_cell=2)
    save_chart(chart, root / "chart.png")
    H = mild_homography(CHART, SHAPE)
    truth = truth_bank()
    vig = vignetting_gains(SHAPE)
    t0 = time.perf_counter()
    for name, r in FOCUS.items():
        L, R = chart_capture(chart.image, H, SHAPE, truth, r, rng, vig)
        cv2.imwrite(str(caps / f"{name}_L.png"), L)
        cv2.imwrite(str(caps / f"{name}_R.png"), R)
    (caps / "captures.json").write_text(json.dumps(FOCUS))
    held_l, held_r = chart_capture(chart.image, H, SHAPE, truth, HELD_OUT, rng, vig)
    wl, wr = chart_capture(chart.image, H, SHAPE, truth, 0.0, rng, vig, white=True)
    cv2.imwrite(str(white / "sheet_L.png"), wl)
    cv2.imwrite(str(white / "sheet_R.png"), wr)
    t_render = time.perf_counter() - t0

    t0 = time.perf_counter()
    ks = estimate(caps, root / "chart.json", grid=grid, kernel_size=KERNEL, white_dir=white)
    t_estimate = time.perf_counter() - t0
    ks.save(root / "kernels", force=True)
    per_capture = ks.provenance["seconds_per_capture"]
    cpu_capture = ks.provenance["cpu_seconds_per_capture"]

    # kernels vs truth
    y0, x0, _, _ = ks.crop
    nccs, truth_r = [], {}
    for cap in ks.captures:
        r = FOCUS[cap.name]
        for p in range(grid[0] * grid[1]):
            i, j = divmod(p, grid[1])
            ti, tj = truth_cell(truth, y0 + (i + 0.5) * ks.patch, x0 + (j + 0.5) * ks.patch)
            rt, prm = r * truth.field.gain[ti, tj], truth.field.cell_params(ti, tj)
            tl, tr = dual_pixel_psf(rt, prm, KERNEL)
            # the truth rendered exactly where the measured pair sits (registration moves kernels
            # as a whole; no resampling of either kernel)
            shift = np.subtract(kernel_centre(cap.left[p] + cap.right[p]), kernel_centre(tl + tr))
            tl, tr = dual_pixel_psf(rt, prm, KERNEL, offset=tuple(shift))
            nccs += [cross_correlation(cap.left[p], tl), cross_correlation(cap.right[p], tr)]
            truth_r[(cap.name, p)] = r * truth.field.gain[ti, tj]

    t0, c0 = time.perf_counter(), time.process_time()
    result = fit_kernel_set(ks, views="joint", disk=True)
    t_fit, c_fit = time.perf_counter() - t0, time.process_time() - c0
    errs = [abs(c["radius"] - truth_r[(cap["name"], c["index"])]) for cap in result["captures"] for c in cap["cells"]]
    s = result["summary"]
    bank = build_bank(ks, result, camera="bench", max_radius=10)  # field grid of fitted parameters
    bank.save(root / "bank.npz")
    bank_k = build_bank(ks, result, camera="bench", max_radius=10, mode="kernels")  # of measured kernels
    bank_k.save(root / "bank_kernels.npz")

    # held-out capture: re-render the calibrated region through each bank, compare after
    # flat-fielding with the estimated gains and an affine photometric match
    y, x, h, w = ks.crop
    m = KERNEL  # compare away from the region's edges (no context there)
    sharp = warp_supersampled(chart.image, H, SHAPE)[y:y + h, x:x + w, None]
    rows_t = slice(m, h - m), slice(m, w - m)
    observed = {"left": held_l.astype(np.float64)[y:y + h, x:x + w] / 65535 / ks.vignetting["left"][y:y + h, x:x + w],
                "right": held_r.astype(np.float64)[y:y + h, x:x + w] / 65535 / ks.vignetting["right"][y:y + h, x:x + w]}
    cells = [truth_cell(truth, y + (i + 0.5) * ks.patch, x + (j + 0.5) * ks.patch)
             for i in range(grid[0]) for j in range(grid[1])]
    r_med = HELD_OUT * float(np.median([truth.field.gain[c] for c in cells]))  # what a camera model would give
    coc = np.full((h, w), r_med, np.float32)
    region_truth = PSFBank(truth.radii, truth.params, truth.left, truth.right, field=FieldGrid(
        np.stack([truth.field.params[cells[p]] for p in range(len(cells))]).reshape(grid[0], grid[1], 4),
        np.array([truth.field.gain[c] for c in cells]).reshape(grid) * (HELD_OUT / r_med), None, "params"))
    plain = PSFBank(bank.radii, bank.params, bank.left, bank.right)
    renders = {
        "truth parameters per patch (ceiling)": FieldPSF(region_truth, blend=0.05).render(sharp, coc, device="cpu"),
        "recovered bank, field of measured kernels": FieldPSF(PSFBank(
            bank_k.radii, bank_k.params, bank_k.left, bank_k.right, field=bank_k.field)).render(sharp, coc, device="cpu"),
        "recovered bank, field of fitted parameters": FieldPSF(PSFBank(
            bank.radii, bank.params, bank.left, bank.right, field=bank.field)).render(sharp, coc, device="cpu"),
        "recovered bank, field-median parameters": render_dp(sharp, coc, ParametricPSF(PSFParams(**plain.params[0])), device="cpu"),
        "default model PSFParams()": render_dp(sharp, coc, ParametricPSF(PSFParams()), device="cpu"),
    }
    psnr = {k: float(np.mean([psnr_affine(v.left[..., 0][rows_t], observed["left"][rows_t]),
                              psnr_affine(v.right[..., 0][rows_t], observed["right"][rows_t])]))
            for k, v in renders.items()}
    rd = s["radius_disparity"].get("line") or {}

    rows = [
        ("captures (focus settings)", f"{len(FOCUS)} + 1 held out + 1 white, {SHAPE[1]}x{SHAPE[0]}"),
        ("grid / patch / kernel", f"{grid[0]}x{grid[1]} / {ks.patch} px / {KERNEL} px"),
        ("kernel NCC vs truth mean / min", f"{np.mean(nccs):.4f} / {np.min(nccs):.4f} (target >= 0.95)"),
        ("radius error mean / max", f"{np.mean(errs):.3f} / {np.max(errs):.3f} px (target <= 0.5)"),
        ("estimate s per capture, wall / CPU (median)", f"{np.median(per_capture):.2f} / {np.median(cpu_capture):.2f}"),
        ("fit s per cell (joint + half-disk), wall / CPU", f"{t_fit / len(errs):.2f} / {c_fit / len(errs):.2f}"),
        ("Butterworth joint NCC mean", f"{s['joint_ncc_mean']:.4f}"),
        ("half-disk NCC mean (per view / joint)", f"{s['disk_ncc_mean']:.4f} / {s['disk_joint_ncc_mean']:.4f}"),
        ("radius-disparity line", f"d = {rd.get('slope', float('nan')):.4f} r + {rd.get('intercept', float('nan')):.4f}, "
                                  f"R2 {rd.get('r2', float('nan')):.4f}"),
    ] + [(f"held-out PSNR: {k}", f"{v:.2f} dB") for k, v in psnr.items()]
    width = max(len(a) for a, _ in rows)
    print(f"PSF calibration, synthetic end to end (data in {root})")
    for a, b in rows:
        print(f"{a:<{width}}  {b}")
    figures = {
        "kernel_ncc_mean": round(float(np.mean(nccs)), 4), "kernel_ncc_min": round(float(np.min(nccs)), 4),
        "radius_err_mean_px": round(float(np.mean(errs)), 3), "radius_err_max_px": round(float(np.max(errs)), 3),
        "estimate_s_per_capture": round(float(np.median(per_capture)), 2), "fit_s_per_cell": round(t_fit / len(errs), 2),
        "estimate_cpu_s_per_capture": round(float(np.median(cpu_capture)), 2), "fit_cpu_s_per_cell": round(c_fit / len(errs), 2),
        "render_s": round(t_render, 2), "estimate_s": round(t_estimate, 2),
        "butterworth_joint_ncc_mean": round(s["joint_ncc_mean"], 4), "disk_ncc_mean": round(s["disk_ncc_mean"], 4),
        "disk_joint_ncc_mean": round(s["disk_joint_ncc_mean"], 4),
        "radius_disparity_slope": round(rd.get("slope", float("nan")), 4), "radius_disparity_r2": round(rd.get("r2", float("nan")), 4),
        "heldout_psnr_db": {k: round(v, 2) for k, v in psnr.items()},
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
