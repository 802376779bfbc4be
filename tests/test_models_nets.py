"""RDPD, DC2, UiD and the registry: shapes, ranges, sizes, streaming, blending, defocus control."""
from __future__ import annotations

import inspect
import math

import pytest
import torch

from models import registry
from models.complexity import count_macs, count_params, measure, model_table
from models.dc2 import blend, gate_map, gated
from models.radial import radial_map_torch
from models.uid import shift_defocus

ALL = [(n, v) for n in ("rdpd", "dc2", "uid", "promptmask") for v in ("paper", "mobile", "tiny")]
PAPER_PARAMS = {"rdpd": 24.3e6, "uid": 3.12e6}
DRBNET_PARAMS = 11.7e6


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _build(name, variant):
    torch.manual_seed(0)
    return registry.get(name).build(variant)


# -- registry contract ---------------------------------------------------------------------------


def test_registry_names_and_unknown():
    assert registry.names() == ["rdpd", "dc2", "uid", "promptmask"]
    with pytest.raises(KeyError, match="valid: rdpd, dc2, uid, promptmask"):
        registry.get("dpdnet")
    with pytest.raises(ValueError, match="valid: paper, mobile, tiny"):
        registry.get("rdpd").build("huge")
    with pytest.raises(ValueError, match="multiples of 16"):
        registry.get("uid").input_shapes("tiny", 40, 64)


@pytest.mark.parametrize("name", ["rdpd", "dc2", "uid", "promptmask"])
def test_spec_matches_model_signature(name):
    spec = registry.get(name)
    model = _build(name, "tiny")
    assert list(inspect.signature(model.forward).parameters) == spec.input_names
    assert list(model.output_names) == spec.output_names
    assert spec.main_output in spec.output_names
    assert spec.size_multiple == 16 and spec.variants == ("paper", "mobile", "tiny")
    assert all(t.layout == "NCHW" for t in spec.inputs + spec.outputs)
    d = spec.to_dict("tiny")
    assert [t["name"] for t in d["inputs"]] == spec.input_names
    assert all(None not in t["value_range"] or t["recurrent"] for t in d["inputs"])


@pytest.mark.parametrize("name", ["rdpd", "dc2", "uid", "promptmask"])
def test_example_inputs_are_realistic_and_deterministic(name):
    spec = registry.get(name)
    ex = spec.example_inputs(32, 48, variant="tiny", batch=2, seed=3)
    assert list(ex) == spec.input_names
    assert {k: tuple(v.shape) for k, v in ex.items()} == spec.input_shapes("tiny", 32, 48, batch=2)
    for t in spec.inputs:
        lo, hi = t.value_range
        assert ex[t.name].min() >= lo and ex[t.name].max() <= hi, t.name
    radial = radial_map_torch(32, 48, batch=2)
    if name == "rdpd":
        torch.testing.assert_close(ex["x"][:, 6:7], radial)
        assert (ex["h"].abs() < 1).all() and ex["c"].std() > 0.1  # a mid-sequence state
    if name == "dc2":
        torch.testing.assert_close(ex["radial"], radial)
        assert (ex["defocus_wide"] >= 0).all() and (ex["defocus_target"] >= 0).all()
        assert ex["defocus_target"].std() > 0.05
    if name == "uid":
        m = ex["focus_mask"]
        assert set(m.unique().tolist()) == {0.0, 1.0}
    if name == "promptmask":  # a unit text embedding, 1 x 1 whatever the image size
        torch.testing.assert_close(ex["query"].norm(dim=1), torch.ones(2, 1, 1))
    again = spec.example_inputs(32, 48, variant="tiny", batch=2, seed=3)
    other = spec.example_inputs(32, 48, variant="tiny", batch=2, seed=4)
    assert all(torch.equal(ex[k], again[k]) for k in ex)
    assert any(not torch.equal(ex[k], other[k]) for k in ex)


def test_build_is_deterministic_and_eval():
    a, b = _build("dc2", "tiny"), _build("dc2", "tiny")
    assert not a.training
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


# -- shapes and ranges for every model and variant -----------------------------------------------


@pytest.mark.parametrize("name,variant", ALL)
def test_shapes_and_value_ranges(name, variant):
    spec = registry.get(name)
    model = _build(name, variant)
    ex = spec.example_inputs(32, 32, variant=variant, seed=1)
    with torch.no_grad():
        outs = model(*ex.values())
    assert isinstance(outs, tuple) and len(outs) == len(spec.outputs)
    shapes = spec.output_shapes(variant, 32, 32)
    for t, o in zip(spec.outputs, outs):
        assert tuple(o.shape) == shapes[t.name], t.name
        assert torch.isfinite(o).all(), t.name
        lo, hi = t.value_range
        assert o.min() >= lo and o.max() <= hi, t.name


# -- sizes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["rdpd", "uid"])
def test_paper_parameter_counts(name):
    n = measure(name, "paper", 64, 64)["params"]
    assert abs(n / PAPER_PARAMS[name] - 1) <= 0.05, n


def test_dc2_refiner_parameter_count_matches_drbnet():
    with torch.device("meta"):
        model = registry.get("dc2").build("paper")
    for refiner in (model.refine_w, model.refine_uw):
        assert abs(count_params(refiner) / DRBNET_PARAMS - 1) <= 0.05


def test_mobile_and_tiny_budgets():
    rows = {(r["model"], r["variant"]): r for r in model_table(512, 512, variants=["mobile", "tiny"])}
    for name in ("rdpd", "dc2", "uid", "promptmask"):
        mobile, tiny = rows[(name, "mobile")], rows[(name, "tiny")]
        assert mobile["params"] <= 2_000_000 and mobile["gmac"] <= 30.0, mobile
        assert 5_000 <= tiny["params"] <= 100_000, tiny
        assert tiny["gmac"] < mobile["gmac"]


def test_mac_counter_counts_a_conv():
    conv = torch.nn.Conv2d(4, 8, 3, padding=1)
    assert count_macs(conv, [torch.zeros(1, 4, 10, 10)]) == 4 * 8 * 9 * 100


# -- RDPD ----------------------------------------------------------------------------------------


def test_rdpd_streaming_equals_sequence_helper():
    model = _build("rdpd", "tiny")
    g = torch.Generator().manual_seed(0)
    frames = torch.rand(2, 4, 7, 32, 32, generator=g)
    with torch.no_grad():
        seq = model.run_sequence(frames)
        h, c = model.init_state(2, 32, 32)
        assert h.shape == (2, 16, 2, 2) and not h.any()
        stream = []
        for t in range(4):
            h_prev = h
            y, h, c = model(frames[:, t], h, c)
            stream.append(y)
        # the state matters: frame 3 from a zero state differs from the streamed frame 3
        _, h_cold, _ = model(frames[:, 3], *model.init_state(2, 32, 32))
    assert seq.shape == (2, 4, 3, 32, 32)
    torch.testing.assert_close(torch.stack(stream, dim=1), seq, atol=0, rtol=0)
    assert (h_cold - h).abs().max() > 1e-4 and h_prev.abs().max() > 0
    # the spec's generic sequence runner (training, evaluation) is the same computation
    spec_out = registry.get("rdpd").forward(model, {"x": frames})
    assert set(spec_out) == {"y"}
    torch.testing.assert_close(spec_out["y"], seq, atol=0, rtol=0)
    with pytest.raises(ValueError, match="multiples of 16"):
        model.init_state(1, 40, 32)


# -- DC2 -----------------------------------------------------------------------------------------


def test_dc2_blend_function():
    w, uw = torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8)
    torch.testing.assert_close(blend(w, uw, torch.ones(1, 1, 8, 8)), uw)
    torch.testing.assert_close(blend(w, uw, torch.zeros(1, 1, 8, 8)), w)
    torch.testing.assert_close(blend(w, uw, torch.full((1, 1, 8, 8), 0.25)), 0.75 * w + 0.25 * uw)


@pytest.mark.parametrize("value", [0.0, 1.0])
def test_dc2_forced_mask_returns_refined_image(value):
    spec = registry.get("dc2")
    model = _build("dc2", "tiny")
    ex = spec.example_inputs(32, 32, variant="tiny")
    for k in ("wide", "ultrawide"):  # away from 0 and 1: the clamp of refined_w/uw must not act
        ex[k] = 0.2 + 0.6 * ex[k]
    with torch.no_grad():
        free = dict(zip(model.output_names, model(*ex.values())))
        model.mask_override = value
        forced = dict(zip(model.output_names, model(*ex.values())))
    target = forced["refined_uw"] if value == 1.0 else forced["refined_w"]
    # the in-focus gate (issue 13) passes the blend through where W's defocus differs from the target's
    g = gate_map(ex["defocus_wide"], ex["defocus_target"], model.config.gate_tau)
    target = gated(ex["wide"], target, g, model.config.mean_lock).clamp(0, 1)
    torch.testing.assert_close(forced["image"], target, atol=1e-6, rtol=0)
    assert (forced["refined_w"] - forced["refined_uw"]).abs().max() > 1e-3  # the test can fail
    assert torch.all(forced["mask_uw"] == value)
    # the predicted masks are proper softmax weights strictly inside (0, 1)
    for k in ("mask_uw", "mask_uw_half", "mask_uw_quarter", "mask_uw_eighth"):
        assert free[k].min() > 0 and free[k].max() < 1


def test_dc2_refiners_see_the_defocus_maps():
    spec = registry.get("dc2")
    model = _build("dc2", "tiny")
    ex = spec.example_inputs(32, 32, variant="tiny")
    with torch.no_grad():
        a = model(*ex.values())[0]
        ex["defocus_target"] = torch.zeros_like(ex["defocus_target"])  # all-in-focus request
        b = model(*ex.values())[0]
    assert (a - b).abs().max() > 1e-5


# -- UiD -----------------------------------------------------------------------------------------


def test_uid_defocus_shift_centres_the_masked_region():
    fd = torch.rand(2, 1, 8, 8) * 2 - 1
    mask = torch.zeros(2, 1, 8, 8)
    mask[0, :, 2:5, 3:7] = 1
    shifted = shift_defocus(fd, mask)
    assert abs(float((shifted[0] * mask[0]).sum() / mask[0].sum())) < 1e-5
    torch.testing.assert_close(shifted[0] - fd[0], torch.full_like(fd[0], float(shifted[0, 0, 0, 0] - fd[0, 0, 0, 0])))
    torch.testing.assert_close(shifted[1], fd[1])  # empty mask: unchanged


def test_uid_mask_drives_refocus_only():
    spec = registry.get("uid")
    model = _build("uid", "tiny")
    with torch.no_grad():  # an untrained net barely reacts to F_D: strengthen the CoC path
        model.P_rgb.weight.mul_(10.0)
        model.P_feat.weight.mul_(10.0)
    ex = spec.example_inputs(32, 32, variant="tiny")
    with torch.no_grad():
        aif1, ref1, d1 = model(*ex.values())
        ex["focus_mask"] = torch.zeros_like(ex["focus_mask"])  # empty mask: no shift
        aif2, ref2, d2 = model(*ex.values())
    torch.testing.assert_close(aif1, aif2)
    torch.testing.assert_close(d1, d2)
    assert (ref1 - ref2).abs().max() > 1e-4


def test_uid_inverse_kernels_follow_loaded_weights():
    a, b = _build("uid", "tiny"), _build("uid", "tiny")
    with torch.no_grad():
        a.bank.half_raw.add_(torch.randn_like(a.bank.half_raw))
    a.eval()  # refresh after the in-place edit
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(b.bank.inverse, a.bank.inverse)
    ex = registry.get("uid").example_inputs(32, 32, variant="tiny")
    with torch.no_grad():
        for x, y in zip(a(*ex.values()), b(*ex.values())):
            torch.testing.assert_close(x, y)


def test_model_table_rows():
    rows = model_table(64, 64, names=["uid"], variants=["tiny"])
    assert len(rows) == 1 and rows[0]["model"] == "uid"
    assert rows[0]["inputs"] == "left[3], right[3], focus_mask[1]"
    assert math.isclose(rows[0]["gmac"], rows[0]["macs"] / 1e9)
    assert rows[0]["params"] == count_params(_build("uid", "tiny"))


def test_cli_models_command():
    typer_testing = pytest.importorskip("typer.testing")
    import cli

    result = typer_testing.CliRunner().invoke(cli.app, ["models", "--height", "64", "--width", "64"])
    assert result.exit_code == 0, result.output
    for word in ("rdpd", "dc2", "uid", "paper", "mobile", "tiny", "focus_mask"):
        assert word in result.output
