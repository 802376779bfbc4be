"""Runtime harness: capture readers, UW->W alignment, defocus maps and artifact runners.

Will hold readers for Pixel DP / DPDD / iPhone captures, optical-flow alignment, and one
``Runner`` interface over torch, onnxruntime, ExecuTorch, LiteRT and Core ML.
Must not depend on training code.
"""
