"""Shared vocabulary of the export stage: targets, precisions, the capability matrix, requests.

Every refusal is decided here, before any conversion starts, and names what the target can do.
"""
from __future__ import annotations

import platform
import re
from dataclasses import dataclass, field
from pathlib import Path

TARGETS = ("coreml", "tflite", "executorch", "executorch-coreml", "onnx")
TARGET_ALIASES = {"litert": "tflite", "tfl": "tflite", "et": "executorch", "pte": "executorch",
                  "executorch-xnnpack": "executorch", "mlpackage": "coreml"}
PRECISIONS = ("fp32", "fp16", "int8-weights", "int8", "int8-dynamic", "palette4", "palette6", "palette8")
OUTPUT_SETS = ("all", "main")

# fp32 >= 60 dB, fp16 >= 40 dB, int8 >= 30 dB (ISSUE); palettes are int8-class lossy compression.
MIN_PSNR = {"fp32": 60.0, "fp16": 40.0, "int8-weights": 30.0, "int8": 30.0, "int8-dynamic": 30.0,
            "palette4": 20.0, "palette6": 30.0, "palette8": 30.0}

IS_MACOS = platform.system() == "Darwin"


class ExportError(ValueError):
    """A request the export stage refuses (unknown name, unsupported combination, bad size...)."""


class ConversionError(RuntimeError):
    """A converter failed; no artifact was written."""


# target -> precision -> None (supported) or the reason it is refused. Unlisted = refused with a
# generic reason. Kept as data so docs/EXPORT.md and the refusal messages say the same thing.
_NOT_TFLITE_PALETTE = "palettisation (k-means LUT weights) is a Core ML feature"
_CAPS: dict[str, dict[str, str | None]] = {
    "coreml": {
        "fp32": None, "fp16": None, "int8-weights": None,
        "int8": (None if IS_MACOS else
                 "Core ML activation calibration (linear_quantize_activations) calls predict, which "
                 "needs macOS; on Linux ship int8-weights (or palette*), or use executorch/tflite/onnx int8"),
        "int8-dynamic": "Core ML has no dynamic activation quantisation; use int8-weights",
        "palette4": None, "palette6": None, "palette8": None,
    },
    "tflite": {
        "fp32": None,
        "fp16": None,  # fp16 weights (float_casting recipe); compute precision is a runtime choice
        "int8-weights": None, "int8": None, "int8-dynamic": None,
        "palette4": _NOT_TFLITE_PALETTE, "palette6": _NOT_TFLITE_PALETTE, "palette8": _NOT_TFLITE_PALETTE,
    },
    "executorch": {
        "fp32": None, "fp16": None, "int8": None,
        "int8-weights": "XNNPACK has no weight-only int8 (use int8 = PT2E static, or target coreml/tflite)",
        "int8-dynamic": "XNNPACK dynamic int8 covers linear layers only; these models are convolutional "
                        "(use int8 = PT2E static)",
        "palette4": "palettisation is a Core ML feature (use target coreml)",
        "palette6": "palettisation is a Core ML feature (use target coreml)",
        "palette8": "palettisation is a Core ML feature (use target coreml)",
    },
    "executorch-coreml": {
        "fp32": None, "fp16": None,
        "int8-weights": "not wired up for the ExecuTorch Core ML delegate here; use target coreml "
                        "(int8-weights) or executorch (XNNPACK int8)",
        "int8": "Core ML delegate activation quantisation is not wired up here; use executorch (XNNPACK int8)",
        "int8-dynamic": "not supported by the Core ML delegate",
        "palette4": "use target coreml for palettised weights",
        "palette6": "use target coreml for palettised weights",
        "palette8": "use target coreml for palettised weights",
    },
    "onnx": {
        "fp32": None, "int8": None,
        "fp16": "onnxruntime's CPU provider lacks fp16 kernels for most ops, so parity cannot run here; "
                "use fp32 (mobile GPUs take fp16 as a runtime option) or int8",
        "int8-weights": "onnxruntime has no weight-only int8 for Conv; use int8 (static QDQ)",
        "int8-dynamic": "onnxruntime dynamic quantisation (ConvInteger) is slow on mobile; use int8 (static QDQ)",
        "palette4": "palettisation is a Core ML feature", "palette6": "palettisation is a Core ML feature",
        "palette8": "palettisation is a Core ML feature",
    },
}

# File written by each target (the model file inside the artifact folder).
MODEL_FILES = {"coreml": "model.mlpackage", "tflite": "model.tflite", "executorch": "model.pte",
               "executorch-coreml": "model.pte", "onnx": "model.onnx"}
# Targets whose parity cannot run on this host, and why.
def not_runnable_reason(target: str) -> str | None:
    if target in ("coreml", "executorch-coreml") and not IS_MACOS:
        return "not run: Core ML predictions need macOS"
    return None


def capability(target: str, precision: str) -> str | None:
    """None when ``target`` can export ``precision``, else the reason it cannot."""
    return _CAPS[target].get(precision, f"{precision} is not supported by {target}")


def supported_precisions(target: str) -> list[str]:
    return [p for p in PRECISIONS if capability(target, p) is None]


def capability_matrix() -> dict[str, dict[str, str | None]]:
    return {t: {p: capability(t, p) for p in PRECISIONS} for t in TARGETS}


def normalise_target(name: str) -> str:
    key = str(name).strip().lower()
    key = TARGET_ALIASES.get(key, key)
    if key not in TARGETS:
        raise ExportError(f"unknown target {name!r}; valid: {', '.join(TARGETS)}, all "
                          f"(aliases: {', '.join(f'{a}={t}' for a, t in TARGET_ALIASES.items())})")
    return key


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


def parse_size(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", str(text))
    if not m:
        raise ExportError(f"size must be HxW (e.g. 256x256), got {text!r}")
    return int(m.group(1)), int(m.group(2))


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
    extra: dict = field(default_factory=dict)

    @property
    def size(self) -> str:
        return f"{self.height}x{self.width}"

    @property
    def threshold(self) -> float:
        return float(self.min_psnr) if self.min_psnr is not None else MIN_PSNR[self.precision]

    def artifact_dir(self) -> Path:
        return (Path(self.out) / safe_name(f"{self.model}-{self.variant}")
                / safe_name(f"{self.target}-{self.precision}-{self.height}x{self.width}"))
