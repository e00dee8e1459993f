"""The layer contract: imports point down the stack, never up, and there are no cycles.

    entry      the web layer and the process edges: app, cli, scheduler, startup, routers, auth,
               problems
    checkin    "are you safe?": replies, signed links, roll calls
    advisories issue, revise, cancel, import; deliveries as staff see them
    citizens   the registry; staff keys
    geomatch   who is where an advisory applies
    dispatch   the dispatcher, rendering, delivery reports, notifiers
    ledger     the alert rows, their states and every write to them
    records    each domain's tables (models.py) and the level scale: read by the layers above
    geo        boundaries, areas, the matching engine
    ground     db, errors, config, privacy, logs, metrics, leases

A module may import its own layer and any layer below; one layer up is a design question, and
this test fails on it. Routers are entry points, so they may call any domain."""

import ast
from fnmatch import fnmatch
from pathlib import Path

SERVICE = Path(__file__).resolve().parent.parent / "service"

# Most specific patterns first: the first that matches a module names its layer.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "entry",
        (
            "service.app",
            "service.cli",
            "service.scheduler",
            "service.demo",
            "service.auth",
            "service.problems",
            "service.body_limit",
            "service.api_headers",
            "service.head_requests",
            "service.slash_redirect",
            "service.forms",
            "service.openapi",
            "service.*router",
            "service.*.deps",
            "service.operations.*",
            "service.schema",
            "service.migrate",
            "service.startup",
        ),
    ),
    (
        "records",
        (
            "service.advisories.models",
            "service.citizens.models",
            "service.staff.models",
            "service.checkin.models",
            "service.advisories.levels",
        ),
    ),
    ("checkin", ("service.checkin", "service.checkin.*")),
    ("advisories", ("service.advisories", "service.advisories.*")),
    ("citizens", ("service.citizens", "service.citizens.*", "service.staff", "service.staff.*")),
    ("geomatch", ("service.geomatch", "service.geomatch.*")),
    ("dispatch", ("service.dispatch", "service.dispatch.*")),
    ("ledger", ("service.ledger", "service.ledger.*")),
    ("geo", ("service.geo", "service.geo.*")),
    ("ground", ("service", "service.*")),
]
ORDER = [
    "entry",
    "checkin",
    "advisories",
    "citizens",
    "geomatch",
    "dispatch",
    "ledger",
    "records",
    "geo",
    "ground",
]
# Modules a lower layer may never reach, whatever their layer: the web framework.
WEB = ("fastapi", "starlette", "service.app", "service.auth")
# Below entry, only these may speak HTTP's language (they render pages and problem bodies).
WEB_ALLOWED_BELOW_ENTRY: set[str] = set()


def _module_name(path: Path) -> str:
    parts = path.relative_to(SERVICE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in SERVICE.rglob("*.py")}


def _imports(path: Path, module: str, known: frozenset[str] = frozenset()) -> set[str]:
    """What a module imports: `from pkg import sub` names pkg.sub when that is a module of
    ours, else pkg (the names then come from pkg itself)."""
    names = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                names.add(sub if sub in known or (not known and node.level) else base)
    return names


def layer_of(module: str) -> str:
    for layer, patterns in LAYERS:
        if any(fnmatch(module, pattern) for pattern in patterns):
            return layer
    raise AssertionError(f"{module} belongs to no layer")


def _project_imports(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    return {name for name in _imports(path, module, frozenset(known)) if name in known}


def test_every_import_points_down_the_stack():
    known = _modules()
    upward = []
    for module, path in sorted(known.items()):
        mine = ORDER.index(layer_of(module))
        for target in _project_imports(module, path, known):
            theirs = ORDER.index(layer_of(target))
            if theirs < mine:
                upward.append(f"{module} ({ORDER[mine]}) imports {target} ({ORDER[theirs]})")
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_no_import_cycles_between_modules():
    known = _modules()
    graph = {m: _project_imports(m, p, known) - {m} for m, p in known.items()}
    seen: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(module: str, path: list[str]) -> None:
        seen[module] = 1
        for target in sorted(graph[module]):
            if seen.get(target) == 1:
                cycle = [*path[path.index(target) :], target] if target in path else [target]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if target not in seen:
                visit(target, [*path, target])
        seen[module] = 2

    for module in sorted(graph):
        if module not in seen:
            visit(module, [module])


def test_below_the_entry_layer_nothing_imports_the_web_framework():
    known = _modules()
    for module, path in known.items():
        if layer_of(module) == "entry" or module in WEB_ALLOWED_BELOW_ENTRY:
            continue
        bad = {name for name in _imports(path, module) if name.startswith(WEB)}
        assert not bad, f"{module} imports {bad}"


def test_no_router_imports_another_domains_router():
    for path in SERVICE.glob("*/*.py"):
        domain = path.parent.name
        for name in _imports(path, _module_name(path)):
            if name.endswith("router") and not name.startswith(f"service.{domain}."):
                raise AssertionError(f"{path} imports {name}")


def test_the_contract_catches_an_upward_import(tmp_path):
    """The check itself can fail: geo importing the ledger would be refused."""
    assert ORDER.index(layer_of("service.geo.areas")) > ORDER.index(layer_of("service.ledger"))
    assert layer_of("service.advisories.router") == "entry"
    assert layer_of("service.citizens.models") == "records"
    assert layer_of("service.dispatch.notifiers.twilio_sms") == "dispatch"
    module = tmp_path / "probe.py"
    module.write_text("from service.ledger import states\nfrom . import countries\n")
    found = _imports(module, "service.geo.probe", frozenset(_modules()))
    assert {"service.ledger.states", "service.geo.countries"} <= found
    assert ORDER.index(layer_of("service.ledger.states")) < ORDER.index(layer_of("service.geo"))
