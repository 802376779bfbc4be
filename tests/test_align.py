"""UW -> W alignment: pre-alignment, colour matching, DIS flow, occlusion, report, visual."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from calibration.cameras import get_pair
from runtime_py.align import (AlignError, align_uw_to_w, alignment_metrics, alignment_visual, fb_occlusion,
                              fit_colour, prealign_from_features, prealign_from_focal, remap_channels)
from train.synth.dual_camera import make_dual_camera_sample
from train.synth.scenes import random_scene

H, W = 256, 320


def make_engine_pair():
    """An engine W/UW pair (slanted plane: parallax 1-47 px, little occlusion), UW at half resolution."""
    pair = get_pair("phone_w_uw")
    scene = random_scene("slanted_plane", 2 * H, 2 * W, seed=7, near_m=0.3, far_m=20)
    return make_dual_camera_sample(scene, pair["wide"], pair["ultrawide"], rng=np.random.default_rng(7),
                                   baseline_mm=pair["baseline_mm"], size=(H, W), uw_resolution_factor=0.5,
                                   white_balance_gains=pair["white_balance_gains"], device="cpu")


def _texture(h, w, seed):
    rng = np.random.default_rng(seed)
    base = cv2.resize(rng.random((h // 8, w // 8, 3)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    return np.clip(0.6 * base + 0.4 * rng.random((h, w, 3)).astype(np.float32) * 0.5, 0, 1)


def make_layered_pair():
    """Two fronto-parallel layers, same resolution and FOV: background shifts 2 px left in UW,
    a foreground square 12 px left; GT occlusion: background W pixels the square covers in UW."""
    h, w, d_bg, d_fg = H, W, 2, 12
    bg, fg = _texture(h, w + 40, 1), _texture(h, w + 40, 2)
    y0, y1, x0, x1 = 80, 180, 120, 220
    disp = np.full((h, w), d_bg, np.float32)
    disp[y0:y1, x0:x1] = d_fg
    wide = bg[:, 20:20 + w].copy()
    wide[y0:y1, x0:x1] = fg[y0:y1, 20 + x0:20 + x1]
    uw = bg[:, 20 + d_bg:20 + d_bg + w].copy()
    uw[y0:y1, x0 - d_fg:x1 - d_fg] = fg[y0:y1, 20 + x0:20 + x1]
    uw = np.clip(uw * np.float32([1.1, 0.95, 0.9]) + 0.02, 0, 1)  # other white balance
    flow = np.stack([-disp, np.zeros_like(disp)], -1)
    band = np.zeros((h, w), bool)
    band[y0:y1, x0 - d_fg + d_bg:x0] = True  # background just left of the square: covered in UW
    return wide, uw, flow, band


@pytest.fixture(scope="module")
def engine_pair():
    return make_engine_pair()


@pytest.fixture(scope="module")
def layered_pair():
    return make_layered_pair()


def test_engine_pair_flow_accuracy_and_colour(engine_pair):
    s = engine_pair
    res = align_uw_to_w(s.wide, s.ultrawide, f_wide_px=1.0, f_uw_px=0.5, preset="medium")
    m = alignment_metrics(res, s.flow_w_to_uw, s.occlusion)
    # measured: median 0.32, mean 3.2 W px (outliers where DIS smooths over depth edges and
    # where W is strongly defocused); without alignment the parallax alone is 1-47 px
    assert m["epe_median_px"] < 0.5 and m["epe_px"] < 4.0
    naive = np.abs(cv2.resize(s.ultrawide, (W * 2, H * 2))[H // 2:H // 2 + H, W // 2:W // 2 + W] - s.wide).mean()
    assert np.abs(res.warped - s.wide)[~res.occlusion].mean() < 0.5 * naive
    # colour matching undoes the UW white-balance gains: per-channel means agree
    assert np.abs(res.warped[~res.occlusion].mean(0) - s.wide[~res.occlusion].mean(0)).max() < 0.01
    rep = res.report.to_dict()
    assert rep["preset"] == "medium" and rep["prealign"] == "focal lengths" and rep["size"] == f"{W}x{H}"
    assert rep["flow_median_px"] > 5  # the parallax is really there, and found


def test_presets_order_by_accuracy(engine_pair):
    s = engine_pair
    epe = {p: alignment_metrics(align_uw_to_w(s.wide, s.ultrawide, f_wide_px=1, f_uw_px=0.5, preset=p),
                                s.flow_w_to_uw, s.occlusion)["epe_median_px"] for p in ("ultrafast", "medium")}
    assert epe["medium"] < epe["ultrafast"]


def test_layered_pair_occlusion_f1(layered_pair):
    wide, uw, flow, band = layered_pair
    res = align_uw_to_w(wide, uw, f_wide_px=1.0, f_uw_px=1.0, preset="medium")
    m = alignment_metrics(res, flow, band)
    assert m["epe_px"] < 0.3  # measured 0.12
    assert m["occlusion_f1"] > 0.4  # measured 0.50 (P 0.35, R 0.85): the 10-px band left of the square


def test_feature_homography_recovers_fov_scale(engine_pair):
    s = engine_pair
    pre = prealign_from_features(s.wide, s.ultrawide, "orb")
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float32)
    a = pre.map_points(xs, ys)
    err = np.hypot(a[0] - xs - s.flow_w_to_uw[..., 0], a[1] - ys - s.flow_w_to_uw[..., 1])
    # a plane's parallax is a homography: measured median 1.6 UW px from the true mapping
    assert np.median(err) < 3.0
    assert 0.18 < np.linalg.det(pre.matrix[:2, :2]) < 0.32  # area scale ~ 0.5^2
    res = align_uw_to_w(s.wide, s.ultrawide, preset="fast")  # no focal lengths: features
    assert res.report.prealign.startswith("homography") and res.report.prealign_detail["inliers"] >= 10


def test_fb_occlusion_rule():
    h, w = 20, 30
    fwd = np.zeros((h, w, 2), np.float32)
    fwd[..., 0] = 3.0
    bwd = -fwd.copy()
    assert not fb_occlusion(fwd, bwd).any()
    bwd[:, 10:] = 0.0  # backward flow that does not come back
    occ = fb_occlusion(fwd, bwd)
    assert occ[:, 8:27].all() and not occ[:, :6].any()


def test_remap_channels_exact_shift():
    rng = np.random.default_rng(0)
    img = rng.random((16, 24, 2)).astype(np.float32)
    ys, xs = np.mgrid[0:16, 0:24].astype(np.float32)
    out = remap_channels(img, xs + 1.0, ys)
    assert np.array_equal(out[:, :-1], img[:, 1:])


def test_fit_colour_recovers_affine():
    rng = np.random.default_rng(0)
    src = rng.uniform(0.1, 0.8, (50, 60, 3)).astype(np.float32)
    dst = src * np.float32([1.2, 0.9, 1.05]) + np.float32([0.01, -0.02, 0.0])
    fit = fit_colour(src, dst)
    assert np.allclose(fit.gain, [1.2, 0.9, 1.05], atol=1e-3) and np.allclose(fit.offset, [0.01, -0.02, 0], atol=1e-3)


def test_visual_and_bad_inputs(engine_pair, tmp_path):
    s = engine_pair
    res = align_uw_to_w(s.wide, s.ultrawide, f_wide_px=1.0, f_uw_px=0.5, preset="ultrafast")
    panel = alignment_visual(s.wide, res, tmp_path / "vis.png")
    assert panel.shape == (2 * H, 2 * W, 3) and cv2.imread(str(tmp_path / "vis.png")).shape == panel.shape
    # occluded pixels are drawn red in the bottom-left panel
    if res.occlusion.any():
        assert panel[H:, :W][res.occlusion][:, 0].mean() > panel[H:, :W][res.occlusion][:, 2].mean()
    with pytest.raises(AlignError, match="unknown DIS preset"):
        align_uw_to_w(s.wide, s.ultrawide, f_wide_px=1, f_uw_px=0.5, preset="slow")
    bad = s.wide.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(AlignError, match="NaN"):
        align_uw_to_w(bad, s.ultrawide, f_wide_px=1, f_uw_px=0.5)
    with pytest.raises(AlignError, match="focal lengths must be > 0"):
        prealign_from_focal(s.wide.shape, s.ultrawide.shape, 0.0, 0.5)
