"""UW -> W alignment on synthetic W/UW pairs with ground-truth flow and occlusion.

Per DIS preset: end-point error on GT non-occluded pixels (W px, the pre-aligned grid; UW px
is half of it), occlusion-mask precision / recall / F1, and the time of one DIS flow
(W -> pre-aligned UW, 8-bit grey) at the pairs' size on ``--threads`` OpenCV threads (median of
``--repeats``). Prints a table, then one JSON object as the last line.

    .venv/bin/python benchmarks/bench_align.py --size 1224x1632 --threads 2
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from calibration.cameras import get_pair  # noqa: E402
from runtime_py.align import (PRESETS, align_uw_to_w, alignment_metrics, dis_flow, fit_colour,  # noqa: E402
                              prealign_from_focal, to_grey8, warp_prealigned)
from train.synth.dual_camera import make_dual_camera_sample  # noqa: E402
from train.synth.scenes import random_scene  # noqa: E402


def make_pair(kind: str, seed: int, h: int, w: int):
    pair = get_pair("phone_w_uw")
    near, far = pair["wide"].depth_range_m
    scene = random_scene(kind, 2 * h, 2 * w, seed=seed, near_m=near, far_m=far)
    return make_dual_camera_sample(scene, pair["wide"], pair["ultrawide"], rng=np.random.default_rng(seed),
                                   baseline_mm=pair["baseline_mm"], size=(h, w),
                                   uw_resolution_factor=pair["uw_resolution_factor"],
                                   white_balance_gains=pair["white_balance_gains"], device="cpu")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="1224x1632", help="W size HxW (the scene is rendered 2x larger)")
    ap.add_argument("--kinds", default="dead_leaves,slanted_plane", help="scene kinds, one pair each")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--presets", default="ultrafast,fast,medium")
    args = ap.parse_args()
    h, w = (int(v) for v in args.size.lower().split("x"))
    presets = args.presets.split(",")
    cv2.setNumThreads(args.threads)
    pairs = []
    for i, kind in enumerate(args.kinds.split(",")):
        t0 = time.perf_counter()
        pairs.append((kind, make_pair(kind, args.seed + i, h, w)))
        print(f"rendered {kind} pair {w}x{h} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)

    figures: dict = {"size": f"{w}x{h}", "megapixels": round(h * w / 1e6, 2), "threads": args.threads,
                     "kinds": args.kinds.split(","), "opencv": cv2.__version__, "presets": {}}
    rows = []
    for preset in presets:
        per_kind, times = {}, []
        for kind, s in pairs:
            s_uw = s.meta["uw_resolution_factor"]
            res = align_uw_to_w(s.wide, s.ultrawide, f_wide_px=1.0, f_uw_px=s_uw, preset=preset)
            per_kind[kind] = alignment_metrics(res, s.flow_w_to_uw, s.occlusion)
            per_kind[kind]["pipeline_ms"] = res.report.timings_ms["total"]
        # flow timing on the first pair's pre-aligned, colour-matched grey images
        s = pairs[0][1]
        pre = prealign_from_focal(s.wide.shape, s.ultrawide.shape, 1.0, s.meta["uw_resolution_factor"])
        up = warp_prealigned(s.ultrawide, pre, s.wide.shape)
        up = fit_colour(cv2.GaussianBlur(up, (0, 0), 4), cv2.GaussianBlur(s.wide, (0, 0), 4)).apply(up)
        a8, b8 = to_grey8(s.wide), to_grey8(up)
        dis_flow(a8, b8, preset)  # warm-up
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            dis_flow(a8, b8, preset)
            times.append((time.perf_counter() - t0) * 1e3)
        mean = lambda k: float(np.mean([m[k] for m in per_kind.values()]))  # noqa: E731
        fig = {"epe_px": round(mean("epe_px"), 3), "epe_median_px": round(mean("epe_median_px"), 3),
               "epe_uw_px": round(mean("epe_uw_px"), 3), "outliers_3px": round(mean("outliers_3px"), 4),
               "occlusion_f1": round(mean("occlusion_f1"), 3), "occlusion_precision": round(mean("occlusion_precision"), 3),
               "occlusion_recall": round(mean("occlusion_recall"), 3), "median_ms": round(float(np.median(times)), 1),
               "min_ms": round(float(np.min(times)), 1), "pipeline_ms": round(mean("pipeline_ms"), 1),
               "per_kind": {k: {kk: round(vv, 4) for kk, vv in m.items()} for k, m in per_kind.items()}}
        figures["presets"][preset] = fig
        rows.append((preset, fig))

    targets = {"epe_px": 0.5, "occlusion_f1": 0.7, "median_ms": 300.0}
    figures["targets"] = targets
    hdr = f"{'preset':10s} {'EPE W px':>9s} {'median':>7s} {'>3px':>6s} {'occ F1':>7s} {'P':>5s} {'R':>5s} {'flow ms':>8s} {'pipeline ms':>11s}"
    print(f"UW->W alignment, {w}x{h} ({figures['megapixels']} MP), {args.threads} threads, kinds {args.kinds}")
    print(hdr)
    for preset, f in rows:
        print(f"{preset:10s} {f['epe_px']:9.3f} {f['epe_median_px']:7.3f} {f['outliers_3px']:6.3f} {f['occlusion_f1']:7.3f} "
              f"{f['occlusion_precision']:5.2f} {f['occlusion_recall']:5.2f} {f['median_ms']:8.1f} {f['pipeline_ms']:11.1f}")
        for kind, m in f["per_kind"].items():
            print(f"  {kind:12s} EPE {m['epe_px']:.3f} (median {m['epe_median_px']:.3f}), F1 {m['occlusion_f1']:.3f}, "
                  f"GT occluded {m['occluded_gt']:.3f}, estimated {m['occluded_est']:.3f}")
    print(f"targets: EPE <= {targets['epe_px']} px (non-occluded), F1 >= {targets['occlusion_f1']}, "
          f"flow < {targets['median_ms']:.0f} ms")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
