"""The error catalogue (commhub_lib/errors.CATALOGUE) is complete and exact: every error code spelled anywhere in
commhub_lib is catalogued with the status of what raises it, every catalogued code is used, and docs/errors.md is
the catalogue's generated text."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from commhub_lib import errors
from commhub_lib.errors import CATALOGUE, CommhubError, catalogue_markdown

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "commhub_lib"

# Calls whose positional argument at this index is an error code.
CODE_ARGUMENT = {"error_bytes": 0, "_tool_error": 0, "error_response": 1, "ClientError": 1}
# Module-level names that hold error codes (a why-it-ended reason that a request naming the session is told).
CODE_NAMES = {"HTTP_CODES", "ENDED", "EVICTED_TOKEN_CAP", "EVICTED_TOTAL_CAP"}
STATUS_OF_CLASS = {name: cls.status for name, cls in vars(errors).items()
                   if isinstance(cls, type) and issubclass(cls, CommhubError)}


def _name(func: ast.expr) -> str:
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""


def _strings(node: ast.expr | None) -> list[str]:
    """The string constants of an expression (a constant, or the items of a tuple or dict of them)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.Tuple):
        return [s for item in node.elts for s in _strings(item)]
    if isinstance(node, ast.Dict):
        return [s for value in node.values for s in _strings(value)]
    return []


def code_uses() -> list[tuple[str, int | None, str]]:
    """Every error code spelled in commhub_lib: (code, the status its raising site gives or None, where)."""
    uses: list[tuple[str, int | None, str]] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Call):
                func = _name(node.func)
                for kw in node.keywords:
                    if kw.arg == "code":
                        uses += [(code, STATUS_OF_CLASS.get(func), where) for code in _strings(kw.value)]
                index = CODE_ARGUMENT.get(func)
                if index is not None and len(node.args) > index:
                    first = node.args[0]
                    status = first.value if func == "ClientError" and isinstance(first, ast.Constant) \
                        and isinstance(first.value, int) else None
                    uses += [(code, status, where) for code in _strings(node.args[index])]
                if func == "get" and len(node.args) == 2 and _strings(node.args[0]) == ["error"]:
                    uses += [(code, None, where) for code in _strings(node.args[1])]  # .get("error", default)
                if func == "get" and isinstance(node.func, ast.Attribute) and _name(node.func.value) == "HTTP_CODES":
                    uses += [(code, None, where) for code in _strings(node.args[1])]
            elif isinstance(node, ast.Dict):
                for key, value in zip(node.keys, node.values, strict=True):
                    if key is not None and _strings(key) == ["error"] and isinstance(value, ast.Constant):
                        uses += [(code, None, where) for code in _strings(value)]
            elif isinstance(node, ast.ClassDef) and node.name in STATUS_OF_CLASS:
                for stmt in node.body:
                    if isinstance(stmt, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "code"
                                                            for t in stmt.targets):
                        uses += [(code, STATUS_OF_CLASS[node.name], where) for code in _strings(stmt.value)]
            elif isinstance(node, ast.Assign) and any(
                    isinstance(t, ast.Name | ast.Tuple) and {n.id for n in ast.walk(t) if isinstance(n, ast.Name)}
                    & CODE_NAMES for t in node.targets):
                uses += [(code, None, where) for code in _strings(node.value)]
    return uses


def test_the_scan_finds_the_known_spellings() -> None:
    """The scan itself sees each way a code is spelled (else the checks below would pass on nothing)."""
    used = {code for code, _, _ in code_uses()}
    for code in ("task_not_found", "internal_error", "session_not_found", "unsupported_media_type",
                 "session_evicted_total", "invalid_arguments", "unreachable", "tool_error", "storage_full"):
        assert code in used, code


def test_every_code_used_is_catalogued() -> None:
    """A code raised anywhere but missing from the catalogue fails here, naming where it is raised."""
    missing = sorted({f"{code} ({where})" for code, _, where in code_uses() if code not in CATALOGUE})
    assert not missing, "add these to errors.CATALOGUE: " + ", ".join(missing)


def test_every_catalogued_code_is_used() -> None:
    """A catalogued code nothing raises any more is a stale entry."""
    used = {code for code, _, _ in code_uses()}
    assert not sorted(set(CATALOGUE) - used)


def test_each_raising_site_gives_the_catalogued_status() -> None:
    """`NotFound(..., code="x")` must leave with x's catalogued status (a class's own code too)."""
    wrong = [f"{code} at {where}: raised with {status}, catalogued {CATALOGUE[code].status}"
             for code, status, where in code_uses()
             if status is not None and code in CATALOGUE and CATALOGUE[code].status not in (status, None)]
    assert not wrong, wrong


@pytest.mark.parametrize("code", sorted(CATALOGUE))
def test_each_entry_is_complete(code: str) -> None:
    """A snake_case code, a status (or None: it varies), a one-sentence meaning."""
    info = CATALOGUE[code]
    assert code.replace("_", "").isalpha() and code.islower()
    assert info.status is None or info.status in (0, 200) or 400 <= info.status < 600
    assert info.client_only or info.status != 0
    assert info.meaning.endswith(".") and "|" not in info.meaning


def test_docs_errors_md_is_generated_from_the_catalogue() -> None:
    """docs/errors.md is exactly catalogue_markdown(); regenerate it with
    `python -m commhub_lib.errors > docs/errors.md`."""
    assert (ROOT / "docs" / "errors.md").read_text(encoding="utf-8") == catalogue_markdown()
    for code in CATALOGUE:
        assert f"| `{code}` |" in catalogue_markdown()
