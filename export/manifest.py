"""The artifact's ``manifest.json`` and ``parity.json`` (ARCHITECTURE.md), and atomic publication
of the artifact folder (everything is written to a temp folder, then renamed into place)."""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shutil
import uuid
from importlib import metadata
from pathlib import Path

MANIFEST_SCHEMA = "defocus-export-manifest/1"
PARITY_SCHEMA = "defocus-export-parity/1"
TOOLS = ("torch", "executorch", "torchao", "coremltools", "litert-torch", "ai-edge-litert", "ai-edge-quantizer",
         "onnx", "onnxruntime", "onnxscript", "numpy")
MANIFEST_KEYS = ("schema", "created", "model", "variant", "target", "precision", "size", "model_file", "files",
                 "artifact_bytes", "artifact_sha256", "checkpoint", "spec", "inputs", "outputs", "outputs_selected",
                 "calibration", "conversion", "tool_versions", "host")
PARITY_KEYS = ("schema", "target", "precision", "runtime", "ran", "reason", "threshold_db", "sets", "task",
               "verdict", "failures")


def tool_versions() -> dict[str, str | None]:
    out = {}
    for name in TOOLS:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def host() -> dict:
    return {"system": platform.system(), "machine": platform.machine(), "python": platform.python_version()}


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def path_bytes(path: Path) -> int:
    p = Path(path)
    if p.is_dir():
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    return p.stat().st_size


def path_sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    p = Path(path)
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    for f in files:
        if p.is_dir():
            h.update(str(f.relative_to(p)).encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def write_json(path: Path, data: dict) -> None:
    tmp = Path(path).with_name(f".{Path(path).name}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=False, allow_nan=False))
    os.replace(tmp, path)


def new_workdir(final: Path) -> Path:
    """A hidden temp folder next to ``final`` (same filesystem, so the publishing rename is atomic)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    work = final.parent / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
    work.mkdir()
    return work


def publish(workdir: Path, final: Path, force: bool) -> None:
    """Rename ``workdir`` to ``final``; with ``force`` an existing ``final`` is replaced."""
    old = None
    if final.exists():
        if not force:
            raise FileExistsError(f"{final} exists (use --force to replace it)")
        old = final.parent / f".old-{final.name}-{uuid.uuid4().hex[:8]}"
        os.rename(final, old)
    try:
        os.rename(workdir, final)
    except BaseException:
        if old is not None:
            os.rename(old, final)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def discard(workdir: Path | None) -> None:
    if workdir is not None:
        shutil.rmtree(workdir, ignore_errors=True)
