"""Shared building blocks of RDPD, DC2 and UiD, written so that they export.

Everything here is convs, element-wise ops, pads and static slices: no ``unfold``, no FFT in
``forward`` (eval mode), no ``grid_sample``, no ``nn.LSTM``; padding is explicit.

- :func:`conv3x3`, :class:`ConvAct`, :class:`ResBlock`: the DRBNet-style conv blocks (MODELS.md 2).
- :class:`ConvLSTMCell`: seed 004 eq. 7-11, peepholes included, state passed explicitly.
- :class:`ASPPLayer` / :class:`ASPPBlock`: the fusion blocks of seed 001 table 1.
- :func:`dynamic_filter_7x7`: DRBNet's per-pixel 7x7 filter as 49 shifted multiply-adds.
- :class:`SymmetricKernelBank`: the UiD/K3DN kernel bank and its inverse (seed 003,
  ``K^-1 = F^-1(1 / F(K))``), the inverse held as a buffer so exported graphs hold no FFT.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

LRELU_SLOPE = 0.1  # DRBNet uses LeakyReLU(0.1) (MODELS.md 2)


def conv3x3(cin: int, cout: int, stride: int = 1, dilation: int = 1, bias: bool = True) -> nn.Conv2d:
    """3x3 conv with explicit integer zero padding (keeps H, W at stride 1)."""
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=bias)


class ConvAct(nn.Sequential):
    """3x3 conv (+ bias) followed by an activation (``"relu"``, ``"lrelu"`` or ``None``)."""

    def __init__(self, cin: int, cout: int, stride: int = 1, act: str | None = "lrelu"):
        layers: list[nn.Module] = [conv3x3(cin, cout, stride=stride)]
        if act == "relu":
            layers.append(nn.ReLU(inplace=False))
        elif act == "lrelu":
            layers.append(nn.LeakyReLU(LRELU_SLOPE))
        elif act is not None:
            raise ValueError(f"unknown activation {act!r}: use 'relu', 'lrelu' or None")
        super().__init__(*layers)


class ResBlock(nn.Module):
    """DRBNet residual block: ``x + conv(lrelu(conv(x)))`` (MODELS.md 2)."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv1 = conv3x3(ch, ch)
        self.act = nn.LeakyReLU(LRELU_SLOPE)
        self.conv2 = conv3x3(ch, ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.act(self.conv1(x)))


def res_stack(ch: int, n: int) -> nn.Sequential:
    """``n`` residual blocks at ``ch`` channels (identity when ``n == 0``)."""
    return nn.Sequential(*[ResBlock(ch) for _ in range(n)])


class UpConv(nn.Sequential):
    """x2 up-sampling by a 4x4 stride-2 transposed conv + LeakyReLU (DRBNet decoder)."""

    def __init__(self, cin: int, cout: int):
        super().__init__(nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1), nn.LeakyReLU(LRELU_SLOPE))


class ResizeConv(nn.Module):
    """x2 up-sampling by nearest x2 then a 3x3 conv + LeakyReLU: no transposed-conv
    checkerboard (a 4x4 stride-2 transposed conv weights the output pixels of each 2x2 phase
    differently; three in a row leave a 2-, 4- and 8-px periodic grid on flat regions)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = ConvAct(cin, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(upsample2(x))


def zero_mean(residual: torch.Tensor) -> torch.Tensor:
    """A residual with zero mean per image and channel: deblurring with a PSF that sums to 1
    keeps each channel's mean (the blur conserves it), so a restoration residual must too; this
    keeps the output's brightness and colour balance equal to the input's."""
    return residual - residual.mean(dim=(-2, -1), keepdim=True)


MEAN_LOCK_STEPS = 2  # re-centring passes after the clamp to [0, 1] (each cuts the clamp's bias ~3x)


def clamp_mean_locked(x: torch.Tensor, reference: torch.Tensor, weight: torch.Tensor | None = None,
                      steps: int = MEAN_LOCK_STEPS) -> torch.Tensor:
    """``x`` clamped to [0, 1], then ``steps`` passes moving its pixels (by ``weight``, default all
    equally) by the channel-mean error against ``reference`` left after the clamp. A blur whose PSF
    sums to 1 conserves the channel means, so a restoration must keep the input's; cutting
    sharpened edges at 0 or 1 would lift dark scenes (+1 % on a phone scene with a third of its
    pixels near black) or dim bright ones. Reductions, arithmetic and clamps only (exports)."""
    out = torch.clamp(x, 0.0, 1.0)
    for _ in range(steps):
        if weight is None:
            out = torch.clamp(out - (out - reference).mean(dim=(-2, -1), keepdim=True), 0.0, 1.0)
        else:
            err = (out - reference).sum(dim=(-2, -1), keepdim=True) / (weight.sum(dim=(-2, -1), keepdim=True) + 1e-6)
            out = torch.clamp(out - weight * err, 0.0, 1.0)
    return out


def channel_softmax(x: torch.Tensor) -> torch.Tensor:
    """Softmax over the channels (dim 1) as ``exp(x - max) / sum``: the values of
    ``torch.softmax(x, 1)`` to float rounding, as element-wise ops and two channel reductions.
    A Softmax over a non-last axis of an NCHW map is slow on the runtimes (onnxruntime
    transposes around it: UiD's two full-resolution mixing softmaxes were 12 % of its fp32 time)."""
    e = torch.exp(x - x.amax(dim=1, keepdim=True))
    return e / e.sum(dim=1, keepdim=True)


def upsample2(x: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour x2 up-sampling (export friendly on every target)."""
    return F.interpolate(x, scale_factor=2.0, mode="nearest")


def upsample(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Nearest-neighbour up-sampling by an integer factor."""
    return F.interpolate(x, scale_factor=float(factor), mode="nearest")


# ---------------------------------------------------------------------------------------------
# ConvLSTM (seed 004, eq. 7-11)
# ---------------------------------------------------------------------------------------------


class ConvLSTMCell(nn.Module):
    """Peephole ConvLSTM cell of seed 004, eq. 7-11, with explicit state.

    ``i = s(Wxi*X + Whi*H + wci o C_prev + bi)`` (7), ``f = s(... + wcf o C_prev)`` (8),
    ``o = s(... + wco o C_prev)`` (9, the seed uses ``C_{t-1}`` here),
    ``C = f o C_prev + i o tanh(Wxc*X + Whc*H + bc)`` (10), ``H = o o tanh(C)`` (11).
    The four input and hidden convolutions are one 3x3 conv over ``cat(X, H)``.
    Choice (facts silent): peephole weights ``w_c*`` are per channel (shape ``[1, C, 1, 1]``)
    rather than per pixel, so the cell stays fully convolutional (any H, W); they start at 0.
    The forget-gate bias starts at 1 (a common LSTM choice).
    """

    def __init__(self, in_ch: int, hidden_ch: int, kernel_size: int = 3, dropout: float = 0.0):
        super().__init__()
        self.in_ch = in_ch
        self.hidden_ch = hidden_ch
        self.gates = nn.Conv2d(in_ch + hidden_ch, 4 * hidden_ch, kernel_size, padding=kernel_size // 2)
        self.w_ci = nn.Parameter(torch.zeros(1, hidden_ch, 1, 1))
        self.w_cf = nn.Parameter(torch.zeros(1, hidden_ch, 1, 1))
        self.w_co = nn.Parameter(torch.zeros(1, hidden_ch, 1, 1))
        self.dropout = float(dropout)
        with torch.no_grad():
            self.gates.bias[hidden_ch : 2 * hidden_ch].fill_(1.0)

    def forward(
        self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One step: ``(X_t, H_{t-1}, C_{t-1}) -> (H_t, C_t)``."""
        if self.training and self.dropout > 0:  # cell-input dropout (0.4 in training, seed 004)
            x = F.dropout(x, self.dropout, training=True)
        g = self.gates(torch.cat([x, h], dim=1))
        n = self.hidden_ch
        gi, gf, go, gc = g[:, :n], g[:, n : 2 * n], g[:, 2 * n : 3 * n], g[:, 3 * n :]
        i = torch.sigmoid(gi + self.w_ci * c)  # eq. 7
        f = torch.sigmoid(gf + self.w_cf * c)  # eq. 8
        o = torch.sigmoid(go + self.w_co * c)  # eq. 9
        c_next = f * c + i * torch.tanh(gc)  # eq. 10
        h_next = o * torch.tanh(c_next)  # eq. 11
        return h_next, c_next


# ---------------------------------------------------------------------------------------------
# ASPP (seed 001, table 1)
# ---------------------------------------------------------------------------------------------


class ASPPLayer(nn.Module):
    """One atrous layer: parallel 3x3 convs at each rate, outputs summed (DeepLab-v2 style).

    Choice (facts silent): the branches are summed rather than concatenated + 1x1-projected, so
    each layer outputs exactly the channel count that seed 001 table 1 lists.
    """

    def __init__(self, cin: int, cout: int, rates: Sequence[int]):
        super().__init__()
        self.branches = nn.ModuleList([conv3x3(cin, cout, dilation=int(r)) for r in rates])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.branches[0](x)
        for b in self.branches[1:]:
            y = y + b(x)
        return y


class ASPPBlock(nn.Module):
    """A fusion block of seed 001 table 1: one ASPP layer per entry of ``channels``.

    LeakyReLU between layers; the last layer is linear (2 channels = W and UW mask logits).
    """

    def __init__(self, cin: int, rates: Sequence[int], channels: Sequence[int]):
        super().__init__()
        layers: list[nn.Module] = []
        c = cin
        for k, cout in enumerate(channels):
            layers.append(ASPPLayer(c, cout, rates))
            if k < len(channels) - 1:
                layers.append(nn.LeakyReLU(LRELU_SLOPE))
            c = cout
        self.body = nn.Sequential(*layers)
        self.rates = tuple(int(r) for r in rates)
        self.channels = tuple(int(ch) for ch in channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


# ---------------------------------------------------------------------------------------------
# Per-pixel dynamic filter (DRBNet, MODELS.md 2)
# ---------------------------------------------------------------------------------------------


def dynamic_filter_7x7(image: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Per-pixel 7x7 filter: ``out[p] = sum_k kernel[k, p] * pad(image)[p + offset_k]``.

    ``image`` is ``[B, C, H, W]``, ``kernel`` ``[B, 49, H, W]`` (row-major taps, shared by all
    ``C`` channels, not normalised). Replicate padding by 3, then 49 static slices each
    multiplied by one kernel channel and summed: converts to Core ML, LiteRT and XNNPACK
    (no ``unfold``).
    """
    h, w = image.shape[-2], image.shape[-1]
    padded = F.pad(image, (3, 3, 3, 3), mode="replicate")
    out = padded[:, :, 0:h, 0:w] * kernel[:, 0:1]
    for k in range(1, 49):
        dy, dx = divmod(k, 7)
        out = out + padded[:, :, dy : dy + h, dx : dx + w] * kernel[:, k : k + 1]
    return out


def dynamic_filter_7x7_reference(image: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """``unfold``-based reference of :func:`dynamic_filter_7x7` (tests only, not exportable)."""
    b, c, h, w = image.shape
    cols = F.unfold(F.pad(image, (3, 3, 3, 3), mode="replicate"), 7)  # [B, C*49, H*W]
    cols = cols.view(b, c, 49, h, w)
    return (cols * kernel.unsqueeze(1)).sum(dim=2)


# ---------------------------------------------------------------------------------------------
# Symmetric kernel bank and its inverse (seed 003, K3DN)
# ---------------------------------------------------------------------------------------------


def _gaussian_half(size: int, sigma: float) -> torch.Tensor:
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * sigma**2))
    g = g / g.sum()
    return g[:, : size // 2 + 1]


def inverse_kernels_fft(
    kernels: torch.Tensor, inv_size: int, fft_size: int = 64, eps: float = 1e-2, clip: float = 100.0
) -> torch.Tensor:
    """``K^-1 = IFFT(1 / FFT(K))`` (seed 003), regularised, for a ``[N, k, k]`` bank.

    ``1 / F`` is taken as ``conj(F) / (|F|^2 + eps)`` (the small epsilon) on an ``fft_size``
    grid with the kernel centred at the origin; non-finite values are set to 0. The result is
    cropped to ``inv_size`` x ``inv_size`` around its centre under a Gaussian taper (sigma
    ``inv_size / 4``) and rescaled so that ``sum(K) * sum(K^-1) = 1``: plain cropping leaves
    ringing tails whose loss shifts the DC gain by tens of percent. Finally clipped to
    ``[-clip, clip]`` (K3DN clips at 100). Runs in float64; returns the input's dtype.
    """
    n, k, _ = kernels.shape
    if inv_size > fft_size or k > fft_size:
        raise ValueError(f"fft_size {fft_size} must be >= kernel size {k} and inv_size {inv_size}")
    kd = kernels.to(torch.float64)
    grid = kd.new_zeros(n, fft_size, fft_size)
    grid[:, :k, :k] = kd
    grid = torch.roll(grid, shifts=(-(k // 2), -(k // 2)), dims=(-2, -1))  # centre -> origin
    spec = torch.fft.fft2(grid)
    inv = torch.fft.ifft2(spec.conj() / (spec.abs() ** 2 + eps)).real
    inv = torch.where(torch.isfinite(inv), inv, torch.zeros_like(inv))
    inv = torch.roll(inv, shifts=(inv_size // 2, inv_size // 2), dims=(-2, -1))[:, :inv_size, :inv_size]
    r = torch.arange(inv_size, dtype=torch.float64, device=inv.device) - inv_size // 2
    inv = inv * torch.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * (inv_size / 4) ** 2))
    dc = inv.sum(dim=(-2, -1), keepdim=True) * kd.sum(dim=(-2, -1), keepdim=True)
    inv = torch.where(dc.abs() > 1e-6, inv / dc, inv)
    return inv.clamp(-clip, clip).to(kernels.dtype)


class SymmetricKernelBank(nn.Module):
    """N learnable blur kernels, mirror-symmetric, with their inverses (seed 003, K3DN).

    Each ``k x k`` kernel is built from a ``k x (k//2+1)`` half mirrored left-right (MODELS.md 3).
    Choice (documented): the kernels act on images, so they are made positive (softplus) and
    normalised to unit sum (a blur keeps the mean brightness) instead of the K3DN L2
    normalisation. Init: Gaussians of sigma 0.3 (nearly a delta: in focus) to ``size / 6``.
    The inverses (:func:`inverse_kernels_fft`) live in the non-persistent buffer
    ``inverse`` (the kernels themselves in ``kernel_cache``), refreshed by :meth:`refresh_inverse` at build, after ``load_state_dict`` and
    when switching to eval; in training mode they are recomputed in the forward pass so the
    kernels learn through both paths. Eval-mode graphs therefore contain only convs.
    """

    def __init__(self, n_kernels: int = 16, size: int = 9, inv_size: int = 17, fft_size: int = 64,
                 eps: float = 1e-2, sigma_range: tuple[float, float] | None = None):
        super().__init__()
        if size % 2 == 0 or inv_size % 2 == 0:
            raise ValueError("kernel sizes must be odd")
        self.n_kernels, self.size, self.inv_size = n_kernels, size, inv_size
        self.fft_size, self.eps = fft_size, eps
        lo, hi = sigma_range if sigma_range is not None else (0.3, size / 6.0)  # +-3 sigma fits
        sigmas = [lo + (hi - lo) * k / max(n_kernels - 1, 1) for k in range(n_kernels)]
        halves = torch.stack([_gaussian_half(size, sg) for sg in sigmas])  # probabilities > 0
        # inverse of softplus, so that softplus(raw) == the Gaussian half (up to the unit sum)
        raw = torch.log(torch.expm1((halves * 10.0).clamp_min(1e-6)))
        self.half_raw = nn.Parameter(raw.float())
        self.register_buffer("inverse", torch.zeros(n_kernels, inv_size, inv_size), persistent=False)
        self.register_buffer("kernel_cache", torch.zeros(n_kernels, size, size), persistent=False)
        self.register_load_state_dict_post_hook(lambda module, incompatible: module.refresh_inverse())
        self.refresh_inverse()

    def kernels(self) -> torch.Tensor:
        """The bank ``[N, k, k]``: mirrored halves, positive, unit sum."""
        half = F.softplus(self.half_raw)
        full = torch.cat([half, torch.flip(half[:, :, :-1], dims=[-1])], dim=-1)
        return full / full.sum(dim=(-2, -1), keepdim=True)

    def compute_inverse(self) -> torch.Tensor:
        return inverse_kernels_fft(self.kernels(), self.inv_size, self.fft_size, self.eps)

    @torch.no_grad()
    def refresh_inverse(self) -> None:
        """Recompute the inverse-kernel buffer from the current kernels (uses the FFT)."""
        if self.half_raw.device.type == "meta":
            return
        self.kernel_cache.copy_(self.kernels())
        self.inverse.copy_(self.compute_inverse())

    def train(self, mode: bool = True) -> "SymmetricKernelBank":
        super().train(mode)
        if not mode:
            self.refresh_inverse()
        return self

    def current_kernels(self) -> torch.Tensor:
        """``[N, k, k]`` kernels: live in training, the cached buffer in eval (a constant)."""
        return self.kernels() if self.training else self.kernel_cache

    def inverse_kernels(self) -> torch.Tensor:
        """``[N, s, s]`` inverse kernels: live (FFT) in training, the buffer in eval."""
        return self.compute_inverse() if self.training else self.inverse

    @staticmethod
    def apply_bank(x: torch.Tensor, bank: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """``sum_n weights[:, n] * (x conv bank[n])`` per channel (per-pixel kernel mixing).

        ``x`` ``[B, C, H, W]``, ``bank`` ``[N, s, s]``, ``weights`` ``[B, N, H, W]``. Mixing the
        responses equals convolving with the per-pixel mixed kernel ``sum_n a(n) K_n``
        (seed 003, kernel retrieval) and needs only one depthwise conv. Replicate padding.
        """
        b, c, h, w = x.shape
        n, s = bank.shape[0], bank.shape[-1]
        weight = bank.unsqueeze(1).repeat(c, 1, 1, 1)  # [C*N, 1, s, s], channel-major groups
        xp = F.pad(x, (s // 2, s // 2, s // 2, s // 2), mode="replicate")
        y = F.conv2d(xp, weight, groups=c).view(b, c, n, h, w)
        return (y * weights.unsqueeze(1)).sum(dim=2)
