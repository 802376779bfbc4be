"""Defocus maps from disparity: focus selection, the formula, and the W capture's own defocus."""
from __future__ import annotations

import numpy as np
import pytest

from calibration.cameras import get_pair
from runtime_py.defocus_maps import (DefocusError, aperture_scale_px, defocus_map, focus_disparity,
                                     wide_capture_defocus)


def _disp():
    d = np.tile(np.linspace(0.5, 3.0, 40, dtype=np.float32), (30, 1))
    d[10:20, 5:15] = 2.0
    return d


def test_focus_by_point_mask_value():
    d = _disp()
    assert focus_disparity(d, point=(8, 12))[0] == pytest.approx(2.0)
    mask = np.zeros_like(d, bool)
    mask[:, 0] = True
    assert focus_disparity(d, mask=mask)[0] == pytest.approx(0.5)
    assert focus_disparity(d, value=1.25)[0] == 1.25


def test_defocus_formula_and_zero_at_focus():
    d = _disp()
    out, rec = defocus_map(d, 4.0, point=(8, 12), max_radius=5.0)
    expect = np.minimum(4.0 * np.abs(d - 2.0), 5.0)
    assert np.allclose(out, expect, atol=1e-6)
    assert (out[10:20, 5:15] == 0).all() and out.max() == 5.0
    assert rec["focus_disparity"] == pytest.approx(2.0) and "point (8, 12)" in rec["focus_from"]


def test_bad_inputs():
    d = _disp()
    with pytest.raises(DefocusError, match="exactly one"):
        defocus_map(d, 1.0, point=(1, 1), value=2.0)
    with pytest.raises(DefocusError, match="outside"):
        defocus_map(d, 1.0, point=(40, 0))
    with pytest.raises(DefocusError, match="empty"):
        defocus_map(d, 1.0, mask=np.zeros_like(d, bool))
    with pytest.raises(DefocusError, match="focus mask is 3x2"):
        defocus_map(d, 1.0, mask=np.ones((2, 3), bool))
    bad = d.copy()
    bad[0, 0] = np.nan
    with pytest.raises(DefocusError, match="1 NaN"):
        defocus_map(bad, 1.0, value=1.0)


def test_wide_capture_defocus_matches_thin_lens_camera_model():
    cam = get_pair("phone_w_uw")["wide"]
    depth = np.geomspace(0.3, 20.0, 200).astype(np.float32)[None, :]
    focus, scale = 0.8, 0.25
    expect = np.abs(cam.coc_px(depth, focus_distance_m=focus, scale=scale))  # the engine's |CoC_W| (clipped 40)
    got, rec = wide_capture_defocus(1.0 / depth, focal_length_mm=cam.focal_length, f_number=cam.f_number,
                                    pixel_pitch_um=cam.pixel_pitch_um, focus_distance_m=focus, image_scale=scale,
                                    max_radius=cam.max_coc_px)
    assert np.allclose(got, expect, rtol=1e-4, atol=1e-4)
    assert rec["aperture_scale"] == pytest.approx(aperture_scale_px(cam.focal_length, cam.f_number,
                                                                    cam.pixel_pitch_um, focus, scale))
