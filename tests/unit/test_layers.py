"""The layering of STYLE.md, checked by scanning imports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
IO_MODULES = {
    "bytewax",
    "paho",
    "confluent_kafka",
    "socket",
    "http",
    "urllib",
    "requests",
    "polars",
    "structlog",
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def _python_files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("path", _python_files("domain"), ids=lambda p: p.name)
def test_domain_is_pure(path: Path) -> None:
    offending = {name for name in _imports(path) if name.split(".")[0] in IO_MODULES}
    assert not offending, f"{path.name} imports {offending}"


@pytest.mark.parametrize(
    "path",
    [p for package in ("connectors", "domain", "fleetwatch") for p in _python_files(package)],
    ids=lambda p: f"{p.parent.name}/{p.name}",
)
def test_only_dataflows_use_operators(path: Path) -> None:
    assert "bytewax.operators" not in _imports(path)
