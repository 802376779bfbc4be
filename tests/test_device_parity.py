"""Parity bundles and `parity check` on a real exported artifact (UiD tiny, 32x32, ONNX fp32):
the bundle's files, every planted fault from the issue caught and named, bad input refused."""
from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

import cli
from device_tests import check as chk
from device_tests.bundle import BUNDLE_JSON, make_bundle, open_bundle
from device_tests.host import host_parity, write_app_outputs
from device_tests.tensors import BundleError
from export import pipeline
from export.request import ExportRequest

runner = CliRunner()


@pytest.fixture(scope="session")
def bundle(tmp_path_factory):
    root = tmp_path_factory.mktemp("parity")
    req = ExportRequest(model="uid", variant="tiny", target="onnx", precision="fp32", height=32, width=32,
                        out=root / "art", parity_count=1, task_count=1)
    row = pipeline.export_one(req)
    return make_bundle(row["path"], 2, root / "bundle")


@pytest.fixture(scope="session")
def host_outputs(bundle, tmp_path_factory):
    """What a correct app writes: the artifact's runtime on the bundle's inputs, raw .bin."""
    from runtime_py.runners import load

    b = open_bundle(bundle)
    return write_app_outputs(b, load(b.model_dir), tmp_path_factory.mktemp("phone") / "outputs", "onnxruntime")


def _planted(src, tmp_path, fn, npy=False):
    """A copy of the outputs with ``fn(name, array) -> array`` applied to every output."""
    b = open_bundle(src[0])
    dst = tmp_path / "outputs"
    shutil.copytree(src[1], dst)
    for s in b.samples:
        for e in b.outputs:
            a = np.fromfile(dst / s / f"{e['name']}.bin", "<f4").reshape(e["shape"])
            a = np.ascontiguousarray(fn(e["name"], a), "<f4")
            if npy:
                (dst / s / f"{e['name']}.bin").unlink()
                np.save(dst / s / f"{e['name']}.npy", a)
            else:
                a.tofile(dst / s / f"{e['name']}.bin")
    return dst


def test_psnr_is_ai_hubs_definition():
    ref = np.full((1, 3, 4, 4), 0.5)
    ref[0, 0, 0, 0] = 2.0  # peak = max|ref| = 2, not the range
    assert chk.psnr_aihub(ref, ref + 0.02) == pytest.approx(20 * math.log10(2 / 0.02))
    assert chk.psnr_aihub(-ref, -ref - 0.02) == pytest.approx(40.0)
    assert chk.psnr_aihub(ref, ref) == chk.PSNR_CAP
    assert chk.psnr_aihub(ref, ref * np.nan) == float("-inf")


def test_bundle_files_are_little_endian_float32_with_checksums(bundle):
    b = open_bundle(bundle)
    m = b.manifest
    assert b.changed == [] and m["byte_order"] == "little" and m["dtype"] == "float32"
    assert (bundle / m["artifact"]["model_file"]).is_file() and (bundle / "model" / "manifest.json").is_file()
    e = m["inputs"][0]
    raw = (bundle / "inputs" / "000" / f"{e['name']}.bin").read_bytes()
    assert len(raw) == e["bytes"] == 4 * int(np.prod(e["shape"]))
    npy = np.load(bundle / "inputs" / "000" / f"{e['name']}.npy", allow_pickle=False)
    assert np.array_equal(np.frombuffer(raw, "<f4").reshape(e["shape"]), npy)
    assert all(o["layout"] == "NCHW" for o in m["outputs"]) and m["ground_truth"]["blur_map"]
    assert set(m["files"]) >= {"inputs/001/left.bin", "reference/000/all_in_focus.npy", "model/model.onnx"}


def test_correct_outputs_pass_with_task_metric_by_blur_band(bundle, host_outputs, tmp_path):
    res = chk.check(bundle, host_outputs, device="host", out=tmp_path / "c")
    assert res["verdict"] == "pass" and res["faults"] == [] and res["worst_psnr_db"] > 100
    assert all(v == "pass" for v in res["verdicts"].values())
    bands = res["task"]["bands"]
    assert "all" in bands and abs(bands["all"]["delta_db"]) < 1e-3  # same numbers as the reference
    assert sum(v["pixels"] for k, v in bands.items() if k != "all") == bands["all"]["pixels"]
    heat = [r["heatmap"] for r in res["results"]]
    assert all((tmp_path / "c" / p.rsplit("/", 1)[1]).read_bytes()[:4] == b"\x89PNG" for p in heat)
    assert json.loads((tmp_path / "c" / "check.json").read_text())["verdict"] == "pass"


def test_one_percent_noise_fails_fp32_passes_int8(bundle, host_outputs, tmp_path):
    rng = np.random.default_rng(0)
    out = _planted((bundle, host_outputs), tmp_path,
                   lambda n, a: a + rng.normal(0, 0.01 * np.abs(a).max(), a.shape))
    res = chk.check(bundle, out, out=tmp_path / "c")
    assert res["verdicts"]["fp32"] == "fail" and res["verdicts"]["int8"] == "pass" and res["verdict"] == "fail"
    assert 36 < res["worst_psnr_db"] < 44  # about 40 dB: 1 % of the peak
    assert res["faults"] == []  # numeric drift, not a named fault


@pytest.mark.parametrize("fault,fn,npy", [
    (chk.LAYOUT, lambda n, a: a.transpose(0, 2, 3, 1) if a.shape[1] > 1 else a, False),  # NHWC bytes in a .bin
    (chk.LAYOUT, lambda n, a: a.transpose(0, 2, 3, 1), True),                              # NHWC-shaped .npy
    (chk.RANGE, lambda n, a: a * 255.0, False),
    (chk.CHANNELS, lambda n, a: a[:, ::-1] if a.shape[1] == 3 else a, False),
])
def test_planted_fault_is_named(bundle, host_outputs, tmp_path, fault, fn, npy):
    out = _planted((bundle, host_outputs), tmp_path, fn, npy=npy)
    res = chk.check(bundle, out, out=tmp_path / "c")
    assert res["verdict"] == "fail"
    named = {f for r in res["results"] for f in r["faults"]}
    assert named == {fault}, res["faults"]
    assert any(fault in f for f in res["faults"])
    fixed = [r["fixed_psnr"] for r in res["results"] if r["faults"]]
    assert fixed and min(fixed) > 100  # undoing the fault recovers the output


def test_tampered_input_file_is_named(bundle, host_outputs, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    p = copy / "inputs" / "001" / "left.bin"
    a = np.fromfile(p, "<f4")
    a[0] += 0.5
    a.tofile(p)
    res = chk.check(copy, host_outputs, out=tmp_path / "c")
    assert res["verdict"] == "fail"
    assert any(f.startswith(chk.TAMPERED) and "inputs/001/left.bin" in f for f in res["faults"])


def test_outputs_of_another_model_are_named(bundle, host_outputs, tmp_path):
    import torch

    from export.parity import torch_run
    from models import registry

    b = open_bundle(bundle)
    torch.manual_seed(123)
    other = registry.get("uid").build("tiny").eval()
    for p in other.parameters():  # a trained-elsewhere model: clearly different weights
        p.data.add_(torch.randn_like(p) * 0.2)
    names, outs = [e["name"] for e in b.inputs], [e["name"] for e in b.outputs]
    out = write_app_outputs(b, lambda x: torch_run(other, names, outs, x), tmp_path / "outputs", "other")
    run = json.loads((out / "run.json").read_text())
    (out / "run.json").unlink()
    res = chk.check(bundle, out, out=tmp_path / "c")  # without run.json: the numbers say it
    assert res["verdict"] == "fail" and any(f.startswith(chk.UNEXPLAINED) for f in res["faults"]), res["faults"]
    (out / "run.json").write_text(json.dumps({**run, "artifact_sha256": "0" * 64}))
    res = chk.check(bundle, host_outputs.parent / "outputs", out=tmp_path / "c2")
    assert res["verdict"] == "pass"
    res = chk.check(bundle, out, out=tmp_path / "c3")  # run.json names another model file
    assert any(f.startswith(chk.OTHER_ARTIFACT) for f in res["faults"])


def test_bad_outputs_folders_are_refused_naming_the_file(bundle, host_outputs, tmp_path):
    def copy():
        d = tmp_path / f"o{len(list(tmp_path.iterdir()))}"
        shutil.copytree(host_outputs, d)
        return d

    d = copy()
    (d / "000" / "refocused.bin").unlink()
    with pytest.raises(BundleError, match=r"000/refocused.bin: missing"):
        chk.check(bundle, d, out=tmp_path / "never")
    d = copy()
    (d / "001" / "extra.bin").write_bytes(b"\0" * 16)
    with pytest.raises(BundleError, match=r"001: extra tensors extra.bin"):
        chk.check(bundle, d, out=tmp_path / "never")
    d = copy()
    a = np.fromfile(d / "000" / "defocus.bin", "<f4")
    a.astype("<f2").tofile(d / "000" / "defocus.bin")
    with pytest.raises(BundleError, match=r"000/defocus.bin: .* bytes, expected .*float16"):
        chk.check(bundle, d, out=tmp_path / "never")
    d = copy()
    (d / "000" / "defocus.bin").unlink()
    np.save(d / "000" / "defocus.npy", a.astype(np.float64))
    with pytest.raises(BundleError, match=r"000/defocus.npy: dtype float64"):
        chk.check(bundle, d, out=tmp_path / "never")
    d = copy()
    shutil.rmtree(d / "001")
    with pytest.raises(BundleError, match=r"001: missing"):
        chk.check(bundle, d, out=tmp_path / "never")
    assert not (tmp_path / "never").exists()  # nothing half-written


def test_bad_bundles_are_refused(bundle, host_outputs, tmp_path):
    copy = tmp_path / "b"
    shutil.copytree(bundle, copy)
    (copy / "reference" / "000" / "defocus.npy").unlink()
    with pytest.raises(BundleError, match=r"bundle files missing: reference/000/defocus.npy"):
        chk.check(copy, host_outputs, out=tmp_path / "never")
    m = json.loads((bundle / BUNDLE_JSON).read_text())
    m["files"]["../escape.bin"] = "0" * 64
    (copy / BUNDLE_JSON).write_text(json.dumps(m))
    with pytest.raises(BundleError, match=r"escapes the bundle folder"):
        open_bundle(copy)
    with pytest.raises(BundleError, match="not a parity bundle"):
        open_bundle(tmp_path)
    assert not (tmp_path / "never").exists()


def test_bundle_refuses_bad_artifact_and_keeps_old_output(bundle, tmp_path):
    with pytest.raises(BundleError, match="manifest.json: missing"):
        make_bundle(tmp_path, 1, tmp_path / "out")
    with pytest.raises(Exception, match="--force"):
        make_bundle(bundle / "model", 1, bundle)  # an existing bundle is not replaced silently
    assert open_bundle(bundle).changed == []


def test_parity_host_and_cli(bundle, host_outputs, tmp_path):
    rows = host_parity(bundle, tmp_path / "host")
    assert [r["verdict"] for r in rows] == ["pass", "pass"] and rows[0]["runtime"].startswith("onnxruntime")
    r = runner.invoke(cli.app, ["parity", "check", "--bundle", str(bundle), "--outputs", str(host_outputs),
                                "--device", "Pixel 8", "--out", str(tmp_path / "c"),
                                "--store", str(tmp_path / "r.sqlite")])
    assert r.exit_code == 0, r.output
    assert "psnr dB" in r.output and "fp32 pass" in r.output
    from device_tests import store
    row, = store.rows(tmp_path / "r.sqlite")
    assert (row["kind"], row["device"], row["verdict"], row["target"]) == ("parity", "Pixel 8", "pass", "onnx")
    r = runner.invoke(cli.app, ["parity", "host", "--bundle", str(bundle), "--out", str(tmp_path / "h"),
                                "--store", str(tmp_path / "r.sqlite")])
    assert r.exit_code == 0, r.output
    assert [x["device"] for x in store.rows(tmp_path / "r.sqlite")] == ["Pixel 8", "host"]
    bad = _planted((bundle, host_outputs), tmp_path, lambda n, a: a * 255.0)
    r = runner.invoke(cli.app, ["parity", "check", "--bundle", str(bundle), "--outputs", str(bad),
                                "--out", str(tmp_path / "c2")])
    assert r.exit_code == 1 and "0-255 range" in r.output
    r = runner.invoke(cli.app, ["parity", "check", "--bundle", str(tmp_path / "nope"), "--outputs", str(bad)])
    assert r.exit_code == 2 and "no such bundle folder" in r.output
