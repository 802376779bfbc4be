"""Device-test latency on this host: every runnable artifact of the given models (``cli.py export``'s
layout under --root) at each thread count, with the PyTorch eager baseline measured in the same run,
through ``device_tests.bench`` (the same code as ``cli.py bench --device host``); rows go to --store.

    python benchmarks/bench_device_host.py [--models uid,rdpd,dc2] [--root artifacts] [--threads 1,2]
                                           [--runs 20] [--min-seconds 2] [--store results/device_results.sqlite]

Prints a table; the last line is one JSON object: per row the median/p90/min/first ms, peak MB and the
ratio to PyTorch eager of the same model, size and threads.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    from device_tests import bench, store
    from export.targets import get as get_target

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="uid,rdpd,dc2")
    ap.add_argument("--root", default="artifacts")
    ap.add_argument("--variant", default="mobile")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--min-seconds", type=float, default=2.0)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--store", default="results/device_results.sqlite")
    a = ap.parse_args()
    threads = bench.parse_threads(a.threads)
    rows = []
    for m in a.models.split(","):
        dirs = [d for d in bench.artifacts_of(m, Path(a.root), a.variant)
                if get_target(bench.read_manifest(d)["target"]).not_runnable_reason is None]
        sizes = sorted({tuple(bench.read_manifest(d)["size"]) for d in dirs})
        for n in threads:  # baseline first, then every artifact, per thread count
            for size in sizes:
                rows.append(store.add(a.store, bench.bench_torch(m, a.variant, size, n, a.runs, a.min_seconds,
                                                                 a.warmup)))
            for d in dirs:
                rows.append(store.add(a.store, bench.bench_host(d, n, a.runs, a.min_seconds, a.warmup)))
    base = {(r["model"], r["size"], r["threads"]): r["median_ms"] for r in rows if r["target"] == "pytorch"}
    cols = ("model", "target", "precision", "size", "threads", "median ms", "p90 ms", "min ms", "first ms",
            "peak MB", "x eager", "runs", "delegate")
    table = [cols]
    out = []
    for r in rows:
        ratio = base[(r["model"], r["size"], r["threads"])] / r["median_ms"]
        table.append((r["model"], r["target"], r["precision"], r["size"], str(r["threads"]), f"{r['median_ms']:.1f}",
                      f"{r['p90_ms']:.1f}", f"{r['min_ms']:.1f}", f"{r['first_ms']:.1f}",
                      "-" if r["peak_mem_mb"] is None else f"{r['peak_mem_mb']:.0f}", f"{ratio:.2f}", str(r["runs"]),
                      r["delegate"]))
        out.append({k: (round(r[k], 2) if isinstance(r[k], float) else r[k])
                    for k in ("model", "target", "precision", "size", "threads", "median_ms", "p90_ms", "min_ms",
                              "first_ms", "peak_mem_mb", "runs")} | {"x_eager": round(ratio, 2)})
    widths = [max(len(str(t[i])) for t in table) for i in range(len(cols))]
    for i, t in enumerate(table):
        print(" | ".join(str(c).ljust(wd) for c, wd in zip(t, widths)).rstrip())
        if i == 0:
            print("-+-".join("-" * wd for wd in widths))
    print(json.dumps({"threads": threads, "runs": a.runs, "min_seconds": a.min_seconds, "store": a.store,
                      "rows": out}))


if __name__ == "__main__":
    main()
