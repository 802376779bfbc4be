"""LiteRT static int8: which ops to quantise. Compares ai-edge-quantizer's default (every op int8,
graph I/O and depthwise convs kept float) with the rule `export.targets.litert` ships (the
convolution family only), on one float .tflite and one calibration, so only the recipe differs.

    python benchmarks/bench_litert_int8.py [--model uid] [--size 256x256] [--samples 4] [--runs 8]
        [--study recipes|leaky|folding|filter]

Per recipe: worst parity PSNR per output against PyTorch fp32 on realistic synthetic inputs, file
size, median interpreter latency (XNNPACK, --threads). The last line is one JSON object.

``--study leaky`` (issue 17, item 3): ai-edge-quantizer has no int8 rule for LEAKY_RELU, so each
int8 convolution of UiD and DC2 is followed by DEQUANTIZE, float LEAKY_RELU, QUANTIZE. Compares,
on the same checkpoint and calibration, the model as trained with LeakyReLU rewritten at
conversion into ops the quantizer does take (``max(x, a x)``: MUL + MAXIMUM; ``(1 - a) relu(x) +
a x``: RELU + MUL + ADD; each quantised only inside the rewritten activations, equal in fp32) and,
as a speed bound only (other outputs), ReLU in its place (fused into the int8 convolutions, as in
RDPD). Per form: parity, the XNNPACK delegate split (``bench_litert_ops.delegation``) and the
latency, every file timed in turn in one loop (same-run ratios).

``--study folding``: the shipped rule with and without folding weight-only sub-graphs at
conversion (``export.targets.litert.CONSTANT_FOLDING``, ``export.fold``), fp32 and int8 of each.

``--study filter``: DC2's per-pixel 7x7 dynamic filter (``models.blocks.dynamic_filter_7x7``, 49
slices, multiplies and adds) against an im2col form (a constant one-hot 7x7 convolution giving the
49 shifted copies, one multiply, a ones 1x1 convolution summing the taps), fp32 on LiteRT, alone
at ``--size`` (3-channel image, 49-channel kernel map).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
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


class LeakyAsMaximum(torch.nn.Module):
    """``LeakyReLU(a)`` for 0 < a < 1 as ``max(x, a x)`` (MUL + MAXIMUM), equal in fp32."""

    def __init__(self, slope: float):
        super().__init__()
        self.slope = slope

    def forward(self, x):
        return torch.maximum(x, x * self.slope)


class LeakyAsRelu(LeakyAsMaximum):
    """``LeakyReLU(a)`` as ``(1 - a) relu(x) + a x`` (RELU + MUL + ADD), equal in fp32 up to rounding."""

    def forward(self, x):
        return torch.relu(x) * (1.0 - self.slope) + x * self.slope


class ReluBound(LeakyAsMaximum):
    """ReLU in LeakyReLU's place: not the trained model (a speed bound: fused into the int8 conv)."""

    def forward(self, x):
        return torch.relu(x)


# form -> (module replacing every nn.LeakyReLU or None, ops quantised inside it, fold weight-only
# sub-graphs); a form without a module also gets its fp32 file timed
LEAKY_FORMS = {"leaky_relu (shipped)": (None, (), True), "max(x, a x)": (LeakyAsMaximum, ("MUL", "MAXIMUM"), True),
               "(1-a) relu(x) + a x": (LeakyAsRelu, ("RELU", "MUL", "ADD"), True),
               "relu bound (not the model)": (ReluBound, (), True)}
FOLDING_FORMS = {"not folded (before)": (None, (), False), "folded (shipped)": (None, (), True)}


def swap_leaky(model: torch.nn.Module, make) -> torch.nn.Module:
    """A copy of ``model`` with every ``nn.LeakyReLU`` replaced by ``make(slope)`` (weights shared)."""
    import copy

    model = copy.deepcopy(model)
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if isinstance(child, torch.nn.LeakyReLU):
                setattr(parent, name, make(child.negative_slope))
    return model


def filter_study(h: int, w: int, runs: int, threads: int) -> None:
    """fp32 LiteRT latency of the dynamic filter as shipped (slices) and as an im2col convolution."""
    import litert_torch
    import torch.nn.functional as F

    from benchmarks.bench_litert_ops import delegation
    from export.targets import litert
    from models.blocks import dynamic_filter_7x7

    class Slices(torch.nn.Module):
        def forward(self, image, kernel):
            return dynamic_filter_7x7(image, kernel)

    class Im2col(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("taps", torch.eye(49).reshape(49, 1, 7, 7).repeat(3, 1, 1, 1))  # one-hot
            self.register_buffer("ones", torch.ones(3, 49, 1, 1))

        def forward(self, image, kernel):
            cols = F.conv2d(F.pad(image, (3, 3, 3, 3), mode="replicate"), self.taps, groups=3)  # [B, 147, H, W]
            return F.conv2d(cols * torch.cat([kernel] * 3, 1), self.ones, groups=3)

    torch.manual_seed(0)
    image, kernel = torch.rand(1, 3, h, w), torch.randn(1, 49, h, w) * 0.05
    ref = dynamic_filter_7x7(image, kernel).numpy()
    work = Path(tempfile.mkdtemp(prefix="bench_filter_"))
    rows, runners = {}, {}
    for label, mod in (("slices (shipped)", Slices()), ("im2col conv", Im2col())):
        path = work / f"{label.split()[0]}.tflite"
        with contextlib.redirect_stdout(io.StringIO()):
            litert_torch.convert(mod.eval(), (image, kernel)).export(str(path))
        runners[label] = litert.open_runtime(path, ["image", "kernel"], ["out"], threads)
        feed = {"image": image.numpy(), "kernel": kernel.numpy()}
        rows[label] = {"max_abs_diff": float(np.abs(runners[label](feed)["out"] - ref).max()), **delegation(path),
                       "ms": []}
    for _ in range(runs + 1):  # interleaved; the first round is a warm-up
        for label, run in runners.items():
            t = time.perf_counter()
            run(feed)
            rows[label]["ms"].append((time.perf_counter() - t) * 1e3)
    for r in rows.values():
        r["median_ms"] = round(statistics.median(r.pop("ms")[1:]), 1)
    print(f"dynamic filter 7x7, fp32 LiteRT, {h}x{w}, {threads} threads, median of {runs}")
    for label, r in rows.items():
        print(f"{label:18s} {r['median_ms']:8.1f} ms  max|diff| {r['max_abs_diff']:.1e}  XNNPACK {r['on_delegate']} ops, "
              f"fallback {r['fallback']}")
    s, c = rows["slices (shipped)"], rows["im2col conv"]
    print(json.dumps({"study": "filter", "size": [h, w], "threads": threads, "rows": rows,
                      "speedup": round(s["median_ms"] / c["median_ms"], 2)}))


def forms_study(forms, model, spec, names, onames, out_specs, example, calib_set, real, ref, a, h, w) -> None:
    """int8 LiteRT of the model in each form (LEAKY_FORMS, FOLDING_FORMS), same calibration samples."""
    import ai_edge_quantizer as aeq
    import litert_torch
    from ai_edge_quantizer import recipe

    from benchmarks.bench_litert_ops import census, delegation
    from export.fold import folded_module
    from export.parity import compare, merge_worst
    from export.targets import litert

    work = Path(tempfile.mkdtemp(prefix="bench_litert_leaky_"))
    feeds = [{f"args_{i}": np.ascontiguousarray(s[n], np.float32) for i, n in enumerate(names)} for s in calib_set]
    (static,) = recipe.static_wi8_ai8()
    paths = {}
    for label, (make, ops, fold) in forms.items():
        m = model if make is None else swap_leaky(model, make)
        stem = work / f"form{len(paths)}"
        with contextlib.redirect_stdout(io.StringIO()):
            args = tuple(example[n] for n in names)
            litert_torch.convert(folded_module(m, args) if fold else m, args).export(f"{stem}-fp32.tflite")
            rec = litert._recipe("int8") + [{**static, "regex": f".*{make.__name__}.*", "operation": op} for op in ops]
            q = aeq.Quantizer(f"{stem}-fp32.tflite", rec)
            q.quantize(q.calibrate({"serving_default": feeds}, num_threads=1)).export_model(f"{stem}-int8.tflite",
                                                                                            overwrite=True)
        if make is None:
            paths[f"fp32, {label}"] = Path(f"{stem}-fp32.tflite")
        paths[label] = Path(f"{stem}-int8.tflite")
    rows, runners = {}, {}
    for label, path in paths.items():
        run = litert.open_runtime(path, names, onames, a.threads)
        parity = merge_worst([compare(r, run(s), out_specs) for r, s in zip(ref, real)])
        c, d = census(path), delegation(path)
        rows[label] = {"psnr": round(min(v["psnr"] for v in parity.values()), 1), "bytes": path.stat().st_size,
                       "dequantize": c["dequantize"], "float_ops": c["float_ops"], "partitions": d["partitions"],
                       "fallback": d["fallback"], "ms": []}
        runners[label] = run
    for _ in range(a.runs + 1):  # interleaved; the first round is a warm-up
        for label, run in runners.items():
            t = time.perf_counter()
            run(real[0])
            rows[label]["ms"].append((time.perf_counter() - t) * 1e3)
    for r in rows.values():
        r["median_ms"] = round(statistics.median(r.pop("ms")[1:]), 1)
    shipped = rows[next(k for k in forms if "(shipped)" in k)]["median_ms"]
    print(f"LiteRT int8 forms ({a.study}), {spec.name}-{a.variant} {h}x{w}, {a.threads} threads, median of {a.runs}, "
          f"load {os.getloadavg()[0]:.1f}; x = the shipped int8 form's ms / this row's")
    print(f"{'form':34s} {'ms':>8s} {'x':>6s} {'PSNR':>6s} {'DEQ':>4s} {'parts':>5s}  fallback ops")
    for label, r in rows.items():
        print(f"{label:34s} {r['median_ms']:8.1f} {shipped / r['median_ms']:5.2f}x {r['psnr']:6.1f} {r['dequantize']:4d} "
              f"{r['partitions']:5d}  " + ", ".join(f"{k} {n}" for k, n in r["fallback"].items()))
    print(json.dumps({"study": a.study, "model": spec.name, "size": [h, w], "threads": a.threads, "rows": rows,
                      "speedup": {k: round(shipped / r["median_ms"], 2) for k, r in rows.items()}}))


def main() -> None:
    import ai_edge_quantizer as aeq
    import litert_torch

    from core.sizes import parse_size
    from export import calibration_data as cd
    from export.fold import folded_module
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
    ap.add_argument("--study", choices=("recipes", "leaky", "folding", "filter"), default="recipes")
    a = ap.parse_args()
    h, w = parse_size(a.size)
    torch.set_num_threads(1)
    if a.study == "filter":
        return filter_study(h, w, a.runs, a.threads)
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
        args = tuple(example[n] for n in names)
        litert_torch.convert(folded_module(model, args) if litert.CONSTANT_FOLDING else model, args).export(
            str(float_path))
    calib_set, _ = cd.calibration_set(spec, a.variant, h, w, "synthetic", a.calibration_count, 0)
    real = cd.synthetic_inputs(spec, a.variant, h, w, a.samples, 1)
    ref = [torch_run(model, names, onames, s) for s in real]
    if a.study in ("leaky", "folding"):
        forms = LEAKY_FORMS if a.study == "leaky" else FOLDING_FORMS
        return forms_study(forms, model, spec, names, onames, out_specs, example, calib_set, real, ref, a, h, w)
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
