"""The artifact folder (ARCHITECTURE.md, "Artifact folder"):
``<out>/<model>-<variant>/<target>-<precision>-<H>x<W>/`` holding the model file, ``manifest.json``
and ``parity.json``, published atomically.

The pipeline builds it in an empty temporary folder beside the final one (``core.atomic.atomic_dir``):
the target converts into it, the manifest and parity files are written into it, and only when all
of that succeeded is it renamed into place. A failed run deletes it and leaves the previous
artifact as it was; an existing artifact is replaced only with ``force`` (``--force``).
"""
from __future__ import annotations

import datetime as _dt
from importlib import metadata
from pathlib import Path

from core.atomic import write_json
from core.hashing import sha256_path
from core.host import host_info

from . import targets

MANIFEST_SCHEMA = "defocus-export-manifest/1"
PARITY_SCHEMA = "defocus-export-parity/1"
MANIFEST_KEYS = ("schema", "created", "model", "variant", "target", "precision", "size", "model_file", "files",
                 "artifact_bytes", "artifact_sha256", "checkpoint", "spec", "inputs", "outputs", "outputs_selected",
                 "calibration", "conversion", "tool_versions", "host")
PARITY_KEYS = ("schema", "target", "precision", "runtime", "ran", "reason", "threshold_db", "sets", "task",
               "verdict", "failures")
# Every export converts from PyTorch and verifies with numpy; the targets name their own tools.
COMMON_TOOLS = ("torch", "numpy")


def tools() -> tuple[str, ...]:
    """Packages whose versions every manifest records: torch, each target's tools, numpy."""
    names = [COMMON_TOOLS[0], *(n for t in targets.all() for n in t.tools), *COMMON_TOOLS[1:]]
    return tuple(dict.fromkeys(names))


def tool_versions() -> dict[str, str | None]:
    out = {}
    for name in tools():
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def path_bytes(path: Path) -> int:
    p = Path(path)
    if p.is_dir():
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    return p.stat().st_size


def build_manifest(req, spec, ckpt, out_specs, model_file: Path, info: dict, calib, convert_s: float) -> dict:
    h, w, v = req.height, req.width, req.variant
    ishapes, oshapes = spec.input_shapes(v, h, w), spec.output_shapes(v, h, w)
    files = sorted(p.name for p in model_file.parent.iterdir() if not p.name.startswith("."))
    files = sorted(set(files) | {"manifest.json", "parity.json"})
    io = lambda t, shapes: {"name": t.name, "shape": list(shapes[t.name]), "dtype": "float32", "layout": t.layout,
                            "value_range": t.to_dict(v)["value_range"], "recurrent": t.recurrent,
                            "normalisation": "none: float32 values in value_range, NCHW, batch 1",
                            "description": t.description}
    return {
        "schema": MANIFEST_SCHEMA, "created": now(), "model": spec.name, "variant": v, "target": req.target,
        "precision": req.precision, "size": [h, w], "model_file": model_file.name, "files": files,
        "artifact_bytes": path_bytes(model_file), "artifact_sha256": sha256_path(model_file),
        "checkpoint": ckpt, "spec": spec.to_dict(v),
        "inputs": [io(t, ishapes) for t in spec.inputs], "outputs": [io(t, oshapes) for t in out_specs],
        "outputs_selected": req.outputs, "state_map": dict(spec.state_map), "calibration": calib,
        "conversion": {**info, "seconds": round(convert_s, 2), "example_inputs_seed": req.seed},
        "tool_versions": tool_versions(), "host": host_info(),
    }


def write(folder: Path, manifest: dict, parity: dict) -> None:
    """``manifest.json`` and ``parity.json`` into the artifact folder being built."""
    write_json(folder / "manifest.json", manifest)
    write_json(folder / "parity.json", parity)
