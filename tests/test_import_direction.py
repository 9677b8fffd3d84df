"""Imports under consumer/ flow one way: CLI -> operator tools -> data path -> aggregation -> base.

Every module is parsed with ``ast`` (imports inside functions count too) and mapped to its layer;
a module importing a package in a higher layer is reported by name with the import. The layers
are the ones docs/architecture.md draws (highest first).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "consumer"

# Highest layer first. A module may import its own layer and any lower one.
LAYERS: list[tuple[str, ...]] = [
    ("consumer", "consumer.__main__", "consumer.cli", "consumer.demo"),
    ("consumer.doctor",),
    ("consumer.pipeline",),
    ("consumer.dlq",),
    ("consumer.admin", "consumer.dashboards"),
    ("consumer.aggregation",),
    ("consumer.sinks",),
    ("consumer.core",),
]


def layer_of(module: str) -> int | None:
    """The layer index of a dotted module name (0 is highest), by its longest matching package."""
    best: tuple[int, int] | None = None
    for index, packages in enumerate(LAYERS):
        for package in packages:
            matches = module == package or module.startswith(package + ".")
            if matches and (best is None or len(package) > best[0]):
                best = (len(package), index)
    return None if best is None else best[1]


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(source: str, module: str, is_package: bool) -> list[str]:
    """Every module ``source`` imports (top level and inside functions), relative ones resolved."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            if base == "consumer" or (node.level and not node.module):
                # ``from consumer import config``: each name may be a submodule.
                found.extend(f"{base}.{alias.name}" for alias in node.names)
            else:
                found.append(base)
    return [name for name in found if name == "consumer" or name.startswith("consumer.")]


def violations(modules: dict[str, list[str]]) -> list[str]:
    """``module imports target`` for each import of a higher layer than the module's own."""
    found = []
    for module, imported in sorted(modules.items()):
        own = layer_of(module)
        if own is None:
            found.append(f"{module} is in no layer")
            continue
        for target in imported:
            theirs = layer_of(target)
            if theirs is not None and theirs < own:
                found.append(f"{module} imports {target} (a higher layer)")
    return found


def scan(root: Path) -> dict[str, list[str]]:
    modules = {}
    for path in sorted(root.rglob("*.py")):
        name = module_name(path, root)
        modules[name] = imports_of(path.read_text(), name, path.name == "__init__.py")
    return modules


def test_consumer_imports_flow_one_way() -> None:
    modules = scan(ROOT)
    assert len(modules) > 40
    assert violations(modules) == []


def test_every_module_has_a_layer() -> None:
    assert [m for m in scan(ROOT) if layer_of(m) is None] == []


def test_a_violating_import_is_reported(tmp_path: Path) -> None:
    pkg = tmp_path / "consumer"
    (pkg / "core").mkdir(parents=True)
    (pkg / "pipeline").mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "core" / "__init__.py").write_text("")
    (pkg / "pipeline" / "__init__.py").write_text("")
    (pkg / "pipeline" / "worker.py").write_text("from consumer.core import model\n")
    (pkg / "core" / "model.py").write_text(
        "def late():\n    from consumer.pipeline.worker import Worker\n    return Worker\n"
    )
    (pkg / "core" / "config.py").write_text("from ..pipeline import worker\n")
    found = violations(scan(pkg))
    assert "consumer.core.model imports consumer.pipeline.worker (a higher layer)" in found
    assert "consumer.core.config imports consumer.pipeline (a higher layer)" in found
    assert not [f for f in found if f.startswith("consumer.pipeline.worker")]


def test_from_consumer_import_counts_the_submodule() -> None:
    imported = imports_of("from consumer import cli\n", "consumer.core.model", False)
    assert violations({"consumer.core.model": imported}) == [
        "consumer.core.model imports consumer.cli (a higher layer)"
    ]
