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
