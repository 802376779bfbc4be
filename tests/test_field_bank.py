"""PSF bank schema 2 (field grid, vignetting), schema-1 files still load, and the field-varying
renderer layered on render_dp."""
import json

import numpy as np
import pytest

from calibration.dp_psf import PSFParams
from calibration.psf_bank import FieldGrid, PSFBank, PSFBankError
from synth.field_render import FieldPSF, _ramps, bank_provider
from synth.render import ParametricPSF, render_dp

P = PSFParams(6, 0.6, 0.2, 0.14)


def field_bank(gains, mode="params", vignetting=False):
    gains = np.asarray(gains, float)
    rows, cols = gains.shape
    bank = PSFBank.from_model(np.arange(-8, 8.5, 1.0), [P], camera="test-device")
    params = np.tile([P.order, P.alpha, P.beta, P.kappa], (rows, cols, 1)).astype(float)
    bank.field = FieldGrid(params, gains, np.full((rows, cols), 0.97), mode, meta={"source": "test"})
    if mode == "kernels":
        from calibration.dp_psf import dual_pixel_psf
        l, r = dual_pixel_psf(4.0, P, 13)
        bank.field.left = np.tile(2 * l, (rows, cols, 1, 1)).astype(np.float32)
        bank.field.right = np.tile(2 * r, (rows, cols, 1, 1)).astype(np.float32)
        bank.field.ref_radius = np.full((rows, cols), 4.0)
    if vignetting:
        yy, xx = np.mgrid[-1:1:33j, -1:1:33j]
        bank.vignetting = {"left": (1 - 0.3 * (xx + 1) / 2).astype(np.float32),
                           "right": (1 - 0.3 * (1 - xx) / 2).astype(np.float32)}
    return bank


def test_schema1_file_still_loads(tmp_path):
    old = PSFBank.from_model([-3, 0, 3], [P])
    header = old.header()
    header["schema_version"] = 1
    header.pop("vignetting")
    path = tmp_path / "old.npz"
    np.savez(path, header=np.array(json.dumps(header)), radii=old.radii, left=old.left, right=old.right)
    bank = PSFBank.load(path)
    assert bank.field is None and bank.vignetting is None
    np.testing.assert_array_equal(bank.left, old.left)


@pytest.mark.parametrize("mode", ["params", "kernels"])
def test_field_round_trip(tmp_path, mode):
    bank = field_bank([[1.0, 1.2], [0.9, 1.1]], mode, vignetting=True)
    again = PSFBank.load(bank.save(tmp_path / "b.npz"))
    assert again.header()["schema_version"] == 2 and again.field.mode == mode
    np.testing.assert_array_equal(again.field.gain, bank.field.gain)
    np.testing.assert_array_equal(again.vignetting["left"], bank.vignetting["left"])
    assert again.field.cell_params(1, 0) == P and again.field.meta == {"source": "test"}
    if mode == "kernels":
        np.testing.assert_array_equal(again.field.left, bank.field.left)


def test_bad_field_rejected(tmp_path):
    bank = field_bank([[1.0, 1.0]])
    arrays = bank.arrays()
    arrays["field_gain"] = np.ones((3, 3))
    path = tmp_path / "bad.npz"
    np.savez(path, header=np.array(json.dumps(bank.header())), **arrays)
    with pytest.raises(PSFBankError, match="bad.npz: field arrays"):
        PSFBank.load(path)


def test_ramps_are_a_partition_of_unity():
    w = _ramps(100, 4)
    np.testing.assert_allclose(w.sum(0), 1.0)
    assert w[0, :15].min() == 1.0 and w[3, -15:].min() == 1.0 and (w[1] > 0).sum() < 60


def _scene(h=64, w=96, seed=0):
    rng = np.random.default_rng(seed)
    img = rng.random((h, w, 1)).astype(np.float32)
    coc = np.where(np.arange(w)[None, :] < w // 2, -4.0, 3.0) * np.ones((h, 1))
    return img, coc.astype(np.float32)


def test_uniform_field_equals_plain_render():
    img, coc = _scene()
    plain = render_dp(img, coc, ParametricPSF(P), device="cpu")
    field = FieldPSF(field_bank(np.ones((2, 3)))).render(img, coc, device="cpu")
    np.testing.assert_allclose(field.left, plain.left, atol=2e-5)
    np.testing.assert_allclose(field.right, plain.right, atol=2e-5)


def test_each_cell_renders_with_its_own_psf():
    img, coc = _scene()
    coc[:] = 3.0
    gains = np.array([[1.0, 2.0]])
    views = FieldPSF(field_bank(gains)).render(img, coc, device="cpu")
    small = render_dp(img, coc, ParametricPSF(P), device="cpu")
    big = render_dp(img, 2 * coc, ParametricPSF(P), device="cpu")
    # inside each cell (away from the blend band) the render is that cell's PSF
    np.testing.assert_allclose(views.left[:, 10:30], small.left[:, 10:30], atol=2e-5)
    np.testing.assert_allclose(views.left[:, 66:86], big.left[:, 66:86], atol=2e-5)
    assert np.abs(small.left[:, 66:86] - big.left[:, 66:86]).mean() > 0.01


def test_vignetting_multiplies_views_and_provider_choice():
    img = np.full((32, 32, 1), 0.5, np.float32)
    coc = np.zeros((32, 32), np.float32)
    bank = field_bank(np.ones((1, 1)), vignetting=True)
    views = bank_provider(bank).render(img, coc, device="cpu")
    # the views carry the gains relative to their mean: left/right asymmetry, combined unchanged
    assert views.left[16, 0, 0] / views.right[16, 0, 0] == pytest.approx(1 / 0.7, rel=0.03)
    assert views.left[16, -1, 0] / views.right[16, -1, 0] == pytest.approx(0.7, rel=0.03)
    np.testing.assert_allclose(views.combined, 0.5, atol=1e-5)
    assert not hasattr(bank_provider(PSFBank.from_model([0, 1], [P])), "render")


def test_kernel_mode_magnifies_measured_kernels():
    bank = field_bank(np.ones((1, 1)), "kernels")
    cell = FieldPSF(bank).cells[0][0]
    l8, r8 = cell(8.0)
    assert l8.sum() == pytest.approx(0.5) and l8.shape[0] >= 25
    from calibration.dp_psf import centroid_x
    l4, r4 = cell(4.0)
    d4 = centroid_x(l4) - centroid_x(r4)
    assert d4 > 1.0  # the measured pair's disparity survives (one centre for both views)
    assert centroid_x(l8) - centroid_x(r8) == pytest.approx(2 * d4, rel=0.05)
    ln, rn = cell(-8.0)  # negative scale: rotated 180 degrees -> the views swap sides
    assert centroid_x(ln) < centroid_x(rn)


def test_synth_with_field_bank(tmp_path):
    from synth import dataset
    bank = field_bank([[1.0, 1.5]], vignetting=True)
    path = bank.save(tmp_path / "bank.npz")
    cfg = dataset.SynthConfig(camera="rdpd_set3", scenes=1, size=(48, 64), out=tmp_path / "d", format="npz",
                              psf_bank=path, device="cpu", distortion=False)
    record = dataset.generate(cfg)
    assert record["samples"][0]["psf_params"]["field_grid"] == [1, 2]


def test_train_pool_uses_the_bank(tmp_path):
    from train.loop import TrainError, load_config, synthetic_example
    path = field_bank([[1.0, 1.3]]).save(tmp_path / "bank.npz")
    cfg = load_config("rdpd", "tiny", {"psf_bank": str(path), "pool_image": 48, "patch": 48, "frames": 1,
                                       "device": "cpu"})
    ex = synthetic_example(cfg, 0)
    assert ex.meta["psf_params"]["field_grid"] == [1, 2]
    with pytest.raises(TrainError, match="does not render dual-pixel PSFs"):
        load_config("dc2", "tiny", {"psf_bank": str(path)})
    with pytest.raises(PSFBankError, match="missing.npz"):
        load_config("rdpd", "tiny", {"psf_bank": str(tmp_path / "missing.npz")})
