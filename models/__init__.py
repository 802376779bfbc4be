"""The three networks (RDPD, DC2, UiD), their shared blocks and the model registry.

Will hold: conv blocks, the peephole ConvLSTM cell, ASPP, the 7x7 dynamic filter written as
shifted multiply-adds, the symmetric kernel bank, and ``models.registry.get(name)``.
Must not import training, export or runtime code.

Modules:
- ``models.blocks``: conv blocks, ``ConvLSTMCell`` (seed 004 eq. 7-11), ``ASPPBlock`` (seed 001
  table 1), ``dynamic_filter_7x7`` (49 pad+slice multiply-adds), ``SymmetricKernelBank``
  (seed 003 kernels and FFT inverse, held as a buffer).
- ``models.rdpd`` / ``models.dc2`` / ``models.uid``: the networks, variants ``paper``,
  ``mobile``, ``tiny``; ``forward`` takes positional NCHW tensors and returns a tuple.
- ``models.registry``: ``get(name) -> ModelSpec`` (builder, named inputs/outputs, shapes,
  example inputs), ``names()``.
- ``models.complexity``: parameter and MAC counts (``FlopCounterMode``, MAC = FLOP / 2).
- ``models.radial``: ``radial_map`` (r / r_corner of the full image, for crops and tiles).
See docs/MODELS.md.
"""
from .registry import ModelSpec, TensorSpec, get, names

__all__ = ["ModelSpec", "TensorSpec", "get", "names"]
