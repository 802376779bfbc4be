"""Latency per device: ``bench`` on this host through each runtime, on Android through ``adb``,
and ``bench import`` of results produced elsewhere; every result becomes a row of the store.

Host: open the artifact on its runtime at ``threads`` (``runtime_py.runners.load``; a first, discarded
load imports the runtime's libraries so they do not count as the model's memory), time the
first run (it includes lazy initialisation), warm up, then run until at least ``runs`` runs *and*
``min_seconds`` seconds: median, p90, min, mean, the first-run time, the process's peak resident
memory over load + runs (Linux ``VmHWM``, reset before loading through ``/proc/self/clear_refs``)
and delegate coverage (ExecuTorch: delegated nodes from the manifest; LiteRT: XNNPACK delegate
kernels; onnxruntime: its CPU provider, no delegate).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from core.jsonfile import read_json
from core.errors import UserError

HOST = "host"
MAX_RUNS = 100_000


class BenchError(UserError):
    """A benchmark that cannot run as asked (no such artifact, a runtime absent here, bad options)."""


# --- memory -----------------------------------------------------------------------------------

def _status_kb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return float(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark of this process (Linux); False where it cannot."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


# --- statistics -------------------------------------------------------------------------------

def stats(times_ms: list[float]) -> dict:
    a = np.asarray(times_ms, np.float64)
    return {"runs": int(a.size), "median_ms": float(np.median(a)), "p90_ms": float(np.percentile(a, 90)),
            "min_ms": float(a.min()), "max_ms": float(a.max()), "avg_ms": float(a.mean()), "std_ms": float(a.std())}


def timed_runs(fn, runs: int, min_seconds: float, warmup: int) -> dict:
    """First call (timed alone), ``warmup`` more untimed calls, then until ``runs`` runs and ``min_seconds``."""
    t = time.perf_counter()
    fn()
    first = (time.perf_counter() - t) * 1000.0
    for _ in range(max(0, warmup)):
        fn()
    times: list[float] = []
    start = time.perf_counter()
    while (len(times) < runs or time.perf_counter() - start < min_seconds) and len(times) < MAX_RUNS:
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000.0)
    return {**stats(times), "first_ms": first, "seconds": time.perf_counter() - start, "warmup": warmup}


# --- artifacts --------------------------------------------------------------------------------

def read_manifest(artifact: Path) -> dict:
    return read_json(Path(artifact) / "manifest.json", BenchError,
                     "missing (not an artifact folder written by `cli.py export`)")


def artifacts_of(model: str, root: Path, variant: str = "mobile") -> list[Path]:
    """Every artifact folder of ``model``-``variant`` under ``root`` (``cli.py export``'s layout)."""
    from models import registry

    try:
        spec = registry.get(model)
    except KeyError as exc:
        raise BenchError(str(exc)) from None
    d = Path(root) / f"{spec.name}-{variant}"
    found = sorted(p.parent for p in d.glob("*/manifest.json"))
    if not found:
        raise BenchError(f"{d}: no artifacts of {spec.name}-{variant} (export some with `cli.py export`)")
    return found


def delegate_info(manifest: dict, backend) -> str:
    """Delegate coverage, as a short text for tables."""
    d = (manifest.get("conversion") or {}).get("delegation")
    if d and d.get("delegated_nodes") is not None:
        total = d["delegated_nodes"] + d.get("non_delegated_nodes", 0)
        ops = sorted((d.get("fallback_ops") or {}).items(), key=lambda kv: -kv[1])
        fb = ", ".join(f"{k} x{v}" for k, v in ops[:3]) + (f" +{len(ops) - 3} more" if len(ops) > 3 else "")
        return (f"XNNPACK: {d['delegated_nodes']}/{total} nodes, {d.get('delegated_subgraphs')} subgraph(s)"
                + (f"; portable: {fb}" if fb else ""))
    fn = getattr(backend, "delegation", None)
    if callable(fn):
        info = fn()
        ops = list((info.get("fallback_ops") or {}).items())
        fb = ", ".join(f"{k} x{v}" for k, v in ops[:3]) + (f" +{len(ops) - 3} more" if len(ops) > 3 else "")
        return f"{info['name']}: {info['partitions']} partition(s)" + (f"; fallback: {fb}" if fb else "")
    return "none (CPU kernels)"


def _base_row(manifest: dict, device: str, threads: int, source: str) -> dict:
    h, w = manifest.get("size") or [None, None]
    return {"kind": "latency", "device": device, "model": manifest.get("model"), "variant": manifest.get("variant"),
            "target": manifest.get("target"), "precision": manifest.get("precision"), "size": f"{h}x{w}",
            "threads": threads, "tool_versions": manifest.get("tool_versions") or {},
            "artifact_sha256": manifest.get("artifact_sha256"), "artifact_bytes": manifest.get("artifact_bytes"),
            "source": source}


def bench_host(artifact: str | Path, threads: int, runs: int = 20, min_seconds: float = 1.0, warmup: int = 3) -> dict:
    """One latency row of ``artifact`` on this host at ``threads`` threads."""
    from core.host import host_info
    from export import calibration_data as cd
    from export.targets import get as get_target
    from models import registry
    from runtime_py.runners import load

    artifact = Path(artifact)
    m = read_manifest(artifact)
    t = get_target(m["target"])
    if t.not_runnable_reason is not None:
        raise BenchError(f"{artifact}: {t.name} cannot run on this host: {t.not_runnable_reason}")
    spec = registry.get(m["model"])
    h, w = m["size"]
    inputs = cd.random_inputs(spec, m["variant"], h, w, seed=0)
    load(artifact, threads=threads)  # imports the runtime's libraries: not the model's memory
    import gc

    gc.collect()
    reset = reset_peak_rss()
    rss0 = _status_kb("VmRSS")
    t0 = time.perf_counter()
    runner = load(artifact, threads=threads)
    load_ms = (time.perf_counter() - t0) * 1000.0
    res = timed_runs(lambda: runner(inputs), runs, min_seconds, warmup)
    hwm = _status_kb("VmHWM") if reset else None
    row = _base_row(m, HOST, threads, str(artifact))
    row.update(runtime=t.runtime_name, median_ms=res["median_ms"], p90_ms=res["p90_ms"], min_ms=res["min_ms"],
               first_ms=res["first_ms"], runs=res["runs"], seconds=res["seconds"],
               peak_mem_mb=None if hwm is None or rss0 is None else max(0.0, hwm - rss0) / 1024.0,
               delegate=delegate_info(m, runner._backend),
               extra={"load_ms": load_ms, "avg_ms": res["avg_ms"], "max_ms": res["max_ms"], "std_ms": res["std_ms"],
                      "warmup": warmup, "rss_before_load_mb": None if rss0 is None else rss0 / 1024.0,
                      "peak_rss_mb": None if hwm is None else hwm / 1024.0,
                      "peak_mem": "peak RSS growth of the bench process over load + runs (VmHWM - RSS before "
                                  "load)" if reset else None,
                      "host": host_info(), "inputs": "uniform in each input's range (seed 0)"})
    return row


def bench_torch(model: str, variant: str, size: tuple[int, int], threads: int, runs: int, min_seconds: float,
                warmup: int = 3, checkpoint: Path | None = None) -> dict:
    """The PyTorch eager fp32 baseline (the checkpoint, same inputs) as a latency row."""
    import torch

    from export import calibration_data as cd
    from export.pipeline import default_checkpoint
    from models import registry
    from runtime_py.runners import TORCH_RUNTIME, TorchRunner

    spec = registry.get(model)
    ck = checkpoint or default_checkpoint(spec.name, variant)
    if ck is None:
        raise BenchError(f"no checkpoint for {spec.name}-{variant}: the PyTorch baseline needs one")
    runner = TorchRunner.from_checkpoint(ck, spec.name)
    h, w = size
    inputs = cd.random_inputs(spec, variant, h, w, seed=0)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        reset = reset_peak_rss()
        rss0 = _status_kb("VmRSS")
        res = timed_runs(lambda: runner(inputs), runs, min_seconds, warmup)
        hwm = _status_kb("VmHWM") if reset else None
    finally:
        torch.set_num_threads(old)
    from core.hashing import sha256_path
    from models.checkpoint import weights_path

    return {"kind": "latency", "device": HOST, "model": spec.name, "variant": variant, "target": "pytorch",
            "precision": "fp32", "size": f"{h}x{w}", "threads": threads,
            "tool_versions": {"torch": torch.__version__}, "artifact_sha256": sha256_path(weights_path(ck)),
            "artifact_bytes": weights_path(ck).stat().st_size, "source": str(ck), "runtime": TORCH_RUNTIME,
            "median_ms": res["median_ms"], "p90_ms": res["p90_ms"], "min_ms": res["min_ms"],
            "first_ms": res["first_ms"], "runs": res["runs"], "seconds": res["seconds"],
            "peak_mem_mb": None if hwm is None or rss0 is None else max(0.0, hwm - rss0) / 1024.0,
            "delegate": "PyTorch eager (baseline)",
            "extra": {"avg_ms": res["avg_ms"], "warmup": warmup, "baseline": True}}


def parse_threads(text: str) -> list[int]:
    try:
        out = [int(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        raise BenchError(f"--threads must be a comma-separated list of integers, e.g. 1,2; got {text!r}") from None
    if not out or any(t < 1 for t in out):
        raise BenchError(f"--threads must list thread counts >= 1, got {text!r}")
    return out


def check_counts(runs: int, min_seconds: float, warmup: int) -> None:
    if runs < 1 or min_seconds < 0 or warmup < 0:
        raise BenchError(f"--runs must be >= 1, --min-seconds and --warmup >= 0 (got {runs}, {min_seconds}, {warmup})")


# --- import ------------------------------------------------------------------------------------

def import_row(path: str | Path, device: str, tool: str | None = None, artifact: Path | None = None,
               model: str | None = None, target: str | None = None, precision: str | None = None,
               size: str | None = None, threads: int | None = None, variant: str = "mobile") -> dict:
    """A latency row from a ``benchmark_model`` / ``executor_runner`` log or coremltools benchmarker
    JSON. The artifact (``--artifact``) names model, target, precision, size and sha256; without it
    the options do."""
    from . import parsers

    if not device or not device.strip():
        raise BenchError("--device must name the device the results come from, e.g. 'Pixel 8'")
    p = parsers.parse_file(path, tool)
    if artifact is not None:
        m = read_manifest(Path(artifact))
    else:
        if not model:
            raise BenchError(f"{path}: say which artifact it measured: --artifact DIR, or --model/--target/"
                             "--precision/--size")
        m = {"model": model, "variant": variant, "target": target, "precision": precision,
             "size": [int(v) for v in size.lower().split("x")] if size else [None, None]}
    row = _base_row(m, device, threads or p.get("threads") or 0, str(path))
    d = p.get("delegate")
    delegate = None
    if d:
        cov = f"{d['delegated_nodes']}/{d['total_nodes']} nodes" if d.get("total_nodes") else ""
        delegate = f"{d['name']}: {cov}".strip(": ") + (f"; CPU: {', '.join(d['cpu_ops'])}" if d.get("cpu_ops") else "")
    row.update(runtime=p["tool"], median_ms=p["median_ms"], p90_ms=p.get("p90_ms"), min_ms=p.get("min_ms"),
               first_ms=p.get("first_ms"), runs=p.get("runs"), peak_mem_mb=p.get("peak_mem_mb"), delegate=delegate,
               extra={k: v for k, v in p.items() if k not in row and v is not None})
    return row
