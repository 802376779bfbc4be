"""Evaluation on the fixed synthetic test split, baselines, and starter-checkpoint publishing."""
from __future__ import annotations

import json
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
from synth.samples import SAMPLERS, Example  # noqa: E402

TEST_SEED = 20261122  # the fixed synthetic test split: examples i = 0..count-1 use seed (TEST_SEED, 3, i)


def test_split(model: str, count: int = 16, size: int = 128, seed: int = TEST_SEED) -> list[Example]:
    """The fixed synthetic test split of ``model`` (deterministic: same arguments, same data)."""
    out = []
    for i in range(count):
        rng = np.random.default_rng([seed, 3, i])
        kwargs = {"frames": 4} if model == "rdpd" else {}
        if model == "dc2":
            kwargs["all_in_focus_prob"] = 1.0 if i % 2 == 0 else 0.0  # half deblurring, half refocusing
        out.append(SAMPLERS[model](rng, (size, size), **kwargs))
    return out


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
    """The model's outputs on one example, by registry output name, batch dimension dropped
    (RDPD: ``y`` of every frame, run as a sequence from a zero state)."""
    from models.registry import get

    t = {k: torch.from_numpy(v) for k, v in ex.inputs.items()}
    if model_name == "rdpd":
        return {"y": model.run_sequence(t["x"][None])[0].numpy()}
    spec = get(model_name)
    out = model(*[t[n][None] for n in spec.input_names])
    return {name: o[0].numpy() for name, o in zip(spec.output_names, out)}


def sheet_rows(model_name: str, model: torch.nn.Module, examples: list[Example], limit: int = 6) -> list[dict]:
    """Rows for :func:`train.plots.evaluation_sheet`: input, model output and target per example
    and task (RDPD: the clip's last frame; UiD: deblurring and refocusing; DC2: W as the input)."""
    rows = []
    for i, ex in enumerate(examples[:limit]):
        out = forward_example(model_name, model, ex)
        if model_name == "rdpd":
            rows.append({"label": f"#{i} last frame", "input": ex.targets["combined"][-1], "model": out["y"][-1],
                         "target": ex.targets["y"][-1]})
        elif model_name == "uid":
            rows.append({"label": f"#{i} deblur", "input": ex.targets["combined"], "model": out["all_in_focus"],
                         "target": ex.targets["all_in_focus"]})
            rows.append({"label": f"#{i} refocus", "input": ex.targets["combined"], "model": out["refocused"],
                         "target": ex.targets["refocused"]})
        else:
            task = "all-in-focus" if ex.meta.get("all_in_focus") else "refocus"
            rows.append({"label": f"#{i} {task}", "input": ex.inputs["wide"], "model": out["image"],
                         "target": ex.targets["image"]})
    return rows


@torch.no_grad()
def evaluate(model_name: str, model: torch.nn.Module | None, examples: list[Example],
             wiener: bool = True) -> dict[str, dict]:
    """Scores per task and method: {"deblur": {"input": {...}, "wiener (true PSF)": {...},
    "model": {...}}, ...}. ``model`` None scores only the baselines."""
    rows: dict[str, dict[str, list]] = {}
    add = lambda task, method, s: rows.setdefault(task, {}).setdefault(method, []).append(s)
    for ex in examples:
        out = forward_example(model_name, model, ex) if model is not None else None
        if model_name == "rdpd":
            frames, targets = ex.inputs["x"], ex.targets["y"]
            pred = out["y"] if out is not None else None
            for i in range(frames.shape[0]):
                add("deblur", "input (combined view)", _scores(ex.targets["combined"][i], targets[i]))
                if wiener and "coc" in ex.targets and "psf_params" in ex.meta:  # synthetic: the true PSF is known
                    w = wiener_deblur(ex.targets["combined"][i], ex.targets["coc"][i, 0], ex.meta["psf_params"])
                    add("deblur", "wiener (true PSF)", _scores(w, targets[i]))
                if pred is not None:
                    add("deblur", "model", _scores(pred[i], targets[i]))
        elif model_name == "uid":
            if wiener and "psf_params" in ex.meta:
                w = wiener_deblur(ex.targets["combined"], ex.targets["coc"][0], ex.meta["psf_params"])
                add("deblur", "wiener (true PSF)", _scores(w, ex.targets["all_in_focus"]))
            add("deblur", "input (combined view)", _scores(ex.targets["combined"], ex.targets["all_in_focus"]))
            add("refocus", "input (combined view)", _scores(ex.targets["combined"], ex.targets["refocused"]))
            if out is not None:
                add("deblur", "model", _scores(out["all_in_focus"], ex.targets["all_in_focus"]))
                add("refocus", "model", _scores(out["refocused"], ex.targets["refocused"]))
        else:  # dc2
            task = "all-in-focus" if ex.meta.get("all_in_focus") else "refocus"
            add(task, "input (W)", _scores(ex.inputs["wide"], ex.targets["image"]))
            if wiener:  # the classical-baseline slot: what picking inputs alone can reach
                add(task, "input (aligned UW)", _scores(ex.inputs["ultrawide"], ex.targets["image"]))
                add(task, "oracle per-pixel W/UW", _scores(oracle_pick(ex.inputs["wide"], ex.inputs["ultrawide"],
                                                                        ex.targets["image"]), ex.targets["image"]))
            if out is not None:
                add(task, "model", _scores(out["image"], ex.targets["image"]))
    return {task: {m: _mean(v) for m, v in methods.items()} for task, methods in rows.items()}
