"""The three networks (RDPD, DC2, UiD), their specs, shared blocks and the model registry.

Each model is a file holding its network and variants (``paper``, ``mobile``, ``tiny``) and a
``<name>_spec.py`` beside it holding its ``SPEC`` (``models.spec.ModelSpec``: tensors, recurrent
state, data, packing, before image, loss, evaluation tasks), which imports PyTorch only inside the
functions that build or feed a network; ``models.registry`` registers them, one line each. Nothing outside
``models/`` branches on a model's name. Imports only ``core`` of the project.

Modules:
- ``models.spec``: ``ModelSpec``, ``TensorSpec``, ``DataSpec``, ``EvalTask``.
- ``models.registry``: ``get(name) -> ModelSpec``, ``names()``.
- ``models.rdpd`` / ``models.dc2`` / ``models.uid``: the networks (specs: ``models.<name>_spec``); ``forward``
  takes positional NCHW tensors and returns a tuple.
- ``models.blocks``: conv blocks, ``ConvLSTMCell`` (seed 004 eq. 7-11), ``ASPPBlock`` (seed 001
  table 1), ``dynamic_filter_7x7`` (49 pad+slice multiply-adds), ``SymmetricKernelBank``
  (seed 003 kernels and FFT inverse, held as a buffer).
- ``models.losses``: the training losses the specs name (seed 004 edge loss, DC2 multi-scale, UiD).
- ``models.examples``: plausible example inputs for tracing and shapes.
- ``models.checkpoint``: safetensors + JSON sidecar checkpoints.
- ``models.complexity``: parameter and MAC counts (``FlopCounterMode``, MAC = FLOP / 2).
- ``models.radial``: ``radial_map`` (r / r_corner of the full image, for crops and tiles).
See docs/MODELS.md and docs/ARCHITECTURE.md.
"""
from .registry import ModelSpec, TensorSpec, get, names

__all__ = ["ModelSpec", "TensorSpec", "get", "names"]
