"""The README and docs/ hang together and stay true: every relative link resolves (to a file,
and to a heading for a #anchor), the README links every page of docs/, and the reference
tables list what the code defines (variables, dead-letter codes, metrics)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

import runtime.metrics  # noqa: F401  (registers the metrics)
from domain.readings import Reason
from tests.kube import ROOT

DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", ROOT / "k8s" / "README.md", *sorted(DOCS.glob("*.md"))]
LINK = re.compile(r"!?\[(?:[^\]]|\][^(])*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^\s*(```|~~~)")


def prose(text: str) -> str:
    """The text outside fenced code blocks and inline code spans."""
    kept: list[str] = []
    fenced = False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            kept.append(re.sub(r"`[^`]*`", "", line))
    return "\n".join(kept)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: the rendered text, lower case, punctuation dropped,
    spaces as hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link shows its text
    text = text.replace("`", "").strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found: set[str] = set()
    fenced = False
    for line in page.read_text().splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        heading = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading and not fenced:
            base = slug(heading.group(1))
            name, n = base, 0
            while name in found:  # GitHub numbers repeated headings: x, x-1, x-2
                n += 1
                name = f"{base}-{n}"
            found.add(name)
    return found


def relative_links(page: Path) -> list[str]:
    return [
        target
        for target in LINK.findall(prose(page.read_text()))
        if not re.match(r"^[a-z][a-z0-9+.-]*:", target)  # http:, https:, mailto:
    ]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page: Path) -> None:
    broken = []
    for target in relative_links(page):
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target}: no heading #{anchor} in {file.relative_to(ROOT)}")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def test_the_readme_links_every_page_of_docs() -> None:
    linked = {
        (ROOT / target.partition("#")[0]).resolve() for target in relative_links(ROOT / "README.md")
    }
    assert set(DOCS.glob("*.md")) - linked == set()


def test_the_configuration_page_lists_every_variable() -> None:
    source = (ROOT / "runtime" / "settings.py").read_text()
    variables = set(re.findall(r'"(FLEET_[A-Z0-9_]*[A-Z0-9])"', source))
    page = (DOCS / "configuration.md").read_text()
    assert len(variables) > 40
    assert {v for v in variables if f"`{v}`" not in page} == set()
    assert "`FLEET_KAFKA_<PROPERTY>`" in page


def test_every_dead_letter_code_is_listed_and_explained() -> None:
    contract = (DOCS / "contract.md").read_text()
    section = contract.split("## Dead-letter codes", 1)[1].split("\n## ", 1)[0]
    explained = set(re.findall(r"^\| `([a-z_]+)` \|", section, re.M))
    assert {str(code) for code in Reason} - explained == set()
    shipped = "".join(
        path.read_text()
        for package in ("domain", "connectors", "dataflows")
        for path in (ROOT / package).rglob("*.py")
    )
    assert {code for code in explained if f'"{code}"' not in shipped} == set(), "no such code"
    readme = (ROOT / "README.md").read_text()
    assert {str(code) for code in Reason if f"`{code}`" not in readme} == set()
    assert "docs/contract.md#dead-letter-codes" in readme


def test_the_operations_page_lists_every_metric() -> None:
    served = {
        f"{family.name}_total" if family.type == "counter" else family.name
        for family in REGISTRY.collect()
        if family.name.startswith("fleetwatch_")
    }
    page = (DOCS / "operations.md").read_text()
    listed = set(re.findall(r"^\| `(fleetwatch_[a-z_]+)` \|", page, re.M))
    assert listed == served
