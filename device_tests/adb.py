"""``bench --device adb:SERIAL``: push the artifact and the user's benchmark binary to an Android
phone, run it, parse its output (``device_tests.parsers``).

The seam is :func:`adb`, one ``subprocess.run(["adb", ...])``: tests put a fake ``adb`` script on
PATH that replays recorded transcripts. The tool is LiteRT's ``benchmark_model`` or ExecuTorch's
``executor_runner`` (from the binary's name, or ``--tool``); the artifact's target must be one that
tool runs (``Target.device_bench_tool``).

benchmark_model runs its own warm-up and timed runs (``--warmup_runs --num_runs --min_secs``).
executor_runner only prints a total per invocation, so it is invoked once with one execution
(the first-run time) and then in batches of ``BATCH`` executions until ``runs`` executions and
``min_seconds``; median/p90/min are over the batches' mean per execution.
"""
from __future__ import annotations

import shlex
import subprocess
import time
from pathlib import Path

from .bench import BenchError, _base_row, read_manifest
from .parsers import parse_benchmark_model, parse_executor_runner

REMOTE_DIR = "/data/local/tmp/defocus_bench"
TOOLS = ("benchmark_model", "executor_runner")
BATCH = 10
TIMEOUT_S = 600


class AdbError(BenchError):
    """adb missing, a device that is not attached, or a command that failed on the phone."""


def adb(args: list[str], serial: str | None = None, timeout: float = TIMEOUT_S) -> str:
    """Run ``adb [-s SERIAL] ARGS``; stdout + stderr, or AdbError with what adb said."""
    cmd = ["adb", *(["-s", serial] if serial else []), *args]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise AdbError("adb not found on PATH (install Android platform-tools)") from None
    except subprocess.TimeoutExpired:
        raise AdbError(f"`{' '.join(cmd)}` took more than {timeout:g} s") from None
    out = (p.stdout or "") + (p.stderr or "")
    if p.returncode != 0:
        raise AdbError(f"`{' '.join(cmd)}` failed (exit {p.returncode}): {out.strip().splitlines()[-1] if out.strip() else ''}")
    return out


def devices() -> dict[str, str]:
    """``adb devices``: serial -> state (device, unauthorized, offline...)."""
    out = {}
    for line in adb(["devices"]).splitlines():
        parts = line.split()
        if len(parts) >= 2 and not line.startswith(("List of devices", "*")):
            out[parts[0]] = parts[1]
    return out


def parse_device(text: str) -> str | None:
    """``host`` -> None, ``adb:SERIAL`` -> SERIAL; anything else: AdbError naming the valid forms."""
    t = str(text).strip()
    if t == "host":
        return None
    if t.startswith("adb:") and len(t) > 4:
        return t[4:]
    raise AdbError(f"unknown device {text!r}: use 'host' or 'adb:SERIAL' (serials from `adb devices`)")


def check_serial(serial: str) -> str:
    """The attached device's product model, after checking it is attached and authorised."""
    known = devices()
    if serial not in known:
        raise AdbError(f"unknown device adb:{serial}; attached: "
                       + (", ".join(f"adb:{s} ({st})" for s, st in known.items()) or "none"))
    if known[serial] != "device":
        raise AdbError(f"adb:{serial} is {known[serial]} (authorise this computer on the phone)")
    return adb(["shell", "getprop", "ro.product.model"], serial).strip() or serial


def tool_of(binary: Path, tool: str | None) -> str:
    if tool:
        if tool not in TOOLS:
            raise AdbError(f"unknown --tool {tool!r}; valid: {', '.join(TOOLS)}")
        return tool
    for t in TOOLS:
        if t in binary.name:
            return t
    raise AdbError(f"{binary}: cannot tell which tool this is from its name; pass --tool "
                   f"{' or '.join(TOOLS)}")


def bench_adb(artifact: str | Path, device: str, binary: str | Path, threads: list[int], runs: int = 50,
              min_seconds: float = 1.0, warmup: int = 3, tool: str | None = None, log=None) -> list[dict]:
    """Latency rows of ``artifact`` on the phone ``adb:SERIAL`` at each thread count; the raw logs
    go into each row's ``extra``."""
    from export.targets import get as get_target

    serial = parse_device(device)
    if serial is None:
        raise AdbError("bench_adb needs an adb:SERIAL device")
    artifact, binary = Path(artifact), Path(binary) if binary else None
    if binary is None or not binary.is_file():
        raise AdbError(f"{binary}: no such benchmark binary (build or download LiteRT's benchmark_model or "
                       "ExecuTorch's executor_runner for Android and pass --binary)")
    m = read_manifest(artifact)
    t = get_target(m["target"])
    kind = tool_of(binary, tool)
    if t.device_bench_tool != kind:
        raise AdbError(f"{artifact}: a {t.name} artifact runs with "
                       f"{t.device_bench_tool or 'no Android benchmark tool here'}, not {kind}")
    model_file = artifact / m["model_file"]
    if not model_file.is_file():
        raise AdbError(f"{model_file}: the manifest's model file is missing")
    name = check_serial(serial)
    say = log or (lambda s: None)
    remote_model = f"{REMOTE_DIR}/{model_file.name}"
    remote_bin = f"{REMOTE_DIR}/{binary.name}"
    adb(["shell", "mkdir", "-p", REMOTE_DIR], serial)
    say(f"adb:{serial}: pushing {model_file.name} and {binary.name}")
    adb(["push", str(model_file), remote_model], serial)
    adb(["push", str(binary), remote_bin], serial)
    adb(["shell", "chmod", "755", remote_bin], serial)
    rows = []
    for n in threads:
        say(f"adb:{serial}: {kind} at {n} thread(s)")
        if kind == "benchmark_model":
            cmd = [remote_bin, f"--graph={remote_model}", f"--num_threads={n}", f"--warmup_runs={warmup}",
                   f"--num_runs={runs}", f"--min_secs={min_seconds:g}", "--use_xnnpack=true",
                   "--report_peak_memory_footprint=true"]
            text = adb(["shell", " ".join(shlex.quote(c) for c in cmd)], serial)
            p = parse_benchmark_model(text, f"adb:{serial} benchmark_model")
        else:
            base = [remote_bin, f"--model_path={remote_model}", f"--cpu_threads={n}"]
            text = adb(["shell", " ".join(shlex.quote(c) for c in base + ["--num_executions=1"])], serial)
            for _ in range(warmup):
                text += adb(["shell", " ".join(shlex.quote(c) for c in base + [f"--num_executions={BATCH}"])], serial)
            warm_len = len(text)
            done, start = 0, time.monotonic()
            while done < runs or time.monotonic() - start < min_seconds:
                text += adb(["shell", " ".join(shlex.quote(c) for c in base + [f"--num_executions={BATCH}"])], serial)
                done += BATCH
            p = parse_executor_runner(text[:_first_line_end(text)] + text[warm_len:], f"adb:{serial} executor_runner")
        row = _base_row(m, name, n, f"adb:{serial}")
        d = p.get("delegate")
        row.update(runtime=kind, median_ms=p["median_ms"], p90_ms=p.get("p90_ms"), min_ms=p.get("min_ms"),
                   first_ms=p.get("first_ms"), runs=p.get("runs"), peak_mem_mb=p.get("peak_mem_mb"),
                   delegate=None if not d else f"{d['name']}: {d.get('delegated_nodes')}/{d.get('total_nodes')} nodes"
                   + (f"; CPU: {', '.join(d['cpu_ops'])}" if d.get("cpu_ops") else ""),
                   extra={"serial": serial, "parsed": {k: v for k, v in p.items() if v is not None}, "log": text[-20000:]})
        rows.append(row)
    return rows


def _first_line_end(text: str) -> int:
    """End of the cold single-execution invocation's output (up to its 'executed' line)."""
    i = text.find("Model executed successfully")
    return len(text) if i < 0 else text.find("\n", i) + 1 or len(text)
