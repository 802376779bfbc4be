"""``cli.py evaluate --data DIR`` on real-format captures with ground truth: a tiny Pixel 4 set in
the public layout (14-bit PNG pairs on black 1024 + gt_all_in_focus_im/NNN_gt.png covering a
central part of the views, at a planted offset) and a DPDD folder scored whole."""
from __future__ import annotations

import json
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import cli
from calibration.cameras import get_camera
from core import metrics
from models.checkpoint import save_checkpoint
from models.registry import get
from synth import writers
from synth.dp_sample import make_dp_sample
from synth.scenes import random_scene
from train import evaluate_captures as ec

VIEW = (48, 64)  # h, w: 4:3 like the public set's 1512x2016 views
GT = (32, 42)  # its central part, like 1008x1344 (2/3 of each side)
OFFSETS = {"000": (8 + 3, 11 - 2), "001": (8 - 1, 11 + 4)}  # centred position (8, 11) plus a planted shift


def _code(x: np.ndarray) -> np.ndarray:
    return np.round(1024 + np.clip(x, 0, 1) * 16383).astype(np.uint16)


def write_pixel4_set(root, offsets=OFFSETS, seed=0):
    """Pixel 4 layout: NNN_left/right.png (14-bit on black 1024) rendered by the synthetic engine,
    and gt_all_in_focus_im/NNN_gt.png: the sharp image's region at ``offsets[NNN]`` on the same scale."""
    cam = get_camera("pixel4_dp")
    (root / ec.GT_FOLDER).mkdir(parents=True)
    samples = {}
    for i, (stem, (y, x)) in enumerate(offsets.items()):
        scene = random_scene("dead_leaves", *VIEW, seed=seed + i, near_m=0.3, far_m=5)
        s = make_dp_sample(scene, cam, rng=np.random.default_rng(seed + i), scale=0.25, device="cpu")
        assert cv2.imwrite(str(root / f"{stem}_left.png"), _code(s.left[..., 0]))
        assert cv2.imwrite(str(root / f"{stem}_right.png"), _code(s.right[..., 0]))
        assert cv2.imwrite(str(root / ec.GT_FOLDER / f"{stem}_gt.png"), _code(s.sharp[y:y + GT[0], x:x + GT[1], 0]))
        samples[stem] = s
    return samples


@pytest.fixture(scope="module")
def pixel_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("pixel4")
    return root, write_pixel4_set(root)


def test_locate_finds_a_planted_offset():
    rng = np.random.default_rng(5)
    image = cv2.GaussianBlur(rng.random((90, 120)).astype(np.float32), (0, 0), 1.2)
    for dy, dx in ((0, 0), (4, -7), (-9, 9)):
        y, x = 15 + dy, 20 + dx
        (oy, ox), corr = ec.locate(image[y:y + 60, x:x + 80], image, search=10)
        assert (oy, ox) == (y, x) and corr == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ec.EvaluationError, match="larger than the views"):
        ec.locate(image, image[:50], search=4)


def test_pixel_set_scores_match_direct_metrics(pixel_set, tmp_path):
    root, samples = pixel_set
    res = ec.evaluate_captures("rdpd", root, search=6)
    assert res["kind"] == "pixel_gt" and res["count"] == 2 and res["methods"][:2] == [ec.INPUT, ec.UNSHARP]
    for row in res["scenes"]:
        y, x = OFFSETS[row["scene"]]
        assert row["offset"] == [y, x]  # the planted offset, found by correlation
        s = samples[row["scene"]]
        q = lambda a: (_code(a).astype(np.float32) - 1024) / 16383  # noqa: E731 - what the files hold
        before = 0.5 * (q(s.left[..., 0]) + q(s.right[..., 0]))[None, y:y + GT[0], x:x + GT[1]]
        gt = q(s.sharp[y:y + GT[0], x:x + GT[1], 0])[None]
        sc = row["scores"][ec.INPUT]
        assert sc["linear"]["psnr"] == pytest.approx(metrics.psnr(before, gt), abs=1e-4)
        assert sc["linear"]["ssim"] == pytest.approx(metrics.ssim(before, gt), abs=1e-5)
        assert sc["srgb"]["psnr"] == pytest.approx(metrics.psnr(writers.linear_to_srgb(before),
                                                                writers.linear_to_srgb(gt)), abs=1e-4)
        assert row["vs_input_db"][ec.INPUT] == {"linear": 0.0, "srgb": 0.0}
        assert any("located at offset" in p for p in row["processing"])
        assert any(p.startswith("left, right: (value - 1024) / 16383") for p in row["processing"])
    mean = res["summary"][ec.UNSHARP]["linear"]
    assert mean["psnr"] == pytest.approx(np.mean([r["scores"][ec.UNSHARP]["linear"]["psnr"] for r in res["scenes"]]))
    assert mean["better_than_input"] == sum(r["vs_input_db"][ec.UNSHARP]["linear"] > 0 for r in res["scenes"])
    assert "no calibrated kernels" in res["classical"][0]


def test_psnr_of_a_known_error_is_analytic(tmp_path):
    """Views equal to the ground truth plus 0.01 (in 14-bit codes): input PSNR is 40 dB exactly."""
    (tmp_path / ec.GT_FOLDER).mkdir()
    rng = np.random.default_rng(2)
    sharp = cv2.GaussianBlur(rng.random(VIEW).astype(np.float32), (0, 0), 1.0) * 0.8 + 0.1
    codes = np.round(1024 + sharp * 16383)
    for side in ("left", "right"):
        cv2.imwrite(str(tmp_path / f"000_{side}.png"), (codes + 163.83 * 1).round().astype(np.uint16))
    y, x = 8, 11
    cv2.imwrite(str(tmp_path / ec.GT_FOLDER / "000_gt.png"), codes[y:y + GT[0], x:x + GT[1]].astype(np.uint16))
    res = ec.evaluate_captures("uid", tmp_path, search=4)
    err = (np.round(codes + 163.83) - codes)[y:y + GT[0], x:x + GT[1]] / 16383
    expect = 10 * np.log10(1 / np.mean(err ** 2))
    assert res["scenes"][0]["offset"] == [y, x]
    assert res["scenes"][0]["scores"][ec.INPUT]["linear"]["psnr"] == pytest.approx(expect, abs=1e-3)
    assert expect == pytest.approx(40.0, abs=0.01)
    assert res["scenes"][0]["gt_gain_vs_input"] < 1  # the views are brighter than the ground truth


def test_model_row_through_checkpoint_and_cli_outputs(pixel_set, tmp_path):
    root, _ = pixel_set
    torch.manual_seed(0)
    ck = save_checkpoint(tmp_path / "rdpd-tiny.safetensors", get("rdpd").build("tiny"), name="rdpd", variant="tiny")
    out_json, out_csv = tmp_path / "scores.json", tmp_path / "scores.csv"
    r = CliRunner().invoke(cli.app, ["evaluate", "--model", "rdpd", "--checkpoint", str(ck), "--data", str(root),
                                     "--search", "6", "--json", str(out_json), "--csv", str(out_csv)],
                           env={"COLUMNS": "220"})
    assert r.exit_code == 0, r.output
    assert "mean over 2 scenes" in r.output and "better than input" in r.output and "model" in r.output
    res = json.loads(out_json.read_text())
    row = res["scenes"][0]
    assert ec.MODEL in row["scores"] and row["model_seconds"] > 0
    assert any("copied to 3 channels" in p for p in row["model_processing"])
    assert any("mean of its 3 channels" in p for p in row["model_processing"])
    assert any("run whole at full resolution: 64x48" in p for p in row["model_processing"])
    lines = out_csv.read_text().splitlines()
    assert lines[0].startswith("scene,method,psnr_linear") and len(lines) == 1 + 2 * 3 + 3
    assert lines[-1].startswith("mean,model,")


def test_dpdd_folder_scored_whole_with_full_res(tmp_path):
    rng = np.random.default_rng(1)
    for name in ("a", "b"):
        s = SimpleNamespace(**{k: rng.random((24, 32, 3)).astype(np.float32) for k in ("left", "right", "combined",
                                                                                         "sharp")})
        writers.write_dpdd_sample(tmp_path, "test", name, s)
    res = ec.evaluate_captures("rdpd", tmp_path, full_res=True)
    assert res["kind"] == "dpdd" and res["count"] == 2 and res["input"] == "input (combined view)"
    from runtime_py.captures import DPDDDataset

    _, _, comb, target = DPDDDataset(tmp_path)[0]
    sc = res["scenes"][0]["scores"]["input (combined view)"]
    assert sc["srgb"]["psnr"] == pytest.approx(metrics.psnr(comb, target), abs=1e-4)  # stored values are sRGB
    assert ec.capture_set_kind(tmp_path) is None  # without --full-res: the crop evaluation as before


def test_bad_capture_sets_are_user_errors(tmp_path):
    (tmp_path / ec.GT_FOLDER).mkdir()
    r = CliRunner().invoke(cli.app, ["evaluate", "--model", "rdpd", "--data", str(tmp_path)])
    assert r.exit_code == 2 and "no NNN_gt.png" in r.output
    cv2.imwrite(str(tmp_path / ec.GT_FOLDER / "000_gt.png"), np.full((60, 80), 2000, np.uint16))
    for side in ("left", "right"):
        cv2.imwrite(str(tmp_path / f"000_{side}.png"), np.full((30, 40), 2000, np.uint16))
    r = CliRunner().invoke(cli.app, ["evaluate", "--model", "rdpd", "--data", str(tmp_path)])
    assert r.exit_code == 2 and "000_gt.png: ground truth 80x60 is larger than the views 40x30" in r.output
    r = CliRunner().invoke(cli.app, ["evaluate", "--model", "dc2", "--data", str(tmp_path)])
    assert r.exit_code == 2 and "dc2 takes dual_camera captures" in r.output
    r = CliRunner().invoke(cli.app, ["evaluate", "--model", "rdpd", "--csv", str(tmp_path / "x.csv"), "--count", "1",
                                     "--size", "32", "--no-wiener"])
    assert r.exit_code == 2 and "--csv: only for captures with ground truth" in r.output


def test_full_res_and_count_are_checked(tmp_path):
    with pytest.raises(ec.EvaluationError, match="--full-res needs a DPDD folder"):
        ec.capture_set_kind("synthetic:test", full_res=True)
    with pytest.raises(ec.EvaluationError, match="--full-res needs a DPDD folder"):
        ec.capture_set_kind(tmp_path, full_res=True)
    (tmp_path / ec.GT_FOLDER).mkdir()
    with pytest.raises(ec.EvaluationError, match="--count must be at least 1"):
        ec.evaluate_captures("rdpd", tmp_path, limit=0)


def test_ssim_separable_window_equals_the_2d_definition():
    """core.metrics.ssim (two 1-D passes, made fast enough for 3 MP captures) against the 2-D
    Gaussian window written out (Wang et al. 2004 constants, valid region)."""
    import torch.nn.functional as F

    def reference(x, y, sigma=1.5, size=11):
        x, y = torch.from_numpy(x).double()[None], torch.from_numpy(y).double()[None]
        c = x.shape[1]
        g = torch.exp(-((torch.arange(size, dtype=torch.float64) - size // 2) ** 2) / (2 * sigma * sigma))
        g = g / g.sum()
        win = (g[:, None] * g[None, :]).expand(c, 1, size, size).contiguous()
        f = lambda t: F.conv2d(t, win, groups=c)  # noqa: E731
        mx, my = f(x), f(y)
        sxx, syy, sxy = f(x * x) - mx * mx, f(y * y) - my * my, f(x * y) - mx * my
        c1, c2 = 0.01 ** 2, 0.03 ** 2
        return (((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))).mean().item()

    rng = np.random.default_rng(1)
    for shape in ((3, 40, 50), (1, 21, 12)):
        a = rng.random(shape).astype(np.float32)
        b = np.clip(a + 0.1 * rng.standard_normal(shape), 0, 1).astype(np.float32)
        assert metrics.ssim(a, b) == pytest.approx(reference(a, b), abs=1e-12)
        assert metrics.ssim(torch.from_numpy(a)[None], torch.from_numpy(b)[None]) == pytest.approx(reference(a, b), abs=1e-12)


@pytest.mark.slow  # an ONNX export (about a minute on a loaded 2-core machine)
def test_model_row_through_an_exported_artifact_is_tiled(pixel_set, tmp_path):
    from export import pipeline
    from export.request import ExportRequest

    root, _ = pixel_set
    torch.manual_seed(0)
    ck = save_checkpoint(tmp_path / "uid-tiny.safetensors", get("uid").build("tiny"), name="uid", variant="tiny")
    pipeline.export_one(ExportRequest(model="uid", target="onnx", precision="fp32", height=32, width=32, variant="tiny",
                                      checkpoint=ck, out=tmp_path / "art", parity_count=1))
    art = tmp_path / "art" / "uid-tiny" / "onnx-fp32-32x32"
    res = ec.evaluate_captures("uid", root, artifact=art, search=6, limit=1)
    row = res["scenes"][0]
    assert res["runtime"].startswith("onnxruntime") and ec.MODEL in row["scores"]
    assert np.isfinite(row["scores"][ec.MODEL]["linear"]["psnr"]) and res["artifact"] == str(art)
    assert "tiled at full resolution: 32x32 tiles, overlap 16 px, blended" in row["model_processing"]
    with pytest.raises(ec.EvaluationError, match="artifact is of model 'uid', not 'rdpd'"):
        ec.evaluate_captures("rdpd", root, artifact=art, limit=1)


def test_classical_row_runs_with_kernels_beside_the_captures(pixel_set, tmp_path):
    """A `calibrate import`-style kernels folder in <captures>/calibration/ turns the classical hook
    into a scored row (calibration.classical.deblur_capture) next to the input."""
    import shutil

    from calibration.dp_psf import PSFParams, dual_pixel_psf
    from calibration.kernel_stack import Capture, KernelSet

    root, _ = pixel_set
    data = tmp_path / "set"
    shutil.copytree(root, data)
    kl, kr = dual_pixel_psf(2.0, PSFParams(9, 0.5, 0.2), 9)
    kl, kr = (kl / kl.sum()).astype(np.float32), (kr / kr.sum()).astype(np.float32)
    ks = KernelSet((3, 4), 16, [Capture("ref", np.stack([kl] * 12), np.stack([kr] * 12))], (0, 0, 48, 64), (48, 64))
    ks.save(data / "calibration")
    res = ec.evaluate_captures("rdpd", data, search=6)
    label = res["methods"][-1]
    assert label.startswith("classical"), res["methods"]
    for row in res["scenes"]:
        sc = row["scores"][label]["linear"]
        assert np.isfinite(sc["psnr"]) and 0 < sc["ssim"] <= 1
