"""Command line of the defocus toolchain: ``python cli.py --help``.

Thin by design: each command parses its options, calls one function of the packages, and prints
with rich. Errors a user can fix (``core.errors.UserError``) print as one line, exit code 2.
Anything else is a bug: its traceback is saved to a log file the message names, exit code 70.
Third-party chatter (coremltools' version notices, torchao's library probes, absl...) goes to a
log file beside the output, ``<out>.log``, not over the results; ``--verbose`` shows it too.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import os
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Optional

import click
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
_SETTINGS = {"verbose": False}
BUG_EXIT = 70  # EX_SOFTWARE: an internal error


@app.callback()
def _root(verbose: bool = typer.Option(False, "--verbose", "-v", help="Also show third-party warnings on the "
                                       "console (they always go to the log file beside the output).")) -> None:
    """Defocus-control toolchain: synthesise DP data, train RDPD/DC2/UiD, export to phones."""
    _SETTINGS["verbose"] = verbose


def fail(message: str, code: int = 2) -> None:
    """Print one clear error line and exit (no traceback for user errors)."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def log_path(out) -> Path | None:
    """Where a command writing to ``out`` logs third-party output: ``<out>.log`` beside it
    (``<out>.rank<N>.log`` for torchrun's other ranks); None when that place cannot be made."""
    rank = os.environ.get("RANK", "0")
    try:
        place = Path(out).resolve()
        log = place.with_name(place.name + (".log" if rank == "0" else f".rank{rank}.log"))
        log.parent.mkdir(parents=True, exist_ok=True)
    except (OSError, ValueError):
        return None
    return log if os.access(log.parent, os.W_OK) else None


@contextlib.contextmanager
def _third_party_output(log: Path | None):
    """Send everything written to the process's stderr (file descriptor 2: Python warnings,
    logging, C++ libraries) to ``log`` while the command runs; a log that stays empty is removed.
    With --verbose, or without a log, stderr is left alone: logging never fails a command."""
    if _SETTINGS["verbose"] or log is None:
        yield
        return
    try:
        fh = open(log, "a")
    except OSError:
        yield
        return
    with fh:
        before = fh.tell()
        fh.write(f"\n== {_dt.datetime.now().isoformat(timespec='seconds')} {' '.join(sys.argv)}\n")
        fh.flush()
        header_end = fh.tell()
        sys.stderr.flush()
        terminal = os.dup(2)
        os.dup2(fh.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(terminal, 2)
            os.close(terminal)
            try:
                if os.fstat(fh.fileno()).st_size == header_end:  # nothing was said: no log
                    fh.truncate(before)
                    if before == 0:
                        log.unlink(missing_ok=True)
            except OSError:
                pass


def command(name: str | None = None, log_beside: str | None = None):
    """Register a CLI command. While it runs, third-party output goes to the log beside the
    output named by the option ``log_beside`` (:func:`log_path`). ``UserError`` -> one line,
    exit 2; a file the system refuses (``OSError`` naming it) -> one line, exit 2; any other
    exception is a bug -> its traceback saved to a file the message names, exit 70."""
    def wrap(fn):
        @functools.wraps(fn)
        def run(*args, **kwargs):
            from core.errors import UserError

            log = None
            try:
                out = kwargs.get(log_beside) if log_beside else None
                log = log_path(out) if out is not None else None
                with _third_party_output(log):
                    return fn(*args, **kwargs)
            except UserError as exc:
                fail(str(exc))
            except (typer.Exit, click.exceptions.ClickException, click.exceptions.Abort, KeyboardInterrupt):
                raise
            except OSError as exc:
                if exc.filename is None:
                    _bug(exc, log, fn.__name__)
                fail(f"{exc.filename}: {exc.strerror or exc}")
            except Exception as exc:  # a bug: say so, keep the traceback
                _bug(exc, log, fn.__name__)
        return app.command(name)(run)
    return wrap


def _bug(exc: Exception, log: Path | None, command_name: str) -> None:
    """Save the traceback (to the command's log, else a temporary file) and exit 70 saying so."""
    text = traceback.format_exc()
    try:
        if log is None:
            raise OSError
        with open(log, "a") as fh:
            fh.write(text)
    except OSError:
        fd, name = tempfile.mkstemp(prefix=f"defocus-{command_name}-", suffix=".log")
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        log = Path(name)
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    fail(f"internal error ({type(exc).__name__}: {first}). This is a bug in the toolchain, not in your "
         f"input; the traceback is in {log}", code=BUG_EXIT)


def _progress(description: str):
    """A rich progress bar; returns (context manager, callback(done, total))."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn, TimeRemainingColumn

    bar = Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), TimeRemainingColumn(), console=console, redirect_stderr=False)
    task = bar.add_task(description, total=None)
    return bar, lambda done, total: bar.update(task, completed=done, total=total)


def _target_help() -> str:
    from export.targets import help_text  # the registry (cheap: no converter is imported)

    return help_text() + " or all."


def _table(title: str, columns, rows, right=()):
    from rich.table import Table

    table = Table(title=title)
    for col in columns:
        table.add_column(col, justify="right" if col in right else "left", overflow="fold")
    for r in rows:
        table.add_row(*[str(v) for v in r])
    return table


# --- commands ----------------------------------------------------------------------------


@command("models")
def models_cmd(
    height: int = typer.Option(512, help="Input height for the MAC count (multiple of 16)."),
    width: int = typer.Option(512, help="Input width for the MAC count (multiple of 16)."),
    name: Optional[str] = typer.Option(None, "--name", help="Only this model (rdpd, dc2, uid)."),
) -> None:
    """Table of the registered models: variant, parameters, GMAC, inputs, outputs."""
    from models.complexity import model_table
    from models.registry import get

    rows = model_table(height, width, names=[get(name).name] if name else None)
    console.print(_table(f"models (GMAC at {height}x{width}; convs and matmuls, MAC = FLOP/2)",
                         ("model", "variant", "params", "paper", "GMAC", "inputs", "outputs"),
                         [(r["model"], r["variant"], f"{r['params'] / 1e6:.3f} M",
                           f"{r['paper_params'] / 1e6:.2f} M" if r["paper_params"] else "", f"{r['gmac']:.2f}",
                           r["inputs"], r["outputs"]) for r in rows], right=("params", "paper", "GMAC")))


@command(log_beside="out")
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
    shard: Optional[str] = typer.Option(None, help="K/N: write only part K of N (1-based) of the data set, e.g. "
                                        "one part per process or machine, each to its own --out; sample i "
                                        "depends only on (seed, i), so the parts together equal the single run."),
) -> None:
    """Synthesise a defocus data set (DP views or W/UW pairs) with a JSON record of every parameter."""
    from core.sizes import parse_size
    from synth import dataset

    cfg = dataset.SynthConfig(camera=camera, scenes=scenes, size=parse_size(size), out=out, format=format,
                              split=split, seed=seed, scene_kind=scene_kind, textures=textures, psf_bank=psf_bank,
                              max_layers=max_layers, noise_scale=noise_scale, distortion=distortion,
                              refocus=refocus, device=device, force=force, shard=dataset.parse_shard(shard))
    part = dataset.shard_range(cfg) if shard else range(scenes)
    bar, update = _progress(f"synth {camera} {size}" + (f" part {shard}" if shard else ""))
    kept: list = []
    with bar:
        record = dataset.generate(cfg, progress=update, keep=kept if preview else None)
    what = f"samples {part.start}..{part.stop - 1} (part {shard})" if shard else "samples"
    console.print(f"[green]wrote[/] {len(part)} {what} to {out} ({record['samples_per_second']:.2f} samples/s); "
                  f"record: {out / dataset.record_name(cfg)}")
    if preview:
        sheet = "contact_sheet.png" if not shard else f"contact_sheet.shard-{cfg.shard[0]}-of-{cfg.shard[1]}.png"
        console.print(f"contact sheet: {dataset.write_preview(out, kept, f'{camera}: {scene_kind} scenes, seed {seed}', sheet)}")


@command(log_beside="out")
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

    cfg = loop.load_config(model, variant, {"steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed,
                                            "out": str(out), "device": device, "threads": threads,
                                            "init": str(init) if init else None, "pool_size": pool_size,
                                            "data": data or None, "lr_halving_steps": lr_halving_steps,
                                            "patch": patch, "pool_image": pool_image, "refresh_every": refresh_every},
                           resume=resume)
    main_rank = os.environ.get("RANK", "0") == "0"  # torchrun: only rank 0 reports
    bar, update = _progress(f"train {model}-{variant}")
    on_step = lambda done, total, loss, sps: (update(done, total), bar.update(  # noqa: E731
        bar.task_ids[0], description=f"train {model}-{variant} loss {loss:.4f} {sps:.1f} samples/s"))
    pool_task = bar.add_task("render synthetic pool", total=None) if "synthetic" in cfg.data else None
    on_pool = (lambda done, total: bar.update(pool_task, completed=done, total=total)) if pool_task is not None else None
    with bar if main_rank else contextlib.nullcontext():
        summary = loop.train(cfg, resume=resume, progress=on_step if main_rank else None, log=console.print,
                             pool_progress=on_pool if main_rank else None, publish=publish)
    if not main_rank:
        return
    if summary["final_loss"] is not None:  # None: a finished run was resumed, nothing trained
        console.print(f"[green]done[/] {summary['steps']} steps, final loss {summary['final_loss']:.5f}, "
                      f"{summary['samples_per_s']:.1f} samples/s; run: {summary['run_dir']}")
    if summary.get("published"):
        console.print(f"starter checkpoint: {summary['published']}")


@command()
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
    from train.evaluate import evaluate_command

    res = evaluate_command(model, checkpoint, data, count, size, wiener, json_out, save_images)
    console.print(_table(res["title"], ("task", "method", "PSNR dB", "SSIM", "MAE", "vs input dB"),
                         [(r["task"], r["method"], f"{r['psnr']:.2f}", f"{r['ssim']:.3f}", f"{r['mae']:.4f}",
                           f"{r['vs_input_db']:+.2f}") for r in res["rows"]]))
    if res["sheet"]:
        console.print(f"images: {res['sheet']}")


@command("run", log_beside="out")
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
    from runtime_py.run_capture import run_on_capture

    res = run_on_capture(model, capture, out, artifact=artifact, checkpoint=checkpoint, focus=focus,
                         focus_mask=focus_mask, aperture=aperture, align_depth=align_depth, threads=threads,
                         force=force, status=console.status)
    console.print(f"[green]wrote[/] {', '.join(res['outputs'])} + comparison.png to {res['path']} ({res['runtime']})")


@command(log_beside="out")
def demo(
    out: Path = typer.Option(Path("demo_out"), help="Folder for the demo's data sets and pictures."),
    device: str = typer.Option("auto", help="auto (CUDA when present), cpu or cuda."),
) -> None:
    """End to end on bundled defaults: synthesise RDPD (Canon-like DP), Pixel DP and W/UW data sets
    (with contact sheets), export the starter DP-model checkpoints (RDPD, UiD) to ONNX with a
    parity check, and run them on the synthetic Pixel capture (outputs + comparison images)."""
    from runtime_py.demo import run_demo

    res = run_demo(out, device, progress=_progress, status=console.status)
    console.print(_table("demo: synthetic defocus data", ("camera", "format", "samples", "size", "samples/s",
                                                         "contact sheet"),
                         [(r["camera"], r["format"], r["samples"], r["size"], f"{r['samples_per_s']:.2f}", r["sheet"])
                          for r in res["data"]]))
    console.print(_table("demo: checkpoint -> export -> run on a Pixel DP capture",
                         ("model", "artifact", "runtime", "parity", "outputs"),
                         [(r["model"], r["artifact"], r["runtime"], r["parity"], r["outputs"]) for r in res["chain"]]))


@command()
def inspect(
    capture: Path = typer.Argument(..., help="A capture file or folder: Pixel *_left.pgm / NNN_left.png, Garg "
                                   "result_pd_left_<view>.png, a DPDD root, an iPhone .heic, or a UW+W bundle folder."),
    preview: Optional[Path] = typer.Option(None, "--preview", help="Write a preview PNG of what was read."),
) -> None:
    """Say what a capture holds: sizes, bit depth, black level, disparity range, metadata."""
    from runtime_py.captures import open_capture
    from runtime_py.captures.preview import capture_preview

    cap = open_capture(capture)
    if preview:
        capture_preview(cap, preview)
    console.print(_table(f"{capture} ({cap.kind})", ("field", "value"), cap.summary()))
    if preview:
        console.print(f"preview: {preview}")


@command("export", log_beside="out")
def export_cmd(
    model: str = typer.Option("all", "--model", "-m", help="rdpd, dc2, uid or all."),
    target: str = typer.Option(..., "--target", "-t", help=_target_help()),
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
    from export.pipeline import run
    from export.report import failed, report_text

    bar, update = _progress(f"export {model} -> {target} {precision} {size}")
    try:  # the bar starts once every request passed its checks (a refusal prints one line)
        rows = run(model, target, precision, size, litert_recipe=litert_recipe, variant=variant,
                   checkpoint=checkpoint, calibration=calibration, calibration_count=calibration_count,
                   outputs=outputs, out=out, force=force, min_psnr=min_psnr, started=lambda n: bar.start(),
                   progress=update, log=lambda s: bar.console.print(f"[dim]{s}[/]", soft_wrap=True))
    finally:
        if bar.live.is_started:
            bar.stop()
    print(report_text(rows))
    log = log_path(out)
    console.print(f"artifacts in {out}/ (<model>-<variant>/<target>-<precision>-<HxW>/)"
                  + (f"; third-party messages in {log}" if log and log.exists() and not _SETTINGS["verbose"] else ""),
                  soft_wrap=True)
    if failed(rows):
        raise typer.Exit(1)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
