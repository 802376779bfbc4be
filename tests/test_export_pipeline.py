"""Export stage: refusals, bad inputs, manifest/parity schema, atomicity, one fast real-runtime check."""
from __future__ import annotations

import json

import pytest
import torch

from core.sizes import SizeError, parse_size
from export import artifact, parity, pipeline, targets
from export.artifact import MANIFEST_KEYS, PARITY_KEYS
from export.request import (PRECISIONS, ConversionError, ExportError, ExportRequest, capability, check_combination,
                            safe_name)


def _req(tmp_path, **kw):
    base = dict(model="uid", variant="tiny", target="onnx", precision="fp32", height=32, width=32, out=tmp_path,
                calibration_count=2, parity_count=1, task_count=2)
    base.update(kw)
    return ExportRequest(**base)


def test_litert_alias_and_unknown_target():
    assert targets.get("litert").name == "tflite" == targets.get("TFLite").name
    with pytest.raises(ExportError, match="unknown target 'tensorrt'; valid: coreml"):
        targets.get("tensorrt")


@pytest.mark.parametrize("target,precision,needle", [
    ("executorch", "int8-weights", "XNNPACK has no weight-only int8"),
    ("onnx", "fp16", "onnxruntime"),
    ("tflite", "palette4", "Core ML feature"),
])
def test_refusals_list_what_the_target_can_do(target, precision, needle):
    with pytest.raises(ExportError) as err:
        check_combination(target, precision)
    msg = str(err.value)
    assert needle in msg and "supports: fp32" in msg


def test_coreml_int8_refused_on_linux_with_reason():
    import platform
    if platform.system() == "Darwin":
        pytest.skip("macOS calibrates Core ML activations")
    assert "needs macOS" in capability("coreml", "int8")


def test_every_target_supports_fp32_and_matrix_complete():
    for t in targets.names():
        assert capability(t, "fp32") is None
        for p in PRECISIONS:
            capability(t, p)  # no KeyError


def test_bad_inputs_are_clear(tmp_path):
    with pytest.raises(ExportError, match="unknown model 'resnet'"):
        pipeline.validate(_req(tmp_path, model="resnet"))
    with pytest.raises(ExportError, match="multiples of 16"):
        pipeline.validate(_req(tmp_path, height=40))
    with pytest.raises(SizeError, match="HxW"):  # core.sizes: a UserError, as ExportError is
        parse_size("256")
    existing = _req(tmp_path).artifact_dir()
    existing.mkdir(parents=True)
    with pytest.raises(ExportError, match="--force"):
        pipeline.validate(_req(tmp_path))
    pipeline.validate(_req(tmp_path, force=True))


def test_checkpoint_of_another_model_is_refused(tmp_path):
    from models import registry
    from models.checkpoint import save_checkpoint

    ck = save_checkpoint(tmp_path / "rdpd-tiny.safetensors", registry.get("rdpd").build("tiny"), name="rdpd",
                         variant="tiny")
    with pytest.raises(ExportError, match="of model 'rdpd', not 'uid'"):
        pipeline.export_one(_req(tmp_path, checkpoint=ck, out=tmp_path / "art"))
    assert not (tmp_path / "art" / "uid-tiny").exists() or not any((tmp_path / "art" / "uid-tiny").iterdir())


def test_plan_skips_refused_combinations_for_all_targets(tmp_path):
    reqs, refused = pipeline.plan(["uid"], ["all"], "int8-weights", height=32, width=32, variant="tiny",
                                  out=tmp_path)
    assert {r.target for r in reqs} == {"coreml", "tflite"}
    assert {r["target"] for r in refused} == {"executorch", "executorch-coreml", "onnx"}
    with pytest.raises(ExportError, match="XNNPACK"):
        pipeline.plan(["uid"], ["executorch"], "int8-weights", height=32, width=32, variant="tiny", out=tmp_path)


def test_safe_names_cannot_escape():
    assert "/" not in safe_name("../../etc") and not safe_name("../x").startswith(".")


def test_failed_conversion_leaves_no_artifact(tmp_path, monkeypatch):
    def boom(ctx):
        (ctx.workdir / "model.onnx").write_bytes(b"half-written")
        raise RuntimeError("converter exploded")
    monkeypatch.setattr(targets.get("onnx"), "convert", boom)
    with pytest.raises(ConversionError, match="converter exploded"):
        pipeline.export_one(_req(tmp_path))
    root = tmp_path / "uid-tiny"
    assert not root.exists() or list(root.iterdir()) == []


def test_onnx_fp32_parity_manifest_schema(tmp_path):
    """Real runtime (onnxruntime), both input sets, manifest + parity schemas (tiny, 32x32)."""
    row = pipeline.export_one(_req(tmp_path))
    assert row["verdict"] == "pass", row
    d = tmp_path / "uid-tiny" / "onnx-fp32-32x32"
    assert sorted(p.name for p in d.iterdir()) == ["manifest.json", "model.onnx", "parity.json"]
    man, par = json.loads((d / "manifest.json").read_text()), json.loads((d / "parity.json").read_text())
    assert set(MANIFEST_KEYS) <= set(man) and set(PARITY_KEYS) <= set(par)
    assert [i["name"] for i in man["inputs"]] == ["left", "right", "focus_mask"]
    assert [o["name"] for o in man["outputs"]] == ["all_in_focus", "refocused", "defocus"]
    assert man["checkpoint"] is None and man["tool_versions"]["onnxruntime"]
    assert par["ran"] and set(par["sets"]) == {"random", "realistic"}
    for s in par["sets"].values():
        for e in s.values():
            assert e["shape_ok"] and e["psnr"] >= 60 and e["max_abs"] < 1e-4
    # existing folder -> refused without --force; replaced atomically with it
    with pytest.raises(ExportError, match="exists"):
        pipeline.export_one(_req(tmp_path))


def test_outputs_main_keeps_only_main(tmp_path):
    row = pipeline.export_one(_req(tmp_path, outputs="main"))
    man = json.loads((tmp_path / "uid-tiny" / "onnx-fp32-32x32" / "manifest.json").read_text())
    assert [o["name"] for o in man["outputs"]] == ["all_in_focus"] and row["verdict"] == "pass"


def test_shape_mismatch_is_an_error():
    from export.parity import compare
    from models import registry

    outs = registry.get("uid").outputs[:1]
    res = compare({"all_in_focus": torch.zeros(1, 3, 8, 8).numpy()}, {"all_in_focus": torch.zeros(1, 8, 8, 3).numpy()},
                  outs)
    assert not res["all_in_focus"]["shape_ok"]
    verdict, failures = parity.verdict({"random": res}, 60.0, ["random"])
    assert verdict == "fail" and "shape" in failures[0]


def _tree(folder):
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}


def test_crash_while_writing_keeps_the_previous_artifact(tmp_path, monkeypatch):
    """--force replaces an artifact only when the new one is complete: a crash while the manifest
    and parity files are written into the temp folder leaves the old folder byte-identical and no
    temp folder behind."""
    row = pipeline.export_one(_req(tmp_path))
    final = tmp_path / "uid-tiny" / "onnx-fp32-32x32"
    assert row["verdict"] == "pass" and final.is_dir()
    before = _tree(final)
    written = []

    def crash(path, data, **kw):
        written.append(path)
        if path.name == "parity.json":  # manifest.json is already in the temp folder
            raise OSError("disk full")
        return real_write_json(path, data, **kw)
    real_write_json = artifact.write_json
    monkeypatch.setattr(artifact, "write_json", crash)
    with pytest.raises(ConversionError, match="disk full"):
        pipeline.export_one(_req(tmp_path, force=True))
    assert [p.name for p in written] == ["manifest.json", "parity.json"]
    assert written[0].parent != final  # written into the temp folder, not over the artifact
    assert _tree(final) == before
    assert [p.name for p in final.parent.iterdir()] == [final.name]  # no temp or old folder left
