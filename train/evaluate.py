"""Evaluation on the fixed synthetic test split, baselines, and starter-checkpoint publishing."""
from __future__ import annotations

from pathlib import Path

import torch

from models.checkpoint import read_checkpoint, save_checkpoint


def publish_checkpoint(run_dir: Path, dest: Path, dtype=torch.float16, metrics: dict | None = None) -> Path:
    """Copy a run's last weights as a compact fp16 starter checkpoint ``dest/<model>-<variant>``."""
    state, meta = read_checkpoint(Path(run_dir) / "last.safetensors")
    name = f"{meta['model']}-{meta['variant']}"
    return save_checkpoint(Path(dest) / f"{name}.safetensors", state, name=meta["model"], variant=meta["variant"],
                           dtype=dtype, config=meta.get("config"), training_data=meta.get("training_data"),
                           steps=meta.get("steps", 0), metrics={**meta.get("metrics", {}), **(metrics or {})})


# ------------------------------------------------------------------------------- test split

import numpy as np  # noqa: E402

from calibration.dp_psf import PSFParams, combined_psf  # noqa: E402
from core import metrics  # noqa: E402
from models.registry import get  # noqa: E402
from synth.profiles import DEFAULT_PROFILE, get_profile  # noqa: E402
from synth.samples import Example, render_example  # noqa: E402

TEST_SEED = 20261122  # the fixed synthetic test split: examples i = 0..count-1 use seed (TEST_SEED, 3, i)


def test_split(model: str, count: int = 16, size: int = 128, seed: int = TEST_SEED,
               profile: str | None = None) -> list[Example]:
    """The fixed synthetic test split of ``model`` drawn from a data profile (``synth.profiles``;
    deterministic: same arguments, same data). Example i takes the spec's test option i mod n
    (e.g. DC2: half all-in-focus, half refocus). The default profile's split is the original one;
    other profiles draw from their own seed stream."""
    spec = get(model)
    options = spec.data.test_options or ({},)
    key = [seed, 3] if profile in (None, DEFAULT_PROFILE) else [seed, 3, sum(profile.encode())]
    extra = {} if profile in (None, DEFAULT_PROFILE) else {"profile": profile}
    return [render_example(spec, np.random.default_rng([*key, i]), (size, size), **options[i % len(options)], **extra)
            for i in range(count)]


def synthetic_profile(data: str) -> str:
    """``synthetic:test`` -> the default profile's split; ``synthetic:<profile>`` -> that profile's."""
    name = data.split(":", 1)[1]
    if name == "test":
        return DEFAULT_PROFILE
    get_profile(name)  # a clear error for an unknown profile
    return name


def wiener_deblur(blurred: np.ndarray, coc: np.ndarray, params: dict, nsr: float = 0.03) -> np.ndarray:
    """Classical baseline with the true PSF: per depth layer (CoC rounded to 0.25 px) Wiener-
    deconvolve the whole image with that layer's combined PSF, keep that layer's pixels.
    ``blurred`` C x H x W, ``coc`` H x W."""
    prm = PSFParams(**params)
    c, h, w = blurred.shape
    pad = 48
    padded = np.pad(blurred, ((0, 0), (pad, pad), (pad, pad)), mode="reflect")
    spec = np.fft.rfft2(padded)
    out = np.empty_like(blurred)
    q = np.round(coc / 0.25) * 0.25
    for r in np.unique(q):
        k = combined_psf(float(r), prm)
        ks = k.shape[0]
        kp = np.zeros(padded.shape[1:])
        kp[:ks, :ks] = k
        kp = np.roll(kp, (-(ks // 2), -(ks // 2)), axis=(0, 1))
        kf = np.fft.rfft2(kp)
        est = np.fft.irfft2(spec * np.conj(kf) / (np.abs(kf) ** 2 + nsr), s=padded.shape[1:])
        mask = q == r
        out[:, mask] = est[:, pad:pad + h, pad:pad + w][:, mask]
    return np.clip(out, 0, 1)


def oracle_pick(a: np.ndarray, b: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per pixel, whichever of ``a`` and ``b`` (C x H x W) is closer to ``target``: the ceiling of
    any fusion that only selects between its inputs (DC2's mask blend without refinement)."""
    closer_a = ((a - target) ** 2).sum(0) <= ((b - target) ** 2).sum(0)
    return np.where(closer_a[None], a, b)


def _scores(pred, target) -> dict:
    return {"psnr": metrics.psnr(pred, target), "ssim": metrics.ssim(pred, target), "mae": metrics.mae(pred, target)}


def _mean(rows: list[dict]) -> dict:
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


@torch.no_grad()
def forward_example(model_name: str, model: torch.nn.Module, ex: Example) -> dict[str, np.ndarray]:
    """The model's outputs on one example, by output name, batch dimension dropped (a sequence
    model: every frame of the clip, run from a zero state)."""
    spec = get(model_name)
    out = spec.forward(model, {k: torch.from_numpy(v)[None] for k, v in ex.inputs.items()})
    return {name: o[0].numpy() for name, o in out.items()}


def _frames(spec, ex: Example, out: dict | None):
    """(index, inputs, targets, outputs) per frame: a clip's frames, or the example itself."""
    if not spec.is_sequence:
        yield 0, ex.inputs, ex.targets, out
        return
    for i in range(next(iter(ex.inputs.values())).shape[0]):
        pick = lambda d: {k: v[i] for k, v in d.items()}  # noqa: E731
        yield i, pick(ex.inputs), pick(ex.targets), (pick(out) if out is not None else None)


def _before(task, inputs: dict, targets: dict) -> np.ndarray:
    return targets[task.before] if task.before in targets else inputs[task.before]


def sheet_rows(model_name: str, model: torch.nn.Module, examples: list[Example], limit: int = 6) -> list[dict]:
    """Rows for :func:`train.plots.evaluation_sheet`: the do-nothing input, model output and
    target per example and task (a clip: its last frame)."""
    spec = get(model_name)
    rows = []
    for i, ex in enumerate(examples[:limit]):
        out = forward_example(model_name, model, ex)
        *_, (f, inputs, targets, outs) = _frames(spec, ex, out)
        for task in spec.eval_tasks:
            if task.applies(ex.meta):
                label = f"#{i} last frame" if spec.is_sequence else f"#{i} {task.name}"
                rows.append({"label": label, "input": _before(task, inputs, targets), "model": outs[task.output],
                             "target": targets[task.target]})
    return rows


@torch.no_grad()
def evaluate(model_name: str, model: torch.nn.Module | None, examples: list[Example],
             wiener: bool = True) -> dict[str, dict]:
    """Scores per task and method, e.g. {"deblur": {"input (combined view)": {...},
    "wiener (true PSF)": {...}, "model": {...}}, ...}, from the spec's ``eval_tasks``.
    ``model`` None scores only the baselines."""
    spec = get(model_name)
    rows: dict[str, dict[str, list]] = {}
    add = lambda task, method, s: rows.setdefault(task, {}).setdefault(method, []).append(s)  # noqa: E731
    for ex in examples:
        out = forward_example(model_name, model, ex) if model is not None else None
        for _, inputs, targets, outs in _frames(spec, ex, out):
            for task in spec.eval_tasks:
                if not task.applies(ex.meta):
                    continue
                target, before = targets[task.target], _before(task, inputs, targets)
                add(task.name, task.before_label, _scores(before, target))
                if wiener and task.wiener and "coc" in targets and "psf_params" in ex.meta:  # synthetic: true PSF known
                    add(task.name, "wiener (true PSF)",
                        _scores(wiener_deblur(before, targets["coc"][0], ex.meta["psf_params"]), target))
                if wiener and task.alternative:  # the classical-baseline slot: what picking inputs alone reaches
                    alt = inputs[task.alternative]
                    add(task.name, task.alternative_label, _scores(alt, target))
                    add(task.name, task.oracle_label, _scores(oracle_pick(before, alt, target), target))
                if outs is not None:
                    add(task.name, "model", _scores(outs[task.output], target))
    return {task: {m: _mean(v) for m, v in methods.items()} for task, methods in rows.items()}


def vs_input(scores: dict[str, dict]) -> list[dict]:
    """Table rows of :func:`evaluate`'s scores: task, method, PSNR/SSIM/MAE and the PSNR gain
    over the task's do-nothing input (its first ``input ...`` method)."""
    rows = []
    for task, methods in scores.items():
        base = next(v["psnr"] for k, v in methods.items() if k.startswith("input"))
        rows += [{"task": task, "method": m, **v, "vs_input_db": v["psnr"] - base} for m, v in methods.items()]
    return rows


def evaluate_command(model: str, checkpoint: Path | None, data: str = "synthetic:test", count: int = 16,
                     size: int = 128, wiener: bool = True, json_out: Path | None = None,
                     save_images: Path | None = None) -> dict:
    """What ``cli.py evaluate`` does: score a checkpoint (or only the baselines) on the fixed
    synthetic test split or on DATA's test crops; optionally write the scores as JSON and an
    input / model / target / error sheet. Returns {"title", "rows", "json", "sheet"}."""
    from core.atomic import write_json
    from core.errors import UserError
    from models.checkpoint import load_model
    from train.data_sources import load_source, source_kind
    from train.plots import evaluation_sheet

    if save_images and checkpoint is None:
        raise UserError("--save-images needs --checkpoint: there is no model output to draw")
    net = load_model(checkpoint, expected_model=model)[0] if checkpoint else None
    examples = (test_split(model, count, size, profile=synthetic_profile(data)) if data.startswith("synthetic:") else
                load_source(data, model, size, limit=count, split="test", crops_per_image=1))
    scores = evaluate(model, net, examples, wiener=wiener)
    result = {"title": f"{model} on {data} ({len(examples)} x {size}x{size})", "rows": vs_input(scores),
              "json": None, "sheet": None}
    if json_out:
        result["json"] = write_json(json_out, {"model": model, "checkpoint": str(checkpoint) if checkpoint else None,
                                               "count": count, "size": size, "scores": scores}, allow_nan=True)
    if save_images:
        srgb = not data.startswith("synthetic:") and source_kind(data) == "dpdd"  # DPDD is used as stored (sRGB)
        try:
            result["sheet"] = evaluation_sheet(sheet_rows(model, net, examples), save_images / f"{model}-evaluation.png",
                                               f"{model}: {checkpoint.name} on {data}", linear=not srgb)
        except (ValueError, OSError) as exc:
            raise UserError(f"{save_images}: cannot write the evaluation images ({exc})") from None
    return result


@torch.no_grad()
def artefacts(model_name: str, model: torch.nn.Module, examples: list[Example]) -> dict:
    """What PSNR does not show (issue 13): per task, the worst over the examples (a clip: its
    last frame) of
    - ``colour_dev``: max over channels of |mean(output_c) / mean(input_c) - 1| (brightness and
      colour kept: a deblurring or refocusing output has the input's channel means);
    - ``grey_cast``: on green-only (grey) inputs, max_c / min_c - 1 of the output's channel means;
    - ``grid_out`` / ``grid_in``: :func:`core.metrics.grid_peak_ratio` of output and input (a
      2/4/8-px periodic grid)."""
    spec = get(model_name)
    worst: dict[str, dict] = {}
    for ex in examples:
        out = forward_example(model_name, model, ex)
        *_, (_, inputs, targets, outs) = _frames(spec, ex, out)
        for task in spec.eval_tasks:
            if not task.applies(ex.meta):
                continue
            o, before = np.asarray(outs[task.output], np.float64), np.asarray(_before(task, inputs, targets), np.float64)
            om, bm = o.mean(axis=(1, 2)), before.mean(axis=(1, 2))
            w = worst.setdefault(task.name, {"colour_dev": 0.0, "grey_cast": 0.0, "grid_out": 0.0, "grid_in": 0.0})
            w["colour_dev"] = max(w["colour_dev"], float(np.max(np.abs(om / np.maximum(bm, 1e-6) - 1))))
            if ex.meta.get("channels") == "green":
                w["grey_cast"] = max(w["grey_cast"], float(om.max() / max(om.min(), 1e-6) - 1))
            w["grid_out"] = max(w["grid_out"], metrics.grid_peak_ratio(o))
            w["grid_in"] = max(w["grid_in"], metrics.grid_peak_ratio(before))
    return worst
