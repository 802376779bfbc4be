"""The CLI commands end to end on tiny settings: synth, train (+ --resume, --publish), evaluate, export."""
import json

import yaml
from typer.testing import CliRunner

import cli

runner = CliRunner()


def test_synth_writes_a_data_set_and_contact_sheet(tmp_path):
    out = tmp_path / "ds"
    r = runner.invoke(cli.app, ["synth", "--camera", "rdpd_set2", "-n", "2", "--size", "32x48", "--out", str(out),
                                "--format", "npz", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    rec = json.loads((out / "synth_record.json").read_text())
    assert len(rec["samples"]) == 2 and (out / "contact_sheet.png").stat().st_size > 1000
    assert (out / "train" / "shard_00000.npz").is_file()


def test_train_resume_publish_and_evaluate(tmp_path):
    base = ["train", "--model", "uid", "--variant", "tiny", "--out", str(tmp_path / "runs"), "--device", "cpu"]
    r = runner.invoke(cli.app, base + ["--steps", "4", "--refresh-every", "2", "--pool-size", "3", "--patch", "32",
                                       "--pool-image", "48"])
    assert r.exit_code == 0, r.output
    run = tmp_path / "runs" / "uid-tiny"
    assert (run / "metrics.png").is_file()
    r = runner.invoke(cli.app, base + ["--steps", "4"])
    assert r.exit_code == 2 and "--resume" in r.output  # refuses to overwrite a run
    no_device = [a for a in base if a not in ("--device", "cpu")]
    r = runner.invoke(cli.app, no_device + ["--steps", "6", "--resume", "--publish", str(tmp_path / "ck")])
    assert r.exit_code == 0, r.output
    saved = yaml.safe_load((run / "config.yaml").read_text())  # the resumed run kept its own settings
    assert (saved["steps"], saved["refresh_every"], saved["pool_size"], saved["pool_image"]) == (6, 2, 3, 48)
    assert saved["device"] == "cpu"
    r = runner.invoke(cli.app, no_device + ["--resume"])  # already finished: says so, trains nothing
    assert r.exit_code == 0 and "already at step 6 of 6" in r.output, r.output
    meta = json.loads((tmp_path / "ck" / "uid-tiny.json").read_text())
    assert meta["steps"] == 6 and meta["dtype"] == "float16"
    out = tmp_path / "scores.json"
    r = runner.invoke(cli.app, ["evaluate", "--model", "uid", "--checkpoint", str(tmp_path / "ck" / "uid-tiny.safetensors"),
                                "--count", "1", "--size", "32", "--no-wiener", "--json", str(out),
                                "--save-images", str(tmp_path / "img")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "img" / "uid-evaluation.png").stat().st_size > 1000
    scores = json.loads(out.read_text())["scores"]
    assert set(scores) == {"deblur", "refocus"} and "model" in scores["deblur"]
    r = runner.invoke(cli.app, ["evaluate", "--model", "rdpd", "--checkpoint", str(tmp_path / "ck" / "uid-tiny.safetensors")])
    assert r.exit_code == 2 and "not 'rdpd'" in r.output


def test_export_refuses_bad_requests_up_front(tmp_path):
    r = runner.invoke(cli.app, ["export", "--model", "uid", "--variant", "tiny", "--target", "executorch",
                                "--precision", "int8-weights", "--size", "32x32", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "int8" in r.output
    r = runner.invoke(cli.app, ["export", "--model", "uid", "--variant", "tiny", "--target", "onnx", "--precision", "fp32",
                                "--size", "30x30", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "16" in r.output
    assert not any(tmp_path.iterdir())


def test_export_litert_recipe_is_checked_up_front(tmp_path):
    """A user recipe: refused for other targets and for fp32, and a malformed file is named with
    its problem before any conversion."""
    good = tmp_path / "recipe.json"
    good.write_text(json.dumps([{"regex": ".*", "operation": "*", "algorithm_key": "min_max_uniform_quantize"}]))
    base = ["export", "--model", "uid", "--variant", "tiny", "--size", "32x32", "--out", str(tmp_path / "art")]
    r = runner.invoke(cli.app, base + ["--target", "onnx", "--precision", "int8", "--litert-recipe", str(good)])
    assert r.exit_code == 2 and "tflite" in r.output
    r = runner.invoke(cli.app, base + ["--target", "tflite", "--precision", "fp32", "--litert-recipe", str(good)])
    assert r.exit_code == 2 and "quantises" in r.output
    for text, needle in (("{not json", "not a JSON recipe"), ("[]", "non-empty"),
                         ('[{"regex": ".*"}]', "entry 0 lacks operation, algorithm_key")):
        bad = tmp_path / "bad.json"
        bad.write_text(text)
        r = runner.invoke(cli.app, base + ["--target", "tflite", "--precision", "int8", "--litert-recipe", str(bad)])
        assert r.exit_code == 2 and needle in r.output and "bad.json" in r.output, r.output
    r = runner.invoke(cli.app, base + ["--target", "tflite", "--precision", "int8", "--litert-recipe",
                                       str(tmp_path / "missing.json")])
    assert r.exit_code == 2 and "not found" in r.output
    assert not (tmp_path / "art").exists()


import pytest  # noqa: E402


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path):
    r = runner.invoke(cli.app, ["demo", "--out", str(tmp_path), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    for name in ("synth_rdpd_set3_dpdd", "synth_pixel4_dp_pixel", "synth_phone_w_uw_npz"):
        assert (tmp_path / name / "contact_sheet.png").is_file()
    for model in ("uid", "rdpd"):
        assert (tmp_path / f"run_{model}" / "comparison.png").is_file()
        parity = json.loads((tmp_path / "artifacts" / f"{model}-mobile" / "onnx-fp32-128x128" / "parity.json").read_text())
        assert parity["verdict"] == "pass"
