"""Dependencies point one way: geo and models never import the web layer."""

import ast
from pathlib import Path

SERVICE = Path(__file__).resolve().parent.parent / "service"
WEB = ("fastapi", "starlette", "service.app", "service.auth")


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_geo_models_and_services_do_not_import_the_web_layer():
    checked = [
        *SERVICE.glob("geo/*.py"),
        *SERVICE.glob("*/models.py"),
        *SERVICE.glob("*/service.py"),
    ]
    assert len(checked) >= 6
    for path in checked:
        bad = {name for name in _imports(path) if name.startswith(WEB)}
        assert not bad, f"{path.relative_to(SERVICE)} imports {bad}"


def test_no_router_imports_another_domains_router():
    for path in SERVICE.glob("*/*.py"):
        domain = path.parent.name
        for name in _imports(path):
            if name.endswith("router") and not name.startswith(f"service.{domain}."):
                raise AssertionError(f"{path} imports {name}")
