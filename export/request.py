"""What the export stage is asked to do: precisions, thresholds, the request, its errors, and the
capability matrix read from the target objects (``export.targets``).

Every refusal is decided before any conversion starts, and names what the target can do.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import UserError

PRECISIONS = ("fp32", "fp16", "int8-weights", "int8", "int8-dynamic", "palette4", "palette6", "palette8")
OUTPUT_SETS = ("all", "main")
# Precisions whose activations are calibrated on realistic samples (static int8).
CALIBRATED = ("int8",)
# Lossy precisions: parity also reports the task metric (float vs quantised PSNR against ground truth).
QUANTISED = ("int8", "int8-weights", "int8-dynamic", "palette4", "palette6", "palette8")

# fp32 >= 60 dB, fp16 >= 40 dB, int8 >= 30 dB (ISSUE); palettes are int8-class lossy compression.
MIN_PSNR = {"fp32": 60.0, "fp16": 40.0, "int8-weights": 30.0, "int8": 30.0, "int8-dynamic": 30.0,
            "palette4": 20.0, "palette6": 30.0, "palette8": 30.0}


class ExportError(UserError):
    """A request the export stage refuses (unknown name, unsupported combination, bad size...)."""


class ConversionError(UserError, RuntimeError):
    """A converter failed (a model that will not convert); no artifact was written."""


def _target(name: str):
    from .targets import get  # export.targets imports this module for ExportError

    return get(name)


def capability(target: str, precision: str) -> str | None:
    """None when ``target`` can export ``precision``, else the reason it cannot."""
    return _target(target).capability(precision)


def supported_precisions(target: str) -> list[str]:
    return [p for p in PRECISIONS if capability(target, p) is None]


def capability_matrix() -> dict[str, dict[str, str | None]]:
    from . import targets

    return {t.name: {p: t.capability(p) for p in PRECISIONS} for t in targets.all()}


def normalise_precision(name: str) -> str:
    key = str(name).strip().lower().replace("_", "-")
    if key not in PRECISIONS:
        raise ExportError(f"unknown precision {name!r}; valid: {', '.join(PRECISIONS)}")
    return key


def check_combination(target: str, precision: str) -> None:
    reason = capability(target, precision)
    if reason is not None:
        raise ExportError(f"{target} cannot export {precision}: {reason}. "
                          f"{target} supports: {', '.join(supported_precisions(target))}")


_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(text: str) -> str:
    """A path component that cannot escape a folder (no separators, no '..', no leading dot)."""
    s = _SAFE.sub("_", str(text)).strip("._") or "x"
    return s


@dataclass
class ExportRequest:
    """One artifact to produce: model x variant x target x precision x size."""

    model: str
    target: str
    precision: str
    height: int
    width: int
    variant: str = "mobile"
    checkpoint: Path | None = None  # None: default checkpoint if present, else random init
    calibration: str = "synthetic"  # "synthetic" or a folder of .npz captures
    calibration_count: int = 8
    parity_count: int = 2  # realistic parity samples (plus one random sample)
    task_count: int = 4  # synthetic test-split samples for the int8 task metric
    outputs: str = "all"  # all | main
    out: Path = Path("artifacts")
    force: bool = False
    min_psnr: float | None = None
    verify: bool = True
    seed: int = 0
    extra: dict = field(default_factory=dict)  # target-specific options, e.g. litert_recipe

    @property
    def size(self) -> str:
        return f"{self.height}x{self.width}"

    @property
    def threshold(self) -> float:
        return float(self.min_psnr) if self.min_psnr is not None else MIN_PSNR[self.precision]

    def artifact_dir(self) -> Path:
        return (Path(self.out) / safe_name(f"{self.model}-{self.variant}")
                / safe_name(f"{self.target}-{self.precision}-{self.height}x{self.width}"))
