"""Optics and dual-pixel PSFs: thin lens, camera profiles, the Butterworth DP PSF model,
PSF banks, and (later) PSF estimation from device captures. Knows nothing about networks."""
