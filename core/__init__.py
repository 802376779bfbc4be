"""The few facts every folder of the project shares, each in one place.

- ``core.errors``: ``UserError``, the base of every error a user can fix (the CLI prints it as
  one line, exit 2; anything else is a bug, reported with its traceback saved to a file).
- ``core.atomic``: atomic output for files and folders (temp path, then rename; the previous
  output survives a failed run).
- ``core.sizes``: ``parse_size("HxW")``.
- ``core.metrics``: PSNR, SSIM, MAE.
- ``core.host``: ``IS_MACOS`` and a description of this machine.
- ``core.hashing``: ``sha256_path`` (a file, or a folder such as an ``.mlpackage``).
Imports nothing else of the project, so every folder (``models/`` included) may import it.
"""
