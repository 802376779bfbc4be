"""Training: the loop (AMP, exact resume, DDP via torchrun), configs, data sources on disk,
evaluation on synthetic splits and real-format captures, and starter-checkpoint publishing.

Data comes from ``synth`` (the data engine, model-ready samples); losses, targets and task
metrics come from each model's spec (``models.registry.get(name)``). Exports nothing.
"""
