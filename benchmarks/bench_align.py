"""UW -> W alignment on synthetic W/UW pairs with ground-truth flow and occlusion.

Rows (modes): DIS per preset without depth (``dis <preset>``, plus ``dis fast, lsq colour``: the
colour pre-fit used before 2026-11-22), and with W's disparity: a degraded copy of the engine's
depth (inverse depth at 1/``factor`` resolution, 2 % multiplicative noise, blurred by 1 low-res
px, 8-bit codes; never the exact ground truth), turned into flow by a parallax model fitted to
the images (``depth <f>x``) or from the known geometry with only the offset fitted
(``geometry``), with depth edges re-decided by matching (``select``, the default), used as is
(``raw``) or as DIS's initial flow (``+ DIS fast``).

Per row: end-point error on GT non-occluded pixels (W px, the pre-aligned grid; UW px is half
of it), occlusion-mask precision / recall / F1, and the flow time at the pairs' size on
``--threads`` OpenCV threads (median of ``--repeats``, first pair): one DIS ``calc`` W -> UW
for DIS rows; parallax fit + depth flow (+ DIS) for depth rows (both from the pre-aligned,
colour-matched images; the backward DIS flow and the occlusion test are not included). Prints
a table, then one JSON object as the last line.

    .venv/bin/python benchmarks/bench_align.py --size 1224x1632 --threads 2
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from calibration.cameras import get_pair  # noqa: E402
from runtime_py.align import (PRESETS, align_uw_to_w, alignment_metrics, depth_guided_flow, dis_flow,  # noqa: E402
                              fit_colour, fit_parallax, match_moments, parallax_from_geometry, prealign_from_focal,
                              resize_disparity, to_grey8, warp_prealigned)
from synth.dual_camera import make_dual_camera_sample  # noqa: E402
from synth.scenes import random_scene  # noqa: E402


def make_pair(kind: str, seed: int, h: int, w: int):
    pair = get_pair("phone_w_uw")
    near, far = pair["wide"].depth_range_m
    scene = random_scene(kind, 2 * h, 2 * w, seed=seed, near_m=near, far_m=far)
    return make_dual_camera_sample(scene, pair["wide"], pair["ultrawide"], rng=np.random.default_rng(seed),
                                   baseline_mm=pair["baseline_mm"], size=(h, w),
                                   uw_resolution_factor=pair["uw_resolution_factor"],
                                   white_balance_gains=pair["white_balance_gains"], device="cpu")


def degraded_disparity(depth_m: np.ndarray, factor: int, seed: int = 0, noise: float = 0.02, blur_px: float = 1.0,
                       bits: int = 8) -> np.ndarray:
    """What a phone depth map looks like, from the engine's exact depth: inverse depth (1/m) at
    1/``factor`` resolution (area average), multiplicative Gaussian noise, blurred by ``blur_px``
    low-res px, quantised to ``bits``-bit codes over its range. Returned at the low resolution."""
    rng = np.random.default_rng(seed)
    h, w = depth_m.shape
    lo = cv2.resize((1.0 / depth_m).astype(np.float32), (w // factor, h // factor), interpolation=cv2.INTER_AREA)
    lo = lo * (1 + noise * rng.standard_normal(lo.shape)).astype(np.float32)
    lo = cv2.GaussianBlur(lo, (0, 0), blur_px)
    a, b = float(lo.min()), float(lo.max())
    q = (2 ** bits) - 1
    return (np.round((lo - a) / max(b - a, 1e-12) * q) / q * (b - a) + a).astype(np.float32)


def geometry_model(sample) -> object:
    """The engine's geometry (CAPTURES/dual_camera.py): UW ``baseline_mm`` to the right of W,
    W's focal length in px at the render scale; disparity in 1/m."""
    pair = get_pair("phone_w_uw")
    cam = pair["wide"]
    f_px = cam.focal_length / (cam.pixel_pitch_um * 1e-3) * sample.meta["render_scale"]
    return parallax_from_geometry(f_px, sample.meta["baseline_mm"], direction=(1.0, 0.0))


def median_ms(fn, repeats: int) -> tuple[float, float]:
    fn()  # warm-up
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(ts)), float(np.min(ts))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="1224x1632", help="W size HxW (the scene is rendered 2x larger)")
    ap.add_argument("--kinds", default="dead_leaves,slanted_plane", help="scene kinds, one pair each")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--presets", default="ultrafast,fast,medium")
    ap.add_argument("--depth-factors", default="4,8", help="depth map downsampling factors (one row each)")
    ap.add_argument("--no-extra", action="store_true", help="skip the lsq-colour, geometry, raw and +DIS rows")
    args = ap.parse_args()
    h, w = (int(v) for v in args.size.lower().split("x"))
    presets = args.presets.split(",")
    factors = [int(f) for f in args.depth_factors.split(",") if f]
    cv2.setNumThreads(args.threads)
    pairs = []
    for i, kind in enumerate(args.kinds.split(",")):
        t0 = time.perf_counter()
        pairs.append((kind, make_pair(kind, args.seed + i, h, w)))
        print(f"rendered {kind} pair {w}x{h} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)

    # rows: (name, align_uw_to_w keywords; depth_factor / geometry are the benchmark's own)
    rows = [(f"dis {p}", {"preset": p}) for p in presets]
    if not args.no_extra:
        rows.append(("dis fast, lsq colour", {"preset": "fast", "colour_prefit": "lsq"}))
    for f in factors:
        rows.append((f"depth {f}x select", {"depth_factor": f}))
    if factors and not args.no_extra:
        f = factors[0]
        rows += [(f"depth {f}x geometry select", {"depth_factor": f, "geometry": True}),
                 (f"depth {f}x raw", {"depth_factor": f, "depth_refine": "none"}),
                 (f"depth {f}x + DIS fast", {"depth_factor": f, "depth_refine": "dis", "preset": "fast"})]

    # timing inputs: the first pair, pre-aligned and colour-matched as align_uw_to_w does
    s0 = pairs[0][1]
    pre0 = prealign_from_focal(s0.wide.shape, s0.ultrawide.shape, 1.0, s0.meta["uw_resolution_factor"])
    up0 = warp_prealigned(s0.ultrawide, pre0, s0.wide.shape)
    up0 = match_moments(up0, s0.wide).apply(up0)
    a8, b8 = to_grey8(s0.wide), to_grey8(up0)
    ag, bg = a8.astype(np.float32) / 255, b8.astype(np.float32) / 255

    figures: dict = {"size": f"{w}x{h}", "megapixels": round(h * w / 1e6, 2), "threads": args.threads,
                     "kinds": args.kinds.split(","), "opencv": cv2.__version__, "load_average_start": os.getloadavg(),
                     "depth_degradation": "inverse depth at 1/factor res (area), x(1 + 0.02 N(0,1)), blur 1 low-res px, "
                                          "8-bit codes", "modes": {}}
    for name, kw in rows:
        kw = dict(kw)
        factor, geometry = kw.pop("depth_factor", None), kw.pop("geometry", False)
        per_kind = {}
        for kind, s in pairs:
            s_uw = s.meta["uw_resolution_factor"]
            extra = {}
            if factor:
                extra["disparity"] = degraded_disparity(s.depth, factor, seed=args.seed)
                if geometry:
                    extra["parallax"] = geometry_model(s)
            res = align_uw_to_w(s.wide, s.ultrawide, f_wide_px=1.0, f_uw_px=s_uw, **kw, **extra)
            m = alignment_metrics(res, s.flow_w_to_uw, s.occlusion)
            m["pipeline_ms"] = res.report.timings_ms["total"]
            if res.parallax is not None:
                m["parallax_a"] = [round(float(v), 4) for v in res.parallax.a]
                m["parallax_b"] = [round(float(v), 4) for v in res.parallax.b]
                m["edge_fraction"] = res.report.edge_fraction
            per_kind[kind] = m
        # flow timing on the first pair
        if factor is None:
            p = kw.get("preset", "fast")
            if kw.get("colour_prefit") == "lsq":
                blur = lambda x: cv2.GaussianBlur(x, (0, 0), 4.0)  # noqa: E731
                upl = warp_prealigned(s0.ultrawide, pre0, s0.wide.shape)
                upl = fit_colour(blur(upl), blur(s0.wide)).apply(upl)
                bl8 = to_grey8(upl)
                fn = lambda: dis_flow(a8, bl8, p)  # noqa: E731
            else:
                fn = lambda: dis_flow(a8, b8, p)  # noqa: E731
        else:
            disp0 = resize_disparity(degraded_disparity(s0.depth, factor, seed=args.seed), s0.wide.shape)
            prior = geometry_model(s0) if geometry else None
            refine = kw.get("depth_refine", "select")
            radius = max(3, int(round(s0.wide.shape[1] / (s0.wide.shape[1] // factor))))

            def fn(disp0=disp0, prior=prior, refine=refine, radius=radius, p=kw.get("preset", "fast")):
                model = fit_parallax(ag, bg, disp0, prior)
                if refine == "select":
                    return depth_guided_flow(s0.wide, up0, disp0, model, edge_radius=radius)
                if refine == "dis":
                    return cv2.DISOpticalFlow_create(PRESETS[p]).calc(a8, b8, np.ascontiguousarray(model.flow(disp0)))
                return model.flow(disp0)
        med, mn = median_ms(fn, args.repeats)
        mean = lambda k: float(np.mean([m[k] for m in per_kind.values()]))  # noqa: E731
        figures["modes"][name] = {
            "epe_px": round(mean("epe_px"), 3), "epe_median_px": round(mean("epe_median_px"), 3),
            "epe_uw_px": round(mean("epe_uw_px"), 3), "outliers_3px": round(mean("outliers_3px"), 4),
            "occlusion_f1": round(mean("occlusion_f1"), 3), "occlusion_precision": round(mean("occlusion_precision"), 3),
            "occlusion_recall": round(mean("occlusion_recall"), 3), "median_ms": round(med, 1), "min_ms": round(mn, 1),
            "pipeline_ms": round(mean("pipeline_ms"), 1),
            "per_kind": {k: {kk: (round(vv, 4) if isinstance(vv, float) else vv) for kk, vv in m.items()}
                         for k, m in per_kind.items()}}
        print(f"done {name}", file=sys.stderr)
    figures["load_average_end"] = os.getloadavg()

    targets = {"epe_px": 0.5, "occlusion_f1": 0.7, "median_ms": 300.0}
    figures["targets"] = targets
    print(f"UW->W alignment, {w}x{h} ({figures['megapixels']} MP), {args.threads} threads, kinds {args.kinds}, "
          f"load average {figures['load_average_start'][0]:.1f} -> {figures['load_average_end'][0]:.1f}")
    print(f"{'mode':26s} {'EPE W px':>9s} {'median':>7s} {'>3px':>6s} {'occ F1':>7s} {'P':>5s} {'R':>5s} "
          f"{'flow ms':>8s} {'pipeline ms':>11s}")
    for name, f in figures["modes"].items():
        print(f"{name:26s} {f['epe_px']:9.3f} {f['epe_median_px']:7.3f} {f['outliers_3px']:6.3f} {f['occlusion_f1']:7.3f} "
              f"{f['occlusion_precision']:5.2f} {f['occlusion_recall']:5.2f} {f['median_ms']:8.1f} {f['pipeline_ms']:11.1f}")
        for kind, m in f["per_kind"].items():
            extra = f", a {m['parallax_a']}, b {m['parallax_b']}" if "parallax_a" in m else ""
            print(f"  {kind:12s} EPE {m['epe_px']:.3f} (median {m['epe_median_px']:.3f}), F1 {m['occlusion_f1']:.3f} "
                  f"(P {m['occlusion_precision']:.2f} R {m['occlusion_recall']:.2f}), GT occluded {m['occluded_gt']:.3f}, "
                  f"estimated {m['occluded_est']:.3f}{extra}")
    print(f"targets: EPE <= {targets['epe_px']} px (non-occluded), F1 >= {targets['occlusion_f1']}, "
          f"flow < {targets['median_ms']:.0f} ms")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
