"""Radial distance map ``r / r_corner`` (seed 004 "radial distance patch", seed 001 "radial mask").

0 at the centre of the *full* image, 1 at its corners; a crop or tile at ``(top, left)`` of a
``full_height x full_width`` image gets its own slice of the full map. Pixel centres are at
half-integer coordinates; ``r_corner = sqrt((H/2)^2 + (W/2)^2)`` is the distance from the
image centre to the image's corner point, so corner pixels read slightly below 1.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # radial_map (NumPy) is on the runtime path, which never imports PyTorch
    import torch


def radial_map(
    height: int,
    width: int,
    full_height: int | None = None,
    full_width: int | None = None,
    top: int = 0,
    left: int = 0,
) -> np.ndarray:
    """``[height, width]`` float32 map of ``r / r_corner`` for a crop of the full image."""
    fh = height if full_height is None else int(full_height)
    fw = width if full_width is None else int(full_width)
    if height <= 0 or width <= 0:
        raise ValueError(f"crop size must be positive, got {height}x{width}")
    if top < 0 or left < 0 or top + height > fh or left + width > fw:
        raise ValueError(
            f"crop {height}x{width} at (top={top}, left={left}) does not fit in the full image {fh}x{fw}"
        )
    r_corner = np.sqrt((fh / 2.0) ** 2 + (fw / 2.0) ** 2)
    # coordinates / r_corner in float64 (exact for any image size), the per-pixel hypot in float32:
    # one float32 pass over the map instead of four float64 ones (0.36 -> 0.04 s at 3 MP)
    y = ((np.arange(top, top + height, dtype=np.float64) + 0.5 - fh / 2.0) / r_corner).astype(np.float32)
    x = ((np.arange(left, left + width, dtype=np.float64) + 0.5 - fw / 2.0) / r_corner).astype(np.float32)
    return np.hypot(y[:, None], x[None, :])


def radial_map_torch(
    height: int,
    width: int,
    full_height: int | None = None,
    full_width: int | None = None,
    top: int = 0,
    left: int = 0,
    *,
    batch: int = 1,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """The same map as a ``[batch, 1, height, width]`` tensor (NCHW, ready to concatenate),
    float32 unless ``dtype`` says otherwise."""
    import torch

    m = torch.from_numpy(radial_map(height, width, full_height, full_width, top, left))
    return m.to(device=device, dtype=dtype or torch.float32).expand(batch, 1, height, width).contiguous()
