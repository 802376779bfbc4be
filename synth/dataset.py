"""``cli.py synth``: generate a synthetic data set on disk, atomically, with a JSON record.

Everything is written into a hidden temporary folder beside ``out`` and renamed into place at
the end, so an interrupted or failed run leaves no half-written data set.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from calibration.cameras import CameraError, get_camera, get_pair, load_profiles
from calibration.psf_bank import PSFBank
from synth import writers
from synth.field_render import bank_provider
from synth.dp_sample import make_dp_sample
from synth.dual_camera import make_dual_camera_sample
from synth.scenes import load_texture_folder, random_scene
from core.atomic import atomic_dir
from core.errors import UserError

FORMATS = ("dpdd", "pixel", "npz", "pixel4_gt")  # pixel4_gt: synth.pixel4_set (public Pixel 4 layout + ground truth)
SCENE_KINDS = ("dead_leaves", "slanted_plane", "mixed")
RECORD_NAME = "synth_record.json"


class SynthError(UserError):
    """A synth request that cannot be carried out (bad option, unwritable folder...)."""


@dataclass
class SynthConfig:
    camera: str = "rdpd_set3"
    scenes: int = 8
    size: tuple[int, int] = (256, 256)
    out: Path = Path("data/synth")
    format: str = "dpdd"
    split: str = "train"
    seed: int = 0
    scene_kind: str = "mixed"
    textures: Path | None = None
    psf_bank: Path | None = None
    max_layers: int = 500
    noise_scale: float = 0.1
    distortion: bool = True
    refocus: bool = False
    shard_size: int = 16
    shard: tuple[int, int] = (1, 1)  # (K, N): write part K of N (1-based) of the data set
    device: str = "auto"
    force: bool = False
    extra: dict = field(default_factory=dict)


def parse_shard(text: str | None) -> tuple[int, int]:
    """``"K/N"`` -> (K, N) with 1 <= K <= N; ``None`` -> (1, 1) (the whole data set)."""
    if text is None:
        return (1, 1)
    try:
        k, n = (int(v) for v in str(text).split("/"))
    except ValueError:
        raise SynthError(f"--shard {text}: expected K/N, e.g. 1/4 for the first of 4 parts") from None
    if n < 1 or not 1 <= k <= n:
        raise SynthError(f"--shard {text}: need 1 <= K <= N (part K of N parts)")
    return (k, n)


def shard_range(cfg: SynthConfig) -> range:
    """Global sample indices of part K of N: consecutive blocks (npz: whole npz shards, so part
    files equal the single run's files), the blocks spread as evenly as possible."""
    k, n = cfg.shard
    block = cfg.shard_size if cfg.format == "npz" else 1
    blocks = -(-cfg.scenes // block)
    b0, b1 = (k - 1) * blocks // n, k * blocks // n
    part = range(b0 * block, min(b1 * block, cfg.scenes))
    if not part:
        unit = f"npz shards of {block}" if block > 1 else "samples"
        raise SynthError(f"--shard {k}/{n}: part {k} would be empty ({cfg.scenes} samples make {blocks} "
                         f"{unit}); use at most {blocks} parts")
    return part


def record_name(cfg: SynthConfig) -> str:
    """synth_record.json, or synth_record.shard-K-of-N.json for a part (parts merge without clashes)."""
    k, n = cfg.shard
    return RECORD_NAME if n == 1 else f"synth_record.shard-{k}-of-{n}.json"


def _is_pair(name: str) -> bool:
    return name in load_profiles()[1]


def _validate(cfg: SynthConfig) -> None:
    if cfg.format not in FORMATS:
        raise SynthError(f"unknown format {cfg.format!r}; choose one of {', '.join(FORMATS)}")
    if cfg.format == "pixel4_gt":
        if cfg.camera not in ("pixel4_dp", SynthConfig.camera):
            raise SynthError(f"the pixel4_gt format renders the Pixel 4 DP camera (--camera pixel4_dp), not {cfg.camera!r}")
        unused = [o for o, v in (("--psf-bank", cfg.psf_bank), ("--refocus", cfg.refocus), ("--textures", cfg.textures),
                                 ("--shard", cfg.shard != (1, 1))) if v]
        if unused:
            raise SynthError(f"the pixel4_gt format draws its scenes from the phone profile; it takes no {', '.join(unused)}")
    if cfg.scene_kind not in SCENE_KINDS:
        raise SynthError(f"unknown scene kind {cfg.scene_kind!r}; choose one of {', '.join(SCENE_KINDS)}")
    if cfg.scenes < 1:
        raise SynthError(f"--scenes must be >= 1, got {cfg.scenes}")
    if not (cfg.noise_scale >= 0) or cfg.noise_scale == float("inf"):
        raise SynthError(f"--noise-scale must be a finite number >= 0, got {cfg.noise_scale}")
    if cfg.max_layers < 1:
        raise SynthError(f"--max-layers must be >= 1, got {cfg.max_layers}")
    parse_shard(f"{cfg.shard[0]}/{cfg.shard[1]}")
    shard_range(cfg)
    if _is_pair(cfg.camera):
        if cfg.format != "npz":
            raise SynthError(f"camera pair {cfg.camera!r} makes W/UW samples, which only the npz format holds")
    else:
        try:
            cam = get_camera(cfg.camera)
        except CameraError as exc:
            pairs = ", ".join(sorted(load_profiles()[1]))
            raise SynthError(f"{exc}; camera pairs: {pairs}") from None
        if cfg.format == "pixel" and cam.channels != "green":
            raise SynthError(f"the pixel format holds green-only DP views; camera {cfg.camera!r} records "
                             f"{cam.channels} (use --camera pixel4_dp)")
    out = Path(cfg.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not cfg.force:
        raise SynthError(f"{out} exists and is not empty; choose another --out or pass --force to replace it")


def generate(cfg: SynthConfig, progress: Callable[[int, int], None] | None = None,
             keep: list | None = None, keep_n: int = 4) -> dict:
    """Generate ``cfg.scenes`` samples (or, with ``cfg.shard = (K, N)``, part K of them: see
    :func:`shard_range`); returns the JSON record (also written, see :func:`record_name`).
    Sample i depends only on (seed, i), so the parts of N processes or machines, put together,
    are the single run's data set. The first ``keep_n`` samples are appended to ``keep`` when a
    list is given (for previews)."""
    _validate(cfg)
    if cfg.format == "pixel4_gt":
        from synth.pixel4_set import write_pixel4_set

        return write_pixel4_set(cfg.out, cfg.scenes, cfg.size, cfg.seed, force=cfg.force, device=cfg.device,
                                progress=progress, keep=keep, keep_n=keep_n)
    out = Path(cfg.out)
    textures = load_texture_folder(cfg.textures) if cfg.textures else None
    bank = PSFBank.load(cfg.psf_bank) if cfg.psf_bank else None
    pair = get_pair(cfg.camera) if _is_pair(cfg.camera) else None
    camera = pair["wide"] if pair else get_camera(cfg.camera)
    h, w = cfg.size
    near, far = camera.depth_range_m
    record = {
        "tool": "defocus-toolchain synth", "created_unix": int(time.time()),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in cfg.__dict__.items()},
        "camera": camera.to_dict(), "pair": None, "samples": [],
    }
    part = shard_range(cfg)
    if cfg.shard != (1, 1):
        record["shard"] = {"index": cfg.shard[0], "count": cfg.shard[1], "first": part.start, "stop": part.stop}
    if pair:
        record["pair"] = {k: (v.to_dict() if hasattr(v, "to_dict") else v) for k, v in pair.items()}
    shard: list = []
    shard_index = part.start // cfg.shard_size
    t0 = time.perf_counter()
    with atomic_dir(out, replace=cfg.force, what="data set", error=SynthError) as tmp:
        for done, i in enumerate(part, 1):
            rng = np.random.default_rng([cfg.seed, i])
            scene_seed = int(rng.integers(2**31))
            name = f"{cfg.split}_{cfg.seed:04d}_{i:05d}"
            if pair:
                fov = 2.0
                scene = random_scene(cfg.scene_kind, int(h * fov), int(w * fov), seed=scene_seed,
                                     near_m=near, far_m=far, textures=textures)
                sample = make_dual_camera_sample(
                    scene, pair["wide"], pair["ultrawide"], rng=rng, baseline_mm=pair["baseline_mm"],
                    size=(h, w), fov_ratio=fov, uw_resolution_factor=pair["uw_resolution_factor"],
                    white_balance_gains=pair["white_balance_gains"], device=cfg.device)
                files = [f"{cfg.split}/shard_{shard_index:05d}.npz[{len(shard)}]"]
            else:
                # nearest depth from a random strongest front blur, so CoC spreads over the range
                front = -float(rng.uniform(0.25, 1.0)) * camera.max_coc_px
                near_i = min(max(near, camera.depth_for_coc(front)), 0.9 * camera.focus_distance)
                scene = random_scene(cfg.scene_kind, h, w, seed=scene_seed, near_m=near_i, far_m=far,
                                     textures=textures)
                sample = make_dp_sample(scene, camera, rng=rng, noise_scale=cfg.noise_scale,
                                        distortion=cfg.distortion, max_layers=cfg.max_layers,
                                        refocus=cfg.refocus, device=cfg.device,
                                        psf=bank_provider(bank, int(rng.integers(len(bank.params)))) if bank else None)
                if cfg.format == "dpdd":
                    files = [str(p.relative_to(tmp)) for p in writers.write_dpdd_sample(tmp, cfg.split, name, sample)]
                elif cfg.format == "pixel":
                    files = [str(p.relative_to(tmp)) for p in writers.write_pixel_sample(tmp, i, sample, camera)]
                else:
                    files = [f"{cfg.split}/shard_{shard_index:05d}.npz[{len(shard)}]"]
            if cfg.format == "npz":
                shard.append(sample)
                if len(shard) == cfg.shard_size or i == part.stop - 1:
                    fields = writers.DUAL_FIELDS if pair else writers.DP_FIELDS
                    writers.write_npz_shard(tmp / cfg.split / f"shard_{shard_index:05d}.npz", shard, fields)
                    shard, shard_index = [], shard_index + 1
            record["samples"].append({"index": i, "name": name, "files": files, **sample.meta})
            if keep is not None and len(keep) < keep_n:
                keep.append(sample)
            if progress:
                progress(done, len(part))
        record["seconds"] = round(time.perf_counter() - t0, 3)
        record["samples_per_second"] = round(len(part) / max(record["seconds"], 1e-9), 3)
        (tmp / record_name(cfg)).write_text(json.dumps(record, indent=1, default=_json_default))
    return record


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def write_preview(out: Path, samples: list, title: str = "", name: str = "contact_sheet.png") -> Path:
    """A contact sheet (``name``, in ``out``) of DP or W/UW samples."""
    from synth import preview
    from synth.dual_camera import DualCameraSample

    sheet = Path(out) / name
    if samples and isinstance(samples[0], DualCameraSample):
        return preview.dual_contact_sheet(samples, sheet, title)
    return preview.dp_contact_sheet(samples, sheet, title)
