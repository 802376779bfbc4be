"""Plan and run exports: validate every request before converting anything, then per artifact load
the weights, convert with its target (``export.targets``), verify on the real runtime
(``export.parity``) and publish the artifact folder atomically (``export.artifact``); rows for the
verdict table come from ``export.report``.

    rows = run("uid", "onnx", "int8", "256x256")              # what `cli.py export` calls
    reqs, refused = plan(["all"], ["all"], "fp32", height=256, width=256)
    rows = export_many(reqs) + refused
    row = export_one(ExportRequest(model="uid", target="onnx", precision="fp32", height=256, width=256))
"""
from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from core.atomic import atomic_dir
from core.hashing import sha256_path
from core.sizes import parse_size

from . import artifact, parity, report
from . import calibration_data as cd
from . import targets as target_registry
from .request import (CALIBRATED, OUTPUT_SETS, ConversionError, ExportError, ExportRequest, capability,
                      check_combination, normalise_precision)
from .targets import Context

CHECKPOINT_DIR = Path("checkpoints")


class RunCache:
    """Input sets shared by the exports of one run (calibration, realistic parity and task samples
    depend only on model, variant, size, count and seed, not on the target)."""

    def __init__(self):
        self._values: dict = {}

    def get(self, key, make: Callable):
        if key not in self._values:
            self._values[key] = make()
        return self._values[key]


def validate(req: ExportRequest):
    """Every check that needs no conversion; returns the model spec. Raises ExportError."""
    from models import registry

    try:
        spec = registry.get(req.model)
    except KeyError as exc:
        raise ExportError(str(exc)) from None
    req.model = spec.name
    target = target_registry.get(req.target)
    req.target = target.name
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
    if target.check is not None:
        target.check(req)
    final = req.artifact_dir()
    if final.exists() and not req.force:
        raise ExportError(f"{final} exists; pass --force to replace it")
    return spec


def default_checkpoint(model: str, variant: str) -> Path | None:
    p = CHECKPOINT_DIR / f"{model}-{variant}.safetensors"
    return p if p.is_file() and p.with_suffix(".json").is_file() else None


def load_float_model(spec, req: ExportRequest, log: Callable[[str], None] = print) -> tuple[torch.nn.Module, dict | None]:
    """The float model to export: ``req.checkpoint``, else the starter checkpoint, else (with a
    warning through ``log``) a randomly initialised model."""
    from models.checkpoint import CheckpointError, load_model

    path = Path(req.checkpoint) if req.checkpoint else default_checkpoint(spec.name, req.variant)
    if path is None:
        log(f"warning: no checkpoint for {spec.name}-{req.variant} (looked for {CHECKPOINT_DIR}/{spec.name}-{req.variant}"
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
    from models.checkpoint import weights_path

    wpath = weights_path(path)
    return model.eval(), {"path": str(path), "sha256": sha256_path(wpath), "steps": meta.get("steps"),
                          "metrics": meta.get("metrics"), "training_data": meta.get("training_data")}


class SelectOutputs(nn.Module):
    """Return only the outputs at ``indices`` (``--outputs main``)."""

    def __init__(self, model: nn.Module, indices: list[int]):
        super().__init__()
        self.model = model
        self.indices = list(indices)

    def forward(self, *xs):
        outs = self.model(*xs)
        return tuple(outs[i] for i in self.indices)


def select_outputs(spec, outputs: str) -> tuple[list[int], list]:
    """Indices and specs of the outputs an export keeps (``--outputs all|main``)."""
    if outputs == "all":
        idx = list(range(len(spec.outputs)))
    else:  # main image, plus the recurrent state outputs (RDPD h_next/c_next always travel)
        keep = {spec.main_output, *spec.state_map.values()}
        idx = [i for i, t in enumerate(spec.outputs) if t.name in keep]
    return idx, [spec.outputs[i] for i in idx]


def export_one(req: ExportRequest, log: Callable[[str], None] | None = None, cache: RunCache | None = None) -> dict:
    """Export, verify and publish one artifact; returns its row of the report (``export.report``)."""
    log = log or (lambda s: None)
    cache = cache or RunCache()
    spec = validate(req)
    target = target_registry.get(req.target)
    t0 = time.perf_counter()
    model, ckpt = load_float_model(spec, req, log)
    idx, out_specs = select_outputs(spec, req.outputs)
    export_model = SelectOutputs(model, idx).eval()
    names, out_names = spec.input_names, [t.name for t in out_specs]
    h, w, v = req.height, req.width, req.variant
    example = spec.example_inputs(h, w, variant=v, seed=req.seed)
    args = tuple(example[n] for n in names)

    calibration, calib_record = [], None
    if req.precision in CALIBRATED:
        log(f"{spec.name}: {req.calibration_count} calibration samples ({req.calibration})")
        calibration, calib_record = cache.get(("calib", spec.name, v, h, w, req.calibration, req.calibration_count,
                                               req.seed),
                                              lambda: cd.calibration_set(spec, v, h, w, req.calibration,
                                                                         req.calibration_count, req.seed))
    final = req.artifact_dir()
    try:
        with atomic_dir(final, replace=req.force, what="artifact") as work:
            ctx = Context(spec=spec, variant=v, target=req.target, precision=req.precision, height=h, width=w,
                          model=export_model, args=args, input_names=names, output_names=out_names,
                          in_specs=list(spec.inputs), out_specs=out_specs, workdir=work, calibration=calibration,
                          checkpoint_sha256=ckpt["sha256"] if ckpt else None, options=dict(req.extra))
            log(f"{spec.name}: converting to {req.target} {req.precision} {req.size}")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                info = target.convert(ctx)
            convert_s = time.perf_counter() - t0
            model_file = work / target.model_file
            if not model_file.exists():
                raise ConversionError(f"{req.target} converter wrote no {model_file.name}")
            if req.verify:
                par, case = parity.verify(req, spec, ctx, target, model_file, cache, log)
                if target.after_verify is not None:
                    info.update(target.after_verify(ctx, model_file, case))
            else:
                par = parity.skipped(req)
            manifest = artifact.build_manifest(req, spec, ckpt, out_specs, model_file, info, calib_record, convert_s)
            artifact.write(work, manifest, par)
    except (ExportError, ConversionError):  # refusals: the temp folder is gone, the old artifact kept
        raise
    except Exception as exc:
        raise ConversionError(f"{spec.name} -> {req.target} {req.precision}: {type(exc).__name__}: "
                              f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''} (no artifact written)") from exc
    return report.exported_row(req, final, manifest, par, time.perf_counter() - t0)


def plan(models: list[str], targets: list[str], precision: str, **kw) -> tuple[list[ExportRequest], list[dict]]:
    """Requests to run and rows for refused combinations (only when ``all`` targets were asked)."""
    from models import registry

    all_targets = targets == ["all"]
    tlist = list(target_registry.names()) if all_targets else [target_registry.get(t).name for t in targets]
    mlist = registry.names() if models == ["all"] else models
    precision = normalise_precision(precision)
    reqs, refused = [], []
    for m in mlist:
        for t in tlist:
            reason = capability(t, precision)
            if reason is not None and all_targets:
                refused.append(report.refused_row(m, kw.get("variant", "mobile"), t, precision, reason))
                continue
            reqs.append(ExportRequest(model=m, target=t, precision=precision, **kw))
    if kw.get("checkpoint") and len({r.model for r in reqs}) > 1:
        raise ExportError("--checkpoint names one model's weights; export one --model at a time with it")
    for r in reqs:  # every refusal before the first conversion
        validate(r)
    return reqs, refused


def export_many(reqs: list[ExportRequest], progress: Callable[[int, int], None] | None = None,
                log: Callable[[str], None] | None = None) -> list[dict]:
    """Every request in turn (a conversion error becomes an ``error`` row; the others still run)."""
    rows = []
    cache = RunCache()
    for i, r in enumerate(reqs):
        try:
            rows.append(export_one(r, log=log, cache=cache))
        except ConversionError as exc:
            rows.append(report.error_row(r, exc))
        if progress:
            progress(i + 1, len(reqs))
    return rows


def run(model: str, target: str, precision: str, size: str, litert_recipe: Path | None = None,
        started: Callable[[int], None] | None = None, progress: Callable[[int, int], None] | None = None,
        log: Callable[[str], None] | None = None, **options) -> list[dict]:
    """``cli.py export``: parse the size, plan (every refusal before any conversion), then export.
    ``model``/``target`` are a name or ``all``; ``options`` are ExportRequest fields (variant,
    checkpoint, calibration, outputs, out, force, min_psnr...). ``started(n)`` is called once
    planning succeeded, before the first of ``n`` exports. Returns the rows of the verdict table
    (exported, errored, then refused)."""
    h, w = parse_size(size, minimum=0)  # the model spec names the real constraint (multiples of 16)
    extra = {}
    if litert_recipe is not None:
        from .targets import litert

        extra.update(litert.recipe_option(litert_recipe, target))
    reqs, refused = plan([model.lower()], [target.lower()], precision, height=h, width=w, extra=extra, **options)
    if started:
        started(len(reqs))
    return export_many(reqs, progress=progress, log=log) + refused
