"""Roles depend downward only: the indicators and the api never import the ingest edge, and nothing below
the roles (services.events, shared) imports a role."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ROLES = ("services.ingest", "services.indicators", "services.api")
# package -> the packages it may not import
FORBIDDEN = {
    "services/indicators": ("services.ingest", "services.api"),
    "services/api": ("services.ingest",),
    "services/events": ROLES,
    "shared": ROLES + ("services.events",),
}


def imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_a_package_imports_no_role_above_or_beside_it(package):
    wrong = {
        f"{path.relative_to(ROOT)}: {name}"
        for path in sorted((ROOT / package).rglob("*.py"))
        for name in imported(path)
        if any(name == role or name.startswith(role + ".") for role in FORBIDDEN[package])
    }
    assert not wrong, sorted(wrong)
