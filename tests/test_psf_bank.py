"""PSF bank file: round trip, interpolation, and clear errors on bad files."""
import json

import numpy as np
import pytest

from calibration.dp_psf import PSFParams, dual_pixel_psf
from calibration.psf_bank import PSFBank, PSFBankError


@pytest.fixture()
def bank():
    return PSFBank.from_model([-6, -3, 0, 3, 6], [PSFParams(3, 0.6, 0.2), PSFParams(6, 0.8, 0.3)], camera="test")


def test_round_trip(tmp_path, bank):
    path = bank.save(tmp_path / "bank.npz")
    again = PSFBank.load(path)
    np.testing.assert_array_equal(again.left, bank.left)
    np.testing.assert_array_equal(again.right, bank.right)
    np.testing.assert_array_equal(again.radii, bank.radii)
    assert again.params == bank.params and again.camera == "test"
    assert list(tmp_path.iterdir()) == [path]  # no temp file left behind


def test_grid_values_and_interpolation(bank):
    left, right = bank.psf(3.0, 1)
    ref_l, _ = dual_pixel_psf(3.0, PSFParams(6, 0.8, 0.3), bank.kernel_size)
    np.testing.assert_allclose(left, ref_l, atol=1e-7)
    mid_l, mid_r = bank.psf(4.5, 0)
    assert mid_l.sum() == pytest.approx(0.5, abs=1e-6) and mid_r.sum() == pytest.approx(0.5, abs=1e-6)
    np.testing.assert_allclose(mid_l, 0.5 * (bank.left[0, 3] + bank.left[0, 4]), atol=1e-7)
    with pytest.raises(ValueError, match="outside"):
        bank.psf(9.0)


def test_corrupt_file(tmp_path):
    bad = tmp_path / "corrupt.npz"
    bad.write_bytes(b"PK\x03\x04 definitely not a zip")
    with pytest.raises(PSFBankError, match="corrupt.npz"):
        PSFBank.load(bad)
    with pytest.raises(PSFBankError, match="not found"):
        PSFBank.load(tmp_path / "missing.npz")


def test_foreign_and_future_files(tmp_path, bank):
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, weights=np.zeros(3))
    with pytest.raises(PSFBankError, match="foreign.npz.*missing"):
        PSFBank.load(foreign)
    header = bank.header()
    header["schema_version"] = 99
    future = tmp_path / "future.npz"
    np.savez(future, header=np.array(json.dumps(header)), radii=bank.radii, left=bank.left, right=bank.right)
    with pytest.raises(PSFBankError, match="schema version 99"):
        PSFBank.load(future)
    header["schema_version"], header["format"] = 1, "something-else"
    np.savez(future, header=np.array(json.dumps(header)), radii=bank.radii, left=bank.left, right=bank.right)
    with pytest.raises(PSFBankError, match="foreign"):
        PSFBank.load(future)


def test_nan_kernels_rejected(tmp_path, bank):
    bank.left[0, 0, 0, 0] = np.nan
    path = tmp_path / "nan.npz"
    np.savez(path, header=np.array(json.dumps(bank.header())), radii=bank.radii, left=bank.left, right=bank.right)
    with pytest.raises(PSFBankError, match="NaN"):
        PSFBank.load(path)
