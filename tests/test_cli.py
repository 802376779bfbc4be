"""The CLI commands end to end on tiny settings: synth, train (+ --resume, --publish), evaluate, export."""
import json

import pytest
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



def test_a_bug_is_reported_as_a_bug_with_its_traceback_saved(monkeypatch):
    """Any exception that is not a UserError (here a ValueError from inside a package) is a bug:
    exit 70, the message says so and names the file holding the traceback."""
    import re
    from pathlib import Path

    import models.complexity

    def broken(*args, **kwargs):
        raise ValueError("simulated bug")

    monkeypatch.setattr(models.complexity, "model_table", broken)
    r = runner.invoke(cli.app, ["models"])
    assert r.exit_code == cli.BUG_EXIT == 70, r.output
    assert "internal error (ValueError: simulated bug)" in r.output and "This is a bug" in r.output
    log = Path(re.search(r"the traceback is in (\S+)", r.output).group(1))
    text = log.read_text()
    log.unlink()
    assert "Traceback (most recent call last)" in text and "simulated bug" in text


def test_a_user_error_is_one_line_with_exit_code_2(tmp_path):
    r = runner.invoke(cli.app, ["export", "--target", "nokia", "--out", str(tmp_path / "a")])
    assert r.exit_code == 2 and r.output.startswith("error: unknown target 'nokia'") and r.output.count("\n") == 1
    assert not (tmp_path / "a.log").exists()  # nothing was said by third parties: no log left behind


_NOISE = ("scikit-learn version", "has not been tested with coremltools", "Failed to load", "_MLModelProxy")


def _export_coreml(tmp_path, *extra, verbose=False):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(cli.__file__).resolve().parent
    out = tmp_path / "artifacts"
    p = subprocess.run([sys.executable, str(root / "cli.py"), *(["--verbose"] if verbose else []), "export",
                        "--target", "coreml", "--size", "32x32", "--out", str(out), *extra],
                       capture_output=True, text=True, cwd=root, timeout=900)
    return p, out, tmp_path / "artifacts.log"


def test_export_coreml_console_shows_the_table_not_third_party_noise(tmp_path):
    """`cli.py export --target coreml` (real process, real stderr): the console holds the progress,
    the verdict table and where the artifacts are; coremltools/torchao notices go to the log."""
    p, out, log = _export_coreml(tmp_path, "--model", "uid", "--variant", "tiny")
    console = p.stdout + p.stderr
    assert p.returncode == 0, console
    assert "uid-tiny | coreml | fp32" in console and "NOT RUN" in console and f"artifacts in {out}" in console
    assert not any(n in console for n in _NOISE), console
    assert any(n in log.read_text() for n in _NOISE)
    assert (out / "uid-tiny" / "coreml-fp32-32x32" / "model.mlpackage").is_dir()
    p, _, _ = _export_coreml(tmp_path, "--model", "uid", "--variant", "tiny", "--force", verbose=True)
    assert p.returncode == 0 and any(n in p.stdout + p.stderr for n in _NOISE)  # --verbose shows them too


@pytest.mark.slow
def test_export_target_coreml_as_written_exports_every_model(tmp_path):
    """The user's own command, `python cli.py export --target coreml`: every registered model."""
    import re

    from models.registry import names

    p, out, _ = _export_coreml(tmp_path)
    console = p.stdout + p.stderr
    assert p.returncode == 0, console
    assert not any(n in console for n in _NOISE), console
    for name in names():
        assert re.search(rf"{name}-mobile\s*\| coreml\s*\| fp32", console), console
        assert (out / f"{name}-mobile" / "coreml-fp32-32x32" / "manifest.json").is_file()


def test_bad_values_are_user_errors_not_bugs(tmp_path):
    r = runner.invoke(cli.app, ["synth", "--noise-scale", "-1", "--out", str(tmp_path / "s")])
    assert r.exit_code == 2 and "--noise-scale must be" in r.output
    r = runner.invoke(cli.app, ["train", "--model", "uid", "--variant", "tiny", "--lr", "-1", "--out", str(tmp_path / "r")])
    assert r.exit_code == 2 and "lr must be a number >= 0" in r.output
    (tmp_path / "a_file").write_text("")
    r = runner.invoke(cli.app, ["evaluate", "--model", "uid", "--count", "1", "--size", "32", "--no-wiener",
                                "--json", str(tmp_path / "a_file" / "scores.json")])
    assert r.exit_code == 2 and "cannot write" in r.output, r.output


def test_third_party_output_goes_to_the_innermost_log_and_comes_back(tmp_path):
    import os

    outer, inner = tmp_path / "outer.log", tmp_path / "inner.log"
    with cli._third_party_output(outer):
        with cli._third_party_output(inner):
            os.write(2, b"from a library, inner\n")
        os.write(2, b"from a library, outer\n")
    with cli._third_party_output(tmp_path / "quiet.log"):
        pass
    assert "inner" in inner.read_text() and "outer" not in inner.read_text()
    assert "from a library, outer" in outer.read_text()
    assert not (tmp_path / "quiet.log").exists()  # nothing was said: no log left


def test_log_beside_the_output_and_per_torchrun_rank(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.log_path("out") == tmp_path / "out.log"
    assert cli.log_path(".") == tmp_path.parent / f"{tmp_path.name}.log"  # `--out .`: beside the folder
    monkeypatch.setenv("RANK", "1")
    assert cli.log_path("runs") == tmp_path / "runs.rank1.log"
    (tmp_path / "a_file").write_text("")
    assert cli.log_path(tmp_path / "a_file" / "out") is None  # cannot be made: no log, the command still runs
