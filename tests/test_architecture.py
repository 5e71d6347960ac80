"""The layering of docs/architecture.md, enforced by import-linter contracts in pyproject.toml,
and the core's code free of vendor names."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_import_contracts_hold() -> None:
    lint = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    result = subprocess.run([lint, "--no-cache"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 5 kept, 0 broken." in result.stdout


VENDOR = re.compile(r"salesforce|harvest|tryton|__c\b", re.IGNORECASE)
CORE = ("domain", "ports", "flows", "engine", "mdm")


def _without_docstrings(tree: ast.AST) -> ast.AST:
    """``tree`` with every bare string statement (docstrings, attribute docstrings) dropped."""
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list):
            node.body = [  # type: ignore[attr-defined]
                ast.Pass()
                if isinstance(s, ast.Expr)
                and isinstance(s.value, ast.Constant)
                and isinstance(s.value.value, str)
                else s
                for s in body
            ]
    return tree


def test_the_core_names_no_vendor_outside_docstrings() -> None:
    """Flows, engine, ports, domain and mdm speak of roles and canonical terms: no vendor
    name, vendor field or vendor id format in their code (docstring examples aside)."""
    found = []
    for package in CORE:
        for path in sorted((REPO / "src" / "closeloop" / package).rglob("*.py")):
            code = ast.unparse(_without_docstrings(ast.parse(path.read_text())))
            found += [
                f"{path.name}: {line.strip()}" for line in code.splitlines() if VENDOR.search(line)
            ]
    assert found == []
