"""Reading a JSON file the user handed us, with one clear error naming it (one home for the
"missing / not JSON" checks of manifests, sidecars, bundles and charts)."""
from __future__ import annotations

import json
from pathlib import Path

from core.errors import UserError


def read_json(path: str | Path, error: type[UserError] = UserError, missing: str = "not found",
              invalid: str = "not valid JSON"):
    """The parsed content of ``path``; ``error(f"{path}: {missing}")`` when it is not a file and
    ``error(f"{path}: {invalid} (<parser message>)")`` when it does not parse."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: {missing}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{path}: {invalid} ({exc})") from None
