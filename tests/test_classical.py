"""Classical DP deblurring with calibrated kernels: per-patch scale from the two views, Wiener."""
import numpy as np
import pytest
from scipy.signal import fftconvolve

from calibration.classical import classical_deblur
from calibration.dp_psf import PSFParams, dual_pixel_psf
from calibration.kernel_stack import Capture, KernelSet, kernel_centre, magnify_kernel
from core.metrics import psnr


def _blur(img, k):
    f = k.shape[0] // 2
    return fftconvolve(np.pad(img, f, mode="reflect"), k, "valid")


def test_classical_beats_the_input_and_finds_the_scales():
    rng = np.random.default_rng(0)
    h = w = 192
    P = 96
    # a textured scene: smoothed noise plus edges
    sharp = fftconvolve(rng.random((h + 8, w + 8)), np.ones((3, 3)) / 9, "valid")[:h, :w]
    sharp[:, 40:44] = 1.0
    sharp[130:133, :] = 0.0
    # calibrated kernels: 2x2 grid of 96-px patches, reference |r| = 3 px, 1 px off-centre
    F = 13
    kl, kr = dual_pixel_psf(3.0, PSFParams(9, 0.5, 0.2), F, offset=(-1.0, 0.5))
    kl, kr = 2 * kl, 2 * kr
    L4 = np.stack([kl] * 4).astype(np.float32)
    R4 = np.stack([kr] * 4).astype(np.float32)
    ks = KernelSet((2, 2), P, [Capture("ref", L4, R4)], (0, 0, h, w), (h, w))
    # the scene: each patch at its own defocus scale (the right column in front of the focus)
    truth = np.array([[1.5, -1.2], [0.8, -1.8]])
    left = np.zeros((h, w))
    right = np.zeros((h, w))
    c = kernel_centre(kl + kr)
    for i in range(2):
        for j in range(2):
            s = truth[i, j]
            size = 2 * int(np.ceil(abs(s) * F / 2)) + 1
            a, b = magnify_kernel(kl, s, size, c), magnify_kernel(kr, s, size, c)
            sl = (slice(P * i, P * i + P), slice(P * j, P * j + P))
            left[sl] = _blur(sharp, a)[sl]
            right[sl] = _blur(sharp, b)[sl]
    left += rng.normal(0, 0.002, left.shape)
    right += rng.normal(0, 0.002, right.shape)
    before = 0.5 * (left + right)
    out, scales = classical_deblur(left, right, ks, return_scales=True)
    np.testing.assert_allclose(scales, truth, atol=0.15)
    inner = (slice(8, -8), slice(8, -8))
    gain = psnr(out[inner], sharp[inner]) - psnr(before[inner], sharp[inner])
    assert gain > 2.0, gain
    assert out.shape == left.shape and out.dtype == np.float32


def test_classical_rejects_mismatched_views():
    ks = KernelSet((1, 1), 8, [Capture("r", np.ones((1, 3, 3), np.float32) / 9, np.ones((1, 3, 3), np.float32) / 9)])
    with pytest.raises(ValueError, match="must be equal"):
        classical_deblur(np.zeros((8, 8)), np.zeros((8, 9)), ks)
