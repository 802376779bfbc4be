"""Training pools from disk: DPDD folders and npz shards written by the synth command, alternated
with the synthetic pool step by step (seed 004's real/synthetic mini-batches)."""
from __future__ import annotations

import numpy as np
import pytest

from models.radial import radial_map
from runtime_py.captures import DPDDDataset
from train.data_sources import DataSourceError, load_source, source_kind
from train.loop import build_pools, draw_batch, load_config, train
from synth.dataset import SynthConfig, generate


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    common = dict(scenes=2, size=(80, 96), seed=3, max_layers=24, distortion=False, device="cpu")
    generate(SynthConfig(camera="rdpd_set2", out=root / "dpdd", format="dpdd", **common))
    generate(SynthConfig(camera="rdpd_set2", out=root / "dp", format="npz", **common))
    generate(SynthConfig(camera="rdpd_set2", out=root / "dp_refocus", format="npz", refocus=True, **common))
    generate(SynthConfig(camera="phone_w_uw", out=root / "wuw", format="npz", **common))
    return root


def test_dpdd_crops_carry_the_files_and_the_radial_map_of_their_position(data_root):
    exs = load_source(str(data_root / "dpdd"), "rdpd", 48, limit=10, crops_per_image=3)
    assert source_kind(str(data_root / "dpdd")) == "dpdd" and len(exs) == 6
    left, right, combined, target = DPDDDataset(data_root / "dpdd", "train")[0]
    ex = exs[0]
    assert ex.inputs["x"].shape == (1, 7, 48, 48) and ex.targets["y"].shape == (1, 3, 48, 48)
    h, w = target.shape[:2]
    # locate the crop in the file and check the radial channel is the full frame's map there
    found = [(y, x) for y in range(h - 47) for x in range(w - 47)
             if np.array_equal(target[y:y + 48, x:x + 48].transpose(2, 0, 1), ex.targets["y"][0])]
    assert len(found) == 1
    y, x = found[0]
    np.testing.assert_array_equal(ex.inputs["x"][0, :3], left[y:y + 48, x:x + 48].transpose(2, 0, 1))
    np.testing.assert_allclose(ex.inputs["x"][0, 6], radial_map(48, 48, h, w, y, x), atol=1e-6)


def test_npz_shards_give_each_model_its_examples(data_root):
    uid = load_source(str(data_root / "dp_refocus"), "uid", 48, limit=5)
    assert len(uid) == 2 and set(uid[0].inputs) == {"left", "right", "focus_mask"}
    assert uid[0].targets["refocused"].shape == (3, 48, 48)
    rdpd = load_source(str(data_root / "dp"), "rdpd", 64, limit=1)
    assert len(rdpd) == 1 and rdpd[0].inputs["x"].shape == (1, 7, 64, 64)
    dc2 = load_source(str(data_root / "wuw"), "dc2", 48, limit=5)
    assert dc2[0].inputs["ultrawide"].shape == (3, 48, 48) and dc2[0].inputs["radial"].shape == (1, 48, 48)
    assert float(dc2[0].inputs["radial"].max()) > 0


def test_sources_that_do_not_fit_the_model_are_clear_errors(data_root, tmp_path):
    with pytest.raises(DataSourceError, match="DPDD folders train RDPD only"):
        load_source(str(data_root / "dpdd"), "uid", 48, limit=1)
    with pytest.raises(DataSourceError, match=r"missing fields \['focus_mask', 'refocused'\]"):
        load_source(str(data_root / "dp"), "uid", 48, limit=1)
    with pytest.raises(DataSourceError, match="dual-pixel shard; dc2 trains on W/UW shards"):
        load_source(str(data_root / "dp"), "dc2", 48, limit=1)
    with pytest.raises(DataSourceError, match="smaller than the training pool size"):
        load_source(str(data_root / "dp"), "rdpd", 128, limit=1)
    with pytest.raises(DataSourceError, match="not found"):
        source_kind(str(tmp_path / "nothing"))
    (tmp_path / "junk").mkdir()
    with pytest.raises(DataSourceError, match="neither a DPDD folder"):
        source_kind(str(tmp_path / "junk"))


def test_sources_alternate_by_step_and_train(data_root, tmp_path):
    cfg = load_config("rdpd", "tiny", {"data": [str(data_root / "dpdd"), "synthetic"], "pool_size": 2,
                                       "steps": 2, "out": str(tmp_path)})
    pools = build_pools(cfg, log=lambda s: None)
    real, _ = draw_batch(pools[0], cfg, 0)
    synth, _ = draw_batch(pools[1], cfg, 1)
    assert real["x"].shape[1] == 1 and synth["x"].shape[1] == cfg.frames  # one-frame captures, synthetic clips
    summary = train(cfg, log=lambda s: None)
    assert summary["steps"] == 2 and np.isfinite(summary["final_loss"])


def test_cli_trains_and_evaluates_on_a_dpdd_folder(data_root, tmp_path):
    from typer.testing import CliRunner

    import cli

    runner = CliRunner()
    dpdd = str(data_root / "dpdd")
    r = runner.invoke(cli.app, ["train", "--model", "rdpd", "--variant", "tiny", "--steps", "2", "--data", dpdd,
                                "--data", "synthetic", "--pool-size", "2", "--out", str(tmp_path), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli.app, ["evaluate", "--model", "rdpd", "--checkpoint", str(tmp_path / "rdpd-tiny" / "last.safetensors"),
                                "--data", dpdd, "--size", "48", "--count", "2", "--json", str(tmp_path / "s.json"),
                                "--save-images", str(tmp_path / "img")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "img" / "rdpd-evaluation.png").is_file()
    import json

    scores = json.loads((tmp_path / "s.json").read_text())["scores"]["deblur"]
    assert set(scores) == {"input (combined view)", "model"}  # no Wiener: a capture has no true PSF
    r = runner.invoke(cli.app, ["train", "--model", "rdpd", "--variant", "tiny", "--steps", "1", "--lr-halving-steps", "5",
                                "--init", str(tmp_path / "rdpd-tiny" / "last.safetensors"), "--out", str(tmp_path / "ft"),
                                "--device", "cpu"])
    assert r.exit_code == 0 and "warm start from" in r.output, r.output
    r = runner.invoke(cli.app, ["evaluate", "--model", "uid", "--data", dpdd])
    assert r.exit_code != 0 and "DPDD folders train RDPD only" in r.output and "Traceback" not in r.output
