"""Training: losses, metrics, the loop (loss goes down, exact resume) and checkpoint errors."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models.checkpoint import CheckpointError, load_model, read_checkpoint, save_checkpoint
from models.registry import get
from core import metrics
from models import losses
from train.loop import CONFIG_DIR, build_pool, draw_batch, load_config, refresh_slot, slot_generation, train


def test_edge_loss_zero_for_identical_and_grows_with_blur():
    x = torch.rand(1, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    assert losses.edge_loss(x, x).item() == 0.0
    blurs = [F.avg_pool2d(x, k, 1, k // 2) for k in (3, 5, 9)]
    values = [losses.edge_loss(b, x).item() for b in blurs]
    assert 0 < values[0] < values[1] < values[2]


def test_metrics_known_values():
    a = torch.zeros(1, 3, 16, 16)
    b = torch.full((1, 3, 16, 16), 0.1)
    assert metrics.psnr(a, b) == pytest.approx(20.0)
    assert metrics.mae(a, b) == pytest.approx(0.1)
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    assert metrics.ssim(x, x) == pytest.approx(1.0)
    assert metrics.ssim(F.avg_pool2d(x, 5, 1, 2), x) < 0.9


@pytest.mark.parametrize("model,lr,steps,ratio", [("rdpd", 3e-3, 50, 0.99), ("dc2", 3e-4, 40, 0.9),
                                                  ("uid", 2e-3, 25, 0.9)])
def test_few_steps_reduce_loss_on_a_fixed_batch(model, lr, steps, ratio):
    """Loss in eval mode (no dropout) before and after a few Adam steps on one batch. RDPD's
    mobile/tiny head starts as the identity on the combined view, so its first steps gain little:
    a smaller (but non-zero) reduction is asked of it."""
    from train.loop import compute_loss

    cfg = load_config(model, "tiny", {"pool_size": 2, "batch_size": 2})
    torch.manual_seed(0)
    net = get(model).build("tiny")
    pool = build_pool(cfg)
    ins, tgs = draw_batch(pool, cfg, step=0)

    def eval_loss():
        net.eval()
        with torch.no_grad():
            return compute_loss(model, net, ins, tgs)["loss"].item()

    before = eval_loss()
    net.train()
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    for _ in range(steps):
        loss = compute_loss(model, net, ins, tgs)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert eval_loss() < ratio * before


def test_data_order_is_a_function_of_step():
    cfg = load_config("uid", "tiny", {"pool_size": 3})
    pool = build_pool(cfg)
    a, _ = draw_batch(pool, cfg, 7)
    b, _ = draw_batch(pool, cfg, 7)
    c, _ = draw_batch(pool, cfg, 8)
    assert torch.equal(a["left"], b["left"]) and not torch.equal(a["left"], c["left"])


def test_resume_equals_uninterrupted_run_bit_for_bit(tmp_path):
    over = {"steps": 8, "checkpoint_every": 4, "pool_size": 2}
    full = load_config("rdpd", "tiny", {**over, "out": str(tmp_path / "full")})
    train(full, log=lambda s: None)
    part = load_config("rdpd", "tiny", {**over, "out": str(tmp_path / "part")})
    train(part, log=lambda s: None, stop_after=6)  # "killed" at step 6: last checkpoint is step 4
    assert json.loads((part.run_dir / "state.json").read_text())["step"] == 4
    train(part, resume=True, log=lambda s: None)
    a, _ = read_checkpoint(full.run_dir / "last.safetensors")
    b, meta = read_checkpoint(part.run_dir / "last.safetensors")
    assert meta["steps"] == 8
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_slot_generation_counts_round_robin_refreshes():
    # refreshes 1..7 replace slots 0, 1, 2, 0, 1, 2, 0 of a 3-slot pool
    assert [slot_generation(i, 7, 3) for i in range(3)] == [3, 2, 2]
    assert [slot_generation(i, 0, 3) for i in range(3)] == [0, 0, 0]
    assert [slot_generation(i, 2, 3) for i in range(3)] == [1, 1, 0]


def test_pool_built_at_a_step_equals_the_refreshed_pool():
    """The pool a resumed run rebuilds at step s is the one the uninterrupted run refreshed into."""
    cfg = load_config("uid", "tiny", {"pool_size": 2, "refresh_every": 2})
    pool = build_pool(cfg)
    first = pool[0].inputs["left"].copy()
    for step in range(1, 7):  # refreshes at steps 2, 4 and 6: slots 0, 1, 0
        refresh_slot(pool, cfg, step)
    rebuilt = build_pool(cfg, start_step=6)
    assert not np.array_equal(pool[0].inputs["left"], first)  # the slot really holds a new scene
    for a, b in zip(pool, rebuilt):
        assert np.array_equal(a.inputs["left"], b.inputs["left"])
        assert np.array_equal(a.targets["refocused"], b.targets["refocused"])


def test_resume_with_pool_refreshes_equals_uninterrupted_run(tmp_path):
    over = {"steps": 8, "checkpoint_every": 3, "pool_size": 2, "refresh_every": 3}
    full = load_config("rdpd", "tiny", {**over, "out": str(tmp_path / "full")})
    train(full, log=lambda s: None)
    part = load_config("rdpd", "tiny", {**over, "out": str(tmp_path / "part")})
    train(part, log=lambda s: None, stop_after=5)  # killed at step 5; resumes at 3, a refresh step
    train(part, resume=True, log=lambda s: None)
    logged = [int(line.split(",")[0]) for line in (part.run_dir / "metrics.csv").read_text().splitlines()[1:]]
    assert logged == sorted(set(logged))  # rows logged after the last checkpoint were dropped, not repeated
    fixed = load_config("rdpd", "tiny", {**over, "refresh_every": 0, "out": str(tmp_path / "fixed")})
    train(fixed, log=lambda s: None)
    a, _ = read_checkpoint(full.run_dir / "last.safetensors")
    b, _ = read_checkpoint(part.run_dir / "last.safetensors")
    c, _ = read_checkpoint(fixed.run_dir / "last.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)  # the refreshes changed what was learned


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_config_file_loads_and_names_a_real_variant(path):
    model, variant = path.stem.split("-", 1)
    cfg = load_config(model, variant)
    assert variant in get(model).variants
    assert cfg.patch % 16 == 0 and cfg.patch <= cfg.pool_image


def test_checkpoint_errors(tmp_path):
    net = get("uid").build("tiny")
    path = save_checkpoint(tmp_path / "uid.safetensors", net, name="uid", variant="tiny")
    model, meta = load_model(path)
    assert meta["model"] == "uid"
    with pytest.raises(CheckpointError, match="of model 'uid', not 'rdpd'"):
        load_model(path, expected_model="rdpd")
    blob = bytearray(path.read_bytes())
    blob[-10] ^= 0xFF
    path.write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="sha256"):
        load_model(path)
    # a checkpoint whose keys do not fit its declared model
    other = save_checkpoint(tmp_path / "wrong.safetensors", {"foo.weight": torch.zeros(2)}, name="uid", variant="tiny")
    with pytest.raises(CheckpointError, match="unknown keys \\['foo.weight'\\]"):
        load_model(other)
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "missing.safetensors")


def test_resume_without_a_run_is_a_clear_error(tmp_path):
    cfg = load_config("uid", "tiny", {"out": str(tmp_path)})
    with pytest.raises(CheckpointError, match="nothing to resume"):
        train(cfg, resume=True, log=lambda s: None)


def test_warm_start_loads_the_checkpoint_and_rejects_another_model(tmp_path):
    torch.manual_seed(123)
    src = get("rdpd").build("tiny")
    path = save_checkpoint(tmp_path / "start.safetensors", src, name="rdpd", variant="tiny")
    over = {"steps": 1, "lr": 0.0, "pool_size": 1, "out": str(tmp_path / "runs"), "init": str(path)}
    cfg = load_config("rdpd", "tiny", over)
    train(cfg, log=lambda s: None)
    trained, _ = read_checkpoint(cfg.run_dir / "last.safetensors")
    for k, v in src.state_dict().items():  # lr 0: the run's weights are the warm-start weights
        assert torch.equal(trained[k], v), k
    uid = save_checkpoint(tmp_path / "uid.safetensors", get("uid").build("tiny"), name="uid", variant="tiny")
    with pytest.raises(CheckpointError, match="of model 'uid', not 'rdpd'"):
        train(load_config("rdpd", "tiny", {**over, "init": str(uid), "out": str(tmp_path / "b")}), log=lambda s: None)
    mobile = save_checkpoint(tmp_path / "m.safetensors", get("rdpd").build("mobile"), name="rdpd", variant="mobile")
    with pytest.raises(CheckpointError, match="rdpd-mobile, the run trains rdpd-tiny"):
        train(load_config("rdpd", "tiny", {**over, "init": str(mobile), "out": str(tmp_path / "c")}), log=lambda s: None)


def test_oracle_pick_takes_the_closer_input_per_pixel():
    from train.evaluate import oracle_pick

    rng = np.random.default_rng(0)
    target = rng.random((3, 8, 8)).astype(np.float32)
    a, b = target.copy(), target.copy()
    a[:, :, 4:] += 0.3  # a is wrong on the right half, b on the left half
    b[:, :, :4] -= 0.2
    assert np.array_equal(oracle_pick(a, b, target), target)
    assert np.array_equal(oracle_pick(a, a, target), a)


def test_ddp_on_two_cpu_processes_equals_one_process_on_both_batches(tmp_path):
    """torchrun + gloo: DDP averages the two ranks' gradients, so its weights equal one process
    stepping on the union of the two ranks' batches (same init, same Adam)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from train.loop import compute_loss

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "cli.py", "train",
           "--model", "rdpd", "--variant", "tiny", "--steps", "3", "--device", "cpu", "--out", str(tmp_path)]
    r = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert r.stdout.count("done 3 steps") == 1  # rank 0 alone reports
    ddp, _ = read_checkpoint(tmp_path / "rdpd-tiny" / "last.safetensors")

    cfg = load_config("rdpd", "tiny", {"steps": 3, "device": "cpu"})
    torch.manual_seed(cfg.seed)
    model = get("rdpd").build("tiny").train()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    pool = build_pool(cfg)
    for step in range(3):
        batches = [draw_batch(pool, cfg, step, rank) for rank in (0, 1)]
        ins = {k: torch.cat([b[0][k] for b in batches]) for k in batches[0][0]}
        tgs = {k: torch.cat([b[1][k] for b in batches]) for k in batches[0][1]}
        opt.zero_grad()
        compute_loss("rdpd", model, ins, tgs)["loss"].backward()
        opt.step()
    for k, v in model.state_dict().items():
        torch.testing.assert_close(ddp[k], v, atol=2e-5, rtol=1e-4, msg=k)
