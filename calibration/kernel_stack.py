"""Kernel stacks: measured left/right DP kernels on a grid of field patches, and their folder.

A stack is one capture's kernels, ``[P, F, F]`` per view, P = rows x cols patches indexed
row-major (``row * cols + col``), each kernel summing to 1 (the layout of Xin et al., ICCV 2021:
the Pixel 4 calibration is ``[48, 61, 61]``, a 6 x 8 grid of 168-px patches over the central
1008 x 1344 crop). Measured kernels are rarely centred in their array (the public Pixel 4 ones
sit about 1 px off), so every kernel's centroid is found and recorded: deconvolving with an
off-centre kernel shifts the image.

The kernels folder (``calibrate import`` / ``calibrate estimate`` write it, ``calibrate fit``
reads it):
- ``kernels.json``: ``format`` = ``dp-kernel-stack``, ``schema_version``, ``grid`` [rows, cols],
  ``patch`` (px), ``crop`` [y, x, h, w] of the grid in the frame (or null), ``frame`` [H, W]
  (or null), ``kernel_size``, ``captures`` (one entry per capture: ``name``, ``focus`` (a focus
  setting label or value, or null), ``left`` / ``right`` (.npy file names), ``centres_left`` /
  ``centres_right`` ([P, 2] centroid (dy, dx) from the array centre, px), optional per-patch
  ``confidence`` / ``residual`` / ``saturation`` / ``texture``), ``vignetting`` (file names of
  per-view gain maps, or null) and ``provenance``;
- ``<capture>_left.npy`` / ``<capture>_right.npy``: float32 [P, F, F];
- ``vignetting_left.npy`` / ``vignetting_right.npy`` (optional): float32 gain maps of the frame.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from core.atomic import atomic_dir
from core.errors import UserError

FORMAT = "dp-kernel-stack"
SCHEMA_VERSION = 1
MANIFEST = "kernels.json"
SUM_TOLERANCE = 1e-3


class KernelStackError(UserError):
    """A kernel stack or kernels folder that cannot be used (shape, sum, values, missing files)."""


@dataclass
class Capture:
    """One capture's kernels: left/right [P, F, F] float32, and per-patch diagnostics."""

    name: str
    left: np.ndarray
    right: np.ndarray
    focus: float | str | None = None
    diagnostics: dict = field(default_factory=dict)  # name -> list[P] (confidence, residual...)

    @property
    def centres_left(self) -> np.ndarray:
        return np.array([kernel_centre(k) for k in self.left])

    @property
    def centres_right(self) -> np.ndarray:
        return np.array([kernel_centre(k) for k in self.right])


@dataclass
class KernelSet:
    """A kernels folder in memory: the grid, its place in the frame, captures, vignetting."""

    grid: tuple[int, int]
    patch: int
    captures: list[Capture]
    crop: tuple[int, int, int, int] | None = None
    frame: tuple[int, int] | None = None
    vignetting: dict[str, np.ndarray] | None = None  # "left"/"right" -> gain map
    provenance: dict = field(default_factory=dict)

    @property
    def kernel_size(self) -> int:
        return int(self.captures[0].left.shape[-1])

    def cell_centres(self) -> np.ndarray:
        """[P, 2] (y, x) of each patch centre in frame pixels (crop origin + grid position)."""
        rows, cols = self.grid
        y0, x0 = (self.crop[0], self.crop[1]) if self.crop else (0, 0)
        ii, jj = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
        return np.stack([y0 + (ii.ravel() + 0.5) * self.patch, x0 + (jj.ravel() + 0.5) * self.patch], 1)

    def normalised_radius(self) -> np.ndarray:
        """[P] distance of each patch centre from the frame centre (crop centre without a frame),
        divided by the half-diagonal: 0 at the centre, 1 in a corner."""
        if self.frame:
            h, w = self.frame
            cy, cx = h / 2, w / 2
        else:
            y0, x0, h, w = self.crop or (0, 0, self.grid[0] * self.patch, self.grid[1] * self.patch)
            cy, cx = y0 + h / 2, x0 + w / 2
        c = self.cell_centres()
        return np.hypot(c[:, 0] - cy, c[:, 1] - cx) / math.hypot(h / 2, w / 2)

    def save(self, out: str | Path, force: bool = False) -> Path:
        """Write the folder atomically (nothing half-written on failure)."""
        out = Path(out)
        with atomic_dir(out, replace=force, what="kernels folder", error=KernelStackError) as tmp:
            entries = []
            for cap in self.captures:
                safe = _safe_name(cap.name)
                np.save(tmp / f"{safe}_left.npy", cap.left.astype(np.float32))
                np.save(tmp / f"{safe}_right.npy", cap.right.astype(np.float32))
                entries.append({
                    "name": cap.name, "focus": cap.focus, "left": f"{safe}_left.npy", "right": f"{safe}_right.npy",
                    "centres_left": np.round(cap.centres_left, 4).tolist(),
                    "centres_right": np.round(cap.centres_right, 4).tolist(),
                    **{k: [float(x) for x in v] for k, v in cap.diagnostics.items()},
                })
            vig = None
            if self.vignetting:
                vig = {}
                for view, gain in self.vignetting.items():
                    np.save(tmp / f"vignetting_{view}.npy", gain.astype(np.float32))
                    vig[view] = f"vignetting_{view}.npy"
            manifest = {"format": FORMAT, "schema_version": SCHEMA_VERSION, "grid": list(self.grid),
                        "patch": self.patch, "crop": list(self.crop) if self.crop else None,
                        "frame": list(self.frame) if self.frame else None, "kernel_size": self.kernel_size,
                        "captures": entries, "vignetting": vig, "provenance": self.provenance}
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
        return out

    @classmethod
    def load(cls, folder: str | Path) -> "KernelSet":
        folder = Path(folder)
        path = folder / MANIFEST
        if not path.is_file():
            raise KernelStackError(f"{folder}: not a kernels folder (no {MANIFEST}); make one with "
                                   "`calibrate import` or `calibrate estimate`")
        try:
            m = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise KernelStackError(f"{path}: not JSON ({exc})") from None
        if m.get("format") != FORMAT:
            raise KernelStackError(f"{path}: foreign file (format {m.get('format')!r}, expected {FORMAT!r})")
        if m.get("schema_version") != SCHEMA_VERSION:
            raise KernelStackError(f"{path}: schema version {m.get('schema_version')} is not supported "
                                   f"(this tool reads version {SCHEMA_VERSION})")
        rows, cols = m["grid"]
        caps = []
        for e in m["captures"]:
            left = validate_stack(_load_npy(folder, e["left"]), folder / e["left"], rows, cols)
            right = validate_stack(_load_npy(folder, e["right"]), folder / e["right"], rows, cols)
            if left.shape != right.shape:
                raise KernelStackError(f"{folder / e['left']} {left.shape} and {folder / e['right']} "
                                       f"{right.shape}: left and right stacks differ in shape")
            diag = {k: e[k] for k in ("confidence", "residual", "saturation", "texture") if k in e}
            caps.append(Capture(e["name"], left, right, e.get("focus"), diag))
        if not caps:
            raise KernelStackError(f"{path}: lists no captures")
        sizes = {c.left.shape for c in caps}
        if len(sizes) > 1:
            raise KernelStackError(f"{path}: captures hold stacks of different shapes {sorted(sizes)}")
        vig = None
        if m.get("vignetting"):
            vig = {view: _load_npy(folder, name).astype(np.float32) for view, name in m["vignetting"].items()}
        return cls((rows, cols), int(m["patch"]), caps, tuple(m["crop"]) if m.get("crop") else None,
                   tuple(m["frame"]) if m.get("frame") else None, vig, m.get("provenance", {}))


def _safe_name(name: str) -> str:
    """A capture name as a file name inside the folder (no path separators, no escaping)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(name)).strip("._") or "capture"
    return safe


def _load_npy(folder: Path, name: str) -> np.ndarray:
    path = (folder / name)
    if Path(name).name != name:
        raise KernelStackError(f"{folder / MANIFEST}: file name {name!r} points outside the folder")
    return load_npy(path)


def load_npy(path: str | Path) -> np.ndarray:
    """A ``.npy`` array (never pickled objects); a clear error naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise KernelStackError(f"{path}: kernel file not found")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise KernelStackError(f"{path}: not a readable .npy array ({exc})") from None


def validate_stack(stack: np.ndarray, path: str | Path, rows: int, cols: int,
                   tolerance: float = SUM_TOLERANCE) -> np.ndarray:
    """Check a kernel stack: [P, F, F] float, P == rows * cols, finite, non-negative (tiny
    negative float noise below 1e-6 of the peak is clipped), each kernel summing to 1 within
    ``tolerance``. Returns it as float32; errors name the file and the first bad kernel."""
    if stack.ndim != 3 or stack.shape[1] != stack.shape[2]:
        raise KernelStackError(f"{path}: expected a [P, F, F] stack of square kernels, got shape {stack.shape}")
    if not np.issubdtype(stack.dtype, np.floating):
        raise KernelStackError(f"{path}: kernels must be floating point, got {stack.dtype}")
    if stack.shape[0] != rows * cols:
        raise KernelStackError(f"{path}: {stack.shape[0]} kernels, but the grid {rows}x{cols} needs {rows * cols}")
    if stack.shape[1] < 3:
        raise KernelStackError(f"{path}: kernels of {stack.shape[1]}x{stack.shape[2]} px are too small")
    bad = ~np.isfinite(stack).all(axis=(1, 2))
    if bad.any():
        raise KernelStackError(f"{path}: kernel {int(np.argmax(bad))} holds NaN or infinite values")
    peak = np.abs(stack).max(axis=(1, 2), keepdims=True)
    neg = (stack < -1e-6 * np.maximum(peak, 1e-30)).any(axis=(1, 2))
    if neg.any():
        i = int(np.argmax(neg))
        raise KernelStackError(f"{path}: kernel {i} has negative values (min {float(stack[i].min()):.3g}); "
                               "kernels must be non-negative")
    sums = stack.astype(np.float64).sum(axis=(1, 2))
    off = np.abs(sums - 1.0) > tolerance
    if off.any():
        i = int(np.argmax(off))
        raise KernelStackError(f"{path}: kernel {i} sums to {sums[i]:.6f}, not 1 (tolerance {tolerance:g}); "
                               f"{int(off.sum())} of {len(sums)} kernels are off")
    return np.clip(stack, 0, None).astype(np.float32)


def kernel_centre(kernel: np.ndarray) -> tuple[float, float]:
    """Sub-pixel centroid (dy, dx) of a kernel relative to its array centre (F // 2), in px."""
    k = np.asarray(kernel, np.float64)
    total = k.sum()
    if total <= 0:
        return 0.0, 0.0
    cy, cx = ndimage.center_of_mass(k)
    c = k.shape[0] // 2
    return float(cy - c), float(cx - c)


def import_stacks(left_path: str | Path, right_path: str | Path, grid: tuple[int, int], patch: int,
                  crop: tuple[int, int, int, int] | None = None, name: str = "imported",
                  focus: float | str | None = None, tolerance: float = SUM_TOLERANCE) -> KernelSet:
    """Read and validate a left/right pair of stacks measured elsewhere (``calibrate import``)."""
    rows, cols = grid
    if rows < 1 or cols < 1:
        raise KernelStackError(f"--grid must be at least 1x1, got {rows}x{cols}")
    if patch < 1:
        raise KernelStackError(f"--patch must be >= 1 px, got {patch}")
    left = validate_stack(load_npy(left_path), left_path, rows, cols, tolerance)
    right = validate_stack(load_npy(right_path), right_path, rows, cols, tolerance)
    if left.shape != right.shape:
        raise KernelStackError(f"{left_path} {left.shape} and {right_path} {right.shape}: left and right "
                               "stacks differ in shape")
    if crop is not None:
        y, x, h, w = crop
        if min(y, x) < 0 or h != rows * patch or w != cols * patch:
            raise KernelStackError(f"--crop {y},{x},{h},{w} does not hold a {rows}x{cols} grid of {patch}-px "
                                   f"patches (needs h={rows * patch}, w={cols * patch}, y, x >= 0)")
    prov = {"source": "import", "left": str(left_path), "right": str(right_path)}
    return KernelSet((rows, cols), patch, [Capture(name, left, right, focus)], crop, None, None, prov)


def parse_crop(text: str | None) -> tuple[int, int, int, int] | None:
    """``"y,x,h,w"`` -> a tuple of four ints."""
    if text is None:
        return None
    parts = text.split(",")
    try:
        vals = tuple(int(p) for p in parts)
    except ValueError:
        vals = ()
    if len(vals) != 4:
        raise KernelStackError(f"--crop must be y,x,h,w (four integers), got {text!r}")
    return vals  # type: ignore[return-value]


def magnify_kernel(kernel: np.ndarray, scale: float, size: int | None = None,
                   centre: tuple[float, float] | None = None, supersample: int = 4) -> np.ndarray:
    """The kernel at another defocus: magnified by ``|scale|`` about its centroid, rotated by 180
    degrees when ``scale < 0`` (Xin et al.: depth acts as a signed kernel scale), resampled into
    a ``size`` x ``size`` array (odd; default fits the result) with the centroid at the array
    centre, renormalised to the input's sum. Area-weighted (``supersample``^2 samples per output
    pixel), so shrinking does not alias; |scale| too small for one pixel gives a delta. For a DP
    pair pass the pair's common ``centre`` (e.g. the centroid of left + right): recentring each view
    on its own centroid would erase the disparity."""
    k = np.asarray(kernel, np.float64)
    total = float(k.sum())
    f = k.shape[0]
    s = abs(float(scale))
    if size is None:
        size = max(3, 2 * math.ceil(s * f / 2) + 1)
    if size % 2 == 0:
        raise ValueError(f"kernel size must be odd, got {size}")
    out = np.zeros((size, size))
    if s * f < 1.0:  # the whole kernel fits in one pixel
        out[size // 2, size // 2] = total
        return out
    cy, cx = centre if centre is not None else kernel_centre(k)
    c_in = f // 2
    q = int(min(32, max(supersample, math.ceil(2.0 / s))))  # <= half an input pixel per sample
    grid = (np.arange(size * q) + 0.5) / q - 0.5 - size // 2  # output coords relative to centre
    yy, xx = np.meshgrid(grid, grid, indexing="ij")
    if scale < 0:
        yy, xx = -yy, -xx
    src_y = c_in + cy + yy / s
    src_x = c_in + cx + xx / s
    # the input is a density per pixel: sample a density (k / 1 px^2) then integrate
    samples = ndimage.map_coordinates(k, [src_y, src_x], order=1, mode="constant", cval=0.0)
    out = samples.reshape(size, q, size, q).sum(axis=(1, 3))
    if out.sum() <= 0:
        out[size // 2, size // 2] = 1.0
    return out * (total / out.sum())


def cell_windows(wy: np.ndarray, wx: np.ndarray, margin: int):
    """Yield ``(i, j, y0, y1, x0, x1)`` for every field cell (i, j): the rows and columns where
    its blending ramps ``wy[i]`` / ``wx[j]`` are non-zero, widened by ``margin`` (a kernel's
    reach) and clipped to the image. Shared by the field-varying renderer and the classical
    per-patch deblur, which both work cell by cell and blend across the borders."""
    h, w = wy.shape[-1], wx.shape[-1]
    for i in range(wy.shape[0]):
        ys = np.nonzero(wy[i] > 0)[0]
        y0, y1 = max(int(ys[0]) - margin, 0), min(int(ys[-1]) + 1 + margin, h)
        for j in range(wx.shape[0]):
            xs = np.nonzero(wx[j] > 0)[0]
            yield i, j, y0, y1, max(int(xs[0]) - margin, 0), min(int(xs[-1]) + 1 + margin, w)
