"""cli.py run: a real capture file through a checkpoint and through exported artifacts."""
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import cli
from calibration.cameras import get_camera
from export import pipeline
from export.request import ExportRequest
from models.checkpoint import save_checkpoint
from models.dc2_spec import DEFOCUS_NORM_PX
from models.registry import get
from runtime_py import run_capture
from runtime_py.captures import open_capture
from runtime_py.runners import ModelRunner, RunnerError, TorchRunner, load
from synth.dp_sample import make_dp_sample
from synth.scenes import random_scene
from synth.writers import write_pixel_sample


@pytest.fixture(scope="module")
def pixel_capture(tmp_path_factory):
    """A Pixel capture-app pair (16-bit big-endian PGM) rendered by the synthetic engine."""
    root = tmp_path_factory.mktemp("cap")
    cam = get_camera("pixel4_dp")
    scene = random_scene("mixed", 48, 80, seed=3, near_m=0.2, far_m=10)
    sample = make_dp_sample(scene, cam, rng=np.random.default_rng(0), device="cpu")
    write_pixel_sample(root, 0, sample, cam)
    return root


@pytest.fixture(scope="module")
def uid_artifacts(tmp_path_factory):
    root = tmp_path_factory.mktemp("art")
    torch.manual_seed(0)
    ck = save_checkpoint(root / "uid-tiny.safetensors", get("uid").build("tiny"), name="uid", variant="tiny")
    req = ExportRequest(model="uid", target="onnx", precision="fp32", height=32, width=32, variant="tiny",
                        checkpoint=ck, out=root / "artifacts", parity_count=1)
    row = pipeline.export_one(req)
    return ck, root / "artifacts" / "uid-tiny" / "onnx-fp32-32x32", row


def _fixed_size(runner: ModelRunner, like: ModelRunner) -> ModelRunner:
    """The PyTorch runner pinned to the artifact's size, so both take the same tiling path."""
    runner.manifest = {**runner.manifest, "size": like.manifest["size"]}
    runner.shapes = like.shapes
    return runner


def test_same_capture_same_output_torch_and_onnxruntime(pixel_capture, uid_artifacts):
    ck, art, _ = uid_artifacts
    cap = open_capture(pixel_capture)
    inputs, rec = run_capture.model_inputs("uid", cap, focus=(40, 20))
    assert inputs["left"].shape == (1, 3, 48, 80) and rec["focus_pixels"] > 0
    onnx = load(art)
    torch_r = _fixed_size(TorchRunner.from_checkpoint(ck, "uid"), onnx)
    a = run_capture.run(onnx, "uid", inputs)
    b = run_capture.run(torch_r, "uid", inputs)
    for name in a:
        assert a[name].shape == b[name].shape == (1, a[name].shape[1], 48, 80)
        assert np.abs(a[name] - b[name]).max() < 1e-4, name


def test_run_command_writes_outputs(pixel_capture, uid_artifacts, tmp_path):
    _, art, _ = uid_artifacts
    out = tmp_path / "out"
    res = CliRunner().invoke(cli.app, ["run", "--model", "uid", "--capture", str(pixel_capture), "--artifact", str(art),
                                       "--out", str(out), "--focus", "10,10"])
    assert res.exit_code == 0, res.output
    assert {p.name for p in out.iterdir()} == {"all_in_focus.png", "refocused.png", "defocus.png", "comparison.png", "run.json"}
    import cv2
    img = cv2.imread(str(out / "all_in_focus.png"), cv2.IMREAD_UNCHANGED)
    assert img.dtype == np.uint16 and img.shape == (48, 80, 3)


def test_run_json_records_levels_guesses_and_every_processing_step(pixel_capture, uid_artifacts, tmp_path):
    import json

    _, art, _ = uid_artifacts
    out = tmp_path / "out"
    res = CliRunner().invoke(cli.app, ["run", "--model", "uid", "--capture", str(pixel_capture), "--artifact", str(art),
                                       "--out", str(out)])
    assert res.exit_code == 0, res.output
    rec = json.loads((out / "run.json").read_text())
    cap = rec["capture_record"]
    assert rec["transfer"] == "linear" and not any("linearised" in step for step in rec["processing"])  # raw views
    assert cap["black_level_code"] == 64.0 and cap["white_level"] == 65535
    assert cap["level_sources"]["white_level"] == "PGM header maxval 65535"
    assert cap["guesses"][0].startswith("black_level 4099.94: nominal black level of the Pixel DP capture app")
    steps = rec["processing"]
    assert steps[0].startswith("left, right: (value - 4099.94) / 61435.1, clipped to [0, 1]: black level 4099.94 "
                               "(a guess), white level 65535")
    assert "left: grey (green) view copied to 3 channels" in steps and "right: grey (green) view copied to 3 channels" in steps
    assert steps[-1] == "tiled at full resolution: 32x32 tiles, overlap 16 px, blended" and len(steps) == 4
    # the override is applied and recorded: no guess left
    out2 = tmp_path / "out2"
    res = CliRunner().invoke(cli.app, ["run", "--model", "uid", "--capture", str(pixel_capture), "--artifact", str(art),
                                       "--out", str(out2), "--black-level", "4100"])
    assert res.exit_code == 0, res.output
    rec = json.loads((out2 / "run.json").read_text())
    assert rec["capture_record"]["level_sources"]["black_level"] == "given by caller"
    assert not any(g.startswith("black_level") for g in rec["capture_record"]["guesses"])
    r = CliRunner().invoke(cli.app, ["run", "--model", "uid", "--capture", str(pixel_capture), "--artifact", str(art),
                                     "--out", str(tmp_path / "o3"), "--white-level", "100", "--black-level", "200"])
    assert r.exit_code == 2 and "--black-level 200 must be below --white-level 100" in r.output


def test_run_errors_are_clear(pixel_capture, uid_artifacts, tmp_path):
    _, art, _ = uid_artifacts
    r = CliRunner().invoke(cli.app, ["run", "--model", "rdpd", "--capture", str(pixel_capture), "--artifact", str(art),
                                     "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "artifact is of model 'uid', not 'rdpd'" in r.output
    r = CliRunner().invoke(cli.app, ["run", "--model", "uid", "--capture", str(pixel_capture), "--artifact", str(art),
                                     "--out", str(tmp_path / "y"), "--focus", "500,5"])
    assert r.exit_code == 2 and "outside" in r.output
    runner = load(art)
    bad = {n: np.zeros(s, np.float32) for n, s in runner.shapes.items()}
    bad["left"][0, 0, 0, 0] = np.nan
    with pytest.raises(RunnerError, match="NaN"):
        runner(bad)
    with pytest.raises(RunnerError, match="expects"):
        runner({n: np.zeros((1, 3, 16, 16) if n != "focus_mask" else (1, 1, 16, 16), np.float32) for n in runner.shapes})
    with pytest.raises(RunnerError, match="manifest.json: missing"):
        load(tmp_path)


def test_dc2_runs_on_a_uw_w_bundle(tmp_path):
    """A UW+W bundle (16-bit PNGs, 16-bit disparity PNG with its range, meta.json) from the engine
    goes through alignment, defocus maps and DC2 (tiny checkpoint), and the aperture matters."""
    import json

    import cv2

    from calibration.cameras import get_pair
    from synth.dual_camera import make_dual_camera_sample
    from synth.writers import write_png16

    pair = get_pair("phone_w_uw")
    h, w = 64, 96
    scene = random_scene("dead_leaves", 2 * h, 2 * w, seed=5, near_m=0.4, far_m=8)
    s = make_dual_camera_sample(scene, pair["wide"], pair["ultrawide"], rng=np.random.default_rng(2),
                                baseline_mm=12, size=(h, w), device="cpu")
    b = tmp_path / "bundle"
    write_png16(b / "wide.png", s.wide)
    write_png16(b / "ultrawide.png", s.ultrawide)
    disp = 1.0 / s.depth
    lo, hi = float(disp.min()), float(disp.max())
    cv2.imwrite(str(b / "disparity.png"), np.round((disp - lo) / (hi - lo) * 65535).astype(np.uint16))
    f_w = pair["wide"].focal_length / (pair["wide"].pixel_pitch_um * 1e-3) * s.meta["render_scale"]
    (b / "meta.json").write_text(json.dumps({"wide": {"focal_length_px": f_w}, "ultrawide": {"focal_length_px": f_w / 2},
                                             "baseline_mm": 12, "disparity": {"range": [lo, hi], "units": "1/m"}}))
    torch.manual_seed(0)
    ck = save_checkpoint(tmp_path / "dc2.safetensors", get("dc2").build("tiny"), name="dc2", variant="tiny")
    runner = TorchRunner.from_checkpoint(ck, "dc2")
    cap = open_capture(b)
    ins0, _ = run_capture.model_inputs("dc2", cap, focus=(48, 32), aperture=0.0)
    ins1, rec = run_capture.model_inputs("dc2", cap, focus=(48, 32), aperture=2.0)
    assert ins0["defocus_target"].max() == 0 and ins1["defocus_target"].max() > 0.5
    assert ins1["ultrawide"].shape == ins1["wide"].shape == (1, 3, h, w)
    out = run_capture.run(runner, "dc2", ins1)
    assert out["image"].shape == (1, 3, h, w) and out["mask_uw_half"].shape == (1, 1, h // 2, w // 2)
    # the bundle is sRGB-encoded; the model is fed the engine's linear values and its images go back to sRGB
    assert rec["transfer"] == "srgb" and any("linearised" in step for step in rec["processing"])
    np.testing.assert_allclose(ins1["wide"][0].mean(axis=(1, 2)), s.wide.reshape(-1, 3).mean(0), rtol=2e-3)
    shown = run_capture.in_capture_encoding("dc2", {"image": ins1["wide"], "mask_uw": out["mask_uw"]}, rec)
    np.testing.assert_allclose(shown["image"][0].transpose(1, 2, 0), cap.arrays["wide"], atol=1e-5)
    assert shown["mask_uw"] is out["mask_uw"]  # masks are not images: left alone
    assert ins1["defocus_wide"].max() == 0 and rec["wide_defocus"]["missing"]  # no lens state in meta.json
    r = CliRunner().invoke(cli.app, ["run", "--model", "uid", "--capture", str(b), "--checkpoint", str(ck),
                                     "--out", str(tmp_path / "o")])
    assert r.exit_code == 2  # a dc2 checkpoint asked to be uid
    r = CliRunner().invoke(cli.app, ["run", "--capture", str(b), "--checkpoint", str(ck), "--runner", "eager",
                                     "--out", str(tmp_path / "inferred")])  # no --model: the checkpoint names it
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "inferred" / "run.json").read_text())["model"] == "dc2"
    for flag, mode in (("--align-depth", "depth"), ("--no-align-depth", "dis")):  # the run records its flow
        o = tmp_path / f"run{flag}"
        r = CliRunner().invoke(cli.app, ["run", "--model", "dc2", "--capture", str(b), "--checkpoint", str(ck),
                                         "--focus", "48,32", flag, "--out", str(o), "--runner", "eager"])
        assert r.exit_code == 0, r.output
        assert json.loads((o / "run.json").read_text())["alignment"]["flow_mode"].startswith(mode)
    # with the capture's lens state, W's own defocus matches the engine's ground truth (thin lens)
    meta = json.loads((b / "meta.json").read_text())
    meta.update(focus_distance_m=s.meta["focus_distance_m"], f_number=s.meta["f_number"],
                wide={**meta["wide"], "focal_length_mm": pair["wide"].focal_length})
    (b / "meta.json").write_text(json.dumps(meta))
    ins2, rec2 = run_capture.model_inputs("dc2", open_capture(b), focus=(48, 32), aperture=2.0)
    est = ins2["defocus_wide"][0, 0] * DEFOCUS_NORM_PX
    truth = np.clip(s.defocus_wide, 0, DEFOCUS_NORM_PX)
    assert rec2["wide_defocus"]["estimate"].startswith("thin lens") and truth.max() > 2
    assert np.median(np.abs(est - truth)) < 0.05 and np.percentile(np.abs(est - truth), 99) < 0.5


@pytest.mark.slow
@pytest.mark.parametrize("target", ["executorch", "tflite"])
def test_same_capture_same_output_on_executorch_and_litert(pixel_capture, uid_artifacts, tmp_path, target):
    """The acceptance check of the runtime harness: one capture, the same outputs (fp32 parity
    threshold) through onnxruntime and through the ExecuTorch runtime / LiteRT interpreter."""
    ck, onnx_art, _ = uid_artifacts
    req = ExportRequest(model="uid", target=target, precision="fp32", height=32, width=32, variant="tiny",
                        checkpoint=ck, out=tmp_path / "artifacts", parity_count=1)
    pipeline.export_one(req)
    inputs, _ = run_capture.model_inputs("uid", open_capture(pixel_capture), focus=(40, 20))
    a = run_capture.run(load(onnx_art), "uid", inputs)
    b = run_capture.run(load(req.artifact_dir()), "uid", inputs)
    for name in a:
        mse = float(np.mean((a[name].astype(np.float64) - b[name]) ** 2))
        assert mse == 0 or 10 * np.log10(1.0 / mse) >= 60, name
