"""``cli.py report``: the results store as tables and plots, Markdown and HTML.

The latest row of each series (kind, device, model, variant, target, precision, size, threads) is
shown; the latency table adds the ratio to the PyTorch eager baseline of the same device, model,
size and threads when the store has one, and the regression flags of that row. Plots (PNG):
latency per device and precision, parity PSNR per target with the precision thresholds, artifact
size, delegate coverage. Written whole through ``core.atomic.atomic_dir``.
"""
from __future__ import annotations

import html
import math
import re
from pathlib import Path

from core.atomic import atomic_dir

from . import store as st

BASELINE_TARGET = "pytorch"


def latest(rows: list[dict]) -> list[dict]:
    seen: dict = {}
    for r in rows:
        seen[tuple(r.get(k) for k in st.SERIES)] = r
    return list(seen.values())


def _f(v, fmt="{:.2f}") -> str:
    return "" if v is None else fmt.format(v)


def _coverage(text: str | None) -> float | None:
    m = re.search(r"(\d+)/(\d+) nodes", text or "")
    return int(m.group(1)) / int(m.group(2)) if m and int(m.group(2)) else None


def latency_table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    # speed-up = the PyTorch eager baseline's median / this row's (same device, model, size, threads)
    base = {(r["device"], r["model"], r["size"], r["threads"]): r["median_ms"] for r in rows
            if r["target"] == BASELINE_TARGET and r.get("median_ms")}
    cols = ["device", "model", "target", "precision", "size", "threads", "median ms", "p90 ms", "min ms", "first ms",
            "runs", "peak MB", "speed-up vs PyTorch", "delegate", "date", "regression"]
    body = []
    for r in sorted(rows, key=lambda r: (r["device"], r["model"], r["target"] or "", r["precision"] or "",
                                         r["size"] or "", r["threads"])):
        b = base.get((r["device"], r["model"], r["size"], r["threads"]))
        ratio = f"{b / r['median_ms']:.2f}" if b and r.get("median_ms") and r["target"] != BASELINE_TARGET else ""
        body.append([r["device"], r["model"], r["target"], r["precision"], r["size"], str(r["threads"]),
                     _f(r["median_ms"]), _f(r["p90_ms"]), _f(r["min_ms"]), _f(r["first_ms"]), str(r["runs"] or ""),
                     _f(r["peak_mem_mb"], "{:.0f}"), ratio, r["delegate"] or "", (r["date"] or "")[:16],
                     "; ".join(r.get("regressions") or []) or ""])
    return cols, body


def parity_table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    cols = ["device", "model", "target", "precision", "size", "worst PSNR dB", "verdict", "faults", "date"]
    body = [[r["device"], r["model"], r["target"], r["precision"], r["size"], _f(r["psnr_db"]), r["verdict"] or "",
             "; ".join((r.get("extra") or {}).get("faults") or []), (r["date"] or "")[:16]] for r in rows]
    return cols, body


def size_table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    seen = {}
    for r in rows:
        if r.get("artifact_bytes"):
            seen[(r["model"], r["target"], r["precision"], r["size"])] = r["artifact_bytes"]
    cols = ["model", "target", "precision", "size", "MB"]
    return cols, [[*k, f"{v / 1e6:.2f}"] for k, v in sorted(seen.items())]


def _plots(work: Path, lat: list[dict], par: list[dict]) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from export.request import MIN_PSNR

    out = []
    devices = sorted({r["device"] for r in lat})
    if lat:
        fig, axes = plt.subplots(len(devices), 1, figsize=(10, 1.5 + 0.3 * len(lat) + 0.6 * len(devices)),
                                 squeeze=False)
        for ax, d in zip(axes[:, 0], devices):
            rs = sorted((r for r in lat if r["device"] == d and r.get("median_ms")),
                        key=lambda r: (r["model"], r["target"], r["precision"], r["threads"]))
            labels = [f"{r['model']} {r['target']} {r['precision']} {r['size']} t{r['threads']}" for r in rs]
            precs = sorted({r["precision"] for r in rs})
            colours = {p: plt.cm.tab10(i) for i, p in enumerate(precs)}
            ax.barh(range(len(rs)), [r["median_ms"] for r in rs], color=[colours[r["precision"]] for r in rs],
                    xerr=[[0] * len(rs), [max(0.0, (r["p90_ms"] or r["median_ms"]) - r["median_ms"]) for r in rs]])
            ax.set_yticks(range(len(rs)), labels, fontsize=7)
            ax.invert_yaxis()
            ax.set_xscale("log")
            if rs:  # bars start at a decade below the fastest row
                ax.set_xlim(left=10 ** math.floor(math.log10(min(r["median_ms"] for r in rs) / 2)))
            ax.set_xlabel("median latency, ms (log; whisker: p90)")
            ax.set_title(f"latency on {d}", fontsize=9)
            ax.legend(handles=[plt.Rectangle((0, 0), 1, 1, color=c) for c in colours.values()], labels=list(colours),
                      fontsize=7, loc="lower right")
        fig.tight_layout()
        fig.savefig(work / "latency.png", dpi=100)
        plt.close(fig)
        out.append(("latency.png", "Latency per device and precision"))
    if par:
        rs = sorted(par, key=lambda r: (r["model"], r["target"], r["precision"]))
        fig, ax = plt.subplots(figsize=(9, 1.5 + 0.3 * len(rs)))
        ax.barh(range(len(rs)), [min(r["psnr_db"] or 0, 150) for r in rs],
                color=["tab:green" if r["verdict"] == "pass" else "tab:red" for r in rs])
        ax.set_yticks(range(len(rs)), [f"{r['model']} {r['target']} {r['precision']} on {r['device']}" for r in rs],
                      fontsize=7)
        ax.invert_yaxis()
        for p in ("fp32", "fp16", "int8"):
            ax.axvline(MIN_PSNR[p], ls="--", lw=0.8, color="grey")
            ax.text(MIN_PSNR[p], -0.6, p, fontsize=7, color="grey")
        ax.set_xlabel("worst output PSNR vs reference, dB (AI Hub definition; capped at 150)")
        ax.set_title("parity PSNR per target", fontsize=9)
        fig.tight_layout()
        fig.savefig(work / "parity.png", dpi=100)
        plt.close(fig)
        out.append(("parity.png", "Parity PSNR per target"))
    sizes = {}
    for r in [*lat, *par]:
        if r.get("artifact_bytes"):
            sizes[f"{r['model']} {r['target']} {r['precision']} {r['size']}"] = r["artifact_bytes"] / 1e6
    if sizes:
        _bar_chart(plt, work / "size.png", sizes, "tab:blue", "model file, MB", "artifact size")
        out.append(("size.png", "Artifact size"))
    cov = {}
    for r in lat:
        c = _coverage(r.get("delegate"))
        if c is not None:
            cov[f"{r['model']} {r['target']} {r['precision']} on {r['device']}"] = 100 * c
    if cov:
        _bar_chart(plt, work / "delegate.png", cov, "tab:purple", "graph nodes in the delegate, %",
                   "delegate coverage", xlim=(0, 100))
        out.append(("delegate.png", "Delegate coverage"))
    return out


def _bar_chart(plt, path: Path, values: dict, colour: str, xlabel: str, title: str, xlim=None) -> None:
    """One horizontal bar per key (sorted), labelled with the key: the size and coverage plots."""
    keys = sorted(values)
    fig, ax = plt.subplots(figsize=(9, 1.5 + 0.3 * len(keys)))
    ax.barh(range(len(keys)), [values[k] for k in keys], color=colour)
    ax.set_yticks(range(len(keys)), keys, fontsize=7)
    ax.invert_yaxis()
    if xlim:
        ax.set_xlim(*xlim)
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _md(cols, body) -> str:
    esc = lambda s: str(s).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in body]
    return "\n".join(lines)


def html_table(cols, body) -> str:
    """An HTML table (escaped) of ``cols`` and rows ``body``: the report's and the demo page's."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in body)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def write_report(store_path: str | Path, out: str | Path) -> list[Path]:
    """``report.md``, ``report.html`` and the plots in ``out`` (replaced whole); returns their paths."""
    rows = st.rows(store_path)
    lat = latest([r for r in rows if r["kind"] == "latency"])
    par = latest([r for r in rows if r["kind"] == "parity"])
    sections = [("Latency", latency_table(lat)), ("Parity against device outputs", parity_table(par)),
                ("Artifact size", size_table([*lat, *par]))]
    flagged = [f for r in rows for f in (r.get("regressions") or [])]
    out = Path(out)
    with atomic_dir(out, replace=True, what="report") as work:
        plots = _plots(work, lat, par)
        intro = (f"Results store `{store_path}`: {len(rows)} rows; the latest row of each series is shown "
                 "(series = device, model, variant, target, precision, size, threads). Latency in ms (median, "
                 "p90, min over warm runs; first = the first run, lazy initialisation included).")
        md = ["# Device test report", "", intro, ""]
        body = [f"<h1>Device test report</h1><p>{html.escape(intro)}</p>"]
        if flagged:
            md += ["## Regressions", ""] + [f"- {f}" for f in flagged] + [""]
            body.append("<h2>Regressions</h2><ul>" + "".join(f"<li>{html.escape(f)}</li>" for f in flagged) + "</ul>")
        for title, (cols, rs) in sections:
            md += [f"## {title}", "", _md(cols, rs) if rs else "(no rows)", ""]
            body.append(f"<h2>{html.escape(title)}</h2>" + (html_table(cols, rs) if rs else "<p>(no rows)</p>"))
        if plots:
            md += ["## Plots", ""] + [f"![{t}]({p})" for p, t in plots] + [""]
            body.append("<h2>Plots</h2>" + "".join(f'<figure><img src="{p}" alt="{html.escape(t)}">'
                                                   f"<figcaption>{html.escape(t)}</figcaption></figure>"
                                                   for p, t in plots))
        (work / "report.md").write_text("\n".join(md))
        style = ("body{font-family:sans-serif;max-width:1400px;margin:1em auto}table{border-collapse:collapse;"
                 "font-size:12px}td,th{border:1px solid #ccc;padding:2px 6px;text-align:left}img{max-width:100%}")
        (work / "report.html").write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>Device test "
                                          f"report</title><style>{style}</style></head><body>{''.join(body)}"
                                          "</body></html>")
    return [out / "report.md", out / "report.html", *[out / p for p, _ in plots]]
