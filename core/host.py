"""This machine: the platform flag (Core ML predictions need macOS) and a short description."""
from __future__ import annotations

import platform

IS_MACOS = platform.system() == "Darwin"


def host_info() -> dict:
    """System, machine and Python version, for manifests and result rows."""
    return {"system": platform.system(), "machine": platform.machine(), "python": platform.python_version()}
