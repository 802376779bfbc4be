"""The calibration chart: a random binary noise field, ArUco markers around it, a white border.

Bernoulli(0.5) white noise makes per-patch PSF estimation well posed (Delbracio et al., IJCV
2012); ``bandlimited`` is a binary pattern of noise summed over a few octaves (Lens Blur Fields,
2023), for charts shown much smaller than the sensor resolves. The markers (OpenCV's
DICT_4X4_50, ids 0-7: the four corners, then the edge midpoints) give the homography from the
chart to a capture. ``chart.json`` holds the geometry in chart pixels.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.jsonfile import read_json
from core.atomic import write_image, write_json
from core.errors import UserError

FORMAT = "dp-calibration-chart"
DICTIONARY = "DICT_4X4_50"
PATTERNS = ("bernoulli", "bandlimited")


class ChartError(UserError):
    """A chart that cannot be made or read."""


@dataclass
class Chart:
    image: np.ndarray  # H x W float32 in [0, 1]
    geometry: dict  # the chart.json content

    @property
    def noise_rect(self) -> tuple[int, int, int, int]:
        return tuple(self.geometry["noise_rect"])  # x0, y0, x1, y1 (chart px)


def _dictionary():
    import cv2

    return cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, DICTIONARY))


def make_chart(width: int, height: int, seed: int = 0, noise_cell: int = 2, pattern: str = "bernoulli",
               border: float = 0.03, marker: float = 0.15) -> Chart:
    """Chart of ``width`` x ``height`` px: white border of ``border`` x the short side, eight
    markers of ``marker`` x the short side in a frame around the noise field, the noise field
    (``noise_cell`` px per random cell) inside."""
    import cv2

    if pattern not in PATTERNS:
        raise ChartError(f"--pattern must be one of {', '.join(PATTERNS)}, got {pattern!r}")
    if min(width, height) < 200:
        raise ChartError(f"chart size {width}x{height} is too small (at least 200 px on each side)")
    if noise_cell < 1:
        raise ChartError(f"--noise-cell must be >= 1 px, got {noise_cell}")
    short = min(width, height)
    b = max(4, int(round(border * short)))
    m = max(24, int(round(marker * short)))
    m -= m % 6  # 4x4 bits + 1-bit border = 6 cells
    gap = max(2, m // 6)
    img = np.ones((height, width), np.float32)
    markers = []
    xs = (b, (width - m) // 2, width - b - m)
    ys = (b, (height - m) // 2, height - b - m)
    places = [(xs[0], ys[0]), (xs[2], ys[0]), (xs[2], ys[2]), (xs[0], ys[2]),
              (xs[1], ys[0]), (xs[2], ys[1]), (xs[1], ys[2]), (xs[0], ys[1])]
    d = _dictionary()
    for i, (x, y) in enumerate(places):
        img[y:y + m, x:x + m] = cv2.aruco.generateImageMarker(d, i, m).astype(np.float32) / 255.0
        # corners in pixel-edge coordinates (top-left of pixel (0,0) is (0,0)), clockwise from top-left
        markers.append({"id": i, "corners": [[x, y], [x + m, y], [x + m, y + m], [x, y + m]]})
    x0, y0 = b + m + gap, b + m + gap
    x1, y1 = width - b - m - gap, height - b - m - gap
    if x1 - x0 < 32 or y1 - y0 < 32:
        raise ChartError(f"chart size {width}x{height} leaves no room for the noise field")
    rng = np.random.default_rng(seed)
    h, w = y1 - y0, x1 - x0
    if pattern == "bernoulli":
        cells = rng.random((-(-h // noise_cell), -(-w // noise_cell))) < 0.5
        field = np.kron(cells, np.ones((noise_cell, noise_cell), bool))[:h, :w]
    else:  # binary band-limited noise: octaves of smoothed noise, thresholded at the median
        acc = np.zeros((h, w), np.float32)
        for octave in range(3):
            s = noise_cell * (2 ** octave)
            small = rng.standard_normal((-(-h // s), -(-w // s))).astype(np.float32)
            acc += cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC) / (octave + 1)
        field = acc > np.median(acc)
    img[y0:y1, x0:x1] = field.astype(np.float32)
    geometry = {"format": FORMAT, "schema_version": 1, "width": width, "height": height, "seed": seed,
                "pattern": pattern, "noise_cell": noise_cell, "noise_rect": [x0, y0, x1, y1],
                "dictionary": DICTIONARY, "marker_size": m, "markers": markers,
                "coordinates": "chart pixels; (0, 0) is the top-left corner of the top-left pixel"}
    return Chart(img, geometry)


def save_chart(chart: Chart, out: str | Path) -> tuple[Path, Path]:
    """chart.png (8-bit) and chart.json beside it (same stem), both written atomically."""
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise ChartError(f"--out must be a .png file, got {out}")
    geometry = dict(chart.geometry, image=out.name)
    write_image(out, np.round(chart.image * 255).astype(np.uint8), what="chart")
    js = write_json(out.with_suffix(".json"), geometry)
    return out, js


def load_chart(path: str | Path) -> Chart:
    """A chart from its chart.json (the image named inside, beside it)."""
    import cv2

    path = Path(path)
    geometry = read_json(path, ChartError, "chart file not found (make one with `calibrate chart`)",
                         "not a chart JSON")
    if not isinstance(geometry, dict) or geometry.get("format") != FORMAT:
        raise ChartError(f"{path}: not a calibration chart description (format {FORMAT!r} expected)")
    name = geometry.get("image", "")
    if Path(name).name != name or not name:
        raise ChartError(f"{path}: chart image name {name!r} must be a file beside it")
    img_path = path.parent / name
    img = cv2.imread(str(img_path), cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise ChartError(f"{img_path}: chart image not found or unreadable")
    if img.shape != (geometry["height"], geometry["width"]):
        raise ChartError(f"{img_path}: image is {img.shape[1]}x{img.shape[0]}, the JSON says "
                         f"{geometry['width']}x{geometry['height']}")
    return Chart(img.astype(np.float32) / 255.0, geometry)

