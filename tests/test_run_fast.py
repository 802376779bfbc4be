"""cli.py run --checkpoint through a cached on-the-fly export: parity with the eager model,
cache hits and rebuilds, threads reaching the runtime, tile fitting, memory bounded by the tile."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import cli
from calibration.cameras import get_camera
from export.request import MIN_PSNR
from core.metrics import psnr
from models.checkpoint import save_checkpoint
from models.registry import get
from runtime_py import run_capture
from runtime_py.captures import open_capture
from runtime_py.export_cache import PRECISION
from runtime_py.tiling import fit_tile, tile_starts
from synth.dp_sample import make_dp_sample
from synth.scenes import random_scene
from synth.writers import write_pixel_sample

ROOT = Path(__file__).resolve().parents[1]
TILE, OVERLAP = 64, 16  # 96x160 capture -> 64x64 tiles (2 x 3): a real tiled run at a tiny size


def _capture(root: Path, h: int, w: int) -> Path:
    cam = get_camera("pixel4_dp")
    scene = random_scene("mixed", h, w, seed=3, near_m=0.2, far_m=10)
    write_pixel_sample(root, 0, make_dp_sample(scene, cam, rng=np.random.default_rng(0), device="cpu"), cam)
    return root


def _checkpoint(path: Path, seed: int) -> Path:
    """RDPD tiny with every weight random (the residual head too: not the identity at init)."""
    torch.manual_seed(seed)
    net = get("rdpd").build("tiny")
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.2)
    return save_checkpoint(path, net, name="rdpd", variant="tiny")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("fast")
    return _capture(root / "cap", 96, 160), _checkpoint(root / "rdpd-tiny.safetensors", 0), root / "cache"


def _run(capture, ckpt, cache, out, *extra):
    res = CliRunner().invoke(cli.app, ["run", "--model", "rdpd", "--capture", str(capture), "--checkpoint", str(ckpt),
                                       "--out", str(out), "--tile", "128", "--cache-dir", str(cache),
                                       "--threads", "1", *extra])
    assert res.exit_code == 0, res.output
    return json.loads((out / "run.json").read_text())


def test_fit_tile_covers_the_axis_with_fewer_pixels():
    assert fit_tile(1512, 768, 64, 16) == 560 and fit_tile(2016, 768, 64, 16) == 720
    assert fit_tile(300, 768, 64, 16) == 304  # one tile: the axis rounded up (reflect-padded)
    for size, tile, ov in [(1512, 512, 64), (97, 64, 16), (2016, 768, 64), (1000, 256, 64)]:
        t = fit_tile(size, tile, ov, 16)
        starts = tile_starts(size, t, ov)
        assert t % 16 == 0 and t <= tile and starts[-1] + t == size
        assert len(starts) == len(tile_starts(size, tile, ov))  # as few tiles as the largest tile needs
        assert all(b - a <= t - ov for a, b in zip(starts, starts[1:]))  # every seam keeps the overlap


def _pinned(runner, like):
    """The eager runner pinned to ``like``'s tile size and I/O: it takes the same tiling path."""
    runner.manifest = {**runner.manifest, "size": like.manifest["size"]}
    runner.shapes = like.shapes
    return runner


def test_tiles_through_the_cached_onnx_export_equal_eager_tiles_within_fp32_parity(setup):
    capture, ckpt, cache = setup
    inputs, _ = run_capture.model_inputs("rdpd", open_capture(capture))
    size = inputs["x"].shape[-2:]
    fast, chosen = run_capture.open_runner("rdpd", size, checkpoint=ckpt, tile=TILE, overlap=OVERLAP,
                                           cache_dir=cache, threads=1)
    eager, how = run_capture.open_runner("rdpd", size, checkpoint=ckpt, runner="eager", threads=1)
    assert chosen["tile"] == [64, 64] and "onnxruntime" in chosen["runtime"] and how["choice"] == "eager"
    done = []
    y = run_capture.run(fast, "rdpd", inputs, overlap=OVERLAP, progress=lambda i, n: done.append((i, n)))["y"]
    ref = run_capture.run(_pinned(eager, fast), "rdpd", inputs, overlap=OVERLAP)["y"]
    assert done == [(i, 6) for i in range(1, 7)]  # the progress callback sees every tile
    before = 0.5 * (inputs["x"][:, :3] + inputs["x"][:, 3:6])
    assert psnr(before, ref) < MIN_PSNR[PRECISION] - 10  # the net changes the image far more than the tolerance
    assert psnr(y, ref) >= MIN_PSNR[PRECISION], psnr(y, ref)


def test_the_tile_overlap_covers_rdpd_mobiles_receptive_field(tmp_path):
    """The starter checkpoint tiled (256 px tiles at most, the run's overlap) against the whole
    image: within the fp32 parity threshold, so the tiling adds no error a runner must not."""
    ckpt = ROOT / "checkpoints" / "rdpd-mobile.safetensors"
    inputs, _ = run_capture.model_inputs("rdpd", open_capture(_capture(tmp_path / "cap", 256, 448)))
    eager, _ = run_capture.open_runner("rdpd", (256, 448), checkpoint=ckpt, runner="eager", threads=2)
    whole = run_capture.run(eager, "rdpd", inputs)["y"]
    th, tw = (fit_tile(n, 256, run_capture.OVERLAP, 16) for n in (256, 448))
    assert (th, tw) == (256, 256)  # two tiles side by side, overlapping by 64 px
    tiles = eager.__class__.from_checkpoint(ckpt, "rdpd")
    tiles.manifest["size"] = [th, tw]
    tiles.shapes = {k: tuple(v) for k, v in get("rdpd").input_shapes("mobile", th, tw).items()}
    tiled = run_capture.run(tiles, "rdpd", inputs)["y"]
    assert psnr(tiled, whole) >= MIN_PSNR[PRECISION], psnr(tiled, whole)
    small = run_capture.run(tiles, "rdpd", inputs, overlap=8)["y"]  # the check can fail: too little overlap
    assert psnr(small, whole) < psnr(tiled, whole)


def test_second_run_hits_the_cache_and_a_new_checkpoint_is_exported_again(setup, tmp_path):
    capture, _, _ = setup
    cache = tmp_path / "cache"
    ckpt = _checkpoint(tmp_path / "rdpd-tiny.safetensors", 1)
    first = _run(capture, ckpt, cache, tmp_path / "a")["runner"]
    model_file = Path(first["artifact"]) / "model.onnx"
    mtime = model_file.stat().st_mtime_ns
    second = _run(capture, ckpt, cache, tmp_path / "b")["runner"]
    assert (first["cache"], second["cache"]) == ("miss", "hit") and second["artifact"] == first["artifact"]
    assert model_file.stat().st_mtime_ns == mtime and second["export_s"] == 0
    y_b = (tmp_path / "b" / "y.png").read_bytes()
    _checkpoint(ckpt, 2)  # other weights under the same name: the cached export is stale
    third = _run(capture, ckpt, cache, tmp_path / "c")["runner"]
    assert third["cache"] == "miss" and third["key"] != first["key"]
    assert json.loads((Path(third["artifact"]) / "manifest.json").read_text())["checkpoint"]["sha256"] != \
        json.loads((Path(first["artifact"]) / "manifest.json").read_text())["checkpoint"]["sha256"]
    assert (tmp_path / "c" / "y.png").read_bytes() != y_b
    # a cached folder that lost its model file is rebuilt, not trusted
    Path(third["artifact"], "model.onnx").unlink()
    fourth = _run(capture, ckpt, cache, tmp_path / "d")["runner"]
    assert fourth["cache"] == "miss" and "model file missing" in fourth["reason"]
    assert Path(fourth["artifact"], "model.onnx").is_file()


# What a warm `run --checkpoint` (cache hit, ONNX on onnxruntime) must not import: PyTorch (1.5-2 s of
# a 3 MP run's ~4 s), the export pipeline and the converters.
WARM_FORBIDDEN = ("torch", "safetensors.torch", "export.pipeline", "coremltools", "executorch", "ai_edge_torch",
                  "litert_torch", "tensorflow", "onnxscript")
_WARM = ("import atexit, json, runpy, sys; "
         "atexit.register(lambda: print('MODULES ' + json.dumps(sorted(sys.modules)))); "
         "sys.argv = ['cli.py', *sys.argv[1:]]; runpy.run_path('cli.py', run_name='__main__')")


def test_a_cache_hit_imports_neither_torch_nor_a_converter(setup, tmp_path):
    capture, ckpt, cache = setup
    args = ["run", "--model", "rdpd", "--capture", str(capture), "--checkpoint", str(ckpt), "--tile", "128",
            "--cache-dir", str(cache), "--threads", "1"]
    _run(capture, ckpt, cache, tmp_path / "cold")  # fills the cache (or hits it)
    p = subprocess.run([sys.executable, "-c", _WARM, *args, "--out", str(tmp_path / "warm")], cwd=ROOT,
                       capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert p.returncode == 0, p.stderr[-2000:] + p.stdout[-2000:]
    assert json.loads((tmp_path / "warm" / "run.json").read_text())["runner"]["cache"] == "hit"
    modules = json.loads(p.stdout.split("MODULES ", 1)[1])
    assert "onnxruntime" in modules  # the check sees the process's imports
    assert not [m for m in modules if m in WARM_FORBIDDEN or m.split(".")[0] in WARM_FORBIDDEN]


def test_threads_reach_the_runtime(setup):
    capture, ckpt, cache = setup
    fast, chosen = run_capture.open_runner("rdpd", (96, 160), checkpoint=ckpt, tile=TILE, overlap=OVERLAP,
                                           cache_dir=cache, threads=3)
    opts = fast._backend.session.get_session_options()  # 2 x 3 tiles: three side by side, one thread each
    assert opts.intra_op_num_threads == 1 and chosen["threads"] == 3 and chosen["tile_workers"] == 3
    whole, chosen = run_capture.open_runner("rdpd", (96, 160), checkpoint=ckpt, tile=256, overlap=OVERLAP,
                                            cache_dir=cache, threads=3)  # one tile: its threads inside it
    assert whole._backend.session.get_session_options().intra_op_num_threads == 3 and chosen["tile_workers"] == 1
    art, chosen = run_capture.open_runner("rdpd", (96, 160), artifact=Path(chosen["artifact"]), threads=2)
    assert chosen["tile_workers"] == 1  # an artifact of the image's size: one tile, two threads inside it
    assert art._backend.session.get_session_options().intra_op_num_threads == 2
    art, chosen = run_capture.open_runner("rdpd", (192, 320), artifact=Path(chosen["artifact"]), threads=2)
    assert chosen["tile_workers"] == 2 and art._backend.session.get_session_options().intra_op_num_threads == 1
    before = torch.get_num_threads()
    try:
        run_capture.open_runner("rdpd", (96, 160), checkpoint=ckpt, runner="eager", threads=1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_runner_errors_are_clear(setup, tmp_path):
    capture, ckpt, cache = setup
    for extra, words in ((["--runner", "fastest"], "is not a runner"), (["--runner", "coreml"], "cannot run fp32 here"),
                         (["--tile", "16"], "at least twice the tile overlap")):
        res = CliRunner().invoke(cli.app, ["run", "--model", "rdpd", "--capture", str(capture), "--checkpoint",
                                           str(ckpt), "--out", str(tmp_path / "o"), "--cache-dir", str(cache), *extra])
        assert res.exit_code == 2 and words in res.output, res.output
    assert not (tmp_path / "o").exists()


_PEAK = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, capture_output=True); "
         "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")


@pytest.mark.slow
def test_peak_memory_is_bounded_by_the_tile_not_the_image(setup, tmp_path):
    """Tiled: the peak grows only by the image-sized buffers (inputs, one output, PNGs), a few
    tens of bytes per pixel; whole-image eager grows by the network's activations."""
    _, _, cache = setup
    ckpt = ROOT / "checkpoints" / "rdpd-mobile.safetensors"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    peaks = {}
    for size in ((256, 384), (768, 1024)):
        cap = _capture(tmp_path / f"cap{size[0]}", *size)
        for runner in ("auto", "eager"):
            cmd = [sys.executable, str(ROOT / "cli.py"), "run", "--model", "rdpd", "--capture", str(cap),
                   "--checkpoint", str(ckpt), "--out", str(tmp_path / f"o{size[0]}{runner}"), "--tile", "256",
                   "--cache-dir", str(cache), "--runner", runner, "--threads", "1"]
            out = subprocess.run([sys.executable, "-c", _PEAK, *cmd], env=env, capture_output=True, text=True, cwd=ROOT)
            assert out.returncode == 0, out.stderr[-2000:]
            peaks[size, runner] = int(out.stdout.split()[-1]) * 1024
    px = 768 * 1024 - 256 * 384
    tiled = (peaks[(768, 1024), "auto"] - peaks[(256, 384), "auto"]) / px
    eager = (peaks[(768, 1024), "eager"] - peaks[(256, 384), "eager"]) / px
    assert tiled < 120 and tiled < eager / 3, (tiled, eager)
