"""Chart and PSF estimation from chart captures: the least-squares solve, end to end on synthetic
captures through known field-varying PSFs, and the errors (chart not found, too few markers,
saturated capture, mismatched views, too few focus settings)."""
import json

import cv2
import numpy as np
import pytest
from scipy.signal import fftconvolve

from calibration.chart import ChartError, load_chart, make_chart, save_chart
from calibration.dp_psf import PSFParams, cross_correlation, dual_pixel_psf
from calibration.estimate import EstimateError, estimate, solve_psf
from calibration.kernel_stack import kernel_centre
from calibration.psf_bank import FieldGrid, PSFBank
from synth.chart_capture import chart_capture, mild_homography, vignetting_gains

SHAPE = (300, 360)
CHART = (700, 580)  # W, H


def test_solve_psf_recovers_an_off_centre_kernel_with_a_mask():
    rng = np.random.default_rng(0)
    F, P = 21, 64
    S = (rng.random((P + F - 1, P + F - 1)) < 0.5).astype(float)
    left, _ = dual_pixel_psf(-5.0, PSFParams(9, 0.5, 0.2), F, offset=(0.7, -0.4))
    B = 0.1 + 0.7 * fftconvolve(S, 2 * left, "valid") + rng.normal(0, 0.003, (P, P))
    mask = np.ones((P, P), bool)
    mask[:12, :12] = False
    B[:12, :12] = 1.0  # clipped: must not matter once masked
    k, res = solve_psf(S, B, F, mask)
    assert k.sum() == pytest.approx(1.0) and (k >= 0).all()
    assert cross_correlation(k, 2 * left) > 0.99
    np.testing.assert_allclose(kernel_centre(k), kernel_centre(left), atol=0.1)
    assert res < 0.3


def _truth_bank():
    bank = PSFBank.from_model(np.arange(-8, 8.5, 1.0), [PSFParams(6, 0.6, 0.2)])
    params = np.tile([9.0, 0.5, 0.25, 0.14], (2, 2, 1))
    bank.field = FieldGrid(params, np.array([[1.0, 1.05], [1.05, 1.1]]), None, "params")
    return bank


@pytest.fixture(scope="module")
def captures(tmp_path_factory):
    root = tmp_path_factory.mktemp("cal")
    chart = make_chart(*CHART, seed=3, noise_cell=2)
    save_chart(chart, root / "chart.png")
    H = mild_homography(CHART, SHAPE)
    bank = _truth_bank()
    rng = np.random.default_rng(1)
    vig = vignetting_gains(SHAPE)
    (root / "caps").mkdir()
    (root / "white").mkdir()
    for name, r in (("near", -3.0), ("far", 4.0)):
        L, R = chart_capture(chart.image, H, SHAPE, bank, r, rng, vig)
        cv2.imwrite(str(root / "caps" / f"{name}_L.png"), L)
        cv2.imwrite(str(root / "caps" / f"{name}_R.png"), R)
    L, R = chart_capture(chart.image, H, SHAPE, bank, 0.0, rng, vig, white=True)
    cv2.imwrite(str(root / "white" / "w_L.png"), L)
    cv2.imwrite(str(root / "white" / "w_R.png"), R)
    return root, bank, vig


def test_chart_round_trip_and_errors(tmp_path):
    chart = make_chart(400, 300, seed=1)
    png, js = save_chart(chart, tmp_path / "c.png")
    again = load_chart(js)
    np.testing.assert_array_equal(again.image, np.round(chart.image * 255) / 255)
    assert len(again.geometry["markers"]) == 8 and set(np.unique(again.image)) <= {0.0, 1.0}
    with pytest.raises(ChartError, match="missing.json: chart file not found"):
        load_chart(tmp_path / "missing.json")
    (tmp_path / "c.png").unlink()
    with pytest.raises(ChartError, match="c.png: chart image not found"):
        load_chart(js)
    with pytest.raises(ChartError, match="too small"):
        make_chart(100, 100)


def test_estimate_recovers_field_varying_kernels(captures, tmp_path):
    root, bank, vig = captures
    ks = estimate(root / "caps", root / "chart.json", grid=(2, 2), kernel_size=21, white_dir=root / "white")
    assert [c.name for c in ks.captures] == ["far", "near"] and ks.vignetting is not None
    # vignetting gain maps: the left/right ratio of the truth, up to the box filter
    ratio = ks.vignetting["left"] / ks.vignetting["right"]
    truth = vig["left"] / vig["right"]
    assert np.abs(ratio[100:200, 100:260] - truth[100:200, 100:260]).max() < 0.02
    y0, x0, h, w = ks.crop
    rows, cols = bank.field.shape
    for cap, r in zip(ks.captures, (4.0, -3.0)):
        for p in range(4):
            i, j = divmod(p, 2)
            cy, cx = y0 + (i + 0.5) * ks.patch, x0 + (j + 0.5) * ks.patch
            ti, tj = int(cy // (SHAPE[0] / rows)), int(cx // (SHAPE[1] / cols))
            tl, tr = dual_pixel_psf(r * bank.field.gain[ti, tj], bank.field.cell_params(ti, tj), 21)
            assert cross_correlation(cap.left[p], 2 * tl) > 0.9
            assert cross_correlation(cap.right[p], 2 * tr) > 0.9
            # disparity sign follows the radius sign
            assert np.sign(kernel_centre(cap.left[p])[1] - kernel_centre(cap.right[p])[1]) == np.sign(r)
        assert min(cap.diagnostics["confidence"]) > 0.5 and max(cap.diagnostics["saturation"]) == 0
    out = ks.save(tmp_path / "kernels")
    assert json.loads((out / "kernels.json").read_text())["vignetting"] == {"left": "vignetting_left.npy",
                                                                           "right": "vignetting_right.npy"}


def test_estimate_errors(captures, tmp_path):
    root, bank, vig = captures
    chart = root / "chart.json"
    with pytest.raises(EstimateError, match="1 focus setting"):
        one = tmp_path / "one"
        one.mkdir()
        for v in ("L", "R"):
            (one / f"near_{v}.png").write_bytes((root / "caps" / f"near_{v}.png").read_bytes())
        estimate(one, chart, grid=(2, 2), kernel_size=21)
    # a grey frame without the chart
    blank = tmp_path / "blank"
    blank.mkdir()
    for name in ("a", "b"):
        for v in ("L", "R"):
            cv2.imwrite(str(blank / f"{name}_{v}.png"), np.full(SHAPE, 30000, np.uint16))
    with pytest.raises(EstimateError, match="a_L.png: chart not found"):
        estimate(blank, chart, grid=(2, 2), kernel_size=21)
    # markers covered: two left
    cover = tmp_path / "cover"
    cover.mkdir()
    for name in ("near", "far"):
        for v in ("L", "R"):
            img = cv2.imread(str(root / "caps" / f"{name}_{v}.png"), cv2.IMREAD_UNCHANGED)
            img[:, : SHAPE[1] // 2 + 20] = 30000
            cv2.imwrite(str(cover / f"{name}_{v}.png"), img)
    with pytest.raises(EstimateError, match=r"too few chart markers: found [12] \(ids"):
        estimate(cover, chart, grid=(2, 2), kernel_size=21)
    # saturated
    sat = tmp_path / "sat"
    sat.mkdir()
    for name in ("near", "far"):
        for v in ("L", "R"):
            img = cv2.imread(str(root / "caps" / f"{name}_{v}.png"), cv2.IMREAD_UNCHANGED).astype(np.float64)
            cv2.imwrite(str(sat / f"{name}_{v}.png"), np.clip(img * 2.5, 0, 65535).astype(np.uint16))
    with pytest.raises(EstimateError, match="far_L.png: saturated capture"):
        estimate(sat, chart, grid=(2, 2), kernel_size=21)
    # mismatched views / missing view
    bad = tmp_path / "bad"
    bad.mkdir()
    cv2.imwrite(str(bad / "x_L.png"), np.zeros((20, 30), np.uint16))
    cv2.imwrite(str(bad / "x_R.png"), np.zeros((20, 31), np.uint16))
    cv2.imwrite(str(bad / "y_L.png"), np.zeros((20, 30), np.uint16))
    cv2.imwrite(str(bad / "y_R.png"), np.zeros((20, 30), np.uint16))
    with pytest.raises(EstimateError, match="x_L.png .*x_R.png .*differ in size"):
        estimate(bad, chart, grid=(2, 2), kernel_size=21)
    (bad / "y_R.png").unlink()
    with pytest.raises(EstimateError, match="capture 'y' has no right view"):
        estimate(bad, chart, grid=(2, 2), kernel_size=21)
