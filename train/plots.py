"""Pictures of training and evaluation, for people who would rather look than read.

- :func:`loss_curve`: a run's ``metrics.csv`` as loss (raw and smoothed) and learning rate
  against step; the loop writes it to ``metrics.png`` when a run ends.
- :func:`evaluation_sheet`: one row per test example and task: input, model output, target and
  the model's error map; ``cli.py evaluate --save-images DIR`` writes it.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from core.errors import UserError
from synth.preview import plt, save_figure, show_image


def read_metrics(path: Path) -> dict[str, np.ndarray]:
    """Columns of a run's ``metrics.csv`` (step, loss, lr, samples_per_s) as float arrays."""
    path = Path(path)
    try:
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise UserError(f"{path}: cannot read the training log ({exc.strerror})") from None
    if not rows:
        raise UserError(f"{path}: the training log has no rows yet")
    try:
        return {k: np.array([float(r[k]) for r in rows]) for k in rows[0]}
    except (TypeError, ValueError):
        raise UserError(f"{path}: not a training log (expected numeric columns step, loss, lr, samples_per_s)") from None


def loss_curve(metrics_csv: Path, path: Path, title: str = "", window: int = 20) -> Path:
    """Loss per logged step (light) with its running mean over ``window`` entries (the batches
    differ a lot in difficulty, so the raw curve alone is hard to read) and the learning rate."""
    m = read_metrics(metrics_csv)
    step, loss = m["step"], m["loss"]
    k = max(1, min(window, len(loss)))
    smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.plot(step, loss, color="tab:blue", alpha=0.3, lw=0.8, label="loss (logged batch)")
    ax.plot(step[k - 1:], smooth, color="tab:blue", lw=1.8, label=f"running mean of {k}")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.grid(alpha=0.3, which="both")
    if "lr" in m:
        lr_ax = ax.twinx()
        lr_ax.plot(step, m["lr"], color="tab:orange", lw=1.0, label="learning rate")
        lr_ax.set_ylabel("learning rate", color="tab:orange")
        lr_ax.set_yscale("log")
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title(title or Path(metrics_csv).parent.name, fontsize=10)
    return save_figure(fig, path)


def _error_map(ax, pred: np.ndarray, target: np.ndarray, vmax: float) -> None:
    err = np.abs(pred - target).mean(axis=0)
    im = ax.imshow(err, cmap="magma", vmin=0, vmax=vmax)
    ax.set_title("|model - target|", fontsize=8)
    ax.axis("off")
    plt.colorbar(im, ax=ax, fraction=0.046, pad=0.04)


def evaluation_sheet(rows: list[dict], path: Path, title: str = "", linear: bool = True) -> Path:
    """``rows``: dicts with ``label`` and C x H x W float arrays ``input``, ``model``,
    ``target`` in [0, 1]; one figure row each, PSNR in the titles. ``linear``: the values are
    linear (the synthetic engine's) and get sRGB-encoded for display; False for sRGB data (DPDD)."""
    if not rows:
        raise UserError("no examples to draw")
    from core.metrics import psnr

    hwc = lambda a: np.moveaxis(np.asarray(a, np.float32), 0, -1)  # noqa: E731
    vmax = max(float(np.abs(r["model"] - r["target"]).mean(axis=0).max()) for r in rows) or 1.0
    fig, axes = plt.subplots(len(rows), 4, figsize=(10.5, 2.7 * len(rows)), squeeze=False)
    for ax, r in zip(axes, rows):
        show_image(ax[0], hwc(r["input"]), f"{r['label']}: input {psnr(r['input'], r['target']):.2f} dB", linear)
        show_image(ax[1], hwc(r["model"]), f"model {psnr(r['model'], r['target']):.2f} dB", linear)
        show_image(ax[2], hwc(r["target"]), "target", linear)
        _error_map(ax[3], r["model"], r["target"], vmax)
    height = fig.get_figheight()
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / height))
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)
