"""Scores on real-format captures with all-in-focus ground truth: ``cli.py evaluate --data DIR``.

Two layouts are recognised:
- Pixel 4 pairs as the public set ships them (Xin et al.): ``NNN_left.png``/``NNN_right.png``
  (14-bit on black 1024, read by ``runtime_py.captures``, vignetting corrected when
  ``calibration/white_sheet_*`` is there) and ``gt_all_in_focus_im/NNN_gt.png`` (16-bit, on the
  scale of (L+R)/2, normalised with the views' black and white levels) covering a central part
  of the views; where exactly is found by maximising the normalised correlation of the ground
  truth with (L+R)/2 over offsets within ``search`` px of the centred position.
- A DPDD folder (``<split>_c/target``), full resolution (``full_res``): values as stored (sRGB).

Per scene and method: PSNR and SSIM (``core.metrics``) on linear values and on sRGB-encoded
values, for the input ((L+R)/2, or DPDD's combined view), the model (a checkpoint or an exported
artifact, through ``runtime_py.run_capture``: full resolution, tiled for a fixed-size artifact),
unsharp masking with one fixed setting, and the ``classical`` hook (the calibrated-kernel Wiener
baseline of ``calibration.classical`` when it is there). Then per-scene deltas against the input
and the count of scenes better than the input.
"""
from __future__ import annotations

import csv
import io
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from core import metrics
from core.errors import UserError
from synth.writers import XIN_GT_FOLDER as GT_FOLDER

GT_RE = re.compile(r"^(.+)_gt\.png$")
SEARCH_PX = 32  # the ground truth's offset is searched within +-SEARCH_PX of the centred position
UNSHARP_SIGMA, UNSHARP_AMOUNT = 1.5, 0.5  # one fixed setting for all scenes: x + 0.5 (x - G_1.5 * x)
INPUT, MODEL, UNSHARP = "input (L+R)/2", "model", f"unsharp masking (sigma {UNSHARP_SIGMA:g}, amount {UNSHARP_AMOUNT:g})"


class EvaluationError(UserError):
    """A capture set that cannot be scored (no ground truth, sizes that do not fit)."""


@dataclass
class Scene:
    """One capture with its ground truth: ``capture`` (the reader's), ``target`` (C x h x w,
    on the capture's value scale), ``offset`` (y, x) of the target inside the views,
    ``encoding`` of the values (``linear`` or ``srgb``) and what was done (``processing``)."""

    name: str
    capture: object
    target: np.ndarray
    offset: tuple[int, int]
    encoding: str
    record: dict = field(default_factory=dict)
    processing: list = field(default_factory=list)

    def crop(self, image: np.ndarray) -> np.ndarray:
        """C x H x W at the views' size -> the ground truth's region."""
        y, x = self.offset
        h, w = self.target.shape[-2:]
        return image[..., y:y + h, x:x + w]


# ------------------------------------------------------------------------------ finding scenes


def capture_set_kind(data: str | Path, full_res: bool = False) -> str | None:
    """``pixel_gt`` for Pixel pairs with a ``gt_all_in_focus_im`` folder, ``dpdd`` for a DPDD
    folder when ``full_res``; None otherwise (the synthetic split, crops of DPDD, npz shards)."""
    p = Path(str(data))
    if not p.is_dir():
        if full_res:
            raise EvaluationError(f"{data}: --full-res needs a DPDD folder (the synthetic split and npz shards are "
                                  "scored as crops)")
        return None
    if (p / GT_FOLDER).is_dir():
        return "pixel_gt"
    if full_res:
        from runtime_py.captures.dpdd import find_splits

        if find_splits(p):
            return "dpdd"
        raise EvaluationError(f"{p}: --full-res needs a DPDD folder (<split>_c/source, _l/source, _r/source, "
                              f"_c/target) or Pixel pairs with a {GT_FOLDER}/ folder")
    return None


def locate(target: np.ndarray, image: np.ndarray, search: int = SEARCH_PX) -> tuple[tuple[int, int], float]:
    """(y, x) of ``target`` (h x w) inside ``image`` (H x W) maximising the normalised
    correlation over offsets within ``search`` px of the centred position; and that correlation."""
    (h, w), (H, W) = target.shape, image.shape
    if h > H or w > W:
        raise EvaluationError(f"ground truth {w}x{h} is larger than the views {W}x{H}")
    cy, cx = (H - h) // 2, (W - w) // 2
    y0, x0 = max(cy - search, 0), max(cx - search, 0)
    y1, x1 = min(cy + search, H - h), min(cx + search, W - w)
    window = np.ascontiguousarray(image[y0:y1 + h, x0:x1 + w], np.float32)
    score = cv2.matchTemplate(window, np.ascontiguousarray(target, np.float32), cv2.TM_CCOEFF_NORMED)
    dy, dx = np.unravel_index(int(np.argmax(score)), score.shape)
    return (int(y0 + dy), int(x0 + dx)), float(score[dy, dx])


def _pixel_scenes(root: Path, search: int, limit: int | None, levels: dict) -> tuple[list[Scene], list[str]]:
    from runtime_py.captures import read_pixel_png
    from runtime_py.captures.common import read_image_unchanged

    gts = {m.group(1): p for p in sorted((root / GT_FOLDER).iterdir()) if (m := GT_RE.match(p.name))}
    if not gts:
        raise EvaluationError(f"{root / GT_FOLDER}: no NNN_gt.png ground truth images")
    scenes, skipped = [], []
    for stem, gt_path in gts.items():
        left = root / f"{stem}_left.png"
        if not left.is_file() or not (root / f"{stem}_right.png").is_file():
            skipped.append(f"{gt_path.name}: no {stem}_left.png/{stem}_right.png pair in {root}")
            continue
        cap = read_pixel_png(left, **levels)
        raw = read_image_unchanged(gt_path, "ground truth")
        if raw.dtype != np.uint16:
            raise EvaluationError(f"{gt_path}: ground truth is {raw.dtype.itemsize * 8}-bit; the Pixel 4 set's is 16-bit")
        if raw.ndim == 3:
            raise EvaluationError(f"{gt_path}: ground truth has {raw.shape[2]} channels; the views are single-channel")
        black, white = cap.record["black_level"], cap.record["white_level"]
        gt = np.clip((raw.astype(np.float32) - black) / (white - black), 0, 1)
        combined = 0.5 * (cap.left + cap.right)
        try:
            offset, corr = locate(gt, combined, search)
        except EvaluationError as exc:
            raise EvaluationError(f"{gt_path}: {exc}") from None
        y, x = offset
        region = combined[y:y + gt.shape[0], x:x + gt.shape[1]]
        gain = float((region * gt).sum() / max(float((region * region).sum()), 1e-12))
        steps = list(cap.processing) + [
            f"ground truth {gt_path.name}: (value - {black:g}) / {white - black:g} (the views' levels: it is on the "
            "scale of (L+R)/2), clipped to [0, 1]",
            f"ground truth located at offset (y {y}, x {x}) in the {cap.left.shape[1]}x{cap.left.shape[0]} views: "
            f"maximum normalised correlation {corr:.4f} with (L+R)/2 within +-{search} px of the centre"]
        rec = {"files": [str(left), str(gt_path)], "gt_size": [int(gt.shape[0]), int(gt.shape[1])],
               "view_size": list(cap.left.shape), "offset": [y, x], "correlation": round(corr, 5),
               "gt_gain_vs_input": round(gain, 4), "levels": {k: cap.record[k] for k in ("black_level", "white_level",
                                                                                        "level_sources")}}
        if min(abs(y - (cap.left.shape[0] - gt.shape[0]) // 2), abs(x - (cap.left.shape[1] - gt.shape[1]) // 2)) >= search:
            rec["warning"] = f"offset at the edge of the +-{search} px search window"
        scenes.append(Scene(stem, cap, gt[None], offset, "linear", rec, steps))
        if limit and len(scenes) >= limit:
            break
    return scenes, skipped


def _dpdd_scenes(root: Path, limit: int | None) -> tuple[list[Scene], list[str]]:
    from runtime_py.captures import DPDDDataset

    ds = DPDDDataset(root)
    if not ds.target:
        raise EvaluationError(f"{root}: split {ds.split!r} has no {ds.split}_c/target images to score against")
    scenes = []
    for i in range(len(ds) if not limit else min(limit, len(ds))):
        cap = ds.capture(i)
        target = np.moveaxis(cap.arrays["target"], -1, 0)
        scenes.append(Scene(Path(ds.names(i)["target"]).stem, cap, target, (0, 0), "srgb",
                            {"files": ds.names(i)}, list(cap.processing)))
    return scenes, []


# ------------------------------------------------------------------------------ methods


def unsharp(image: np.ndarray, sigma: float = UNSHARP_SIGMA, amount: float = UNSHARP_AMOUNT) -> np.ndarray:
    """Unsharp masking of C x H x W values: x + amount (x - G_sigma * x), clipped to [0, 1]."""
    out = np.empty_like(image, dtype=np.float32)
    for c in range(image.shape[0]):
        blur = cv2.GaussianBlur(image[c].astype(np.float32), (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
        out[c] = image[c] + amount * (image[c] - blur)
    return np.clip(out, 0, 1)


def classical(scene: Scene) -> tuple[str, np.ndarray] | str:
    """THE HOOK for the classical baseline with the device's calibrated kernels (per-patch
    defocus scale from the two views, Wiener deconvolution of (L+R)/2), which
    ``calibration/classical.py`` provides. Contract: ``calibration.classical.deblur_capture(left,
    right, calibration_dir)`` with the views (H x W, linear) and the folder holding
    ``blur_kernels_{left,right}.npy`` (or a ``calibrate import`` kernels folder) returns (row label,
    H x W estimate at the views' size).
    Returns (label, C x H x W) or the reason it cannot run."""
    calib = Path(scene.capture.path).parent / "calibration"
    if scene.encoding != "linear" or "left" not in scene.capture.arrays:
        return "needs linear dual-pixel views"
    public = (calib / "blur_kernels_left.npy").is_file() and (calib / "blur_kernels_right.npy").is_file()
    if not public and not (calib / "kernels.json").is_file():
        return (f"no calibrated kernels ({calib.name}/blur_kernels_{{left,right}}.npy, or a `calibrate import` "
                f"folder there)")
    try:
        from calibration import classical as impl
    except ImportError:
        return "calibration.classical is not installed in this tree"
    fn = getattr(impl, "deblur_capture", None)
    if fn is None:
        return "calibration.classical has no deblur_capture(left, right, calibration_dir)"
    label, estimate = fn(scene.capture.left, scene.capture.right, calib)
    est = np.asarray(estimate, np.float32)
    return str(label), (est[None] if est.ndim == 2 else np.moveaxis(est, -1, 0))


def _model_output(model: str, runner, scene: Scene) -> tuple[np.ndarray, list[str], float]:
    """The model's main output on the scene's full capture (C x H x W at the views' size)."""
    from models.registry import get
    from runtime_py.run_capture import in_capture_encoding, model_inputs, run

    spec = get(model)
    inputs, rec = model_inputs(model, scene.capture)
    t0 = time.perf_counter()
    out = in_capture_encoding(model, run(runner, model, inputs, processing=rec["processing"]), rec)[spec.main_output][0]
    seconds = time.perf_counter() - t0
    steps = rec["processing"][len(scene.capture.processing):]
    views = scene.capture.arrays["left"].shape[:2]
    if out.shape[-2:] != views:  # resampled to square pixels: back to the views' grid
        out = np.stack([cv2.resize(c, (views[1], views[0]), interpolation=cv2.INTER_AREA) for c in out])
        steps.append(f"model output resampled back to the views' {views[1]}x{views[0]} grid (area)")
    if scene.target.shape[0] == 1 and out.shape[0] == 3:
        spread = float(np.abs(out - out.mean(0, keepdims=True)).mean())
        out = out.mean(0, keepdims=True)
        steps.append(f"model output: mean of its 3 channels (grey ground truth; mean |channel - mean| {spread:.4f})")
    return out, steps, seconds


def _scores(pred: np.ndarray, target: np.ndarray, encoding: str) -> dict:
    """PSNR and SSIM on linear values and on sRGB-encoded values."""
    from synth.scenes import srgb_to_linear
    from synth.writers import linear_to_srgb

    pred, target = np.clip(pred, 0, 1).astype(np.float32), np.clip(target, 0, 1).astype(np.float32)
    if encoding == "linear":
        lin, srgb = (pred, target), (linear_to_srgb(pred), linear_to_srgb(target))
    else:
        lin, srgb = (srgb_to_linear(pred), srgb_to_linear(target)), (pred, target)
    return {"linear": {"psnr": metrics.psnr(*lin), "ssim": metrics.ssim(*lin)},
            "srgb": {"psnr": metrics.psnr(*srgb), "ssim": metrics.ssim(*srgb)}}


# ------------------------------------------------------------------------------ the command


def evaluate_captures(model: str, data: str | Path, *, checkpoint: Path | None = None, artifact: Path | None = None,
                      full_res: bool = False, search: int = SEARCH_PX, limit: int | None = None,
                      threads: int = 2, levels: dict | None = None, progress=None) -> dict:
    """Score the input, the model (when given) and the classical baselines on every scene of
    ``data``. Returns {"scenes": [...], "summary": {method: ...}, "methods", "skipped", ...}."""
    from models.registry import get

    kind = capture_set_kind(data, full_res)
    if kind is None:
        raise EvaluationError(f"{data}: not a capture set with ground truth (Pixel pairs + {GT_FOLDER}/, or a DPDD "
                              "folder with --full-res)")
    spec = get(model)
    if spec.data.capture != "dual_pixel":
        raise EvaluationError(f"{data}: these captures are dual-pixel with all-in-focus ground truth; {model} takes "
                              f"{spec.data.capture} captures")
    if checkpoint is not None and artifact is not None:
        raise EvaluationError("give at most one of --checkpoint and --artifact")
    if search < 0:
        raise EvaluationError(f"--search must be >= 0 px, got {search}")
    if limit is not None and limit < 1:
        raise EvaluationError(f"--count must be at least 1 scene, got {limit}")
    root = Path(str(data))
    levels = {k: v for k, v in (levels or {}).items() if v is not None}
    if levels and kind != "pixel_gt":
        raise EvaluationError(f"{root}: --black-level/--white-level/--bit-depth apply to Pixel captures only")
    scenes, skipped = (_pixel_scenes(root, search, limit, levels) if kind == "pixel_gt" else _dpdd_scenes(root, limit))
    if not scenes:
        raise EvaluationError(f"{root}: no scene has both views and ground truth ({'; '.join(skipped)})")
    runner = None
    if checkpoint is not None or artifact is not None:
        from runtime_py.runners import TorchRunner, load

        runner = load(artifact, threads=threads) if artifact else TorchRunner.from_checkpoint(checkpoint, model)
        if artifact and runner.manifest.get("model") != model:
            raise EvaluationError(f"{artifact}: artifact is of model {runner.manifest.get('model')!r}, not {model!r}")
    input_label = INPUT if kind == "pixel_gt" else "input (combined view)"
    rows, classical_notes = [], set()
    for n, scene in enumerate(scenes):
        if progress:
            progress(n, len(scenes))
        if kind == "pixel_gt":
            before = 0.5 * (scene.capture.left + scene.capture.right)[None]
        else:
            before = np.moveaxis(scene.capture.arrays["combined"], -1, 0)
        images = {input_label: before, UNSHARP: unsharp(before)}
        extra: dict = {}
        hook = classical(scene)
        if isinstance(hook, str):
            classical_notes.add(hook)
        else:
            images[f"classical: {hook[0]}"] = hook[1]
        if runner is not None:
            out, steps, seconds = _model_output(model, runner, scene)
            images[MODEL] = out
            extra = {"model_processing": steps, "model_seconds": round(seconds, 3)}
        scores = {m: _scores(scene.crop(img), scene.target, scene.encoding) for m, img in images.items()}
        base = scores[input_label]
        delta = {m: {d: s[d]["psnr"] - base[d]["psnr"] for d in ("linear", "srgb")} for m, s in scores.items()}
        rows.append({"scene": scene.name, **scene.record, "processing": scene.processing, **extra,
                     "scores": scores, "vs_input_db": delta})
    if progress:
        progress(len(scenes), len(scenes))
    methods = list(rows[0]["scores"])
    summary = {}
    for m in methods:
        s = {}
        for d in ("linear", "srgb"):
            psnrs = [r["scores"][m][d]["psnr"] for r in rows]
            ssims = [r["scores"][m][d]["ssim"] for r in rows]
            deltas = [r["vs_input_db"][m][d] for r in rows]
            s[d] = {"psnr": float(np.mean(psnrs)), "ssim": float(np.mean(ssims)), "vs_input_db": float(np.mean(deltas)),
                    "vs_input_min": float(np.min(deltas)), "vs_input_max": float(np.max(deltas)),
                    "better_than_input": int(sum(x > 0 for x in deltas))}
        summary[m] = s
    return {"data": str(root), "kind": kind, "model": model, "checkpoint": str(checkpoint) if checkpoint else None,
            "artifact": str(artifact) if artifact else None, "runtime": runner.runtime if runner else None,
            "input": input_label, "methods": methods, "scenes": rows, "summary": summary, "skipped": skipped,
            "classical": sorted(classical_notes) or ["scored"], "count": len(rows),
            "settings": {"search_px": search, "unsharp_sigma": UNSHARP_SIGMA, "unsharp_amount": UNSHARP_AMOUNT}}


def to_csv(result: dict) -> str:
    """One row per scene and method (and a ``mean`` row per method): PSNR/SSIM linear and sRGB,
    PSNR change over the input."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["scene", "method", "psnr_linear", "ssim_linear", "psnr_srgb", "ssim_srgb", "vs_input_db_linear",
                "vs_input_db_srgb"])
    for r in result["scenes"]:
        for m, s in r["scores"].items():
            w.writerow([r["scene"], m, f"{s['linear']['psnr']:.4f}", f"{s['linear']['ssim']:.5f}",
                        f"{s['srgb']['psnr']:.4f}", f"{s['srgb']['ssim']:.5f}",
                        f"{r['vs_input_db'][m]['linear']:.4f}", f"{r['vs_input_db'][m]['srgb']:.4f}"])
    for m, s in result["summary"].items():
        w.writerow(["mean", m, f"{s['linear']['psnr']:.4f}", f"{s['linear']['ssim']:.5f}", f"{s['srgb']['psnr']:.4f}",
                    f"{s['srgb']['ssim']:.5f}", f"{s['linear']['vs_input_db']:.4f}", f"{s['srgb']['vs_input_db']:.4f}"])
    return buf.getvalue()


def write_outputs(result: dict, json_out: Path | None, csv_out: Path | None) -> dict:
    """Write the JSON and CSV (atomically); an unwritable place is an :class:`EvaluationError`."""
    from core.atomic import write_json, write_text

    written = {}
    try:
        if json_out:
            written["json"] = write_json(json_out, result, allow_nan=True, default=str)
        if csv_out:
            written["csv"] = write_text(csv_out, to_csv(result))
    except OSError as exc:
        raise EvaluationError(f"{exc.filename or json_out or csv_out}: cannot write the scores ({exc.strerror or exc})") from None
    return written
