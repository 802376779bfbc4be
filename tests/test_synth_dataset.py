"""cli.py synth: real file formats, determinism, atomic writes and clear errors."""
import json

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

import cli
from calibration.cameras import get_camera, get_pair
from core.sizes import SizeError, parse_size
from synth import dataset
from synth.dataset import SynthConfig, SynthError, generate
from synth.dual_camera import make_dual_camera_sample
from synth.scenes import Scene
from synth.writers import linear_to_srgb


def _cfg(tmp_path, **kw):
    base = dict(camera="rdpd_set3", scenes=2, size=(48, 64), out=tmp_path / "ds", device="cpu")
    base.update(kw)
    return SynthConfig(**base)


def test_dpdd_layout_16bit_srgb(tmp_path):
    kept = []
    rec = generate(_cfg(tmp_path, format="dpdd"), keep=kept)
    root = tmp_path / "ds"
    for sub, suffix in (("train_c/source", ""), ("train_l/source", "_L"), ("train_r/source", "_R"), ("train_c/target", "")):
        files = sorted((root / sub).glob("*.png"))
        assert len(files) == 2 and all(f.stem.endswith(suffix) for f in files)
    target = cv2.imread(str(sorted((root / "train_c/target").glob("*.png"))[0]), cv2.IMREAD_UNCHANGED)
    assert target.dtype == np.uint16 and target.shape == (48, 64, 3)
    expected = np.round(linear_to_srgb(kept[0].sharp) * 65535)[..., ::-1]
    np.testing.assert_array_equal(target, expected.astype(np.uint16))
    assert json.loads((root / "synth_record.json").read_text())["samples"][0]["psf_params"] == rec["samples"][0]["psf_params"]


def test_pixel_pgm_is_big_endian_10bit_scaled(tmp_path):
    generate(_cfg(tmp_path, camera="pixel4_dp", format="pixel", scenes=1, size=(32, 48)))
    left = sorted((tmp_path / "ds").glob("*_left.pgm"))[0]
    assert left.name[:8] == "20260101" and len(left.name) == len("20260101_120000_000_left.pgm")
    raw = left.read_bytes()
    header = b"P5\n48 32\n65535\n"
    assert raw.startswith(header)
    values = np.frombuffer(raw[len(header):], dtype=">u2").reshape(32, 48)
    dn = values.astype(np.float64) * 1023 / 65535
    assert np.all(np.abs(dn - np.round(dn)) < 0.01)  # 10-bit codes scaled to 16 bit
    assert dn.min() >= get_camera("pixel4_dp").black_level - 0.01  # black level is in the data
    assert (tmp_path / "ds" / "ground_truth").is_dir()


def test_npz_is_deterministic_and_pickle_free(tmp_path):
    generate(_cfg(tmp_path, format="npz", out=tmp_path / "a"))
    generate(_cfg(tmp_path, format="npz", out=tmp_path / "b"))
    with np.load(tmp_path / "a/train/shard_00000.npz", allow_pickle=False) as a, \
            np.load(tmp_path / "b/train/shard_00000.npz", allow_pickle=False) as b:
        assert a["left"].shape == (2, 48, 64, 3)
        for key in a.files:
            np.testing.assert_array_equal(a[key], b[key])
        assert np.sign(a["disparity"]).tolist() == np.sign(a["coc"]).tolist() or \
            np.all(np.sign(a["disparity"][np.abs(a["coc"]) > 1]) == np.sign(a["coc"][np.abs(a["coc"]) > 1]))


def test_bad_requests_are_refused_clearly(tmp_path):
    with pytest.raises(SynthError, match="unknown camera 'leica'.*phone_w_uw"):
        generate(_cfg(tmp_path, camera="leica"))
    with pytest.raises(SynthError, match="green-only"):
        generate(_cfg(tmp_path, format="pixel"))
    with pytest.raises(SynthError, match="only the npz"):
        generate(_cfg(tmp_path, camera="phone_w_uw", format="dpdd"))
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(SynthError, match="cannot write"):
        generate(_cfg(tmp_path, out=blocker / "sub" / "ds"))
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    with pytest.raises(SynthError, match="--force"):
        generate(_cfg(tmp_path, out=existing))
    assert (existing / "keep.txt").read_text() == "mine"
    with pytest.raises(SizeError, match="HxW"):
        parse_size("256by256")


def test_failure_leaves_nothing_half_written(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = dataset.make_dp_sample

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("disk full (simulated)")
        return real(*a, **k)

    monkeypatch.setattr(dataset, "make_dp_sample", flaky)
    with pytest.raises(RuntimeError):
        generate(_cfg(tmp_path))
    assert list(tmp_path.iterdir()) == []


def test_cli_errors_are_one_line_no_traceback(tmp_path):
    result = CliRunner().invoke(cli.app, ["synth", "--camera", "nope", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2
    assert "unknown camera 'nope'" in result.output and "Traceback" not in result.output


def _two_plane_scene(h, w, near_box):
    rng = np.random.default_rng(0)
    image = cv2.GaussianBlur(rng.random((h, w, 3)).astype(np.float32), (0, 0), 1.0)
    depth = np.full((h, w), 5.0, np.float32)
    y0, y1, x0, x1 = near_box
    depth[y0:y1, x0:x1] = 0.5
    return Scene(image, depth, "two_planes", {})


def test_dual_camera_ground_truth_flow_and_occlusion():
    pair = get_pair("phone_w_uw")
    h, w = 48, 64
    scene = _two_plane_scene(2 * h, 2 * w, (40, 56, 60, 76))
    s = make_dual_camera_sample(scene, pair["wide"], pair["ultrawide"], rng=np.random.default_rng(1),
                                baseline_mm=12.0, size=(h, w), noise_sigma=0.0,
                                white_balance_gains=((1, 1), (1, 1), (1, 1)), device="cpu")
    assert s.ultrawide.shape == (h, w, 3)  # 2x the field of view at half the angular resolution
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    warped = cv2.remap(s.ultrawide, xs + s.flow_w_to_uw[..., 0], ys + s.flow_w_to_uw[..., 1], cv2.INTER_LINEAR)
    err_vis = np.abs(warped - s.sharp)[~s.occlusion].mean()
    err_occ = np.abs(warped - s.sharp)[s.occlusion].mean()
    assert err_vis < 0.5 * err_occ  # GT flow lines up visible pixels, not occluded ones
    # the near box (0.5 m; W crop rows 16..32, cols 28..44) shifts left in UW by 28 px, the 5 m
    # background by 2.8 px: the box lands on background W columns 3..19, which are occluded;
    # columns between that band and the box, and right of the box, stay visible
    assert s.occlusion[20:28, 5:17].mean() > 0.9
    assert s.occlusion[20:28, 21:27].mean() < 0.1
    assert s.occlusion[20:28, 46:60].mean() < 0.1
    assert not s.occlusion[:10].any()  # far rows: nothing in front


def test_psf_bank_option_renders_with_the_bank(tmp_path):
    from calibration.dp_psf import PSFParams
    from calibration.psf_bank import PSFBank

    bank_path = PSFBank.from_model(range(-40, 41), [PSFParams(9, 1.0, 0.4)], camera="bank-cam").save(tmp_path / "b.npz")
    rec = generate(_cfg(tmp_path, format="npz", psf_bank=bank_path, scenes=1))
    assert rec["samples"][0]["psf_params"]["psf_bank"] == "bank-cam"
    (tmp_path / "bad.npz").write_bytes(b"garbage")
    result = CliRunner().invoke(cli.app, ["synth", "--psf-bank", str(tmp_path / "bad.npz"), "--out", str(tmp_path / "y")])
    assert result.exit_code == 2 and "bad.npz" in result.output and "Traceback" not in result.output


def _tree(root):
    """Relative path -> bytes of every data file (records and previews left out)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.name.startswith(("synth_record", "contact_sheet"))}


@pytest.mark.parametrize("fmt", ["npz", "dpdd"])
def test_shards_union_equals_single_run(tmp_path, fmt):
    """--shard K/N: the parts' files, put together, are the single run's, byte for byte (npz: the
    arrays of every shard file too), and each part's record lists its own samples."""
    kw = dict(format=fmt, scenes=5, size=(40, 48), shard_size=2, max_layers=24, seed=3)
    generate(_cfg(tmp_path, out=tmp_path / "all", **kw))
    single = _tree(tmp_path / "all")
    union: dict = {}
    for k in (1, 2, 3):
        rec = generate(_cfg(tmp_path, out=tmp_path / f"part{k}", shard=(k, 3), **kw))
        files = _tree(tmp_path / f"part{k}")
        assert not set(files) & set(union)  # parts do not overlap
        union.update(files)
        assert rec["shard"]["index"] == k
        assert (tmp_path / f"part{k}" / f"synth_record.shard-{k}-of-3.json").is_file()
        assert [s["index"] for s in rec["samples"]] == list(range(rec["shard"]["first"], rec["shard"]["stop"]))
    assert union.keys() == single.keys()
    for name, data in single.items():
        if name.endswith(".npz"):  # the arrays, byte for byte
            with np.load(tmp_path / "all" / name) as a:
                part = next(p for p in tmp_path.glob(f"part*/{name}"))
                with np.load(part) as b:
                    assert a.files == b.files
                    for key in a.files:
                        assert a[key].tobytes() == b[key].tobytes() and a[key].dtype == b[key].dtype
        else:
            assert union[name] == data, name
    if fmt == "npz":  # npz parts are whole shard files: 3 files of 2, 2, 1 samples over 3 parts
        assert sorted(union) == [f"train/shard_{i:05d}.npz" for i in range(3)]


@pytest.mark.parametrize("text,match", [("3/2", "1 <= K <= N"), ("0/2", "1 <= K <= N"), ("1-2", "K/N"),
                                        ("a/b", "K/N"), ("1/4", "empty")])
def test_bad_shard_is_a_user_error(tmp_path, text, match):
    with pytest.raises(SynthError, match=match):
        cfg = _cfg(tmp_path, format="npz", scenes=5, shard_size=2, shard=dataset.parse_shard(text))
        dataset.shard_range(cfg)
    if text == "3/2":
        res = CliRunner().invoke(cli.app, ["synth", "--scenes", "2", "--size", "32x32", "--out",
                                           str(tmp_path / "x"), "--shard", text])
        assert res.exit_code == 2 and "--shard 3/2" in res.output
