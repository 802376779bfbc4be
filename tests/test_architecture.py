"""The layout's rules (docs/ARCHITECTURE.md), checked on the source: model facts live in
``models/`` (nothing else branches on a model's name) and imports run one way."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from models.registry import names

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "models", "calibration", "synth", "train", "export", "runtime_py", "device_tests", "demo")


def _sources(exclude=("models", "tests")) -> list[Path]:
    """Every project .py file outside the folders ``exclude`` names."""
    files = [p for p in ROOT.rglob("*.py") if ".venv" not in p.parts and not p.name.startswith(".")]
    return [p for p in files if p.relative_to(ROOT).parts[0] not in exclude]


def _target_names() -> list[str]:
    from export import targets

    return [n for t in targets.all() for n in (t.name, *t.aliases)]


def _name_comparisons(text: str, known=None) -> list[str]:
    """Comparisons with a registered model name (or the ``known`` names): ``== "rdpd"``,
    ``"dc2" !=``, ``in ("rdpd", ...)``, ``case "uid"``."""
    q = "|".join(re.escape(n) for n in sorted(known or names(), key=len, reverse=True))
    lit = rf"""['"](?:{q})['"]"""
    pattern = re.compile(rf"""(?:==|!=)\s*{lit}|{lit}\s*(?:==|!=)|\bin\s*[(\[{{][^)\]}}\n]*{lit}|\bcase\s+{lit}""")
    return [m.group(0) for m in pattern.finditer(text)]


def test_the_check_finds_a_branch_on_a_model_name():
    assert _name_comparisons('if model == "rdpd":\n') == ['== "rdpd"']
    assert _name_comparisons("x = 1 if 'dc2' != name else 2") == ["'dc2' !="]
    assert _name_comparisons('if model in ("rdpd", "uid"):') == ['in ("rdpd", "uid"']
    assert _name_comparisons('get("rdpd")') == []


def test_no_branch_on_a_model_name_outside_models_and_tests():
    hits = {str(p.relative_to(ROOT)): found for p in _sources() if (found := _name_comparisons(p.read_text()))}
    assert not hits, f"model facts outside models/: {hits}"


def test_no_branch_on_a_target_name_outside_export_targets_and_tests():
    assert _name_comparisons('if target in ("coreml", "executorch-coreml"):', _target_names())
    hits = {str(p.relative_to(ROOT)): found for p in _sources()
            if p.relative_to(ROOT).parts[:2] != ("export", "targets")
            and (found := _name_comparisons(p.read_text(), _target_names()))}
    assert not hits, f"target facts outside export/targets/: {hits}"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module.split(".")[0])
    return out & set(PACKAGES)


# folder -> project folders it must not import (ARCHITECTURE.md, "Folders")
FORBIDDEN = {
    "core": set(PACKAGES) - {"core"},
    "models": set(PACKAGES) - {"core", "models"},
    "calibration": {"models", "synth", "train", "export", "runtime_py", "device_tests", "demo"},
    "synth": {"train", "export", "runtime_py", "device_tests", "demo"},
    "train": {"export", "device_tests", "demo"},
    "export": {"train", "runtime_py", "device_tests", "demo"},
    "runtime_py": {"train", "device_tests", "demo"},
    "device_tests": {"demo"},
    "demo": {"train"},
}


@pytest.mark.parametrize("folder", sorted(FORBIDDEN))
def test_imports_run_one_way(folder):
    bad = {str(p.relative_to(ROOT)): sorted(_imports(p) & FORBIDDEN[folder])
           for p in (ROOT / folder).rglob("*.py")}
    assert not {k: v for k, v in bad.items() if v}
