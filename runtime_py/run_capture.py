"""A capture in, model outputs out: what ``cli.py run`` does.

- RDPD and UiD take a dual-pixel capture (Pixel PGM/PNG, Garg, DPDD); green-only Pixel views
  are resampled to square pixels and repeated to three channels.
- DC2 takes a UW+W bundle: UW is aligned to W (DIS flow), the target defocus map comes from the
  disparity, the focus (point or mask) and the aperture scale, W's own map from its metadata.
- Exported artifacts have a fixed size: larger images are tiled (``runtime_py.tiling``), smaller
  ones reflect-padded. A PyTorch checkpoint is by default exported on the fly at a tile size fitted
  to the image (at most ``--tile``) and cached (``runtime_py.export_cache``), then tiled the same
  way on that runtime with ``--threads``; ``--runner eager`` runs it in PyTorch on the whole image
  padded to a multiple of 16 (memory grows with the image: 2.2 GB at 3 MP).
Outputs are written as 16-bit PNG (maps normalised to their value range) with a side-by-side
comparison PNG, into a temporary folder renamed into place at the end.
"""
from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from models.dc2_spec import DEFOCUS_NORM_PX
from models.radial import radial_map
from core.atomic import atomic_dir, write_image, write_json
from models.registry import get
from runtime_py.captures import Capture
from runtime_py.runners import ModelRunner
from runtime_py.tiling import StreamingTiledRunner, TiledRunner, fit_tile, tile_starts
from core.errors import UserError

# Overlap of neighbouring tiles (px). RDPD mobile, 512x768 synthetic scene, 256 px tiles, tiled vs
# whole-image eager: 32 px 61.2 dB, 64 px 64.6 dB, 128 px 66.0 dB (fp32 parity needs 60); the rest
# is the per-image mean of its residual and the ConvLSTM's context, which no overlap recovers.
OVERLAP = 64
TILE = 768  # default largest tile side of an on-the-fly export: bounds the runtime's memory
RUNNER_CHOICES = "auto (the checkpoint exported to the host's fastest runtime, cached), eager (PyTorch), or a target"


class RunError(UserError):
    """A capture that does not fit the model, or a bad focus request."""


def _rgb(a: np.ndarray, name: str = "image", processing: list | None = None) -> np.ndarray:
    """HxWx3 float32; a grey view is copied to the three channels (said in ``processing``): a
    read-only broadcast view, copied once when the spec packs it (not twice at 3 MP)."""
    a = np.asarray(a, np.float32)
    if a.ndim == 2:
        a = a[..., None]
    if a.shape[2] == 1:
        if processing is not None:
            processing.append(f"{name}: grey (green) view copied to 3 channels")
        return np.broadcast_to(a, a.shape[:2] + (3,))
    if a.shape[2] > 3 and processing is not None:
        processing.append(f"{name}: channels after the third dropped")
    return a[..., :3]


def focus_mask_from(shape: tuple[int, int], point: tuple[int, int] | None = None, mask_path: Path | None = None,
                    radius_frac: float = 0.06) -> np.ndarray:
    """The UiD/DC2 focus region: a disk around a tapped point, or a mask image (non-zero = focus)."""
    h, w = shape
    if mask_path is not None:
        m = cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE)
        if m is None:
            raise RunError(f"{mask_path}: focus mask is not a readable image")
        if m.shape != (h, w):
            raise RunError(f"{mask_path}: focus mask is {m.shape[1]}x{m.shape[0]}, the capture is {w}x{h}")
        return (m > 0).astype(np.float32)
    if point is None:
        point = (w // 2, h // 2)
    x, y = point
    if not (0 <= x < w and 0 <= y < h):
        raise RunError(f"focus point {point} is outside the {w}x{h} capture")
    mask = np.zeros((h, w), np.float32)
    cv2.circle(mask, (int(x), int(y)), max(2, int(radius_frac * min(h, w))), 1.0, -1)
    return mask


def model_inputs(model: str, capture: Capture, *, focus: tuple[int, int] | None = None,
                 focus_mask: Path | None = None, aperture: float = 1.0, preset: str = "fast",
                 align_depth: bool = True) -> tuple[dict, dict]:
    """Named NCHW inputs for ``model`` from a capture, and a record of what was done: the
    capture's fields (``models.spec``) that the model's spec asks for, packed by the spec.
    ``align_depth``: a dual-camera model's UW -> W flow comes from the capture's disparity
    (scale, direction and offset fitted to the images, depth edges re-decided by matching;
    ``runtime_py.align``) rather than from DIS alone. ``record["processing"]`` continues the
    capture's own list with each step done here, as it is done."""
    spec = get(model)
    rec: dict = {"capture": str(capture.path), "kind": capture.kind, "capture_record": capture.record,
                 "processing": list(capture.processing)}
    if spec.data.capture == "dual_pixel":
        fields = _dual_pixel_fields(spec, capture, rec, focus, focus_mask)
    elif spec.data.capture == "dual_camera":
        fields = _dual_camera_fields(spec, capture, rec, focus, focus_mask, aperture, preset, align_depth)
    else:
        raise RunError(f"{model}: no capture reader for {spec.data.capture!r} captures")
    fields = _linearised(fields, capture, rec)
    return {k: v[None] for k, v in spec.inputs_from_fields(fields).items()}, rec


IMAGE_FIELDS = ("left", "right", "wide", "ultrawide")  # the capture's images among the spec's fields


def _linearised(fields: dict, capture: Capture, rec: dict) -> dict:
    """The spec's fields are linear (``models.spec``; the models train on linear renders): an
    sRGB-encoded capture's images (iPhone, DPDD) are linearised (IEC 61966-2-1) after the
    alignment, and ``rec["transfer"]`` tells :func:`in_capture_encoding` to encode the image
    outputs back. Raw DP views are linear already."""
    rec["transfer"] = capture.transfer
    if capture.transfer != "srgb":
        return fields
    from synth.scenes import srgb_to_linear

    names = [k for k in IMAGE_FIELDS if k in fields]
    rec["processing"].append(f"{', '.join(names)}: sRGB-encoded values linearised (IEC 61966-2-1) for the model, "
                             "whose fields are linear; its image outputs are encoded back to sRGB")
    return {k: (srgb_to_linear(v).astype(np.float32) if k in names else v) for k, v in fields.items()}


def _is_image(t) -> bool:
    """An RGB image output in [0, 1] (not a mask, a map or a recurrent state)."""
    return t.channels == 3 and tuple(t.value_range) == (0.0, 1.0) and not t.recurrent


def in_capture_encoding(model: str, outputs: dict, record: dict) -> dict:
    """``outputs`` with the image outputs encoded like the capture's images (sRGB when
    ``record["transfer"]`` says the capture was sRGB-encoded; unchanged otherwise)."""
    if record.get("transfer") != "srgb":
        return outputs
    from synth.writers import linear_to_srgb

    spec = get(model)
    return {k: (linear_to_srgb(v).astype(np.float32) if k in spec.output_names and _is_image(spec.output(k)) else v)
            for k, v in outputs.items()}


def _dual_pixel_fields(spec, capture: Capture, rec: dict, focus, focus_mask) -> dict:
    """Left and right views (green-only Pixel views resampled to square pixels, repeated to
    RGB), plus the radial map and a focus mask when the model takes them."""
    if "left" not in capture.arrays:
        raise RunError(f"{capture.path}: {spec.name} needs a dual-pixel capture (left/right views), got {capture.kind}")
    cap = capture.to_square_pixels()
    rec["processing"] += cap.processing[len(capture.processing):]
    left = _rgb(cap.arrays["left"], "left", rec["processing"])
    right = _rgb(cap.arrays["right"], "right", rec["processing"])
    h, w = left.shape[:2]
    rec["size"] = [h, w]
    fields = {"left": left, "right": right}
    if "radial" in spec.data.fields:
        fields["radial"] = radial_map(h, w)
    if "focus_mask" in spec.data.fields:
        fields["focus_mask"] = focus_mask_from((h, w), focus, focus_mask)
        rec["focus_pixels"] = int(fields["focus_mask"].sum())
    return fields


def _dual_camera_fields(spec, capture: Capture, rec: dict, focus, focus_mask, aperture: float, preset: str,
                        align_depth: bool) -> dict:
    """W, UW aligned to W, W's own defocus map (from its metadata) and the target defocus map
    (from the disparity, the focus point or mask and the aperture scale), in px; radial map."""
    from runtime_py.align import align_uw_to_w
    from runtime_py.defocus_maps import defocus_map, wide_defocus_from_bundle

    if "wide" not in capture.arrays or "ultrawide" not in capture.arrays:
        raise RunError(f"{capture.path}: {spec.name} needs a UW+W bundle (wide + ultrawide), got {capture.kind}")
    if "disparity" not in capture.arrays:
        why = [w for w in capture.record.get("warnings", []) if "depth item" in w]
        if isinstance(capture.record.get("disparity"), str):
            why.append(capture.record["disparity"])
        raise RunError(f"{capture.path}: {spec.name} needs a disparity map to build the target defocus map"
                       + (f" ({'; '.join(why)})" if why else ""))
    wide, uw, disp = capture.arrays["wide"], capture.arrays["ultrawide"], capture.arrays["disparity"]
    al = align_uw_to_w(wide, uw, f_wide_px=capture.record.get("wide_focal_px"),
                       f_uw_px=capture.record.get("ultrawide_focal_px"), preset=preset,
                       disparity=disp if align_depth else None)
    how = "disparity-guided flow" if align_depth else f"DIS optical flow, preset {preset}"
    rec["processing"].append(f"ultrawide warped onto the wide grid ({how}; runtime_py.align)")
    h, w = wide.shape[:2]
    mask = focus_mask_from((h, w), focus, focus_mask) if (focus or focus_mask) else None
    dr = float(np.ptp(disp)) or 1.0
    scale = aperture * DEFOCUS_NORM_PX / dr  # aperture 1: the scene's disparity range spans the map's full scale
    target, trec = defocus_map(disp, scale, point=None if mask is not None else (w // 2, h // 2),
                               mask=mask.astype(bool) if mask is not None else None)
    own, orec = wide_defocus_from_bundle(disp, capture.meta or {}, capture.record.get("wide_focal_px"),
                                         (capture.record.get("disparity") or {}).get("units"))
    rec.update({"size": [h, w], "alignment": al.report.__dict__ if hasattr(al.report, "__dict__") else str(al.report),
                "target_defocus": trec, "wide_defocus": orec, "aperture": aperture})
    rec["processing"].append(f"target defocus map from the disparity x {scale:.4g} px per disparity unit "
                             f"(aperture {aperture:g})")
    return {"wide": wide, "ultrawide": al.warped, "defocus_wide": own, "defocus_target": target,
            "radial": radial_map(h, w).astype(np.float32)}


def _pad_to(inputs: dict, th: int, tw: int) -> tuple[dict, tuple[int, int]]:
    h, w = next(iter(inputs.values())).shape[-2:]
    ph, pw = max(th - h, 0), max(tw - w, 0)
    if ph == 0 and pw == 0:
        return inputs, (h, w)
    return {k: np.pad(v, ((0, 0), (0, 0), (0, ph), (0, pw)), mode="reflect") for k, v in inputs.items()}, (h, w)


def run(runner: ModelRunner, model: str, inputs: dict, overlap: int = OVERLAP, processing: list | None = None,
        progress: Callable[[int, int], None] | None = None, workers: int = 1) -> dict:
    """Run a (possibly fixed-size) runner over inputs of any size; returns NCHW outputs. A
    sequence model's state starts at zero (and, tiled, streams per tile). The padding or tiling
    is appended to ``processing``; ``progress(done, total)`` is called after each tile;
    ``workers`` tiles run side by side (a runner whose calls are thread-safe, ``tile_workers``)."""
    spec = get(model)
    h, w = next(iter(inputs.values())).shape[-2:]
    say = processing.append if processing is not None else (lambda _: None)
    if runner.size is None:  # PyTorch: pad to a multiple of 16, run whole
        m = spec.size_multiple
        th, tw = -(-h // m) * m, -(-w // m) * m
        padded, _ = _pad_to(inputs, th, tw)
        say(f"run whole at full resolution: {w}x{h}" + (f" reflect-padded to {tw}x{th} (multiple of {m}), outputs "
                                                       "cropped back" if (th, tw) != (h, w) else ""))
        variant = runner.manifest.get("variant") or "mobile"
        padded.update({k: v.numpy() for k, v in spec.zero_state(variant, th, tw).items()})
        outs = runner(padded)
        return {k: v[..., : int(round(h * v.shape[-2] / th)), : int(round(w * v.shape[-1] / tw))] for k, v in outs.items()}
    # Padded as the whole-image run pads (reflect, to the artifact's size or a multiple of the
    # model's), so tiles see the same borders and the same radial map (sliced from the padded
    # input, not recomputed) as eager: at 3 MP, padding only the eager run cost 5 dB of parity.
    th, tw = runner.size
    m = spec.size_multiple
    padded, (h0, w0) = _pad_to(inputs, max(th, -(-h // m) * m), max(tw, -(-w // m) * m))
    ph, pw = next(iter(padded.values())).shape[-2:]
    if (ph, pw) != (h, w):
        say(f"{w}x{h} reflect-padded to {pw}x{ph} (the artifact's {tw}x{th} or a multiple of {m}), outputs cropped back")
    if spec.is_sequence:
        frame_inputs = [n for n in spec.input_names if n not in spec.state_map]
        if len(frame_inputs) != 1:
            raise RunError(f"{model}: tiled streaming takes one frame input, the model has {frame_inputs}")
        frame_input = frame_inputs[0]
        states = {k: tuple(s) for k, s in runner.shapes.items() if k in spec.state_map}
        ov = min(overlap, th // 2)
        streaming = StreamingTiledRunner(runner, (th, tw), states, overlap=ov, x_name=frame_input,
                                         radial_channel=None,
                                         state_io=tuple(spec.state_map.items()), progress=progress,
                                         workers=workers)
        outs = {spec.main_output: streaming(padded[frame_input])}
        say(f"streamed in {tw}x{th} tiles (overlap {ov} px, state per tile) at full resolution")
    else:
        ov = min(overlap, th // 2, tw // 2)
        outs = TiledRunner(runner, (th, tw), overlap=ov, progress=progress, workers=workers)(padded)
        if (pw, ph) != (tw, th):
            say(f"tiled at full resolution: {tw}x{th} tiles, overlap {ov} px, blended")
    H, W = padded[next(iter(padded))].shape[-2:]
    return {k: v[..., : int(round(h0 * v.shape[-2] / H)), : int(round(w0 * v.shape[-1] / W))] for k, v in outs.items()}


ROWS = 256  # rows converted at a time: float temporaries of a block, not of the image


def _to_png16(a: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """1xCxHxW float -> HxWxC uint16 (BGR for 3 channels) of (a - lo) / (hi - lo), by row blocks."""
    x = a[0].transpose(1, 2, 0)
    out = np.empty(x.shape, np.uint16)
    for i in range(0, x.shape[0], ROWS):
        blk = np.clip((x[i:i + ROWS] - lo) / max(hi - lo, 1e-12), 0, 1)
        out[i:i + ROWS] = np.round(blk * 65535)
    return out[..., ::-1] if out.shape[2] == 3 else out[..., 0]


def _comparison(spec, inputs: dict, main: np.ndarray, transfer: str | None = None) -> np.ndarray:
    """The spec's "before" image | 8 white columns | the main output, 16-bit BGR, by row blocks
    (``before_image`` is per pixel, so it is computed on row slices of the inputs); the before
    image in the capture's encoding, like ``main``."""
    h, w = main.shape[-2:]
    out = np.full((h, 2 * w + 8, 3), 65535, np.uint16)
    for i in range(0, h, ROWS):
        before = spec.before_image({k: v[0, :, i:i + ROWS] for k, v in inputs.items()})
        if transfer == "srgb":
            from synth.writers import linear_to_srgb

            before = linear_to_srgb(before)
        out[i:i + ROWS, :w] = _to_png16(before[None], 0.0, 1.0)
        out[i:i + ROWS, w + 8:] = _to_png16(main[:, :3, i:i + ROWS], 0.0, 1.0)
    return out


def write_outputs(out: Path, model: str, inputs: dict, outputs: dict, record: dict, force: bool = False,
                  extra=None, threads: int = 1) -> Path:
    """16-bit PNG per output + comparison.png (the spec's "before" image next to the main
    output) + run.json, published atomically: the previous folder survives a failed run.
    ``extra(tmp_folder)`` writes more files into the same folder before it is published.
    ``threads`` > 1 encodes the PNGs side by side (OpenCV and NumPy release the GIL): zlib is
    most of a 3 MP run's writing (0.26 s for y.png, twice that for the comparison, one core)."""
    from concurrent.futures import ThreadPoolExecutor

    spec = get(model)
    outputs = in_capture_encoding(model, outputs, record)

    def output_png(tmp: Path, name: str) -> None:
        arr = outputs[name]
        lo, hi = spec.output(name).value_range
        if not (np.isfinite(lo) and np.isfinite(hi)):
            lo, hi = float(arr.min()), float(arr.max())
        _write_png(tmp / f"{name}.png", _to_png16(arr, lo, hi))

    with atomic_dir(out, replace=force, what="outputs", error=RunError) as tmp:
        jobs = [lambda: _write_png(tmp / "comparison.png", _comparison(spec, inputs, outputs[spec.main_output],
                                                                              record.get("transfer")))]
        jobs += [lambda name=name: output_png(tmp, name) for name in outputs]
        with ThreadPoolExecutor(max(1, min(threads, len(jobs)))) as pool:
            for job in [pool.submit(j) for j in jobs]:
                job.result()  # the first error, after every job has ended
        if extra is not None:
            extra(tmp)
        write_json(tmp / "run.json", record, default=str, allow_nan=True)
    return Path(out)


def _write_png(path: Path, image: np.ndarray) -> None:
    write_image(path, image, "PNG")


def parse_point(text: str | None) -> tuple[int, int] | None:
    """``"x,y"`` -> (x, y) in capture pixels; None stays None."""
    if text is None:
        return None
    try:
        x, y = (int(v) for v in str(text).split(","))
    except ValueError:
        raise RunError(f"--focus must be two integers x,y, got {text!r}") from None
    return x, y


def open_runner(model: str, size: tuple[int, int], *, artifact: Path | None = None,
                checkpoint: Path | None = None, runner: str = "auto", threads: int = 2, tile: int = TILE,
                overlap: int = OVERLAP, cache_dir: Path | None = None,
                status: Callable[[str], contextlib.AbstractContextManager] | None = None) -> tuple[ModelRunner, dict]:
    """The runner for an image of ``size`` (H, W) and what was chosen (``run.json``'s ``runner``).

    ``artifact``: that folder on its runtime. ``checkpoint`` with ``runner`` ``eager``: PyTorch on
    the whole image; ``auto`` or a target name: the checkpoint exported to that target (auto:
    ``export.targets.HOST_RUNNER``) at the tile size ``fit_tile`` gives for this image with
    tiles of at most ``tile`` px, cached (``runtime_py.export_cache``)."""
    from export import targets
    from runtime_py.export_cache import cached_export
    from runtime_py.runners import TorchRunner, load

    if (artifact is None) == (checkpoint is None):
        raise RunError("give exactly one of --artifact DIR or --checkpoint PATH")
    choice = runner.strip().lower()
    status = status or (lambda _: contextlib.nullcontext())
    if artifact is not None:
        if choice != "auto":
            raise RunError(f"--runner {runner} applies to --checkpoint; an artifact runs on its own runtime")
        r = load(artifact, threads=threads)
        if r.manifest.get("model") != model:
            raise RunError(f"{artifact}: artifact is of model {r.manifest.get('model')!r}, not {model!r}")
        workers = tile_workers(targets.get(r.manifest["target"]), size, r.size, overlap, threads,
                               get(model).size_multiple)
        if workers > 1:  # tiles side by side: reopened with the threads each tile gets
            r = load(artifact, threads=max(1, threads // workers))
        return r, {"choice": "artifact", "runtime": r.runtime, "artifact": str(artifact), "threads": threads,
                   "tile_workers": workers}
    if choice == "eager":
        import torch

        torch.set_num_threads(threads)
        r = TorchRunner.from_checkpoint(checkpoint, model)
        return r, {"choice": "eager", "runtime": r.runtime, "threads": threads}
    try:
        target = targets.get(targets.HOST_RUNNER if choice == "auto" else choice)
    except UserError:
        raise RunError(f"--runner {runner!r} is not a runner; choose {RUNNER_CHOICES} "
                       f"({', '.join(targets.names())})") from None
    if target.not_runnable_reason or target.capabilities.get("fp32"):
        raise RunError(f"--runner {runner}: {target.name} cannot run fp32 here "
                       f"({target.not_runnable_reason or target.capabilities.get('fp32')}); choose {RUNNER_CHOICES}")
    if tile < 2 * overlap:
        raise RunError(f"--tile {tile} must be at least twice the tile overlap ({overlap} px)")
    m = get(model).size_multiple
    th, tw = (fit_tile(-(-n // m) * m, tile - tile % m, overlap, m) for n in size)  # the padded image (run)
    with status(f"exporting {model} to {target.name} fp32 {th}x{tw} (cached for the next runs)"):
        cached = cached_export(checkpoint, model, target.name, (th, tw), cache_dir)
    workers = tile_workers(target, size, (th, tw), overlap, threads, m)
    r = load(cached.path, threads=max(1, threads // workers))
    return r, {"choice": choice, "runtime": r.runtime, "threads": threads, "tile": [th, tw], "overlap": overlap,
               "tile_workers": workers, **cached.record()}


def tile_workers(target, size: tuple[int, int], tile: tuple[int, int], overlap: int, threads: int,
                 multiple: int) -> int:
    """How many tiles run side by side: on a runtime whose calls are thread-safe
    (``Target.concurrent_runs``), one per thread (at most one per tile), each with
    ``threads // workers`` intra-op threads. RDPD mobile, 560x720 tiles, 2 threads, load 8: 0.49 s
    and 0.33 CPU s a tile side by side, 0.68 s and 0.44 CPU s with two intra-op threads (their
    per-layer barriers wait for a core a busy process holds; docs/BENCHMARKS.md)."""
    if not target.concurrent_runs or threads <= 1:
        return 1
    n = 1
    for side, t in zip(size, tile):
        padded = -(-side // multiple) * multiple
        n *= len(tile_starts(max(padded, t), t, min(overlap, t // 2)))
    return max(1, min(threads, n))


def model_of(artifact: Path | None = None, checkpoint: Path | None = None) -> str:
    """The model an artifact's manifest or a checkpoint's sidecar names (``run`` without
    ``--model``); read without opening a runtime or the weights."""
    from core.jsonfile import read_json
    from models.checkpoint import checkpoint_meta

    if checkpoint is not None:
        name = checkpoint_meta(checkpoint).get("model")
        where = f"{checkpoint}'s sidecar"
    elif artifact is not None:
        name = read_json(Path(artifact) / "manifest.json", RunError,
                         "missing (not an artifact folder written by `cli.py export`)").get("model")
        where = f"{Path(artifact) / 'manifest.json'}"
    else:
        raise RunError("give exactly one of --artifact DIR or --checkpoint PATH")
    if not name:
        raise RunError(f"{where} names no model; pass --model")
    return str(name)


def run_on_capture(model: str | None, capture: Path, out: Path, *, artifact: Path | None = None,
                   checkpoint: Path | None = None, focus: str | None = None, focus_mask: Path | None = None,
                   aperture: float = 1.0, align_depth: bool = True, threads: int = 2, force: bool = False,
                   runner: str = "auto", tile: int = TILE, cache_dir: Path | None = None,
                   status=None, progress=None, levels: dict | None = None, prompts: dict | None = None) -> dict:
    """What ``cli.py run`` does: a capture through an exported artifact (on its runtime) or a
    checkpoint (by default exported on the fly and cached, ``open_runner``), outputs written to
    ``out``. ``status(text)`` is a context manager shown while exporting or running whole;
    ``progress(description)`` gives (context manager, update(done, total)) for the tiles;
    ``levels``: black_level / white_level / bit_depth overrides for the capture reader;
    ``prompts``: the keyword arguments of ``runtime_py.prompt_run.prompted_mask`` (``prompt``,
    ``box`` or ``point``, ...) for a model that takes a focus mask: the mask comes from the
    prompt, and mask.png + prompt.png are written too. Returns {"path", "outputs", "runtime",
    "runner"}; run.json's ``runner`` says what ran, ``seconds`` and ``cpu_seconds`` (all threads)
    what each stage took. ``model`` None: the one the artifact or checkpoint names."""
    from runtime_py.captures import check_level_overrides, open_capture

    levels = {k: v for k, v in (levels or {}).items() if v is not None}
    check_level_overrides(**levels)
    if (artifact is None) == (checkpoint is None):
        raise RunError("give exactly one of --artifact DIR or --checkpoint PATH")
    model = model or model_of(artifact, checkpoint)
    prompts = {k: v for k, v in (prompts or {}).items() if v is not None}
    prompted = any(k in prompts for k in ("prompt", "box", "point"))
    if prompted and (focus or focus_mask):
        raise RunError("give either a prompt (--prompt, --box, --point) or --focus / --focus-mask, not both")
    if prompted and "focus_mask" not in get(model).data.fields:
        raise RunError(f"{model} takes no focus mask: --prompt, --box and --point are for models that refocus")
    point = parse_point(focus)
    status = status or (lambda _: contextlib.nullcontext())
    t0, c0 = time.perf_counter(), time.process_time()
    cap = open_capture(capture, **levels)
    inputs, record = model_inputs(model, cap, focus=point, focus_mask=focus_mask,
                                  aperture=aperture, align_depth=align_depth)
    t1, c1 = time.perf_counter(), time.process_time()
    r, chosen = open_runner(model, tuple(next(iter(inputs.values())).shape[-2:]), artifact=artifact,
                            checkpoint=checkpoint, runner=runner, threads=threads, tile=tile, cache_dir=cache_dir,
                            status=status)
    t2, c2 = time.perf_counter(), time.process_time()
    picked = None
    if prompted:
        from runtime_py.prompt_run import prompted_mask

        with status("finding the prompted region"):
            picked = prompted_mask(model, cap, inputs, r, record, threads=threads, **prompts)
        inputs["focus_mask"] = picked.mask[None, None].astype(np.float32)
    if r.size is None or progress is None:
        bar, update = status(f"running {model} on {r.runtime}"), None
    else:
        bar, update = progress(f"{model} tiles on {r.runtime}")
    with bar:
        outputs = run(r, model, inputs, overlap=chosen.get("overlap", OVERLAP), processing=record["processing"],
                      progress=update, workers=chosen.get("tile_workers", 1))
    t3, c3 = time.perf_counter(), time.process_time()
    record.update({"model": model, "runtime": r.runtime, "source": r.source, "runner": chosen,
                   "seconds": {"read": round(t1 - t0, 3), "runner": round(t2 - t1, 3), "model": round(t3 - t2, 3)},
                   "cpu_seconds": {"read": round(c1 - c0, 3), "runner": round(c2 - c1, 3), "model": round(c3 - c2, 3)}})
    extra = None
    if picked is not None:
        from runtime_py.prompt_figure import prompt_extras

        extra = lambda tmp: prompt_extras(tmp, get(model), inputs, outputs, picked)  # noqa: E731
    path = write_outputs(out, model, inputs, outputs, record, force=force, extra=extra, threads=threads)
    return {"path": path, "outputs": sorted(outputs), "runtime": r.runtime, "runner": chosen}
