"""The calibration report: ``report.html`` + PNGs + ``fit.json`` in one folder (written whole).

Figures: measured vs fitted kernels side by side per field cell (the capture with the most
blur), the NCC map over the field (Butterworth and half-disk), fitted parameters over the field,
the signed radius vs DP disparity line across focus settings, the vignetting maps.
"""
from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np

from calibration.bank_fit import to_json
from calibration.kernel_stack import KernelSet
from calibration.psf_fit import model_kernels
from core.atomic import atomic_dir


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _reference_capture(result: dict) -> int:
    return int(np.argmax([np.median([abs(c["radius"]) for c in cap["cells"]]) for cap in result["captures"]]))


def _kernels_figure(ks: KernelSet, result: dict, path: Path) -> None:
    plt = _plt()
    rows, cols = ks.grid
    ci = _reference_capture(result)
    cap, cells = ks.captures[ci], result["captures"][ci]["cells"]
    f = ks.kernel_size
    fig, axes = plt.subplots(rows, cols, figsize=(1.9 * cols, 1.15 * rows + 0.6), squeeze=False)
    for p, c in enumerate(cells):
        fit = c.get("joint") or None
        if fit is None:
            sl, sr = c["separate"]["left"], c["separate"]["right"]
            ml, mr = model_kernels(sl, f)[0], model_kernels(sr, f)[1]
        else:
            ml, mr = model_kernels(fit, f)
        meas = np.concatenate([cap.left[p], cap.right[p]], 1)
        model = np.concatenate([ml, mr], 1)
        tile = np.concatenate([meas, model], 0)
        ax = axes[p // cols][p % cols]
        ax.imshow(tile, cmap="magma", interpolation="nearest")
        ax.set_title(f"({c['row']},{c['col']}) r={c['radius']:.1f} ncc={min(c['ncc']):.3f}", fontsize=6)
        ax.axis("off")
    fig.suptitle(f"{cap.name}: measured (top: left | right) vs fitted Butterworth (bottom)", fontsize=9)
    _save(fig, path)


def _map(ax, values, title, grid, fmt="{:.2f}", cmap="viridis", vmin=None, vmax=None):
    im = ax.imshow(np.asarray(values).reshape(grid), cmap=cmap, vmin=vmin, vmax=vmax)
    for (i, j), v in np.ndenumerate(np.asarray(values).reshape(grid)):
        ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize=6, color="w")
    ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
    return im


def _ncc_figure(result: dict, path: Path) -> None:
    plt = _plt()
    grid = tuple(result["grid"])
    caps = result["captures"]
    bw = np.mean([[min(c["ncc"]) for c in cap["cells"]] for cap in caps], axis=0)
    panels = [(bw, "Butterworth NCC (worse view, mean over captures)")]
    if "disk_separate" in caps[0]["cells"][0]:
        dk = np.mean([[min(f.ncc[v] for v, f in c["disk_separate"].items()) for c in cap["cells"]] for cap in caps], 0)
        panels.append((dk, "half-disk NCC"))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.2), squeeze=False)
    for ax, (vals, title) in zip(axes[0], panels):
        _map(ax, vals, title, grid, "{:.3f}", "RdYlGn", 0.8, 1.0)
    _save(fig, path)


def _params_figure(result: dict, path: Path) -> None:
    plt = _plt()
    grid = tuple(result["grid"])
    ci = _reference_capture(result)
    cells = result["captures"][ci]["cells"]
    panels = [([c["radius"] for c in cells], "signed radius r (px)", "{:.1f}")]
    for k, fmt in (("order", "{:.0f}"), ("alpha", "{:.2f}"), ("beta", "{:.2f}"), ("kappa", "{:.2f}")):
        panels.append(([c["params"][k] for c in cells], k, fmt))
    panels.append(([c["disparity"] for c in cells], "DP disparity (px)", "{:.2f}"))
    fig, axes = plt.subplots(2, 3, figsize=(12, 6))
    for ax, (vals, title, fmt) in zip(axes.ravel(), panels):
        _map(ax, vals, title, grid, fmt)
    fig.suptitle(f"fitted parameters over the field ({result['captures'][ci]['name']})", fontsize=9)
    _save(fig, path)


def _radius_disparity_figure(result: dict, path: Path) -> None:
    plt = _plt()
    rd = result["summary"]["radius_disparity"]
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for cap in result["captures"]:
        ax.scatter([c["radius"] for c in cap["cells"]], [c["disparity"] for c in cap["cells"]], s=10,
                   label=f"{cap['name']} (focus {cap['focus']})")
    if rd.get("line"):
        line = rd["line"]
        r = np.array([p[0] for p in rd["points"]])
        xs = np.linspace(min(r.min(), 0), max(r.max(), 0), 10)
        ax.plot(xs, line["slope"] * xs + line["intercept"], "k--",
                label=f"d = {line['slope']:.3f} r + {line['intercept']:.3f} (R2 {line['r2']:.3f})")
    else:
        ax.set_title(rd.get("reason", ""), fontsize=7)
    ax.set_xlabel("signed radius r (px)")
    ax.set_ylabel("DP disparity (px)")
    ax.legend(fontsize=6)
    ax.grid(alpha=0.3)
    _save(fig, path)


def _vignetting_figure(ks: KernelSet, path: Path) -> None:
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    gl, gr = ks.vignetting["left"], ks.vignetting["right"]
    for ax, (g, title) in zip(axes, ((gl, "left gain"), (gr, "right gain"), (gl / gr, "left / right"))):
        im = ax.imshow(g, cmap="viridis")
        fig.colorbar(im, ax=ax, fraction=0.046)
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    _save(fig, path)


def _save(fig, path: Path) -> None:
    plt = _plt()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(folder: str | Path, ks: KernelSet, result: dict, bank_path: str | Path | None = None,
                 force: bool = True) -> Path:
    """Write report.html, the PNGs and fit.json into ``folder`` (atomically, replacing it)."""
    folder = Path(folder)
    with atomic_dir(folder, replace=force, what="calibration report") as tmp:
        figs = [("kernels.png", "Measured vs fitted kernels per field cell", lambda p: _kernels_figure(ks, result, p)),
                ("ncc_map.png", "Normalised cross-correlation over the field", lambda p: _ncc_figure(result, p)),
                ("params_map.png", "Fitted parameters over the field", lambda p: _params_figure(result, p)),
                ("radius_disparity.png", "Signed radius vs DP disparity", lambda p: _radius_disparity_figure(result, p))]
        if ks.vignetting:
            figs.append(("vignetting.png", "Vignetting gain maps", lambda p: _vignetting_figure(ks, p)))
        for name, _, draw in figs:
            draw(tmp / name)
        data = to_json(result)
        (tmp / "fit.json").write_text(json.dumps(data, indent=1))
        s = data["summary"]
        rows = [(k, v) for k, v in s.items() if k not in ("poor_cells", "radius_disparity")]
        rd = s["radius_disparity"]
        rows.append(("radius_disparity", rd.get("line") or rd.get("reason")))
        poor = ", ".join(f"{p['capture']} ({p['row']},{p['col']}) {p['ncc']}" for p in s["poor_cells"]) or "none"
        table = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(_fmt(v))}</td></tr>" for k, v in rows)
        body = "".join(f"<h2>{html.escape(t)}</h2><img src='{n}' style='max-width:100%'>" for n, t, _ in figs)
        (tmp / "report.html").write_text(
            "<!doctype html><html><head><meta charset='utf-8'><title>DP PSF calibration</title>"
            "<style>body{font-family:sans-serif;max-width:1200px;margin:auto}td{padding:2px 8px}</style></head><body>"
            f"<h1>DP PSF calibration</h1><p>bank: {html.escape(str(bank_path or '-'))}; grid {result['grid']}, "
            f"{result['patch']}-px patches; captures: {html.escape(', '.join(c['name'] for c in result['captures']))}</p>"
            f"<table>{table}</table><p><b>Poor fits (NCC &lt; {result['poor_threshold']}):</b> {html.escape(poor)}</p>"
            f"{body}<p>Full per-cell results: <a href='fit.json'>fit.json</a></p></body></html>")
    return folder / "report.html"


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    if isinstance(v, dict):
        return ", ".join(f"{k}={_fmt(x)}" for k, x in v.items())
    return str(v)
