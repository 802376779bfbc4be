"""Tensor files of a parity bundle: raw little-endian float32 ``.bin`` (what a phone app writes
most easily) plus ``.npy`` (what Python reads safely), and their checked readers.

A ``.bin`` holds the tensor's values in C order (row-major, last axis fastest) for the shape and
layout the bundle manifest gives, 4 bytes each, little-endian IEEE-754, no header. ``.npy`` is
read with ``allow_pickle=False``. Every reader checks dtype and size against the manifest and
raises :class:`BundleError` naming the file.
"""
from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

import numpy as np

from core.errors import UserError

DTYPE = np.dtype("<f4")  # float32, little-endian: the only tensor dtype of a bundle
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


class BundleError(UserError):
    """A parity bundle or a phone's outputs folder that cannot be used (missing or extra files,
    wrong dtype or size, a name escaping the folder, a checksum that does not match)."""


def check_name(name: str, where: str) -> str:
    """A tensor or sample name used as a file name: no separators, no '..', no leading dot."""
    if not isinstance(name, str) or not _NAME.match(name) or ".." in name:
        raise BundleError(f"{where}: name {name!r} cannot be a file name (letters, digits, _ . - only)")
    return name


def safe_relpath(rel: str, where: str) -> PurePosixPath:
    """A relative path from a manifest that stays inside its folder (no absolute path, no '..')."""
    p = PurePosixPath(str(rel))
    if p.is_absolute() or ".." in p.parts or str(rel).startswith(("/", "\\")) or "\\" in str(rel) or not p.parts:
        raise BundleError(f"{where}: file name {rel!r} escapes the bundle folder")
    return p


def write_tensor(folder: Path, name: str, a: np.ndarray) -> list[Path]:
    """``name.bin`` (raw little-endian float32, C order) and ``name.npy``; returns both paths."""
    folder.mkdir(parents=True, exist_ok=True)
    arr = np.ascontiguousarray(a, dtype=DTYPE)
    b, n = folder / f"{name}.bin", folder / f"{name}.npy"
    b.write_bytes(arr.tobytes(order="C"))
    np.save(n, arr, allow_pickle=False)
    return [b, n]


def _bin_size_hint(nbytes: int, count: int) -> str:
    if nbytes == 2 * count:
        return " (2 bytes per value: float16? the bundle wants float32)"
    if nbytes == count:
        return " (1 byte per value: uint8? the bundle wants float32)"
    if nbytes == 8 * count:
        return " (8 bytes per value: float64? the bundle wants float32)"
    return ""


def read_bin(path: Path, shape: tuple) -> np.ndarray:
    """A raw ``.bin`` of float32 little-endian values for ``shape``; BundleError on a size mismatch."""
    count = int(np.prod(shape))
    nbytes = path.stat().st_size
    if nbytes != count * DTYPE.itemsize:
        raise BundleError(f"{path}: {nbytes} bytes, expected {count * DTYPE.itemsize} (float32 little-endian "
                          f"{'x'.join(map(str, shape))}){_bin_size_hint(nbytes, count)}")
    return np.fromfile(path, dtype=DTYPE).reshape(shape).astype(np.float32)


def read_npy(path: Path, shape: tuple | None = None) -> np.ndarray:
    """A ``.npy`` (no pickles) of float32 values; with ``shape`` its element count must match (the
    shape itself is left to the caller: a layout swap is diagnosed, not refused)."""
    try:
        a = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise BundleError(f"{path}: not a readable .npy file ({exc})") from None
    if a.dtype != np.float32:
        raise BundleError(f"{path}: dtype {a.dtype}, the bundle wants float32")
    if shape is not None and a.size != int(np.prod(shape)):
        raise BundleError(f"{path}: shape {tuple(a.shape)} holds {a.size} values, expected "
                          f"{int(np.prod(shape))} ({'x'.join(map(str, shape))})")
    return a


def find_tensor(folder: Path, name: str) -> Path | None:
    """``name.npy`` when present, else ``name.bin``, else None."""
    for suffix in (".npy", ".bin"):
        p = folder / f"{name}{suffix}"
        if p.is_file():
            return p
    return None


def read_tensor(path: Path, shape: tuple) -> np.ndarray:
    return read_npy(path, shape) if path.suffix == ".npy" else read_bin(path, shape)
