"""The held-out real set's measurement, run on its local stand-in (issue 13).

Writes a capture set in the public Pixel 4 layout with all-in-focus ground truth and the
rendering PSF as calibrated kernels (``cli.py synth --format pixel4_gt``: phone-profile scenes,
green-only 14-bit views on black 1024, dark to bright, front blur 2-9 px CoC), then scores it
the way ``cli.py evaluate --data`` scores the real set: the input (L+R)/2, unsharp masking, the
classical calibrated-kernel Wiener baseline and each DP starter (RDPD, UiD) at the views' full
size, PSNR/SSIM on linear values. Prints per-scene gains, a summary against the held-out goals
(mean >= +1 dB, SSIM above the input's, no scene below the input by more than 0.2 dB, above
the classical row), and one JSON line.

    .venv/bin/python benchmarks/bench_pixel4_proxy.py [--scenes 8] [--size 504x672] [--seed 0]
        [--data DIR] [--models rdpd,uid] [--threads 1]

This is synthetic: it shows what the models do on files in the real format at realistic blur,
exposure and noise, not what they do on the real captures.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GOAL_DB, WORST_DB = 1.0, -0.2  # the held-out goals: mean gain, worst scene


def main() -> None:
    import torch

    from core.sizes import parse_size
    from synth.pixel4_set import write_pixel4_set
    from train import evaluate_captures as ec

    ap = argparse.ArgumentParser()
    ap.add_argument("--scenes", type=int, default=8)
    ap.add_argument("--size", default="504x672")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", type=Path, default=None, help="reuse (or write) the set here (default: a temp folder)")
    ap.add_argument("--models", default="rdpd,uid")
    ap.add_argument("--checkpoints", type=Path, default=ROOT / "checkpoints")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = args.data or Path(tempfile.mkdtemp(prefix="pixel4_proxy_")) / "set"
    t0 = time.perf_counter()
    if not (data / ec.GT_FOLDER).is_dir():
        write_pixel4_set(data, args.scenes, parse_size(args.size), args.seed)
    t_write = time.perf_counter() - t0
    figures: dict = {"scenes": args.scenes, "size": args.size, "write_s": round(t_write, 1)}
    per_scene: dict = {}
    summary_rows = []
    for model in args.models.split(","):
        t = time.perf_counter()
        res = ec.evaluate_captures(model, data, checkpoint=args.checkpoints / f"{model}-mobile.safetensors",
                                   threads=args.threads)
        figures[f"{model}_seconds"] = round(time.perf_counter() - t, 1)
        inp = res["input"]
        for r in res["scenes"]:
            row = per_scene.setdefault(r["scene"], {"input_db": r["scores"][inp]["linear"]["psnr"]})
            for m, d in r["vs_input_db"].items():
                key = model if m == ec.MODEL else m.split(":")[0].split(" (")[0]
                row[key] = d["linear"]
        for m, s in res["summary"].items():
            lin = s["linear"]
            name = model if m == ec.MODEL else m.split(":")[0].split(" (")[0]
            if name in {r[0] for r in summary_rows}:
                continue
            summary_rows.append((name, lin["psnr"], lin["ssim"], lin["vs_input_db"], lin["vs_input_min"],
                                 lin["better_than_input"], res["count"]))
    base_ssim = next(r[2] for r in summary_rows if r[0].startswith("input"))
    classical = next((r for r in summary_rows if r[0] == "classical"), None)
    cols = [c for c in next(iter(per_scene.values())) if c != "input_db"]
    print(f"\nPixel 4 layout stand-in: {args.scenes} scenes of {args.size} ({data})\n")
    print("| scene | input dB | " + " | ".join(f"{c} gain" for c in cols) + " |")
    print("|---|---|" + "---|" * len(cols))
    for name, row in per_scene.items():
        print(f"| {name} | {row['input_db']:.2f} | " + " | ".join(f"{row.get(c, float('nan')):+.2f}" for c in cols) + " |")
    print("\n| method | PSNR lin | SSIM lin | vs input (mean) | worst scene | better than input | goals met |")
    print("|---|---|---|---|---|---|---|")
    for name, psnr, ssim, gain, worst, better, n in summary_rows:
        goals = ""
        if name in args.models.split(","):
            ok = [gain >= GOAL_DB, ssim > base_ssim, worst >= WORST_DB, classical is None or gain > classical[3]]
            goals = " ".join(f"{lbl} {'yes' if v else 'NO'}" for lbl, v in
                             zip(("+1dB", "SSIM", "worst>=-0.2", ">classical"), ok))
            figures[f"{name}_gain_db"] = round(gain, 2)
            figures[f"{name}_worst_db"] = round(worst, 2)
            figures[f"{name}_ssim"] = round(ssim, 4)
            figures[f"{name}_goals_met"] = all(ok)
        elif name == "classical":
            figures["classical_gain_db"] = round(gain, 2)
        elif name.startswith("unsharp"):
            figures["unsharp_gain_db"] = round(gain, 2)
        else:
            figures["input_psnr_db"] = round(psnr, 2)
            figures["input_ssim"] = round(ssim, 4)
        print(f"| {name} | {psnr:.2f} | {ssim:.4f} | {gain:+.2f} | {worst:+.2f} | {better} / {n} | {goals} |")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
