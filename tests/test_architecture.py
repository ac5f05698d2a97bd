"""Guards for the shape of the code (STYLE.md): import direction, SQL only in the store, documented settings."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from commhub_lib.config import HELP, Settings, env_name

ROOT = Path(__file__).resolve().parents[1]
LIB = ROOT / "commhub_lib"
SQL_RE = re.compile(r"\b(SELECT\s.+\sFROM|INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM)\b", re.I | re.S)
WEB_MODULES = ("quart", "quart_trio", "hypercorn", "werkzeug")


def _modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("layer", ["service", "store"])
def test_inner_layers_do_not_import_the_web_stack(layer: str) -> None:
    for path in (LIB / layer).glob("*.py"):
        bad = {m for m in _modules(path) if m.split(".")[0] in WEB_MODULES}
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}: the service and store never import the web stack"


# Where hypercorn may be imported: the process runtime (server, patches) and, until the one HTTP pipeline (http/)
# takes them over, the modules that speak HTTP themselves.
HYPERCORN_ALLOWED = ("runtime/", "http/", "api/", "web/", "app.py", "asgi.py", "sse.py", "mcp/http.py")


def test_only_the_runtime_and_the_http_modules_import_hypercorn() -> None:
    offenders = []
    for path in LIB.rglob("*.py"):
        rel = path.relative_to(LIB).as_posix()
        if rel.startswith(HYPERCORN_ALLOWED):
            continue
        if any(m.split(".")[0] == "hypercorn" for m in _modules(path)):
            offenders.append(rel)
    assert not offenders, (f"{offenders} import hypercorn: only runtime/ (and the HTTP-facing modules) may; "
                           "a fix to hypercorn goes in runtime/patches.py")


def test_the_runtime_is_imported_only_by_the_command_that_starts_the_server() -> None:
    """runtime/ is how the process runs (server, gc, malloc, stall log, log set-up): endpoints, the service and the
    store never reach into it."""
    offenders = []
    for path in LIB.rglob("*.py"):
        rel = path.relative_to(LIB).as_posix()
        if rel.startswith("runtime/") or rel == "cli/serve.py":
            continue
        text = path.read_text(encoding="utf-8")
        if re.search(r"^\s*from \.+runtime\b|commhub_lib\.runtime\b", text, re.M):
            offenders.append(rel)
    assert not offenders, f"{offenders} import commhub_lib.runtime: only cli/serve.py starts the server"


def test_store_does_not_import_the_service() -> None:
    for path in (LIB / "store").glob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert "from ..service" not in text and "commhub_lib.service" not in text, path


def test_sql_lives_only_in_the_store() -> None:
    offenders = []
    for path in LIB.rglob("*.py"):
        rel = path.relative_to(LIB)
        if rel.parts[0] == "store" or rel.name == "db.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL_RE.search(node.value):
                offenders.append(f"{rel}:{node.lineno}")
    assert not offenders, f"SQL outside commhub_lib/store: {offenders}"


def test_every_setting_has_help_and_is_documented() -> None:
    # The settings table lives in docs/settings.md (generated; tests/test_docs_current.py keeps it equal to the code).
    documented = (ROOT / "docs" / "settings.md").read_text(encoding="utf-8")
    for f in fields(Settings):
        assert f.name in HELP, f"setting {f.name} has no help text"
        assert env_name(f.name) in documented, f"{env_name(f.name)} is not documented in docs/settings.md"


def test_readme_test_command_is_what_ci_runs() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    command = ci.strip().splitlines()[-1]
    assert command == "python -m pytest"
    assert command in readme


@pytest.mark.skipif(shutil.which("ruff") is None and not (Path(sys.executable).parent / "ruff").exists(),
                    reason="ruff is not installed")
@pytest.mark.subprocess
def test_ruff_is_clean() -> None:
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    result = subprocess.run([ruff, "check", str(ROOT)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
