"""The product (dags/, plugins/, include/) never needs the local stack, and its image leaves it out."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("dags", "plugins", "include")


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_no_product_module_imports_the_local_stack_or_the_test_helpers() -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(name for name in _imports(path)
                                            if name.split(".")[0] in {"local_stack", "tests", "bench", "conformance"})
        for folder in PRODUCT for path in (ROOT / folder).rglob("*.py")
    }
    assert {path: names for path, names in offenders.items() if names} == {}


def test_the_production_image_copies_the_product_folders_and_nothing_of_the_local_stack() -> None:
    copied = [line.split()[-2] for line in (ROOT / "Dockerfile").read_text().splitlines()
              if line.startswith("COPY ")]
    folders = {source.rstrip("/") for source in copied if source.endswith("/")}
    assert folders == set(PRODUCT), copied
    assert not any(source in {".", "./"} or source.startswith("local_stack") for source in copied), copied
