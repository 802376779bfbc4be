"""Contact sheets so a person can look at synthetic data: one row per sample.

DP rows: sharp, left, right, combined, signed CoC (diverging colour map, px).
W/UW rows: wide, ultra-wide, all-in-focus, refocus target, GT flow magnitude, occlusion.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from core.atomic import atomic_file  # noqa: E402
from synth.writers import linear_to_srgb  # noqa: E402


def show_image(ax, img: np.ndarray, title: str, linear: bool = True) -> None:
    """Draw an H x W (x C) image in [0, 1], titled, no axes; ``linear`` images are sRGB-encoded
    for display, others (e.g. DPDD's stored sRGB) are drawn as they are."""
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    ax.imshow(linear_to_srgb(img) if linear else np.clip(img, 0, 1), cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1)
    ax.set_title(title, fontsize=8)
    ax.axis("off")


def save_figure(fig, path: Path) -> Path:
    """Write ``fig`` as a PNG atomically (temp file, then rename) and close it."""
    try:
        with atomic_file(path) as tmp:
            fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)
    return Path(path)


def dp_contact_sheet(samples: list, path: Path, title: str = "") -> Path:
    """Rows of (sharp, L, R, combined, CoC map) for DP samples."""
    n = len(samples)
    fig, axes = plt.subplots(n, 5, figsize=(12.5, 2.6 * n), squeeze=False)
    lim = max(max(abs(float(s.coc.min())), abs(float(s.coc.max()))) for s in samples) or 1.0
    for row, s in zip(axes, samples):
        show_image(row[0], s.sharp, "sharp (target)")
        show_image(row[1], s.left, "left view")
        show_image(row[2], s.right, "right view")
        show_image(row[3], s.combined, "combined (input)")
        im = row[4].imshow(s.coc, cmap="coolwarm", vmin=-lim, vmax=lim)
        row[4].set_title("signed CoC (px)", fontsize=8)
        row[4].axis("off")
        fig.colorbar(im, ax=row[4], fraction=0.046, pad=0.04)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def dual_contact_sheet(samples: list, path: Path, title: str = "") -> Path:
    """Rows of (W, UW, all-in-focus, refocus target, |flow|, occlusion) for W/UW samples."""
    n = len(samples)
    fig, axes = plt.subplots(n, 6, figsize=(15, 2.6 * n), squeeze=False)
    for row, s in zip(axes, samples):
        show_image(row[0], s.wide, "wide (shallow DoF)")
        show_image(row[1], s.ultrawide, "ultra-wide (full FOV)")
        show_image(row[2], s.sharp, "all-in-focus")
        show_image(row[3], s.refocused, "refocus target")
        im = row[4].imshow(np.hypot(*np.moveaxis(s.flow_w_to_uw, -1, 0)), cmap="viridis")
        row[4].set_title("|flow W->UW| (UW px)", fontsize=8)
        row[4].axis("off")
        fig.colorbar(im, ax=row[4], fraction=0.046, pad=0.04)
        row[5].imshow(s.occlusion, cmap="gray")
        row[5].set_title(f"occluded in UW ({s.occlusion.mean():.1%})", fontsize=8)
        row[5].axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)
