"""Shared blocks: dynamic filter, ConvLSTM (seed 004 eq. 7-11), ASPP, kernel bank, radial map."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models.blocks import (
    ASPPBlock,
    ASPPLayer,
    ConvLSTMCell,
    SymmetricKernelBank,
    dynamic_filter_7x7,
    dynamic_filter_7x7_reference,
)
from models.radial import radial_map, radial_map_torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# -- dynamic filter ------------------------------------------------------------------------------


def test_dynamic_filter_matches_unfold_reference():
    img = torch.rand(2, 3, 13, 17)
    ker = torch.randn(2, 49, 13, 17)
    out = dynamic_filter_7x7(img, ker)
    ref = dynamic_filter_7x7_reference(img, ker)
    assert out.shape == img.shape
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_dynamic_filter_taps_are_row_major_offsets():
    img = torch.rand(1, 2, 9, 11)
    ker = torch.zeros(1, 49, 9, 11)
    ker[:, 24] = 1.0  # centre tap -> identity
    torch.testing.assert_close(dynamic_filter_7x7(img, ker), img)
    ker = torch.zeros(1, 49, 9, 11)
    ker[:, 3 * 7 + 4] = 1.0  # row 3 (centre), column 4: reads the pixel to the right
    out = dynamic_filter_7x7(img, ker)
    torch.testing.assert_close(out[..., :-1], img[..., 1:])
    torch.testing.assert_close(out[..., -1], img[..., -1])  # replicate border


# -- ConvLSTM -------------------------------------------------------------------------------------


def _lstm_by_equations(cell: ConvLSTMCell, x, h, c):
    """Seed 004 eq. 7-11 written out gate by gate, from separate weight slices."""
    n = cell.hidden_ch
    w, b = cell.gates.weight, cell.gates.bias
    wx, wh = w[:, : cell.in_ch], w[:, cell.in_ch :]

    def conv(k, inp, weight):
        return F.conv2d(inp, weight[k * n : (k + 1) * n], padding=1)

    i = torch.sigmoid(conv(0, x, wx) + conv(0, h, wh) + cell.w_ci * c + b[:n, None, None])
    f = torch.sigmoid(conv(1, x, wx) + conv(1, h, wh) + cell.w_cf * c + b[n : 2 * n, None, None])
    o = torch.sigmoid(conv(2, x, wx) + conv(2, h, wh) + cell.w_co * c + b[2 * n : 3 * n, None, None])
    c_new = f * c + i * torch.tanh(conv(3, x, wx) + conv(3, h, wh) + b[3 * n :, None, None])
    return o * torch.tanh(c_new), c_new


def test_convlstm_follows_seed_equations_with_peepholes():
    cell = ConvLSTMCell(5, 4).eval()
    with torch.no_grad():
        for p in (cell.w_ci, cell.w_cf, cell.w_co):
            p.normal_()
    x, h, c = torch.randn(2, 5, 6, 7), torch.randn(2, 4, 6, 7), torch.randn(2, 4, 6, 7)
    h1, c1 = cell(x, h, c)
    h2, c2 = _lstm_by_equations(cell, x, h, c)
    torch.testing.assert_close(h1, h2, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(c1, c2, atol=1e-5, rtol=1e-5)
    # the output-gate peephole reads C_{t-1} (eq. 9): changing it changes h but not c
    with torch.no_grad():
        cell.w_co.add_(1.0)
    h3, c3 = cell(x, h, c)
    torch.testing.assert_close(c3, c1)
    assert (h3 - h1).abs().max() > 1e-3


def test_convlstm_dropout_only_in_training():
    cell = ConvLSTMCell(3, 2, dropout=0.5)
    x, h, c = torch.rand(1, 3, 8, 8), torch.zeros(1, 2, 8, 8), torch.zeros(1, 2, 8, 8)
    cell.eval()
    a, b = cell(x, h, c), cell(x, h, c)
    torch.testing.assert_close(a[0], b[0])
    cell.train()
    t1, t2 = cell(x, h, c)[0], cell(x, h, c)[0]
    assert (t1 - t2).abs().max() > 0


# -- ASPP ----------------------------------------------------------------------------------------


def test_aspp_layer_taps_at_the_atrous_rates():
    layer = ASPPLayer(1, 1, rates=(1, 3))
    x = torch.zeros(1, 1, 15, 15)
    x[..., 7, 7] = 1.0
    with torch.no_grad():
        for br in layer.branches:
            br.weight.fill_(1.0)
            br.bias.zero_()
        y = layer(x)[0, 0]
    nz = {(r - 7, c - 7) for r, c in torch.nonzero(y).tolist()}
    expected = {(dy * r, dx * r) for r in (1, 3) for dy in (-1, 0, 1) for dx in (-1, 0, 1)}
    assert nz == expected


def test_aspp_block_channels_follow_table():
    blk = ASPPBlock(9, rates=(1, 3, 6, 12, 15, 18), channels=(16, 32, 32, 2))
    assert len(blk.body) == 4 + 3  # 4 atrous layers + 3 activations
    assert [len(m.branches) for m in blk.body if isinstance(m, ASPPLayer)] == [6] * 4
    assert blk(torch.rand(1, 9, 24, 24)).shape == (1, 2, 24, 24)


# -- kernel bank ---------------------------------------------------------------------------------


def _smooth_image(h=96, w=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(1, 3, h // 8 + 2, w // 8 + 2, generator=g)
    x = F.interpolate(low, size=(h + 16, w + 16), mode="bicubic", align_corners=False)[..., 8:-8, 8:-8]
    return x.clamp(0, 1)


def _one_hot(n, k, h, w):
    a = torch.zeros(1, n, h, w)
    a[:, k] = 1.0
    return a


@pytest.mark.parametrize("cfg", [(16, 9, 17), (4, 5, 9)])
def test_kernel_bank_inverse_restores_smooth_image(cfg):
    bank = SymmetricKernelBank(*cfg).eval()
    img = _smooth_image()
    k, kinv = bank.current_kernels(), bank.inverse_kernels()
    for n in range(cfg[0]):
        a = _one_hot(cfg[0], n, 96, 96)
        blurred = bank.apply_bank(img, k, a)
        restored = bank.apply_bank(blurred, kinv, a)
        crop = (slice(None), slice(None), slice(16, -16), slice(16, -16))
        psnr = -10 * torch.log10(((restored - img)[crop] ** 2).mean())
        assert psnr >= 40.0, f"kernel {n}: PSNR {psnr:.1f} dB"
        if n == cfg[0] - 1:  # the widest kernel really blurs: the inverse does real work
            assert -10 * torch.log10(((blurred - img)[crop] ** 2).mean()) < psnr - 5


def test_kernel_bank_is_symmetric_positive_unit_sum():
    bank = SymmetricKernelBank(6, 9, 17)
    with torch.no_grad():
        bank.half_raw.normal_()
    k = bank.kernels()
    torch.testing.assert_close(k, torch.flip(k, dims=[-1]))
    assert (k > 0).all()
    torch.testing.assert_close(k.sum(dim=(-2, -1)), torch.ones(6))


def test_kernel_bank_inverse_refreshed_on_load_and_eval():
    a, b = SymmetricKernelBank(4, 5, 9), SymmetricKernelBank(4, 5, 9)
    with torch.no_grad():
        a.half_raw.normal_()
    a.eval()
    assert "inverse" not in a.state_dict()  # derived, never stored
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(b.inverse, a.compute_inverse().detach())
    torch.testing.assert_close(b.current_kernels(), a.kernels().detach())
    # changing weights in training then switching to eval refreshes the buffer
    b.train()
    with torch.no_grad():
        b.half_raw.add_(0.5 * torch.randn_like(b.half_raw))
    stale = b.inverse.clone()
    b.eval()
    assert (b.inverse - stale).abs().max() > 1e-4
    torch.testing.assert_close(b.inverse, b.compute_inverse().detach())


def test_apply_bank_equals_per_pixel_mixed_kernel():
    n, s, h, w = 3, 5, 10, 12
    bank = torch.randn(n, s, s)  # not symmetric: checks orientation and the mixing identity
    x = torch.rand(2, 3, h, w)
    a = torch.softmax(torch.randn(2, n, h, w), dim=1)
    out = SymmetricKernelBank.apply_bank(x, bank, a)
    mixed = torch.einsum("bnhw,nk->bkhw", a, bank.flatten(1))  # K_ij = sum_n a_ij(n) K_n
    cols = F.unfold(F.pad(x, (2, 2, 2, 2), mode="replicate"), s).view(2, 3, s * s, h, w)
    ref = (cols * mixed.unsqueeze(1)).sum(dim=2)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


# -- radial map ----------------------------------------------------------------------------------


def test_radial_map_centre_corners_and_crops():
    full = radial_map(64, 96)
    assert full.shape == (64, 96) and full.dtype == np.float32
    assert full.min() < 0.02 and 0.98 < full.max() < 1.0
    assert np.isclose(full[0, 0], full[-1, -1]) and np.isclose(full[0, -1], full[-1, 0])
    crop = radial_map(16, 32, full_height=64, full_width=96, top=8, left=40)
    np.testing.assert_allclose(crop, full[8:24, 40:72], atol=1e-6)
    t = radial_map_torch(16, 32, 64, 96, 8, 40, batch=2)
    assert t.shape == (2, 1, 16, 32)
    np.testing.assert_allclose(t[1, 0].numpy(), crop)
    with pytest.raises(ValueError, match="does not fit"):
        radial_map(16, 32, full_height=64, full_width=96, top=60, left=0)


def test_channel_softmax_equals_torch_softmax_and_survives_large_logits():
    """UiD's mixing weights: the export-friendly form must give torch.softmax's values, also for
    logits whose exp would overflow without the max shift."""
    import torch

    from models.blocks import channel_softmax

    x = torch.randn(2, 8, 5, 7) * 30.0
    x[0, 3] += 200.0
    y = channel_softmax(x)
    assert torch.isfinite(y).all()
    assert torch.allclose(y, torch.softmax(x, dim=1), atol=1e-6)
    assert torch.allclose(y.sum(dim=1), torch.ones(2, 5, 7), atol=1e-6)


def test_clamp_mean_locked_restores_the_reference_means_that_the_clamp_moved():
    """A sharpened dark image: clamping its undershoots at 0 lifts the mean by ~10 %; the lock
    (UiD mobile's output, DC2's gated residual) cuts that error > 10x and stays in [0, 1];
    pixels of zero weight are left as clamped."""
    import torch

    from models.blocks import clamp_mean_locked

    torch.manual_seed(0)
    ref = torch.rand(1, 3, 32, 32) * 0.1  # dark scene, channel means ~0.05
    x = ref + torch.randn(1, 3, 32, 32) * 0.05  # zero-mean "sharpening", undershoots below 0
    plain = torch.clamp(x, 0.0, 1.0)
    lift = (plain.mean(dim=(-2, -1)) / ref.mean(dim=(-2, -1)) - 1).abs().max()
    locked = clamp_mean_locked(x, ref)
    err = (locked.mean(dim=(-2, -1)) / ref.mean(dim=(-2, -1)) - 1).abs().max()
    assert lift > 0.05 and err < lift / 10  # two passes: 12.5 % -> 0.6 %
    assert locked.min() >= 0 and locked.max() <= 1
    w = torch.ones(1, 1, 32, 32)
    w[..., :16] = 0
    half = clamp_mean_locked(x, ref, w)
    assert torch.equal(half[..., :16], plain[..., :16])
