"""``parity host``: a bundle through every runner this host has, before it goes to a phone.

The runners: the artifact's own runtime (``runtime_py.runners.load`` on the bundle's ``model/``,
at 1 thread), each with the outputs written exactly as the app would write them
(``outputs/<sample>/<name>.bin``, plus ``run.json``) and checked by ``device_tests.check``; and
PyTorch eager from the artifact's checkpoint (the reference itself: proves the bundle's
references are reproducible). A runtime that cannot exist here (Core ML off macOS) is listed
with its reason.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from .bundle import RUN_JSON, Bundle, float_model, open_bundle
from .check import check
from .tensors import write_tensor


def write_app_outputs(bundle: Bundle, run, folder: Path, runtime: str) -> Path:
    """Run every bundle sample through ``run`` and write ``folder`` as a phone app would
    (raw ``.bin`` only, plus ``run.json`` naming the model file's sha256)."""
    import json

    folder.mkdir(parents=True, exist_ok=True)
    for s in bundle.samples:
        outs = run(bundle.inputs_of(s))
        for e in bundle.outputs:
            write_tensor(folder / s, e["name"], outs[e["name"]])
            (folder / s / f"{e['name']}.npy").unlink()
    (folder / RUN_JSON).write_text(json.dumps({"artifact_sha256": bundle.artifact.get("artifact_sha256"),
                                               "runtime": runtime, "device": "host"}))
    return folder


REFERENCE_RUNTIME = "PyTorch eager fp32 (checkpoint)"


def runners_for(bundle: Bundle) -> list[tuple[str, object, str | None]]:
    """(runtime name, run function or None, reason it cannot run) for every runner of this bundle:
    the artifact's runtime first, then the PyTorch reference (REFERENCE_RUNTIME)."""
    import torch

    from export.parity import torch_run
    from export.targets import get as get_target
    from runtime_py.runners import RunnerError, load

    out = []
    t = get_target(bundle.artifact["target"])
    if t.not_runnable_reason is not None:
        out.append((t.runtime_name, None, t.not_runnable_reason))
    else:
        try:
            out.append((t.runtime_name, load(bundle.model_dir, threads=1), None))
        except RunnerError as exc:
            out.append((t.runtime_name, None, str(exc)))
    try:
        spec, model = float_model(_artifact_manifest(bundle))
        names, outs = [e["name"] for e in bundle.inputs], [e["name"] for e in bundle.outputs]
        torch.manual_seed(0)
        out.append((REFERENCE_RUNTIME, lambda x: torch_run(model, names, outs, x), None))
    except Exception as exc:  # noqa: BLE001 - a missing checkpoint is a row, not a failure
        out.append((REFERENCE_RUNTIME, None, str(exc)))
    return out


def _artifact_manifest(bundle: Bundle) -> dict:
    import json

    return json.loads((bundle.model_dir / "manifest.json").read_text())


def host_parity(bundle_dir: str | Path, out: str | Path | None = None) -> list[dict]:
    """One row per runner: runtime, verdict, worst PSNR, faults (the full checks go under ``out``)."""
    bundle = open_bundle(bundle_dir)
    rows = []
    out = Path(out) if out else Path(str(Path(bundle_dir).resolve()) + ".host")
    with tempfile.TemporaryDirectory(prefix="parity-host-") as tmp:
        for i, (runtime, run, reason) in enumerate(runners_for(bundle)):
            if run is None:
                rows.append({"runtime": runtime, "verdict": "not run", "psnr": None, "reason": reason,
                             "verdicts": {}, "faults": [], "reference": runtime == REFERENCE_RUNTIME})
                continue
            folder = write_app_outputs(bundle, run, Path(tmp) / f"runner{i}", runtime)
            res = check(bundle.root, folder, device="host", out=out / f"runner{i}")
            res["run"] = {"runtime": runtime, "artifact_sha256": bundle.artifact.get("artifact_sha256")}
            rows.append({"runtime": runtime, "verdict": res["verdict"], "psnr": res["worst_psnr_db"], "check": res,
                         "reference": runtime == REFERENCE_RUNTIME,
                         "verdicts": res["verdicts"], "faults": res["faults"], "reason": None,
                         "report_dir": res["report_dir"],
                         "max_abs": max(r["max_abs"] for r in res["results"] if r["max_abs"] is not None)})
    return rows
