"""The generated references in docs/ (settings, MCP tools, REST) equal what `python -m commhub_lib.docs_gen` writes
from the code now: a new setting, tool or route fails here until the docs are regenerated. The README and the
docs link only to pages and files that exist."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import pytest
import trio

from commhub_lib import docs_gen
from commhub_lib.config import Settings, env_name
from commhub_lib.mcp.tools import TOOLS

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pages() -> dict[str, str]:
    return docs_gen.pages()


@pytest.mark.parametrize("name", ["settings.md", "mcp-tools.md", "rest.md"])
def test_generated_page_is_current(pages: dict[str, str], name: str) -> None:
    path = ROOT / "docs" / name
    assert path.exists(), f"docs/{name} is missing: run `python -m commhub_lib.docs_gen`"
    assert path.read_text(encoding="utf-8") == pages[name], (
        f"docs/{name} differs from the code: run `python -m commhub_lib.docs_gen` and commit the result")


def test_every_setting_has_its_row(pages: dict[str, str]) -> None:
    for f in fields(Settings):
        assert re.search(rf"^\| [^|]+ \| `{env_name(f.name)}` \|", pages["settings.md"], re.M), f.name


def test_every_tool_has_its_section_and_fields(pages: dict[str, str]) -> None:
    for name, tool in TOOLS.items():
        assert f"\n## {name}\n" in pages["mcp-tools.md"], name
        for field in tool.descriptor()["inputSchema"]["properties"]:
            assert f"| `{field}` |" in pages["mcp-tools.md"], (name, field)


def test_every_route_has_its_section(pages: dict[str, str]) -> None:
    spec = trio.run(docs_gen._openapi)
    for path, ops in spec["paths"].items():
        for method in ops:
            assert f"### `{method.upper()} {path}`" in pages["rest.md"], (method, path)


def test_a_new_setting_changes_the_page() -> None:
    """The page follows the code: what the test above compares against is never a stale copy."""
    before = docs_gen.settings_md()
    docs_gen.HELP["host"] = docs_gen.HELP["host"] + " (changed)"
    try:
        assert docs_gen.settings_md() != before
    finally:
        docs_gen.HELP["host"] = docs_gen.HELP["host"].removesuffix(" (changed)")


# Pages other branches of this step write (issue 18); once merged they exist and this set can be emptied.
BEING_WRITTEN: set[str] = set()
LINK = re.compile(r"\]\(([^)#\s]*)(?:#([^)\s]*))?\)")


def anchors(markdown: str) -> set[str]:
    """The anchors GitHub makes of a page's headings: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"```.*?```", "", markdown, flags=re.S)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
            for h in re.findall(r"^#{1,6} (.+)$", text, flags=re.M)}


@pytest.mark.parametrize("doc", sorted(p.relative_to(ROOT).as_posix() for p in
                                       [ROOT / "README.md", *(ROOT / "docs").glob("*.md"),
                                        ROOT / "bench" / "README.md", ROOT / "bench" / "RESULTS.md"]))
def test_relative_links_point_at_files_and_headings_that_exist(doc: str) -> None:
    path = ROOT / doc
    missing, unanchored = [], []
    for target, anchor in LINK.findall(path.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+:", target) or Path(target).name in BEING_WRITTEN:
            continue
        file = path.parent / target if target else path
        if not file.exists():
            missing.append(target)
        elif anchor and file.suffix == ".md" and anchor not in anchors(file.read_text(encoding="utf-8")):
            unanchored.append(f"{target}#{anchor}")
    assert not missing, f"{doc} links to files that do not exist: {missing}"
    assert not unanchored, f"{doc} links to headings that do not exist: {unanchored}"
