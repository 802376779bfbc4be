"""Optics and dual-pixel PSFs: thin lens, camera profiles, the Butterworth DP PSF model, PSF
banks, and calibrating them on a device (chart, estimation from captures, kernel stacks, model
fits, the report) plus the classical DP deblurring baseline. Knows nothing about networks."""
