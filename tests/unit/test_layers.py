"""The layering of STYLE.md, held by scanning the imports (ast) of every module.

- Which package may import what (``FORBIDDEN``): domain ← runtime ← connectors ← dataflows
  ← fleetwatch, and the harness (devtools), benchmarks and tests on top; the domain imports
  no I/O module, the runtime neither the engine nor a broker client.
- Only ``dataflows/`` builds flows (``bytewax.operators``). Tests may too: they wrap one step
  in a small flow (tests/unit/test_state_bounds.py) and name its logic class. Benchmarks and
  devtools may not: they run the real flows as processes (devtools/launcher.py).
- A flow module (``__getattr__ = lazy_flow(...)``) never imports another flow module: what
  two flows share lives in ``dataflows/_*.py`` or in a step module (dataflows/speeding.py).
- A class deriving from a Bytewax source, sink or partition lives in ``connectors/``
  (tests, benchmarks and devtools may define their own doubles and baselines).
- No import cycle between packages.

Each module is a test case; a failure names the module, the line and the import.
"""

from __future__ import annotations

import ast
import functools
import importlib
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from bytewax.inputs import Source, StatefulSourcePartition, StatelessSourcePartition
from bytewax.outputs import Sink, StatefulSinkPartition, StatelessSinkPartition

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = (
    "domain",
    "runtime",
    "connectors",
    "dataflows",
    "fleetwatch",
    "devtools",
    "benchmarks",
    "tests",
)

# What pure logic must not import: the engine, brokers, sockets, HTTP, databases, files,
# logging, metrics.
IO_MODULES = frozenset(
    {
        "bytewax",
        "paho",
        "amqtt",
        "confluent_kafka",
        "socket",
        "ssl",
        "selectors",
        "asyncio",
        "http",
        "urllib",
        "requests",
        "httpx",
        "aiohttp",
        "smtplib",
        "boto3",
        "botocore",
        "psycopg",
        "sqlite3",
        "duckdb",
        "polars",
        "pyarrow",
        "os",
        "io",
        "pathlib",
        "shutil",
        "tempfile",
        "subprocess",
        "logging",
        "structlog",
        "prometheus_client",
    }
)
_ABOVE_RUNTIME = frozenset({"connectors", "dataflows", "fleetwatch", "devtools", "benchmarks"})
# package: what its modules must not import (packages of this repository, third-party and
# standard modules; a name forbids its submodules too).
FORBIDDEN: dict[str, frozenset[str]] = {
    "domain": IO_MODULES | _ABOVE_RUNTIME | {"runtime", "tests"},
    "runtime": _ABOVE_RUNTIME | {"tests", "bytewax", "paho", "confluent_kafka"},
    "connectors": frozenset({"dataflows", "fleetwatch", "devtools", "benchmarks", "tests"}),
    "dataflows": frozenset({"fleetwatch", "devtools", "benchmarks", "tests"}),
    "fleetwatch": frozenset({"devtools", "benchmarks", "tests"}),
    "devtools": frozenset({"benchmarks", "tests"}),
    "benchmarks": frozenset({"tests"}),
}
OPERATORS = "bytewax.operators"
MAY_BUILD_FLOWS = frozenset({"dataflows", "tests"})
MAY_DEFINE_SOURCES_AND_SINKS = frozenset({"connectors", "tests", "benchmarks", "devtools"})
BYTEWAX_IO_BASES: tuple[type, ...] = (
    Source,
    StatefulSourcePartition,
    StatelessSourcePartition,
    Sink,
    StatefulSinkPartition,
    StatelessSinkPartition,
)


@dataclass(frozen=True)
class Import:
    """One imported name: ``name`` is a module, or ``module.attribute`` for ``from m import a``
    (then ``a`` may be a module or not)."""

    name: str
    line: int
    text: str

    def of(self, prefixes: frozenset[str] | set[str]) -> str | None:
        """The prefix of ``prefixes`` this import is or is inside, if any."""
        return next((p for p in prefixes if self.name == p or self.name.startswith(p + ".")), None)


@dataclass(frozen=True)
class Module:
    name: str
    path: Path

    @property
    def package(self) -> str:
        return self.name.split(".")[0]

    @property
    def where(self) -> str:
        return str(self.path.relative_to(ROOT))

    def __str__(self) -> str:
        return self.name


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@functools.cache
def all_modules() -> tuple[Module, ...]:
    return tuple(
        Module(_module_name(path), path)
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
    )


@functools.cache
def _tree(module: Module) -> ast.Module:
    return ast.parse(module.path.read_text(), str(module.path))


def _from_base(module: Module, node: ast.ImportFrom) -> str:
    """The absolute module of ``from <base> import ...`` (relative imports resolved)."""
    if not node.level:
        return node.module or ""
    package = module.name.split(".")
    if module.path.name != "__init__.py":
        package = package[:-1]
    package = package[: len(package) - (node.level - 1)]
    return ".".join([*package, *([node.module] if node.module else [])])


@functools.cache
def imports(module: Module) -> tuple[Import, ...]:
    """Every import of ``module``, at any depth (inside functions and TYPE_CHECKING too)."""
    found: list[Import] = []
    for node in ast.walk(_tree(module)):
        if isinstance(node, ast.Import):
            found += [Import(a.name, node.lineno, f"import {a.name}") for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _from_base(module, node)
            for alias in node.names:
                name = base if alias.name == "*" else f"{base}.{alias.name}"
                found.append(Import(name, node.lineno, f"from {base} import {alias.name}"))
    return tuple(found)


def resolve(name: str) -> str | None:
    """The module of this repository that ``name`` is or lies in (longest match)."""
    names = {m.name for m in all_modules()}
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in names:
            return ".".join(parts[:end])
    return None


def _modules_of(*packages: str) -> list[Module]:
    return [m for m in all_modules() if m.package in packages]


def _modules_outside(packages: frozenset[str]) -> list[Module]:
    return [m for m in all_modules() if m.package not in packages]


def _report(module: Module, problems: list[str]) -> str:
    return f"{module.where}:\n  " + "\n  ".join(problems)


# -- which package may import what -------------------------------------------------------


@pytest.mark.parametrize("module", _modules_of(*FORBIDDEN), ids=str)
def test_imports_follow_the_layers(module: Module) -> None:
    forbidden = FORBIDDEN[module.package]
    problems = [
        f"line {i.line}: {i.text} ({module.package} may not import {prefix})"
        for i in imports(module)
        if (prefix := i.of(forbidden))
    ]
    assert not problems, _report(module, problems)


@pytest.mark.parametrize("module", _modules_outside(MAY_BUILD_FLOWS), ids=str)
def test_only_dataflows_build_flows(module: Module) -> None:
    problems = [
        f"line {i.line}: {i.text} (only dataflows/ builds flows)"
        for i in imports(module)
        if i.of({OPERATORS})
    ]
    assert not problems, _report(module, problems)


# -- flow modules ------------------------------------------------------------------------


def _is_flow_module(module: Module) -> bool:
    """Defines ``__getattr__ = lazy_flow(...)``: what ``python -m bytewax.run`` runs."""
    for node in _tree(module).body:
        if (
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "__getattr__" for t in node.targets)
            and isinstance(node.value, ast.Call)
        ):
            function = node.value.func
            called = function.id if isinstance(function, ast.Name) else ""
            if isinstance(function, ast.Attribute):
                called = function.attr
            if called == "lazy_flow":
                return True
    return False


FLOW_MODULES = [m for m in _modules_of("dataflows") if _is_flow_module(m)]


def test_flow_modules_are_found() -> None:
    assert "dataflows.alerts" in {m.name for m in FLOW_MODULES}, "the detection broke"


@pytest.mark.parametrize("module", FLOW_MODULES, ids=str)
def test_a_flow_module_imports_no_other_flow_module(module: Module) -> None:
    flows = {m.name for m in FLOW_MODULES} - {module.name}
    problems = [
        f"line {i.line}: {i.text} (another flow: share code through dataflows/_*.py "
        "or a step module)"
        for i in imports(module)
        if resolve(i.name) in flows
    ]
    assert not problems, _report(module, problems)


# -- Bytewax sources and sinks -----------------------------------------------------------


def _bindings(module: Module) -> dict[str, str]:
    """Top-level names bound by imports, to what they name (``import a.b`` binds ``a``)."""
    bound: dict[str, str] = {}
    for node in ast.walk(_tree(module)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    bound[alias.asname] = alias.name
                else:
                    head = alias.name.split(".")[0]
                    bound[head] = head
        elif isinstance(node, ast.ImportFrom):
            base = _from_base(module, node)
            for alias in node.names:
                bound[alias.asname or alias.name] = f"{base}.{alias.name}"
    return bound


def _dotted(expression: ast.expr, bound: dict[str, str]) -> str | None:
    """``a.b.C`` or ``C`` (or ``C[X]``) as the dotted name it refers to, when imported."""
    if isinstance(expression, ast.Subscript):
        return _dotted(expression.value, bound)
    if isinstance(expression, ast.Attribute):
        head = _dotted(expression.value, bound)
        return f"{head}.{expression.attr}" if head else None
    if isinstance(expression, ast.Name):
        return bound.get(expression.id)  # a class of this module is checked on its own
    return None


def _bytewax_base(dotted: str) -> type | None:
    """The Bytewax source/sink/partition class that ``dotted`` derives from, if any."""
    parts = dotted.split(".")
    for end in range(len(parts) - 1, 0, -1):
        try:
            value: object = importlib.import_module(".".join(parts[:end]))
        except ImportError:
            continue
        try:
            for attribute in parts[end:]:
                value = getattr(value, attribute)
        except AttributeError:
            return None
        if isinstance(value, type):
            return next((b for b in BYTEWAX_IO_BASES if issubclass(value, b)), None)
        return None
    return None


def _bytewax_classes(module: Module) -> Iterator[str]:
    bound = _bindings(module)
    for node in ast.walk(_tree(module)):
        if isinstance(node, ast.ClassDef):
            for base in node.bases:
                dotted = _dotted(base, bound)
                found = _bytewax_base(dotted) if dotted else None
                if found is not None:
                    yield (
                        f"line {node.lineno}: class {node.name}({ast.unparse(base)}) is a "
                        f"{found.__module__}.{found.__name__} (sources and sinks live in "
                        "connectors/)"
                    )


@pytest.mark.parametrize("module", _modules_outside(MAY_DEFINE_SOURCES_AND_SINKS), ids=str)
def test_sources_and_sinks_live_in_connectors(module: Module) -> None:
    problems = list(_bytewax_classes(module))
    assert not problems, _report(module, problems)


def test_the_source_and_sink_detection_sees_connectors() -> None:
    (kafka_source,) = [m for m in all_modules() if m.name == "connectors.kafka_source"]
    assert len(list(_bytewax_classes(kafka_source))) == 2, "the detection broke"


# -- no cycles between packages ----------------------------------------------------------


@functools.cache
def package_edges() -> dict[str, dict[str, str]]:
    """package -> imported package -> one import that makes the edge (module:line text)."""
    edges: dict[str, dict[str, str]] = {p: {} for p in PACKAGES}
    for module in all_modules():
        for i in imports(module):
            target = resolve(i.name)
            if target is not None and target.split(".")[0] != module.package:
                edges[module.package].setdefault(
                    target.split(".")[0], f"{module.where}:{i.line} {i.text}"
                )
    return edges


def _path(edges: dict[str, dict[str, str]], start: str, goal: str) -> list[str] | None:
    """Packages from ``start`` to ``goal`` along import edges (breadth first), if any."""
    came_from: dict[str, str | None] = {start: None}
    queue = [start]
    while queue:
        current = queue.pop(0)
        if current == goal:
            path = [current]
            while (previous := came_from[path[-1]]) is not None:
                path.append(previous)
            return path[::-1]
        for nxt in edges[current]:
            if nxt not in came_from:
                came_from[nxt] = current
                queue.append(nxt)
    return None


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_cycle_through(package: str) -> None:
    edges = package_edges()
    for imported in edges[package]:
        back = _path(edges, imported, package)
        if back is not None:
            cycle = [package, *back]
            steps = [f"{a} -> {b}: {edges[a][b]}" for a, b in itertools.pairwise(cycle)]
            pytest.fail("import cycle:\n  " + "\n  ".join(steps))
