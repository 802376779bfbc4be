"""`make bench-quick`: the headline ratios in a few minutes, each against its baseline in the same run.

Runs, with small settings, the benchmark scripts whose last line is a JSON object, and prints
one table of their headline figures:
- renderer speed-up over the per-layer cv2.filter2D reference at 1 thread and at 2 threads
  beside a busy process, and the fast-vs-reference PSNR (`bench_synth.py`);
- data generation samples/s with 2 processes over 1 (`bench_synth_shards.py`), parts == 1 run;
- exported RDPD mobile (ONNX fp32, 128x128, 2 threads) latency over PyTorch eager
  (`bench_export.py`);
- `cli.py run --checkpoint` on a 0.34 MP synthetic Pixel capture, whole process, 2 threads: the
  cached ONNX export tiled over eager PyTorch, its peak RSS and its parity with eager
  (`bench_run_fullres.py`; the 3 MP figure is in docs/BENCHMARKS.md).
The last line is one JSON object of those figures plus the wall time and each script's CPU time
(on a shared machine the wall time follows the load; the CPU time says what the run costs). A
script that fails is reported as such (its stderr tail printed) and the exit status is 1.

    .venv/bin/python benchmarks/bench_quick.py [--skip export]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Small settings (issue 17: under 5 minutes on the shared box): the renderer at its benchmark size
# (its headline), everything else tiny; the full-size figures are in docs/BENCHMARKS.md.
EXPORT_SIZE, RUN_SIZE = "128x128", "504x672"
JOBS = {
    "synth": ["bench_synth.py", "--repeats", "2", "--settings", "1,2busy", "--samples", "0"],
    "shards": ["bench_synth_shards.py", "--scenes", "4", "--size", "96x96", "--processes", "1,2"],
    "export": ["bench_export.py", "--models", "rdpd", "--targets", "onnx", "--precisions", "fp32",
               "--size", EXPORT_SIZE, "--runs", "3", "--threads", "2"],
    "run": ["bench_run_fullres.py", "--sizes", RUN_SIZE, "--threads", "2", "--repeats", "2", "--eager-repeats", "1"],
}


def _children_cpu() -> float:
    u = resource.getrusage(resource.RUSAGE_CHILDREN)
    return u.ru_utime + u.ru_stime


def run(name: str) -> tuple[dict | None, float, float, str]:
    """(the script's last-line JSON or None, wall seconds, CPU seconds, error text)."""
    t, cpu = time.perf_counter(), _children_cpu()
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / JOBS[name][0]), *JOBS[name][1:]],
                          cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    seconds, cpu = time.perf_counter() - t, _children_cpu() - cpu
    lines = proc.stdout.strip().splitlines()
    if proc.returncode or not lines:
        return None, seconds, cpu, (proc.stderr or proc.stdout)[-1500:]
    print(proc.stdout, end="" if proc.stdout.endswith("\n") else "\n")
    return json.loads(lines[-1]), seconds, cpu, ""


def export_ratio(fig: dict) -> float | None:
    """Eager median over the fastest exported runner's median, from bench_export's rows."""
    runners = [r["ms"] for r in fig.get("rows", []) if r.get("runtime") != "pytorch-eager" and r.get("ms")]
    eager = [r["ms"] for r in fig.get("rows", []) if r.get("runtime") == "pytorch-eager"]
    return round(eager[0] / min(runners), 2) if eager and runners else None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--skip", default="", help="comma-separated jobs to skip: " + ", ".join(JOBS))
    args = ap.parse_args()
    skip = {s for s in args.skip.split(",") if s}
    t0 = time.perf_counter()
    load_before = os.getloadavg()[0]
    figures, failed, table, cpu_s = {}, [], [], {}
    for name in JOBS:
        if name in skip:
            continue
        print(f"== {JOBS[name][0]} {' '.join(JOBS[name][1:])}", flush=True)
        fig, seconds, cpu, err = run(name)
        cpu_s[name] = round(cpu, 1)
        if fig is None:
            failed.append(name)
            print(f"FAILED after {seconds:.0f} s:\n{err}")
            continue
        if name == "synth":
            s = fig["settings"]
            figures["render_speedup_1t"] = s["1t"]["speedup"]
            figures["render_speedup_2t_busy"] = s["2t_busy"]["speedup"]
            figures["render_psnr_db"] = fig["psnr_db"]
            table += [("renderer vs cv2.filter2D reference, 1 thread", f"{s['1t']['speedup']:.1f}x", "target >= 10x"),
                      ("renderer vs reference, 2 threads + busy process", f"{s['2t_busy']['speedup']:.1f}x",
                       "never < 1x, target 5x"),
                      ("renderer vs reference, PSNR", f"{fig['psnr_db']:.1f} dB", ">= 50 dB")]
        elif name == "shards":
            figures["synth_2proc_over_1proc"] = fig["speedup"]
            figures["synth_union_equal"] = fig["union_equal"]
            table += [("synth --shard: 2 processes over 1 (samples/s)", f"{fig['speedup']:.2f}x",
                       f"parts == 1 run: {fig['union_equal']}")]
        elif name == "export":
            ratio = export_ratio(fig)
            figures["rdpd_onnx_over_eager"] = ratio
            table += [(f"RDPD mobile ONNX fp32 {EXPORT_SIZE} vs eager, 2 threads",
                       f"{ratio:.2f}x" if ratio else "n/a", "latency ratio")]
        elif name == "run":
            figures["run_fullres_over_eager"] = fig["speedup"]
            row = next(r for r in fig["rows"] if r["runner"] != "eager")
            figures["run_fullres_peak_rss_mb"] = row["peak_rss_mb"]
            table += [(f"run --checkpoint {row['mp']} MP, cached ONNX tiles vs eager, 2 thr", f"{fig['speedup']:.2f}x",
                       f"whole process; {row['median_s']:.1f} s, {row['peak_rss_mb']} MB, "
                       f"{row['parity']['psnr_db']:.1f} dB vs eager")]
        table.append((f"  ({JOBS[name][0]} took {seconds:.0f} s, CPU {cpu:.0f} s)", "", ""))
    wall = time.perf_counter() - t0
    print(f"\nheadline ratios (each against its baseline in the same run); wall {wall:.0f} s; "
          f"load average {load_before:.1f} -> {os.getloadavg()[0]:.1f}")
    for label, value, note in table:
        print(f"{label:52s} {value:>9s}  {note}")
    print(json.dumps({**figures, "failed": failed, "wall_seconds": round(wall, 1), "cpu_seconds": cpu_s,
                      "load_avg_1min": [round(load_before, 1), round(os.getloadavg()[0], 1)]}))
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
