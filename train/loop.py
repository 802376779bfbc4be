"""The training loop: one code path for CPU, one GPU and several GPUs (torchrun + DDP).

- Data: a pool of synthetic examples generated from fixed seeds (``synth.samples``), from
  which each step draws a batch, a random patch and a vertical flip. With ``refresh_every`` N,
  every N steps one pool slot (round robin) is replaced by a freshly rendered example, so long
  runs keep seeing new scenes. Slot contents and the draw are pure functions of (seed, step,
  rank), so ``--resume`` continues with exactly the same data. On CUDA the pool renders on the GPU.
  (Horizontal flips are not used: mirroring swaps the roles of the DP views.)
- Optimiser Adam, learning rate halved every ``lr_halving_steps`` (seed 004: every 40 epochs).
- AMP (bfloat16 autocast) on CUDA; float32 on CPU.
- Checkpoints (``models.checkpoint``: safetensors + JSON) and the resumable training state
  (optimiser, scheduler, RNG, step; also safetensors + JSON, never pickle), written atomically.
- Logs: ``metrics.csv`` in the run folder, drawn as ``metrics.png`` when the run ends; a progress
  bar with loss and samples/s.
"""
from __future__ import annotations

import csv
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import yaml
from safetensors.torch import load_file, save_file

from core.atomic import atomic_file, write_json, write_text
from core.errors import UserError
from models.checkpoint import CheckpointError, load_into, load_matching, read_checkpoint, save_checkpoint
from models.registry import get
from synth.profiles import DEFAULT_PROFILE, get_profile
from synth.samples import Example, render_example
from train.data_sources import SYNTHETIC

CONFIG_DIR = Path(__file__).with_name("configs")


class TrainError(UserError):
    """A training request that cannot run (bad config, no data, a run already there, a loss gone non-finite)."""


@dataclass
class TrainConfig:
    model: str = "rdpd"
    variant: str = "mobile"
    steps: int = 1000
    batch_size: int = 4
    patch: int = 96  # square training patch, multiple of 16
    pool_size: int = 64  # synthetic examples generated once at the start
    pool_image: int = 128  # size of each pool example
    frames: int = 4  # RDPD clip length
    lr: float = 5e-4
    lr_halving_steps: int = 2000
    seed: int = 0
    device: str = "auto"
    amp: bool = True  # only used on CUDA
    log_every: int = 10
    checkpoint_every: int = 250
    threads: int = 1
    out: str = "runs"
    checkpoint_dtype: str = "float32"
    data: list = field(default_factory=lambda: ["synthetic"])  # sources, alternated by step (train.data_sources)
    crops_per_image: int = 4  # crops per DPDD image
    init: str | None = None  # warm start: weights of this checkpoint (same model and variant), fresh optimiser
    refresh_every: int = 0  # replace one synthetic pool slot every N steps (0: the pool stays fixed)
    profile: str = "default"  # data profile of the synthetic pool (synth.profiles: default, phone)
    photos: str | None = None  # folder of photos added to the profile's bundled ones (photo scenes)
    init_partial: bool = False  # warm start: load the tensors that fit, start the others fresh
    psf_bank: str | None = None  # render the synthetic pool with this PSF bank (e.g. calibrated on a device)

    @property
    def run_dir(self) -> Path:
        return Path(self.out) / f"{self.model}-{self.variant}"


def read_config_file(path: str | Path) -> dict:
    """A YAML file of config keys (``train --config``: a recipe over the model's defaults)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise TrainError(f"{path}: cannot read the config ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        raise TrainError(f"{path}: not a readable YAML config ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise TrainError(f"{path}: a config is a mapping of keys to values")
    return data


def load_config(model: str, variant: str, overrides: dict | None = None, resume: bool = False) -> TrainConfig:
    """``train/configs/<model>-<variant>.yaml`` (if present) + overrides (a ``--config`` recipe,
    then CLI options).

    With ``resume`` the base is the config stored with the run's last checkpoint
    (``<out>/<model>-<variant>/last.json``), so a resumed run keeps the data and schedule its
    saved state was trained with; overrides given (more ``steps``, say) still win."""
    cfg = {"model": model, "variant": variant}
    path = CONFIG_DIR / f"{model}-{variant}.yaml"
    saved = Path((overrides or {}).get("out") or TrainConfig.out) / f"{model}-{variant}" / "last.json"
    if resume and saved.is_file():  # the config its last checkpoint was trained with
        path = saved
        try:
            cfg.update(json.loads(saved.read_text()).get("config") or {})
        except (ValueError, AttributeError) as exc:
            raise TrainError(f"{saved}: checkpoint sidecar unreadable ({exc})") from None
    elif path.is_file():
        try:
            cfg.update(yaml.safe_load(path.read_text()) or {})
        except yaml.YAMLError as exc:
            raise TrainError(f"{path}: not a readable YAML config ({str(exc).splitlines()[0]})") from None
    cfg.update(model=model, variant=variant)  # a file never redirects the run to another model's folder
    known = {f.name for f in fields(TrainConfig)}
    for k, v in (overrides or {}).items():
        if v is not None:
            cfg[k] = v
    unknown = set(cfg) - known
    if unknown:
        raise TrainError(f"{path}: unknown config keys {sorted(unknown)}")
    out = TrainConfig(**cfg)
    if out.patch % 16 or out.patch > out.pool_image:
        raise TrainError(f"patch {out.patch} must be a multiple of 16 and at most pool_image {out.pool_image}")
    for key in ("steps", "batch_size", "pool_size", "lr", "lr_halving_steps", "pool_image", "frames", "threads"):
        value, least = getattr(out, key), (0 if key == "lr" else 1)  # lr 0: weights stay (checks, freezing)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= least:
            raise TrainError(f"{key} must be a number >= {least}, got {value!r}")
    get_profile(out.profile)  # a clear error for an unknown profile
    if out.refresh_every < 0:
        raise TrainError(f"refresh_every must be 0 (fixed pool) or a number of steps, got {out.refresh_every}")
    if out.psf_bank:
        from synth.samples import accepts_psf_bank, load_bank

        if not accepts_psf_bank(get(model).data.renderer):
            raise TrainError(f"--psf-bank {out.psf_bank}: {model}'s data renderer "
                             f"({get(model).data.renderer}) does not render dual-pixel PSFs")
        load_bank(out.psf_bank)  # a bad file fails now, not after the pool started
    return out


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


# ---------------------------------------------------------------------------------------- data


def render_device(cfg: TrainConfig) -> str:
    """Where the synthetic engine renders the pool: the training GPU when training on CUDA
    (``cuda`` is the current device, which DDP sets per rank), else the CPU."""
    device = resolve_device(cfg.device)
    return str(device) if device.type == "cuda" else "cpu"


def synthetic_example(cfg: TrainConfig, index: int, generation: int = 0) -> Example:
    """Pool slot ``index`` after ``generation`` refreshes (0: the initial pool, seed (seed, 1, index)).
    A sequence model's examples are clips of ``cfg.frames`` frames."""
    spec = get(cfg.model)
    key = [cfg.seed, 1, index] + ([generation] if generation else [])
    kwargs = {"frames": cfg.frames} if spec.is_sequence else {}
    if cfg.profile != DEFAULT_PROFILE or cfg.photos:
        kwargs.update(profile=cfg.profile, photos=cfg.photos)
    if cfg.psf_bank:
        kwargs["psf_bank"] = cfg.psf_bank
    return render_example(spec, np.random.default_rng(key), (cfg.pool_image, cfg.pool_image),
                          device=render_device(cfg), **kwargs)


def refreshes_before(step: int, cfg: TrainConfig) -> int:
    """Slot refreshes done before drawing ``step``'s batch (one at the start of every
    ``refresh_every``-th step, the step itself included)."""
    return step // cfg.refresh_every if cfg.refresh_every > 0 else 0


def slot_generation(index: int, refreshes: int, pool_size: int) -> int:
    """How often slot ``index`` was replaced after ``refreshes`` round-robin refreshes
    (refresh j = 1, 2, ... replaces slot (j - 1) mod pool_size)."""
    return 0 if refreshes <= index else (refreshes - 1 - index) // pool_size + 1


def build_pool(cfg: TrainConfig, progress: Callable[[int, int], None] | None = None,
               start_step: int = 0) -> list[Example]:
    """The synthetic pool as it stands when ``start_step`` is drawn (the same config and step
    give the same pool: this is what makes ``--resume`` exact with refreshes)."""
    refreshes = refreshes_before(start_step, cfg)
    pool = []
    for i in range(cfg.pool_size):
        pool.append(synthetic_example(cfg, i, slot_generation(i, refreshes, cfg.pool_size)))
        if progress:
            progress(i + 1, cfg.pool_size)
    return pool


def refresh_slot(pool: list[Example], cfg: TrainConfig, step: int) -> None:
    """At a refresh step, replace the round robin's next slot by its next generation."""
    if cfg.refresh_every <= 0 or step <= 0 or step % cfg.refresh_every:
        return
    j = step // cfg.refresh_every
    index = (j - 1) % len(pool)
    pool[index] = synthetic_example(cfg, index, (j - 1) // len(pool) + 1)


def build_pools(cfg: TrainConfig, log: Callable[[str], None] = print, start_step: int = 0,
                progress: Callable[[int, int], None] | None = None) -> list[list[Example]]:
    """One pool per entry of ``cfg.data``: the synthetic engine's, or a DPDD folder's / npz shards'
    (at most ``pool_size`` examples each)."""
    from train.data_sources import load_source

    pools = []
    for source in cfg.data:
        if source == SYNTHETIC:
            pools.append(build_pool(cfg, progress, start_step=start_step))
        else:
            pools.append(load_source(source, cfg.model, cfg.pool_image, limit=cfg.pool_size, seed=cfg.seed,
                                     crops_per_image=cfg.crops_per_image))
            if not pools[-1]:
                raise TrainError(f"{source}: no training examples found")
        fresh = f", one replaced every {cfg.refresh_every} steps" if source == SYNTHETIC and cfg.refresh_every > 0 else ""
        log(f"data: {source}: {len(pools[-1])} examples of {cfg.pool_image}x{cfg.pool_image}{fresh}")
    return pools


def draw_batch(pool: list[Example], cfg: TrainConfig, step: int, rank: int = 0) -> tuple[dict, dict]:
    """Batch for ``step``: a pure function of (seed, step, rank) and the pool."""
    rng = np.random.default_rng([cfg.seed, 2, step, rank])
    idx = rng.integers(0, len(pool), cfg.batch_size)
    p = cfg.patch
    ins: dict[str, list] = {}
    tgs: dict[str, list] = {}
    for i in idx:
        ex = pool[int(i)]
        any_arr = next(iter(ex.inputs.values()))
        H, W = any_arr.shape[-2:]
        y, x = int(rng.integers(0, H - p + 1)), int(rng.integers(0, W - p + 1))
        flip = bool(rng.random() < 0.5)
        for src, dst in ((ex.inputs, ins), (ex.targets, tgs)):
            for k, v in src.items():  # tensors of a fixed size (a text query) are not cut
                crop = v[..., y:y + p, x:x + p] if v.shape[-2:] == (H, W) else v
                dst.setdefault(k, []).append(crop[..., ::-1, :] if flip else crop)
    as_t = lambda d: {k: torch.from_numpy(np.ascontiguousarray(np.stack(v))) for k, v in d.items()}
    return as_t(ins), as_t(tgs)


# ---------------------------------------------------------------------------------------- forward


def compute_loss(model_name: str, model: torch.nn.Module, ins: dict, tgs: dict) -> dict:
    """The spec's loss on the spec's forward (a sequence model runs its clip frame by frame)."""
    spec = get(model_name)
    return spec.loss(spec.forward(model, ins), tgs)


# ---------------------------------------------------------------------------------------- state


def save_training_state(run_dir: Path, model, optimizer, scheduler, step: int, cfg: TrainConfig,
                        metrics: dict | None = None) -> Path:
    """Weights (checkpoint format) + optimiser/scheduler/RNG state, all safetensors + JSON."""
    core = model.module if hasattr(model, "module") else model
    ckpt = save_checkpoint(run_dir / "last.safetensors", core, name=cfg.model, variant=cfg.variant,
                           config=asdict(cfg), steps=step, metrics=metrics or {},
                           training_data={"source": "synthetic engine" if cfg.data == ["synthetic"] else
                                          ", ".join("synthetic engine" if d == "synthetic" else d for d in cfg.data),
                                          "pool_size": cfg.pool_size,
                                          "pool_image": cfg.pool_image, "seed": cfg.seed})
    tensors, structure = {}, {}
    for pid, st in optimizer.state_dict()["state"].items():
        for k, v in st.items():
            tensors[f"opt.{pid}.{k}"] = v.detach().cpu().contiguous() if torch.is_tensor(v) else torch.tensor(v)
    structure["param_groups"] = optimizer.state_dict()["param_groups"]
    structure["scheduler"] = scheduler.state_dict()
    structure["step"] = step
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    with atomic_file(run_dir / "state.safetensors") as tmp:
        save_file(tensors, str(tmp))
    write_json(run_dir / "state.json", structure, allow_nan=True)
    return ckpt


def load_training_state(run_dir: Path, model, optimizer, scheduler, cfg: TrainConfig) -> int:
    """Restore everything :func:`save_training_state` wrote; returns the step to continue from."""
    state, meta = read_checkpoint(run_dir / "last.safetensors", expected_model=cfg.model)
    if meta.get("variant") != cfg.variant:
        raise CheckpointError(f"{run_dir}: run is of variant {meta.get('variant')!r}, not {cfg.variant!r}")
    core = model.module if hasattr(model, "module") else model
    load_into(core, state, run_dir / "last.safetensors")
    try:
        tensors = load_file(str(run_dir / "state.safetensors"))
        structure = json.loads((run_dir / "state.json").read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{run_dir}: training state unreadable ({exc})") from None
    opt_state: dict = {}
    for key, v in tensors.items():
        if key.startswith("opt."):
            _, pid, name = key.split(".", 2)
            opt_state.setdefault(int(pid), {})[name] = v
    optimizer.load_state_dict({"state": opt_state, "param_groups": structure["param_groups"]})
    scheduler.load_state_dict(structure["scheduler"])
    torch.set_rng_state(tensors["rng.torch"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    return int(structure["step"])


# ---------------------------------------------------------------------------------------- loop


def warm_start(model: torch.nn.Module, cfg: TrainConfig, log: Callable[[str], None] = print) -> None:
    """Load ``cfg.init``'s weights into a fresh run (fine-tuning a starter checkpoint): the model
    and variant must match; optimiser, schedule and step start from zero."""
    if not cfg.init:
        return
    state, meta = read_checkpoint(cfg.init, expected_model=cfg.model)
    if meta.get("variant") != cfg.variant:
        raise CheckpointError(f"{cfg.init}: checkpoint is {cfg.model}-{meta.get('variant')}, "
                              f"the run trains {cfg.model}-{cfg.variant}")
    if cfg.init_partial:
        skipped = load_matching(model, state)
        log(f"partial warm start from {cfg.init} ({meta.get('steps', '?')} steps); fresh: "
            f"{', '.join(skipped) if skipped else 'nothing'}")
        return
    load_into(model, state, cfg.init)
    log(f"warm start from {cfg.init} ({meta.get('steps', '?')} steps)")


def trim_log(csv_path: Path, step: int) -> None:
    """Drop the log rows after ``step`` (logged after the last checkpoint of a killed run, then
    redone by the resumed one), so ``metrics.csv`` and its curve run forward once."""
    lines = csv_path.read_text().splitlines(keepends=True)
    keep = lines[:1] + [ln for ln in lines[1:] if ln.split(",", 1)[0].isdigit() and int(ln.split(",", 1)[0]) <= step]
    if len(keep) != len(lines):
        write_text(csv_path, "".join(keep))


def draw_loss_curve(run_dir: Path, cfg: TrainConfig, log: Callable[[str], None]) -> None:
    """``metrics.png`` next to ``metrics.csv``. A picture is a convenience: if it cannot be drawn
    the run (already checkpointed) still succeeds, with one line saying why."""
    from train.plots import loss_curve

    try:
        loss_curve(run_dir / "metrics.csv", run_dir / "metrics.png", title=f"{cfg.model}-{cfg.variant}")
    except (ValueError, OSError) as exc:
        log(f"warning: metrics.png not drawn: {exc}")


def _dist_info() -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return world, rank, local


def _publish(summary: dict, run_dir: Path, publish: Path | None, rank: int) -> dict:
    """With ``publish``, write the run's fp16 starter checkpoint there (rank 0 only)."""
    if publish and rank == 0:
        from train.evaluate import publish_checkpoint

        summary["published"] = publish_checkpoint(run_dir, publish)
    return summary


def train(cfg: TrainConfig, resume: bool = False, progress=None, log: Callable[[str], None] = print,
          stop_after: int | None = None, pool_progress: Callable[[int, int], None] | None = None,
          publish: Path | None = None) -> dict:
    """Train ``cfg.model``; returns a summary. ``progress(step, steps, loss, samples/s)`` and
    ``pool_progress(done, total)`` (rendering the synthetic pool) report as it goes.
    ``stop_after`` ends the run early at that step (as a kill would, after the last periodic
    checkpoint) - used by the resume test. ``publish``: a folder to write the run's fp16 starter
    checkpoint to when it ends (``summary["published"]``)."""
    world, rank, local = _dist_info()
    if rank != 0:
        log = lambda s: None  # noqa: E731  (one voice per run)
    device = resolve_device(cfg.device)
    if world > 1:
        import torch.distributed as dist

        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend)
        if device.type == "cuda":
            device = torch.device("cuda", local)
            torch.cuda.set_device(device)
    if device.type == "cpu":
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    spec = get(cfg.model)
    model = spec.build(cfg.variant).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.lr_halving_steps, gamma=0.5)
    run_dir = cfg.run_dir
    start = 0
    if resume:
        if not (run_dir / "last.safetensors").is_file():
            raise CheckpointError(f"{run_dir}: nothing to resume (no last.safetensors)")
        start = load_training_state(run_dir, model, optimizer, scheduler, cfg)
        log(f"resuming {cfg.model}-{cfg.variant} at step {start}")
        if start >= cfg.steps:  # nothing left: say so before rendering any data
            log(f"{run_dir} is already at step {start} of {cfg.steps}; pass --steps N (> {start}) to train further")
            if world > 1:
                import torch.distributed as dist

                dist.destroy_process_group()
            summary = {"steps": start, "final_loss": None, "run_dir": str(run_dir), "seconds": 0.0, "samples_per_s": 0.0}
            return _publish(summary, run_dir, publish, rank)
    elif (run_dir / "last.safetensors").exists():
        raise TrainError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --out")
    else:
        warm_start(model, cfg, log)
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text(run_dir / "config.yaml", yaml.safe_dump(asdict(cfg)))
    pools = build_pools(cfg, log, start_step=start, progress=pool_progress)
    synthetic_pools = [p for p, source in zip(pools, cfg.data) if source == SYNTHETIC]
    use_amp = cfg.amp and device.type == "cuda"
    csv_path = run_dir / "metrics.csv"
    new_csv = not csv_path.exists() or start == 0
    if not new_csv and rank == 0:
        trim_log(csv_path, start)
    # only rank 0 logs: another rank opening the file with "w" could truncate what rank 0 wrote
    fh = open(csv_path if rank == 0 else os.devnull, "w" if new_csv else "a", newline="")
    writer = csv.writer(fh)
    if new_csv:
        writer.writerow(["step", "loss", "lr", "samples_per_s"])
    t0, seen, last = time.perf_counter(), 0, {}
    end = cfg.steps if stop_after is None else min(cfg.steps, stop_after)
    try:
        for step in range(start, end):
            if step > start:  # a resumed run has this step's refresh in its pool already (no re-render)
                for pool in synthetic_pools:
                    refresh_slot(pool, cfg, step)
            ins, tgs = draw_batch(pools[step % len(pools)], cfg, step, rank)
            ins = {k: v.to(device) for k, v in ins.items()}
            tgs = {k: v.to(device) for k, v in tgs.items()}
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                terms = compute_loss(cfg.model, model, ins, tgs)
            optimizer.zero_grad(set_to_none=True)
            terms["loss"].backward()
            optimizer.step()
            scheduler.step()
            seen += cfg.batch_size * world
            last = {k: float(v.detach()) for k, v in terms.items()}
            if not math.isfinite(last["loss"]):
                raise TrainError(f"loss became {last['loss']} at step {step}; lower --lr")
            done = step + 1
            if rank == 0 and (done % cfg.log_every == 0 or done == end):
                sps = seen / max(time.perf_counter() - t0, 1e-9)
                writer.writerow([done, f"{last['loss']:.6g}", f"{scheduler.get_last_lr()[0]:.3g}", f"{sps:.2f}"])
                fh.flush()
                if progress:
                    progress(done, cfg.steps, last["loss"], sps)
            if rank == 0 and (done % cfg.checkpoint_every == 0 or done == cfg.steps):
                save_training_state(run_dir, model, optimizer, scheduler, done, cfg, {"train_loss": last["loss"]})
    finally:
        fh.close()
        if world > 1:
            import torch.distributed as dist

            dist.destroy_process_group()
    if rank == 0 and end > start:
        draw_loss_curve(run_dir, cfg, log)
    summary = {"steps": end, "final_loss": last.get("loss"), "run_dir": str(run_dir),
               "seconds": time.perf_counter() - t0, "samples_per_s": seen / max(time.perf_counter() - t0, 1e-9)}
    return _publish(summary, run_dir, publish, rank)
