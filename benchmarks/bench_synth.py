"""Fast (FFT, PyTorch) vs reference (per-layer cv2.filter2D) DP renderer, measured in one run.

512x512 dead-leaves scene, 64 depth layers, CoC up to 40 px, 2 threads: median times and the
speed-up; then training throughput (full samples per second at 256x256: scene + render +
distortion + noise). Prints a table, then one JSON line of the figures.

    .venv/bin/python benchmarks/bench_synth.py [--repeats 5]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from calibration.cameras import get_camera  # noqa: E402
from calibration.dp_psf import PSFParams  # noqa: E402
from synth.dp_sample import make_dp_sample  # noqa: E402
from synth.render import ParametricPSF, render_dp, render_dp_reference  # noqa: E402
from synth.scenes import dead_leaves, random_scene  # noqa: E402


def timed(fn, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--samples", type=int, default=12, help="samples for the throughput figure")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)

    scene = dead_leaves(512, 512, seed=7, near_m=1.0, far_m=250.0)
    cam = get_camera("rdpd_set3")  # focus 8 m: CoC from -40 (near) to about +10 (far)
    coc = cam.coc_px(scene.depth, quantise=False).astype(np.float32)
    psf = ParametricPSF(PSFParams(3, 0.6, 0.2))
    fast = lambda: render_dp(scene.image, coc, psf, max_layers=64, device="cpu", threads=args.threads)
    ref = lambda: render_dp_reference(scene.image, coc, psf, max_layers=64)
    fast()  # warm: PSFs and kernel spectra cached, as in a data-generation run
    t_ref, out_ref = timed(ref, max(1, args.repeats // 2))
    t_fast, out_fast = timed(fast, args.repeats)
    mse = float(np.mean((out_fast.left.astype(np.float64) - out_ref.left) ** 2))
    psnr = 10 * np.log10(1.0 / max(mse, 1e-20))
    t_cold, _ = timed(lambda: render_dp(scene.image, coc, ParametricPSF(PSFParams(9, 0.4, 0.1)),
                                        max_layers=64, device="cpu", threads=args.threads), 1)

    rng = np.random.default_rng(0)
    times = []
    for i in range(args.samples):
        t = time.perf_counter()
        sc = random_scene("mixed", 256, 256, seed=i, near_m=1.6, far_m=250.0)
        make_dp_sample(sc, cam, rng=rng, device="cpu")
        times.append(time.perf_counter() - t)
    sps = 1.0 / statistics.median(times)

    rows = [
        ("reference (cv2.filter2D per layer)", t_ref * 1000),
        ("fast (FFT, cropped, cached spectra)", t_fast * 1000),
        ("fast, cold PSF/spectrum cache", t_cold * 1000),
    ]
    print(f"DP render 512x512, {out_fast.layer_radii.size} layers, |CoC| <= {np.abs(coc).max():.0f} px, "
          f"{args.threads} threads")
    print(f"{'renderer':40s} {'median ms':>10s}")
    for name, ms in rows:
        print(f"{name:40s} {ms:10.1f}")
    print(f"speed-up {t_ref / t_fast:.1f}x (cold cache {t_ref / t_cold:.1f}x); fast vs reference PSNR {psnr:.1f} dB")
    print(f"training samples/s at 256x256 (scene + render + distortion + noise): {sps:.2f}")
    print(json.dumps({
        "reference_median_ms": round(t_ref * 1000, 1), "fast_median_ms": round(t_fast * 1000, 1),
        "fast_cold_ms": round(t_cold * 1000, 1), "speedup": round(t_ref / t_fast, 2),
        "speedup_cold": round(t_ref / t_cold, 2), "psnr_db": round(psnr, 1),
        "layers": int(out_fast.layer_radii.size), "max_coc_px": float(np.abs(coc).max()),
        "threads": args.threads, "samples_per_second_256": round(sps, 2), "device": "cpu",
    }))


if __name__ == "__main__":
    main()
