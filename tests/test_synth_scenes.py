"""Tests for synth.scenes (scene sources: dead leaves, planes, files)."""

import json
import time

import cv2
import numpy as np
import pytest

from synth.scenes import (
    Leaf,
    Scene,
    SceneError,
    dead_leaves,
    from_files,
    fronto_plane,
    load_texture_folder,
    paint_leaves,
    random_scene,
    sample_leaf_radii,
    sample_leaves,
    slanted_plane,
    srgb_to_linear,
    validate_scene,
)

NEAR, FAR = 0.37, 7.3  # neither is exact in float32


def _check_scene(sc: Scene, h, w, near=NEAR, far=FAR):
    assert sc.image.shape == (h, w, 3) and sc.image.dtype == np.float32
    assert sc.depth.shape == (h, w) and sc.depth.dtype == np.float32
    assert np.isfinite(sc.image).all() and sc.image.min() >= 0 and sc.image.max() <= 1
    assert np.isfinite(sc.depth).all()
    assert sc.depth.min() >= near and sc.depth.max() <= far
    json.dumps(sc.meta)
    validate_scene(sc.image, sc.depth, "test")


# ---------------------------------------------------------------- determinism, ranges


@pytest.mark.parametrize(
    "make",
    [
        lambda s: dead_leaves(96, 128, seed=s, near_m=NEAR, far_m=FAR, n_leaves=150),
        lambda s: slanted_plane(96, 128, seed=s, near_m=NEAR, far_m=FAR, n_objects=2),
        lambda s: fronto_plane(96, 128, depth_m=2.0, seed=s),
        lambda s: random_scene("mixed", 96, 128, seed=s, near_m=NEAR, far_m=FAR),
    ],
    ids=["dead_leaves", "slanted_plane", "fronto_plane", "random_mixed"],
)
def test_deterministic_per_seed(make):
    a, b, c = make(7), make(7), make(8)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.depth, b.depth)
    assert a.meta == b.meta and a.name == b.name
    assert not np.array_equal(a.image, c.image)


def test_dead_leaves_depth_range_and_spread():
    sc = dead_leaves(128, 160, seed=1, near_m=NEAR, far_m=FAR, n_leaves=400)
    _check_scene(sc, 128, 160)
    inv = 1.0 / sc.depth
    # leaves spread over the whole inverse-depth range (uniform sampling in 1/d)
    assert inv.max() > 0.8 / NEAR and inv.min() <= 1.0 / FAR + 1e-6
    vals = np.unique(sc.depth)
    assert len(vals) > 50 and len(vals) <= 401
    assert sc.meta["generator"] == "dead_leaves" and sc.meta["n_leaves"] == 400


def test_dead_leaves_background_only():
    sc = dead_leaves(32, 48, seed=0, near_m=1.0, far_m=4.0, n_leaves=0)
    assert np.all(sc.depth == np.float32(4.0))


def test_dead_leaves_has_edges_and_texture():
    sc = dead_leaves(256, 256, seed=3, near_m=NEAR, far_m=FAR)
    grey = sc.image.mean(axis=2)
    lap = np.abs(cv2.Laplacian(grey, cv2.CV_32F))
    assert grey.std() > 0.05
    assert np.mean(lap > 0.05) > 0.05  # plenty of high-frequency content
    assert sc.meta["n_visible_leaves"] > 100


def test_dead_leaves_speed_512():
    dead_leaves(64, 64, seed=0, near_m=NEAR, far_m=FAR)  # warm-up
    t = time.perf_counter()
    sc = dead_leaves(512, 512, seed=0, near_m=NEAR, far_m=FAR, n_leaves=300)
    dt = time.perf_counter() - t
    assert sc.image.shape == (512, 512, 3)
    assert dt < 1.0, dt  # ~0.1 s on one core; lenient for shared CI machines


# ---------------------------------------------------------------- occlusion


def test_two_known_leaves_nearer_occludes_regardless_of_order():
    far_leaf = Leaf("disc", cx=20, cy=20, radius=12, depth=5.0)
    near_leaf = Leaf("rect", cx=30, cy=20, radius=8, aspect=0.5, depth=1.5)
    for leaves, i_far, i_near in (([far_leaf, near_leaf], 0, 1), ([near_leaf, far_leaf], 1, 0)):
        labels, depth = paint_leaves(40, 48, leaves)
        assert labels[20, 30] == i_near and depth[20, 30] == np.float32(1.5)  # overlap
        assert labels[20, 12] == i_far and depth[20, 12] == np.float32(5.0)  # far leaf only
        assert labels[0, 47] == -1 and np.isinf(depth[0, 47])  # nothing painted
        assert set(np.unique(depth[np.isfinite(depth)])) == {np.float32(1.5), np.float32(5.0)}


def test_random_leaves_pixel_depth_is_nearest_covering_leaf():
    rng = np.random.default_rng(0)
    h, w = 80, 96
    leaves = sample_leaves(rng, 40, h, w, near_m=0.5, far_m=9.0, r_min=3, r_max=30)
    assert {lf.shape for lf in leaves} == {"disc", "ellipse", "rect", "polygon"}
    labels, depth = paint_leaves(h, w, leaves)
    single = np.full((len(leaves), h, w), np.inf, np.float32)
    for i, lf in enumerate(leaves):
        _, d = paint_leaves(h, w, [lf])
        single[i] = d
    expect = single.min(axis=0)
    assert np.array_equal(depth, expect)
    covered = np.isfinite(expect)
    assert np.array_equal(labels[covered], single.argmin(axis=0)[covered])
    assert np.all(labels[~covered] == -1)


def test_leaf_depths_uniform_in_inverse_depth():
    rng = np.random.default_rng(5)
    leaves = sample_leaves(rng, 20000, 64, 64, near_m=0.5, far_m=10.0, r_min=2, r_max=20)
    d = np.array([lf.depth for lf in leaves])
    assert d.min() >= 0.5 and d.max() <= 10.0
    inv = 1.0 / d
    hist, _ = np.histogram(inv, bins=10, range=(0.1, 2.0))
    assert hist.min() > 0.9 * hist.mean() and hist.max() < 1.1 * hist.mean()


def test_power_law_radii():
    rng = np.random.default_rng(1)
    r_min, r_max = 2.0, 200.0
    r = sample_leaf_radii(rng, 200_000, r_min, r_max)
    assert r.min() >= r_min and r.max() <= r_max
    # density ~ r^-3  ->  counts per log-bin ~ r^-2
    edges = np.geomspace(r_min, r_max, 13)
    counts, _ = np.histogram(r, bins=edges)
    centres = np.sqrt(edges[:-1] * edges[1:])
    keep = counts > 50
    slope = np.polyfit(np.log(centres[keep]), np.log(counts[keep]), 1)[0]
    assert abs(slope + 2.0) < 0.1, slope
    # and the CDF matches the analytic one
    rs = np.sort(r)
    cdf = (r_min ** -2 - rs ** -2) / (r_min ** -2 - r_max ** -2)
    assert np.max(np.abs(cdf - np.arange(1, rs.size + 1) / rs.size)) < 0.01


# ---------------------------------------------------------------- textures


def test_dead_leaves_uses_given_textures():
    colour = np.array([0.12, 0.45, 0.78], np.float32)
    tex = [np.broadcast_to(colour, (50, 70, 3)).copy()]
    sc = dead_leaves(64, 64, seed=2, near_m=1, far_m=3, n_leaves=60, textures=tex,
                     texture_probability=1.0)
    # every leaf is a crop of the constant texture times a grey gain: chromaticity preserved
    chroma = sc.image / sc.image.sum(axis=2, keepdims=True)
    assert np.allclose(chroma, colour / colour.sum(), atol=1e-4)
    assert sc.meta["n_textures"] == 1
    with pytest.raises(SceneError, match="dead_leaves"):
        dead_leaves(32, 32, seed=0, near_m=1, far_m=2, textures=[np.full((8, 8, 3), 2.0)])  # float64: checked


def test_load_texture_folder(tmp_path):
    rng = np.random.default_rng(0)
    cv2.imwrite(str(tmp_path / "a.png"), (rng.random((20, 30)) * 255).astype(np.uint8))
    cv2.imwrite(str(tmp_path / "b.png"), (rng.random((40, 25, 3)) * 65535).astype(np.uint16))
    (tmp_path / "notes.txt").write_text("not an image")
    texs = load_texture_folder(tmp_path)
    assert [t.shape for t in texs] == [(20, 30, 3), (40, 25, 3)]
    assert all(t.dtype == np.float32 and t.min() >= 0 and t.max() <= 1 for t in texs)
    sc = dead_leaves(48, 48, seed=0, near_m=1, far_m=3, textures=texs)
    _check_scene(sc, 48, 48, 1, 3)

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SceneError, match="empty"):
        load_texture_folder(empty)
    with pytest.raises(SceneError, match="missing_dir"):
        load_texture_folder(tmp_path / "missing_dir")
    (tmp_path / "zz_broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(SceneError, match="zz_broken.jpg"):
        load_texture_folder(tmp_path)


# ---------------------------------------------------------------- planes


def test_slanted_plane_inverse_depth_linear_along_direction():
    h, w = 90, 120
    sc = slanted_plane(h, w, seed=11, near_m=NEAR, far_m=FAR)
    _check_scene(sc, h, w)
    ys, xs = np.mgrid[0:h, 0:w]
    A = np.stack([np.ones(h * w), xs.ravel(), ys.ravel()], axis=1)
    inv = 1.0 / sc.depth.astype(np.float64).ravel()
    coef, *_ = np.linalg.lstsq(A, inv, rcond=None)
    resid = np.abs(A @ coef - inv)
    assert resid.max() < 1e-5 * inv.max()
    g = coef[1:] / np.linalg.norm(coef[1:])
    assert np.dot(g, sc.meta["direction"]) > 0.99999  # inverse depth grows along the direction
    assert np.isclose(sc.depth.min(), NEAR, rtol=1e-5) and np.isclose(sc.depth.max(), FAR, rtol=1e-5)
    assert sc.image.std() > 0.05


def test_slanted_plane_explicit_direction_and_objects_in_front():
    h, w = 64, 80
    plain = slanted_plane(h, w, seed=3, near_m=1, far_m=5, direction=0.0)
    assert np.all(np.diff(1.0 / plain.depth, axis=1) > 0)  # nearer towards +x
    assert np.allclose(np.diff(plain.depth, axis=0), 0)
    obj = slanted_plane(h, w, seed=3, near_m=1, far_m=5, direction=0.0, n_objects=3)
    assert np.all(obj.depth <= plain.depth + 1e-6)
    assert np.mean(obj.depth < plain.depth - 1e-4) > 0.01
    assert obj.depth.min() >= 1 and obj.depth.max() <= 5


def test_fronto_plane_single_depth():
    sc = fronto_plane(50, 70, depth_m=1.7, seed=0)
    assert np.all(sc.depth == np.float32(1.7))
    assert sc.image.std() > 0.05
    with pytest.raises(SceneError, match="fronto_plane"):
        fronto_plane(50, 70, depth_m=-1.0, seed=0)


def test_random_scene_kinds():
    for kind in ("dead_leaves", "slanted_plane", "mixed"):
        sc = random_scene(kind, 64, 64, seed=4, near_m=NEAR, far_m=FAR)
        _check_scene(sc, 64, 64)
        assert sc.meta["kind"] == kind
    chosen = {random_scene("mixed", 32, 32, seed=s, near_m=1, far_m=2).meta["chosen"]
              for s in range(12)}
    assert chosen == {"dead_leaves", "slanted_plane"}
    with pytest.raises(SceneError, match="kind"):
        random_scene("teapot", 32, 32, seed=0, near_m=1, far_m=2)


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "image, depth, word",
    [
        (np.zeros((4, 5, 3), np.float32), np.full((4, 5), np.nan, np.float32), "NaN"),
        (np.zeros((4, 5, 3), np.float32), np.full((4, 5), np.inf, np.float32), "infinite"),
        (np.zeros((4, 5, 3), np.float32), np.zeros((4, 5), np.float32), "<= 0"),
        (np.zeros((4, 5, 3), np.float32), -np.ones((4, 5), np.float32), "<= 0"),
        (np.full((4, 5, 3), np.inf, np.float32), np.ones((4, 5), np.float32), "NaN/inf"),
        (np.zeros((4, 5, 3), np.float32), np.ones((4, 6), np.float32), "differ"),
        (np.zeros((4, 5), np.float32), np.ones((4, 5), np.float32), "H x W x 3"),
        (np.zeros((4, 5, 4), np.float32), np.ones((4, 5), np.float32), "H x W x 3"),
        (np.zeros((4, 5, 3), np.float32), np.ones((4, 5, 1), np.float32), "H x W"),
        (np.full((4, 5, 3), 1.5, np.float32), np.ones((4, 5), np.float32), "[0, 1]"),
        (np.zeros((4, 5, 3), np.uint8), np.ones((4, 5), np.float32), "dtype"),
    ],
)
def test_validate_scene_errors(image, depth, word):
    with pytest.raises(SceneError) as ei:
        validate_scene(image, depth, "my_source.png")
    msg = str(ei.value)
    assert "my_source.png" in msg and word in msg


# ---------------------------------------------------------------- files


def _write_pair(tmp_path, h=24, w=32):
    rng = np.random.default_rng(0)
    rgb16 = (rng.random((h, w, 3)) * 65535).astype(np.uint16)
    img_path = tmp_path / "img.png"
    assert cv2.imwrite(str(img_path), rgb16[:, :, ::-1])  # cv2 writes BGR
    depth = rng.uniform(0.5, 20.0, (h, w)).astype(np.float32)
    depth_path = tmp_path / "depth.npy"
    np.save(depth_path, depth)
    return img_path, depth_path, rgb16, depth


def test_from_files_round_trip(tmp_path):
    img_path, depth_path, rgb16, depth = _write_pair(tmp_path)
    raw = from_files(img_path, depth_path, srgb=False)
    assert np.array_equal(raw.image, rgb16.astype(np.float32) / 65535.0)  # RGB order kept
    assert np.array_equal(raw.depth, depth)
    lin = from_files(img_path, depth_path)  # default: sRGB decoded to linear
    assert np.allclose(lin.image, srgb_to_linear(rgb16 / 65535.0), atol=1e-6)
    assert lin.name == "img" and json.dumps(lin.meta)

    mm = (depth * 1000).astype(np.uint16)
    assert cv2.imwrite(str(tmp_path / "depth_mm.png"), mm)
    sc = from_files(img_path, tmp_path / "depth_mm.png", depth_units="mm")
    assert np.allclose(sc.depth, mm / 1000.0, rtol=1e-6)
    sc = from_files(img_path, tmp_path / "depth_mm.png", depth_units="m", depth_scale=0.001)
    assert np.allclose(sc.depth, mm / 1000.0, rtol=1e-6)
    np.save(tmp_path / "inv.npy", 1.0 / depth)
    sc = from_files(img_path, tmp_path / "inv.npy", depth_units="inverse")
    assert np.allclose(sc.depth, depth, rtol=1e-5)

    grey8 = (np.random.default_rng(1).random((24, 32)) * 255).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "grey.jpg"), grey8)
    sc = from_files(tmp_path / "grey.jpg", depth_path)
    assert sc.image.shape == (24, 32, 3) and np.array_equal(sc.image[..., 0], sc.image[..., 2])


def test_from_files_inverse_zero_needs_clamp(tmp_path):
    img_path, _, _, depth = _write_pair(tmp_path)
    inv = 1.0 / depth
    inv[0, 0] = 0.0  # infinitely far
    np.save(tmp_path / "inv0.npy", inv)
    with pytest.raises(SceneError, match="inv0.npy"):
        from_files(img_path, tmp_path / "inv0.npy", depth_units="inverse")
    sc = from_files(img_path, tmp_path / "inv0.npy", depth_units="inverse", max_depth_m=100.0)
    assert sc.depth[0, 0] == 100.0


def test_from_files_errors_name_the_file(tmp_path):
    img_path, depth_path, _, depth = _write_pair(tmp_path)

    def expect(img, dep, fname, **kw):
        with pytest.raises(SceneError) as ei:
            from_files(img, dep, **kw)
        assert fname in str(ei.value), str(ei.value)

    expect(tmp_path / "nope.png", depth_path, "nope.png")
    expect(img_path, tmp_path / "nodepth.npy", "nodepth.npy")
    expect(img_path, tmp_path / "nodepth.png", "nodepth.png")
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    expect(tmp_path / "corrupt.png", depth_path, "corrupt.png")
    expect(img_path, tmp_path / "corrupt.png", "corrupt.png")
    (tmp_path / "corrupt.npy").write_bytes(b"\x93NUMPY garbage")
    expect(img_path, tmp_path / "corrupt.npy", "corrupt.npy")
    np.save(tmp_path / "pickled.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    expect(img_path, tmp_path / "pickled.npy", "pickled.npy")
    np.save(tmp_path / "small.npy", depth[:-1])
    expect(img_path, tmp_path / "small.npy", "small.npy")
    bad = depth.copy()
    bad[3, 4] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    expect(img_path, tmp_path / "nan.npy", "nan.npy")
    bad = depth.copy()
    bad[1, 1] = -2.0
    np.save(tmp_path / "neg.npy", bad)
    expect(img_path, tmp_path / "neg.npy", "neg.npy")
    zero = (depth * 1000).astype(np.uint16)
    zero[0, 0] = 0
    cv2.imwrite(str(tmp_path / "zero.png"), zero)
    expect(img_path, tmp_path / "zero.png", "zero.png", depth_units="mm")
    cv2.imwrite(str(tmp_path / "rgbdepth.png"), np.zeros((24, 32, 3), np.uint16))
    expect(img_path, tmp_path / "rgbdepth.png", "rgbdepth.png")
    (tmp_path / "depth.exr").write_bytes(b"v/1\x01")
    expect(img_path, tmp_path / "depth.exr", "depth.exr")
    expect(img_path, depth_path, "depth.npy", depth_units="furlongs")
