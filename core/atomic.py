"""Atomic output, for every file and folder the tool writes (ARCHITECTURE.md, "Atomic output").

Everything is written to a temporary path beside its destination (same filesystem), then
renamed into place. A failed or interrupted run leaves the previous output as it was and no
half-written file behind:

    with atomic_file(path) as tmp:      # a file
        save(tmp)
    with atomic_dir(folder, replace=True) as tmp:   # a folder, published whole
        write_everything_into(tmp)

Replacing a folder cannot be one rename on Linux, so the old folder is first renamed aside, the
new one renamed in, and only then the old one deleted; if the second rename fails the old folder
is renamed back. (A process killed between the two renames leaves the previous output at
``.<name>.old-<id>`` beside it: nothing is lost, but it has to be renamed back by hand.)
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Iterator

from .errors import UserError


class OutputExistsError(UserError):
    """The destination exists and replacing it was not asked for."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed to ``path`` (with the
    permissions a plain ``open`` would give under the process's umask)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial" + path.suffix, dir=path.parent)
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> Path:
    with atomic_file(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: str | Path, data, **kwargs) -> Path:
    """JSON (indent 1, no NaN/inf: they are not JSON) written atomically."""
    kwargs.setdefault("indent", 1)
    kwargs.setdefault("allow_nan", False)
    return write_text(path, json.dumps(data, **kwargs))


def write_image(path: str | Path, image, what: str = "image") -> Path:
    """An image file (format from the suffix: 8/16-bit PNG...) through OpenCV, written atomically;
    OSError naming the file when OpenCV cannot write it."""
    import cv2

    with atomic_file(path) as tmp:
        if not cv2.imwrite(str(tmp), image):
            raise OSError(f"{path}: could not write the {what}")
    return Path(path)


def is_nonempty(path: Path) -> bool:
    return path.exists() and (not path.is_dir() or any(path.iterdir()))


@contextlib.contextmanager
def atomic_dir(final: str | Path, replace: bool = False, what: str = "output",
               error: type[UserError] = UserError) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``final``; when the block ends without an error it
    becomes ``final`` (an existing non-empty ``final`` is replaced only with ``replace``, which
    the CLI spells ``--force``). On any error the temporary folder is deleted and ``final`` is
    untouched. A folder that cannot be written raises ``error`` (the caller's error class)."""
    final = Path(final)
    if is_nonempty(final) and not replace:
        raise OutputExistsError(f"{final} exists and is not empty; choose another --out or pass --force to replace it")
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=final.parent))
    except OSError as exc:
        raise error(f"cannot write the {what} to {final.parent}: {exc.strerror or exc}") from None
    try:
        yield work
        os.chmod(work, 0o777 & ~_umask())  # mkdtemp makes 0700 folders; give what mkdir would
        _publish(work, final)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _publish(work: Path, final: Path) -> None:
    old = None
    if final.exists() or final.is_symlink():
        old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
        os.rename(final, old)
    try:
        os.rename(work, final)
    except BaseException:
        if old is not None:
            os.rename(old, final)
        raise
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)
