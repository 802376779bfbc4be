"""``run --checkpoint`` on a fast runtime: the checkpoint exported on the fly to a fixed-size
artifact (fp32, the tile size of the run) and cached, so later runs of the same weights at the
same tile size open it at once instead of exporting again.

The key is the weights' sha256, model, variant, target, precision, tile size and the versions of
the tools that convert and run it (torch, numpy and the target's own). The cache lives in
``$DEFOCUS_CACHE``, else ``$XDG_CACHE_HOME/defocus-toolchain``, else ``~/.cache/defocus-toolchain``
(or ``--cache-dir``), under ``run-exports/<key>/``: an ordinary artifact folder (model file,
manifest.json, parity.json) published atomically by the export pipeline, verified on its runtime
before it is used. Another checkpoint, tile size or tool version is another key, so it is
exported anew; a key folder that does not hold a passing artifact of those weights (a deleted
model file, a failed parity) is rebuilt. Folders can be deleted at any time.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from core.errors import UserError

PRECISION = "fp32"  # the parity threshold of this precision holds the cached runner to the eager model
PARITY_SAMPLES = 1  # realistic parity samples at export (plus one random): the first run pays for them


class ExportCacheError(UserError):
    """A cached export that cannot be made or trusted (parity failed, folder not writable)."""


@dataclass
class CachedExport:
    path: Path  # the artifact folder
    hit: bool  # True: opened from the cache, no export
    key: str
    seconds: float  # export time on a miss (0 on a hit)
    reason: str  # why it was (re)built, or "cache hit"

    def record(self) -> dict:
        return {"artifact": str(self.path), "cache": "hit" if self.hit else "miss", "key": self.key,
                "export_s": round(self.seconds, 2), "reason": self.reason}


def cache_root(override: str | Path | None = None) -> Path:
    """Where cached exports live (see the module's docstring)."""
    if override is not None:
        return Path(override)
    if os.environ.get("DEFOCUS_CACHE"):
        return Path(os.environ["DEFOCUS_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "defocus-toolchain"


def cache_key(sha256: str, model: str, variant: str, target: str, size: tuple[int, int]) -> str:
    from export import artifact, targets

    t = targets.get(target)
    versions = {k: v for k, v in artifact.tool_versions().items() if k in {*artifact.COMMON_TOOLS, *t.tools}}
    ident = {"weights": sha256, "model": model, "variant": variant, "target": t.name, "precision": PRECISION,
             "size": list(size), "tools": versions, "manifest": artifact.MANIFEST_SCHEMA}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:20]


def _stale(folder: Path, sha256: str) -> str | None:
    """Why ``folder`` cannot serve these weights, or None when it can."""
    from core.jsonfile import read_json

    try:
        manifest = read_json(folder / "manifest.json", ExportCacheError)
        parity = read_json(folder / "parity.json", ExportCacheError)
    except ExportCacheError as exc:
        return str(exc)
    if (manifest.get("checkpoint") or {}).get("sha256") != sha256:
        return f"{folder}: exported from other weights"
    if not (folder / str(manifest.get("model_file"))).is_file():
        return f"{folder}: model file missing"
    if parity.get("verdict") != "pass":
        return f"{folder}: parity {parity.get('verdict')}"
    return None


def cached_export(checkpoint: str | Path, model: str, target: str, size: tuple[int, int],
                  cache_dir: str | Path | None = None, log: Callable[[str], None] | None = None) -> CachedExport:
    """The artifact of ``checkpoint`` for ``target`` at ``size`` (H, W): from the cache, else
    exported (with a parity check on the target's runtime) and published there. A hit imports
    neither PyTorch nor a converter (tested): the checkpoint's sidecar and hash key it."""
    from export.request import ExportRequest
    from models.checkpoint import checkpoint_meta

    meta = checkpoint_meta(checkpoint, model)  # every check of the sidecar and the weights' sha256
    sha, variant = meta["sha256"], meta["variant"]
    key = cache_key(sha, model, variant, target, size)
    req = ExportRequest(model=model, target=target, precision=PRECISION, height=size[0], width=size[1],
                        variant=variant, checkpoint=Path(checkpoint), out=cache_root(cache_dir) / "run-exports" / key,
                        parity_count=PARITY_SAMPLES)
    folder = req.artifact_dir()
    why = _stale(folder, sha) if folder.exists() else "not cached yet"
    if why is None:
        return CachedExport(folder, True, key, 0.0, "cache hit")
    from export.pipeline import export_one  # PyTorch and the target's converter: only to export

    req.force = folder.exists()
    t0 = time.perf_counter()
    try:
        export_one(req, log=log)
    except UserError:
        if folder.exists() and _stale(folder, sha) is None:  # another run published it meanwhile
            return CachedExport(folder, True, key, 0.0, "cache hit (published by a concurrent run)")
        raise
    failed = _stale(folder, sha)
    if failed is not None:
        raise ExportCacheError(f"the {target} {PRECISION} export of {checkpoint} cannot stand in for it: {failed} "
                               f"(see {folder / 'parity.json'}); use --runner eager")
    return CachedExport(folder, False, key, time.perf_counter() - t0, why)
