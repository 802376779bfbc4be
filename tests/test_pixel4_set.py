"""``synth --format pixel4_gt``: a capture set in the public Pixel 4 layout with ground truth and
calibrated kernels (synth.pixel4_set), the local stand-in for the held-out real set."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

import cli
from synth import pixel4_set
from synth.writers import XIN_BLACK, XIN_GT_FOLDER
from train import evaluate_captures as ec

SIZE = (168, 224)  # one row of 168-px calibration patches


@pytest.fixture(scope="module")
def proxy(tmp_path_factory):
    out = tmp_path_factory.mktemp("p4") / "set"
    r = CliRunner().invoke(cli.app, ["synth", "--format", "pixel4_gt", "--scenes", "2", "--size", "168x224", "--seed", "3",
                                     "--device", "cpu", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert (out / "contact_sheet.png").is_file()
    return out, json.loads((out / "synth_record.json").read_text())


def test_files_levels_and_ground_truth_box(proxy):
    out, rec = proxy
    for s in rec["samples"]:
        left = cv2.imread(str(out / f"{s['name']}_left.png"), cv2.IMREAD_UNCHANGED)
        gt = cv2.imread(str(out / XIN_GT_FOLDER / f"{s['name']}_gt.png"), cv2.IMREAD_UNCHANGED)
        assert left.dtype == np.uint16 and left.shape == SIZE and left.min() >= XIN_BLACK
        assert gt.dtype == np.uint16 and list(gt.shape) == s["gt_size"] == [112, 149]
        centred = ((SIZE[0] - 112) // 2, (SIZE[1] - 149) // 2)
        assert max(abs(a - b) for a, b in zip(s["gt_offset"], centred)) <= pixel4_set.MAX_SHIFT
    again = pixel4_set.write_pixel4_set(out.parent / "again", scenes=2, size=SIZE, seed=3)
    assert again["samples"] == rec["samples"]  # the command and the library draw the same scenes from the same seed


def test_evaluate_locates_the_planted_ground_truth_and_scores_the_classical_row(proxy):
    out, rec = proxy
    res = ec.evaluate_captures("rdpd", out, search=8)
    found = {r["scene"]: r["offset"] for r in res["scenes"]}
    assert found == {s["name"]: s["gt_offset"] for s in rec["samples"]}
    assert any(m.startswith("classical") for m in res["methods"]), res["classical"]
    for r in res["scenes"]:  # the format's levels, whatever the exposure (no guess from the data)
        assert r["levels"]["black_level"] == XIN_BLACK and r["levels"]["white_level"] == XIN_BLACK + 2 ** 14 - 1


def test_kernels_hold_the_rendering_psf():
    ks = pixel4_set.reference_kernels((336, 504))
    assert ks.grid == (2, 3) and ks.patch == pixel4_set.PATCH and ks.crop == (0, 0, 336, 504)
    kl, kr = ks.captures[0].left[0], ks.captures[0].right[0]
    assert abs(kl.sum() - 1) < 1e-5 and np.allclose(kl, kr[:, ::-1], atol=1e-6)  # DP halves mirror each other
    with pytest.raises(pixel4_set.Pixel4SetError, match="no 168-px calibration patch"):
        pixel4_set.reference_kernels((100, 300))


def test_cli_refuses_options_the_layout_cannot_honour(tmp_path):
    r = CliRunner().invoke(cli.app, ["synth", "--format", "pixel4_gt", "--camera", "rdpd_set1", "--out", str(tmp_path / "x")])
    assert r.exit_code != 0 and "renders the Pixel 4 DP camera" in r.output
    r = CliRunner().invoke(cli.app, ["synth", "--format", "pixel4_gt", "--refocus", "--out", str(tmp_path / "y")])
    assert r.exit_code != 0 and "takes no --refocus" in r.output
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
