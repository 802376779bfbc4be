"""The model registry: ``get(name) -> ModelSpec`` and ``names()``.

Each model lives in two files: ``models/<name>.py``, its network and variants (PyTorch), and
``models/<name>_spec.py``, its ``SPEC`` (``models.spec.ModelSpec``), which imports PyTorch only
inside the functions that build or feed a network, so reading a spec (``run`` on an exported
artifact) never loads it. Registering a model is one line in ``_SPECS`` below.
"""
from __future__ import annotations

from . import dc2_spec as dc2, promptmask_spec as promptmask, rdpd_spec as rdpd, uid_spec as uid
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
