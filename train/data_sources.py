"""Training pools from data on disk, next to the synthetic engine's on-the-fly pool.

A source is ``synthetic`` (``synth.samples`` samplers) or a path:
- a DPDD folder (``<split>_c/source``, ``_l/source``, ``_r/source``, ``<split>_c/target``, 16-bit
  PNG, read by ``runtime_py.captures.DPDDDataset``): dual-pixel models without refocusing only
  (DPDD has no focus masks, refocus targets or second camera). Each image gives ``crops_per_image`` textured crops (seed 004's rejection of
  low-texture patches) with the radial map cut from the full frame at the crop's position.
  Values are used as stored (sRGB-encoded), as the public DPDD-trained models do; the synthetic
  engine's samples are linear, so mixing both trains on both encodings.
- a folder of npz shards written by ``cli.py synth --format npz`` (``<split>/shard_*.npz``, or the
  shards directly): DP shards for dual-pixel models (one-frame clips for a sequence model;
  ``--refocus`` shards for a model that refocuses), W/UW shards (``--camera phone_w_uw``) for
  dual-camera models.

``train.loop`` alternates sources by step (step ``s`` draws from source ``s mod n``), as seed 004
alternates mini-batches of real single images and synthetic clips.
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np

from models.radial import radial_map
from models.registry import get, names
from synth.samples import Example, dp_fields, dual_camera_fields, example_from_frames, pick_textured_crop
from synth.writers import DP_FIELDS, DUAL_FIELDS
from core.errors import UserError

SYNTHETIC = "synthetic"


class DataSourceError(UserError):
    """A training data source that cannot be used (missing, wrong layout, wrong model)."""


def source_kind(source: str) -> str:
    """``synthetic``, ``dpdd`` or ``npz`` (by layout), else a :class:`DataSourceError`."""
    if source == SYNTHETIC:
        return SYNTHETIC
    root = Path(source)
    if not root.exists():
        raise DataSourceError(f"{root}: training data not found (a DPDD folder, npz shards or 'synthetic')")
    if root.is_dir() and any(p.name.endswith("_c") and (p / "source").is_dir() for p in root.iterdir()):
        return "dpdd"
    if _shards(root):
        return "npz"
    raise DataSourceError(f"{root}: neither a DPDD folder (<split>_c/source ...) nor npz shards (shard_*.npz)")


def _shards(root: Path) -> list[Path]:
    if root.is_file() and root.suffix == ".npz":
        return [root]
    if not root.is_dir():
        return []
    return sorted(root.glob("shard_*.npz")) or sorted(root.glob("*/shard_*.npz"))


def load_source(source: str, model: str, size: int, *, limit: int, seed: int = 0,
                crops_per_image: int = 4, split: str = "train") -> list[Example]:
    """Up to ``limit`` examples of ``size`` x ``size`` for ``model`` from a DPDD folder or npz shards
    (``split``: the DPDD split, or the shards' sub-folder, when the source has several)."""
    kind = source_kind(source)
    rng = np.random.default_rng([seed, 11])
    if kind == "dpdd":
        return _from_dpdd(Path(source), model, size, limit, rng, crops_per_image, split)
    if kind == "npz":
        root = Path(source)
        return _from_npz(root / split if (root / split).is_dir() else root, model, size, limit, rng)
    raise DataSourceError(f"{source}: the synthetic source is built by train.loop.build_pool")


def _crop_window(target: np.ndarray, size: int, rng: np.random.Generator, where: str) -> tuple[int, int]:
    h, w = target.shape[:2]
    if h < size or w < size:
        raise DataSourceError(f"{where}: image {w}x{h} is smaller than the training pool size {size}x{size}")
    return pick_textured_crop(target, (size, size), rng)


DPDD_FIELDS = frozenset({"left", "right", "combined", "sharp", "radial"})  # what a DPDD crop provides


def _dpdd_ok(spec) -> bool:
    return spec.data.capture == "dual_pixel" and not spec.data.refocus and set(spec.data.fields) <= DPDD_FIELDS


def _shard_hint(spec) -> str:
    return " --refocus" if spec.data.refocus else (" --camera phone_w_uw" if spec.data.capture == "dual_camera" else "")


def _from_dpdd(root: Path, model: str, size: int, limit: int, rng, crops_per_image: int,
               split: str) -> list[Example]:
    from runtime_py.captures import CaptureError, DPDDDataset
    from runtime_py.captures.dpdd import find_splits

    spec = get(model)
    if not _dpdd_ok(spec):
        able = ", ".join(n.upper() for n in names() if _dpdd_ok(get(n)))
        raise DataSourceError(f"{root}: DPDD folders train {able} only ({model} needs npz shards from "
                              f"`cli.py synth --format npz`{_shard_hint(spec)})")
    try:
        ds = DPDDDataset(root, split) if split in find_splits(root) else DPDDDataset(root)
    except CaptureError as exc:
        raise DataSourceError(str(exc)) from None
    out: list[Example] = []
    for i in range(len(ds)):
        left, right, combined, target = ds[i]
        if target is None:
            raise DataSourceError(f"{root}: split {ds.split!r} has no <split>_c/target images to train on")
        h, w = target.shape[:2]
        for _ in range(crops_per_image):
            y, x = _crop_window(target, size, rng, f"{root}/{ds.names(i)['target']}")
            sl = (slice(y, y + size), slice(x, x + size))
            fields = {"left": left[sl], "right": right[sl], "sharp": target[sl], "combined": combined[sl],
                      "radial": radial_map(size, size, h, w, y, x)}
            out.append(example_from_frames(spec, [fields]))
            if len(out) >= limit:
                return out
    return out


def _from_npz(root: Path, model: str, size: int, limit: int, rng) -> list[Example]:
    spec = get(model)
    wants_dual = spec.data.capture == "dual_camera"
    out: list[Example] = []
    for shard in _shards(root):
        try:
            with np.load(shard, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError) as exc:
            raise DataSourceError(f"{shard}: cannot read npz shard ({exc})") from None
        dual = "wide" in arrays
        needed = DUAL_FIELDS if dual else DP_FIELDS + (("focus_mask", "refocused") if spec.data.refocus else ())
        missing = [f for f in needed if f not in arrays]
        if wants_dual != dual:
            raise DataSourceError(f"{shard}: {'W/UW' if dual else 'dual-pixel'} shard; {model} trains on "
                                  f"{'W/UW shards (--camera phone_w_uw)' if wants_dual else 'dual-pixel shards'}")
        if missing:
            hint = " (write them with `cli.py synth --refocus --format npz`)" if spec.data.refocus else ""
            raise DataSourceError(f"{shard}: missing fields {missing}{hint}")
        n = len(next(iter(arrays.values())))
        for i in range(n):
            s = SimpleNamespace(**{k: np.asarray(v[i], np.float32) if v.dtype != bool else v[i] for k, v in arrays.items()})
            out.append(_npz_example(s, spec, size, rng, f"{shard}[{i}]"))
            if len(out) >= limit:
                return out
    return out


def _npz_example(s, spec, size: int, rng, where: str) -> Example:
    """Crop one shard sample to ``size`` (textured crop) and build the model's example."""
    h, w = s.sharp.shape[:2]
    y, x = _crop_window(s.sharp, size, rng, where)
    radial = radial_map(size, size, h, w, y, x)
    if spec.data.capture == "dual_camera":  # warp UW on the full frame, then crop
        frames, meta = dual_camera_fields(s, rng, radial=np.zeros((h, w), np.float32))
        ex = example_from_frames(spec, frames, meta)
        return _crop_example(ex, y, x, size, radial, spec.radial_input)
    sl = (slice(y, y + size), slice(x, x + size))
    cut = SimpleNamespace(**{k: (v[sl] if getattr(v, "ndim", 0) >= 2 and v.shape[:2] == (h, w) else v)
                             for k, v in vars(s).items()})
    return example_from_frames(spec, [{**dp_fields(cut), "radial": radial}])


def _crop_example(ex: Example, y: int, x: int, size: int, radial: np.ndarray, radial_input) -> Example:
    """Crop an example to ``size``; its radial map is cut from the full frame at the crop."""
    cut = lambda d: {k: np.ascontiguousarray(v[..., y:y + size, x:x + size]) for k, v in d.items()}  # noqa: E731
    inputs = cut(ex.inputs)
    if radial_input is not None:
        name, channel = radial_input
        inputs[name][..., channel, :, :] = radial.astype(np.float32)
    return Example(inputs, cut(ex.targets), ex.meta)
