"""``make demo``: the whole toolchain on bundled defaults, CPU only, no network, in stages.

captures -> calibrate -> export -> parity -> run -> sweeps -> bench -> page. Each stage writes under
``out/`` and records ``out/stages/<stage>.json`` (its inputs' key, its result, its seconds) last:
a stage whose key is unchanged is reused, so an interrupted or repeated demo resumes where it
stopped; ``redo`` names stages to run again anyway. Keys cover the settings, the starter
checkpoints' hashes and the keys of the stages a stage reads. The page is always rebuilt, into
``report/`` (published whole: a failed run leaves the previous page).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from core.atomic import write_json
from core.errors import UserError

VERSION = 2  # bump when a stage's output format changes
STAGES = ("captures", "calibrate", "export", "parity", "run", "sweeps", "bench", "page")


class DemoError(UserError):
    """A demo option that cannot work (unknown stage, bad size...)."""


@dataclass
class DemoConfig:
    out: Path = Path("demo_out")
    report: Path = Path("reports/demo")
    export_size: tuple[int, int] = (128, 128)
    capture_size: tuple[int, int] = (192, 256)
    burst_frames: int = 4
    precisions: tuple[str, ...] = ("fp32", "int8")
    calibration_count: int = 4
    models: tuple[str, ...] | None = None
    targets: tuple[str, ...] | None = None
    skip: tuple[tuple[str, str, str], ...] = field(default_factory=lambda: exports_skipped())  # (model, target, precision)
    calib: dict = field(default_factory=lambda: {"shape": (480, 576), "chart_size": (1000, 800), "grid": (2, 3),
                                                 "kernel_size": 31, "iterations": 40})
    sweep_frames: int = 12
    bench: dict = field(default_factory=lambda: {"threads": (1,), "runs": 5, "min_seconds": 0.3, "warmup": 1})
    threads: int = 2
    seed: int = 0
    redo: tuple[str, ...] = ()

    @property
    def store(self) -> Path:
        return self.out / "results" / "device_results.sqlite"


def exports_skipped() -> tuple:
    from demo.exports import SKIPPED

    return SKIPPED


def _key(*parts) -> str:
    return hashlib.sha256(json.dumps([VERSION, *parts], sort_keys=True, default=str).encode()).hexdigest()[:16]


def checkpoint_hashes(models) -> dict:
    from demo.exports import _checkpoint_sha

    return {m: _checkpoint_sha(m, "mobile") for m in models}


class Runner:
    """Runs the stages in order with reuse, timing and a progress display per stage."""

    def __init__(self, cfg: DemoConfig, progress: Callable | None = None, log: Callable[[str], None] | None = None):
        self.cfg, self.results, self.keys, self.times = cfg, {}, {}, []
        self.progress = progress or (lambda _: (contextlib.nullcontext(), None))
        self.log = log or (lambda s: None)
        unknown = set(cfg.redo) - set(STAGES) - {"all"}
        if unknown:
            raise DemoError(f"--redo: unknown stage(s) {', '.join(sorted(unknown))}; stages: {', '.join(STAGES)}, all")

    def stage(self, name: str, key_parts: list, fn: Callable) -> dict:
        key = _key(name, *key_parts)
        self.keys[name] = key
        rec_path = self.cfg.out / "stages" / f"{name}.json"
        if name not in self.cfg.redo and "all" not in self.cfg.redo and rec_path.is_file():
            try:
                rec = json.loads(rec_path.read_text())
            except ValueError:
                rec = {}
            if rec.get("key") == key:
                self.results[name] = rec["result"]
                self.times.append({"stage": name, "seconds": 0.0, "status": "reused",
                                   "first_seconds": rec.get("seconds"), "first_cpu_seconds": rec.get("cpu_seconds")})
                return rec["result"]
        bar, update = self.progress(name)
        t0, c0 = time.perf_counter(), time.process_time()
        with bar:
            result = fn(update or (lambda done, total: None))
        secs, cpu = time.perf_counter() - t0, time.process_time() - c0
        write_json(rec_path, {"key": key, "result": result, "seconds": round(secs, 1), "cpu_seconds": round(cpu, 1)},
                   default=str)
        self.results[name] = result
        self.times.append({"stage": name, "seconds": round(secs, 1), "cpu_seconds": round(cpu, 1), "status": "ran"})
        return result


def run_demo(cfg: DemoConfig, progress: Callable | None = None, log: Callable[[str], None] | None = None) -> dict:
    """Run (or reuse) every stage; returns {"results", "times", "page"}."""
    from demo import calibrate, captures, exports, runs, sweeps
    from demo.page import write_page
    cfg.out = Path(cfg.out)
    r = Runner(cfg, progress, log)
    models = list(cfg.models or runs.demo_models())
    hashes = checkpoint_hashes(models)
    c = cfg

    caps = r.stage("captures", [c.capture_size, c.burst_frames, c.seed],
                   lambda up: captures.make_captures(c.out / "captures", c.export_size, c.capture_size,
                                                     c.burst_frames, c.seed))
    r.stage("calibrate", [c.calib, c.seed],
            lambda up: calibrate.run_calibration(c.out / "calibration", seed=c.seed, progress=up, **c.calib))

    def do_export(up):
        reqs, refused = exports.plan(c.export_size, c.precisions, c.out / "artifacts", c.calibration_count,
                                     models=models, targets=c.targets, skip=c.skip)
        return {"rows": exports.export_all(reqs, progress=up, log=r.log) + refused}
    exp = r.stage("export", [c.export_size, c.precisions, c.calibration_count, models, c.targets, hashes,
                             sorted(c.skip)], do_export)
    rows = exp["rows"]

    def do_parity(up):
        pick = exports.pick_bundle_artifact(rows)
        if pick is None:
            return {"artifact": None, "rows": [], "reason": "no artifact passed verification on this host"}
        return {"artifact": pick["path"], "target": pick["target"], "precision": pick["precision"],
                "model": pick["model"], "rows": exports.parity_bundle(Path(pick["path"]), c.out / "parity",
                                                                      c.store, progress=up)}
    r.stage("parity", [r.keys["export"]], do_parity)

    def artifact(model):  # the fp32 artifact of the first runtime that ran it (the runs' artifact)
        ok = [x for x in rows if x["model"] == model and x.get("status") == "exported" and x.get("verdict") == "pass"]
        fp32 = [x for x in ok if x["precision"] == "fp32"] or ok
        return Path(fp32[0]["path"]) if fp32 else None

    def do_run(up):
        out = {}
        for i, m in enumerate(models):
            art = artifact(m)
            if art is None:
                out[m] = {"error": "no verified artifact"}
                continue
            what = runs.role(m)
            dest = c.out / "runs" / m
            if what == runs.SEQUENCE_MODEL:
                out[m] = {"role": what, "capture": caps["pixel_burst"][-1],
                          **runs.run_burst(m, art, caps["pixel_burst"], dest, threads=c.threads)}
            elif what == runs.DUAL_CAMERA:
                from runtime_py.captures import open_capture

                x, y = runs.nearest_point(open_capture(caps["iphone_bundle"]).arrays["disparity"])
                out[m] = {"role": what, "capture": caps["iphone_bundle"], "focus": [x, y], "aperture": 1.5,
                          **runs.run_one(m, art, caps["iphone_bundle"], dest, focus=f"{x},{y}", aperture=1.5,
                                         threads=c.threads)}
                out[m]["all_in_focus"] = runs.run_one(m, art, caps["iphone_bundle"], c.out / "runs" / f"{m}_aif",
                                                      aperture=0.0, threads=c.threads)
            elif what == runs.PROMPTED:
                prompt = runs.refocus_prompt(caps["objects"])
                out[m] = {"role": what, "capture": caps["dpdd_objects"], "prompt": prompt,
                          **runs.run_one(m, art, caps["dpdd_objects"], dest, threads=c.threads, **prompt["kwargs"])}
                out[m]["mask_iou"] = runs.mask_iou(dest, Path(caps["objects_labels"]), prompt["object"])
            else:
                out[m] = {"error": "the demo has no run for this model (it takes no capture on its own)"}
                continue
            out[m]["artifact"] = str(art)
            up(i + 1, len(models))
        return out
    ran = r.stage("run", [r.keys["export"], r.keys["captures"]], do_run)

    def do_sweeps(up):
        from runtime_py import run_capture
        from runtime_py.captures import open_capture
        from runtime_py.runners import load

        done = {}
        for m, res in ran.items():
            if res.get("role") != runs.DUAL_CAMERA or "error" in res:
                continue
            cap = open_capture(res["capture"])
            inputs, rec = run_capture.model_inputs(m, cap, focus=tuple(res["focus"]), aperture=1.0)
            runner, disp = load(res["artifact"], threads=c.threads), cap.arrays["disparity"]
            folder = c.out / "sweeps"
            folder.mkdir(parents=True, exist_ok=True)
            n = c.sweep_frames
            fs = sweeps.render(runner, m, inputs, sweeps.focus_sweep(disp, n), lambda d, t: up(d, 2 * n), rec)
            ap_targets = sweeps.aperture_sweep(disp, n)
            aps = sweeps.render(runner, m, inputs, ap_targets, lambda d, t: up(n + d, 2 * n), rec)
            bg = sweeps.background_mask(disp)
            done[m] = {"focus": sweeps.write_sweep(fs, folder, f"{m}_focus_sweep"),
                       "aperture": sweeps.write_sweep(aps, folder, f"{m}_aperture_sweep"),
                       "aperture_background_gradient_energy": [sweeps.gradient_energy(f, bg) for f in aps],
                       "aperture_labels": [label for label, _ in ap_targets], "folder": str(folder)}
        return done
    r.stage("sweeps", [r.keys["run"], c.sweep_frames], do_sweeps)

    def do_bench(up):
        stored = exports.bench_all(rows, c.store, progress=up, **c.bench)
        return {"rows": len(stored), "store": str(c.store)}
    r.stage("bench", [r.keys["export"], c.bench], do_bench)

    t0, c0 = time.perf_counter(), time.process_time()
    page = write_page(cfg, r.results, r.times)
    r.times.append({"stage": "page", "seconds": round(time.perf_counter() - t0, 1),
                    "cpu_seconds": round(time.process_time() - c0, 1), "status": "ran"})
    return {"results": r.results, "times": r.times, "page": page, "config": asdict(cfg)}
