"""Export: quantise and convert models to Core ML, LiteRT, ExecuTorch and ONNX.

``targets/`` (one object per target, and the registry), ``request`` (what is asked, errors,
capability checks), ``pipeline`` (plan and run), ``parity`` (verification on the real runtime),
``artifact`` (manifest, parity.json, atomic publication), ``report`` (the verdict table),
``quantize`` and ``calibration_data``. Must not train, and must not import ``runtime_py``.
"""
