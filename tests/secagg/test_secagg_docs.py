"""The adversary table cites tests that exist (a renamed test must update the docs)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _tests_in(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")
    }


def test_threat_model_cites_existing_tests() -> None:
    text = (ROOT / "docs" / "threat-model.md").read_text()
    section = text[text.index("## Secure-aggregation adversaries") :]
    section = section[: section.index("\n## ", 5)]
    cited: list[tuple[str, str]] = []
    current = ""
    for ref in re.findall(r"`([\w/]+\.py)?::(test_\w+)", section):
        current = ref[0] or current
        cited.append((current, ref[1]))
    assert len(cited) >= 20
    for file, name in cited:
        path = ROOT / "tests" / file
        assert path.exists(), file
        assert name in _tests_in(path), f"{file}::{name} is cited but does not exist"
