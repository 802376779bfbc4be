"""The demo's exports, parity bundle and host latency: each mobile starter to every target at
each precision the target supports (refusals become rows with their reason), verified on the real
runtimes; one parity bundle checked on the host; every runnable artifact timed into the results
store. All through the library functions ``cli.py export``, ``parity`` and ``bench`` call.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from core.hashing import sha256_path
from export import report as export_report
from export import targets as target_registry
from export.pipeline import RunCache, default_checkpoint, export_one
from export.request import ConversionError, ExportRequest, capability
from models import registry


def _checkpoint_sha(model: str, variant: str) -> str | None:
    from models.checkpoint import weights_path

    ck = default_checkpoint(model, variant)
    return sha256_path(weights_path(ck)) if ck else None


def reusable(req: ExportRequest) -> dict | None:
    """The row of an artifact already in place for ``req`` (same checkpoint weights), else None."""
    d = req.artifact_dir()
    try:
        manifest = json.loads((d / "manifest.json").read_text())
        parity = json.loads((d / "parity.json").read_text())
    except (OSError, ValueError):
        return None
    ck = manifest.get("checkpoint") or {}
    if ck.get("sha256") != _checkpoint_sha(req.model, req.variant) or manifest.get("size") != [req.height, req.width]:
        return None
    if (manifest.get("calibration") or {}).get("count", req.calibration_count) != req.calibration_count:
        return None
    row = export_report.exported_row(req, d, manifest, parity, 0.0)
    row["reused"] = True
    return row


# Left out of the default demo to keep ``make demo`` within 20 minutes on 2 cores: DC2's graph is the
# largest (its conversions take 5-40x RDPD's), these four took 109 + 439 + 64 s (ONNX int8 not timed,
# it converts ONNX fp32 first: 144 s) of the 15.7 min of DC2's first seven exports on a quiet machine
# (docs/BENCHMARKS.md, "make demo"). Each stays a row of the page with the command that makes it;
# ``cli.py demo --all-exports`` keeps them.
SKIPPED = (("dc2", "executorch", "fp32"), ("dc2", "executorch", "int8"), ("dc2", "executorch-coreml", "fp32"),
           ("dc2", "onnx", "int8"))


def export_command(model: str, target: str, precision: str, size: tuple[int, int], calibration_count: int,
                   out: Path) -> str:
    return (f"python cli.py export --model {model} --target {target} --precision {precision} "
            f"--size {size[0]}x{size[1]} --calibration-count {calibration_count} --out {out}")


def plan(size: tuple[int, int], precisions, out: Path, calibration_count: int, models=None, targets=None,
         variant: str = "mobile", skip=()) -> tuple[list[ExportRequest], list[dict]]:
    """Requests for every model x target x precision, and rows for the others: refused (with the
    target's reason) or in ``skip`` (model, target, precision) (with the command that exports it)."""
    reqs, refused = [], []
    for m in models or registry.names():
        for t in targets or target_registry.names():
            for p in precisions:
                reason = capability(t, p)
                if reason is not None:
                    refused.append(export_report.refused_row(m, variant, t, p, reason))
                    continue
                if (m, t, p) in skip:
                    refused.append({**export_report.refused_row(m, variant, t, p, "skipped in the demo to keep it "
                                                                "under 20 min: run `" + export_command(
                                                                    m, t, p, size, calibration_count, out) + "`"),
                                    "status": "skipped", "verdict": "skipped"})
                    continue
                reqs.append(ExportRequest(model=m, target=t, precision=p, height=size[0], width=size[1],
                                          variant=variant, out=out, force=True, calibration_count=calibration_count,
                                          parity_count=1, task_count=2))
    return reqs, refused


def export_all(reqs: list[ExportRequest], progress: Callable[[int, int], None] | None = None,
               log: Callable[[str], None] | None = None) -> list[dict]:
    """Export (or reuse) every request; a conversion error is a row, the others still run."""
    rows, cache = [], RunCache()
    for i, r in enumerate(reqs):
        row = reusable(r)
        if row is None:
            try:
                row = export_one(r, log=log, cache=cache)
            except ConversionError as exc:
                row = export_report.error_row(r, exc)
        rows.append(row)
        if progress:
            progress(i + 1, len(reqs))
    return rows


def pick_bundle_artifact(rows: list[dict]) -> dict | None:
    """The artifact the parity bundle is made of: an int8 one that runs here, else any that runs."""
    runnable = [r for r in rows if r.get("status") == "exported" and r.get("verdict") == "pass"]
    int8 = [r for r in runnable if r["precision"] == "int8"]
    return (int8 or runnable or [None])[0]


def parity_bundle(artifact: Path, out: Path, store: Path, inputs: int = 2,
                  progress: Callable[[int, int], None] | None = None) -> list[dict]:
    """``parity bundle`` + ``parity host`` (rows added to the store, as the CLI does)."""
    from device_tests.bundle import make_bundle
    from device_tests.host import host_parity
    from device_tests.store import add_parity

    make_bundle(artifact, inputs, out / "bundle", force=True, progress=progress)
    rows = host_parity(out / "bundle", out / "bundle.host")
    for r in rows:
        if r.get("check") and not r["reference"]:
            add_parity(store, r["check"])
    return [{k: r.get(k) for k in ("runtime", "verdict", "psnr", "max_abs", "verdicts", "faults", "reason")}
            for r in rows]


def bench_all(rows: list[dict], store: Path, threads=(1,), runs: int = 5, min_seconds: float = 0.3,
              warmup: int = 1, progress: Callable[[int, int], None] | None = None) -> list[dict]:
    """Host latency of every runnable exported artifact and the PyTorch eager baseline per model
    and size, into ``store``; returns the stored rows."""
    from device_tests import bench
    from device_tests import store as st

    arts = [r for r in rows if r.get("status") == "exported"
            and target_registry.get(r["target"]).not_runnable_reason is None]
    base = sorted({(r["model"], r["variant"], r["size"]) for r in arts})
    total, done, out = (len(arts) + len(base)) * len(threads), 0, []
    for n in threads:
        for r in arts:
            out.append(st.add(store, bench.bench_host(r["path"], n, runs, min_seconds, warmup)))
            done += 1
            if progress:
                progress(done, total)
        for model, variant, size in base:
            h, w = (int(v) for v in size.split("x"))
            out.append(st.add(store, bench.bench_torch(model, variant, (h, w), n, runs, min_seconds, warmup)))
            done += 1
            if progress:
                progress(done, total)
    return out
