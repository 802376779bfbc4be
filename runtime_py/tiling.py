"""Full-resolution inference with fixed-size models: overlapping tiles, feathered blending, and
RDPD streaming with per-tile recurrent state.

Exported models have static shapes, so an image larger than the export size is cut into tiles
that overlap by ``overlap`` px. Tiles start at the image's top-left and the last tile of each
row/column is flush with the image's far edge, so a tile edge is either an image edge (where the
tile sees the same border as whole-image inference) or an inner seam. Blending weights are 0
within ``overlap // 4`` px of an inner seam and ramp to 1 over the middle of the overlap: when the
model's receptive-field radius is at most ``overlap // 4``, the tiled result equals whole-image
inference everywhere (up to float rounding). The radial map (distance to the *full* image's
centre) is computed per tile from its position (seed 004: each patch carries its own slice).
Tiles are streamed: each tile's outputs are weighted into one float32 buffer per output as soon as
they come back, so besides the inputs and that buffer, memory holds one tile at a time.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from models.radial import radial_map
from core.errors import UserError

Arrays = dict[str, np.ndarray]
RunFn = Callable[[Arrays], Arrays]


class TilingError(UserError):
    """Inputs that cannot be tiled (wrong rank, sizes that disagree, tile larger than image...)."""


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets along one axis: step ``tile - overlap``, last tile flush with the end."""
    if tile > size:
        raise TilingError(f"tile {tile} is larger than the image side {size}")
    if not 0 <= overlap < tile:
        raise TilingError(f"overlap {overlap} must be in [0, tile {tile})")
    if tile == size:
        return [0]
    step = tile - overlap
    starts = list(range(0, size - tile, step))
    starts.append(size - tile)
    return sorted(set(starts))


def fit_tile(size: int, max_tile: int, overlap: int, multiple: int = 1) -> int:
    """The tile side for one axis of ``size`` px: the whole axis rounded up to ``multiple`` when
    that is at most ``max_tile``; else as many tiles as ``max_tile`` needs, each shrunk to the
    smallest multiple of ``multiple`` that still covers the axis with ``overlap``. 1512 px with
    768 px tiles and 64 px overlap: 3 tiles of 560 px (1680 px run) instead of 3 x 768 (2304 px)."""
    whole = -(-size // multiple) * multiple
    if whole <= max_tile:
        return whole
    if max_tile % multiple or max_tile <= overlap:
        raise TilingError(f"tile {max_tile} must be a multiple of {multiple} and larger than the overlap {overlap}")
    n = -(-(size - overlap) // (max_tile - overlap))
    return min(-(-(size + (n - 1) * overlap) // (n * multiple)) * multiple, max_tile)


def _ramp(length: int, start_inner: bool, end_inner: bool, overlap: int) -> np.ndarray:
    margin = overlap // 4
    ramp = max(overlap - 2 * margin, 1)
    d = np.arange(length, dtype=np.float64)
    w = np.ones(length)
    if start_inner:
        w = np.minimum(w, np.clip((d - margin + 1) / ramp, 0, 1))
    if end_inner:
        w = np.minimum(w, np.clip((length - 1 - d - margin + 1) / ramp, 0, 1))
    return w


def feather_weights(th: int, tw: int, inner: tuple[bool, bool, bool, bool], overlap: int) -> np.ndarray:
    """(th, tw) blending weights; ``inner`` = (top, bottom, left, right) edges that are seams."""
    wy = _ramp(th, inner[0], inner[1], overlap)
    wx = _ramp(tw, inner[2], inner[3], overlap)
    return np.outer(wy, wx)


@dataclass
class RadialInput:
    """Where a model takes its radial map: input ``name``, channel ``channel``."""

    name: str
    channel: int = 0


@dataclass
class TiledRunner:
    """Run ``fn`` (named NCHW inputs -> named NCHW outputs, fixed ``tile`` size) over a large image.

    Spatial inputs are those whose last two dims equal the image size; others (e.g. RDPD state)
    are handled by :class:`StreamingTiledRunner`. Outputs may be at a fraction of the input
    scale (DC2's 1/2..1/8 side outputs): their tiles are blended at their own scale."""

    fn: RunFn
    tile: tuple[int, int]
    overlap: int = 32
    radial: RadialInput | None = None
    progress: Callable[[int, int], None] | None = None  # (tiles done, tiles in all) after each tile
    # tiles in flight at once, each on its own thread (for a runtime whose calls are thread-safe,
    # one intra-op thread each: no barrier between two threads inside every layer, which a busy
    # core stalls); outputs are blended in tile order, so memory holds ``workers`` tiles
    workers: int = 1

    def _plan(self, h: int, w: int):
        th, tw = self.tile
        ys, xs = tile_starts(h, th, self.overlap), tile_starts(w, tw, self.overlap)
        for y in ys:
            for x in xs:
                inner = (y > 0, y + th < h, x > 0, x + tw < w)
                yield y, x, inner

    def _tile_inputs(self, inputs: Arrays, y: int, x: int, h: int, w: int) -> Arrays:
        th, tw = self.tile
        out = {k: np.ascontiguousarray(v[..., y:y + th, x:x + tw]) for k, v in inputs.items()}
        if self.radial is not None:
            r = radial_map(th, tw, h, w, y, x).astype(np.float32)
            arr = out[self.radial.name].copy()
            arr[:, self.radial.channel] = r
            out[self.radial.name] = arr
        return out

    def __call__(self, inputs: Arrays, tile_fn: Callable[[int, Arrays], Arrays] | None = None) -> Arrays:
        """Tiled outputs of ``inputs``; ``tile_fn(i, tile_inputs)`` runs tile ``i`` instead of ``fn``."""
        shapes = {k: v.shape for k, v in inputs.items()}
        if not inputs or any(len(s) != 4 for s in shapes.values()):
            raise TilingError(f"inputs must be NCHW arrays, got {shapes}")
        h, w = next(iter(shapes.values()))[-2:]
        if any(s[-2:] != (h, w) for s in shapes.values()):
            raise TilingError(f"spatial inputs differ in size: {shapes}")
        acc: dict[str, np.ndarray] = {}
        wsum: dict[str, np.ndarray] = {}
        th, tw = self.tile
        plan = list(self._plan(h, w))
        run_tile = tile_fn or (lambda i, tile_in: self.fn(tile_in))

        def one(i: int) -> Arrays:
            y, x, _ = plan[i]
            return run_tile(i, self._tile_inputs(inputs, y, x, h, w))

        def blend(i: int, outs: Arrays) -> None:
            y, x, inner = plan[i]
            for name, out in outs.items():
                oh, ow = out.shape[-2:]
                sy, sx = oh / th, ow / tw
                if name not in acc:
                    acc[name] = np.zeros(out.shape[:2] + (int(round(h * sy)), int(round(w * sx))), np.float32)
                    wsum[name] = np.zeros((int(round(h * sy)), int(round(w * sx))), np.float32)
                wt = feather_weights(oh, ow, inner, max(int(round(self.overlap * sy)), 1)).astype(np.float32)
                oy, ox = int(round(y * sy)), int(round(x * sx))
                acc[name][..., oy:oy + oh, ox:ox + ow] += out * wt
                wsum[name][oy:oy + oh, ox:ox + ow] += wt
            if self.progress is not None:
                self.progress(i + 1, len(plan))

        workers = max(1, min(int(self.workers), len(plan)))
        if workers == 1:
            for i in range(len(plan)):
                blend(i, one(i))
        else:
            from collections import deque
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(workers) as pool:
                pending: deque = deque()
                for i in range(len(plan)):
                    pending.append((i, pool.submit(one, i)))
                    if len(pending) >= workers:  # blend the oldest while the others run
                        j, fut = pending.popleft()
                        blend(j, fut.result())
                while pending:
                    j, fut = pending.popleft()
                    blend(j, fut.result())
        for k in acc:  # normalise in place: no second full-size copy
            acc[k] /= np.maximum(wsum.pop(k), 1e-12)
        return acc


class StreamingTiledRunner:
    """RDPD over a burst or video: each tile keeps its own ConvLSTM state between frames.

    ``fn`` takes {x, h, c} and returns {y, h_next, c_next}; ``state_shape(tile_h, tile_w)`` gives
    the zero state. Call :meth:`reset` between unrelated sequences."""

    def __init__(self, fn: RunFn, tile: tuple[int, int], state_shapes: dict[str, tuple], overlap: int = 32,
                 x_name: str = "x", radial_channel: int | None = 6,
                 state_io: tuple[tuple[str, str], ...] = (("h", "h_next"), ("c", "c_next")),
                 progress: Callable[[int, int], None] | None = None, workers: int = 1):
        self.state_shapes, self.state_io = state_shapes, state_io
        self.states: dict[int, Arrays] = {}
        self.x_name = x_name
        self._fn = fn
        radial = None if radial_channel is None else RadialInput(x_name, radial_channel)  # None: no radial map
        self._runner = TiledRunner(fn, tile, overlap, radial, progress, workers)

    def reset(self) -> None:
        self.states = {}

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        """One frame (1 x 7 x H x W) -> the deblurred frame (1 x 3 x H x W)."""
        new_states: dict[int, Arrays] = {}
        state_outputs = {dst for _, dst in self.state_io}

        def run(i: int, tile_in: Arrays) -> Arrays:  # tile i with its own state (tiles may run side by side)
            st = self.states.get(i) or {k: np.zeros(s, np.float32) for k, s in self.state_shapes.items()}
            outs = self._fn({**tile_in, **st})
            new_states[i] = {src: outs[dst] for src, dst in self.state_io}
            return {k: v for k, v in outs.items() if k not in state_outputs}

        out = self._runner({self.x_name: frame}, tile_fn=run)
        self.states = new_states
        return out["y"] if "y" in out else next(iter(out.values()))
