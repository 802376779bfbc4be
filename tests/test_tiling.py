"""Tiled full-resolution inference and RDPD streaming."""
import numpy as np
import pytest
import torch
from torch import nn

from models.radial import radial_map
from models.registry import get
from runtime_py.tiling import RadialInput, StreamingTiledRunner, TiledRunner, TilingError, tile_starts


def _small_net(rf_convs=3):
    torch.manual_seed(0)
    layers = []
    for i in range(rf_convs):
        layers += [nn.Conv2d(4 if i == 0 else 8, 8 if i < rf_convs - 1 else 3, 3, padding=1), nn.Tanh()]
    return nn.Sequential(*layers).eval()


def _fn(net):
    def run(inputs):
        with torch.no_grad():
            return {"y": net(torch.from_numpy(inputs["x"])).numpy()}
    return run


def test_tile_starts_cover_and_are_flush():
    s = tile_starts(200, 64, 16)
    assert s[0] == 0 and s[-1] == 200 - 64 and all(b - a <= 48 for a, b in zip(s, s[1:]))
    with pytest.raises(TilingError):
        tile_starts(50, 64, 16)


def test_tiled_equals_whole_image_when_receptive_field_fits_overlap():
    net = _small_net(3)  # receptive-field radius 3 <= overlap // 4 = 4
    rng = np.random.default_rng(0)
    x = rng.random((1, 4, 150, 190), dtype=np.float32)
    whole = _fn(net)({"x": x})["y"]
    tiled = TiledRunner(_fn(net), (64, 64), overlap=16)({"x": x})["y"]
    assert np.abs(tiled - whole).max() <= 1e-4
    # a receptive field wider than the margin shows at the seams (the test can fail)
    wide = _small_net(8)
    assert np.abs(TiledRunner(_fn(wide), (64, 64), overlap=8)({"x": x})["y"] - _fn(wide)({"x": x})["y"]).max() > 1e-4


def test_radial_channel_comes_from_the_tile_position():
    seen = []

    def spy(inputs):
        seen.append(inputs["x"][0, 3].copy())
        return {"y": inputs["x"][:, 3:4]}

    x = np.zeros((1, 4, 96, 128), np.float32)
    out = TiledRunner(spy, (64, 64), overlap=32, radial=RadialInput("x", 3))({"x": x})["y"]
    np.testing.assert_allclose(out[0, 0], radial_map(96, 128), atol=1e-6)


def test_rdpd_streaming_tiles_match_the_sequence_helper():
    spec = get("rdpd")
    net = spec.build("tiny").eval()
    rng = np.random.default_rng(1)
    frames = rng.random((3, 1, 7, 64, 64), dtype=np.float32)
    for f in frames:
        f[0, 6] = radial_map(64, 64)
    with torch.no_grad():
        ref = net.run_sequence(torch.from_numpy(frames[:, 0])[None])[0].numpy()

    def run(inputs):
        with torch.no_grad():
            y, h, c = net(*[torch.from_numpy(inputs[n]) for n in ("x", "h", "c")])
        return {"y": y.numpy(), "h_next": h.numpy(), "c_next": c.numpy()}

    shapes = {k: v for k, v in spec.input_shapes("tiny", 64, 64).items() if k != "x"}
    stream = StreamingTiledRunner(run, (64, 64), shapes, overlap=0)
    outs = [stream(f) for f in frames]
    for t in range(3):
        np.testing.assert_allclose(outs[t][0], ref[t], atol=1e-5)
    stream.reset()
    np.testing.assert_allclose(stream(frames[0])[0], ref[0], atol=1e-5)  # state cleared


def test_tiles_side_by_side_give_the_same_image_and_states():
    """workers=3: tiles run on three threads at once, blended in order (bitwise equal to one at a
    time), each RDPD tile with its own state across frames (a mix-up would change the output)."""
    spec = get("rdpd")
    net = spec.build("tiny").eval()
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.3)
    rng = np.random.default_rng(2)
    frames = rng.random((2, 1, 7, 96, 160), dtype=np.float32)
    calls = []

    def run(inputs):
        calls.append(1)
        with torch.no_grad():
            y, h, c = net(*[torch.from_numpy(inputs[n]) for n in ("x", "h", "c")])
        return {"y": y.numpy(), "h_next": h.numpy(), "c_next": c.numpy()}

    shapes = {k: v for k, v in spec.input_shapes("tiny", 64, 64).items() if k != "x"}
    one = StreamingTiledRunner(run, (64, 64), shapes, overlap=16)
    many = StreamingTiledRunner(run, (64, 64), shapes, overlap=16, workers=3)
    ref = [one(f) for f in frames]
    got = [many(f) for f in frames]
    for a, b in zip(ref, got):
        assert np.array_equal(a, b)
    assert not np.array_equal(ref[0], ref[1]) and len(calls) == 2 * 2 * 6  # 2 x 3 tiles, two frames, twice
    swapped = StreamingTiledRunner(run, (64, 64), shapes, overlap=16, workers=3)
    swapped(frames[0])
    swapped.states = dict(zip(swapped.states, reversed(list(swapped.states.values()))))
    assert not np.array_equal(swapped(frames[1]), ref[1])  # the check sees a state given to another tile
