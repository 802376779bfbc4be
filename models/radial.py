"""Radial distance map ``r / r_corner`` (seed 004 "radial distance patch", seed 001 "radial mask").

0 at the centre of the *full* image, 1 at its corners; a crop or tile at ``(top, left)`` of a
``full_height x full_width`` image gets its own slice of the full map. Pixel centres are at
half-integer coordinates; ``r_corner = sqrt((H/2)^2 + (W/2)^2)`` is the distance from the
image centre to the image's corner point, so corner pixels read slightly below 1.
"""
from __future__ import annotations

import numpy as np
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
    y = np.arange(top, top + height, dtype=np.float64) + 0.5 - fh / 2.0
    x = np.arange(left, left + width, dtype=np.float64) + 0.5 - fw / 2.0
    r = np.sqrt(y[:, None] ** 2 + x[None, :] ** 2)
    r_corner = np.sqrt((fh / 2.0) ** 2 + (fw / 2.0) ** 2)
    return (r / r_corner).astype(np.float32)


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
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The same map as a ``[batch, 1, height, width]`` tensor (NCHW, ready to concatenate)."""
    m = torch.from_numpy(radial_map(height, width, full_height, full_width, top, left))
    return m.to(device=device, dtype=dtype).expand(batch, 1, height, width).contiguous()
