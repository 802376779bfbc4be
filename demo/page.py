"""The demo's page, ``reports/demo/index.html``: every stage's pictures, tables and the command that
reproduces it, in one folder with relative paths and no network resources (published whole).
The latency, parity and size tables and plots are ``device_tests.report``'s.
"""
from __future__ import annotations

import html
import json
import shutil
from pathlib import Path

import cv2
import numpy as np

from core.atomic import atomic_dir

PY = "python cli.py"
STYLE = ("body{font-family:sans-serif;max-width:1200px;margin:1em auto;padding:0 1em;color:#222}"
         "table{border-collapse:collapse;font-size:12px;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 6px;"
         "text-align:left}img,video{max-width:100%;image-rendering:auto}pre{background:#f4f4f4;padding:.5em;"
         "overflow-x:auto;font-size:12px}figure{display:inline-block;margin:.3em;vertical-align:top}"
         "figcaption{font-size:12px;color:#555}.big img,.big video{width:100%}.hero img,.sweep img{width:384px}.pass{color:#080}.fail{color:#b00}")


def _e(x) -> str:
    return html.escape(str(x))


def cmd(*lines: str) -> str:
    return "<p>Reproduce:</p><pre>" + _e("\n".join(lines)) + "</pre>"


def png8(src: str | Path, dst: Path, min_width: int = 0, linear: bool = False) -> str:
    """Copy an image (8- or 16-bit, grey or colour) as an 8-bit PNG, upscaled (nearest) to at least
    ``min_width``; ``linear`` values (DP sensor data) are exposed to their 99.5th percentile and
    sRGB-encoded for display. Returns the file name."""
    from synth.writers import linear_to_srgb

    a = cv2.imread(str(src), cv2.IMREAD_UNCHANGED)
    if a is None:
        raise OSError(f"{src}: could not read the image for the demo page")
    x = a.astype(np.float32) / (65535.0 if a.dtype == np.uint16 else 255.0)
    if linear:
        x = linear_to_srgb(x / max(float(np.percentile(x, 99.5)), 1e-6))
    a = np.round(np.clip(x, 0, 1) * 255).astype(np.uint8)
    if min_width and a.shape[1] < min_width:
        f = int(np.ceil(min_width / a.shape[1]))
        a = cv2.resize(a, (a.shape[1] * f, a.shape[0] * f), interpolation=cv2.INTER_NEAREST)
    dst.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(dst), a):
        raise OSError(f"{dst}: could not write the image")
    return dst.name


def fig(src: str, caption: str, cls: str = "") -> str:
    return (f"<figure class='{cls}'><img src='{_e(src)}' alt='{_e(caption)}'>"
            f"<figcaption>{_e(caption)}</figcaption></figure>")


def table(cols, rows) -> str:
    from device_tests.report import html_table

    return html_table(list(cols), [[str(v) for v in r] for r in rows])


def _f(v, fmt="{:.1f}") -> str:
    return "" if v is None else fmt.format(v)


def times_section(times: list[dict]) -> str:
    rows = [(t["stage"], t["status"], _f(t["seconds"]), _f(t.get("cpu_seconds")), _f(t.get("first_seconds")),
             _f(t.get("first_cpu_seconds"))) for t in times]
    total = sum(t["seconds"] for t in times)
    first = sum(t.get("first_seconds") or t["seconds"] for t in times)
    return ("<h2>Stages</h2>" + table(("stage", "status", "seconds", "CPU s", "first run s", "first run CPU s"), rows)
            + f"<p>Total {total:.0f} s this run ({first:.0f} s with every stage run). The budget: "
            "<code>make demo</code> within 20 minutes on 2 cores including the install (docs/BENCHMARKS.md).</p>"
            + cmd("make demo", "python cli.py demo --redo sweeps   # one stage again",
                  "python cli.py demo --all-exports   # also DC2's slowest conversions"))


def captures_section(cfg, res: dict, assets: Path) -> str:
    from runtime_py.captures import open_capture
    from runtime_py.captures.preview import capture_preview

    items = [("pixel_burst", res["pixel_burst"][0], "Pixel DP burst (capture-app PGM), first frame"),
             ("pixel4_png", res["pixel4_png"], "Pixel 4 DP pair, 14-bit PNG + white sheet (Xin et al. layout)"),
             ("dpdd_objects", res["dpdd_objects"], "DPDD-layout DP pair (Canon, RGB) of named objects: "
              + ", ".join(o["name"] for o in res["objects"])),
             ("iphone_bundle", res["iphone_bundle"], "iPhone-style UW + W bundle with disparity")]
    figs = []
    for name, path, caption in items:
        capture_preview(open_capture(path), assets / f"capture_{name}.png", height=192)
        figs.append(fig(f"assets/capture_{name}.png", caption))
    return ("<h2>1. Sample captures in the device formats</h2>" + "".join(figs)
            + cmd(*[f"{PY} inspect {p} --preview preview.png" for _, p, _ in items]))


def calibration_section(cfg, res: dict, assets: Path) -> str:
    root = cfg.out / "calibration"
    rep = root / "bank_report"
    figs = [fig(f"assets/{png8(rep / n, assets / f'calib_{n}')}", t) for n, t in
            (("kernels.png", "measured vs fitted kernels per field cell"),
             ("radius_disparity.png", "signed radius vs DP disparity"), ("ncc_map.png", "fit NCC over the field"))
            if (rep / n).is_file()]
    line = res.get("radius_disparity") or {}
    rows = [("kernels", res["kernels"]), ("Butterworth NCC mean / min",
                                          f"{res['butterworth_ncc_mean']:.4f} / {res['butterworth_ncc_min']:.4f}"),
            ("half-disk NCC mean", _f(res.get("disk_ncc_mean"), "{:.4f}")),
            ("radius-disparity line", f"d = {line['slope']:.4f} r + {line['intercept']:.4f} (R2 {line['r2']:.3f})"
             if line else "-")]
    rows += [(f"median |r| at '{k}'", f"{v['recovered']} px (truth at the field centre {v['truth']} px)")
             for k, v in res["median_radius_px"].items()]
    g, k = res["grid"], res["kernel_size"]
    return ("<h2>2. Calibration: a chart through a known PSF bank, estimated and fitted</h2>"
            f"<p>Captures {res['capture']} (14-bit DP PNG pairs at two focus settings, a white sheet), "
            f"grid {g[0]}x{g[1]}, {k}-px kernels, {res['iterations']} iterations.</p>" + table(("figure", "value"), rows)
            + "".join(figs)
            + cmd(f"{PY} calibrate estimate --captures {root}/captures --white {root}/white --chart {root}/chart.json "
                  f"--grid {g[0]}x{g[1]} --kernel-size {k} --iterations {res['iterations']} --out kernels/",
                  f"{PY} calibrate fit kernels/ --out bank.npz"))


def export_section(cfg, rows: list[dict]) -> str:
    def verdict(r):
        if r["status"] in ("refused", "skipped"):
            return r["status"]
        if r["verdict"] == "not run":
            return "converted, not run"
        return r["verdict"]
    body = [(r["model"], r["target"], r["precision"], verdict(r), _f(r.get("psnr_random")), _f(r.get("psnr_realistic")),
             _f((r.get("bytes") or 0) / 1e6 if r.get("bytes") else None, "{:.2f}"),
             "reused" if r.get("reused") else _f(r.get("seconds")), r.get("reason") or "")
            for r in sorted(rows, key=lambda r: (r["model"], r["target"], r["precision"]))]
    h, w = cfg.export_size
    return ("<h2>3. Export to every target, verified on the real runtimes</h2>"
            "<p>Worst output PSNR against PyTorch fp32 (random / realistic inputs). Core ML converts on Linux "
            "but runs only on macOS: <i>converted, not run</i>, no parity is claimed. <i>skipped</i>: DC2's slowest "
            "conversions (its graph is the largest; ExecuTorch int8 alone takes about 7 minutes on a quiet 2-core "
            "machine) are left out of the default demo to keep <code>make demo</code> within 20 minutes; each row "
            "gives its command, and <code>python cli.py demo --all-exports</code> makes them all.</p>"
            + table(("model", "target", "precision", "verdict", "PSNR rnd dB", "PSNR real dB", "MB", "seconds", "note"),
                    body)
            + cmd(*[f"{PY} export --model all --target all --precision {p} --size {h}x{w} --calibration-count "
                    f"{cfg.calibration_count} --out {cfg.out}/artifacts" for p in cfg.precisions]))


def parity_section(cfg, res: dict) -> str:
    if not res.get("artifact"):
        return f"<h2>4. Parity bundle</h2><p>Not made: {_e(res.get('reason'))}</p>"
    rows = [(r["runtime"], r["verdict"], _f(r.get("psnr"), "{:.2f}"), _f(r.get("max_abs"), "{:.3g}"),
             ", ".join(f"{k} {v}" for k, v in (r.get("verdicts") or {}).items()),
             r.get("reason") or "; ".join(r.get("faults") or [])) for r in res["rows"]]
    b = cfg.out / "parity" / "bundle"
    return (f"<h2>4. Parity bundle for a phone app, checked on this host</h2><p>{_e(res['model'])} "
            f"{_e(res['target'])} {_e(res['precision'])}: the bundle holds the model file, realistic inputs and "
            "PyTorch reference outputs; here every runner this host has plays the phone.</p>"
            + table(("runtime", "verdict", "worst PSNR dB", "max |diff|", "per precision", "note"), rows)
            + cmd(f"{PY} parity bundle --artifact {res['artifact']} --inputs 2 --out {b}",
                  f"{PY} parity host --bundle {b} --store {cfg.store}"))


def runs_section(cfg, res: dict, assets: Path) -> str:
    parts = ["<h2>5. The models on the captures, through their exported artifacts</h2>"]
    for m, r in res.items():
        if "error" in r:
            parts.append(f"<p>{_e(m)}: not run ({_e(r['error'])})</p>")
            continue
        from runtime_py.captures.preview import LINEAR_KINDS

        kind = json.loads((Path(r["path"]) / "run.json").read_text()).get("kind")
        name = png8(Path(r["path"]) / "comparison.png", assets / f"run_{m}.png", min_width=512,
                    linear=kind in LINEAR_KINDS)
        if r["role"] == "sequence":
            what = f"{m} on the {r['frames']}-frame Pixel DP burst, state carried frame to frame (last frame: input | output)"
            rep = f"{PY} run --model {m} --capture {r['capture']} --artifact {r['artifact']} --out out/{m}   # one frame"
        elif r["role"] == "dual_camera":
            x, y = r["focus"]
            what = f"{m}: refocus on ({x}, {y}) at aperture {r['aperture']} from UW + W + disparity (W | output)"
            rep = (f"{PY} run --model {m} --capture {r['capture']} --artifact {r['artifact']} --focus {x},{y} "
                   f"--aperture {r['aperture']} --out out/{m}")
        else:
            what = f"{m}: refocus on the prompt {r['prompt']['flag']} (DP views' mean | output)"
            rep = (f"{PY} run --model {m} --capture {r['capture']} --artifact {r['artifact']} {r['prompt']['flag']} "
                   f"--out out/{m}   # + mask.png, prompt.png")
        shown = " (linear sensor data, shown exposed and sRGB-encoded)" if kind in LINEAR_KINDS else ""
        parts.append(f"<div class='big'>{fig('assets/' + name, what + ' on ' + r['runtime'] + shown)}</div>")
        if r["role"] == "prompted":
            parts.append(prompt_part(m, r, assets))
        parts.append(cmd(rep))
    return "".join(parts)


def prompt_part(m: str, r: dict, assets: Path) -> str:
    """The prompted run's figure (prompt on the input, the mask, the result) and how well the mask
    matches the named object's true region."""
    rec = json.loads((Path(r["path"]) / "run.json").read_text()).get("prompt") or {}
    shutil.copy2(Path(r["path"]) / "prompt.png", assets / f"prompt_{m}.png")
    iou = f"; IoU with the true region of {r['prompt']['text']!r}: {r['mask_iou']:.2f}" if "mask_iou" in r else ""
    return (f"<div class='big'>{fig(f'assets/prompt_{m}.png', 'prompt, mask, refocused result')}</div>"
            f"<p>The text prompt &quot;{_e(r['prompt']['text'])}&quot; -> MiniLM query -> the prompt mask head "
            f"({_e(rec.get('mask_runtime', '?'))}) on the DP views: {_e(rec.get('pixels', '?'))} px, confidence "
            f"{_e(rec.get('confidence', '?'))}{_e(iou)}; {_e(m)} then refocuses on the mask (seed 003).</p>")


def section_c(cfg, res: dict, assets: Path) -> str:
    from demo.runs import section_c as strip

    out = []
    for m, r in res.items():
        if r.get("role") == "dual_camera" and "all_in_focus" in r:
            strip(Path(r["all_in_focus"]["path"]), assets / f"{m}_section_c.png")
            out.append(f"<div class='big'>{fig(f'assets/{m}_section_c.png', 'refined W | refined UW | W mask | UW mask | output (all-in-focus, aperture 0)')}</div>"
                       + cmd(f"{PY} run --model {m} --capture {r['capture']} --artifact {r['artifact']} --aperture 0 "
                             f"--out out/{m}_aif   # refined_w.png, refined_uw.png, mask_uw.png"))
    return ("<h2>6. Inside DC2 (seed 001, section C): refined W and UW, blending masks</h2>"
            "<p>The UW mask should be high on edges and fine detail, the W mask on flat regions and colours.</p>"
            + "".join(out)) if out else ""


def sweeps_section(cfg, res: dict, assets: Path) -> str:
    out = ["<h2>7. Focus and aperture sweeps (seed 001, section A)</h2><p>DC2 re-renders the W capture "
           "with the target defocus A |d - d_focus|: the focus moves from near to far, then the aperture opens "
           "with the focus on the nearest subject. MP4 (OpenCV mp4v) to download; WebM and animated WebP here.</p>"]
    for m, r in res.items():
        folder = Path(r["folder"])
        for kind in ("focus", "aperture"):
            s = r[kind]
            for ext in ("mp4", "webm", "webp"):
                shutil.copy2(folder / s[ext], assets / s[ext])
            out.append(f"<figure><video src='assets/{_e(s['webm'])}' autoplay loop muted playsinline preload='auto' width='384'>"
                       f"</video><figcaption>{_e(m)} {kind} sweep, {s['frames']} frames (WebM) - "
                       f"<a href='assets/{_e(s['mp4'])}'>MP4</a></figcaption></figure>")
            out.append(fig(f"assets/{s['webp']}", f"{m} {kind} sweep (animated WebP)", "sweep"))
        e = r["aperture_background_gradient_energy"]
        out.append(f"<p>Background gradient energy as the aperture opens: {_e(', '.join(f'{v:.2e}' for v in e))}</p>")
    out.append(cmd("python cli.py demo --redo sweeps"))
    return "".join(out)


def bench_section(cfg, work: Path) -> str:
    from device_tests import store as st
    from device_tests.report import latency_table, latest, size_table, write_report

    if not cfg.store.is_file():
        return "<h2>8. Latency</h2><p>No results store.</p>"
    write_report(cfg.store, work / "bench")
    rows = st.rows(cfg.store)
    lat = latest([r for r in rows if r["kind"] == "latency"])
    cols, body = latency_table(lat)
    keep = [cols.index(c) for c in ("model", "target", "precision", "size", "threads", "median ms", "p90 ms",
                                     "first ms", "speed-up vs PyTorch", "delegate")]
    scols, sbody = size_table([*lat, *latest([r for r in rows if r["kind"] == "parity"])])
    plots = "".join(fig(f"bench/{p}", t) for p, t in (("latency.png", "latency per runtime and precision"),
                                                       ("size.png", "artifact size"), ("parity.png", "parity PSNR"))
                    if (work / "bench" / p).is_file())
    b = cfg.bench
    return ("<h2>8. Host latency per runtime and precision</h2>"
            f"<p>Short runs ({b['runs']}+ timed runs, at least {b['min_seconds']} s, {b['warmup']} warm-up) on this "
            "host, beside the PyTorch eager baseline; in the results store. Full report: "
            "<a href='bench/report.html'>bench/report.html</a>.</p>"
            + table([cols[i] for i in keep], [[row[i] for i in keep] for row in body])
            + "<h2>9. Artifact sizes</h2>" + table(scols, sbody) + plots
            + cmd(f"{PY} bench --model <model> --root {cfg.out}/artifacts --threads "
                  f"{','.join(map(str, b['threads']))} --runs {b['runs']} --min-seconds {b['min_seconds']} "
                  f"--warmup {b['warmup']} --store {cfg.store}", f"{PY} report --store {cfg.store} --out reports/"))


def headline(cfg, results: dict, assets: Path) -> str:
    """The picture a person opens first: the focus sweep, beside DC2's refocus result."""
    for m, r in (results.get("sweeps") or {}).items():
        return (f"<div class='hero'>{fig('assets/' + r['focus']['webp'], f'{m}: the focus moves from near to far (synthetic UW + W capture)')}"
                f"{fig('assets/' + r['aperture']['webp'], f'{m}: the aperture opens')}</div>")
    return ""


def write_page(cfg, results: dict, times: list[dict]) -> Path:
    """Write ``cfg.report``/index.html with its assets (replaced whole); returns the page's path."""
    with atomic_dir(cfg.report, replace=True, what="demo page") as work:
        assets = work / "assets"
        assets.mkdir()
        parts = []
        if "captures" in results:
            parts.append(captures_section(cfg, results["captures"], assets))
        if "calibrate" in results:
            parts.append(calibration_section(cfg, results["calibrate"], assets))
        if "export" in results:
            parts.append(export_section(cfg, results["export"]["rows"]))
        if "parity" in results:
            parts.append(parity_section(cfg, results["parity"]))
        if "run" in results:
            parts += [runs_section(cfg, results["run"], assets), section_c(cfg, results["run"], assets)]
        if "sweeps" in results:
            parts.append(sweeps_section(cfg, results["sweeps"], assets))
        parts.append(bench_section(cfg, work))
        top = headline(cfg, results, assets)
        (work / "demo.json").write_text(json.dumps({"results": results, "times": times}, indent=1, default=str))
        (work / "index.html").write_text(
            "<!doctype html><html><head><meta charset='utf-8'><title>Defocus toolchain demo</title>"
            f"<style>{STYLE}</style></head><body><h1>Defocus toolchain demo</h1>"
            "<p>Everything below ran on this machine's CPU from the bundled starter checkpoints and synthetic "
            "captures, with no network: RDPD (recurrent dual-pixel deblurring), DC2 (dual-camera W + UW defocus "
            "control) and UiD (user-instructed dual-pixel refocusing), exported to ONNX, LiteRT, ExecuTorch and "
            "Core ML.</p>" + top + "".join(parts) + times_section(times) + "</body></html>")
    return Path(cfg.report) / "index.html"
