"""Image sizes as users type them: ``"HxW"``."""
from __future__ import annotations

import re

from .errors import UserError

_SIZE = re.compile(r"\s*(\d+)\s*[xX]\s*(\d+)\s*")


class SizeError(UserError):
    """A size that is not ``HxW`` or is too small."""


def parse_size(text: str, minimum: int = 16) -> tuple[int, int]:
    """``"256x384"`` -> (256, 384) as (height, width); both at least ``minimum`` pixels."""
    m = _SIZE.fullmatch(str(text))
    if not m:
        raise SizeError(f"size must be HxW (e.g. 256x256), got {text!r}")
    h, w = int(m.group(1)), int(m.group(2))
    if h < minimum or w < minimum:
        raise SizeError(f"size {h}x{w} is too small (at least {minimum}x{minimum})")
    return h, w
