"""LiteRT static int8: which ops to quantise. Compares ai-edge-quantizer's default (every op int8,
graph I/O and depthwise convs kept float) with the rule `export.targets.litert` ships (the
convolution family only), on one float .tflite and one calibration, so only the recipe differs.

    python benchmarks/bench_litert_int8.py [--model uid] [--size 256x256] [--samples 4] [--runs 8]

Per recipe: worst parity PSNR per output against PyTorch fp32 on realistic synthetic inputs, file
size, median interpreter latency (XNNPACK, --threads). The last line is one JSON object.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402


def every_op_recipe() -> list:
    """The recipe before 2026-11-22: ``static_wi8_ai8`` on every op, I/O and depthwise float."""
    from ai_edge_quantizer import recipe

    rec = list(recipe.static_wi8_ai8())
    rec += [{"regex": ".*", "operation": op, "algorithm_key": "no_quantize"}
            for op in ("INPUT", "OUTPUT", "DEPTHWISE_CONV_2D")]
    return rec


def main() -> None:
    import ai_edge_quantizer as aeq
    import litert_torch

    from core.sizes import parse_size
    from export import calibration_data as cd
    from export.parity import compare, merge_worst, torch_run
    from export.pipeline import SelectOutputs, default_checkpoint, select_outputs
    from export.targets import litert
    from models import registry
    from models.checkpoint import load_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="uid")
    ap.add_argument("--variant", default="mobile")
    ap.add_argument("--size", default="256x256")
    ap.add_argument("--calibration-count", type=int, default=8)
    ap.add_argument("--samples", type=int, default=4, help="realistic parity samples")
    ap.add_argument("--runs", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    h, w = parse_size(a.size)
    torch.set_num_threads(1)
    spec = registry.get(a.model)
    ckpt = default_checkpoint(spec.name, a.variant)
    model = load_model(ckpt, expected_model=spec.name)[0] if ckpt else spec.build(a.variant)
    idx, out_specs = select_outputs(spec, "all")
    model = SelectOutputs(model.eval(), idx).eval()
    names, onames = spec.input_names, [t.name for t in out_specs]
    example = spec.example_inputs(h, w, variant=a.variant, seed=0)
    work = Path(tempfile.mkdtemp(prefix="bench_litert_int8_"))
    float_path = work / "float.tflite"
    with contextlib.redirect_stdout(io.StringIO()):
        litert_torch.convert(model, tuple(example[n] for n in names)).export(str(float_path))
    calib_set, _ = cd.calibration_set(spec, a.variant, h, w, "synthetic", a.calibration_count, 0)
    real = cd.synthetic_inputs(spec, a.variant, h, w, a.samples, 1)
    ref = [torch_run(model, names, onames, s) for s in real]
    feeds = [{f"args_{i}": np.ascontiguousarray(s[n], np.float32) for i, n in enumerate(names)} for s in calib_set]
    with contextlib.redirect_stdout(io.StringIO()):
        calib = aeq.Quantizer(str(float_path), every_op_recipe()).calibrate({"serving_default": feeds}, num_threads=1)

    def measure(path: Path) -> dict:
        run = litert.open_runtime(path, names, onames, a.threads)
        parity = merge_worst([compare(r, run(s), out_specs) for r, s in zip(ref, real)])
        times = []
        for _ in range(a.runs):
            t = time.perf_counter()
            run(real[0])
            times.append((time.perf_counter() - t) * 1e3)
        return {"psnr": {k: v["psnr"] for k, v in parity.items()}, "bytes": path.stat().st_size,
                "median_ms": round(statistics.median(times), 1)}

    rows = {"fp32": measure(float_path)}
    for label, rec in (("int8 every op", every_op_recipe()), ("int8 convolutions only", litert._recipe("int8"))):
        path = work / f"{label.replace(' ', '_')}.tflite"
        with contextlib.redirect_stdout(io.StringIO()):
            aeq.Quantizer(str(float_path), rec).quantize(calib).export_model(str(path), overwrite=True)
        rows[label] = measure(path)

    print(f"LiteRT static int8 recipes, {spec.name}-{a.variant} {h}x{w}, {a.samples} realistic samples, "
          f"median of {a.runs} ({a.threads} threads); convolution family = {'/'.join(litert.QUANTISED_OPS)}")
    print(f"{'recipe':24s} {'MB':>6s} {'ms':>8s}  " + "  ".join(f"{n:>14s}" for n in onames))
    for label, r in rows.items():
        print(f"{label:24s} {r['bytes'] / 1e6:6.2f} {r['median_ms']:8.1f}  "
              + "  ".join(f"{r['psnr'][n]:14.1f}" for n in onames))
    every, convs = rows["int8 every op"], rows["int8 convolutions only"]
    print(json.dumps({"model": spec.name, "size": [h, w], "rows": rows,
                      "every_op_psnr_db": min(every["psnr"].values()),
                      "convolutions_only_psnr_db": min(convs["psnr"].values()),
                      "psnr_gain_db": round(min(convs["psnr"].values()) - min(every["psnr"].values()), 2),
                      "speedup": round(every["median_ms"] / convs["median_ms"], 2)}))


if __name__ == "__main__":
    main()
