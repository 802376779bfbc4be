"""Latency per device: the log parsers on real output lines (every variant the issue lists), the adb
path against a fake `adb` on PATH replaying recorded transcripts, the results store's regression
flags, the host benchmark on a real artifact, `bench import` and the report."""
from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import cli
from device_tests import adb as adbm
from device_tests import bench, parsers, store
from export import pipeline
from export.request import ExportRequest

LOGS = Path(__file__).parent / "data" / "device_logs"
runner = CliRunner()


# --- parsers ---------------------------------------------------------------------------------

def test_benchmark_model_new_format_with_percentiles_and_peak_memory():
    r = parsers.parse_file(LOGS / "benchmark_model_new.txt")
    assert r["tool"] == "benchmark_model" and r["runs"] == 50 and r["threads"] == 4
    assert r["median_ms"] == pytest.approx(249.5) and r["min_ms"] == pytest.approx(247.067)
    assert r["avg_ms"] == pytest.approx(249.684) and r["p95_ms"] == pytest.approx(253.9)
    assert r["first_ms"] == pytest.approx(360.262) and r["init_ms"] == pytest.approx(16.242)
    assert r["peak_mem_mb"] == pytest.approx(138.809) and r["memory_kind"] == "peak"
    assert r["periodic_peak_mem_mb"] == pytest.approx(141.25)
    d = r["delegate"]
    assert (d["name"], d["delegated_nodes"], d["total_nodes"], d["partitions"]) == ("TfLiteXNNPackDelegate", 58, 58, 1)


def test_benchmark_model_old_format_scientific_notation_and_delta_memory():
    r = parsers.parse_file(LOGS / "benchmark_model_old.txt")
    assert r["median_ms"] == pytest.approx(249.684)  # no percentiles: the avg, said so
    assert any("median = avg" in n for n in r["notes"])
    assert r["first_ms"] == pytest.approx(360.262) and r["max_ms"] == pytest.approx(254.474)
    assert r["peak_mem_mb"] == pytest.approx(138.809) and r["memory_kind"] == "delta from tool start"
    assert r["delegate"]["delegated_nodes"] == 50 and r["delegate"]["coverage"] == pytest.approx(50 / 58)
    assert r["delegate"]["partitions"] == 3 and r["threads"] == 1


def test_benchmark_model_gpu_fallback_ops_and_periodic_only_memory():
    r = parsers.parse_file(LOGS / "benchmark_model_gpu.txt")
    assert r["median_ms"] == pytest.approx(27.0401) and r["init_ms"] == pytest.approx(1325.14)
    d = r["delegate"]
    assert (d["delegated_nodes"], d["total_nodes"]) == (52, 58)
    assert d["cpu_ops"] == ["GATHER_ND: Operation is not supported.", "MIRROR_PAD: Operation is not supported."]
    only_periodic = "count=5 first=2000 curr=1000 min=1000 max=2000 avg=1200 std=10\n" \
                    "Overall peak memory footprint (MB) via periodic monitoring: 1.5e+02\n"
    r = parsers.parse_benchmark_model(only_periodic)
    assert r["peak_mem_mb"] == 150.0 and r["memory_kind"] == "periodic monitoring"
    assert parsers.parse_benchmark_model("Inference timings in us: Init: 1, First inference: 2.5e+03, "
                                         "Warmup (avg): 2e3, Inference (avg): 1.25E+03")["median_ms"] == 1.25


def test_executor_runner_logs():
    r = parsers.parse_file(LOGS / "executor_runner.txt")
    assert r["tool"] == "executor_runner" and r["runs"] == 10 and r["threads"] == 2
    assert r["median_ms"] == pytest.approx(122.5512) and r["init_ms"] == pytest.approx(38.705)
    with pytest.raises(parsers.ParseError, match="without a time .*old build"):
        parsers.parse_file(LOGS / "executor_runner_old.txt")
    several = (LOGS / "executor_runner_1.txt").read_text() + "".join(
        f"Model executed successfully 10 time(s) in {t} ms.\n" for t in (1000, 1200, 1100))
    r = parsers.parse_executor_runner(several)
    assert r["first_ms"] == pytest.approx(199.094) and r["runs"] == 30
    assert r["median_ms"] == pytest.approx(110.0) and r["min_ms"] == pytest.approx(100.0)


def test_coreml_benchmarker_json_forms():
    r = parsers.parse_file(LOGS / "coreml_benchmarker.json")
    assert r["median_ms"] == 6.12 and r["min_ms"] == 5.91 and r["runs"] == 5 and r["first_ms"] == 7.42
    assert r["init_ms"] == 45.8 and r["first_load_ms"] == 2210.5  # the first load compiles the model
    bare = parsers.parse_coreml_benchmarker({"samples": [3.0, 1.0, 2.0], "statistics": None})
    assert bare["median_ms"] == 2.0 and bare["min_ms"] == 1.0
    with pytest.raises(parsers.ParseError, match="no 'predict' measurement"):
        parsers.parse_coreml_benchmarker({"load": {}})


def test_unreadable_logs_are_user_errors(tmp_path):
    p = tmp_path / "x.txt"
    p.write_text("hello\n")
    with pytest.raises(parsers.ParseError, match="x.txt: not a benchmark_model log"):
        parsers.parse_file(p)
    with pytest.raises(parsers.ParseError, match="no benchmark_model timings"):
        parsers.parse_file(p, "benchmark_model")
    with pytest.raises(parsers.ParseError, match="no such file"):
        parsers.parse_file(tmp_path / "missing.txt")


# --- statistics and the store ----------------------------------------------------------------

def test_stats_and_timed_runs_honour_runs_and_seconds():
    s = bench.stats([float(x) for x in range(1, 11)])
    assert (s["median_ms"], s["min_ms"], s["p90_ms"]) == (5.5, 1.0, pytest.approx(9.1))
    calls = []
    res = bench.timed_runs(lambda: calls.append(time.sleep(0.002)), runs=5, min_seconds=0.06, warmup=2)
    assert res["runs"] >= 5 and res["seconds"] >= 0.06 and len(calls) == res["runs"] + 3
    assert 1.5 < res["median_ms"] < 50
    res = bench.timed_runs(lambda: None, runs=7, min_seconds=0, warmup=0)
    assert res["runs"] == 7


def _row(**kw):
    base = dict(kind="latency", device="Pixel 8", model="uid", variant="mobile", target="tflite", precision="fp32",
                size="256x256", threads=2, tool_versions={"ai-edge-litert": "2.3"}, artifact_sha256="a" * 64,
                median_ms=100.0)
    base.update(kw)
    return base


def test_store_flags_regressions_against_the_previous_row_of_the_same_series(tmp_path):
    db = tmp_path / "r.sqlite"
    assert store.add(db, _row())["regressions"] == []
    assert store.add(db, _row(median_ms=105.0))["regressions"] == []  # within 10 %
    flags = store.add(db, _row(median_ms=120.0, artifact_sha256="b" * 64))["regressions"]
    assert len(flags) == 1 and "+14 %" in flags[0] and "artifact changed" in flags[0]
    assert store.add(db, _row(median_ms=200.0, threads=1))["regressions"] == []  # another series
    assert store.add(db, _row(median_ms=90.0, artifact_sha256="b" * 64))["regressions"] == []  # faster
    p = dict(kind="parity", threads=0, median_ms=None)
    store.add(db, _row(**p, psnr_db=62.0))
    flags = store.add(db, _row(**p, psnr_db=55.0))["regressions"]
    assert flags and "parity 55.00 dB vs 62.00 dB" in flags[0] and "same artifact and tools" in flags[0]
    rows = store.rows(db)
    assert len(rows) == 7 and rows[2]["tool_versions"] == {"ai-edge-litert": "2.3"} and rows[2]["regressions"]
    assert [r["kind"] for r in store.rows(db, "parity")] == ["parity", "parity"]


def test_store_refuses_a_file_that_is_not_one(tmp_path):
    bad = tmp_path / "bad.sqlite"
    bad.write_text("not sqlite at all, just text" * 100)
    with pytest.raises(store.StoreError, match="bad.sqlite: not a results store"):
        store.add(bad, _row())
    other = tmp_path / "other.sqlite"
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE results (x INTEGER)")
    con.commit()
    con.close()
    with pytest.raises(store.StoreError, match="lacks columns"):
        store.rows(other)
    with pytest.raises(store.StoreError, match="no results store"):
        store.rows(tmp_path / "none.sqlite")


# --- real artifacts ----------------------------------------------------------------------------

def _export(root, target):
    req = ExportRequest(model="uid", variant="tiny", target=target, precision="fp32", height=32, width=32, out=root,
                        parity_count=1, task_count=1)
    return Path(pipeline.export_one(req)["path"])


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory):
    """UiD tiny at 32x32: a real ONNX fp32 artifact, and a LiteRT-shaped folder for the adb and import
    paths (manifest + a stand-in model file: the phone side is faked, the host never opens it)."""
    root = tmp_path_factory.mktemp("bench") / "art"
    onnx = _export(root, "onnx")
    tfl = root / "uid-tiny" / "tflite-fp32-32x32"
    tfl.mkdir(parents=True)
    (tfl / "model.tflite").write_bytes(b"TFL3 stand-in")
    m = json.loads((onnx / "manifest.json").read_text())
    m.update(target="tflite", model_file="model.tflite", artifact_sha256="d" * 64, conversion={})
    (tfl / "manifest.json").write_text(json.dumps(m))
    return {"onnx": onnx, "tflite": tfl}


def test_bench_host_row(artifacts):
    r = bench.bench_host(artifacts["onnx"], threads=1, runs=5, min_seconds=0.05, warmup=1)
    assert r["device"] == "host" and r["target"] == "onnx" and r["threads"] == 1 and r["runs"] >= 5
    assert 0 < r["min_ms"] <= r["median_ms"] <= r["p90_ms"] and r["first_ms"] > 0
    assert r["artifact_sha256"] and r["size"] == "32x32" and r["delegate"].startswith("none")
    assert r["runtime"].startswith("onnxruntime") and (r["peak_mem_mb"] is None or r["peak_mem_mb"] >= 0)


@pytest.mark.slow
def test_bench_host_litert_and_executorch_report_delegates(tmp_path):
    r = bench.bench_host(_export(tmp_path, "tflite"), threads=2, runs=3, min_seconds=0, warmup=0)
    assert r["delegate"].startswith("XNNPACK:") and "partition" in r["delegate"]
    r = bench.bench_host(_export(tmp_path, "executorch"), threads=1, runs=3, min_seconds=0, warmup=0)
    assert r["delegate"].startswith("XNNPACK:") and " nodes" in r["delegate"]
    from executorch.extension.pybindings.portable_lib import _threadpool_get_thread_count

    assert _threadpool_get_thread_count() == 1  # the runtime honours the thread count


def test_cli_bench_host_import_and_report(artifacts, tmp_path):
    db = tmp_path / "r.sqlite"
    r = runner.invoke(cli.app, ["bench", "--artifact", str(artifacts["onnx"]), "--threads", "1,2", "--runs", "3",
                                "--min-seconds", "0", "--store", str(db)])
    assert r.exit_code == 0, r.output
    assert "median" in r.output and len(store.rows(db)) == 2
    r = runner.invoke(cli.app, ["bench", "import", str(LOGS / "benchmark_model_new.txt"), "--device", "Pixel 8",
                                "--artifact", str(artifacts["tflite"]), "--store", str(db)])
    assert r.exit_code == 0, r.output
    row = store.rows(db)[-1]
    assert (row["device"], row["target"], row["threads"], row["median_ms"]) == ("Pixel 8", "tflite", 4, 249.5)
    assert row["delegate"] == "TfLiteXNNPackDelegate: 58/58 nodes" and row["peak_mem_mb"] == pytest.approx(138.809)
    r = runner.invoke(cli.app, ["bench", "import", str(LOGS / "coreml_benchmarker.json"), "--device", "iPhone 15 Pro",
                                "--model", "uid", "--target", "coreml", "--precision", "fp16", "--size", "256x256",
                                "--store", str(db)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli.app, ["bench", "import", str(LOGS / "executor_runner.txt"), "--device", "Pixel 8",
                                "--store", str(db)])
    assert r.exit_code == 2 and "--artifact DIR, or --model" in r.output
    r = runner.invoke(cli.app, ["bench", "--artifact", str(artifacts["onnx"]), "--device", "phone7",
                                "--store", str(db)])
    assert r.exit_code == 2 and "unknown device 'phone7'" in r.output
    r = runner.invoke(cli.app, ["bench", "--artifact", str(artifacts["onnx"]), "--threads", "0",
                                "--store", str(db)])
    assert r.exit_code == 2 and "--threads" in r.output
    r = runner.invoke(cli.app, ["report", "--out", str(tmp_path / "rep"), "--store", str(db)])
    assert r.exit_code == 0, r.output
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "| Pixel 8 | uid | tflite | fp32 | 32x32 | 4 | 249.50 |" in md and "iPhone 15 Pro" in md
    html = (tmp_path / "rep" / "report.html").read_text()
    assert "<table>" in html and 'src="latency.png"' in html
    for png in ("latency.png", "size.png", "delegate.png"):  # the imported log's 58/58 nodes
        assert (tmp_path / "rep" / png).read_bytes()[:4] == b"\x89PNG"


# --- adb, through a fake adb on PATH -----------------------------------------------------------

FAKE_ADB = r"""#!/bin/sh
# A fake adb: records its arguments and replays recorded transcripts from $FAKE_ADB_DIR.
echo "$*" >> "$FAKE_ADB_DIR/calls.log"
if [ "$1" = "-s" ]; then shift 2; fi
case "$1" in
  devices) cat "$FAKE_ADB_DIR/devices.txt"; exit 0;;
  push) echo "$2: 1 file pushed, 0 skipped. 31.2 MB/s (4412 bytes in 0.001s)"; exit 0;;
esac
case "$*" in
  *getprop*) echo "Pixel 8";;
  *benchmark_model*) cat "$FAKE_ADB_DIR/benchmark_model.txt";;
  *num_executions=1) cat "$FAKE_ADB_DIR/executor_runner_1.txt";;
  *num_executions=*) cat "$FAKE_ADB_DIR/executor_runner.txt";;
esac
exit 0
"""


@pytest.fixture
def fake_adb(tmp_path, monkeypatch):
    d = tmp_path / "fakeadb"
    d.mkdir()
    (d / "adb").write_text(FAKE_ADB)
    os.chmod(d / "adb", 0o755)
    (d / "devices.txt").write_text("List of devices attached\n38041FDJH00B2K\tdevice\nemulator-5554\tunauthorized\n\n")
    for name, src in (("benchmark_model.txt", "benchmark_model_new.txt"), ("executor_runner.txt", "executor_runner.txt"),
                      ("executor_runner_1.txt", "executor_runner_1.txt")):
        (d / name).write_text((LOGS / src).read_text())
    monkeypatch.setenv("PATH", f"{d}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_ADB_DIR", str(d))
    return d


def _binary(tmp_path, name):
    b = tmp_path / name
    b.write_bytes(b"\x7fELF fake binary")
    return b


def test_adb_benchmark_model_pushes_runs_and_parses(fake_adb, artifacts, tmp_path):
    rows = adbm.bench_adb(artifacts["tflite"], "adb:38041FDJH00B2K", _binary(tmp_path, "benchmark_model"), [1, 2],
                          runs=30, min_seconds=2, warmup=4)
    assert [r["threads"] for r in rows] == [1, 2] and all(r["device"] == "Pixel 8" for r in rows)
    assert rows[0]["median_ms"] == pytest.approx(249.5) and rows[0]["peak_mem_mb"] == pytest.approx(138.809)
    assert rows[0]["delegate"] == "TfLiteXNNPackDelegate: 58/58 nodes"
    calls = (fake_adb / "calls.log").read_text()
    assert f"-s 38041FDJH00B2K push {artifacts['tflite'] / 'model.tflite'} /data/local/tmp/defocus_bench/model.tflite" \
        in calls
    assert "chmod 755 /data/local/tmp/defocus_bench/benchmark_model" in calls
    assert "--num_threads=2 --warmup_runs=4 --num_runs=30 --min_secs=2" in calls


def test_adb_executor_runner_first_run_and_batches(fake_adb, tmp_path):
    art = tmp_path / "art"
    art.mkdir()
    (art / "model.pte").write_bytes(b"pte")
    (art / "manifest.json").write_text(json.dumps({"model": "uid", "variant": "mobile", "target": "executorch",
                                                   "precision": "fp32", "size": [256, 256], "model_file": "model.pte",
                                                   "artifact_sha256": "c" * 64}))
    rows = adbm.bench_adb(art, "adb:38041FDJH00B2K", _binary(tmp_path, "executor_runner"), [2], runs=20,
                          min_seconds=0, warmup=1)
    r = rows[0]
    assert r["first_ms"] == pytest.approx(199.094) and r["runs"] == 20 and r["median_ms"] == pytest.approx(122.5512)
    calls = (fake_adb / "calls.log").read_text().splitlines()
    runs = [c for c in calls if "--model_path" in c]
    assert runs[0].endswith("--cpu_threads=2 --num_executions=1") and len(runs) == 1 + 1 + 2  # cold, warm-up, 2 batches


def test_adb_refuses_unknown_devices_and_mismatched_tools(fake_adb, artifacts, tmp_path):
    b = _binary(tmp_path, "benchmark_model")
    with pytest.raises(adbm.AdbError, match=r"unknown device adb:XYZ; attached: adb:38041FDJH00B2K \(device\)"):
        adbm.bench_adb(artifacts["tflite"], "adb:XYZ", b, [1])
    with pytest.raises(adbm.AdbError, match="unauthorized"):
        adbm.bench_adb(artifacts["tflite"], "adb:emulator-5554", b, [1])
    with pytest.raises(adbm.AdbError, match="runs with no Android benchmark tool here, not benchmark_model"):
        adbm.bench_adb(artifacts["onnx"], "adb:38041FDJH00B2K", b, [1])
    with pytest.raises(adbm.AdbError, match="cannot tell which tool"):
        adbm.bench_adb(artifacts["tflite"], "adb:38041FDJH00B2K", _binary(tmp_path, "runner"), [1])
    with pytest.raises(adbm.AdbError, match="no such benchmark binary"):
        adbm.bench_adb(artifacts["tflite"], "adb:38041FDJH00B2K", tmp_path / "missing", [1])
    assert "push" not in (fake_adb / "calls.log").read_text()  # nothing pushed for a refused run


def test_adb_missing_is_a_user_error(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(adbm.AdbError, match="adb not found on PATH"):
        adbm.devices()


def test_cli_bench_adb_stores_rows(fake_adb, artifacts, tmp_path):
    db = tmp_path / "r.sqlite"
    r = runner.invoke(cli.app, ["bench", "--artifact", str(artifacts["tflite"]), "--device", "adb:38041FDJH00B2K",
                                "--binary", str(_binary(tmp_path, "benchmark_model")), "--threads", "1",
                                "--store", str(db)])
    assert r.exit_code == 0, r.output
    row = store.rows(db)[0]
    assert row["device"] == "Pixel 8" and row["source"] == "adb:38041FDJH00B2K" and row["median_ms"] == 249.5
    assert np.isclose(row["first_ms"], 360.262)
    root = artifacts["tflite"].parent.parent  # --model: only the artifacts benchmark_model runs
    r = runner.invoke(cli.app, ["bench", "--model", "uid", "--variant", "tiny", "--root", str(root), "--device",
                                "adb:38041FDJH00B2K", "--binary", str(tmp_path / "benchmark_model"), "--threads", "2",
                                "--store", str(db)])
    assert r.exit_code == 0, r.output
    assert "skipped" in r.output and "onnx" in r.output
    assert [(x["target"], x["threads"]) for x in store.rows(db)] == [("tflite", 1), ("tflite", 2)]


def test_report_speed_up_and_regressions(tmp_path):
    from device_tests.report import write_report

    db = tmp_path / "r.sqlite"
    store.add(db, _row(target="pytorch", median_ms=200.0))
    store.add(db, _row(median_ms=100.0, delegate="TfLiteXNNPackDelegate: 29/58 nodes"))
    store.add(db, _row(median_ms=150.0, delegate="TfLiteXNNPackDelegate: 29/58 nodes"))  # +50 %: flagged
    paths = write_report(db, tmp_path / "rep")
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "| Pixel 8 | uid | tflite | fp32 | 256x256 | 2 | 150.00 |" in md  # the latest row of the series
    assert "| 1.33 | TfLiteXNNPackDelegate: 29/58 nodes |" in md  # 200 / 150
    assert "## Regressions" in md and "+50 %" in md
    assert {p.name for p in paths} == {"report.md", "report.html", "latency.png", "delegate.png"}  # no sizes stored
