"""Prompted focus (issue 16): how well text, point and box prompts find the object, how much
sharper UiD makes it, and what the text encoder costs on the phone targets.

1. Text: the prompt mask head (default checkpoints/promptmask-mobile) on the held-out split
   (colour-shape pairs never seen in training, distractors sharing the colour or the shape),
   mean IoU against the true mask; the same on prompts of the training distribution; per scene
   also a prompt naming a colour-shape pair absent from it: share refused (presence < 0.5 or
   an empty mask), next to the share of true prompts accepted. Baseline in the same run: a model that finds
   the regions but ignores the text (IoU of a uniformly drawn region of the scene).
2. Point / box on every object of the scenes, on the capture's disparity (the renderer's), on
   the DP views alone (``runtime_py.dp_disparity``, what ``run`` uses without a depth map) and
   on UiD's own defocus output (GrabCut-refined); baselines: the old ``--focus x,y`` disk, the
   box itself as the mask. A refused prompt (PromptError, e.g. a textureless tap) counts as
   IoU 0; each row reports its refusal rate. ``--size 192``: the scenes scale their objects
   with the image (the CoC range stays -5..5 px).
3. Refocus: UiD (checkpoints/uid-mobile) with the point prompt's mask; gradient energy (mean
   squared Sobel) inside the mask over outside it, of the refocused image and of the input;
   their ratio > 1 means the prompted object got sharper than the rest.
4. Text encoder: ONNX and LiteRT (``export/text_encoder.py``) size, latency (median, 1 thread)
   and parity vs the PyTorch encoder in the same run.

    PYTHONPATH=. python benchmarks/bench_prompts.py [--count 40] [--no-encoder] [--only text|spatial] [--size 96] [--seed N]
Prints tables; the last line is one JSON object of the figures.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.checkpoint import load_model  # noqa: E402
from runtime_py.dp_disparity import dp_disparity  # noqa: E402
from runtime_py.prompt_run import working_size  # noqa: E402
from runtime_py.prompts import PromptError, box_prompt, box_prompt_dp, iou, point_prompt, point_prompt_dp  # noqa: E402
from synth.prompt_scenes import COLOURS, SHAPES, object_scene, prompts_for, query_embedding, render_dp  # noqa: E402


def _inner_point(m):
    dist = cv2.distanceTransform((m > 0).astype(np.uint8), cv2.DIST_L2, 3)
    y, x = np.unravel_index(np.argmax(dist), dist.shape)
    return int(x), int(y)


def _tensor(a):
    return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))[None]


def _head(net, left, right, q):
    """The mask head as ``run`` applies it: the views resampled to its working size (short side
    96, ``runtime_py.prompt_run.working_size``), the mask back to the scene's size."""
    h, w = left.shape[:2]
    wh, ww = working_size(h, w)
    fit = (lambda a: a) if (wh, ww) == (h, w) else (lambda a: cv2.resize(a, (ww, wh), interpolation=cv2.INTER_AREA))
    with torch.no_grad():
        m, p = net(_tensor(fit(left)), _tensor(fit(right)), q)
    m = m[0, 0].numpy()
    return (m if m.shape == (h, w) else cv2.resize(m, (w, h), interpolation=cv2.INTER_LINEAR)), p


def text_table(net, count: int, size: int, seed: int) -> dict:
    out = {}
    for split in ("unseen", "train"):
        rng = np.random.default_rng([seed, 11, len(split)])
        ious, chance, refused_neg, kept_pos = [], [], [], []
        for _ in range(count):
            sc = object_scene(rng, (size, size), split)
            s = render_dp(sc, rng)
            text, mask = prompts_for(sc, rng, split)
            q = torch.from_numpy(query_embedding(text).reshape(1, -1, 1, 1))
            m, p = _head(net, s.left, s.right, q)
            pred = m > 0.5
            if mask.any():
                ious.append(iou(pred, mask))
                chance.append(np.mean([iou(sc.mask(j), mask) for j in range(len(sc.objects) + 1)]))
                kept_pos.append(float(p) >= 0.5 and pred.any())
            else:
                refused_neg.append(float(p) < 0.5 or not pred.any())
            # and a prompt naming a colour-shape pair that is not in the scene: it must be refused
            present = {(o.colour, o.shape) for o in sc.objects}
            absent = [(c, sh) for c in COLOURS for sh in SHAPES if (c, sh) not in present]
            c, sh = absent[int(rng.integers(len(absent)))]
            q = torch.from_numpy(query_embedding(f"the {c} {sh}").reshape(1, -1, 1, 1))
            m, p = _head(net, s.left, s.right, q)
            refused_neg.append(float(p) < 0.5 or not bool((m > 0.5).any()))
        out[split] = {"n": len(ious), "miou": float(np.mean(ious)), "median_iou": float(np.median(ious)),
                      "chance_miou": float(np.mean(chance)), "accepted_positive": float(np.mean(kept_pos)),
                      "n_negative": len(refused_neg),
                      "refused_negative": float(np.mean(refused_neg)) if refused_neg else None}
    print(f"\ntext prompts at {size}x{size} (mask head at its working size, IoU vs the true mask; chance = a random region of the scene)")
    print(f"{'split':8} {'n':>4} {'mean IoU':>9} {'median':>7} {'chance':>7} {'pos kept':>9} {'neg refused':>12}")
    for k, v in out.items():
        neg = f"{v['refused_negative']:.2f} of {v['n_negative']}" if v["refused_negative"] is not None else "-"
        print(f"{k:8} {v['n']:4d} {v['miou']:9.3f} {v['median_iou']:7.3f} {v['chance_miou']:7.3f} "
              f"{v['accepted_positive']:9.2f} {neg:>12}")
    return out


def gradient_energy(img: np.ndarray, region: np.ndarray) -> float:
    g = img.mean(axis=-1)
    gx, gy = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3)
    return float(np.mean((gx * gx + gy * gy)[region]))


def _scored(prompt, m: np.ndarray, refused: list) -> tuple[float, np.ndarray | None]:
    """IoU of a prompt's mask with the true one; a refusal (PromptError) counts as IoU 0."""
    try:
        mask = prompt().mask
    except PromptError:
        refused.append(True)
        return 0.0, None
    refused.append(False)
    return iou(mask, m), mask


def spatial_table(uid, count: int, size: int, seed: int) -> dict:
    rng = np.random.default_rng([seed, 12])
    rows = {k: [] for k in ("point_capture", "point_dp", "point_uid", "box_capture", "box_dp", "box_uid",
                            "disk_baseline", "box_baseline")}
    refused = {k: [] for k in rows}
    seconds, prompt_seconds = [], []
    ratios, ratios_in = [], []
    k3 = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
    for _ in range(count):
        sc = object_scene(rng, (size, size), "any")
        s = render_dp(sc, rng)
        left, right = _tensor(s.left), _tensor(s.right)
        with torch.no_grad():
            defocus = uid(left, right, torch.zeros(1, 1, size, size))[2][0, 0].numpy()
        t0 = time.perf_counter()
        est = dp_disparity(s.left, s.right)
        seconds.append(time.perf_counter() - t0)
        prompt_seconds.append(0.0)
        for j in range(1, len(sc.objects) + 1):
            m = sc.mask(j)
            pt = _inner_point(m)
            ys, xs = np.nonzero(m)
            box = (xs.min() - 2, ys.min() - 2, xs.max() + 3, ys.max() + 3)
            calls = {"point_capture": lambda: point_prompt(s.coc, s.combined, pt, refine=False),
                     "point_dp": lambda: point_prompt_dp(est, s.combined, pt),
                     "point_uid": lambda: point_prompt(defocus, s.combined, pt, refine=True),
                     "box_capture": lambda: box_prompt(s.coc, s.combined, box, refine=False),
                     "box_dp": lambda: box_prompt_dp(est, s.combined, box),
                     "box_uid": lambda: box_prompt(defocus, s.combined, box, refine=True)}
            masks = {}
            for k, call in calls.items():
                t0 = time.perf_counter()
                score, masks[k] = _scored(call, m, refused[k])
                if k.endswith("_dp"):  # the DP-views point and box prompts of every object of the scene
                    prompt_seconds[-1] += time.perf_counter() - t0
                rows[k].append(score)
            disk = np.zeros_like(m)
            cv2.circle(disk, pt, max(2, int(0.06 * size)), 1.0, -1)
            rows["disk_baseline"].append(iou(disk, m))
            refused["disk_baseline"].append(False)
            rect = np.zeros_like(m)
            rect[max(0, box[1]):box[3], max(0, box[0]):box[2]] = 1
            rows["box_baseline"].append(iou(rect, m))
            refused["box_baseline"].append(False)
            pc = masks["point_capture"]
            if pc is None:
                continue
            with torch.no_grad():
                ref = uid(left, right, torch.from_numpy(pc)[None, None])[1][0].numpy().transpose(1, 2, 0)
            inside = cv2.dilate(pc.astype(np.uint8), k3) > 0
            outside = ~(cv2.dilate(inside.astype(np.uint8), k3) > 0)
            r_out = gradient_energy(ref, inside) / max(gradient_energy(ref, outside), 1e-12)
            r_in = gradient_energy(s.combined, inside) / max(gradient_energy(s.combined, outside), 1e-12)
            ratios.append(r_out / r_in)
            ratios_in.append((r_in, r_out))
    res = {k: {"n": len(v), "miou": float(np.mean(v)), "median_iou": float(np.median(v)), "min_iou": float(np.min(v)),
               "refused": float(np.mean(refused[k]))} for k, v in rows.items()}
    res["refocus"] = {"n": len(ratios), "median_gain": float(np.median(ratios)),
                      "share_sharper": float(np.mean(np.array(ratios) > 1)),
                      "median_ratio_input": float(np.median([a for a, _ in ratios_in])),
                      "median_ratio_refocused": float(np.median([b for _, b in ratios_in]))}
    res["dp_disparity_s"] = {"n": len(seconds), "median_s": float(np.median(seconds)),
                             "prompts_median_s": float(np.median(prompt_seconds))}
    print("\npoint and box prompts (IoU vs the true object masks; capture = the renderer's disparity, dp = the "
          "DP views alone via runtime_py.dp_disparity, uid = UiD mobile's defocus output; a refused prompt "
          "counts as IoU 0)")
    print(f"{'prompt / disparity':24} {'n':>4} {'mean IoU':>9} {'median':>7} {'min':>6} {'refused':>8}")
    for k, v in res.items():
        if k not in ("refocus", "dp_disparity_s"):
            print(f"{k:24} {v['n']:4d} {v['miou']:9.3f} {v['median_iou']:7.3f} {v['min_iou']:6.3f} {v['refused']:8.2f}")
    print(f"dp_disparity: median {res['dp_disparity_s']['median_s']:.2f} s per {size}x{size} scene, its point and box "
          f"prompts on every object {res['dp_disparity_s']['prompts_median_s']:.2f} s (1 thread)")
    r = res["refocus"]
    print("\nrefocus on the point prompt's mask (UiD mobile): gradient energy inside / outside the mask")
    print(f"input {r['median_ratio_input']:.3f}  refocused {r['median_ratio_refocused']:.3f}  "
          f"median gain {r['median_gain']:.3f}  sharper in {r['share_sharper']:.0%} of {r['n']}")
    return res


def encoder_table(threads: int) -> dict:
    from export.text_encoder import export_text_encoder

    with tempfile.TemporaryDirectory() as tmp:
        rec = export_text_encoder(Path(tmp) / "te", threads=threads)
    print(f"\ntext encoder (all-MiniLM-L6-v2, {rec['seq_len']} tokens, {threads} thread; latency median of 20)")
    print(f"{'target':10} {'MB':>6} {'ms':>7} {'vs torch':>9} {'max|diff|':>10} {'min cos':>9}")
    base = rec["rows"][0]["latency_ms"]
    for r in rec["rows"]:
        print(f"{r['target']:10} {r['bytes'] / 1e6:6.1f} {r['latency_ms']:7.1f} {base / r['latency_ms']:8.2f}x "
              f"{r['max_abs']:10.2e} {r['min_cosine']:9.6f}")
    return {r["target"]: {"mb": round(r["bytes"] / 1e6, 2), "latency_ms": r["latency_ms"],
                          "speedup_vs_torch": round(base / r["latency_ms"], 2), "max_abs": r["max_abs"]}
            for r in rec["rows"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=60, help="scenes per table")
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--seed", type=int, default=20261130)
    ap.add_argument("--mask-checkpoint", type=Path, default=ROOT / "checkpoints" / "promptmask-mobile.safetensors")
    ap.add_argument("--uid-checkpoint", type=Path, default=ROOT / "checkpoints" / "uid-mobile.safetensors")
    ap.add_argument("--no-encoder", action="store_true", help="skip the text encoder export")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--only", choices=("text", "spatial"), help="run only this table (and the encoder unless --no-encoder)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    figures = {}
    if a.only != "spatial":
        net = load_model(a.mask_checkpoint, expected_model="promptmask")[0]
        figures["text"] = text_table(net, a.count, a.size, a.seed)
    if a.only != "text":
        uid = load_model(a.uid_checkpoint, expected_model="uid")[0]
        figures["spatial"] = spatial_table(uid, max(1, a.count // 3), a.size, a.seed)
    if not a.no_encoder:
        figures["encoder"] = encoder_table(a.threads)
    figures["setup"] = {"count": a.count, "size": a.size, "seed": a.seed, "mask_checkpoint": str(a.mask_checkpoint),
                        "uid_checkpoint": str(a.uid_checkpoint), "threads": a.threads}
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
