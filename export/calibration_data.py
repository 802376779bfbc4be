"""Input sets for int8 calibration, parity checks and the int8 task metric.

Calibration and realistic parity use scenes from the synthetic engine (``synth.samples``), never
random noise; a folder of captures (``.npz`` files holding arrays named after the model inputs,
CHW or NCHW float32) can replace the synthetic calibration set. Seeds keep the three sets apart:
calibration uses ``seed``, parity ``seed + 1``, the task test split ``seed + 2``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .request import ExportError


def _fit(spec, variant: str, h: int, w: int, item: dict) -> dict[str, np.ndarray]:
    shapes = spec.input_shapes(variant, h, w)
    out = {}
    for name, shape in shapes.items():
        if name not in item:
            if name in spec.recurrent_inputs:  # recurrent state not stored in captures: zeros
                out[name] = np.zeros(shape, np.float32)
                continue
            raise ExportError(f"calibration sample lacks input {name!r} (has {', '.join(item) or 'nothing'})")
        a = np.asarray(item[name], np.float32)
        if a.ndim == 3:
            a = a[None]
        if tuple(a.shape) != tuple(shape):
            raise ExportError(f"calibration input {name!r} has shape {tuple(a.shape)}, the export needs {shape}")
        out[name] = np.ascontiguousarray(a)
    return out


def synthetic_inputs(spec, variant: str, h: int, w: int, count: int, seed: int) -> list[dict]:
    from synth.samples import realistic_inputs

    return [{k: np.ascontiguousarray(v, np.float32) for k, v in d.items()}
            for d in realistic_inputs(spec, h, w, count=count, seed=seed, variant=variant)]


def folder_inputs(spec, variant: str, h: int, w: int, folder: Path, count: int) -> list[dict]:
    files = sorted(Path(folder).glob("*.npz"))
    if not files:
        raise ExportError(f"calibration folder {folder} holds no .npz files (one per sample, arrays named "
                          f"{', '.join(spec.input_names)})")
    out = []
    for f in files[:count]:
        with np.load(f) as z:
            out.append(_fit(spec, variant, h, w, dict(z)))
    return out


def calibration_set(spec, variant: str, h: int, w: int, source: str, count: int, seed: int
                    ) -> tuple[list[dict], dict]:
    """(samples, record) where record says where the samples came from."""
    if count < 1:
        raise ExportError("calibration count must be >= 1")
    if source in (None, "", "synthetic"):
        samples = synthetic_inputs(spec, variant, h, w, count, seed)
        return samples, {"source": "synthetic", "generator": "synth.samples.realistic_inputs",
                         "count": len(samples), "seed": seed, "size": [h, w]}
    folder = Path(source)
    if not folder.is_dir():
        raise ExportError(f"--calibration must be 'synthetic' or a folder of .npz captures; {source!r} is neither")
    samples = folder_inputs(spec, variant, h, w, folder, count)
    return samples, {"source": str(folder), "generator": "folder of .npz captures", "count": len(samples),
                     "size": [h, w]}


def random_inputs(spec, variant: str, h: int, w: int, seed: int) -> dict[str, np.ndarray]:
    """Uniform in each input's value range (unbounded inputs: N(0, 1))."""
    rng = np.random.default_rng([seed, 104729])
    out = {}
    for t in spec.inputs:
        shape = t.shape(variant, h, w)
        lo, hi = t.value_range
        if np.isfinite(lo) and np.isfinite(hi):
            a = rng.uniform(lo, hi, size=shape)
        else:
            a = rng.standard_normal(shape)
        out[t.name] = a.astype(np.float32)
    return out


def task_split(spec, variant: str, h: int, w: int, count: int, seed: int) -> list[tuple[dict, np.ndarray]]:
    """(inputs, ground-truth main output) pairs from the synthetic test split (the int8 task
    metric); a sequence model's first frame with a zero state."""
    from synth.samples import first_frame, render_example

    rng = np.random.default_rng([seed, 15485863])
    pairs = []
    for _ in range(count):
        inputs, targets = first_frame(spec, render_example(spec, rng, (h, w)), variant)
        pairs.append((_fit(spec, variant, h, w, inputs), np.asarray(targets[spec.main_output], np.float32)))
    return pairs
