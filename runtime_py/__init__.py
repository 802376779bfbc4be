"""Runtime harness: capture readers (Pixel DP, DPDD, Garg, iPhone HEIC, UW+W bundles), UW->W
alignment, defocus maps, one ``Runner`` interface over PyTorch and every export target's runtime
(``runners``, reading ``export.targets``), tiled and streaming inference, ``run_capture`` (what
``cli.py run`` does) and ``demo`` (``make demo``). Must not depend on training code.
"""
