"""Fast (pyramid + FFT) vs reference (per-layer cv2.filter2D) DP renderer, measured in one run.

512x512 dead-leaves scene, 64 depth layers, CoC up to 40 px. For each thread setting (1 thread,
2 threads, and 2 threads while a busy process this script starts keeps one core spinning, for a
bounded time) both renderers get the same number of threads (the reference through
``cv2.setNumThreads``, the fast one through ``render_dp(threads=...)``) and run alternately, so
load drifts hit both; medians and their ratio. Then a cold-cache render (new PSF parameters)
and the training throughput (full samples per second at 256x256: scene + render + distortion +
noise, one thread). Prints a table, the load average, then one JSON line of the figures.

    .venv/bin/python benchmarks/bench_synth.py [--repeats 5] [--settings 1,2,2busy] [--samples 12]
        [--max-error E] [--size 512]

``--max-error``: the pyramid's error budget (default ``synth.render.PYRAMID_MAX_ERROR``, as shipped);
``--size``: the scene's side (the CoC range stays that of the camera: smaller is quicker, not equal).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
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
from synth.render import PYRAMID_MAX_ERROR, ParametricPSF, render_dp, render_dp_reference  # noqa: E402
from synth.scenes import dead_leaves, random_scene  # noqa: E402

BUSY_SECONDS_MAX = 300  # the busy process ends by itself after this, whatever happens here


class BusyCore:
    """A child process spinning on one core (bounded in time; stopped on exit)."""

    def __enter__(self):
        code = f"import time\nend = time.time() + {BUSY_SECONDS_MAX}\nwhile time.time() < end:\n    pass\n"
        self.proc = subprocess.Popen([sys.executable, "-c", code])
        time.sleep(0.5)
        return self

    def __exit__(self, *exc):
        self.proc.kill()
        self.proc.wait()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b) ** 2))
    return float(10 * np.log10(1.0 / max(mse, 1e-20)))


def measure(fast, ref, repeats: int) -> tuple[float, float]:
    """Median seconds of ``fast`` and ``ref``, run alternately."""
    t_fast, t_ref = [], []
    for i in range(repeats):
        for fn, times in ((fast, t_fast), (ref, t_ref)) if i % 2 == 0 else ((ref, t_ref), (fast, t_fast)):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
    return statistics.median(t_fast), statistics.median(t_ref)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--settings", default="1,2,2busy",
                    help="comma-separated thread settings: N, or Nbusy (N threads beside a busy process)")
    ap.add_argument("--samples", type=int, default=12, help="samples for the throughput figure (0: skip)")
    ap.add_argument("--max-error", type=float, default=PYRAMID_MAX_ERROR, help="pyramid error budget")
    ap.add_argument("--size", type=int, default=512, help="scene side in px")
    args = ap.parse_args()

    scene = dead_leaves(args.size, args.size, seed=7, near_m=1.0, far_m=250.0)
    cam = get_camera("rdpd_set3")  # focus 8 m: CoC from -40 (near) to about +10 (far)
    coc = cam.coc_px(scene.depth, quantise=False).astype(np.float32)
    psf = ParametricPSF(PSFParams(3, 0.6, 0.2))
    load_before = os.getloadavg()[0]

    rows, figures = [], {}
    out_fast = out_ref = None
    for setting in args.settings.split(","):
        busy = setting.endswith("busy")
        threads = int(setting[:-4] if busy else setting)
        cv2.setNumThreads(threads)
        torch.set_num_threads(threads)

        def fast():
            nonlocal out_fast
            out_fast = render_dp(scene.image, coc, psf, max_layers=64, device="cpu", threads=threads,
                                 max_error=args.max_error)

        def ref():
            nonlocal out_ref
            out_ref = render_dp_reference(scene.image, coc, psf, max_layers=64)

        if busy:
            with BusyCore():
                fast()  # warm: PSFs, pyramid levels and kernel spectra cached, as in a data run
                t_fast, t_ref = measure(fast, ref, args.repeats)
        else:
            fast()
            t_fast, t_ref = measure(fast, ref, args.repeats)
        key = f"{threads}t" + ("_busy" if busy else "")
        label = f"{threads} thread{'s' if threads > 1 else ''}" + (" + busy process" if busy else "")
        rows.append((label, t_ref * 1000, t_fast * 1000, t_ref / t_fast))
        figures[key] = {"reference_median_ms": round(t_ref * 1000, 1), "fast_median_ms": round(t_fast * 1000, 1),
                        "speedup": round(t_ref / t_fast, 2)}
    quality = psnr(out_fast.left, out_ref.left), psnr(out_fast.right, out_ref.right)

    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    t = time.perf_counter()
    render_dp(scene.image, coc, ParametricPSF(PSFParams(9, 0.4, 0.1)), max_layers=64, device="cpu",
              max_error=args.max_error)
    t_cold = time.perf_counter() - t

    sps = None
    if args.samples:
        rng = np.random.default_rng(0)
        times = []
        for i in range(args.samples):
            t = time.perf_counter()
            sc = random_scene("mixed", 256, 256, seed=i, near_m=1.6, far_m=250.0)
            make_dp_sample(sc, cam, rng=rng, device="cpu")
            times.append(time.perf_counter() - t)
        sps = 1.0 / statistics.median(times)
    load_after = os.getloadavg()[0]

    print(f"DP render {args.size}x{args.size}, pyramid max error {args.max_error:g}, {out_fast.layer_radii.size} layers, |CoC| <= {np.abs(coc).max():.0f} px; "
          f"median of {args.repeats}, renderers alternating")
    print(f"{'threads':28s} {'reference ms':>13s} {'fast ms':>9s} {'speed-up':>9s}")
    for label, r, f, s in rows:
        print(f"{label:28s} {r:13.1f} {f:9.1f} {s:8.1f}x")
    print(f"fast, cold caches (new PSF parameters), 1 thread: {t_cold * 1000:.1f} ms")
    print(f"fast vs reference PSNR: left {quality[0]:.1f} dB, right {quality[1]:.1f} dB")
    if sps is not None:
        print(f"training samples/s at 256x256 (scene + render + distortion + noise, 1 thread): {sps:.2f}")
    print(f"load average (1 min): {load_before:.1f} before, {load_after:.1f} after; {os.cpu_count()} CPUs")
    first = next(iter(figures.values()))
    print(json.dumps({
        "speedup": first["speedup"], "reference_median_ms": first["reference_median_ms"],
        "fast_median_ms": first["fast_median_ms"], "settings": figures,
        "min_speedup": min(f["speedup"] for f in figures.values()),
        "fast_cold_ms": round(t_cold * 1000, 1), "psnr_db": round(min(quality), 1),
        "layers": int(out_fast.layer_radii.size), "max_coc_px": float(np.abs(coc).max()),
        "max_error": args.max_error, "size": args.size,
        "samples_per_second_256": round(sps, 2) if sps is not None else None, "device": "cpu",
        "load_avg_1min": [round(load_before, 1), round(load_after, 1)],
    }))


if __name__ == "__main__":
    main()
