"""Export benchmark: per model, runtime and precision, median latency at --size on 2 threads next to
PyTorch eager (same run, same inputs), artifact size, parity PSNR and the int8 task metric.

    python benchmarks/bench_export.py [--models rdpd,dc2,uid] [--targets onnx,executorch,tflite]
                                      [--precisions fp32,int8] [--size 512x512] [--runs 10]

Prints a table; the last line is one JSON object with every figure. Core ML rows run only on macOS.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402


def median_ms(fn, runs: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def main() -> None:
    from core.sizes import parse_size
    from export import pipeline, targets
    from export.request import ConversionError, ExportRequest, capability
    from models import registry

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="rdpd,dc2,uid")
    ap.add_argument("--targets", default="onnx,executorch,tflite")
    ap.add_argument("--precisions", default="fp32,int8")
    ap.add_argument("--size", default="512x512")
    ap.add_argument("--variant", default="mobile")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, help="keep artifacts here (default: a temp folder)")
    a = ap.parse_args()
    h, w = parse_size(a.size)
    torch.set_num_threads(a.threads)
    out = Path(a.out) if a.out else Path(tempfile.mkdtemp(prefix="bench_export_"))
    rows = []
    for m in a.models.split(","):
        spec = registry.get(m)
        x = spec.example_inputs(h, w, variant=a.variant, seed=3)
        feed = {k: v.numpy() for k, v in x.items()}
        model, _ = pipeline.load_float_model(spec, ExportRequest(model=m, target="onnx", precision="fp32",
                                                                 height=h, width=w, variant=a.variant))
        with torch.no_grad():
            eager = median_ms(lambda: model(*x.values()), a.runs)
        rows.append({"model": m, "runtime": "pytorch-eager", "precision": "fp32", "ms": round(eager, 2),
                     "bytes": sum(p.numel() * 4 for p in model.parameters()), "psnr": None})
        for t in a.targets.split(","):
            target = targets.get(t)
            t = target.name
            for p in a.precisions.split(","):
                if capability(t, p) is not None:
                    continue
                req = ExportRequest(model=m, target=t, precision=p, height=h, width=w, variant=a.variant, out=out,
                                    force=True, parity_count=1, task_count=4)
                t0 = time.perf_counter()
                try:
                    r = pipeline.export_one(req, log=lambda s: print(s, file=sys.stderr))
                except ConversionError as exc:  # recorded as a row, the benchmark goes on
                    rows.append({"model": m, "runtime": t, "precision": p, "ms": None, "bytes": 0, "psnr": None,
                                 "verdict": "error", "error": str(exc), "eager_ms": round(eager, 2)})
                    continue
                ms = None
                if target.not_runnable_reason is None:
                    d = req.artifact_dir()
                    man = json.loads((d / "manifest.json").read_text())
                    run = target.open_runtime(d / man["model_file"], spec.input_names,
                                              [o["name"] for o in man["outputs"]], a.threads)
                    ms = round(median_ms(lambda: run(feed), a.runs), 2)
                rows.append({"model": m, "runtime": t, "precision": p, "ms": ms, "bytes": r["bytes"],
                             "psnr": r["psnr_realistic"], "psnr_random": r["psnr_random"],
                             "task_delta_db": r["task_delta_db"], "task_float_db": r["task_float_db"],
                             "task_quant_db": r["task_quant_db"], "verdict": r["verdict"],
                             "export_s": round(time.perf_counter() - t0, 1), "eager_ms": round(eager, 2)})
    hdr = f"{'model':6} {'runtime':18} {'prec':6} {'ms':>9} {'x eager':>8} {'MB':>7} {'PSNR':>7} {'task dB':>8} verdict"
    print(f"export benchmark, {a.variant} at {h}x{w}, {a.threads} threads, median of {a.runs}")
    print(hdr)
    for r in rows:
        ratio = f"{r['eager_ms'] / r['ms']:.2f}" if r.get("ms") and r.get("eager_ms") else "-"
        print(f"{r['model']:6} {r['runtime']:18} {r['precision']:6} {r['ms'] if r['ms'] is not None else '-':>9} "
              f"{ratio:>8} {r['bytes'] / 1e6:7.2f} {r['psnr'] if r['psnr'] is not None else '-':>7} "
              f"{r.get('task_delta_db') if r.get('task_delta_db') is not None else '-':>8} {r.get('verdict', '')}")
    print(json.dumps({"size": [h, w], "threads": a.threads, "runs": a.runs, "variant": a.variant, "rows": rows}))


if __name__ == "__main__":
    main()
