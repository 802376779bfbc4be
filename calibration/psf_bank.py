"""PSF banks: left/right DP kernels over a signed-radius grid x parameter sets, in one file.

File format (``.npz``, read with ``allow_pickle=False``):
- ``header``: a 0-d unicode array holding JSON: ``schema_version``, ``format``, ``camera``,
  ``radii`` (px, signed), ``params`` (list of PSF parameter dicts), ``kernel_size``,
  ``left_right_convention``, ``provenance`` (who made it, from what);
- ``radii`` float64 [R]; ``left`` and ``right`` float32 [P, R, k, k] (each kernel sums to 1/2).

Schema 2 (banks calibrated on a device, ``calibrate fit``) adds, all optional:
- a field grid (header ``field``: rows, cols, mode, crop/frame of the calibration): arrays
  ``field_params`` float64 [rows, cols, 4] (order, alpha, beta, kappa of the Butterworth model
  per cell), ``field_gain`` [rows, cols] (the cell's |radius| relative to the field's median at
  the same focus setting), ``field_ncc`` [rows, cols] (fit quality), and for ``mode ==
  "kernels"`` the measured kernels ``field_left`` / ``field_right`` float32 [rows, cols, F, F]
  (each summing to 1; the pair's combined centroid at the array centre) with their signed radius ``field_ref_radius``
  [rows, cols]: other defocus levels are these magnified by r / ref_radius (Xin et al.);
- per-view vignetting gain maps ``vignetting_left`` / ``vignetting_right`` float32 [h, w]
  (1 = no fall-off) over the frame.
Schema 1 files (no field grid) still load. Written by ``calibration``, read by ``synth``.
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

SCHEMA_VERSION = 2
READABLE_SCHEMAS = (1, 2)
FORMAT = "dp-psf-bank"
FIELD_MODES = ("params", "kernels")


class PSFBankError(UserError):
    """A PSF bank file that is missing, corrupt, foreign or of an unsupported version."""


@dataclass
class FieldGrid:
    """Field-varying PSFs over a rows x cols grid of the frame (cell (i, j) covers rows
    i*H/rows..(i+1)*H/rows of whatever image is rendered: the calibrated region is stretched over
    it)."""

    params: np.ndarray  # [rows, cols, 4]: order, alpha, beta, kappa
    gain: np.ndarray  # [rows, cols]: |radius| of the cell / the field's median |radius|
    ncc: np.ndarray | None = None  # [rows, cols] fit quality
    mode: str = "params"
    left: np.ndarray | None = None  # [rows, cols, F, F] measured kernels (mode "kernels")
    right: np.ndarray | None = None
    ref_radius: np.ndarray | None = None  # [rows, cols] their signed radius
    meta: dict = field(default_factory=dict)  # crop, frame, source

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.params.shape[0]), int(self.params.shape[1])

    def cell_params(self, i: int, j: int) -> PSFParams:
        n, a, b, k = (float(v) for v in self.params[i, j])
        return PSFParams(max(1, int(round(n))), a, b, k)


@dataclass
class PSFBank:
    radii: np.ndarray  # [R] signed CoC radii in px, strictly increasing
    params: list[dict]  # [P] PSF parameter dicts (PSFParams fields for model banks)
    left: np.ndarray  # [P, R, k, k]
    right: np.ndarray  # [P, R, k, k]
    camera: str = "generic"
    provenance: dict = field(default_factory=dict)
    convention: str = LEFT_RIGHT_CONVENTION
    field: FieldGrid | None = None
    vignetting: dict[str, np.ndarray] | None = None  # "left"/"right" -> gain map

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
        head = {
            "schema_version": SCHEMA_VERSION, "format": FORMAT, "camera": self.camera,
            "radii": [float(r) for r in self.radii], "params": self.params,
            "kernel_size": self.kernel_size, "left_right_convention": self.convention,
            "provenance": self.provenance,
        }
        if self.field is not None:
            rows, cols = self.field.shape
            head["field"] = {"rows": rows, "cols": cols, "mode": self.field.mode, **self.field.meta}
        head["vignetting"] = bool(self.vignetting)
        return head

    def arrays(self) -> dict[str, np.ndarray]:
        out = {"radii": self.radii, "left": self.left.astype(np.float32), "right": self.right.astype(np.float32)}
        f = self.field
        if f is not None:
            out.update(field_params=f.params.astype(np.float64), field_gain=f.gain.astype(np.float64))
            if f.ncc is not None:
                out["field_ncc"] = f.ncc.astype(np.float64)
            if f.mode == "kernels":
                out.update(field_left=f.left.astype(np.float32), field_right=f.right.astype(np.float32),
                           field_ref_radius=f.ref_radius.astype(np.float64))
        for view, gain in (self.vignetting or {}).items():
            out[f"vignetting_{view}"] = gain.astype(np.float32)
        return out

    def save(self, path: str | Path) -> Path:
        """Write atomically (temp file in the same folder, then rename)."""
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_suffix(".npz")
        with atomic_file(path) as tmp, open(tmp, "wb") as fh:
            np.savez_compressed(fh, header=np.array(json.dumps(self.header())), **self.arrays())
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
        if header.get("schema_version") not in READABLE_SCHEMAS:
            raise PSFBankError(f"{path}: PSF bank schema version {header.get('schema_version')} "
                               f"is not supported (this tool reads versions {', '.join(map(str, READABLE_SCHEMAS))})")
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
                   header.get("provenance", {}), header.get("left_right_convention", LEFT_RIGHT_CONVENTION),
                   _load_field(path, header, arrays), _load_vignetting(path, arrays))


def _load_field(path: Path, header: dict, arrays: dict) -> FieldGrid | None:
    spec = header.get("field")
    if not spec:
        return None
    rows, cols, mode = spec.get("rows"), spec.get("cols"), spec.get("mode", "params")
    if mode not in FIELD_MODES:
        raise PSFBankError(f"{path}: unknown field mode {mode!r} (expected one of {', '.join(FIELD_MODES)})")
    need = {"field_params", "field_gain"} | ({"field_left", "field_right", "field_ref_radius"}
                                              if mode == "kernels" else set())
    missing = need - set(arrays)
    if missing:
        raise PSFBankError(f"{path}: field grid is missing {sorted(missing)}")
    params, gain = arrays["field_params"], arrays["field_gain"]
    if params.shape != (rows, cols, 4) or gain.shape != (rows, cols):
        raise PSFBankError(f"{path}: field arrays {params.shape}/{gain.shape} do not match the {rows}x{cols} grid")
    checked = [params, gain] + [arrays[k] for k in ("field_left", "field_right", "field_ref_radius") if k in arrays]
    if not all(np.all(np.isfinite(a)) for a in checked):
        raise PSFBankError(f"{path}: field grid holds NaN or infinite values")
    left = right = ref = None
    if mode == "kernels":
        left, right, ref = arrays["field_left"], arrays["field_right"], arrays["field_ref_radius"]
        if left.shape[:2] != (rows, cols) or right.shape != left.shape or ref.shape != (rows, cols):
            raise PSFBankError(f"{path}: field kernels {left.shape}/{right.shape} do not match the {rows}x{cols} grid")
    meta = {k: v for k, v in spec.items() if k not in ("rows", "cols", "mode")}
    return FieldGrid(params.astype(np.float64), gain.astype(np.float64), arrays.get("field_ncc"), mode,
                     left, right, ref, meta)


def _load_vignetting(path: Path, arrays: dict) -> dict[str, np.ndarray] | None:
    vig = {v: arrays[f"vignetting_{v}"] for v in ("left", "right") if f"vignetting_{v}" in arrays}
    if not vig:
        return None
    if set(vig) != {"left", "right"} or vig["left"].shape != vig["right"].shape or vig["left"].ndim != 2:
        raise PSFBankError(f"{path}: vignetting maps must be a left/right pair of equal 2-D shape")
    if not all(np.all(np.isfinite(g)) and (g > 0).all() for g in vig.values()):
        raise PSFBankError(f"{path}: vignetting maps must be finite and positive")
    return vig
