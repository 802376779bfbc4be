"""`cli.py run` at full resolution, whole process, per runner against PyTorch eager in the same run.

Writes a synthetic Pixel 4 DP capture (PGM pair, 1512x2016 = 3 MP by default) with the engine's
writers, then times `python cli.py run --checkpoint ...` in a subprocess per runner and thread
count: the wall time and CPU time of the whole process (imports, capture reading, model, 16-bit
PNG writing), its peak RSS, and the outputs' parity against the eager run's (PSNR over the whole
image, from the 16-bit PNGs). `auto` is the checkpoint exported on the fly (ONNX fp32) and cached:
its first run is reported apart as `cold` (an export + parity check when the cache had none:
`cold_cache` says), the timed runs hit the cache.

    python benchmarks/bench_run_fullres.py [--model rdpd] [--sizes 1512x2016] [--threads 1,2]
        [--runners auto,eager] [--tiles 768] [--repeats 3] [--eager-repeats 1]

The machine may be shared: medians, the load average before and after, and each ratio within
the same run. The last line is one JSON object (median_s, cpu_s, speedup, peak_rss_mb, parity...).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Runs a command and prints {wall, cpu, rss}: the child's wall and CPU seconds and peak RSS (bytes).
_MEASURE = ("import json, resource, subprocess, sys, time; t = time.perf_counter(); "
            "p = subprocess.run(sys.argv[1:], capture_output=True, text=True); w = time.perf_counter() - t; "
            "u = resource.getrusage(resource.RUSAGE_CHILDREN); "
            "print(p.stderr[-3000:] + p.stdout[-3000:], file=sys.stderr) if p.returncode else None; "
            "print(json.dumps({'rc': p.returncode, 'wall': w, 'cpu': u.ru_utime + u.ru_stime, 'rss': u.ru_maxrss * 1024}))")


def make_capture(root: Path, h: int, w: int, seed: int = 3) -> Path:
    """A Pixel capture-app pair (16-bit PGM) of an engine scene at h x w (square pixels)."""
    import numpy as np

    from calibration.cameras import get_camera
    from synth.dp_sample import make_dp_sample
    from synth.scenes import random_scene
    from synth.writers import write_pixel_sample

    cam = get_camera("pixel4_dp")
    scene = random_scene("mixed", h, w, seed=seed, near_m=0.2, far_m=10)
    write_pixel_sample(root, 0, make_dp_sample(scene, cam, rng=np.random.default_rng(seed), device="cpu"), cam)
    return root


def measure(cmd: list[str]) -> dict:
    p = subprocess.run([sys.executable, "-c", _MEASURE, *cmd], capture_output=True, text=True, cwd=ROOT,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    res = json.loads(p.stdout.strip().splitlines()[-1])
    if res["rc"]:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{p.stderr[-3000:]}")
    return res


def png_parity(a: Path, b: Path) -> dict:
    """PSNR (peak 1) and max |diff| of two 16-bit PNG outputs."""
    import cv2
    import numpy as np

    x, y = (cv2.imread(str(p), cv2.IMREAD_UNCHANGED).astype(np.float64) / 65535 for p in (a, b))
    mse = float(np.mean((x - y) ** 2))
    return {"psnr_db": round(10 * np.log10(1 / mse), 2) if mse else 200.0, "max_abs": round(float(np.abs(x - y).max()), 5)}


def main() -> None:
    from core.sizes import parse_size

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="rdpd")
    ap.add_argument("--checkpoint", default=None, help="default checkpoints/<model>-mobile.safetensors")
    ap.add_argument("--sizes", default="1512x2016", help="capture sizes HxW, comma-separated (1 MP: 864x1152)")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--runners", default="auto,eager", help="auto, eager or target names (cli.py run --runner)")
    ap.add_argument("--tiles", default="768", help="--tile values for the exported runners, comma-separated")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--eager-repeats", type=int, default=1)
    ap.add_argument("--out", default=None, help="keep captures and outputs here (default: temp)")
    ap.add_argument("--fresh-cache", action="store_true", help="export into an empty cache (default: the user's "
                    "export cache, as `cli.py run` uses it, so repeated benchmarks reuse the export)")
    a = ap.parse_args()
    ckpt = Path(a.checkpoint or ROOT / "checkpoints" / f"{a.model}-mobile.safetensors")
    work = Path(a.out) if a.out else Path(tempfile.mkdtemp(prefix="bench_run_fullres_"))
    from runtime_py.export_cache import cache_root

    cache = work / "cache" if a.fresh_cache else cache_root()
    load = [round(os.getloadavg()[0], 1)]
    rows = []
    for size in a.sizes.split(","):
        h, w = parse_size(size)
        cap = make_capture(work / f"capture_{h}x{w}", h, w)
        for threads in [int(t) for t in a.threads.split(",")]:
            for runner in a.runners.split(","):
                for tile in (a.tiles.split(",") if runner != "eager" else ["-"]):
                    out = work / f"out_{h}x{w}_{runner}_{tile}_{threads}t"
                    cmd = [sys.executable, str(ROOT / "cli.py"), "run", "--model", a.model, "--capture", str(cap),
                           "--checkpoint", str(ckpt), "--out", str(out), "--force", "--runner", runner,
                           "--threads", str(threads), "--cache-dir", str(cache)]
                    cmd += ["--tile", tile] if tile != "-" else []
                    cold = measure(cmd) if runner != "eager" else None  # export (once per tile) or hit
                    cold_cache = json.loads((out / "run.json").read_text())["runner"].get("cache") if cold else None
                    n = a.eager_repeats if runner == "eager" else a.repeats
                    runs = [measure(cmd) for _ in range(n)]
                    rec = json.loads((out / "run.json").read_text())["runner"]
                    rows.append({"size": [h, w], "mp": round(h * w / 1e6, 2), "threads": threads, "runner": runner,
                                 "tile": rec.get("tile"), "runtime": rec["runtime"], "cache": rec.get("cache"),
                                 "runs": n, "median_s": round(statistics.median(r["wall"] for r in runs), 2),
                                 "cpu_s": round(statistics.median(r["cpu"] for r in runs), 2),
                                 "peak_rss_mb": round(max(r["rss"] for r in runs) / 2**20),
                                 "cold_s": round(cold["wall"], 1) if cold else None, "cold_cache": cold_cache,
                                 "out": str(out)})
                    print(f"  {size} {threads}t {runner} tile {tile}: {rows[-1]['median_s']} s", file=sys.stderr)
    load.append(round(os.getloadavg()[0], 1))
    for r in rows:  # same size and threads: ratio to eager, parity of the outputs against eager's
        base = next((b for b in rows if b["runner"] == "eager" and b["size"] == r["size"]
                     and b["threads"] == r["threads"]), None)
        r["speedup"] = round(base["median_s"] / r["median_s"], 2) if base else None
        r["cpu_speedup"] = round(base["cpu_s"] / r["cpu_s"], 2) if base else None
        r["parity"] = png_parity(Path(base["out"]) / "y.png", Path(r["out"]) / "y.png") if base and base is not r else None
    print(f"cli.py run --model {a.model} --checkpoint {ckpt.name}: whole process, median of {a.repeats} "
          f"(eager {a.eager_repeats}); load average {load[0]} -> {load[1]} on {os.cpu_count()} CPUs")
    print(f"{'size':>10} {'MP':>5} {'thr':>3} {'runner':8} {'tile':>9} {'wall s':>7} {'cpu s':>7} {'x eager':>7} "
          f"{'cpu x':>6} {'RSS MB':>7} {'cold s':>7} {'PSNR vs eager':>14}")
    for r in rows:
        tile = "x".join(map(str, r["tile"])) if r["tile"] else "whole"
        par = f"{r['parity']['psnr_db']:.1f} dB" if r["parity"] else "-"
        print(f"{r['size'][0]}x{r['size'][1]:<5} {r['mp']:5.2f} {r['threads']:3d} {r['runner']:8} {tile:>9} "
              f"{r['median_s']:7.2f} {r['cpu_s']:7.2f} {r['speedup'] or '-':>7} {r['cpu_speedup'] or '-':>6} "
              f"{r['peak_rss_mb']:7d} {r['cold_s'] if r['cold_s'] is not None else '-':>7} {par:>14}")
    head = next((r for r in rows if r["runner"] != "eager" and r["speedup"]), None)
    print(json.dumps({"model": a.model, "checkpoint": str(ckpt), "cpus": os.cpu_count(), "load_avg_1min": load,
                      "median_s": head and head["median_s"], "speedup": head and head["speedup"],
                      "peak_rss_mb": head and head["peak_rss_mb"], "rows": rows}))


if __name__ == "__main__":
    main()
