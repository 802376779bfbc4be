"""PSF banks: left/right DP kernels over a signed-radius grid x parameter sets, in one file.

File format (``.npz``, read with ``allow_pickle=False``):
- ``header``: a 0-d unicode array holding JSON: ``schema_version``, ``format``, ``camera``,
  ``radii`` (px, signed), ``params`` (list of PSF parameter dicts), ``kernel_size``,
  ``left_right_convention``, ``provenance`` (who made it, from what);
- ``radii`` float64 [R]; ``left`` and ``right`` float32 [P, R, k, k] (each kernel sums to 1/2).
Written by ``calibration`` (model banks now, fitted banks from captures later), read by
``synth``.
"""
from __future__ import annotations

import json
import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from calibration.dp_psf import LEFT_RIGHT_CONVENTION, PSFParams, dual_pixel_psf
from core.atomic import atomic_file
from core.errors import UserError

SCHEMA_VERSION = 1
FORMAT = "dp-psf-bank"


class PSFBankError(UserError):
    """A PSF bank file that is missing, corrupt, foreign or of an unsupported version."""


@dataclass
class PSFBank:
    radii: np.ndarray  # [R] signed CoC radii in px, strictly increasing
    params: list[dict]  # [P] PSF parameter dicts (PSFParams fields for model banks)
    left: np.ndarray  # [P, R, k, k]
    right: np.ndarray  # [P, R, k, k]
    camera: str = "generic"
    provenance: dict = field(default_factory=dict)
    convention: str = LEFT_RIGHT_CONVENTION

    @property
    def kernel_size(self) -> int:
        return int(self.left.shape[-1])

    @classmethod
    def from_model(cls, radii: Sequence[float], param_sets: Sequence[PSFParams], *,
                   camera: str = "generic", kernel_size: int | None = None) -> "PSFBank":
        """Tabulate the Butterworth DP model (seed 004, eq. 2-4) on a radius grid."""
        radii = np.asarray(sorted(set(float(r) for r in radii)), dtype=np.float64)
        if radii.size == 0:
            raise PSFBankError("a PSF bank needs at least one radius")
        k = kernel_size or 2 * (math.ceil(np.abs(radii).max()) + 1) + 1
        left = np.zeros((len(param_sets), radii.size, k, k), np.float32)
        right = np.zeros_like(left)
        for p, prm in enumerate(param_sets):
            for i, r in enumerate(radii):
                left[p, i], right[p, i] = dual_pixel_psf(float(r), prm, k)
        return cls(radii, [prm.to_dict() for prm in param_sets], left, right, camera,
                   {"source": "butterworth-model", "equations": "seed 004 eq. 2-4"})

    def psf(self, radius: float, param_index: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Left/right kernels for any radius inside the grid, linearly interpolated between the
        two nearest tabulated radii (keeps each half summing to 1/2)."""
        if not self.radii[0] - 1e-9 <= radius <= self.radii[-1] + 1e-9:
            raise PSFBankError(f"radius {radius} px is outside the bank's grid [{self.radii[0]}, {self.radii[-1]}]")
        j = int(np.clip(np.searchsorted(self.radii, radius), 1, max(self.radii.size - 1, 1)))
        if self.radii.size == 1:
            return self.left[param_index, 0].astype(np.float64), self.right[param_index, 0].astype(np.float64)
        r0, r1 = self.radii[j - 1], self.radii[j]
        t = float(np.clip((radius - r0) / (r1 - r0), 0.0, 1.0))
        mix = lambda a: (1 - t) * a[param_index, j - 1].astype(np.float64) + t * a[param_index, j].astype(np.float64)
        return mix(self.left), mix(self.right)

    def header(self) -> dict:
        return {
            "schema_version": SCHEMA_VERSION, "format": FORMAT, "camera": self.camera,
            "radii": [float(r) for r in self.radii], "params": self.params,
            "kernel_size": self.kernel_size, "left_right_convention": self.convention,
            "provenance": self.provenance,
        }

    def save(self, path: str | Path) -> Path:
        """Write atomically (temp file in the same folder, then rename)."""
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_suffix(".npz")
        with atomic_file(path) as tmp, open(tmp, "wb") as fh:
            np.savez_compressed(fh, header=np.array(json.dumps(self.header())), radii=self.radii,
                                left=self.left.astype(np.float32), right=self.right.astype(np.float32))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "PSFBank":
        path = Path(path)
        if not path.is_file():
            raise PSFBankError(f"{path}: PSF bank file not found")
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
            raise PSFBankError(f"{path}: not a readable PSF bank (.npz) file: {exc}") from None
        missing = {"header", "radii", "left", "right"} - set(arrays)
        if missing:
            raise PSFBankError(f"{path}: not a PSF bank: missing {sorted(missing)}")
        try:
            header = json.loads(str(arrays["header"]))
        except json.JSONDecodeError as exc:
            raise PSFBankError(f"{path}: PSF bank header is not JSON ({exc})") from None
        if header.get("format") != FORMAT:
            raise PSFBankError(f"{path}: foreign file (format {header.get('format')!r}, expected {FORMAT!r})")
        if header.get("schema_version") != SCHEMA_VERSION:
            raise PSFBankError(f"{path}: PSF bank schema version {header.get('schema_version')} "
                               f"is not supported (this tool reads version {SCHEMA_VERSION})")
        radii, left, right = arrays["radii"], arrays["left"], arrays["right"]
        p, r = len(header.get("params", [])), radii.size
        k = header.get("kernel_size")
        if left.shape != (p, r, k, k) or right.shape != left.shape:
            raise PSFBankError(f"{path}: kernel arrays {left.shape}/{right.shape} do not match the header "
                               f"({p} parameter sets x {r} radii x {k}x{k})")
        if not (np.all(np.isfinite(left)) and np.all(np.isfinite(right))):
            raise PSFBankError(f"{path}: PSF bank holds NaN or infinite values")
        if r > 1 and np.any(np.diff(radii) <= 0):
            raise PSFBankError(f"{path}: radii must be strictly increasing")
        return cls(radii.astype(np.float64), header["params"], left, right, header.get("camera", "generic"),
                   header.get("provenance", {}), header.get("left_right_convention", LEFT_RIGHT_CONVENTION))
