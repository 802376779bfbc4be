"""Synthetic defocus data engine (seed 004, section 2).

scenes (dead leaves, slanted planes, image + depth from files) -> thin-lens CoC per pixel ->
layered dual-pixel rendering with Butterworth PSFs (alpha-blended back to front) -> radial
distortion -> signal-dependent noise; plus phone wide/ultra-wide pairs and refocus targets.
``synth.samples`` turns renders into model-ready examples through a model's spec (training
pools, test splits, int8 calibration and parity inputs). Imports no train, export or runtime code.
"""
