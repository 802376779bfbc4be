"""Parity bundles (docs/PARITY_BUNDLE.md): what a phone app needs to prove an artifact on a device.

    make_bundle("artifacts/uid-mobile/tflite-fp32-256x256", inputs=4, out="bundles/uid-tflite")
    b = open_bundle("bundles/uid-tflite")          # checks every file's sha256

A bundle holds the artifact (``model/``: model file, its manifest and parity record), realistic
inputs from the synthetic test split, the PyTorch fp32 reference outputs and, for the main
output, the ground truth and a blur map (|CoC| in px, where the model's data carries it), each
tensor as raw little-endian float32 ``.bin`` and ``.npy``, and ``bundle.json``: names, shapes,
dtypes, layouts, value ranges, the sha256 of every file and the tool versions. Written through
``core.atomic.atomic_dir``: a failed run leaves no half bundle.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.jsonfile import read_json
from core.atomic import atomic_dir, write_json
from core.hashing import sha256_path
from core.host import host_info

from .tensors import BundleError, check_name, find_tensor, read_tensor, safe_relpath, write_tensor

SCHEMA = "defocus-parity-bundle/1"
BUNDLE_JSON = "bundle.json"
MODEL_DIR = "model"
OUTPUTS_DIR = "outputs"  # where the app writes its outputs (inside its copy of the bundle)
RUN_JSON = "run.json"  # optional, written by the app into outputs/: which model file it ran
BLUR_NAME = "blur_px"  # ground-truth blur map: |signed CoC| in pixels
# Blur bands (|CoC| px, [lo, hi)): the task metric is reported per band.
BLUR_BANDS = ((0.0, 2.0), (2.0, 5.0), (5.0, 10.0), (10.0, float("inf")))
_SEED_STREAM = 90011  # the bundle's own stream of the synthetic test split


def _sample_name(i: int) -> str:
    return f"{i:03d}"


def _tensor_entry(io: dict, folder: str) -> dict:
    name = check_name(io["name"], "artifact manifest")
    return {"name": name, "shape": list(io["shape"]), "dtype": "float32", "byte_order": "little",
            "layout": io.get("layout", "NCHW"), "value_range": io.get("value_range"),
            "recurrent": bool(io.get("recurrent", False)), "description": io.get("description", ""),
            "bytes": int(np.prod(io["shape"])) * 4,
            "bin": f"{folder}/{{sample}}/{name}.bin", "npy": f"{folder}/{{sample}}/{name}.npy"}


def _output_entry(e: dict) -> dict:
    """An output's entry: where the reference lies and where the app writes its own."""
    out = {k: v for k, v in e.items() if k not in ("bin", "npy")}
    out.update(reference_bin=e["bin"], reference_npy=e["npy"],
               output_bin=f"{OUTPUTS_DIR}/{{sample}}/{e['name']}.bin")
    return out


def read_artifact_manifest(artifact: Path) -> dict:
    mpath = Path(artifact) / "manifest.json"
    m = read_json(mpath, BundleError, "missing (not an artifact folder written by `cli.py export`)")
    for k in ("model", "variant", "target", "precision", "size", "model_file", "inputs", "outputs"):
        if k not in m:
            raise BundleError(f"{mpath}: manifest lacks {k!r}")
    safe_relpath(m["model_file"], str(mpath))
    if not (Path(artifact) / m["model_file"]).exists():
        raise BundleError(f"{Path(artifact) / m['model_file']}: the manifest's model file is missing")
    return m


def float_model(manifest: dict, checkpoint: Path | None = None):
    """The fp32 PyTorch model the artifact was exported from (its checkpoint, checked by sha256;
    a random-init export is rebuilt with the export's seed), keeping the artifact's outputs."""
    from export.pipeline import SelectOutputs, load_float_model, select_outputs
    from export.request import ExportRequest
    from models import registry
    from models.checkpoint import weights_path

    spec = registry.get(manifest["model"])
    ck = manifest.get("checkpoint")
    path = Path(checkpoint) if checkpoint else (Path(ck["path"]) if ck else None)
    if path is not None:
        if not path.is_file():
            raise BundleError(f"{path}: the artifact's checkpoint is missing (pass --checkpoint)")
        if ck and ck.get("sha256") and sha256_path(weights_path(path)) != ck["sha256"]:
            raise BundleError(f"{path}: sha256 differs from the one the artifact was exported from "
                              f"({ck['sha256'][:12]}...): its reference outputs would not match")
    h, w = manifest["size"]
    req = ExportRequest(model=spec.name, target=manifest["target"], precision=manifest["precision"], height=h,
                        width=w, variant=manifest["variant"], checkpoint=path)
    model, _ = load_float_model(spec, req, log=lambda s: None)
    idx, out_specs = select_outputs(spec, manifest.get("outputs_selected") or "all")
    names = [o["name"] for o in manifest["outputs"]]
    if [t.name for t in out_specs] != names:
        raise BundleError(f"artifact outputs {names} do not match the model's {[t.name for t in out_specs]}")
    return spec, SelectOutputs(model, idx).eval()


def test_split(spec, variant: str, h: int, w: int, count: int, seed: int) -> list[tuple[dict, dict]]:
    """(inputs, targets) of ``count`` synthetic test-split examples (a sequence model: first frame)."""
    from synth.samples import first_frame, render_example

    rng = np.random.default_rng([seed, _SEED_STREAM])
    opts = {"frames": 1} if spec.is_sequence else {}
    return [first_frame(spec, render_example(spec, rng, (h, w), **opts), variant) for _ in range(count)]


def make_bundle(artifact: str | Path, inputs: int, out: str | Path, force: bool = False, seed: int = 0,
                checkpoint: Path | None = None, progress=None) -> Path:
    """Write a parity bundle for ``artifact`` with ``inputs`` samples to ``out``; returns ``out``."""
    from export.artifact import tool_versions
    from export.parity import torch_run
    from export.request import MIN_PSNR
    from export.targets import get as get_target

    artifact = Path(artifact)
    if inputs < 1:
        raise BundleError(f"--inputs must be >= 1, got {inputs}")
    m = read_artifact_manifest(artifact)
    spec, model = float_model(m, checkpoint)
    h, w = m["size"]
    in_entries = [_tensor_entry(i, "inputs") for i in m["inputs"]]
    out_entries = [_tensor_entry(o, "reference") for o in m["outputs"]]
    in_names, out_names = [e["name"] for e in in_entries], [e["name"] for e in out_entries]
    main = spec.main_output if spec.main_output in out_names else None
    samples = [_sample_name(i) for i in range(inputs)]
    pairs = test_split(spec, m["variant"], h, w, inputs, seed)
    has_blur = main is not None and all("coc" in t for _, t in pairs)
    with atomic_dir(Path(out), replace=force, what="parity bundle", error=BundleError) as work:
        mdir = work / MODEL_DIR
        mdir.mkdir()
        for name in sorted(set(m.get("files", [])) | {m["model_file"], "manifest.json"}):
            src = artifact / safe_relpath(name, str(artifact / "manifest.json"))
            if src.is_dir():
                shutil.copytree(src, mdir / name)
            elif src.is_file():
                shutil.copy2(src, mdir / name)
        for k, (inp, tgt) in enumerate(pairs):
            s = samples[k]
            feed = {n: np.ascontiguousarray(inp[n], np.float32) for n in in_names}
            for e in in_entries:
                if tuple(feed[e["name"]].shape) != tuple(e["shape"]):
                    raise BundleError(f"input {e['name']}: test split gives {feed[e['name']].shape}, the artifact "
                                      f"expects {tuple(e['shape'])}")
                write_tensor(work / "inputs" / s, e["name"], feed[e["name"]])
            ref = torch_run(model, in_names, out_names, feed)
            for n in out_names:
                write_tensor(work / "reference" / s, n, ref[n])
            if main is not None:
                write_tensor(work / "ground_truth" / s, main, np.asarray(tgt[main], np.float32))
                if has_blur:
                    write_tensor(work / "ground_truth" / s, BLUR_NAME, np.abs(np.asarray(tgt["coc"], np.float32)))
            if progress:
                progress(k + 1, inputs)
        (work / OUTPUTS_DIR).mkdir()
        files = {str(p.relative_to(work).as_posix()): sha256_path(p)
                 for p in sorted(work.rglob("*")) if p.is_file()}
        t = get_target(m["target"])
        manifest = {
            "schema": SCHEMA, "created": _now(),
            "artifact": {"source": str(artifact), "model": m["model"], "variant": m["variant"],
                         "target": m["target"], "precision": m["precision"], "size": [h, w],
                         "model_file": f"{MODEL_DIR}/{m['model_file']}",
                         "artifact_sha256": m.get("artifact_sha256"), "artifact_bytes": m.get("artifact_bytes"),
                         "runtime": t.runtime_name, "checkpoint": m.get("checkpoint")},
            "samples": samples, "byte_order": "little", "dtype": "float32", "order": "C (row-major)",
            "inputs": in_entries, "outputs": [_output_entry(e) for e in out_entries],
            "reference": {"source": "PyTorch eager fp32 (the artifact's checkpoint, same outputs)",
                          "seed": seed, "inputs": "synthetic test split (synth.samples.render_example)"},
            "ground_truth": None if main is None else {
                "output": main, "npy": f"ground_truth/{{sample}}/{main}.npy",
                "blur_map": BLUR_NAME if has_blur else None,
                "blur_bands_px": [[lo, None if hi == float("inf") else hi] for lo, hi in BLUR_BANDS] if has_blur else None},
            "thresholds_db": dict(MIN_PSNR), "outputs_dir": OUTPUTS_DIR, "run_json": f"{OUTPUTS_DIR}/{RUN_JSON}",
            "files": files, "tool_versions": tool_versions(), "host": host_info(),
        }
        write_json(work / BUNDLE_JSON, manifest)
    return Path(out)


def _now() -> str:
    from export.artifact import now

    return now()


# --- reading ---------------------------------------------------------------------------------------

@dataclass
class Bundle:
    """An opened bundle: its folder, ``bundle.json`` and the files whose sha256 no longer match."""

    root: Path
    manifest: dict
    changed: list[str]

    @property
    def samples(self) -> list[str]:
        return list(self.manifest["samples"])

    @property
    def outputs(self) -> list[dict]:
        return list(self.manifest["outputs"])

    @property
    def inputs(self) -> list[dict]:
        return list(self.manifest["inputs"])

    @property
    def artifact(self) -> dict:
        return self.manifest["artifact"]

    @property
    def model_dir(self) -> Path:
        return self.root / MODEL_DIR

    def _tensor(self, folder: str, sample: str, name: str, shape) -> np.ndarray:
        d = self.root / folder / sample
        p = find_tensor(d, name)
        if p is None:
            raise BundleError(f"{d / (name + '.npy')}: missing from the bundle (and no .bin beside it)")
        return read_tensor(p, tuple(shape))

    def input(self, sample: str, entry: dict) -> np.ndarray:
        return self._tensor("inputs", sample, entry["name"], entry["shape"])

    def inputs_of(self, sample: str) -> dict[str, np.ndarray]:
        return {e["name"]: self.input(sample, e) for e in self.inputs}

    def reference(self, sample: str, entry: dict) -> np.ndarray:
        return self._tensor("reference", sample, entry["name"], entry["shape"])

    def ground_truth(self, sample: str) -> tuple[np.ndarray, np.ndarray | None] | None:
        gt = self.manifest.get("ground_truth")
        if not gt:
            return None
        shape = next(e["shape"] for e in self.outputs if e["name"] == gt["output"])
        img = self._tensor("ground_truth", sample, gt["output"], shape)
        blur = None
        if gt.get("blur_map"):
            blur = self._tensor("ground_truth", sample, gt["blur_map"], [shape[0], 1, *shape[2:]])
        return img, blur


def open_bundle(root: str | Path) -> Bundle:
    """Read ``bundle.json``, refuse missing files and names escaping the folder, and record which
    files' sha256 differ from the manifest (a tampered or stale bundle: ``parity check`` names them)."""
    root = Path(root)
    bj = root / BUNDLE_JSON
    if not root.is_dir():
        raise BundleError(f"{root}: no such bundle folder")
    m = read_json(bj, BundleError, "missing (not a parity bundle written by `cli.py parity bundle`)")
    if m.get("schema") != SCHEMA:
        raise BundleError(f"{bj}: schema {m.get('schema')!r}, expected {SCHEMA!r}")
    for k in ("artifact", "samples", "inputs", "outputs", "files"):
        if k not in m:
            raise BundleError(f"{bj}: lacks {k!r}")
    for s in m["samples"]:
        check_name(s, str(bj))
    for e in [*m["inputs"], *m["outputs"]]:
        check_name(e["name"], str(bj))
    changed, missing = [], []
    for rel, digest in m["files"].items():
        p = root / safe_relpath(rel, str(bj))
        if not p.is_file():
            missing.append(rel)
        elif sha256_path(p) != digest:
            changed.append(rel)
    if missing:
        raise BundleError(f"{root}: bundle files missing: {', '.join(missing[:5])}"
                          + (f" (+{len(missing) - 5} more)" if len(missing) > 5 else ""))
    return Bundle(root, m, changed)
