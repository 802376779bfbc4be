"""The Butterworth dual-pixel PSF (seed 004, eq. 2-4): analytic properties."""
import numpy as np
import pytest

from calibration.dp_psf import (PSFParams, butterworth_profile, centroid_x, combined_psf, cross_correlation,
                                disk_coverage, dp_disparity_px, dual_pixel_psf)


@pytest.mark.parametrize("radius", [0.7, 3.0, 7.5, 20.0, -12.0, 40.0])
@pytest.mark.parametrize("params", [PSFParams(3, 0.4, 0.1), PSFParams(9, 1.0, 0.4)])
def test_halves_sum_to_half_and_mirror(radius, params):
    left, right = dual_pixel_psf(radius, params)
    assert left.sum() == pytest.approx(0.5, abs=1e-12)
    assert right.sum() == pytest.approx(0.5, abs=1e-12)
    np.testing.assert_allclose(left, right[:, ::-1], atol=1e-15)
    assert (left >= 0).all()
    assert combined_psf(radius, params).sum() == pytest.approx(1.0)


def test_front_back_swap():
    left, right = dual_pixel_psf(9.0)
    left_n, right_n = dual_pixel_psf(-9.0)
    np.testing.assert_array_equal(left_n, right)
    np.testing.assert_array_equal(right_n, left)


@pytest.mark.parametrize("beta", [0.1, 0.2, 0.4])
def test_centre_to_rim_ratio_follows_beta(beta):
    r = 15.0
    prof = butterworth_profile(r, PSFParams(order=6, alpha=0.6, beta=beta))
    cov = disk_coverage(r, prof.shape[0])
    c = prof.shape[0] // 2
    shape = prof[cov > 0] / cov[cov > 0]  # the rescaled Butterworth B' inside the disk
    assert prof[c, c] == pytest.approx(beta)
    assert shape.max() == pytest.approx(1.0)
    assert prof[c, c] / shape.max() == pytest.approx(beta)
    # donut: intensity grows from the centre towards the rim along a row
    row = prof[c, c: c + int(r)]
    assert np.all(np.diff(row) >= -1e-12)


def test_centroid_distance_grows_linearly_with_radius():
    radii = np.arange(4.0, 41.0, 4.0)
    d = np.array([dp_disparity_px(r) for r in radii])
    slope, intercept = np.polyfit(radii, d, 1)
    fit = slope * radii + intercept
    r2 = 1 - np.sum((d - fit) ** 2) / np.sum((d - d.mean()) ** 2)
    assert r2 > 0.999
    assert abs(intercept) < 1.0
    assert 0.5 < slope < 0.85  # below the 4/(3 pi) * 2 = 0.85 of an ideal half disk: the ramp is softer


def test_disparity_has_sign_of_coc_and_in_focus_is_delta():
    assert dp_disparity_px(6.0) > 0 > dp_disparity_px(-6.0)
    left, right = dual_pixel_psf(0.2)
    assert left[left.shape[0] // 2, left.shape[1] // 2] == 0.5 and left.sum() == 0.5
    assert centroid_x(left) == 0.0


def test_cross_correlation_similarity():
    a = combined_psf(10.0, PSFParams(3, 0.6, 0.2))
    assert cross_correlation(a, a) == pytest.approx(1.0)
    near = combined_psf(10.0, PSFParams(3, 0.6, 0.3))
    far = combined_psf(10.0, PSFParams(9, 1.0, 0.4), size=a.shape[0])
    gauss = np.exp(-((np.arange(a.shape[0]) - a.shape[0] // 2) ** 2) / 30.0)
    gauss = np.outer(gauss, gauss)
    assert cross_correlation(a, near) > cross_correlation(a, gauss)


def test_invalid_parameters_rejected():
    with pytest.raises(ValueError):
        PSFParams(beta=0.0)
    with pytest.raises(ValueError, match="finite"):
        dual_pixel_psf(float("nan"))
    with pytest.raises(ValueError, match="too small"):
        dual_pixel_psf(10.0, size=9)
