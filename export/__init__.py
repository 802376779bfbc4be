"""Export: quantise and convert models to Core ML, LiteRT, ExecuTorch and ONNX.

Will hold one module per target, quantisation, the artifact manifest and the parity check
run after every export. Must not train.
"""
