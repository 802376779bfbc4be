"""export_one / export_many: validate, load, convert, verify on the real runtime, write the artifact
folder atomically, and summarise everything in one verdict table."""
from __future__ import annotations

import importlib
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from . import calibration_data as cd
from . import manifest as mf
from .common import (MODEL_FILES, OUTPUT_SETS, TARGETS, ConversionError, ExportError, ExportRequest,
                     check_combination, capability, normalise_precision, normalise_target, not_runnable_reason)
from .verify import RUNTIME_NAMES, compare, load_runner, merge_worst, psnr

TARGET_MODULES = {"onnx": "onnx_target", "executorch": "executorch_target", "executorch-coreml": "executorch_target",
                  "tflite": "litert_target", "coreml": "coreml_target"}
QUANTISED = ("int8", "int8-weights", "int8-dynamic", "palette4", "palette6", "palette8")
TOOLCHAIN_VERSION = "0.1.0"
CHECKPOINT_DIR = Path("checkpoints")


@dataclass
class Context:
    """What a target module needs to convert (built by :func:`export_one`)."""

    spec: object
    variant: str
    target: str
    precision: str
    height: int
    width: int
    model: torch.nn.Module
    args: tuple
    input_names: list[str]
    output_names: list[str]
    in_specs: list
    out_specs: list
    workdir: Path
    calibration: list[dict] = field(default_factory=list)
    checkpoint_sha256: str | None = None
    version: str = TOOLCHAIN_VERSION
    program: object = None
    options: dict = field(default_factory=dict)  # target-specific (ExportRequest.extra), e.g. litert_recipe

    @property
    def calibration_args(self) -> list[tuple]:
        return [tuple(torch.from_numpy(s[n]) for n in self.input_names) for s in self.calibration]


def _warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr)


def validate(req: ExportRequest):
    """Every check that needs no conversion; returns the model spec. Raises ExportError."""
    from models import registry

    try:
        spec = registry.get(req.model)
    except KeyError as exc:
        raise ExportError(str(exc)) from None
    req.model = spec.name
    req.target = normalise_target(req.target)
    req.precision = normalise_precision(req.precision)
    check_combination(req.target, req.precision)
    if req.outputs not in OUTPUT_SETS:
        raise ExportError(f"--outputs must be one of {', '.join(OUTPUT_SETS)}, got {req.outputs!r}")
    try:
        spec.check_variant(req.variant)
        spec.check_size(req.height, req.width)
    except ValueError as exc:
        raise ExportError(str(exc)) from None
    if req.checkpoint is not None and not Path(req.checkpoint).exists():
        raise ExportError(f"checkpoint {req.checkpoint} not found")
    if req.extra.get("litert_recipe") is not None and req.precision == "fp32":
        raise ExportError("--litert-recipe quantises: pass --precision int8, int8-weights, int8-dynamic or fp16")
    final = req.artifact_dir()
    if final.exists() and not req.force:
        raise ExportError(f"{final} exists; pass --force to replace it")
    return spec


def default_checkpoint(model: str, variant: str) -> Path | None:
    p = CHECKPOINT_DIR / f"{model}-{variant}.safetensors"
    return p if p.is_file() and p.with_suffix(".json").is_file() else None


def load_float_model(spec, req: ExportRequest) -> tuple[torch.nn.Module, dict | None]:
    from models.checkpoint import CheckpointError, load_model

    path = Path(req.checkpoint) if req.checkpoint else default_checkpoint(spec.name, req.variant)
    if path is None:
        _warn(f"no checkpoint for {spec.name}-{req.variant} (looked for {CHECKPOINT_DIR}/{spec.name}-{req.variant}"
              ".safetensors): exporting a randomly initialised model (seed 0)")
        torch.manual_seed(0)
        return spec.build(req.variant), None
    try:
        model, meta = load_model(path, expected_model=spec.name)
    except CheckpointError as exc:
        raise ExportError(str(exc)) from None
    if meta.get("variant") != req.variant:
        raise ExportError(f"{path}: checkpoint is of variant {meta.get('variant')!r}, not {req.variant!r} "
                          f"(pass --variant {meta.get('variant')})")
    from models.checkpoint import sha256_file, weights_path

    wpath = weights_path(path)
    return model.eval(), {"path": str(path), "sha256": sha256_file(wpath), "steps": meta.get("steps"),
                          "metrics": meta.get("metrics"), "training_data": meta.get("training_data")}


def _select(spec, outputs: str) -> tuple[list[int], list]:
    if outputs == "all":
        idx = list(range(len(spec.outputs)))
    else:  # main image, plus the recurrent state outputs (RDPD h_next/c_next always travel)
        keep = {spec.main_output, *spec.state_map.values()}
        idx = [i for i, t in enumerate(spec.outputs) if t.name in keep]
    return idx, [spec.outputs[i] for i in idx]


def _torch_run(model, names: list[str], out_names: list[str], inputs: dict) -> dict:
    with torch.no_grad():
        outs = model(*[torch.from_numpy(np.ascontiguousarray(inputs[n], np.float32)) for n in names])
    return {n: o.detach().numpy() for n, o in zip(out_names, outs)}


_CACHE: dict = {}


def _cached(key, fn):
    if key not in _CACHE:
        _CACHE[key] = fn()
    return _CACHE[key]


def gated_sets(precision: str) -> list[str]:
    """Sets whose PSNR decides the verdict. Static int8 is calibrated on realistic scenes: uniform noise
    lies outside its activation ranges, so the random set is reported but does not gate int8."""
    return ["realistic"] if precision == "int8" else ["random", "realistic"]


def _verdict(sets: dict, threshold: float, gated: list[str]) -> tuple[str, list[str]]:
    failures = []
    for set_name, outs in sets.items():
        if set_name not in gated:
            continue
        for name, e in outs.items():
            if not e["shape_ok"]:
                failures.append(f"{set_name}/{name}: {e.get('error', 'shape mismatch')}")
            elif e["psnr"] is None:
                failures.append(f"{set_name}/{name}: {e.get('error', 'no PSNR')}")
            elif e["psnr"] < threshold:
                failures.append(f"{set_name}/{name}: {e['psnr']:.1f} dB < {threshold:g} dB")
    return ("fail" if failures else "pass"), failures


def export_one(req: ExportRequest, log: Callable[[str], None] | None = None) -> dict:
    """Export, verify and publish one artifact; returns a row of the report (see ``report_rows``)."""
    log = log or (lambda s: None)
    spec = validate(req)
    t0 = time.perf_counter()
    model, ckpt = load_float_model(spec, req)
    idx, out_specs = _select(spec, req.outputs)
    from .quantize import SelectOutputs

    export_model = SelectOutputs(model, idx).eval()
    names, out_names = spec.input_names, [t.name for t in out_specs]
    h, w, v = req.height, req.width, req.variant
    example = spec.example_inputs(h, w, variant=v, seed=req.seed)
    args = tuple(example[n] for n in names)

    calibration, calib_record = [], None
    if req.precision == "int8" or (req.target == "coreml" and req.precision == "int8"):
        log(f"{spec.name}: {req.calibration_count} calibration samples ({req.calibration})")
        calibration, calib_record = _cached(("calib", spec.name, v, h, w, req.calibration, req.calibration_count,
                                             req.seed),
                                            lambda: cd.calibration_set(spec, v, h, w, req.calibration,
                                                                       req.calibration_count, req.seed))
    final = req.artifact_dir()
    work = mf.new_workdir(final)
    ctx = Context(spec=spec, variant=v, target=req.target, precision=req.precision, height=h, width=w,
                  model=export_model, args=args, input_names=names, output_names=out_names,
                  in_specs=list(spec.inputs), out_specs=out_specs, workdir=work, calibration=calibration,
                  checkpoint_sha256=ckpt["sha256"] if ckpt else None, options=dict(req.extra))
    try:
        log(f"{spec.name}: converting to {req.target} {req.precision} {req.size}")
        module = importlib.import_module(f"export.{TARGET_MODULES[req.target]}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            info = module.convert(ctx)
        convert_s = time.perf_counter() - t0
        model_file = work / MODEL_FILES[req.target]
        if not model_file.exists():
            raise ConversionError(f"{req.target} converter wrote no {model_file.name}")
        parity = verify_artifact(req, spec, ctx, model_file, log) if req.verify else {
            "schema": mf.PARITY_SCHEMA, "target": req.target, "precision": req.precision, "runtime": None,
            "ran": False, "reason": "verification skipped (--no-verify)", "threshold_db": req.threshold,
            "sets": {}, "task": None, "verdict": "not run", "failures": []}
        if req.target in ("executorch", "executorch-coreml"):
            ref_in = parity.pop("_bundle_inputs")
            ref_out, source = parity.pop("_bundle_expected")
            info["bundled_program"] = module.write_bundled(
                ctx, [torch.from_numpy(ref_in[n]) for n in names], [torch.from_numpy(ref_out[n]) for n in out_names],
                source)
        else:
            parity.pop("_bundle_inputs", None)
            parity.pop("_bundle_expected", None)
        manifest = build_manifest(req, spec, ckpt, out_specs, model_file, info, calib_record, convert_s)
        mf.write_json(work / "manifest.json", manifest)
        mf.write_json(work / "parity.json", parity)
        mf.publish(work, final, req.force)
    except ExportError:
        mf.discard(work)
        raise
    except Exception as exc:
        mf.discard(work)
        if isinstance(exc, ConversionError):
            raise
        raise ConversionError(f"{spec.name} -> {req.target} {req.precision}: {type(exc).__name__}: "
                              f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''} (no artifact written)") from exc
    return row(req, final, manifest, parity, time.perf_counter() - t0)


def verify_artifact(req: ExportRequest, spec, ctx: Context, model_file: Path, log) -> dict:
    h, w, v = req.height, req.width, req.variant
    names, out_names = ctx.input_names, ctx.output_names
    reason = not_runnable_reason(req.target)
    rnd = [cd.random_inputs(spec, v, h, w, req.seed)]
    real = _cached(("real", spec.name, v, h, w, req.parity_count, req.seed + 1),
                   lambda: cd.synthetic_inputs(spec.name, v, h, w, req.parity_count, req.seed + 1))
    ref = {k: [_torch_run(ctx.model, names, out_names, s) for s in sets] for k, sets in
           (("random", rnd), ("realistic", real))}
    parity = {"schema": mf.PARITY_SCHEMA, "target": req.target, "precision": req.precision,
              "runtime": RUNTIME_NAMES[req.target], "ran": False, "reason": reason,
              "threshold_db": req.threshold, "gated_sets": gated_sets(req.precision), "reference": "PyTorch eager fp32 (same weights, same outputs)",
              "inputs": {"random": {"count": 1, "seed": req.seed, "kind": "uniform in each input's value range"},
                         "realistic": {"count": len(real), "seed": req.seed + 1,
                                       "kind": "synth.samples.realistic_inputs (synthetic scenes)"}},
              "sets": {}, "task": None, "verdict": "not run", "failures": [],
              "_bundle_inputs": real[0], "_bundle_expected": (ref["realistic"][0], "PyTorch eager fp32")}
    if reason is not None:
        parity["verdict"] = "not run"
        return parity
    log(f"{spec.name}: verifying {req.target} {req.precision} on {RUNTIME_NAMES[req.target]}")
    run = load_runner(req.target, model_file, names, out_names)
    got = {"random": [run(s) for s in rnd], "realistic": [run(s) for s in real]}
    sets = {k: merge_worst([compare(r, g, ctx.out_specs) for r, g in zip(ref[k], got[k])]) for k in ref}
    verdict, failures = _verdict(sets, req.threshold, gated_sets(req.precision))
    parity.update(ran=True, sets=sets, verdict=verdict, failures=failures,
                  _bundle_expected=(got["realistic"][0], f"{RUNTIME_NAMES[req.target]} on {mf.host()['machine']}"))
    if req.precision in QUANTISED:
        parity["task"] = task_metric(req, spec, ctx, run)
    return parity


def task_metric(req: ExportRequest, spec, ctx: Context, run) -> dict:
    """PSNR of the main output against the ground truth on the synthetic test split, float vs quantised."""
    h, w, v = req.height, req.width, req.variant
    pairs = _cached(("task", spec.name, v, h, w, req.task_count, req.seed + 2),
                    lambda: cd.task_split(spec, v, h, w, req.task_count, req.seed + 2))
    main = spec.main_output
    f_ps, q_ps = [], []
    for inputs, target in pairs:
        f_ps.append(psnr(target, _torch_run(ctx.model, ctx.input_names, ctx.output_names, inputs)[main], 1.0))
        q_ps.append(psnr(target, run(inputs)[main], 1.0))
    f, q = float(np.mean(f_ps)), float(np.mean(q_ps))
    return {"output": main, "samples": len(pairs), "seed": req.seed + 2, "split": "synthetic test split "
            "(synth.samples.SAMPLERS)", "float_psnr_db": round(f, 3), "quantised_psnr_db": round(q, 3),
            "delta_db": round(q - f, 3)}


def build_manifest(req, spec, ckpt, out_specs, model_file: Path, info: dict, calib, convert_s: float) -> dict:
    h, w, v = req.height, req.width, req.variant
    ishapes, oshapes = spec.input_shapes(v, h, w), spec.output_shapes(v, h, w)
    files = sorted(p.name for p in model_file.parent.iterdir() if not p.name.startswith("."))
    files = sorted(set(files) | {"manifest.json", "parity.json"})
    io = lambda t, shapes: {"name": t.name, "shape": list(shapes[t.name]), "dtype": "float32", "layout": t.layout,
                            "value_range": t.to_dict(v)["value_range"], "recurrent": t.recurrent,
                            "normalisation": "none: float32 values in value_range, NCHW, batch 1",
                            "description": t.description}
    return {
        "schema": mf.MANIFEST_SCHEMA, "created": mf.now(), "model": spec.name, "variant": v, "target": req.target,
        "precision": req.precision, "size": [h, w], "model_file": model_file.name, "files": files,
        "artifact_bytes": mf.path_bytes(model_file), "artifact_sha256": mf.path_sha256(model_file),
        "checkpoint": ckpt, "spec": spec.to_dict(v),
        "inputs": [io(t, ishapes) for t in spec.inputs], "outputs": [io(t, oshapes) for t in out_specs],
        "outputs_selected": req.outputs, "state_map": dict(spec.state_map), "calibration": calib,
        "conversion": {**info, "seconds": round(convert_s, 2), "example_inputs_seed": req.seed},
        "tool_versions": mf.tool_versions(), "host": mf.host(),
    }


def row(req, final: Path, manifest: dict, parity: dict, seconds: float) -> dict:
    def worst(set_name):
        outs = parity.get("sets", {}).get(set_name) or {}
        ps = [e["psnr"] for e in outs.values()]
        return None if not ps or any(p is None for p in ps) else min(ps)
    task = parity.get("task") or {}
    return {"model": req.model, "variant": req.variant, "target": req.target, "precision": req.precision,
            "size": req.size, "status": "exported", "path": str(final), "bytes": manifest["artifact_bytes"],
            "psnr_random": worst("random"), "psnr_realistic": worst("realistic"),
            "task_delta_db": task.get("delta_db"), "task_float_db": task.get("float_psnr_db"),
            "task_quant_db": task.get("quantised_psnr_db"), "threshold": parity["threshold_db"],
            "verdict": parity["verdict"], "reason": parity.get("reason") or "; ".join(parity.get("failures", [])),
            "seconds": round(seconds, 1)}


def plan(models: list[str], targets: list[str], precision: str, **kw) -> tuple[list[ExportRequest], list[dict]]:
    """Requests to run and rows for refused combinations (only when ``all`` targets were asked)."""
    from models import registry

    all_targets = targets == ["all"]
    tlist = list(TARGETS) if all_targets else [normalise_target(t) for t in targets]
    mlist = registry.names() if models == ["all"] else models
    precision = normalise_precision(precision)
    reqs, refused = [], []
    for m in mlist:
        for t in tlist:
            reason = capability(t, precision)
            if reason is not None and all_targets:
                refused.append({"model": m, "variant": kw.get("variant", "mobile"), "target": t, "precision": precision,
                                "status": "refused", "verdict": "refused", "reason": reason})
                continue
            reqs.append(ExportRequest(model=m, target=t, precision=precision, **kw))
    if kw.get("checkpoint") and len({r.model for r in reqs}) > 1:
        raise ExportError("--checkpoint names one model's weights; export one --model at a time with it")
    for r in reqs:  # every refusal before the first conversion
        validate(r)
    return reqs, refused


def export_many(reqs: list[ExportRequest], progress: Callable[[int, int], None] | None = None,
                log: Callable[[str], None] | None = None) -> list[dict]:
    rows = []
    for i, r in enumerate(reqs):
        try:
            rows.append(export_one(r, log=log))
        except ConversionError as exc:
            rows.append({"model": r.model, "variant": r.variant, "target": r.target, "precision": r.precision,
                         "size": r.size, "status": "error", "verdict": "error", "reason": str(exc)})
        if progress:
            progress(i + 1, len(reqs))
    return rows


def failed(rows: list[dict]) -> bool:
    return any(r["verdict"] in ("fail", "error") for r in rows)


COLUMNS = ("model", "target", "precision", "size", "MB", "PSNR rnd", "PSNR real", "task ΔdB", "min dB", "verdict",
           "s", "note")


def report_rows(rows: list[dict]) -> list[list[str]]:
    def db(x):
        return "-" if x is None else f"{x:.1f}"
    out = []
    for r in rows:
        out.append([f"{r['model']}-{r.get('variant', '')}", r["target"], r["precision"], r.get("size", "-"),
                    f"{r['bytes'] / 1e6:.2f}" if r.get("bytes") else "-", db(r.get("psnr_random")),
                    db(r.get("psnr_realistic")), db(r.get("task_delta_db")), db(r.get("threshold")),
                    r["verdict"].upper(), str(r.get("seconds", "-")), r.get("reason") or ""])
    return out


def report_text(rows: list[dict]) -> str:
    table = [list(COLUMNS)] + report_rows(rows)
    widths = [max(len(str(row[i])) for row in table) for i in range(len(COLUMNS) - 1)]
    lines = []
    for row_ in table:
        lines.append(" | ".join(str(c).ljust(wd) for c, wd in zip(row_, widths)) + " | " + row_[-1])
    lines.insert(1, "-+-".join("-" * wd for wd in widths) + "-+-")
    return "\n".join(lines)
