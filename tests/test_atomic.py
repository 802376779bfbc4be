"""core.atomic: the previous output survives a failed run (files and folders), nothing
half-written is left behind; and the writers that use it (`run --force`) keep that promise."""
from __future__ import annotations

import os

import cv2
import numpy as np
import pytest

from core.atomic import OutputExistsError, atomic_dir, atomic_file, write_json


_UMASK = os.umask(0)
os.umask(_UMASK)


def _listing(folder):
    return sorted(p.name for p in folder.iterdir())


def test_atomic_file_keeps_the_old_file_when_the_write_fails(tmp_path):
    path = tmp_path / "a.json"
    write_json(path, {"v": 1})
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_file(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert path.read_text() == '{\n "v": 1\n}'
    assert _listing(tmp_path) == ["a.json"]  # no temp file left


def test_atomic_dir_replaces_whole_or_not_at_all(tmp_path):
    out = tmp_path / "out"
    with atomic_dir(out) as tmp:
        (tmp / "old.txt").write_text("old")
    with pytest.raises(OutputExistsError, match="--force"):
        with atomic_dir(out):
            pass
    with pytest.raises(RuntimeError):
        with atomic_dir(out, replace=True) as tmp:
            (tmp / "new.txt").write_text("new")
            raise RuntimeError("crash in the middle")
    assert _listing(out) == ["old.txt"] and _listing(tmp_path) == ["out"]
    with atomic_dir(out, replace=True) as tmp:
        (tmp / "new.txt").write_text("new")
    assert _listing(out) == ["new.txt"] and _listing(tmp_path) == ["out"]
    assert oct(out.stat().st_mode & 0o777) == oct(0o777 & ~_UMASK) and oct((out / "new.txt").stat().st_mode & 0o777) == oct(0o666 & ~_UMASK)


def test_outputs_get_the_permissions_of_the_umask(tmp_path):
    old = os.umask(0o077)
    try:
        write_json(tmp_path / "private.json", {})
        with atomic_dir(tmp_path / "private") as tmp:
            (tmp / "a.txt").write_text("x")
    finally:
        os.umask(old)
    assert (tmp_path / "private.json").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "private").stat().st_mode & 0o777 == 0o700


def test_an_unwritable_destination_is_a_user_error(tmp_path):
    from core.errors import UserError

    (tmp_path / "a_file").write_text("")
    with pytest.raises(UserError, match="cannot write"):
        write_json(tmp_path / "a_file" / "x.json", {})


def test_run_force_crash_keeps_the_previous_outputs(tmp_path, monkeypatch):
    """`cli.py run --force` writes through run_capture.write_outputs: a crash while writing the new
    outputs leaves the previous folder byte for byte."""
    from runtime_py import run_capture

    inputs = {"left": np.full((1, 3, 16, 16), 0.2, np.float32), "right": np.full((1, 3, 16, 16), 0.6, np.float32),
              "focus_mask": np.ones((1, 1, 16, 16), np.float32)}
    outputs = {"all_in_focus": np.full((1, 3, 16, 16), 0.5, np.float32),
               "refocused": np.full((1, 3, 16, 16), 0.5, np.float32), "defocus": np.zeros((1, 1, 16, 16), np.float32)}
    out = tmp_path / "run"
    run_capture.write_outputs(out, "uid", inputs, outputs, {"n": 1})
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    # the comparison image is the mean of the DP views (the spec's "before" image) next to the output
    assert set(before) == {"all_in_focus.png", "refocused.png", "defocus.png", "comparison.png", "run.json"}
    side = cv2.imread(str(out / "comparison.png"), cv2.IMREAD_UNCHANGED) / 65535.0
    assert side.shape == (16, 16 + 8 + 16, 3)
    assert np.allclose(side[:, :16], 0.4, atol=1e-4) and np.allclose(side[:, -16:], 0.5, atol=1e-4)

    real = run_capture._write_png
    calls = {"n": 0}

    def crash_on_second(path, image):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full (simulated)")
        real(path, image)

    monkeypatch.setattr(run_capture, "_write_png", crash_on_second)
    with pytest.raises(OSError, match="simulated"):
        run_capture.write_outputs(out, "uid", inputs, {k: v * 0 for k, v in outputs.items()}, {"n": 2}, force=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert _listing(tmp_path) == ["run"]
