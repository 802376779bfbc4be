"""Thin-lens CoC (seed 004, eq. 1) and camera profiles, checked against hand-computed values."""
import numpy as np
import pytest

from calibration import optics
from calibration.cameras import CameraError, get_camera, get_pair, load_profiles, RDPD_CAMERA_SETS

# Hand-computed with scale = (f s/(s - f)) (f/N) / s and CoC = round(scale (d - s)/d), clipped to 40.
RDPD_EXPECTED = {
    "rdpd_set1": [(10.0, 1), (1.0, -11), (250.0, 3)],  # scale 2.6667
    "rdpd_set2": [(2.0, -6), (250.0, 3)],  # scale 3.125
    "rdpd_set3": [(4.0, -10), (16.0, 5)],  # scale 9.8
    "rdpd_set4": [(6.0, -4), (300.0, 4)],  # scale 3.846, depth clipped to 250
    "rdpd_set5": [(3.0, -40), (15.0, -6), (100.0, 4)],  # scale 6.05, -54 clipped to -40
}


@pytest.mark.parametrize("name", RDPD_CAMERA_SETS)
def test_rdpd_camera_sets_match_hand_computed_coc(name):
    cam = get_camera(name)
    for depth, expected in RDPD_EXPECTED[name]:
        assert cam.coc_px(depth) == expected, (name, depth)
        f, n, s = cam.focal_length, cam.f_number, cam.focus_distance
        assert optics.rdpd_code_coc_px(depth, f, n, s) == expected


def test_physical_coc_canon_50mm_f4():
    # s' = 50*1500/1450 = 51.7241 mm; K = (12.5/2) * 51.7241/1500 = 0.215517 mm = 10.052 px at 21.44 um
    cam = get_camera("canon_5d4")
    assert cam.coc_gain_px() == pytest.approx(10.052, abs=1e-3)
    assert cam.coc_px(3.0) == pytest.approx(10.052 * 0.5, abs=1e-3)
    assert cam.coc_px(1.5) == pytest.approx(0.0, abs=1e-12)
    assert cam.coc_px(1.0) < 0 < cam.coc_px(2.0)  # signed: negative in front of the focal plane


def test_coc_units_and_inverse_depth_form_agree():
    f, n, s = 4.38, 1.73, 500.0
    d = np.array([150.0, 300.0, 500.0, 2000.0, 1e6])
    mm = optics.signed_coc_mm(d, f, n, s)
    px = optics.signed_coc_px(d, f, n, s, pixel_pitch_um=2.8)
    np.testing.assert_allclose(px, mm / 2.8e-3)
    k = optics.coc_gain_mm(f, n, s)
    np.testing.assert_allclose(optics.coc_from_inverse_depth(1.0 / d, k, s), mm, rtol=1e-12)
    # affine in inverse depth: equal steps in 1/d give equal steps in CoC
    inv = np.linspace(1 / 2000, 1 / 150, 5)
    assert np.allclose(np.diff(optics.coc_from_inverse_depth(inv, k, s)), np.diff(optics.coc_from_inverse_depth(inv, k, s))[0])


def test_pixel4_profile_is_green_10bit_2016x756():
    cam = get_camera("pixel4_dp")
    assert (cam.width, cam.height, cam.channels, cam.bit_depth) == (2016, 756, "green", 10)
    pair = get_pair("phone_w_uw")
    assert pair["wide"].coc_gain_px() > 4 * pair["ultrawide"].coc_gain_px()  # shallow vs deep DoF


def test_unknown_camera_lists_known_ones():
    with pytest.raises(CameraError, match="unknown camera 'nope'.*rdpd_set1"):
        get_camera("nope")


def test_bad_depth_and_bad_profile_file(tmp_path):
    with pytest.raises(ValueError, match="finite"):
        get_camera("canon_5d4").coc_px(np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="positive"):
        optics.signed_coc_mm(-1.0, 50, 4, 1500)
    bad = tmp_path / "cams.json"
    bad.write_text("{not json")
    with pytest.raises(CameraError, match="cams.json"):
        load_profiles(str(bad))
