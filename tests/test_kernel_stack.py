"""Kernel stacks (calibrate import): validation with errors naming the file, centres, the folder
round trip, and signed magnification."""
import json

import numpy as np
import pytest

from calibration.dp_psf import PSFParams, dual_pixel_psf
from calibration.kernel_stack import (KernelSet, KernelStackError, import_stacks, kernel_centre, magnify_kernel,
                                      parse_crop)


def _stack(rows=2, cols=3, size=21, radius=5.0, offset=(0.0, 0.0)):
    left, right = dual_pixel_psf(radius, PSFParams(6, 0.6, 0.2), size, offset=offset)
    L = np.stack([2 * left] * (rows * cols)).astype(np.float32)
    R = np.stack([2 * right] * (rows * cols)).astype(np.float32)
    return L, R


def _write(tmp_path, L, R):
    np.save(tmp_path / "L.npy", L)
    np.save(tmp_path / "R.npy", R)
    return tmp_path / "L.npy", tmp_path / "R.npy"


def test_import_round_trip_records_centres(tmp_path):
    L, R = _stack(offset=(-1.0, 0.5))
    lp, rp = _write(tmp_path, L, R)
    ks = import_stacks(lp, rp, (2, 3), 168, crop=(10, 20, 336, 504))
    out = ks.save(tmp_path / "kernels")
    again = KernelSet.load(out)
    np.testing.assert_array_equal(again.captures[0].left, L)
    assert again.grid == (2, 3) and again.patch == 168 and again.crop == (10, 20, 336, 504)
    manifest = json.loads((out / "kernels.json").read_text())
    cl = np.array(manifest["captures"][0]["centres_left"])
    cr = np.array(manifest["captures"][0]["centres_right"])
    # disk centre moved up 1 px: both views' centroids are 1 px high; left right of right (r > 0)
    np.testing.assert_allclose(cl[:, 0], -1.0, atol=0.05)
    np.testing.assert_allclose(0.5 * (cl[:, 1] + cr[:, 1]), 0.5, atol=0.05)
    assert (cl[:, 1] > cr[:, 1] + 1.0).all()
    np.testing.assert_allclose(again.cell_centres()[4], [10 + 1.5 * 168, 20 + 1.5 * 168])


@pytest.mark.parametrize("mutate, message", [
    (lambda L: L[:5], "5 kernels, but the grid 2x3 needs 6"),
    (lambda L: L[:, :20, :], "square kernels"),
    (lambda L: L.astype(np.int32), "floating point"),
    (lambda L: L * 1.1, "kernel 0 sums to 1.1"),
    (lambda L: np.where(np.arange(21) == 10, np.nan, L).astype(np.float32), "NaN"),
    (lambda L: L - 0.01, "negative"),
])
def test_bad_stacks_name_the_file(tmp_path, mutate, message):
    L, R = _stack()
    lp, rp = _write(tmp_path, mutate(L), R)
    with pytest.raises(KernelStackError, match="L.npy") as info:
        import_stacks(lp, rp, (2, 3), 168)
    assert message in str(info.value)


def test_mismatched_and_missing(tmp_path):
    L, _ = _stack(size=21)
    _, R = _stack(size=23)
    lp, rp = _write(tmp_path, L, R)
    with pytest.raises(KernelStackError, match="differ in shape"):
        import_stacks(lp, rp, (2, 3), 168)
    with pytest.raises(KernelStackError, match="nope.npy: kernel file not found"):
        import_stacks(tmp_path / "nope.npy", rp, (2, 3), 168)
    with pytest.raises(KernelStackError, match="--crop"):
        import_stacks(lp, lp, (2, 3), 168, crop=(0, 0, 100, 100))
    with pytest.raises(KernelStackError, match="four integers"):
        parse_crop("1,2,3")
    with pytest.raises(KernelStackError, match="not a kernels folder"):
        KernelSet.load(tmp_path)


def test_failed_save_leaves_old_folder(tmp_path):
    L, R = _stack()
    lp, rp = _write(tmp_path, L, R)
    ks = import_stacks(lp, rp, (2, 3), 168)
    out = ks.save(tmp_path / "kernels")
    before = (out / "kernels.json").read_text()
    ks.captures[0].left = object()  # cannot be saved
    with pytest.raises(Exception):
        ks.save(out, force=True)
    assert (out / "kernels.json").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["L.npy", "R.npy", "kernels"]


def test_magnify_scales_flips_and_recentres():
    left, _ = dual_pixel_psf(4.0, PSFParams(3, 0.6, 0.2), 15, offset=(1.0, -0.5))
    left = 2 * left
    big = magnify_kernel(left, 2.0, 31)
    assert big.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(kernel_centre(big), (0, 0), atol=0.05)
    ref, _ = dual_pixel_psf(8.0, PSFParams(3, 0.6, 0.2), 31)
    from calibration.dp_psf import cross_correlation
    assert cross_correlation(big, magnify_kernel(2 * ref, 1.0, 31)) > 0.97  # both centroid-centred
    flipped = magnify_kernel(left, -2.0, 31)
    np.testing.assert_allclose(flipped, big[::-1, ::-1], atol=1e-9)
    tiny = magnify_kernel(left, 0.01, 5)
    assert tiny[2, 2] == pytest.approx(1.0) and tiny.sum() == pytest.approx(1.0)
    # second moment scales with s^2
    def spread(k):
        yy, xx = np.mgrid[:k.shape[0], :k.shape[1]]
        cy = (k * yy).sum() / k.sum()
        return ((k * ((yy - cy) ** 2)).sum() / k.sum())
    assert spread(magnify_kernel(left, 1.5, 31)) / spread(left) == pytest.approx(2.25, rel=0.05)
