"""The layering and transaction rules of docs/architecture.md, checked on the source.

Every import of every module under `jivapay/` is read with `ast`, at the top level and inside
functions (an import hidden in a function is still a dependency), and so is every call to
`commit()` or `atomic_transaction`. The checkers are plain functions, exercised first on small
pieces of source so that a checker that finds nothing cannot pass unnoticed.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "jivapay"

HTTP = ("fastapi", "starlette")
UPPER = ("jivapay.api_routers", "jivapay.servers", "jivapay.middleware", "jivapay.worker")
# Bottom layers and what they may not import (the first matching prefix applies).
RULES: dict[str, tuple[str, ...]] = {
    # The fraud rule engine returns decisions; its callers move orders.
    "jivapay.services.fraud_detector": HTTP + UPPER + ("jivapay.services.order_status_manager",),
    "jivapay.services": HTTP + UPPER,
    "jivapay.database": HTTP + UPPER + ("jivapay.services",),
    "jivapay.utils": HTTP + UPPER + ("jivapay.services",),
    "jivapay.money": HTTP + UPPER + ("jivapay.services",),
    "jivapay.security": HTTP + UPPER + ("jivapay.services",),
    "jivapay.permissions": HTTP + UPPER + ("jivapay.services",),
    "jivapay.enums": HTTP + UPPER + ("jivapay.services",),
    "jivapay.config": HTTP + UPPER + ("jivapay.services",),
    "jivapay.task_names": HTTP + UPPER + ("jivapay.services",),
    "jivapay.task_queue": HTTP + UPPER + ("jivapay.services",),
    "jivapay.intake_dispatch": HTTP + UPPER + ("jivapay.services",),
    "jivapay.callback_dispatch": HTTP + UPPER + ("jivapay.services",),
    "jivapay.batch_dispatch": HTTP + UPPER + ("jivapay.services",),
}
# A re-export kept for branches written before the HTTP handlers moved to `servers`; remove both
# this entry and the module once nothing imports the old path.
TRANSITIONAL: set[str] = set()

# Where a transaction may be committed: the edges (the request dependency in `database.utils`,
# the Celery tasks, the CLI) and the flows marked `@transaction_flow`.
COMMITTING_EDGES = ("jivapay.database.utils", "jivapay.worker", "jivapay.cli")
FLOW_MARKER = "transaction_flow"
FLOWS = {
    "jivapay.services.order_processor.process_incoming_order",
    "jivapay.services.order_processor.process_incoming_batch",
    "jivapay.services.callback_service.deliver_callback",
    "jivapay.services.auth_service.login",
    "jivapay.services.rate_refresh.refresh_rates",
    "jivapay.services.sweepers._each",
    "jivapay.services.sweepers.prune_turnover_buckets",
    "jivapay.utils.config_loader.load_settings_standalone",
    "jivapay.utils.notifications._record_critical_audit",
}
# The requisite's usage counters have one writer (docs/architecture.md, "The order lifecycle").
COUNTER_WRITER = "jivapay.services.requisite_counters"
_COUNTER_WRITE = re.compile(
    r"(?is)(?:insert\s+into|update|delete\s+from)\s+requisite_(?:turnover_buckets|daily_turnover)\b"
    r"|open_orders\s*=\s*(?:ReqTrader\.)?open_orders"
    r"|(?:insert|update|delete)\((?:RequisiteTurnoverBucket|RequisiteDailyTurnover)\b"
)


@dataclass(frozen=True)
class Finding:
    module: str
    line: int
    what: str


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(tree: ast.AST, module: str, *, is_package: bool) -> Iterator[tuple[int, str]]:
    """Every module `tree` imports, anywhere in it, as absolute names."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            yield node.lineno, target
            for alias in node.names:  # `from jivapay import worker` imports a package too
                yield node.lineno, f"{target}.{alias.name}"


def upward_imports(source: str, module: str, *, is_package: bool = False) -> list[Finding]:
    """Imports of `module` that break `RULES`."""
    forbidden = next((f for layer, f in RULES.items() if _within(module, layer)), ())
    found: dict[int, Finding] = {}  # one finding per import statement
    for line, target in imported_modules(ast.parse(source), module, is_package=is_package):
        if line not in found and any(_within(target, bad) for bad in forbidden):
            found[line] = Finding(module, line, f"imports {target}")
    return list(found.values())


def _is_commit(call: ast.Call) -> str | None:
    func = call.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    if name in ("commit", "atomic_transaction"):
        return name
    return None


def _decorator_names(node: ast.FunctionDef | ast.AsyncFunctionDef) -> set[str]:
    names = set()
    for dec in node.decorator_list:
        target = dec.func if isinstance(dec, ast.Call) else dec
        if isinstance(target, ast.Attribute):
            names.add(target.attr)
        elif isinstance(target, ast.Name):
            names.add(target.id)
    return names


def stray_commits(source: str, module: str) -> tuple[list[Finding], set[str]]:
    """Commits outside the edges and the marked flows, and the flows `module` declares."""
    if any(_within(module, edge) for edge in COMMITTING_EDGES):
        return [], set()
    found: list[Finding] = []
    flows: set[str] = set()

    def visit(node: ast.AST, scope: str, in_flow: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                qual = f"{scope}.{child.name}"
                flow = in_flow
                if not isinstance(child, ast.ClassDef) and FLOW_MARKER in _decorator_names(child):
                    flows.add(qual)
                    flow = True
                visit(child, qual, flow)
                continue
            if isinstance(child, ast.Call) and not in_flow and (name := _is_commit(child)):
                found.append(Finding(module, child.lineno, f"calls {name} in {scope}"))
            visit(child, scope, in_flow)

    visit(ast.parse(source), module, False)
    return found, flows


def counter_writes(source: str, module: str) -> list[Finding]:
    """Writes of `open_orders` or the turnover tables, in SQL text or SQLAlchemy Core."""
    return [
        Finding(module, source.count("\n", 0, m.start()) + 1, f"writes counters: {m.group(0)!r}")
        for m in _COUNTER_WRITE.finditer(source)
    ]


def _sources() -> Iterator[tuple[Path, str, str]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        if "migrations" in path.parts:
            continue
        yield path, module_name(path), path.read_text(encoding="utf-8")


# --------------------------------------------------------------------------- the checkers themselves


def test_checker_finds_an_upward_import_inside_a_function() -> None:
    source = "import os\n\ndef f():\n    from jivapay.worker.tasks import process_order\n"
    found = upward_imports(source, "jivapay.services.x")
    assert [(f.line, f.what) for f in found] == [(4, "imports jivapay.worker.tasks")]


def test_checker_resolves_relative_and_package_imports() -> None:
    assert upward_imports("from ..servers import app_factory\n", "jivapay.utils.x")
    assert upward_imports("from jivapay import api_routers\n", "jivapay.database.x")
    assert upward_imports("import fastapi.responses\n", "jivapay.money")
    assert upward_imports("from jivapay.services import audit_logger\n", "jivapay.utils.y")
    assert not upward_imports("from jivapay.services import audit_logger\n", "jivapay.services.z")
    assert not upward_imports("from fastapi import FastAPI\n", "jivapay.servers.app_factory")


def test_checker_finds_a_stray_commit_and_accepts_a_marked_flow() -> None:
    source = (
        "def service(session):\n    session.commit()\n\n"
        "@transaction_flow\ndef flow():\n    with atomic_transaction() as s:\n"
        "        (lambda: s.commit())()\n"
    )
    found, flows = stray_commits(source, "jivapay.services.x")
    assert [(f.line, f.what) for f in found] == [(2, "calls commit in jivapay.services.x.service")]
    assert flows == {"jivapay.services.x.flow"}
    assert stray_commits("def task(s):\n    s.commit()\n", "jivapay.worker.tasks") == ([], set())


def test_checker_finds_counter_writes_in_sql_and_in_core() -> None:
    source = (
        'A = text("UPDATE requisite_turnover_buckets SET amount_fiat = 0")\n'
        "b = update(ReqTrader).values(open_orders=ReqTrader.open_orders - 1)\n"
        "c = delete(RequisiteDailyTurnover)\n"
        'd = text("SELECT amount_fiat FROM requisite_daily_turnover")\n'
    )
    assert [f.line for f in counter_writes(source, "jivapay.services.x")] == [1, 2, 3]


# --------------------------------------------------------------------------- the package


def test_no_layer_imports_upward() -> None:
    found = []
    for path, module, source in _sources():
        if module in TRANSITIONAL:
            continue
        found += upward_imports(source, module, is_package=path.name == "__init__.py")
    assert not found, "\n".join(f"{f.module}:{f.line} {f.what}" for f in found)


def test_only_the_edges_and_the_listed_flows_commit() -> None:
    found: list[Finding] = []
    flows: set[str] = set()
    for _path, module, source in _sources():
        module_found, module_flows = stray_commits(source, module)
        found += module_found
        flows |= module_flows
    assert not found, "\n".join(f"{f.module}:{f.line} {f.what}" for f in found)
    assert flows == FLOWS, "a new flow is reviewed, listed here and in docs/architecture.md"


def test_only_requisite_counters_writes_the_counters() -> None:
    found: list[Finding] = []
    for _path, module, source in _sources():
        if module != COUNTER_WRITER:
            found += counter_writes(source, module)
    assert not found, "\n".join(f"{f.module}:{f.line} {f.what}" for f in found)
    writer = (PACKAGE / "services" / "requisite_counters.py").read_text(encoding="utf-8")
    assert len(counter_writes(writer, COUNTER_WRITER)) >= 5  # the checker sees the real writes


def test_every_flow_is_listed_in_the_architecture_document() -> None:
    doc = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"`(jivapay\.[a-z_.]+)`", doc))
    assert listed >= FLOWS, FLOWS - listed


def test_the_documentation_points_only_inside_the_repository() -> None:
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    assert len(pages) >= 5  # README and the four documents of docs/
    for page in pages:
        text = page.read_text(encoding="utf-8")
        assert "../shared" not in text and "domain.md" not in text, page
        for target in re.findall(r"\]\(([^)#\s]+)", text):
            # No link leaves the repository: a name says what is meant.
            assert not re.match(r"[a-z][a-z0-9+.-]*:", target), (page.name, target)
            resolved = (page.parent / target).resolve()
            assert resolved.is_relative_to(ROOT) and resolved.exists(), (page.name, target)


def not_lossless(app: Any) -> list[str]:
    """The routes of `app` that would read a JSON number as a float: every `APIRoute` must be a
    `LosslessJSONRoute` (`api_routers.routing`), whatever router or server it came from."""
    from fastapi.routing import APIRoute, iter_route_contexts

    from jivapay.api_routers.routing import LosslessJSONRoute

    return [
        f"{sorted(context.methods or ())} {context.path}"
        for context in iter_route_contexts(app.routes)
        if isinstance(context.original_route, APIRoute)
        and not isinstance(context.original_route, LosslessJSONRoute)
    ]


def test_the_lossless_checker_sees_a_plain_router() -> None:
    from fastapi import APIRouter

    from jivapay.enums import Role
    from jivapay.servers.app_factory import build_app

    plain = APIRouter(prefix="/merchant/plain")

    @plain.post("/amount")
    def amount(body: dict[str, Any]) -> dict[str, Any]:  # pragma: no cover - never served
        return body

    assert not_lossless(build_app(Role.MERCHANT, routers=[plain])) == [
        "['POST'] /merchant/plain/amount"
    ]


def test_every_route_of_every_server_reads_json_numbers_exactly() -> None:
    """Money is accepted as a JSON number without precision loss on every server, not only the
    gateway: a router built without `LosslessJSONRouter` would parse `12.34` as a float."""
    import importlib

    from fastapi.routing import APIRoute, iter_route_contexts

    from jivapay.enums import ServerName

    for server in ServerName:
        app = importlib.import_module(f"jivapay.servers.{server.value}.server").app
        assert not_lossless(app) == [], server.value
        served = [
            c for c in iter_route_contexts(app.routes) if isinstance(c.original_route, APIRoute)
        ]
        assert len(served) >= 5, server.value  # the checker saw the server's routers
