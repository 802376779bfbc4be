"""Where a user would tap and box an object of a synthetic scene (shared by the prompt tests)."""
from __future__ import annotations

import cv2
import numpy as np


def inner_point(m):
    """The object's pixel farthest from its edge (x, y)."""
    dist = cv2.distanceTransform((m > 0).astype(np.uint8), cv2.DIST_L2, 3)
    y, x = np.unravel_index(np.argmax(dist), dist.shape)
    return int(x), int(y)


def bounding_box(m, margin=2):
    """x0, y0, x1, y1 (exclusive) around the object with ``margin`` px to spare."""
    ys, xs = np.nonzero(m)
    return xs.min() - margin, ys.min() - margin, xs.max() + 1 + margin, ys.max() + 1 + margin
