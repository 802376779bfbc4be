"""Object scenes that can be named: the training and test data of the prompted focus (issue 16).

A scene is a textured background plane behind 2-4 separate, fronto-parallel objects, each with a
name made of attributes: a colour, a shape and a texture, and a depth order ("the nearest
object"). Prompts are sentences from a fixed vocabulary (:func:`vocabulary`) that name exactly one
region of the scene (an object or the background), or, as negatives, nothing in it.

Splits: ``train`` scenes never contain the held-out (colour, shape) pairs of :data:`HELD_OUT`;
``unseen`` scenes always contain one, and the prompt names that object by its colour and shape
(plus its texture half of the time), with distractors sharing its colour or shape, so a model
must compose attributes it only saw apart. ``any`` draws like ``train`` without the exclusion.

The scene is rendered through the layered DP renderer (``synth.dp_sample``) with one CoC per
object (the objects sit at distinct depths), so DP disparity separates them; the true object
masks are the visible (occlusion-resolved) regions of the all-in-focus image.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from calibration.cameras import get_camera
from models.promptmask_spec import COLOURS as SPEC_COLOURS, ROLE_PROMPTS, SHAPES, TEXTURES, concept_labels
from synth.scenes import Scene, SceneError

COLOUR_RGB = {  # linear RGB of the colour names the prompt head knows (models.promptmask_spec)
    "red": (0.80, 0.08, 0.06), "green": (0.08, 0.60, 0.12), "blue": (0.10, 0.20, 0.85),
    "yellow": (0.85, 0.80, 0.08), "purple": (0.50, 0.10, 0.70), "orange": (0.95, 0.42, 0.04),
}
COLOURS = {c: COLOUR_RGB[c] for c in SPEC_COLOURS}
HELD_OUT = frozenset({("red", "disc"), ("green", "square"), ("blue", "triangle"), ("yellow", "cross"),
                      ("purple", "disc"), ("orange", "square")})
SPLITS = ("train", "unseen", "any")
SPECIAL = tuple(ROLE_PROMPTS)  # "the nearest object", "the farthest object", "the background"
CAMERA = "canon_5d4"  # RGB; the CoCs are drawn directly (COC_RANGE_PX) and turned into depths
COC_RANGE_PX = (-5.0, 5.0)
MIN_COC_GAP_PX = 1.2  # objects' CoCs differ at least this much (distinct depth layers)
NEGATIVE_PROB = 0.1  # share of prompts naming nothing in the scene (target: empty mask)
ZOOM_PROB, ZOOM_RANGE = 0.5, (1.0, 2.0)  # training scenes rendered larger, then resampled (prompt_scene)


@dataclass
class SceneObject:
    colour: str
    shape: str
    texture: str
    coc: float  # signed CoC, px

    @property
    def name(self) -> str:
        return f"{self.texture} {self.colour} {self.shape}"


@dataclass
class ObjectScene:
    scene: Scene  # all-in-focus image + depth
    labels: np.ndarray  # H x W int: 0 background, i = objects[i - 1]
    objects: list[SceneObject]
    background_coc: float
    coc: np.ndarray = field(default=None)  # H x W signed CoC, px

    def mask(self, index: int) -> np.ndarray:
        """Visible region of object ``index`` (1-based; 0 = the background), float32 0/1."""
        return (self.labels == index).astype(np.float32)

    def concept_maps(self) -> np.ndarray:
        """H x W x 3 per-pixel class indices of colour, shape and texture (``models.promptmask_spec``
        order; the background gets each attribute's "none" index, its number of values)."""
        table = np.array([[len(SPEC_COLOURS), len(SHAPES), len(TEXTURES)]]
                         + [[SPEC_COLOURS.index(o.colour), SHAPES.index(o.shape), TEXTURES.index(o.texture)]
                            for o in self.objects], np.float32)
        return table[self.labels]

    @property
    def nearest(self) -> int:
        """Index (1-based) of the nearest object: the most negative CoC."""
        return int(np.argmin([o.coc for o in self.objects])) + 1

    @property
    def farthest(self) -> int:
        return int(np.argmax([o.coc for o in self.objects])) + 1

    def role_maps(self) -> np.ndarray:
        """H x W x 3 masks of the roles (``models.promptmask_spec.ROLES``: nearest object,
        farthest object, background)."""
        return np.stack([self.mask(self.nearest), self.mask(self.farthest), self.mask(0)], axis=-1)


def vocabulary() -> list[str]:
    """Every prompt the synthetic scenes use (the embedding cache holds exactly these)."""
    out = [f"the {c} {s}" for c in COLOURS for s in SHAPES]
    out += [f"the {t} {c} {s}" for t in TEXTURES for c in COLOURS for s in SHAPES]
    out += [f"the {t} {s}" for t in TEXTURES for s in SHAPES]
    out += [f"the {c} object" for c in COLOURS] + [f"the {s}" for s in SHAPES]
    return out + list(SPECIAL)


# ----------------------------------------------------------------------------- drawing


def _shape_mask(shape: str, h: int, w: int, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    if shape == "disc":
        cv2.circle(m, (int(round(cx * 16)), int(round(cy * 16))), int(round(r * 16)), 1, -1, cv2.LINE_8, 4)
        return m.astype(bool)
    if shape == "square":
        pts = [(r * 0.85, r * 0.85), (-r * 0.85, r * 0.85), (-r * 0.85, -r * 0.85), (r * 0.85, -r * 0.85)]
    elif shape == "triangle":
        pts = [(r * np.cos(a), r * np.sin(a)) for a in (np.pi / 2 + np.arange(3) * 2 * np.pi / 3)]
        pts = [(x, -y + 0.2 * r) for x, y in pts]
    else:  # cross: a plus sign of arm width 0.6 r
        a, b = r, 0.32 * r
        pts = [(b, a), (-b, a), (-b, b), (-a, b), (-a, -b), (-b, -b), (-b, -a), (b, -a), (b, -b), (a, -b), (a, b), (b, b)]
    c, s = np.cos(angle), np.sin(angle)
    poly = np.array([[cx + c * x - s * y, cy + s * x + c * y] for x, y in pts])
    cv2.fillPoly(m, [np.round(poly * 16).astype(np.int32)], 1, cv2.LINE_8, 4)
    return m.astype(bool)


def _texture(kind: str, colour, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """H x W x 3 paint of an object: plain, stripes or checks (period 7-10 px) of its colour and a
    darker shade, with mild shading noise so even 'plain' objects are not perfectly flat."""
    col = np.asarray(colour, np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    period = float(rng.uniform(7, 10))
    a = float(rng.uniform(0, np.pi))
    if kind == "striped":
        u = (xx * np.cos(a) + yy * np.sin(a)) / period
        t = (np.floor(u * 2) % 2).astype(np.float32)
    elif kind == "checked":
        t = ((np.floor(xx / (period / 2)) + np.floor(yy / (period / 2))) % 2).astype(np.float32)
    else:
        t = np.zeros((h, w), np.float32)
    shade = 1.0 - 0.7 * t[..., None]
    noise = 1.0 + 0.04 * rng.standard_normal((h, w, 1)).astype(np.float32)
    return np.clip(col * shade * noise, 0, 1)


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A muted, textured background: low-saturation colour times smooth noise."""
    base = np.full(3, rng.uniform(0.25, 0.55), np.float32) + rng.uniform(-0.06, 0.06, 3).astype(np.float32)
    n = rng.standard_normal((h // 4 + 2, w // 4 + 2)).astype(np.float32)
    n = cv2.resize(cv2.GaussianBlur(n, (0, 0), 1.5), (w, h), interpolation=cv2.INTER_CUBIC)
    fine = cv2.GaussianBlur(rng.standard_normal((h, w)).astype(np.float32), (0, 0), 0.8)
    return np.clip(base * (1 + 0.35 * n[..., None] + 0.15 * fine[..., None]), 0, 1).astype(np.float32)


def _draw_attributes(rng: np.random.Generator, n: int, split: str) -> list[tuple[str, str, str]]:
    allowed = [(c, s) for c in COLOURS for s in SHAPES if split == "any" or (c, s) not in HELD_OUT]
    out = []
    if split == "unseen":  # the target: a held-out pair, distractors sharing its colour or shape
        c, s = sorted(HELD_OUT)[int(rng.integers(len(HELD_OUT)))]
        out.append((c, s, TEXTURES[int(rng.integers(3))]))
        for _ in range(n - 1):
            pool = [p for p in allowed if (p[0] == c) != (p[1] == s)] if rng.random() < 0.7 else allowed
            cc, ss = pool[int(rng.integers(len(pool)))]
            out.append((cc, ss, TEXTURES[int(rng.integers(3))]))
        return out
    for _ in range(n):
        cc, ss = allowed[int(rng.integers(len(allowed)))]
        out.append((cc, ss, TEXTURES[int(rng.integers(3))]))
    return out


def _distinct_cocs(rng: np.random.Generator, n: int) -> list[float]:
    for _ in range(200):
        v = np.sort(rng.uniform(*COC_RANGE_PX, n))
        if n < 2 or np.diff(v).min() >= MIN_COC_GAP_PX:
            return [float(x) for x in rng.permutation(v)]
    return [float(x) for x in np.linspace(*COC_RANGE_PX, n)]


def object_scene(rng: np.random.Generator, size=(96, 96), split: str = "train", n_objects: int | None = None,
                 attributes: list[tuple[str, str, str]] | None = None) -> ObjectScene:
    """A scene of named objects (see the module docstring). Deterministic for a given ``rng`` state.
    ``attributes``: the objects' (colour, shape, texture) chosen by the caller (a demo scene whose
    prompts are known); placement, depths and textures still come from ``rng``."""
    if split not in SPLITS:
        raise SceneError(f"unknown prompt-scene split {split!r}; valid: {', '.join(SPLITS)}")
    h, w = size
    if attributes is not None:
        bad = [a for a in attributes if a[0] not in COLOURS or a[1] not in SHAPES or a[2] not in TEXTURES]
        if bad or not attributes:
            raise SceneError(f"object attributes {bad or attributes}: need (colour, shape, texture) from "
                             f"{', '.join(COLOURS)} / {', '.join(SHAPES)} / {', '.join(TEXTURES)}")
        attrs = [tuple(a) for a in attributes]
        n = len(attrs)
    else:
        n = int(n_objects or rng.integers(2, 5))
        attrs = _draw_attributes(rng, n, split)
    cocs = _distinct_cocs(rng, n + 1)
    bg_coc = max(cocs)  # the background is the farthest layer
    cocs.remove(bg_coc)
    cam = get_camera(CAMERA)
    image = _background(rng, h, w)
    labels = np.zeros((h, w), np.int32)
    objects = [SceneObject(c, s, t, coc) for (c, s, t), coc in zip(attrs, cocs)]
    m = min(h, w)
    for _ in range(60):  # placement: every object keeps at least 55 % of itself visible
        geo = [(rng.uniform(0.15, 0.85) * w, rng.uniform(0.15, 0.85) * h, rng.uniform(0.13, 0.21) * m,
                rng.uniform(0, np.pi / 2)) for _ in objects]
        full = [_shape_mask(o.shape, h, w, *g) for o, g in zip(objects, geo)]
        labels[:] = 0
        for i in np.argsort([-o.coc for o in objects]):  # far to near
            labels[full[i]] = i + 1
        if all((labels == i + 1).sum() >= 0.55 * max(f.sum(), 1) for i, f in enumerate(full)):
            break
    for i, o in enumerate(objects):
        sel = labels == i + 1
        image[sel] = _texture(o.texture, COLOURS[o.colour], h, w, rng)[sel]
    coc = np.full((h, w), bg_coc, np.float32)
    for i, o in enumerate(objects):
        coc[labels == i + 1] = o.coc
    depth = np.vectorize(cam.depth_for_coc)(coc).astype(np.float32)
    scene = Scene(image=image, depth=depth, name=f"prompt_scene_{split}",
                  meta={"objects": [o.__dict__ for o in objects], "background_coc": bg_coc})
    return ObjectScene(scene, labels, objects, bg_coc, coc)


# ----------------------------------------------------------------------------- prompts


def prompts_for(sc: ObjectScene, rng: np.random.Generator, split: str = "train") -> tuple[str, np.ndarray]:
    """One prompt and its target mask (H x W float32; all zeros for a prompt naming nothing).

    ``unseen``: the held-out object (index 1) by its colour and shape, texture half the time.
    Otherwise a random one of the prompts that name exactly one region, or with probability
    :data:`NEGATIVE_PROB` a colour-shape pair absent from the scene."""
    objs = sc.objects
    if split == "unseen":
        o = objs[0]
        text = f"the {o.texture} {o.colour} {o.shape}" if rng.random() < 0.5 else f"the {o.colour} {o.shape}"
        return text, sc.mask(1)
    if rng.random() < NEGATIVE_PROB:
        present = {(o.colour, o.shape) for o in objs}
        absent = [(c, s) for c in COLOURS for s in SHAPES if (c, s) not in present
                  and (split == "any" or (c, s) not in HELD_OUT)]
        c, s = absent[int(rng.integers(len(absent)))]
        return f"the {c} {s}", np.zeros(sc.labels.shape, np.float32)
    cands: list[tuple[str, int]] = [("the background", 0)]
    cands += [("the nearest object", sc.nearest), ("the farthest object", sc.farthest)]
    keys = {
        "cs": lambda o: (o.colour, o.shape), "tcs": lambda o: (o.texture, o.colour, o.shape),
        "ts": lambda o: (o.texture, o.shape), "c": lambda o: (o.colour,), "s": lambda o: (o.shape,),
    }
    text_of = {
        "cs": lambda o: f"the {o.colour} {o.shape}", "tcs": lambda o: f"the {o.texture} {o.colour} {o.shape}",
        "ts": lambda o: f"the {o.texture} {o.shape}", "c": lambda o: f"the {o.colour} object",
        "s": lambda o: f"the {o.shape}",
    }
    for kind, key in keys.items():
        counts: dict = {}
        for o in objs:
            counts[key(o)] = counts.get(key(o), 0) + 1
        cands += [(text_of[kind](o), i + 1) for i, o in enumerate(objs) if counts[key(o)] == 1]
    # object prompts more often than the three special ones
    weights = np.array([0.5 if t in SPECIAL else 1.0 for t, _ in cands])
    text, index = cands[int(rng.choice(len(cands), p=weights / weights.sum()))]
    return text, sc.mask(index)


def render_dp(sc: ObjectScene, rng: np.random.Generator, noise_scale: float = 0.05):
    """The scene through the layered DP renderer (``synth.dp_sample``), no lens distortion."""
    from synth.dp_sample import make_dp_sample

    return make_dp_sample(sc.scene, get_camera(CAMERA), rng=rng, distortion=False, noise_scale=noise_scale,
                          device="cpu")


# ----------------------------------------------------------------------------- the renderer

VOCAB_CACHE = Path(__file__).with_name("data") / "prompt_vocab.safetensors"


@lru_cache(maxsize=1)
def _vocab_table() -> dict:
    from models.text_encoder import load_cache

    return load_cache(VOCAB_CACHE) if VOCAB_CACHE.is_file() else {}


def query_embedding(text: str) -> np.ndarray:
    """``q_cls`` of a vocabulary prompt from the shipped cache (``VOCAB_CACHE``, written by
    ``cli.py text-encoder --vocab-cache``); the encoder itself only for a prompt outside it."""
    table = _vocab_table()
    if text in table:
        return table[text]
    from models.text_encoder import embed

    return embed(text)


def prompt_scene(rng: np.random.Generator, size=(96, 96), split: str = "train", device="cpu",
                 profile: str | None = None, photos=None) -> tuple[list[dict], dict]:
    """Fields of one prompted example: DP views, the sharp image and CoC, the prompt's 384-d
    query and its target mask (``synth.samples.RENDERERS['prompt_scene']``).

    With probability :data:`ZOOM_PROB` the scene is rendered :data:`ZOOM_RANGE` times larger and
    area-resampled to ``size``: texture periods and blur in pixels then shrink while the objects
    keep their size, as when ``run`` brings a larger capture down to the head's working size
    (without it, "the orange cross" of the demo's 192x256 scene was refused at 96x128)."""
    zoom = float(rng.uniform(*ZOOM_RANGE)) if rng.random() < ZOOM_PROB else 1.0
    h, w = size
    sc = object_scene(rng, (int(round(h * zoom)), int(round(w * zoom))), split)
    s = render_dp(sc, rng)
    text, mask = prompts_for(sc, rng, split)

    def fit(a, interpolation=cv2.INTER_AREA):
        return a if zoom == 1.0 else cv2.resize(a, (w, h), interpolation=interpolation)

    fields = {"left": fit(s.left), "right": fit(s.right), "combined": fit(s.combined), "sharp": fit(s.sharp),
              "coc": fit(s.coc) / zoom, "query": query_embedding(text),
              "prompt_mask": fit(mask, cv2.INTER_NEAREST), "concepts": fit(sc.concept_maps(), cv2.INTER_NEAREST),
              "roles": fit(sc.role_maps(), cv2.INTER_NEAREST), "query_labels": concept_labels(text)}
    return [fields], {"prompt": text, "split": split, "objects": [o.name for o in sc.objects], "zoom": zoom}
