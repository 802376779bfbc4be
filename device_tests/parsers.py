"""Parsers for the benchmark tools users already run on phones, into one result shape.

- LiteRT ``benchmark_model`` logs: ``count=... first=... min=... avg=... std=...`` (newer builds add
  ``p5= median= p95=``; numbers may be in scientific notation), ``Inference timings in us: Init:
  ..., First inference: ..., Warmup (avg): ..., Inference (avg): ...``, memory as ``Peak memory
  footprint (MB): init= overall=`` (older: ``Memory footprint delta from the start of the tool
  (MB): init= overall=``; also ``Overall peak memory footprint (MB) via periodic monitoring: X``),
  delegate coverage ``Replacing N out of M node(s) with delegate (NAME)`` and the ops a GPU
  delegate leaves to the CPU.
- ExecuTorch ``executor_runner`` logs: ``Model executed successfully N time(s) in X ms.`` (older
  builds print no time), ``Resetting threadpool with num threads = N``, ``Model verified
  successfully.`` (the BundledProgram runner).
- coremltools ``MLModelBenchmarker`` results saved as JSON (``load``/``predict`` measurements:
  ``statistics`` min/max/average/std_dev/median in ms and the raw ``samples``).

Every parser returns a dict with the fields of a latency row (milliseconds, MB) it could find and
``None`` for the others; a log with no timing at all raises :class:`ParseError`.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from core.errors import UserError

NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_COUNT = re.compile(rf"\bcount=(\d+)((?:\s+\w+={NUM})+)")
_KV = re.compile(rf"(\w+)=({NUM})")
_TIMINGS = re.compile(rf"Inference timings in us:\s*Init:\s*({NUM}),\s*First inference:\s*({NUM}),\s*"
                      rf"Warmup \(avg\):\s*({NUM}),\s*Inference \(avg\):\s*({NUM})")
_PEAK = re.compile(rf"Peak memory footprint \(MB\):\s*init=({NUM})\s+overall=({NUM})")
_DELTA = re.compile(rf"Memory footprint delta from the start of the tool \(MB\):\s*init=({NUM})\s+overall=({NUM})")
_PERIODIC = re.compile(rf"Overall peak memory footprint \(MB\) via periodic monitoring:\s*({NUM})")
_REPLACING = re.compile(r"Replacing (\d+) out of (\d+) node\(s\) with delegate \(([^)]+)\)(?: node)?"
                        r"(?:, yielding (\d+) partitions)?")
_GPU_SPLIT = re.compile(r"(\d+) operations will run on the GPU, and the remaining (\d+) operations? will run on the CPU")
_UNSUPPORTED_HDR = re.compile(r"Following operations are not supported by (\w+) delegate")
_UNSUPPORTED_OP = re.compile(r"^\s*(?:[A-Z]\s+)?([A-Z][A-Z0-9_]+):\s+(.+)$")
_THREADS = re.compile(r"(?:Num threads|#threads used for CPU inference):\s*\[(\d+)\]")
_GRAPH = re.compile(r"Graph:\s*\[([^\]]+)\]")
_ET_RAN = re.compile(rf"Model executed successfully (\d+) time\(s\)(?: in ({NUM}) ms)?")
_ET_THREADS = re.compile(r"Resetting threadpool with num threads = (\d+)")
_ET_TS = re.compile(r"^[IWEDF] (\d+):(\d+):(\d+\.\d+) ")


class ParseError(UserError):
    """A benchmark log or result file with nothing this toolchain can read."""


def _empty(tool: str) -> dict:
    return {"tool": tool, "runs": None, "median_ms": None, "p90_ms": None, "min_ms": None, "max_ms": None,
            "avg_ms": None, "std_ms": None, "first_ms": None, "init_ms": None, "peak_mem_mb": None,
            "memory_kind": None, "threads": None, "delegate": None, "notes": []}


def _us(v: str | None) -> float | None:
    return None if v is None else float(v) / 1000.0


def parse_benchmark_model(text: str, source: str = "log") -> dict:
    """A LiteRT ``benchmark_model`` log -> latency fields (ms) + memory (MB) + delegate coverage."""
    r = _empty("benchmark_model")
    counts = [(int(m.group(1)), dict(_KV.findall(m.group(2)))) for m in _COUNT.finditer(text)]
    if counts:
        n, kv = counts[-1]  # the last count= line is the timed runs (the first one is the warm-up)
        r.update(runs=n, min_ms=_us(kv.get("min")), max_ms=_us(kv.get("max")), avg_ms=_us(kv.get("avg")),
                 std_ms=_us(kv.get("std")))
        r["first_ms"] = _us(counts[0][1].get("first") or kv.get("first"))
        if "median" in kv:
            r["median_ms"] = _us(kv["median"])
        else:
            r["median_ms"] = r["avg_ms"]
            r["notes"].append("median = avg (this benchmark_model build prints no percentiles)")
        if "p95" in kv:
            r["p95_ms"] = _us(kv["p95"])
        if "p5" in kv:
            r["p5_ms"] = _us(kv["p5"])
    t = _TIMINGS.search(text)
    if t:
        r["init_ms"] = _us(t.group(1))
        r["first_ms"] = _us(t.group(2))
        r["warmup_avg_ms"] = _us(t.group(3))
        if r["avg_ms"] is None:
            r["avg_ms"] = r["median_ms"] = _us(t.group(4))
            r["notes"].append("median = Inference (avg): no count= line")
    for rx, kind in ((_PEAK, "peak"), (_DELTA, "delta from tool start")):
        m = rx.search(text)
        if m:
            r.update(peak_mem_mb=float(m.group(2)), init_mem_mb=float(m.group(1)), memory_kind=kind)
            break
    m = _PERIODIC.search(text)
    if m:
        r["periodic_peak_mem_mb"] = float(m.group(1))
        if r["peak_mem_mb"] is None:
            r.update(peak_mem_mb=float(m.group(1)), memory_kind="periodic monitoring")
    m = _THREADS.search(text)
    if m:
        r["threads"] = int(m.group(1))
    m = _GRAPH.search(text)
    if m:
        r["graph"] = m.group(1)
    reps = _REPLACING.findall(text)
    if reps:
        rep, tot, name, parts = reps[-1]
        r["delegate"] = {"name": name, "delegated_nodes": int(rep), "total_nodes": int(tot),
                         "partitions": int(parts) if parts else None, "coverage": int(rep) / int(tot) if int(tot) else None,
                         "cpu_ops": []}
    g = _GPU_SPLIT.search(text)
    if g:
        on, off = int(g.group(1)), int(g.group(2))
        d = r["delegate"] or {"name": "GPU", "partitions": None, "cpu_ops": []}
        d.update(delegated_nodes=on, total_nodes=on + off, coverage=on / (on + off) if on + off else None)
        r["delegate"] = d
    hdr = _UNSUPPORTED_HDR.search(text)
    if hdr:
        ops = []
        for line in text[hdr.end():].splitlines()[1:]:
            mo = _UNSUPPORTED_OP.match(line)
            if not mo:
                break
            ops.append(f"{mo.group(1)}: {mo.group(2).strip()}")
        d = r["delegate"] or {"name": hdr.group(1), "partitions": None, "delegated_nodes": None, "total_nodes": None,
                              "coverage": None}
        d["cpu_ops"] = ops
        r["delegate"] = d
    if r["median_ms"] is None:
        raise ParseError(f"{source}: no benchmark_model timings (no 'count=' or 'Inference timings in us:' line)")
    return r


def parse_executor_runner(text: str, source: str = "log") -> dict:
    """An ExecuTorch ``executor_runner`` log -> mean time per execution and load time (ms)."""
    r = _empty("executor_runner")
    runs = _ET_RAN.findall(text)
    timed = [(int(n), float(ms)) for n, ms in runs if ms]
    if not timed:
        if runs:
            raise ParseError(f"{source}: executor_runner says 'Model executed successfully {runs[-1][0]} time(s)' "
                             "without a time (an old build): rebuild a newer executor_runner")
        raise ParseError(f"{source}: no 'Model executed successfully N time(s) in X ms.' line")
    if len(timed) == 1:
        n, total = timed[0]
        r.update(runs=n, avg_ms=total / n, median_ms=total / n)
        r["notes"].append("executor_runner prints only the total: median = mean per execution")
    else:  # several invocations in one log (``bench --device adb:``): a cold single run, then batches
        import numpy as np

        first = timed[0][1] if timed[0][0] == 1 else None
        batches = timed[1:] if first is not None else timed
        per = [t / k for k, t in batches]
        r.update(runs=sum(k for k, _ in batches), avg_ms=sum(t for _, t in batches) / sum(k for k, _ in batches),
                 median_ms=float(np.median(per)), p90_ms=float(np.percentile(per, 90)), min_ms=min(per),
                 max_ms=max(per), first_ms=first, batches_ms=per)
        r["notes"].append(f"median/p90/min over {len(per)} invocations' mean per execution")
    m = _ET_THREADS.search(text)
    if m:
        r["threads"] = int(m.group(1))
    stamps = {}
    for line in text.splitlines():
        ts = _ET_TS.match(line)
        if not ts:
            continue
        sec = int(ts.group(1)) * 3600 + int(ts.group(2)) * 60 + float(ts.group(3))
        if "is loaded" in line and "load_start" not in stamps:
            stamps["load_start"] = sec
        if "Method loaded" in line and "loaded" not in stamps:
            stamps["loaded"] = sec
    if {"load_start", "loaded"} <= set(stamps):
        r["init_ms"] = (stamps["loaded"] - stamps["load_start"]) * 1000.0
    r["verified"] = True if "Model verified successfully" in text else None
    return r


def parse_coreml_benchmarker(data: dict | str, source: str = "json") -> dict:
    """coremltools ``MLModelBenchmarker`` measurements saved as JSON (``dataclasses.asdict`` of
    ``{"load": Measurement, "predict": Measurement}``, or one predict Measurement)."""
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except json.JSONDecodeError as exc:
            raise ParseError(f"{source}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ParseError(f"{source}: expected a JSON object with 'predict' (and 'load') measurements")
    predict = data.get("predict", data if "statistics" in data or "samples" in data else None)
    if not isinstance(predict, dict):
        raise ParseError(f"{source}: no 'predict' measurement (MLModelBenchmarker.benchmark_predict's result)")
    r = _empty("coremltools MLModelBenchmarker")
    stats = _stats(predict, source, "predict")
    samples = [float(s) for s in predict.get("samples") or []]
    r.update(runs=len(samples) or None, median_ms=stats.get("median"), min_ms=stats.get("minimum"),
             max_ms=stats.get("maximum"), avg_ms=stats.get("average"), std_ms=stats.get("std_dev"))
    if samples:
        import numpy as np

        r["p90_ms"] = float(np.percentile(samples, 90))
        r["first_ms"] = samples[0]
        r["notes"].append("first = the first predict sample (the compile happens at load)")
    load = data.get("load")
    if isinstance(load, dict):
        ls = _stats(load, source, "load")
        r["init_ms"] = ls.get("median")
        lsamples = load.get("samples") or []
        if lsamples:
            r["first_load_ms"] = float(lsamples[0])
    for k in ("compute_units", "device", "model"):
        if k in data:
            r[k] = data[k]
    if r["median_ms"] is None:
        raise ParseError(f"{source}: the predict measurement has no median and no samples")
    return r


def _stats(meas: dict, source: str, what: str) -> dict:
    s = meas.get("statistics") or {}
    alias = {"min": "minimum", "max": "maximum", "avg": "average", "mean": "average", "std": "std_dev"}
    out = {alias.get(k, k): float(v) for k, v in s.items() if v is not None}
    samples = [float(x) for x in meas.get("samples") or []]
    if samples and "median" not in out:
        import numpy as np

        out.update(median=float(np.median(samples)), minimum=min(samples), maximum=max(samples),
                   average=float(np.mean(samples)), std_dev=float(np.std(samples)))
    if not out:
        raise ParseError(f"{source}: the {what} measurement has neither statistics nor samples")
    return out


def detect(text: str) -> str | None:
    """Which tool wrote ``text``: ``benchmark_model``, ``executor_runner``, ``coreml`` or None."""
    stripped = text.lstrip()
    if stripped.startswith("{"):
        return "coreml"
    if _COUNT.search(text) or "Inference timings in us" in text or "benchmark_model" in text:
        return "benchmark_model"
    if "Model executed successfully" in text or "executor_runner" in text:
        return "executor_runner"
    return None


PARSERS = {"benchmark_model": parse_benchmark_model, "executor_runner": parse_executor_runner,
           "coreml": parse_coreml_benchmarker}


def parse_file(path: str | Path, tool: str | None = None) -> dict:
    """Read a log or JSON file and parse it with ``tool``'s parser (detected when None)."""
    path = Path(path)
    if not path.is_file():
        raise ParseError(f"{path}: no such file")
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        raise ParseError(f"{path}: cannot read ({exc.strerror or exc})") from None
    kind = tool or detect(text)
    if kind not in PARSERS:
        raise ParseError(f"{path}: not a benchmark_model log, an executor_runner log or coremltools benchmarker "
                         f"JSON" + (f" (unknown --tool {tool!r}; valid: {', '.join(PARSERS)})" if tool else ""))
    return PARSERS[kind](text, str(path))
