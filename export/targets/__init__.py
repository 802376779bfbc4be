"""The export targets: one module per target, each defining one :class:`Target` named ``TARGET``.

    from export import targets
    t = targets.get("litert")          # aliases resolve: t.name == "tflite"
    targets.names()                    # ("coreml", "tflite", "executorch", "executorch-coreml", "onnx")

A new target = one new module here (defining ``TARGET``) + one line in ``_MODULES``. The order of
``_MODULES`` is the order of ``--target all``, of the capability matrix and of the help texts.
Importing this package is cheap: the target modules import their converters and runtimes inside
functions.
"""
from __future__ import annotations

import importlib

from .base import Context, ReferenceCase, Target

__all__ = ["Context", "ReferenceCase", "Target", "get", "names", "all", "help_text"]

_MODULES = (
    "coreml",
    "litert",
    "executorch",
    "executorch_coreml",
    "onnx",
)

_TARGETS: tuple[Target, ...] | None = None

# What ``run --checkpoint`` (``--runner auto``) exports to and tiles through: the fastest fp32
# runtime on the x86-64 host (docs/BENCHMARKS.md, "Full-resolution run": RDPD mobile, 2 threads,
# onnxruntime 0.27-0.32 MP/s, LiteRT 0.27-0.28, ExecuTorch-XNNPACK 0.25-0.27, same loaded run).
HOST_RUNNER = "onnx"


def all() -> tuple[Target, ...]:  # noqa: A001 - registry API: targets.all()
    """Every target, in registry order."""
    global _TARGETS
    if _TARGETS is None:
        _TARGETS = tuple(importlib.import_module(f"{__name__}.{m}").TARGET for m in _MODULES)
    return _TARGETS


def names() -> tuple[str, ...]:
    return tuple(t.name for t in all())


def get(name: str) -> Target:
    """The target called ``name`` or one of its aliases (case-insensitive); ExportError otherwise."""
    key = str(name).strip().lower()
    for t in all():
        if key == t.name or key in t.aliases:
            return t
    from ..request import ExportError

    aliases = ", ".join(f"{a}={t.name}" for t in all() for a in t.aliases)
    raise ExportError(f"unknown target {name!r}; valid: {', '.join(names())}, all (aliases: {aliases})")


def help_text() -> str:
    """``coreml (= mlpackage), tflite (= litert, tfl), ...`` for the CLI's --target help."""
    return ", ".join(f"{t.name} (= {', '.join(t.aliases)})" if t.aliases else t.name for t in all())
