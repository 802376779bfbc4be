"""The model registry: ``get(name) -> ModelSpec`` and ``names()``.

Each model lives in one file, ``models/<name>.py``, with its network, variants and its
``SPEC`` (``models.spec.ModelSpec``); registering it is one line in ``_SPECS`` below.
"""
from __future__ import annotations

from . import dc2, promptmask, rdpd, uid
from .spec import VARIANTS, ModelSpec, TensorSpec, UnknownModelError

_SPECS = (
    rdpd.SPEC,
    dc2.SPEC,
    uid.SPEC,
    promptmask.SPEC,
)
_REGISTRY: dict[str, ModelSpec] = {s.name: s for s in _SPECS}
assert all(set(s.variants) == set(VARIANTS) for s in _SPECS)

__all__ = ["ModelSpec", "TensorSpec", "UnknownModelError", "get", "names"]


def names() -> list[str]:
    """Registered model names."""
    return list(_REGISTRY)


def get(name: str) -> ModelSpec:
    """The spec of ``name`` (case-insensitive); :class:`UnknownModelError` lists valid names."""
    key = str(name).lower()
    if key not in _REGISTRY:
        raise UnknownModelError(f"unknown model {name!r}; valid: {', '.join(_REGISTRY)}")
    return _REGISTRY[key]
