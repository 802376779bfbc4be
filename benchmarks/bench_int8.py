"""Does int8 pay? Per model: the fastest int8 artifact against the fastest fp32 artifact over the
runtimes, at --size on 2 threads (and 1), with the int8 task cost, all from one run.

    python benchmarks/bench_int8.py [--models rdpd,dc2,uid] [--targets onnx,executorch,tflite]
        [--size 512x512] [--threads 2,1] [--runs 3] [--out DIR] [--reuse]

Exports fp32 and int8 per model and target with ``export.pipeline.export_one`` (the shipped
recipes; parity and the task metric on the realistic synthetic split of ``export.parity``), or
with ``--reuse`` takes an artifact already in ``--out`` (its ``parity.json`` holds the task
metric). Then, per thread count, times every artifact of a model in turn (fp32 and int8
interleaved, median of ``--runs`` after one warm-up), so the ratios are same-run. Prints a table
per artifact, a summary per model (fastest fp32, fastest int8, ratio, task delta, goal 1.5x
within 0.3 dB) and, as the last line, one JSON object. The load average is recorded: on a shared
box read the ratios, not the milliseconds.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_export import median_ms  # noqa: E402

GOAL_SPEEDUP = 1.5  # issue 17, item 3: fastest int8 >= 1.5x fastest fp32
GOAL_TASK_DB = 0.3  # ... with the task cost within 0.3 dB


def artifact(model: str, target: str, precision: str, h: int, w: int, variant: str, out: Path, reuse: bool,
             log) -> dict:
    """Export (or reuse) one artifact; returns its folder, task delta and parity."""
    from export import pipeline
    from export.request import ConversionError, ExportRequest

    req = ExportRequest(model=model, target=target, precision=precision, height=h, width=w, variant=variant,
                        out=out, force=True, parity_count=1, task_count=2)
    folder = req.artifact_dir()
    if reuse and (folder / "parity.json").is_file():
        par = json.loads((folder / "parity.json").read_text())
        task = par.get("task") or {}
        real = [e["psnr"] for e in (par.get("sets", {}).get("realistic") or {}).values()]
        return {"dir": folder, "task_delta_db": task.get("delta_db"), "psnr": min(real) if real else None,
                "verdict": par.get("verdict"), "export_s": None}
    t0 = time.perf_counter()
    try:
        row = pipeline.export_one(req, log=log)
    except ConversionError as exc:
        return {"dir": None, "error": str(exc)}
    return {"dir": folder, "task_delta_db": row["task_delta_db"], "psnr": row["psnr_realistic"],
            "verdict": row["verdict"], "export_s": round(time.perf_counter() - t0, 1)}


def main() -> None:
    import torch

    from core.sizes import parse_size
    from export import targets
    from export.request import capability
    from models import registry

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="rdpd,dc2,uid")
    ap.add_argument("--targets", default="onnx,executorch,tflite")
    ap.add_argument("--size", default="512x512")
    ap.add_argument("--variant", default="mobile")
    ap.add_argument("--threads", default="2,1")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", default=None, help="artifacts folder (default: a temp folder)")
    ap.add_argument("--reuse", action="store_true", help="time artifacts already in --out instead of re-exporting")
    a = ap.parse_args()
    h, w = parse_size(a.size)
    threads = [int(t) for t in a.threads.split(",")]
    out = Path(a.out) if a.out else Path(tempfile.mkdtemp(prefix="bench_int8_"))
    torch.set_num_threads(1)
    log = lambda s: print(s, file=sys.stderr)  # noqa: E731
    load_before = os.getloadavg()[0]
    rows, summary = [], []
    for m in a.models.split(","):
        spec = registry.get(m)
        feed = {k: v.numpy() for k, v in spec.example_inputs(h, w, variant=a.variant, seed=3).items()}
        arts = []
        for t in (targets.get(x).name for x in a.targets.split(",")):
            for p in ("fp32", "int8"):
                if capability(t, p) is None and targets.get(t).not_runnable_reason is None:
                    arts.append({"model": m, "target": t, "precision": p,
                                 **artifact(m, t, p, h, w, a.variant, out, a.reuse, log)})
        for th in threads:
            runners = []
            for art in arts:
                if art.get("dir") is None:
                    continue
                man = json.loads((art["dir"] / "manifest.json").read_text())
                target = targets.get(art["target"])
                runners.append((art, target.open_runtime(art["dir"] / man["model_file"], spec.input_names,
                                                         [o["name"] for o in man["outputs"]], th)))
            for art, run in runners:  # interleaved: every artifact of the model at this thread count in turn
                art[f"ms_{th}t"] = round(median_ms(lambda: run(feed), a.runs, warmup=1), 1)
            del runners
        for th in threads:
            best = {}
            for p in ("fp32", "int8"):
                timed = [x for x in arts if x["precision"] == p and x.get(f"ms_{th}t")]
                best[p] = min(timed, key=lambda x: x[f"ms_{th}t"]) if timed else None
            if best["fp32"] and best["int8"]:
                ratio = best["fp32"][f"ms_{th}t"] / best["int8"][f"ms_{th}t"]
                delta = best["int8"]["task_delta_db"]
                summary.append({"model": m, "threads": th, "fp32_target": best["fp32"]["target"],
                                "fp32_ms": best["fp32"][f"ms_{th}t"], "int8_target": best["int8"]["target"],
                                "int8_ms": best["int8"][f"ms_{th}t"], "speedup": round(ratio, 2),
                                "int8_task_delta_db": delta,
                                "goal_met": bool(ratio >= GOAL_SPEEDUP and delta is not None
                                                 and delta >= -GOAL_TASK_DB)})
        rows += arts
    print(f"int8 benchmark, {a.variant} at {h}x{w}, median of {a.runs}, threads {threads}, "
          f"load {load_before:.1f} -> {os.getloadavg()[0]:.1f}")
    print(f"{'model':5} {'target':10} {'prec':5} " + " ".join(f"{f'ms {t}t':>9}" for t in threads)
          + f" {'int8/fp32 same target':>22} {'PSNR':>6} {'task dB':>8}")
    for r in rows:
        ms = " ".join(f"{r.get(f'ms_{t}t') or '-':>9}" for t in threads)
        same = ""
        if r["precision"] == "int8":
            f32 = next((x for x in rows if x["model"] == r["model"] and x["target"] == r["target"]
                        and x["precision"] == "fp32"), {})
            same = " ".join(f"{f32[f'ms_{t}t'] / r[f'ms_{t}t']:.2f}x" for t in threads
                            if f32.get(f"ms_{t}t") and r.get(f"ms_{t}t"))
        print(f"{r['model']:5} {r['target']:10} {r['precision']:5} {ms} {same:>22} {r.get('psnr') or '-':>6} "
              f"{r.get('task_delta_db') if r.get('task_delta_db') is not None else '-':>8} {r.get('error', '')}")
    print("\nper model: fastest fp32 vs fastest int8 (goal >= 1.5x, task cost within 0.3 dB)")
    for s in summary:
        print(f"{s['model']:5} {s['threads']}t  fp32 {s['fp32_target']} {s['fp32_ms']} ms  int8 {s['int8_target']} "
              f"{s['int8_ms']} ms  {s['speedup']}x  task {s['int8_task_delta_db']} dB  "
              f"{'met' if s['goal_met'] else 'MISSED'}")
    for r in rows:
        r["dir"] = str(r["dir"]) if r.get("dir") else None
    print(json.dumps({"size": [h, w], "variant": a.variant, "threads": threads, "runs": a.runs,
                      "load_avg_1min": [round(load_before, 1), round(os.getloadavg()[0], 1)],
                      "summary": summary, "rows": rows}))


if __name__ == "__main__":
    main()
