"""Each target on its real runtime (tiny variants, 32x32): fp32 parity, one int8 path per target,
RDPD's explicit state, Core ML conversion + inspection with parity recorded as not run on Linux.
Conversions take 10-60 s each on this machine: marked slow (``make test-all`` runs them)."""
from __future__ import annotations

import json
import platform

import pytest
import torch

from export import pipeline
from export.request import ExportRequest


# --- the registry (fast) -------------------------------------------------------------------------


def test_every_target_object_is_complete():
    from export import targets
    from export.request import PRECISIONS, ExportError

    assert targets.names() == ("coreml", "tflite", "executorch", "executorch-coreml", "onnx")
    assert [t.name for t in targets.all()] == list(targets.names())
    seen = set()
    for t in targets.all():
        assert isinstance(t, targets.Target) and t.name and t.name == t.name.lower()
        assert t.model_file.startswith("model.") and t.runtime_name and t.description
        assert set(t.capabilities) == set(PRECISIONS), t.name  # every precision: None or the reason
        assert t.capabilities["fp32"] is None
        assert all(r is None or (isinstance(r, str) and r) for r in t.capabilities.values())
        assert callable(t.convert) and callable(t.open_runtime)
        assert t.after_verify is None or callable(t.after_verify)
        assert t.check is None or callable(t.check)
        assert t.not_runnable_reason is None or t.not_runnable_reason.startswith("not run: ")
        assert t.tools and all(isinstance(n, str) and n for n in t.tools)
        for key in (t.name, *t.aliases):  # names and aliases are unique across targets and resolve
            assert key not in seen, key
            seen.add(key)
            assert targets.get(key) is t and targets.get(f" {key.upper()} ") is t
    assert targets.get("litert").name == "tflite" and targets.get("tfl").name == "tflite"
    with pytest.raises(ExportError) as err:
        targets.get("tensorrt")
    assert str(err.value) == (
        "unknown target 'tensorrt'; valid: coreml, tflite, executorch, executorch-coreml, onnx, all "
        "(aliases: mlpackage=coreml, litert=tflite, tfl=tflite, et=executorch, pte=executorch, "
        "executorch-xnnpack=executorch)")
    with pytest.raises(ExportError, match="unknown target 'all'"):
        targets.get("all")  # "all" is the CLI's, not a target


def test_core_ml_runtimes_are_not_run_off_macos():
    from export import targets

    for name in ("coreml", "executorch-coreml"):
        t = targets.get(name)
        if platform.system() == "Darwin":
            assert t.not_runnable_reason is None
        else:
            assert t.not_runnable_reason == "not run: Core ML predictions need macOS"
            with pytest.raises(RuntimeError):
                t.open_runtime("model", [], [], 1)


def test_registry_import_is_cheap():
    """Importing the registry (CLI help, runners) loads no converter, runtime or torch."""
    import subprocess
    import sys

    code = ("import sys, export.targets as t; t.all(); import export.request; "
            "heavy = [m for m in ('torch', 'onnx', 'onnxruntime', 'executorch', 'coremltools', 'litert_torch', "
            "'ai_edge_litert', 'ai_edge_quantizer') if m in sys.modules]; print(heavy); sys.exit(bool(heavy))")
    from pathlib import Path

    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parents[1])
    assert r.returncode == 0, r.stdout + r.stderr


def test_manifest_records_every_targets_tools():
    from export import artifact, targets

    names = artifact.tools()
    assert names[0] == "torch" and names[-1] == "numpy" and len(set(names)) == len(names)
    assert {n for t in targets.all() for n in t.tools} <= set(names)


# --- each target on its runtime (slow) ----------------------------------------------------------


def _export(tmp_path, model="uid", target="onnx", precision="fp32", size=32, **kw):
    req = ExportRequest(model=model, variant="tiny", target=target, precision=precision, height=size, width=size,
                        out=tmp_path, calibration_count=2, parity_count=1, task_count=2, **kw)
    row = pipeline.export_one(req)
    d = req.artifact_dir()
    return row, json.loads((d / "manifest.json").read_text()), json.loads((d / "parity.json").read_text()), d


@pytest.mark.slow
@pytest.mark.parametrize("target", ["executorch", "tflite"])
def test_fp32_parity_on_runtime(tmp_path, target):
    row, man, par, d = _export(tmp_path, target=target)
    assert par["ran"] and row["verdict"] == "pass", row
    assert min(e["psnr"] for s in par["sets"].values() for e in s.values()) >= 60
    if target == "executorch":
        deleg = man["conversion"]["delegation"]
        assert deleg["delegated_nodes"] > 0 and "fallback_ops" in deleg
        assert (d / "model.bpte").stat().st_size > 0 and man["conversion"]["bundled_program"]["test_cases"] == 1


@pytest.mark.slow
@pytest.mark.parametrize("target", ["onnx", "executorch", "tflite"])
def test_int8_static_with_task_metric(tmp_path, target):
    row, man, par, _ = _export(tmp_path, target=target, precision="int8")
    assert man["calibration"]["source"] == "synthetic" and man["calibration"]["count"] == 2
    assert par["ran"] and par["task"]["samples"] == 2 and "delta_db" in par["task"]
    assert par["gated_sets"] == ["realistic"]


@pytest.mark.slow
def test_tflite_static_int8_quantises_only_convolutions(tmp_path):
    """Convolutions carry int8 weights; element-wise ops, softmax and the kernel bank's depthwise
    convs stay float32 (quantising every op cost uid-mobile 12 dB of parity); graph I/O float32."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    from export.targets.litert import QUANTISED_OPS

    row, man, par, d = _export(tmp_path, target="tflite", precision="int8")
    assert row["verdict"] == "pass", row
    it = Interpreter(model_path=str(d / "model.tflite"))
    dtype = {t["index"]: t["dtype"] for t in it.get_tensor_details()}
    ops = it._get_ops_details()
    convs = [o for o in ops if o["op_name"] in ("CONV_2D", "FULLY_CONNECTED")]
    assert convs and all(dtype[o["inputs"][1]] == np.int8 for o in convs)  # int8 weights
    moves = [o for o in ops if o["op_name"] in QUANTISED_OPS and o not in convs]  # pooling, concat, resize
    assert moves and all(dtype[o["inputs"][0]] == np.int8 for o in moves)  # int8 data (a resize's size is int32)
    floats = [o for o in ops if o["op_name"] in ("ADD", "MUL", "SOFTMAX", "DEPTHWISE_CONV_2D", "MEAN", "SUM")]
    assert floats and not any(dtype[i] in (np.int8, np.uint8) for o in floats for i in o["inputs"] if i >= 0)
    assert {t["dtype"] for t in it.get_input_details() + it.get_output_details()} == {np.float32}


@pytest.mark.slow
@pytest.mark.parametrize("folding", [True, False])
def test_tflite_weight_only_convs_run_on_xnnpack(tmp_path, monkeypatch, folding):
    """UiD builds depthwise conv weights in forward from buffers (kernel bank, inverse bank, blur):
    folded at conversion, XNNPACK takes those convs; without folding they (and the BROADCAST_TO
    making their weights) fall back to LiteRT's kernels. Outputs equal either way (parity)."""
    from export.targets import litert

    monkeypatch.setattr(litert, "CONSTANT_FOLDING", folding)
    row, man, par, d = _export(tmp_path, target="tflite", precision="int8")
    assert row["verdict"] == "pass", row
    from models import registry

    spec = registry.get("uid")
    run = litert.open_runtime(d / "model.tflite", spec.input_names, [o["name"] for o in man["outputs"]], 1)
    run({k: v.numpy() for k, v in spec.example_inputs(32, 32, variant="tiny").items()})
    split = run.delegation()
    assert split["partitions"] >= 1 and split["on_delegate"] > 100
    weight_ops = {"DEPTHWISE_CONV_2D", "BROADCAST_TO"} & set(split["fallback_ops"])
    assert (not weight_ops) if folding else weight_ops == {"DEPTHWISE_CONV_2D", "BROADCAST_TO"}
    assert "RESIZE_NEAREST_NEIGHBOR" in split["fallback_ops"]  # not an XNNPACK op on this stack


@pytest.mark.slow
def test_tflite_user_recipe_replaces_the_rule(tmp_path):
    """--litert-recipe: the user's entries are used as given (here: every op int8, so adds take int8
    inputs, which the built-in rule never does) and recorded in the manifest."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_quantizer import recipe

    from export.targets.litert import load_recipe

    path = tmp_path / "every_op.json"
    entries = list(recipe.static_wi8_ai8()) + [{"regex": ".*", "operation": op, "algorithm_key": "no_quantize"}
                                                for op in ("INPUT", "OUTPUT", "DEPTHWISE_CONV_2D")]
    path.write_text(json.dumps(entries))
    assert load_recipe(path) == entries
    from typer.testing import CliRunner

    import cli

    r = CliRunner().invoke(cli.app, ["export", "--model", "uid", "--variant", "tiny", "--target", "litert",
                                     "--precision", "int8", "--size", "32x32", "--calibration-count", "2",
                                     "--out", str(tmp_path), "--litert-recipe", str(path)])
    assert r.exit_code == 0, r.output
    d = tmp_path / "uid-tiny" / "tflite-int8-32x32"
    man = json.loads((d / "manifest.json").read_text())
    assert man["conversion"]["recipe"] == entries and str(path) in " ".join(man["conversion"]["notes"])
    it = Interpreter(model_path=str(d / "model.tflite"))
    dtype = {t["index"]: t["dtype"] for t in it.get_tensor_details()}
    adds = [o for o in it._get_ops_details() if o["op_name"] == "ADD"]
    assert any(dtype[i] == np.int8 for o in adds for i in o["inputs"] if i >= 0)


@pytest.mark.slow
def test_tflite_weight_only_int8(tmp_path):
    row, man, par, _ = _export(tmp_path, target="tflite", precision="int8-weights")
    assert row["verdict"] == "pass", row


@pytest.mark.slow
def test_rdpd_state_inputs_and_outputs(tmp_path):
    row, man, par, _ = _export(tmp_path, model="rdpd", target="executorch", outputs="main")
    assert [i["name"] for i in man["inputs"]] == ["x", "h", "c"]
    assert [o["name"] for o in man["outputs"]] == ["y", "h_next", "c_next"]  # state survives --outputs main
    from models.registry import get

    expected = list(get("rdpd").output_shapes("tiny", 32, 32)["h_next"])  # hidden channels at 1/16 scale
    assert man["outputs"][1]["shape"] == expected and man["inputs"][1]["shape"] == expected
    assert row["verdict"] == "pass", row


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "int8-weights"])
def test_coreml_converts_and_inspects(tmp_path, precision):
    row, man, par, d = _export(tmp_path, target="coreml", precision=precision)
    insp = man["conversion"]["inspection"]
    assert insp["op_count"] > 0 and insp["inputs"] == ["left", "right", "focus_mask"]
    assert insp["outputs"] == ["all_in_focus", "refocused", "defocus"]
    assert (d / "model.mlpackage").is_dir()
    if precision == "int8-weights":
        assert insp["compressed_weight_ops"]
    if platform.system() != "Darwin":
        assert par["ran"] is False and par["verdict"] == "not run"
        assert par["reason"] == "not run: Core ML predictions need macOS"


# --- XNNPACK static int8: programs the runtime refused at load (issue 5) -----------------------


def _xnnpack_int8_loads(model, args, tmp_path):
    """PT2E int8 + XNNPACK lowering as ``export.targets.executorch.convert`` does it (filter level 0);
    returns the loaded method."""
    import executorch.kernels.quantized  # noqa: F401
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower
    from executorch.runtime import Runtime

    from export.quantize import pt2e_xnnpack_int8

    q = pt2e_xnnpack_int8(model.eval(), args, [args], level=0)
    edge = to_edge_transform_and_lower(torch.export.export(q, args), partitioner=[XnnpackPartitioner()])
    path = tmp_path / "model.pte"
    path.write_bytes(edge.to_executorch().buffer)
    return Runtime.get().load_program(str(path)).load_method("forward")  # raises if XNNPACK refuses


class _SharedConv(torch.nn.Module):
    """A conv module called twice (UiD's siamese stem, coc_features run for F_D and F_D_trg)."""

    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, 2, 1), torch.nn.LeakyReLU(0.1),
                                        torch.nn.Conv2d(4, 4, 3, 2, 1))

    def forward(self, a, b):
        return (self.stem(a) * self.stem(b),)


class _BlendWithClampedOutputs(torch.nn.Module):
    """DC2's blend ``w + m * (uw - w)`` with ``w`` and ``uw`` also clamped into graph outputs."""

    def __init__(self):
        super().__init__()
        self.c, self.d = torch.nn.Conv2d(3, 3, 3, padding=1), torch.nn.Conv2d(3, 3, 3, padding=1)
        self.m = torch.nn.Conv2d(3, 2, 3, padding=1)

    def forward(self, a):
        w, uw = a + self.c(a), a + self.d(a)
        m = torch.softmax(self.m(a), 1)[:, 1:2]
        return torch.clamp(w + m * (uw - w), 0, 1), m, torch.clamp(w, 0, 1), torch.clamp(uw, 0, 1)


def test_xnnpack_int8_shared_conv_loads(tmp_path):
    """A shared conv's second call stayed float and shared its bias with the int8 first call:
    "Failed to create convolution node ... xnn_status_invalid_parameter" at load."""
    from export.quantize import untie_shared_weights

    torch.manual_seed(0)
    model = _SharedConv().eval()
    gm = torch.export.export(model, (torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16))).module()
    assert untie_shared_weights(gm) == 4  # two weights + two biases get a second copy
    args = (torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16))
    method = _xnnpack_int8_loads(model, args, tmp_path)
    with torch.no_grad():
        ref = model(*args)[0]
    got = method.execute(list(args))[0]
    assert float((got - ref).abs().max()) < 0.05 * float(ref.abs().max())


def test_xnnpack_int8_blend_with_clamped_outputs_loads(tmp_path):
    """A shared dequantize feeding an int8 ``sub`` and a float ``clamp`` output: "XNN Runtime creation
    failed with code: xnn_status_unsupported_parameter" at load."""
    torch.manual_seed(0)
    a = torch.rand(1, 3, 16, 16)
    method = _xnnpack_int8_loads(_BlendWithClampedOutputs(), (a,), tmp_path)
    assert len(method.execute([a])) == 4


@pytest.mark.slow
@pytest.mark.parametrize("model,size", [("uid", 32), ("dc2", 32)])
def test_xnnpack_int8_uid_dc2_load_and_pass(tmp_path, model, size):
    """UiD (~1 min) and DC2 (~10-20 min: the 49-tap dynamic filters) int8 .pte load at filter
    level 0 and meet the int8 threshold on the realistic set."""
    row, man, par, d = _export(tmp_path, model=model, target="executorch", precision="int8", size=size)
    assert par["ran"] and row["verdict"] == "pass", row
    assert not any("refused" in n for n in man["conversion"]["notes"]), man["conversion"]["notes"]
    real = min(e["psnr"] for e in par["sets"]["realistic"].values())
    assert real >= 30, par["sets"]["realistic"]


def test_float_modules_match_whole_path_components_through_the_export_wrapper():
    """``ModelSpec.int8_float_modules`` names the model's own modules; every target sees them under
    the export wrapper (``model.``) and must not match a module that merely shares a prefix."""
    import re

    from export.quantize import path_in_modules
    from export.targets.litert import module_scope_regex

    assert path_in_modules("model.enc0.1.conv1", ("enc0",))
    assert path_in_modules("model.composer", ("composer",))
    assert not path_in_modules("model.enc0x", ("enc0",)) and not path_in_modules("model.enc1", ("enc0",))
    # litert-torch names an op's output tensor by its module stack, "<class>_<attribute>" per level
    name = ("export.pipeline.SelectOutputs/models.promptmask.PromptMask_model/torch.nn.modules.container."
            "Sequential_enc0/models.blocks.ConvAct_0/torch.nn.modules.conv.Conv2d_0;3")
    assert re.search(module_scope_regex("enc0"), name) and re.search(module_scope_regex("enc0.0"), name)
    assert not re.search(module_scope_regex("enc"), name) and not re.search(module_scope_regex("enc0.1"), name)
    assert not re.search(module_scope_regex("head"), "a/torch.nn.modules.container.Sequential_colour_head;2")
