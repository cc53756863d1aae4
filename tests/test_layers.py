"""Imports run one way: core (the shared vocabulary) at the bottom, then definitions and store,
workflows and activities, channels, triggers, and the CLI package `journeys` on top. A lower
layer importing a higher one fails here, naming the file and the import."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ["core", "definitions", "store", "workflows", "activities", "channels", "triggers", "journeys"]
#: What each package may not import: everything above it. (definitions and store, workflows and
#: activities share a level and may not import each other's upper neighbours.)
FORBIDDEN = {
    "core": set(LAYERS) - {"core"},
    "definitions": {"workflows", "activities", "channels", "triggers", "journeys"},
    "store": {"workflows", "activities", "channels", "triggers", "journeys"},
    "workflows": {"channels", "triggers", "journeys"},
    "activities": {"triggers", "journeys"},
}


def runtime_imports(path: Path):
    """Top-level package names imported at run time (imports under `if TYPE_CHECKING:` are not)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = {
        id(node)
        for branch in ast.walk(tree)
        if isinstance(branch, ast.If) and "TYPE_CHECKING" in ast.unparse(branch.test)
        for node in ast.walk(branch)
    }
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name.split(".")[0]) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.lineno, node.module.split(".")[0]


def test_imports_run_one_way():
    wrong = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for package, forbidden in FORBIDDEN.items()
        for path in sorted((ROOT / package).rglob("*.py"))
        for line, name in runtime_imports(path)
        if name in forbidden
    ]
    assert wrong == []
