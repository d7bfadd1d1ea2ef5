"""Only runtime/clock.py reads the wall clock; everything else receives it (STYLE.md: time
comes from an injectable ``now``, never from ``datetime.now()`` buried in logic).

Scanned with ast: any reference to the wall-clock functions below (a call, or the function
passed as a default) in domain/, connectors/, dataflows/, runtime/ and fleetwatch/, through
whatever names the module imported them under. ``time.monotonic`` and ``time.sleep`` are
no wall clock and are not concerned.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("domain", "connectors", "dataflows", "runtime", "fleetwatch")
THE_CLOCK = "runtime/clock.py"
WALL_CLOCK = frozenset(
    {
        "datetime.datetime.now",
        "datetime.datetime.utcnow",
        "datetime.datetime.today",
        "datetime.date.today",
        "time.time",
        "time.time_ns",
    }
)

# Modules allowed to read the wall clock besides runtime/clock.py, each with why. Empty: an
# entry that is no longer needed fails test_the_allow_list_is_current.
ALLOWED: frozenset[tuple[str, str]] = frozenset()


def _modules() -> list[Path]:
    return [
        path
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        if path.relative_to(ROOT).as_posix() != THE_CLOCK
    ]


def _bindings(tree: ast.Module) -> dict[str, str]:
    """Names bound by imports, to the dotted name they stand for."""
    bound: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    bound[alias.asname] = alias.name
                else:
                    head = alias.name.split(".")[0]
                    bound[head] = head
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                bound[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return bound


def _dotted(expression: ast.expr, bound: dict[str, str]) -> str | None:
    if isinstance(expression, ast.Attribute):
        head = _dotted(expression.value, bound)
        return f"{head}.{expression.attr}" if head else None
    if isinstance(expression, ast.Name):
        return bound.get(expression.id)
    return None


def wall_clock_reads(path: Path) -> list[tuple[int, str]]:
    """(line, function) of each reference to a wall-clock function in ``path``."""
    tree = ast.parse(path.read_text(), str(path))
    bound = _bindings(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute | ast.Name) and isinstance(node.ctx, ast.Load):
            dotted = _dotted(node, bound)
            if dotted in WALL_CLOCK:
                found.append((node.lineno, dotted))
    return found


def _where(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


@pytest.mark.parametrize("path", _modules(), ids=_where)
def test_only_runtime_clock_reads_the_wall_clock(path: Path) -> None:
    where = _where(path)
    reads = [
        f"{where}:{line}: {function}"
        for line, function in wall_clock_reads(path)
        if (where, function) not in ALLOWED
    ]
    assert not reads, "take a clock (runtime/clock.py) instead:\n  " + "\n  ".join(reads)


def test_the_allow_list_is_current() -> None:
    found = {(_where(p), function) for p in _modules() for _line, function in wall_clock_reads(p)}
    stale = sorted(ALLOWED - found)
    assert not stale, f"no longer read there, remove from ALLOWED: {stale}"


def test_the_scan_sees_the_clock_itself() -> None:
    assert {f for _, f in wall_clock_reads(ROOT / THE_CLOCK)} == {"datetime.datetime.now"}
