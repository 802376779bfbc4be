"""Can a variant fit? Overfit one fixed training batch from a fresh init and report the PSNR gain
over the blurred input after N steps, per RDPD width setting. A net too thin where deblurring
happens (full resolution) barely moves even on a single batch; this picked RDPD mobile's widths.

    .venv/bin/python benchmarks/bench_capacity.py --steps 150

Prints a table, then one JSON line of the figures.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.complexity import count_macs, count_params  # noqa: E402
from models.rdpd import RDPD, RDPDConfig  # noqa: E402
from models.rdpd_spec import SPEC as RDPD_SPEC  # noqa: E402
from core import metrics  # noqa: E402
from train.loop import build_pool, draw_batch, load_config  # noqa: E402

SETTINGS = {"x0.25 (8,16,32,64)": (8, 16, 32, 64), "mobile (16,32,48,64)": (16, 32, 48, 64)}


def fit(widths, ins, tgs, steps: int, lr: float) -> tuple[float, float]:
    torch.manual_seed(0)
    model = RDPD(RDPDConfig(widths=widths, bottleneck=128, residual=True)).train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = RDPD_SPEC.loss({"y": model.run_sequence(ins["x"])}, tgs)["loss"]  # custom widths: no registry variant
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        pred = model.eval().run_sequence(ins["x"])
    return metrics.psnr(pred.numpy(), tgs["y"].numpy()), time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--patch", type=int, default=64)
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = load_config("rdpd", "mobile", {"pool_size": 2, "patch": args.patch, "batch_size": 2})
    ins, tgs = draw_batch(build_pool(cfg), cfg, 0)
    x = ins["x"]
    base = metrics.psnr((0.5 * (x[:, :, :3] + x[:, :, 3:6])).numpy(), tgs["y"].numpy())
    rows, figures = [], {"input_psnr_db": round(base, 2), "steps": args.steps}
    for name, widths in SETTINGS.items():
        psnr, secs = fit(widths, ins, tgs, args.steps, args.lr)
        net = RDPD(RDPDConfig(widths=widths, bottleneck=128, residual=True)).eval()
        h, c = net.init_state(1, 512, 512)
        gmac = count_macs(net, [torch.zeros(1, 7, 512, 512), h, c]) / 1e9
        rows.append((name, count_params(net) / 1e6, gmac, psnr, psnr - base, secs))
        figures[f"gain_db_{widths[0]}"] = round(psnr - base, 2)
    print(f"RDPD overfitting one batch (2 clips x 4 frames, {args.patch}x{args.patch}), {args.steps} steps, "
          f"Adam {args.lr}, fresh init; input PSNR {base:.2f} dB")
    print(f"{'widths':22s} {'params M':>8s} {'GMAC@512':>8s} {'PSNR':>7s} {'gain dB':>8s} {'s':>6s}")
    for r in rows:
        print(f"{r[0]:22s} {r[1]:8.3f} {r[2]:8.1f} {r[3]:7.2f} {r[4]:+8.2f} {r[5]:6.0f}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
