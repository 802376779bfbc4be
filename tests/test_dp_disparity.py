"""Point and box prompts on the DP views alone (no depth map): the estimated DP defocus orders the
objects' depth layers, the prompts find the objects, and disparity (not colour) separates two
touching objects of one colour and an object painted like its background."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from calibration.cameras import get_camera
from runtime_py.dp_disparity import dp_disparity
from runtime_py.prompts import PromptError, box_prompt_dp, iou, point_prompt_dp
from synth.dp_sample import make_dp_sample
from prompt_helpers import bounding_box, inner_point
from synth.prompt_scenes import CAMERA, _texture, object_scene, render_dp
from synth.scenes import Scene


@pytest.fixture(scope="module")
def scenes():
    rng = np.random.default_rng(21)
    out = []
    for _ in range(5):
        sc = object_scene(rng, (80, 80), "any")
        s = render_dp(sc, rng)
        out.append((sc, s, dp_disparity(s.left, s.right)))
    return out


def test_estimated_defocus_orders_the_depth_layers(scenes):
    """Per object, the median estimated signed CoC against the true one: same order (rank
    correlation) and, for clearly defocused objects, the same sign (the DP disparity's)."""
    from scipy.stats import spearmanr

    true, est = [], []
    for sc, s, e in scenes:
        for j in range(len(sc.objects) + 1):
            m = sc.labels == j
            true.append(float(np.median(s.coc[m])))
            est.append(float(np.median(e.disparity[m])))
    true, est = np.array(true), np.array(est)
    assert spearmanr(true, est)[0] > 0.8, (true, est)
    clear = np.abs(true) > 1.5
    assert np.mean(np.sign(est[clear]) == np.sign(true[clear])) >= 0.9, (true, est)


def test_point_and_box_find_the_objects_from_the_views_alone(scenes):
    """Mean IoU on 15 objects of 80 px scenes: 0.75 (point), 0.76 (box) when written, against 0.46
    for the box itself as the mask. Below the issue's 0.85 (see docs/BENCHMARKS.md); the bar
    here guards against regressions."""
    points, boxes, rects = [], [], []
    for sc, s, e in scenes:
        for j in range(1, len(sc.objects) + 1):
            m = sc.mask(j)
            points.append(iou(point_prompt_dp(e, s.combined, inner_point(m)).mask, m))
            boxes.append(iou(box_prompt_dp(e, s.combined, bounding_box(m)).mask, m))
            x0, y0, x1, y1 = bounding_box(m)
            rect = np.zeros_like(m)
            rect[max(0, y0):y1, max(0, x0):x1] = 1
            rects.append(iou(rect, m))
    assert np.mean(points) >= 0.7 and np.mean(boxes) >= 0.7, (points, boxes)
    assert min(np.mean(points), np.mean(boxes)) > np.mean(rects) + 0.2


def _render(image, coc, seed=0):
    cam = get_camera(CAMERA)
    depth = np.vectorize(cam.depth_for_coc)(coc).astype(np.float32)
    return make_dp_sample(Scene(image.astype(np.float32), depth, "test"), cam, rng=np.random.default_rng(seed),
                          distortion=False, noise_scale=0.05, device="cpu")


def test_touching_objects_of_one_colour_are_separated_by_depth():
    """Two touching striped red squares, near (-3 px) and at +1 px, on a far (+4 px) muted
    background: a tap or box on either selects it alone."""
    rng = np.random.default_rng(2)
    h, w = 72, 96
    image = np.clip(0.4 + 0.05 * rng.standard_normal((h, w, 3)), 0, 1).astype(np.float32)
    image = cv2.GaussianBlur(image, (0, 0), 1.0)
    paint = _texture("striped", (0.8, 0.08, 0.06), h, w, rng)
    a = np.zeros((h, w), bool)
    b = np.zeros((h, w), bool)
    a[16:56, 14:48] = True
    b[16:56, 48:82] = True
    image[a | b] = paint[a | b]
    coc = np.full((h, w), 4.0, np.float32)
    coc[a], coc[b] = -3.0, 1.0
    s = _render(image, coc)
    e = dp_disparity(s.left, s.right)
    for m, other in ((a, b), (b, a)):
        p = point_prompt_dp(e, s.combined, inner_point(m))
        bx = box_prompt_dp(e, s.combined, bounding_box(m))
        assert iou(p.mask, m) > 0.65 and iou(bx.mask, m) > 0.75, (iou(p.mask, m), iou(bx.mask, m))
        assert (p.mask[other] > 0).mean() < 0.1 and (bx.mask[other] > 0).mean() < 0.1


def test_object_painted_like_the_background_is_found_by_its_depth():
    """A disc carrying the background's own texture, nearer (-3 px): colour alone cannot find it."""
    rng = np.random.default_rng(4)
    h, w = 80, 80
    n = cv2.resize(rng.standard_normal((22, 22)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    image = np.repeat(np.clip(0.4 * (1 + 0.5 * n), 0, 1)[..., None], 3, 2)
    disc = np.zeros((h, w), np.uint8)
    cv2.circle(disc, (40, 40), 16, 1, -1)
    disc = disc.astype(bool)
    other = np.roll(image, (23, 31), (0, 1))  # the same texture, another patch of it
    image[disc] = other[disc]
    coc = np.where(disc, -3.0, 2.5).astype(np.float32)
    s = _render(image, coc, seed=1)
    e = dp_disparity(s.left, s.right)
    assert iou(point_prompt_dp(e, s.combined, (40, 40)).mask, disc) > 0.65
    assert iou(box_prompt_dp(e, s.combined, bounding_box(disc)).mask, disc) > 0.65


def test_flat_scene_has_no_confidence_and_bad_prompts_are_refused():
    rng = np.random.default_rng(0)
    flat = np.full((48, 64, 3), 0.5, np.float32) + 0.001 * rng.standard_normal((48, 64, 3)).astype(np.float32)
    e = dp_disparity(flat, flat)
    with pytest.raises(PromptError, match="textureless region"):
        point_prompt_dp(e, flat, (30, 20))
    with pytest.raises(PromptError, match="outside the 64x48 image"):
        point_prompt_dp(e, flat, (64, 3))
    with pytest.raises(PromptError, match="outside the 64x48 image"):
        box_prompt_dp(e, flat, (70, 0, 90, 10))
    assert box_prompt_dp(e, flat, (10, 10, 40, 40)).confidence < 0.3


def test_tap_on_a_plain_objects_flat_interior_is_accepted_and_selects_it():
    """A plain disc (radius 36 px, near) on a textured far background, tapped at its centre: a
    7-px window there is textureless, but the disc's colour region has a contrasty outline, so
    the tap is accepted (region-based check) and selects the disc."""
    rng = np.random.default_rng(6)
    h = w = 128
    n = cv2.resize(rng.standard_normal((34, 34)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    image = np.repeat(np.clip(0.35 * (1 + 0.4 * n), 0, 1)[..., None], 3, 2).astype(np.float32)
    disc = np.zeros((h, w), np.uint8)
    cv2.circle(disc, (64, 64), 36, 1, -1)
    disc = disc.astype(bool)
    image[disc] = (0.8, 0.1, 0.08)
    s = _render(image, np.where(disc, -3.0, 3.0).astype(np.float32), seed=3)
    g = s.combined.mean(axis=2)[57:72, 57:72]
    assert np.hypot(*np.gradient(g)).mean() < 0.004  # what the old fixed-window check refused
    e = dp_disparity(s.left, s.right)
    res = point_prompt_dp(e, s.combined, (64, 64))
    assert iou(res.mask, disc) > 0.8 and res.record["texture"] > 0.004, (iou(res.mask, disc), res.record)


def _near_and_far(seed, paint):
    """A 64 x 64 scene on the prompt scenes' muted far background (+4 px): ``paint(image, coc, rng)``
    draws the objects and returns their masks."""
    from synth.prompt_scenes import _background

    rng = np.random.default_rng(seed)
    image = _background(rng, 64, 64)
    coc = np.full((64, 64), 4.0, np.float32)
    masks = paint(image, coc, rng)
    return _render(image, coc, seed), masks


def _checked_square(image, coc, rng):
    m = np.zeros(coc.shape, bool)
    m[18:46, 18:46] = True
    image[m] = _texture("checked", (0.95, 0.42, 0.04), *coc.shape, rng)[m]
    coc[m] = -0.6
    return [m]


def _striped_and_plain(image, coc, rng):
    a, b = np.zeros(coc.shape, bool), np.zeros(coc.shape, bool)
    a[16:44, 8:32], b[16:44, 32:56] = True, True
    image[a] = _texture("striped", (0.85, 0.80, 0.08), *coc.shape, rng)[a]
    image[b] = _texture("plain", (0.85, 0.80, 0.08), *coc.shape, rng)[b]
    coc[a], coc[b] = -2.5, 2.0
    return [a, b]


@pytest.mark.parametrize("seed", [2, 3])
def test_tap_on_a_checked_object_does_not_leak_into_the_background(seed):
    """A checked square nearly in focus (-0.6 px) on the far background: its dark checks are close
    to the background's colour, and superpixels of the first estimator (one 200-px level, SLIC
    compactness 16) straddled its outline, so the tap grew over the background (IoU 0.29 / 0.19
    for these scenes; 1.0 with compact superpixels voted over several sizes)."""
    s, (m,) = _near_and_far(seed, _checked_square)
    e = dp_disparity(s.left, s.right)
    res = point_prompt_dp(e, s.combined, inner_point(m))
    assert iou(res.mask, m) > 0.9, iou(res.mask, m)
    assert len(e.levels) > 1 and any(lv is e for lv in e.levels)


@pytest.mark.parametrize("seed", [0, 1, 3])
def test_tap_on_a_striped_object_does_not_leak_into_a_touching_plain_one(seed):
    """Two touching squares of one colour, striped near (-2.5 px) and plain far (+2 px): a tap on
    the striped one selects it alone (the first estimator: IoU 0.45-0.50, half of the plain one
    taken along), and a tap on the plain one finds it."""
    s, (a, b) = _near_and_far(seed, _striped_and_plain)
    e = dp_disparity(s.left, s.right)
    striped = point_prompt_dp(e, s.combined, inner_point(a)).mask
    plain = point_prompt_dp(e, s.combined, inner_point(b)).mask
    assert iou(striped, a) > 0.85 and (striped[b] > 0).mean() < 0.1, (iou(striped, a), (striped[b] > 0).mean())
    assert iou(plain, b) > 0.8, iou(plain, b)
