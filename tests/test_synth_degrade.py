"""Tests for synth.degrade (division-model distortion, seed eq. 5; signal-dependent noise)."""

import cv2
import numpy as np
import pytest

from synth.degrade import (
    NOISE_SIGMAS,
    apply_distortion,
    distort_points,
    division_distortion_maps,
    sample_noise_sigma,
    signal_dependent_noise,
)


def _eq5(xu, yu, xo, yo, coeffs, norm):
    """Seed eq. 5 written out: distorted position of an undistorted point."""
    r = np.hypot(xu - xo, yu - yo) / norm
    den = 1.0 + sum(c * r ** (2 * (i + 1)) for i, c in enumerate(coeffs))
    return xo + (xu - xo) / den, yo + (yu - yo) / den


def _gauss_dot(h, w, x, y, s=1.5):
    ys, xs = np.mgrid[0:h, 0:w]
    return np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * s * s)).astype(np.float32)


def _centroid(img):
    ys, xs = np.mgrid[0:img.shape[0], 0:img.shape[1]]
    m = img.sum()
    return (xs * img).sum() / m, (ys * img).sum() / m


# ---------------------------------------------------------------- distortion


@pytest.mark.parametrize("coeffs", [[], [0.0], [0.0, 0.0, 0.0]])
def test_zero_coefficients_identity_exact(coeffs):
    h, w = 37, 52
    mx, my = division_distortion_maps(h, w, coeffs)
    ys, xs = np.mgrid[0:h, 0:w]
    assert mx.dtype == np.float32 and np.array_equal(mx, xs) and np.array_equal(my, ys)
    img = np.random.default_rng(0).random((h, w, 3)).astype(np.float32)
    (out,) = apply_distortion([img], coeffs)
    assert np.array_equal(out, img)
    # the remap with the (exact) identity maps is exact too
    assert np.array_equal(cv2.remap(img, mx, my, cv2.INTER_LINEAR), img)


def test_centre_pixel_fixed():
    h, w = 101, 121  # odd: default centre (60, 50) is a pixel centre
    img = np.random.default_rng(1).random((h, w)).astype(np.float32)
    for coeffs in ([0.12], [-0.1, 0.03]):
        mx, my = division_distortion_maps(h, w, coeffs)
        assert mx[50, 60] == 60 and my[50, 60] == 50
        (out,) = apply_distortion([img], coeffs)
        assert out[50, 60] == img[50, 60]
    mx, my = division_distortion_maps(h, w, [0.1], centre=(30, 40))
    assert mx[40, 30] == 30 and my[40, 30] == 40
    assert mx[50, 60] != 60  # the default centre moves when the centre is elsewhere


@pytest.mark.parametrize("coeffs", [[0.08], [0.1, 0.05], [-0.08]])
def test_maps_invert_eq5(coeffs):
    h, w = 120, 160
    norm = 0.5 * np.hypot(w, h)
    xo, yo = (w - 1) / 2, (h - 1) / 2
    mx, my = division_distortion_maps(h, w, coeffs)
    # each output (distorted) pixel's source, pushed through eq. 5, lands on that pixel
    xd, yd = _eq5(mx.astype(np.float64), my.astype(np.float64), xo, yo, coeffs, norm)
    ys, xs = np.mgrid[0:h, 0:w]
    assert np.abs(xd - xs).max() < 1e-3 and np.abs(yd - ys).max() < 1e-3
    assert np.allclose(distort_points(np.stack([mx.ravel(), my.ravel()], 1), h, w, coeffs),
                       np.stack([xs.ravel(), ys.ravel()], 1), atol=1e-3)


def test_point_at_known_radius_lands_at_eq5_position():
    h, w = 160, 200
    norm = 0.5 * np.hypot(w, h)
    xo, yo = (w - 1) / 2, (h - 1) / 2
    c = [0.1, 0.03]
    for ang in (0.3, 2.0, 4.0):
        r_u = 0.55 * norm
        xu, yu = xo + r_u * np.cos(ang), yo + r_u * np.sin(ang)
        xd, yd = _eq5(xu, yu, xo, yo, c, norm)
        den = 1 + 0.1 * 0.55 ** 2 + 0.03 * 0.55 ** 4
        assert np.isclose(np.hypot(xd - xo, yd - yo), r_u / den)
        (out,) = apply_distortion([_gauss_dot(h, w, xu, yu)], c)
        cx, cy = _centroid(out)
        assert np.hypot(cx - xd, cy - yd) < 0.25, (cx, cy, xd, yd)
        # barrel for c1 > 0: the point moved towards the centre
        assert np.hypot(cx - xo, cy - yo) < r_u - 2
    (out,) = apply_distortion([_gauss_dot(h, w, xo + 60, yo)], [-0.1])
    assert _centroid(out)[0] > xo + 60.5  # pincushion for c1 < 0: outwards


def test_straight_line_becomes_curved():
    h, w = 160, 240
    y_line = (h - 1) / 2 + 0.3 * h
    ys = np.arange(h, dtype=np.float32)[:, None]
    line = np.repeat(np.exp(-((ys - y_line) ** 2) / 2.0), w, axis=1).astype(np.float32)

    def row_centroids(img):
        cols = slice(20, w - 20)
        prof = img[:, cols]
        return (prof * ys).sum(0) / prof.sum(0)

    (straight,) = apply_distortion([line], [])
    assert np.ptp(row_centroids(straight)) < 1e-4
    (barrel,) = apply_distortion([line], [0.2])
    yc = row_centroids(barrel)
    mid, ends = yc[yc.size // 2], 0.5 * (yc[0] + yc[-1])
    assert mid - ends > 2.0  # bows away from the centre in the middle (barrel)
    assert np.all(yc < y_line + 1e-3)  # every point pulled towards the centre row
    # not a straight line: residual of a linear fit is large, of a quadratic small
    x = np.arange(yc.size)
    lin = np.polyval(np.polyfit(x, yc, 1), x) - yc
    assert np.abs(lin).max() > 1.0


def test_apply_distortion_same_maps_all_images():
    h, w = 64, 80
    rng = np.random.default_rng(2)
    left = rng.random((h, w, 3)).astype(np.float32)
    right = rng.random((h, w, 3)).astype(np.float32)
    coc = rng.integers(-40, 41, (h, w)).astype(np.float32)
    six = np.concatenate([left, right], axis=2)
    c = [0.1, -0.02]
    outs = apply_distortion([left, right, left, coc, six], c,
                            interpolation=[cv2.INTER_LINEAR] * 3 + [cv2.INTER_NEAREST, cv2.INTER_LINEAR])
    assert [o.shape for o in outs] == [(h, w, 3)] * 3 + [(h, w), (h, w, 6)]
    assert np.array_equal(outs[0], outs[2])
    assert np.array_equal(outs[4], np.concatenate([outs[0], outs[1]], axis=2))
    two = apply_distortion([left[:, :, :2]], c)[0]  # 2 channels behave like 1/3/4 channels
    assert np.array_equal(two, outs[0][:, :, :2])
    assert set(np.unique(outs[3])) <= set(np.unique(coc))  # nearest: no new CoC values
    mx, my = division_distortion_maps(h, w, c)
    assert np.array_equal(outs[1], cv2.remap(right, mx, my, cv2.INTER_LINEAR,
                                             borderMode=cv2.BORDER_REFLECT101))
    u16 = (left * 65535).astype(np.uint16)
    assert apply_distortion([u16], c)[0].dtype == np.uint16
    with pytest.raises(ValueError):
        apply_distortion([left, np.zeros((h, w + 1), np.float32)], c)


def test_folding_coefficients_rejected():
    with pytest.raises(ValueError, match="invertible"):
        division_distortion_maps(100, 100, [0.3])  # max R_d = 1/(2 sqrt(0.3)) < corner radius
    with pytest.raises(ValueError, match="invertible"):
        division_distortion_maps(100, 100, [0.0, 2.0])  # R_d(R_u) peaks at 0.48
    division_distortion_maps(100, 100, [-1.5])  # strong pincushion is still one-to-one


# ---------------------------------------------------------------- noise


def test_zero_sigma_unchanged():
    img = np.random.default_rng(3).random((16, 20, 3)).astype(np.float32)
    out = signal_dependent_noise(img, 0.0, np.random.default_rng(0))
    assert out is not img and np.array_equal(out, img) and out.dtype == np.float32


@pytest.mark.parametrize("sigma", [0.05, 0.2])
def test_relative_noise_std_matches_sigma(sigma):
    img = np.full((256, 256, 3), 0.4, np.float32)  # flat grey: no clipping for these sigmas
    out = signal_dependent_noise(img, sigma, np.random.default_rng(4))
    assert out.dtype == np.float32
    rel = (out.astype(np.float64) - img) / img
    assert abs(rel.std() / sigma - 1.0) < 0.05
    assert abs(rel.mean()) < 0.01 * sigma * 10


def test_noise_is_signal_dependent_and_clipped():
    img = np.zeros((64, 64), np.float32)
    img[:, 32:] = 1.0
    out = signal_dependent_noise(img, 0.3, np.random.default_rng(5))
    assert np.array_equal(out[:, :32], img[:, :32])  # I = 0 -> no noise
    assert out.max() <= 1.0 and out.min() >= 0.0
    assert out[:, 32:].std() > 0.05


def test_independent_draws():
    img = np.full((200, 200, 3), 0.5, np.float32)
    rng = np.random.default_rng(6)
    n_l = signal_dependent_noise(img, 0.1, rng) - img
    n_r = signal_dependent_noise(img, 0.1, rng) - img
    assert not np.array_equal(n_l, n_r)
    corr = np.corrcoef(n_l.ravel(), n_r.ravel())[0, 1]
    assert abs(corr) < 0.01
    # deterministic given the generator state
    again = signal_dependent_noise(img, 0.1, np.random.default_rng(6)) - img
    assert np.array_equal(again, n_l)


def test_bad_noise_inputs():
    with pytest.raises(ValueError):
        signal_dependent_noise(np.zeros((4, 4), np.uint8), 0.1, np.random.default_rng(0))
    with pytest.raises(ValueError):
        signal_dependent_noise(np.zeros((4, 4), np.float32), -0.1, np.random.default_rng(0))


def test_sample_noise_sigma():
    assert len(NOISE_SIGMAS) == 91 and NOISE_SIGMAS[0] == 0.05 and NOISE_SIGMAS[-1] == 0.5
    rng = np.random.default_rng(7)
    vals = np.array([sample_noise_sigma(rng) for _ in range(3000)])
    assert set(np.round(vals, 6)) <= set(NOISE_SIGMAS)
    assert vals.min() == 0.05 and vals.max() == 0.5 and len(set(vals)) > 80
    k = np.round((vals - 0.05) / 0.005)
    assert np.allclose(vals, 0.05 + 0.005 * k)
    a = sample_noise_sigma(np.random.default_rng(8))
    b = sample_noise_sigma(np.random.default_rng(8), scale=0.1)
    assert np.isclose(b, 0.1 * a)
