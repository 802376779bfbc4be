"""Where the starter checkpoints gain and lose on the fixed synthetic test split: a look inside
each model, to say why a quality target is missed and what a longer (GPU) run should watch.

- RDPD and UiD: PSNR gain over the blurred input per blur band (|CoC| of the pixel).
- UiD: does the kernel retrieval (seed 003) depend on the input? Entropy of the per-pixel
  mixing weights against ln N (uniform), their spread across pixels, and what the bank's
  inverse kernels alone give; the share of pixels blurred beyond the bank's kernel radius.
- DC2: W, aligned UW and the model per region (W in focus, W blurred, UW occluded) and task, the
  mean UW blending mask, and the refined UW's PSNR.
- All three: gain on examples of the training pool (seed 0, as the mobile configs) against the
  test split: is a starter overfitting its fixed pool?
- Data cost: seconds to render one training example (what ``--refresh-every`` pays per refresh)
  and host bytes per pixel of a pool example.

    .venv/bin/python benchmarks/bench_training_diagnostics.py [--count 16] [--size 128] [--profile phone]

Prints tables, then one JSON line of the figures.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from models.checkpoint import load_model  # noqa: E402
from models.registry import get, names  # noqa: E402
from train.evaluate import evaluate, forward_example, test_split  # noqa: E402
from train.loop import load_config, synthetic_example  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
COC_BANDS = ((0.0, 2.0), (2.0, 6.0), (6.0, 12.0), (12.0, 1e9))  # |CoC| in px


def psnr_where(pred: np.ndarray, target: np.ndarray, sel: np.ndarray) -> float:
    """PSNR over the pixels ``sel`` (H x W) of C x H x W images in [0, 1]."""
    mse = float(((pred - target) ** 2).mean(0)[sel].mean())
    return 10.0 * math.log10(1.0 / max(mse, 1e-12))


class Pooled:
    """Squared errors pooled over every selected pixel of the split, per (group, method): a
    region's PSNR and its share of all pixels, without small regions of one image weighing
    as much as whole images."""

    def __init__(self):
        self.sse, self.count, self.total = defaultdict(float), defaultdict(int), 0

    def add(self, group, sel: np.ndarray, target: np.ndarray, **preds: np.ndarray) -> None:
        self.count[group] += int(sel.sum())
        for method, pred in preds.items():
            self.sse[(group, method)] += float(((pred - target) ** 2).mean(0)[sel].sum())

    def share(self, group) -> float:
        return self.count[group] / max(self.total, 1)

    def psnr(self, group, method) -> float:
        return 10.0 * math.log10(self.count[group] / max(self.sse[(group, method)], 1e-12))

    def groups(self) -> list:
        return [g for g in self.count if self.count[g]]


def band_name(lo: float, hi: float) -> str:
    """A blur band of absolute CoC radius."""
    return f"CoC {lo:g}-{hi:g} px" if hi < 1e8 else f"CoC > {lo:g} px"


def add_bands(pooled: Pooled, coc: np.ndarray, target: np.ndarray, blurred: np.ndarray, pred: np.ndarray) -> None:
    pooled.total += coc.size
    for lo, hi in COC_BANDS:
        pooled.add(band_name(lo, hi), (np.abs(coc) >= lo) & (np.abs(coc) < hi), target, input=blurred, model=pred)


def rdpd_bands(model, examples) -> Pooled:
    pooled = Pooled()
    for ex in examples:
        pred = forward_example("rdpd", model, ex)["y"]
        for i in range(pred.shape[0]):
            add_bands(pooled, ex.targets["coc"][i, 0], ex.targets["y"][i], ex.targets["combined"][i], pred[i])
    return pooled


def uid_probe(model, examples) -> tuple[Pooled, dict]:
    pooled = Pooled()
    entropy, spread, bank_only, full, inp = [], [], [], [], []
    captured = {}
    apply_bank = model.bank.apply_bank

    def spy(image, kernels, weights):  # the first call of a forward pass is the deblurring one
        out = apply_bank(image, kernels, weights)
        captured.setdefault("deblur", (out, weights))
        return out

    model.bank.apply_bank = spy
    try:
        for ex in examples:
            captured.clear()
            aif = forward_example("uid", model, ex)["all_in_focus"]
            deblurred, weights = captured["deblur"]
            w = weights[0].numpy()
            entropy.append(float(-(w * np.log(np.clip(w, 1e-8, None))).sum(0).mean()))
            spread.append(float(w.std(axis=(1, 2)).mean()))
            tgt = ex.targets["all_in_focus"]
            everywhere = np.ones(tgt.shape[1:], bool)
            inp.append(psnr_where(ex.targets["combined"], tgt, everywhere))
            bank_only.append(psnr_where(deblurred[0].numpy(), tgt, everywhere))
            full.append(psnr_where(aif, tgt, everywhere))
            add_bands(pooled, ex.targets["coc"][0], tgt, ex.targets["combined"], aif)
    finally:
        model.bank.apply_bank = apply_bank
    radius = model.config.kernel_size // 2
    beyond = float(np.mean([(np.abs(ex.targets["coc"][0]) > radius).mean() for ex in examples]))
    stats = {"mix_entropy": float(np.mean(entropy)), "uniform_entropy": math.log(model.config.n_kernels),
             "mix_weight_spread": float(np.mean(spread)), "input_psnr": float(np.mean(inp)),
             "bank_only_psnr": float(np.mean(bank_only)), "model_psnr": float(np.mean(full)),
             "kernel_radius_px": radius, "share_beyond_kernel": beyond}
    return pooled, stats


def dc2_probe(model, examples) -> tuple[Pooled, dict]:
    pooled = {"all-in-focus": Pooled(), "refocus": Pooled()}
    masks, refined_uw = defaultdict(list), defaultdict(list)
    for ex in examples:
        task = "all-in-focus" if ex.meta.get("all_in_focus") else "refocus"
        out = forward_example("dc2", model, ex)
        tgt, w, uw = ex.targets["image"], ex.inputs["wide"], ex.inputs["ultrawide"]
        pred = out["image"]
        dw = ex.inputs["defocus_wide"][0] * 10.0  # back to |CoC| px (DEFOCUS_NORM_PX)
        occ = ex.targets["occlusion"][0] > 0.5
        regions = {"W in focus (<0.5 px)": (dw < 0.5) & ~occ, "W blurred (>3 px)": (dw > 3.0) & ~occ,
                   "UW occluded": occ, "all": np.ones_like(occ)}
        pooled[task].total += occ.size
        for name, sel in regions.items():
            pooled[task].add(name, sel, tgt, W=w, UW=uw, model=pred)
        masks[task].append(float(out["mask_uw"].mean()))
        refined_uw[task].append(psnr_where(out["refined_uw"], tgt, np.ones_like(occ)))
    stats = {f"{task}_mask_uw_mean": float(np.mean(v)) for task, v in masks.items()}
    stats.update({f"{task}_refined_uw_psnr": float(np.mean(v)) for task, v in refined_uw.items()})
    return pooled, stats


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=16)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--pool-count", type=int, default=12, help="examples of the pool and of the split compared")
    ap.add_argument("--checkpoints", type=Path, default=ROOT / "checkpoints")
    ap.add_argument("--profile", default=None, help="the test split's data profile (synth.profiles; default: the original split)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    figures: dict[str, float] = {}
    load = lambda name: load_model(args.checkpoints / f"{name}-mobile.safetensors", expected_model=name)[0].float().eval()

    print(f"## Gain over the blurred input per blur band ({args.count} test examples of {args.size}x{args.size}; "
          "PSNR of the squared error pooled over the band's pixels)\n")
    print("| model | band | share of pixels | input dB | model dB | gain dB |\n|---|---|---|---|---|---|")
    bands = {"rdpd": rdpd_bands(load("rdpd"), test_split("rdpd", args.count, args.size, profile=args.profile))}
    uid_bands, uid_stats = uid_probe(load("uid"), test_split("uid", args.count, args.size, profile=args.profile))
    bands["uid"] = uid_bands
    for name, pooled in bands.items():
        for band in pooled.groups():
            before, after = pooled.psnr(band, "input"), pooled.psnr(band, "model")
            print(f"| {name} | {band} | {pooled.share(band):.2f} | {before:.2f} | {after:.2f} | {after - before:+.2f} |")
            key = band.replace("CoC ", "coc_").replace(" px", "").replace("> ", "over_")
            figures[f"{name}_gain_db_{key}"] = round(after - before, 2)

    print("\n## UiD kernel retrieval\n")
    s = uid_stats
    print(f"mixing entropy {s['mix_entropy']:.3f} (uniform over {load('uid').config.n_kernels} kernels: "
          f"{s['uniform_entropy']:.3f}); per-kernel weight spread across pixels {s['mix_weight_spread']:.4f}")
    print(f"PSNR: input {s['input_psnr']:.2f}, bank inverses alone {s['bank_only_psnr']:.2f}, model {s['model_psnr']:.2f} dB; "
          f"{100 * s['share_beyond_kernel']:.0f} % of pixels blurred beyond the bank's {s['kernel_radius_px']} px kernel radius")
    figures.update({"uid_mix_entropy": round(s["mix_entropy"], 3), "uid_uniform_entropy": round(s["uniform_entropy"], 3),
                    "uid_bank_only_gain_db": round(s["bank_only_psnr"] - s["input_psnr"], 2),
                    "uid_share_beyond_kernel": round(s["share_beyond_kernel"], 2)})

    print("\n## DC2 per region\n")
    print("| task | region | share | W dB | aligned UW dB | model dB |\n|---|---|---|---|---|---|")
    per_task, dstats = dc2_probe(load("dc2"), test_split("dc2", args.count, args.size, profile=args.profile))
    for task, pooled in per_task.items():
        for region in pooled.groups():
            w, uw, pred = (pooled.psnr(region, m) for m in ("W", "UW", "model"))
            print(f"| {task} | {region} | {pooled.share(region):.2f} | {w:.2f} | {uw:.2f} | {pred:.2f} |")
            key = region.split(" (")[0].lower().replace(" ", "_")
            figures[f"dc2_{task}_{key}_model_minus_w_db"] = round(pred - w, 2)
    print("\n" + ", ".join(f"{k} {v:.3f}" for k, v in dstats.items()))
    figures.update({f"dc2_{k}": round(v, 3) for k, v in dstats.items()})

    print(f"\n## Training pool against test split (gain over the input, dB; {args.pool_count} examples each)\n")
    print("| model | task | pool examples | test split | pool - test |\n|---|---|---|---|---|")
    for name in names():
        cfg = load_config(name, "mobile", {"device": "cpu", "pool_image": args.size, "patch": 16 * (args.size // 16)})
        pool = [synthetic_example(cfg, i) for i in range(args.pool_count)]  # the mobile run's first pool slots
        model = load(name)
        gains = []
        for examples in (pool, test_split(name, args.pool_count, args.size)):
            scores = evaluate(name, model, examples, wiener=False)
            baseline = {t.name: t.before_label for t in get(name).eval_tasks}  # the do-nothing input of each task
            gains.append({task: d["model"]["psnr"] - d[baseline[task]]["psnr"] for task, d in scores.items()})
        for task in gains[1]:
            gap = gains[0][task] - gains[1][task]
            print(f"| {name} | {task} | {gains[0][task]:+.2f} | {gains[1][task]:+.2f} | {gap:+.2f} |")
            figures[f"{name}_{task}_pool_minus_test_gain_db"] = round(gap, 2)
    print(f"\n## Data cost: rendering one {args.size}x{args.size} example on one thread (median of 4), pool memory\n")
    print("| model | render s | bytes per pixel |\n|---|---|---|")
    torch.set_num_threads(1)
    for name in names():
        cfg = load_config(name, "mobile", {"device": "cpu", "pool_image": args.size, "patch": 16 * (args.size // 16)})
        seconds = []
        for i in range(4):
            t0 = time.perf_counter()
            ex = synthetic_example(cfg, i, generation=1)  # fresh scenes, as a refresh renders
            seconds.append(time.perf_counter() - t0)
        per_pixel = sum(v.nbytes for d in (ex.inputs, ex.targets) for v in d.values()) / args.size ** 2
        print(f"| {name} | {np.median(seconds):.2f} | {per_pixel:.0f} |")
        figures[f"{name}_render_s"] = round(float(np.median(seconds)), 3)
        figures[f"{name}_pool_bytes_per_pixel"] = round(per_pixel)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
