"""Training: datasets, losses, metrics and the training loop for the three models.

``train.synth`` is the synthetic defocus data engine (scenes, layered dual-pixel renderer,
distortion, noise, W/UW camera pairs) that every model trains on.
"""
