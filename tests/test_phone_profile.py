"""The phone data profile (issue 13): what its samples look like, and the training recipe plumbing."""
import numpy as np
import pytest
import torch

from synth import degrade
from synth.photos import BUNDLED, photo_textures
from synth.profiles import ProfileError, get_profile
from synth.samples import dp_clip, dp_refocus
from synth.scenes import SceneError, random_scene


def test_bundled_photos_load_as_linear_rgb():
    photos = photo_textures(max_side=128)
    assert len(photos) == len(BUNDLED)
    for p in photos:
        assert p.dtype == np.float32 and p.ndim == 3 and p.shape[2] == 3 and max(p.shape[:2]) == 128
        assert 0.0 <= p.min() and p.max() <= 1.0
    # sRGB decoding: the mean of a linear image is below the mean of its encoded values
    assert np.mean([p.mean() for p in photos]) < 0.4


def test_photo_layers_scene_needs_photos_and_has_large_smooth_regions():
    with pytest.raises(SceneError, match="need photos"):
        random_scene("photo_layers", 64, 64, seed=0, near_m=0.2, far_m=5.0)
    tex = photo_textures(max_side=128)
    photo = random_scene("photo_layers", 128, 128, seed=1, near_m=0.2, far_m=5.0, textures=tex)
    leaves = random_scene("dead_leaves", 128, 128, seed=1, near_m=0.2, far_m=5.0)
    # fewer, larger layers: far fewer depth edges than the dense dead leaves
    edges = lambda d: np.mean(np.abs(np.diff(1 / d, axis=1)) > 1e-6)  # noqa: E731
    assert edges(photo.depth) < 0.5 * edges(leaves.depth)


def test_sensor_noise_variance_and_quantisation():
    rng = np.random.default_rng(0)
    img = np.full((200, 200), 0.25, np.float32)
    shot, read = 4e-4, 5e-4
    noisy = degrade.sensor_noise(img, shot, read, rng)
    assert noisy.var() == pytest.approx(shot * 0.25 + read**2, rel=0.05)
    codes = noisy * degrade.PIXEL_CODE_LEVELS
    assert np.allclose(codes, np.round(codes), atol=1e-3)  # on the 14-bit grid


def test_phone_profile_samples_are_mildly_blurred_grey_or_colour():
    grey = colour = 0
    for i in range(6):
        frames, meta = dp_clip(np.random.default_rng([5, i]), (64, 64), frames=1, profile="phone")
        f = frames[0]
        assert f["left"].shape == (64, 64, 3)
        assert np.abs(f["coc"]).max() <= 9.5  # Pixel 4 optics: front blur <= 9 px, back <= ~7 px
        if meta["channels"] == "green":  # the Pixel DP views: green copied to 3 channels, like the reader
            grey += 1
            for k in ("left", "right", "sharp"):
                assert np.array_equal(f[k][..., 0], f[k][..., 1]) and np.array_equal(f[k][..., 1], f[k][..., 2])
        else:
            colour += 1
    assert grey and colour
    frames, _ = dp_refocus(np.random.default_rng(3), (64, 64), profile="phone")
    assert frames[0]["refocused"].shape == (64, 64, 3)


def test_unknown_profile_is_a_clear_error():
    with pytest.raises(ProfileError, match="unknown data profile 'dslr'"):
        get_profile("dslr")


def test_default_profile_split_is_unchanged_and_phone_split_differs():
    from train.evaluate import test_split
    a = test_split("uid", 1, 32)[0]
    b = test_split("uid", 1, 32, profile="default")[0]
    c = test_split("uid", 1, 32, profile="phone")[0]
    assert np.array_equal(a.inputs["left"], b.inputs["left"])
    assert not np.array_equal(a.inputs["left"], c.inputs["left"])


def test_recipe_keys_survive_unset_cli_options(tmp_path):
    """A `--config` recipe's keys are not clobbered by CLI options left unset (a real bug: the
    first phone runs trained on the default profile)."""
    from typer.testing import CliRunner

    import cli
    from train.loop import TrainConfig

    recipe = tmp_path / "r.yaml"
    recipe.write_text("profile: phone\npool_size: 3\nsteps: 1\nlr: 0.0\npool_image: 32\npatch: 32\n")
    seen = {}

    def fake_train(cfg: TrainConfig, **kw):
        seen["cfg"] = cfg
        return {"final_loss": None, "steps": 0, "run_dir": tmp_path}

    import train.loop
    orig = train.loop.train
    train.loop.train = fake_train
    try:
        res = CliRunner().invoke(cli.app, ["train", "--model", "uid", "--variant", "tiny", "--config", str(recipe),
                                           "--pool-size", "2", "--out", str(tmp_path / "runs")])
    finally:
        train.loop.train = orig
    assert res.exit_code == 0, res.output
    cfg = seen["cfg"]
    assert cfg.profile == "phone" and cfg.steps == 1 and cfg.pool_image == 32
    assert cfg.pool_size == 2  # the option given on the command line wins


def test_partial_warm_start_keeps_what_fits():
    from models.checkpoint import load_matching
    from models.registry import get
    torch.manual_seed(0)
    src = get("uid").build("tiny")
    state = {k: v.clone() for k, v in src.state_dict().items()}
    changed, kept = sorted(state)[0], sorted(state)[-1]
    state[changed] = torch.zeros(1, 2, 3)  # an old tensor of another shape
    dst = get("uid").build("tiny")
    fresh = load_matching(dst, state)
    assert fresh == [changed]
    assert torch.equal(dst.state_dict()[kept], src.state_dict()[kept])
    assert not torch.equal(dst.state_dict()[changed].flatten()[:6], torch.zeros(6))
