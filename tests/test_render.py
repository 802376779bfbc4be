"""Layered DP renderer (seed 004, section 3): analytic cases and fast == reference."""
import cv2
import numpy as np
import pytest

from calibration.dp_psf import PSFParams, dp_disparity_px
from calibration.psf_bank import PSFBank
from synth.render import (BankPSF, ParametricPSF, RenderError, assign_layers, disparity_map, render_dp,
                                render_dp_reference)

PSF = ParametricPSF(PSFParams(3, 0.6, 0.2))


def _texture(h, w, seed=0, c=3):
    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur(rng.random((h, w, c)).astype(np.float32), (0, 0), 1.0)


def _psnr(a, b):
    return 10 * np.log10(1.0 / np.mean((a.astype(np.float64) - b) ** 2))


def test_in_focus_plane_renders_unchanged():
    img = _texture(48, 64)
    views = render_dp(img, np.zeros((48, 64)), PSF, device="cpu")
    for v in (views.left, views.right, views.combined):
        np.testing.assert_allclose(v, img, atol=1e-6)


def test_uniform_scene_stays_uniform():
    rng = np.random.default_rng(1)
    coc = cv2.resize(rng.uniform(-12, 12, (6, 8)), (64, 48), interpolation=cv2.INTER_NEAREST)
    img = np.full((48, 64, 3), 0.3, np.float32)
    for render in (render_dp, render_dp_reference):
        views = render(img, coc, PSF)
        for v in (views.left, views.right):
            np.testing.assert_allclose(v, 0.3, atol=1e-5)


def test_fast_equals_reference():
    rng = np.random.default_rng(2)
    h, w = 96, 128
    coc = np.full((h, w), 8.0)
    for _ in range(25):
        cv2.circle(coc, tuple(int(v) for v in rng.integers(0, [w, h])), int(rng.integers(4, 25)),
                   float(rng.uniform(-15, 15)), -1)
    img = _texture(h, w, 3)
    fast = render_dp(img, coc, PSF, max_layers=24, device="cpu", tile_fft_sizes=(32, 48, 64))
    ref = render_dp_reference(img, coc, PSF, max_layers=24)
    assert _psnr(fast.left, ref.left) >= 50 and _psnr(fast.right, ref.right) >= 50
    np.testing.assert_array_equal(fast.layer_radii, ref.layer_radii)


@pytest.mark.parametrize("coc", [5.0, -5.0, 9.0])
def test_dp_disparity_has_sign_of_coc(coc):
    img = _texture(128, 128, 4, c=1)
    views = render_dp(img, np.full((128, 128), coc), PSF, device="cpu")
    (shift_x, shift_y), _ = cv2.phaseCorrelate(views.right[..., 0].astype(np.float64),
                                               views.left[..., 0].astype(np.float64))
    assert np.sign(shift_x) == np.sign(coc)
    # a point source renders as the PSF itself: its centroid shift is the DP disparity
    point = np.zeros((64, 64, 1), np.float32)
    point[32, 32] = 1.0
    pv = render_dp(point, np.full((64, 64), coc), PSF, device="cpu")
    xs = np.arange(64)
    cx = lambda im: float((im[..., 0].sum(0) * xs).sum() / im.sum())
    cy = lambda im: float((im[..., 0].sum(1) * xs).sum() / im.sum())
    assert cx(pv.left) - cx(pv.right) == pytest.approx(dp_disparity_px(coc, PSF.params), abs=1e-3)
    assert cy(pv.left) == pytest.approx(cy(pv.right), abs=1e-5)  # horizontal only (float32 FFT rounding)
    disp = disparity_map(np.full((4, 4), coc), PSF)
    assert disp[0, 0] == pytest.approx(dp_disparity_px(coc, PSF.params), rel=1e-6)


def test_sharp_foreground_occludes_blurred_background():
    img = _texture(64, 64, 5)
    coc = np.full((64, 64), 10.0)
    coc[16:48, 16:48] = 0.0  # an in-focus square in front of a blurred background
    views = render_dp(img, coc, PSF, device="cpu")
    np.testing.assert_allclose(views.combined[16:48, 16:48], img[16:48, 16:48], atol=1e-5)
    assert np.abs(views.combined[:8] - img[:8]).mean() > 0.01  # the background did blur


def test_bank_psf_matches_parametric():
    bank = PSFBank.from_model(np.arange(-10, 11), [PSF.params])
    img = _texture(48, 48, 6)
    coc = np.tile(np.linspace(-10, 10, 48).round(), (48, 1))
    a = render_dp(img, coc, PSF, device="cpu")
    b = render_dp(img, coc, BankPSF(bank), device="cpu")
    assert _psnr(a.left, b.left) > 60


def test_layers_capped_and_ordered():
    coc = np.linspace(-40, 40, 10000).reshape(100, 100)
    labels, radii = assign_layers(coc, max_layers=64)
    assert radii.size == 64 and np.all(np.diff(radii) > 0)
    assert labels.min() == 0 and labels.max() == 63
    labels, radii = assign_layers(np.round(coc), max_layers=500)
    assert radii.size == 81  # integer CoCs: one layer each


def test_bad_inputs():
    img = np.zeros((8, 8, 3), np.float32)
    with pytest.raises(RenderError, match="differ in size"):
        render_dp(img, np.zeros((8, 9)), PSF)
    coc = np.zeros((8, 8))
    coc[0, 0] = np.nan
    with pytest.raises(RenderError, match="NaN"):
        render_dp_reference(img, coc, PSF)


def _dead_leaves_case(h=160, w=192, seed=3, texture="smooth"):
    """A scene whose layers span CoC -30..+8 px, so several pyramid levels are used."""
    rng = np.random.default_rng(seed)
    coc = np.full((h, w), 6.0)
    for _ in range(40):
        cv2.circle(coc, tuple(int(v) for v in rng.integers(0, [w, h])), int(rng.integers(4, 40)),
                   float(rng.uniform(-30, 8)), -1)
    img = _texture(h, w, seed) if texture == "smooth" else rng.random((h, w, 3)).astype(np.float32)
    return img, coc


@pytest.mark.parametrize("texture,seed", [("smooth", 3), ("white_noise", 3), ("white_noise", 5)])
def test_pyramid_render_equals_reference_within_50db(texture, seed):
    """Seed 5 with white noise is the worst of seeds 3-5: 53.7 dB at the shipped error budget
    (1e-2), 49.0 dB at 2e-2, so a looser budget fails here."""
    from synth.render import _SpectrumCache
    import torch
    img, coc = _dead_leaves_case(seed=seed, texture=texture)
    spectra = _SpectrumCache(PSF, torch.device("cpu"))
    fast = render_dp(img, coc, PSF, max_layers=48, device="cpu", spectra=spectra)
    ref = render_dp_reference(img, coc, PSF, max_layers=48)
    assert max(spectra._factors.values()) >= 3  # the coarse levels were exercised
    assert _psnr(fast.left, ref.left) >= 50 and _psnr(fast.right, ref.right) >= 50
    exact = render_dp(img, coc, PSF, max_layers=48, device="cpu", max_error=0)
    assert _psnr(exact.left, ref.left) >= 100  # max_error=0: exact up to float32 rounding
    two = render_dp(img, coc, PSF, max_layers=48, device="cpu", threads=2)
    np.testing.assert_allclose(two.left, fast.left, atol=1e-5)


def test_decimated_kernel_keeps_brightness_and_error_bound_holds():
    """up(k_s * down(x)) keeps a constant's level; on random [0, 1] inputs the error never exceeds
    the worst-case bound, and on white noise its RMS matches the white-noise figure."""
    from synth.render import _pyramid_up, decimated_kernel, decimation_error
    kernel = PSF(-24.0)[0] / PSF(-24.0)[0].sum()
    for f in (2, 4):
        small = decimated_kernel(kernel, f)
        assert abs(float(small.sum()) - 1.0) < 1e-3
        worst, white = decimation_error(kernel, f)
        rng = np.random.default_rng(f)
        n = 64 * f  # input size, a multiple of f; zero frame of the kernel size around it
        pad = f * -(-(kernel.shape[0] + 4 * f) // f)
        x = np.zeros((n + 2 * pad, n + 2 * pad), np.float32)
        x[pad:-pad, pad:-pad] = rng.random((n, n))
        exact = cv2.filter2D(x, -1, np.ascontiguousarray(kernel[::-1, ::-1]).astype(np.float32),
                             borderType=cv2.BORDER_CONSTANT)
        down = cv2.resize(x, (x.shape[1] // f, x.shape[0] // f), interpolation=cv2.INTER_AREA)
        low = cv2.filter2D(down, -1, np.ascontiguousarray(small[::-1, ::-1]), borderType=cv2.BORDER_CONSTANT)
        approx = _pyramid_up(low[..., None], f)[..., 0]
        err = (approx - exact)[2 * f:-2 * f, 2 * f:-2 * f]
        assert np.abs(err).max() <= worst
        centred = x - 0.5 * (x > 0)  # zero-mean noise of variance 1/12 inside the frame
        e2 = cv2.filter2D(centred, -1, np.ascontiguousarray(kernel[::-1, ::-1]).astype(np.float32),
                          borderType=cv2.BORDER_CONSTANT)
        d2 = cv2.resize(centred, (x.shape[1] // f, x.shape[0] // f), interpolation=cv2.INTER_AREA)
        a2 = _pyramid_up(cv2.filter2D(d2, -1, np.ascontiguousarray(small[::-1, ::-1]),
                                      borderType=cv2.BORDER_CONSTANT)[..., None], f)[..., 0]
        rms = float(np.sqrt(np.mean((a2 - e2)[pad:-pad, pad:-pad] ** 2)))
        assert rms == pytest.approx(white * np.sqrt(1 / 12), rel=0.35)


def test_render_threads_must_be_positive():
    with pytest.raises(RenderError, match="threads"):
        render_dp(np.zeros((8, 8, 3), np.float32), np.zeros((8, 8)), PSF, threads=0)


def test_thread_default_is_safe():
    """The thread policy: PyTorch runs one thread inside the renderer whatever the caller set (its
    barriers cost 10-20x beside a busy process) and whatever ``threads`` asks (those are scipy.fft
    workers); the default is one worker; the caller's setting is restored afterwards."""
    import inspect

    import torch

    import synth.render as render
    assert inspect.signature(render_dp).parameters["threads"].default == 1
    seen = []

    def psf(radius):
        seen.append((torch.get_num_threads(), render._FFT_WORKERS[0]))
        return PSF(radius)

    img, coc = _texture(24, 24), np.where(np.arange(24)[:, None] < 12, -3.0, 2.0) * np.ones((1, 24))
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for threads, workers in ((1, 1), (2, 2)):
            seen.clear()
            render_dp(img, coc, psf, device="cpu", threads=threads, spectra=render._SpectrumCache(psf, torch.device("cpu")))
            assert seen and set(seen) == {(1, workers)}
        assert torch.get_num_threads() == 2 and render._FFT_WORKERS[0] == 1
    finally:
        torch.set_num_threads(old)
