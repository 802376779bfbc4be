"""Command line of the defocus toolchain: ``python cli.py --help``.

Thin by design: each command parses its options, calls into the packages, and prints with
rich. Errors that a user can fix are raised as ``UserError`` (or a subclass of ``ValueError``
from the packages) and printed as one clear line, with exit code 2.
"""
from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

app = typer.Typer(
    help="Defocus-control toolchain: synthesise DP data, train RDPD/DC2/UiD, export to phones.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)


@app.callback()
def _root() -> None:
    """Defocus-control toolchain: synthesise DP data, train RDPD/DC2/UiD, export to phones."""


def fail(message: str, code: int = 2) -> None:
    """Print one clear error line and exit (no traceback for user errors)."""
    err_console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


# --- commands ----------------------------------------------------------------------------


@app.command("models")
def models_cmd(
    height: int = typer.Option(512, help="Input height for the MAC count (multiple of 16)."),
    width: int = typer.Option(512, help="Input width for the MAC count (multiple of 16)."),
    name: Optional[str] = typer.Option(None, "--name", help="Only this model (rdpd, dc2, uid)."),
) -> None:
    """Table of the registered models: variant, parameters, GMAC, inputs, outputs."""
    from rich.table import Table

    from models.complexity import model_table
    from models.registry import get

    try:
        rows = model_table(height, width, names=[get(name).name] if name else None)
    except (KeyError, ValueError) as exc:
        fail(str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc))
    table = Table(title=f"models (GMAC at {height}x{width}; convs and matmuls, MAC = FLOP/2)")
    for col in ("model", "variant", "params", "paper", "GMAC", "inputs", "outputs"):
        table.add_column(col, justify="right" if col in ("params", "paper", "GMAC") else "left")
    for r in rows:
        paper = f"{r['paper_params'] / 1e6:.2f} M" if r["paper_params"] else ""
        table.add_row(r["model"], r["variant"], f"{r['params'] / 1e6:.3f} M", paper, f"{r['gmac']:.2f}",
                      r["inputs"], r["outputs"])
    console.print(table)


def _progress(description: str):
    """A rich progress bar; returns (context manager, callback(done, total))."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn, TimeRemainingColumn

    bar = Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), TimeRemainingColumn(), console=console)
    task = bar.add_task(description, total=None)
    return bar, lambda done, total: bar.update(task, completed=done, total=total)


@app.command()
def synth(
    camera: str = typer.Option("rdpd_set3", help="Camera profile (rdpd_set1..5, canon_5d4, pixel4_dp, phone_wide, "
                               "phone_ultrawide), a pair (phone_w_uw: W/UW samples), or FILE.json:NAME."),
    scenes: int = typer.Option(8, "--scenes", "-n", help="Number of samples."),
    size: str = typer.Option("256x256", help="Image size HxW."),
    out: Path = typer.Option(Path("data/synth"), help="Output folder (written atomically)."),
    format: str = typer.Option("dpdd", "--format", "-f", help="dpdd (16-bit sRGB PNG), pixel (16-bit PGM) or npz."),
    split: str = typer.Option("train", help="Split name used in file names and folders."),
    seed: int = typer.Option(0, help="Base seed: sample i uses seed (seed, i)."),
    scene_kind: str = typer.Option("mixed", help="dead_leaves, slanted_plane or mixed."),
    textures: Optional[Path] = typer.Option(None, help="Folder of images to texture dead leaves with."),
    psf_bank: Optional[Path] = typer.Option(None, help="PSF bank file (.npz) to render with instead of the "
                                            "Butterworth model (e.g. one calibrated on a device)."),
    max_layers: int = typer.Option(500, help="Maximum depth layers (seed 004: 500)."),
    noise_scale: float = typer.Option(0.1, help="Multiplier on the seed's noise sigma set {0.05..0.5}."),
    distortion: bool = typer.Option(True, help="Apply the camera's radial distortion (seed eq. 5)."),
    refocus: bool = typer.Option(False, help="Also render a refocus target on a random focus region (UiD)."),
    device: str = typer.Option("auto", help="auto (CUDA when present), cpu or cuda."),
    preview: bool = typer.Option(True, help="Write contact_sheet.png of the first samples next to the data."),
    force: bool = typer.Option(False, help="Replace --out if it exists."),
) -> None:
    """Synthesise a defocus data set (DP views or W/UW pairs) with a JSON record of every parameter."""
    from synth import dataset

    try:
        cfg = dataset.SynthConfig(camera=camera, scenes=scenes, size=dataset.parse_size(size), out=out,
                                  format=format, split=split, seed=seed, scene_kind=scene_kind, textures=textures,
                                  psf_bank=psf_bank, max_layers=max_layers, noise_scale=noise_scale, distortion=distortion,
                                  refocus=refocus, device=device, force=force)
        bar, update = _progress(f"synth {camera} {size}")
        kept: list = []
        with bar:
            record = dataset.generate(cfg, progress=update, keep=kept if preview else None)
    except ValueError as exc:  # SynthError, SceneError, CameraError, RenderError...
        fail(str(exc))
    console.print(f"[green]wrote[/] {scenes} samples to {out} ({record['samples_per_second']:.2f} samples/s); "
                  f"record: {out / dataset.RECORD_NAME}")
    if preview:
        sheet = dataset.write_preview(out, kept, f"{camera}: {scene_kind} scenes, seed {seed}")
        console.print(f"contact sheet: {sheet}")



@app.command()
def train(
    model: str = typer.Option(..., help="rdpd, dc2 or uid."),
    variant: str = typer.Option("mobile", help="paper, mobile or tiny."),
    steps: Optional[int] = typer.Option(None, help="Training steps (default: the config file's)."),
    batch_size: Optional[int] = typer.Option(None, help="Batch size per process."),
    lr: Optional[float] = typer.Option(None, help="Initial learning rate (Adam)."),
    seed: Optional[int] = typer.Option(None, help="Seed of the data pool, the data order and the init."),
    out: Path = typer.Option(Path("runs"), help="Runs folder: the run lives in OUT/<model>-<variant>/."),
    device: Optional[str] = typer.Option(None, help="auto (CUDA when present), cpu, cuda or cuda:N (default: the "
                                         "config's, auto; a resumed run: the one it started on)."),
    threads: Optional[int] = typer.Option(None, help="CPU threads."),
    resume: bool = typer.Option(False, help="Continue the run in OUT/<model>-<variant>/ exactly where it stopped, "
                                "with the settings it started with (options given here still win, e.g. --steps)."),
    init: Optional[Path] = typer.Option(None, help="Warm start: begin from this checkpoint's weights (same model "
                                        "and variant) with a fresh optimiser and schedule (fine-tuning)."),
    data: Optional[list[str]] = typer.Option(None, help="Training data, repeatable: 'synthetic' (default), a DPDD "
                                             "folder (RDPD) or npz shards from `synth --format npz`; sources "
                                             "alternate step by step."),
    pool_size: Optional[int] = typer.Option(None, help="Examples per data source (the synthetic pool is "
                                            "generated at the start)."),
    lr_halving_steps: Optional[int] = typer.Option(None, help="Halve the learning rate every N steps."),
    patch: Optional[int] = typer.Option(None, help="Square training patch in pixels (multiple of 16, at most "
                                        "--pool-image)."),
    pool_image: Optional[int] = typer.Option(None, help="Size of each pool example in pixels."),
    refresh_every: Optional[int] = typer.Option(None, help="Replace one synthetic pool example by a freshly rendered "
                                                "one every N steps (0: fixed pool). A resumed CPU run stays "
                                                "bit-exact."),
    publish: Optional[Path] = typer.Option(None, help="After training, write an fp16 starter checkpoint to "
                                           "this folder (<model>-<variant>.safetensors + .json)."),
) -> None:
    """Train a model on the synthetic engine's data (configs in train/configs/*.yaml).
    Multi-GPU: torchrun --nproc_per_node=N cli.py train ..."""
    from train import loop

    try:
        cfg = loop.load_config(model, variant, {"steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed,
                                                "out": str(out), "device": device, "threads": threads,
                                                "init": str(init) if init else None, "pool_size": pool_size, "data": data or None,
                                                "lr_halving_steps": lr_halving_steps, "patch": patch,
                                                "pool_image": pool_image, "refresh_every": refresh_every},
                               resume=resume)
        bar, update = _progress(f"train {model}-{variant}")
        task_update = lambda done, total, loss, sps: (update(done, total),
                                                      bar.update(bar.task_ids[0], description=f"train {model}-{variant} loss {loss:.4f} {sps:.1f} samples/s"))
        pool_task = bar.add_task("render synthetic pool", total=None) if "synthetic" in cfg.data else None
        pool_update = (lambda done, total: bar.update(pool_task, completed=done, total=total)) if pool_task is not None else None
        main_rank = os.environ.get("RANK", "0") == "0"  # torchrun: only rank 0 reports
        with bar if main_rank else contextlib.nullcontext():
            summary = loop.train(cfg, resume=resume, progress=task_update if main_rank else None, log=console.print,
                                 pool_progress=pool_update if main_rank else None)
        if not main_rank:
            return
        if summary["final_loss"] is not None:  # None: a finished run was resumed, nothing trained
            console.print(f"[green]done[/] {summary['steps']} steps, final loss {summary['final_loss']:.5f}, "
                          f"{summary['samples_per_s']:.1f} samples/s; run: {summary['run_dir']}")
        if publish:
            from train.evaluate import publish_checkpoint

            path = publish_checkpoint(cfg.run_dir, publish)
            console.print(f"starter checkpoint: {path}")
    except ValueError as exc:
        fail(str(exc))


@app.command()
def evaluate(
    model: str = typer.Option(..., help="rdpd, dc2 or uid."),
    checkpoint: Optional[Path] = typer.Option(None, help="Checkpoint (.safetensors with its .json); "
                                              "omit to score only the baselines."),
    data: str = typer.Option("synthetic:test", help="synthetic:test (the fixed synthetic test split), a DPDD "
                             "folder (its test split; RDPD) or npz shards from `synth --format npz`."),
    count: int = typer.Option(16, help="Examples (synthetic split, or at most this many crops from DATA)."),
    size: int = typer.Option(128, help="Test image size (square, multiple of 16): crops of DATA's images."),
    wiener: bool = typer.Option(True, help="Also score the classical baselines: Wiener deconvolution with the true "
                                "PSF (RDPD, UiD); aligned UW and a per-pixel W/UW oracle (DC2)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the scores as JSON."),
    save_images: Optional[Path] = typer.Option(None, help="Also write DIR/<model>-evaluation.png: input, model, "
                                               "target and error map for the first examples (needs --checkpoint)."),
) -> None:
    """PSNR / SSIM / MAE of a checkpoint next to doing nothing (the blurred input) and a classical
    baseline (Wiener deconvolution with the true PSF), on the fixed synthetic test split."""
    import json as _json

    from rich.table import Table

    from models.checkpoint import load_model
    from train.evaluate import evaluate as run_eval, test_split

    from train.data_sources import load_source, source_kind

    if save_images and checkpoint is None:
        fail("--save-images needs --checkpoint: there is no model output to draw")
    try:
        net = load_model(checkpoint, expected_model=model)[0] if checkpoint else None
        examples = (test_split(model, count, size) if data == "synthetic:test" else
                    load_source(data, model, size, limit=count, split="test", crops_per_image=1))
        scores = run_eval(model, net, examples, wiener=wiener)
    except ValueError as exc:
        fail(str(exc))
    table = Table(title=f"{model} on {data} ({len(examples)} x {size}x{size})")
    for col in ("task", "method", "PSNR dB", "SSIM", "MAE", "vs input dB"):
        table.add_column(col)
    for task, methods in scores.items():
        base = next(v["psnr"] for k, v in methods.items() if k.startswith("input"))
        for method, v in methods.items():
            table.add_row(task, method, f"{v['psnr']:.2f}", f"{v['ssim']:.3f}", f"{v['mae']:.4f}", f"{v['psnr'] - base:+.2f}")
    console.print(table)
    if json_out:
        json_out.write_text(_json.dumps({"model": model, "checkpoint": str(checkpoint) if checkpoint else None,
                                         "count": count, "size": size, "scores": scores}, indent=1))
    if save_images:
        from train.evaluate import sheet_rows
        from train.plots import evaluation_sheet

        try:
            srgb = data != "synthetic:test" and source_kind(data) == "dpdd"  # DPDD is used as stored (sRGB)
            sheet = evaluation_sheet(sheet_rows(model, net, examples), save_images / f"{model}-evaluation.png",
                                     f"{model}: {checkpoint.name} on {data}", linear=not srgb)
        except (ValueError, OSError) as exc:
            fail(f"{save_images}: cannot write the evaluation images ({exc})")
        console.print(f"images: {sheet}")


@app.command("run")
def run_cmd(
    model: str = typer.Option(..., help="rdpd, dc2 or uid."),
    capture: Path = typer.Option(..., help="A capture: Pixel DP PGM/PNG pair, Garg or DPDD folder, UW+W bundle."),
    out: Path = typer.Option(..., help="Output folder (16-bit PNG per output, comparison.png, run.json)."),
    artifact: Optional[Path] = typer.Option(None, help="An exported artifact folder (any runtime runnable here)."),
    checkpoint: Optional[Path] = typer.Option(None, help="A PyTorch checkpoint (.safetensors + .json)."),
    focus: Optional[str] = typer.Option(None, help="Focus point x,y in capture pixels (UiD, DC2)."),
    focus_mask: Optional[Path] = typer.Option(None, help="Focus mask image, non-zero = in focus (UiD, DC2)."),
    aperture: float = typer.Option(1.0, help="Aperture scale of the DC2 target defocus map (0 = all in focus)."),
    align_depth: bool = typer.Option(True, help="DC2: align UW to W with the bundle's disparity (depth-guided "
                                                "flow); --no-align-depth uses DIS optical flow only."),
    threads: int = typer.Option(2, help="Runtime threads."),
    force: bool = typer.Option(False, help="Replace --out if it exists."),
) -> None:
    """Run a capture through an exported artifact or a checkpoint; write outputs and a comparison."""
    from runtime_py import run_capture
    from runtime_py.captures import open_capture
    from runtime_py.runners import TorchRunner, load

    if (artifact is None) == (checkpoint is None):
        fail("give exactly one of --artifact DIR or --checkpoint PATH")
    try:
        point = tuple(int(v) for v in focus.split(",")) if focus else None
        if point is not None and len(point) != 2:
            raise ValueError(f"--focus must be x,y, got {focus!r}")
    except ValueError:
        fail(f"--focus must be two integers x,y, got {focus!r}")
    try:
        runner = load(artifact, threads=threads) if artifact else TorchRunner.from_checkpoint(checkpoint, model)
        if artifact and runner.manifest.get("model") != model:
            raise ValueError(f"{artifact}: artifact is of model {runner.manifest.get('model')!r}, not {model!r}")
        cap = open_capture(capture)
        inputs, record = run_capture.model_inputs(model, cap, focus=point, focus_mask=focus_mask, aperture=aperture,
                                                  align_depth=align_depth)
        with console.status(f"running {model} on {runner.runtime}"):
            outputs = run_capture.run(runner, model, inputs)
        record.update({"model": model, "runtime": runner.runtime, "source": runner.source})
        path = run_capture.write_outputs(out, model, inputs, outputs, record, force=force)
    except ValueError as exc:
        fail(str(exc))
    console.print(f"[green]wrote[/] {', '.join(sorted(outputs))} + comparison.png to {path} ({runner.runtime})")


@app.command()
def demo(
    out: Path = typer.Option(Path("demo_out"), help="Folder for the demo's data sets and pictures."),
    device: str = typer.Option("auto", help="auto (CUDA when present), cpu or cuda."),
) -> None:
    """End to end on bundled defaults: synthesise RDPD (Canon-like DP), Pixel DP and W/UW data sets
    (with contact sheets), export the starter UiD and RDPD checkpoints to ONNX with a parity check,
    and run them on the synthetic Pixel capture (outputs + comparison images)."""
    from rich.table import Table

    from synth import dataset

    runs = [
        ("rdpd_set3", "dpdd", 6, (256, 256), False),
        ("pixel4_dp", "pixel", 3, (192, 256), False),
        ("phone_w_uw", "npz", 3, (192, 256), False),
    ]
    table = Table(title="demo: synthetic defocus data")
    for col in ("camera", "format", "samples", "size", "samples/s"):
        table.add_column(col)
    table.add_column("contact sheet", overflow="fold")
    try:
        for camera, fmt, n, size, refocus in runs:
            target = out / f"synth_{camera}_{fmt}"
            cfg = dataset.SynthConfig(camera=camera, scenes=n, size=size, out=target, format=fmt,
                                      refocus=refocus, device=device, force=True)
            bar, update = _progress(f"synth {camera}")
            kept: list = []
            with bar:
                record = dataset.generate(cfg, progress=update, keep=kept)
            sheet = dataset.write_preview(target, kept, f"{camera} ({fmt})")
            table.add_row(camera, fmt, str(n), f"{size[0]}x{size[1]}", f"{record['samples_per_second']:.2f}", str(sheet))
        # the rest of the chain: a starter checkpoint -> an exported artifact (ONNX, verified on
        # onnxruntime) -> a Pixel capture written by the engine -> outputs and a comparison image
        from export.common import ExportRequest
        from export.pipeline import export_one
        from runtime_py import run_capture
        from runtime_py.captures import open_capture
        from runtime_py.runners import load

        capture = out / "synth_pixel4_dp_pixel"
        chain = Table(title="demo: checkpoint -> export -> run on a Pixel DP capture")
        for col in ("model", "artifact", "runtime", "parity", "outputs"):
            chain.add_column(col, overflow="fold")
        for model in ("uid", "rdpd"):
            req = ExportRequest(model=model, target="onnx", precision="fp32", height=128, width=128,
                                variant="mobile", out=out / "artifacts", force=True, parity_count=1)
            with console.status(f"exporting {model}-mobile to ONNX and checking parity"):
                row = export_one(req)
            art = out / "artifacts" / f"{model}-mobile" / "onnx-fp32-128x128"
            runner = load(art, threads=2)
            inputs, record = run_capture.model_inputs(model, open_capture(capture))
            outputs = run_capture.run(runner, model, inputs)
            dest = run_capture.write_outputs(out / f"run_{model}", model, inputs, outputs, record, force=True)
            chain.add_row(f"{model}-mobile", str(art), runner.runtime, f"{row.get('verdict')}",
                          str(dest / "comparison.png"))
    except ValueError as exc:
        fail(str(exc))
    console.print(table)
    console.print(chain)


@app.command()
def inspect(
    capture: Path = typer.Argument(..., help="A capture file or folder: Pixel *_left.pgm / NNN_left.png, Garg "
                                   "result_pd_left_<view>.png, a DPDD root, an iPhone .heic, or a UW+W bundle folder."),
    preview: Optional[Path] = typer.Option(None, "--preview", help="Write a preview PNG of what was read."),
) -> None:
    """Say what a capture holds: sizes, bit depth, black level, disparity range, metadata."""
    from rich.table import Table

    from runtime_py.captures import open_capture
    from runtime_py.captures.preview import capture_preview

    try:
        cap = open_capture(capture)
        if preview:
            capture_preview(cap, preview)
    except ValueError as exc:  # CaptureError and other ValueError subclasses
        fail(str(exc))
    table = Table(title=f"{capture} ({cap.kind})", show_header=True)
    table.add_column("field")
    table.add_column("value", overflow="fold")
    for key, value in cap.summary():
        table.add_row(key, value)
    console.print(table)
    if preview:
        console.print(f"preview: {preview}")


@app.command("export")
def export_cmd(
    model: str = typer.Option(..., "--model", "-m", help="rdpd, dc2, uid or all."),
    target: str = typer.Option(..., "--target", "-t", help="coreml, tflite (= litert), executorch, "
                               "executorch-coreml, onnx or all."),
    precision: str = typer.Option("fp32", "--precision", "-p", help="fp32, fp16, int8-weights, int8 (static, "
                                  "calibrated), int8-dynamic (tflite), palette4/6/8 (coreml)."),
    size: str = typer.Option("256x256", help="Input size HxW (multiples of 16); one static shape per export."),
    variant: str = typer.Option("mobile", help="paper, mobile or tiny."),
    checkpoint: Optional[Path] = typer.Option(None, help="Checkpoint (.safetensors + .json); default "
                                              "checkpoints/<model>-<variant>.safetensors, else random init."),
    calibration: str = typer.Option("synthetic", help="int8 calibration data: 'synthetic' or a folder of .npz."),
    calibration_count: int = typer.Option(8, help="Number of calibration samples."),
    outputs: str = typer.Option("all", help="all named outputs, or main (main image; RDPD keeps h/c state)."),
    out: Path = typer.Option(Path("artifacts"), help="Artifact root: <out>/<model>-<variant>/<target>-<precision>-<HxW>/."),
    min_psnr: Optional[float] = typer.Option(None, help="Override the PSNR threshold (fp32 60, fp16 40, int8 30 dB)."),
    force: bool = typer.Option(False, help="Replace existing artifact folders."),
    litert_recipe: Optional[Path] = typer.Option(None, help="tflite only: your ai-edge-quantizer recipe (JSON list "
                                                 "of entries) instead of the built-in rule (int8: convolutions only)."),
) -> None:
    """Convert, quantise and verify models for phones; prints a verdict table, exits 1 if a verdict fails."""
    from export.common import parse_size
    from export.pipeline import export_many, failed, plan, report_text

    try:
        h, w = parse_size(size)
        extra = {}
        if litert_recipe is not None:
            from export.common import normalise_target
            from export.litert_target import load_recipe

            if target.lower() != "all" and normalise_target(target.lower()) != "tflite":
                raise ValueError(f"--litert-recipe applies to --target tflite (or all), not {target}")
            extra["litert_recipe"] = {"path": str(litert_recipe), "entries": load_recipe(litert_recipe)}
        reqs, refused = plan([model.lower()], [target.lower()], precision, height=h, width=w, variant=variant,
                             checkpoint=checkpoint, calibration=calibration, calibration_count=calibration_count,
                             outputs=outputs, out=out, force=force, min_psnr=min_psnr, extra=extra)
        bar, update = _progress(f"export {model} -> {target} {precision} {size}")
        with bar:
            rows = export_many(reqs, progress=update, log=lambda s: bar.console.print(f"[dim]{s}[/]"))
    except ValueError as exc:
        fail(str(exc))
    print(report_text(rows + refused))
    if failed(rows):
        raise typer.Exit(1)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
