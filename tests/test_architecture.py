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


# Where the web stack may be imported: the one HTTP pipeline (http/) and the process runtime (runtime/). REST, MCP,
# SSE and the dashboard read requests and make answers through http/ (a fix to hypercorn goes in runtime/patches.py).
WEB_STACK_ALLOWED = ("runtime/", "http/")


def test_only_the_http_pipeline_and_the_runtime_import_the_web_stack() -> None:
    offenders = []
    for path in LIB.rglob("*.py"):
        rel = path.relative_to(LIB).as_posix()
        if rel.startswith(WEB_STACK_ALLOWED):
            continue
        bad = sorted({m for m in _modules(path) if m.split(".")[0] in WEB_MODULES})
        if bad:
            offenders.append(f"{rel}: {bad}")
    assert not offenders, (f"{offenders}: only commhub_lib/http/ (and runtime/) may import quart, quart_trio, "
                           "werkzeug or hypercorn")


def _relative_imports(path: Path) -> set[str]:
    """The commhub_lib modules a file imports, as dotted names relative to commhub_lib ("api.common")."""
    package = path.relative_to(LIB).with_suffix("").parts[:-1]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level == 0:
                if node.module and node.module.startswith("commhub_lib."):
                    names.add(node.module.removeprefix("commhub_lib."))
                continue
            base = list(package[:len(package) - node.level + 1])
            target = ".".join([*base, *(node.module.split(".") if node.module else [])])
            names.add(target)
            names.update(f"{target}.{a.name}".lstrip(".") for a in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name.removeprefix("commhub_lib.") for a in node.names if a.name.startswith("commhub_lib."))
    return names


@pytest.mark.parametrize("where", ["mcp", "sse.py"])
def test_mcp_and_sse_never_import_the_rest_package(where: str) -> None:
    """MCP and SSE share with REST only what lives in http/ (and below): never the REST handlers' package."""
    paths = list((LIB / where).rglob("*.py")) if (LIB / where).is_dir() else [LIB / where]
    offenders = {}
    for path in paths:
        rest = sorted(n for n in _relative_imports(path) if n.split(".")[0] == "api")
        if rest:
            offenders[path.relative_to(LIB).as_posix()] = rest
    assert not offenders, f"{offenders}: mcp/ and sse.py never import api/ (shared pieces go in http/ or service/)"


def test_every_route_comes_from_the_one_route_table() -> None:
    """Quart's URL rules and the ASGI dispatch ahead of Quart are both made from http/routes.py: no route is
    declared anywhere else (a blueprint, an app.route) and every entry of the table is served."""
    from commhub_lib.http.app import create_app
    from commhub_lib.http.routes import FAST_KINDS, ROUTES
    from commhub_lib.service.hub import Hub

    for path in LIB.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"\bBlueprint\(|@\w+\.(route|get|post|put|patch|delete)\(", text), (
            f"{path.relative_to(ROOT)} declares a route: add an entry to commhub_lib/http/routes.py instead")
    app = create_app(Hub(settings=Settings(), db=object()))  # type: ignore[arg-type]  (no request is served)
    rules = {(rule.rule, method, rule.endpoint) for rule in app.url_map.iter_rules() if rule.endpoint != "static"
             for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}}
    assert rules == {(r.path, r.method, r.endpoint) for r in ROUTES}
    fast = {(path, method) for path, methods in app.fast.exact.items() for method in methods}
    fast |= {(pattern.pattern, method) for _, pattern, methods in app.fast.patterns for method in methods}
    assert len(fast) == sum(2 if r.kind == "stream" else 1 for r in ROUTES if r.kind in FAST_KINDS)


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
        if rel.parts[0] == "store" or rel.name in ("db.py", "db_pg.py"):  # the store and the two engines
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
