"""The packages import only downward (docs/dev/architecture.md): every import in every module, top-level
or deferred inside a function, and every module path named in a string (``importlib`` registries)."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

import fqtool

PACKAGE_DIR = Path(fqtool.__file__).parent

#: Rank of each top-level part of ``fqtool``; a module may import only parts of a lower rank.
#: ``fqtool`` itself is the package root (``__init__.py``: loaded lazily on first use (PEP 562), the
#: version and the Python API's names: see ROOT_LAZY). docs/dev/architecture.md shows the same table.
LAYERS: dict[str, int] = {
    "fqtool": 0, "errors": 0, "fsutil": 0, "runtime": 0, "_version": 0, "quality_methods": 0,
    "data": 1, "losses": 1,
    "models": 2,
    "eval": 3, "export": 3, "align": 3,
    "train": 4, "api_inputs": 4, "demo_figures": 5,
    "api": 5,
    "cli": 6, "demo": 6,
    "__main__": 7,
}

#: The imports between different parts of the SAME rank that are allowed; every other one fails.
#: ``demo`` drives the CLI's commands and the ``demo`` command runs it: the one two-way pair, kept at
#: the top where nothing imports either.
SIDEWAYS: set[tuple[str, str]] = {
    ("fsutil", "errors"),
    ("runtime", "errors"),
    ("cli", "demo"),
    ("demo", "cli"),
}

#: What the package root may name: ``fqtool.load_model`` etc. come from ``fqtool.api`` and
#: ``fqtool.__version__`` from ``fqtool._version`` on first attribute access, so ``import fqtool`` stays
#: light.
ROOT_LAZY: set[str] = {"fqtool.api", "fqtool._version"}

_MODULE_PATH = re.compile(r"fqtool(\.[A-Za-z_]\w*)+")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    base = PACKAGE_DIR.parent.joinpath(*name.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def part_of(name: str) -> str:
    """``fqtool.models.loading`` → ``models``; ``fqtool`` → ``fqtool``."""
    pieces = name.split(".")
    return pieces[1] if len(pieces) > 1 else pieces[0]


def _names_a_module(node: ast.AST) -> bool:
    """A string constant that is exactly an fqtool module path (e.g. ``"fqtool.cli.score"``)."""
    value = node.value if isinstance(node, ast.Constant) else None
    return isinstance(value, str) and bool(_MODULE_PATH.fullmatch(value)) and is_module(value)


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) for every fqtool module that ``path`` imports or names, anywhere in the file."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:  # ``from fqtool import errors`` imports the module fqtool.errors
                sub = f"{source}.{alias.name}"
                found.append((node.lineno, sub if is_module(sub) else source))
        elif _names_a_module(node):
            found.append((node.lineno, node.value))
    return sorted((line, module) for line, module in found if module.split(".")[0] == "fqtool")


def all_modules() -> list[Path]:
    return sorted(PACKAGE_DIR.rglob("*.py"))


def layer_violations(path: Path) -> list[str]:
    name = module_name(path)
    own = part_of(name)
    if own not in LAYERS:
        return [f"{name}: package {own!r} has no place in LAYERS (add it to the layer table and the docs)"]
    problems = []
    for line, target in imported_modules(path):
        other = part_of(target)
        if other == own or (name == "fqtool" and target in ROOT_LAZY):
            continue
        if other not in LAYERS:
            problems.append(f"{name}:{line} imports {target}, whose package has no layer")
        elif LAYERS[other] > LAYERS[own] or (LAYERS[other] == LAYERS[own] and (own, other) not in SIDEWAYS):
            problems.append(f"{name}:{line} imports {target} ({other}, rank {LAYERS[other]}) from "
                            f"{own} (rank {LAYERS[own]})")
    return problems


def test_every_module_is_parsed() -> None:
    names = {module_name(p) for p in all_modules()}
    assert {"fqtool.models.loading", "fqtool.cli.app", "fqtool.data.synth.faces", "fqtool.__main__"} <= names


@pytest.mark.parametrize("path", all_modules(), ids=lambda p: module_name(p))
def test_imports_go_downward(path: Path) -> None:
    assert layer_violations(path) == []


def imported_names(path: Path) -> list[tuple[int, str, str]]:
    """(line, module, name) for every ``from fqtool... import name`` in ``path``, deferred ones included."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if source.split(".")[0] == "fqtool":
                found += [(node.lineno, source, alias.name) for alias in node.names]
    return found


def test_deferred_imports_name_things_that_exist() -> None:
    """A function-level ``from fqtool.x import y`` fails only when the function runs; a moved or renamed
    ``y`` must fail here instead."""
    import importlib

    missing = []
    for path in all_modules():
        for line, source, name in imported_names(path):
            if not (hasattr(importlib.import_module(source), name) or is_module(f"{source}.{name}")):
                missing.append(f"{module_name(path)}:{line} imports {name} from {source}, which has none")
    assert missing == []


def test_package_root_names_only_the_lazy_api() -> None:
    """Nothing at import time (tests/test_startup.py checks ``sys.modules``); by name only ROOT_LAZY."""
    assert {module for _, module in imported_modules(PACKAGE_DIR / "__init__.py")} <= ROOT_LAZY


def test_the_checker_sees_upward_deferred_and_string_imports(tmp_path: Path, monkeypatch) -> None:
    """The checker itself, on a fake tree: a deferred upward import, a relative one, ``from fqtool
    import <module>``, an importlib string and an unplaced package must all be reported."""
    root = tmp_path / "fqtool"
    for sub in ("models", "train", "cli", "gadgets"):
        (root / sub).mkdir(parents=True)
        (root / sub / "__init__.py").write_text("")
    (root / "__init__.py").write_text("")
    (root / "errors.py").write_text("")
    (root / "train" / "engine.py").write_text("")
    (root / "cli" / "score.py").write_text("")
    (root / "models" / "bad.py").write_text(
        "from fqtool import errors\n"
        "def f():\n    from fqtool.train import engine\n"
        "def g():\n    from ..cli import score\n"
        "COMMAND = 'fqtool.cli.score'\n"
    )
    (root / "gadgets" / "thing.py").write_text("from fqtool.errors import x\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE_DIR", root)
    bad = layer_violations(root / "models" / "bad.py")
    assert [p.split(" imports ")[1].split(" ")[0] for p in bad] == [
        "fqtool.train.engine", "fqtool.cli.score", "fqtool.cli.score"
    ]
    assert "has no place in LAYERS" in layer_violations(root / "gadgets" / "thing.py")[0]


ARCHITECTURE_DOC = Path(__file__).resolve().parents[1] / "docs" / "dev" / "architecture.md"


def doc_layers(text: str) -> dict[str, int]:
    """``package → rank`` from the layer table of the architecture doc (``the package root`` = ``fqtool``)."""
    table: dict[str, int] = {}
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].isdigit():
            continue
        names = re.findall(r"`([^`]+)`", cells[1]) + (["fqtool"] if "package root" in cells[1] else [])
        for name in names:
            assert name not in table, f"{name} is in two rows of the layer table"
            table[name] = int(cells[0])
    return table


def packages() -> set[str]:
    """The top-level parts of ``src/fqtool``: modules, sub-packages and the root itself."""
    modules = {p.stem for p in PACKAGE_DIR.glob("*.py") if p.name != "__init__.py"}
    folders = {p.parent.name for p in PACKAGE_DIR.glob("*/__init__.py")}
    return modules | folders | {"fqtool"}


def test_architecture_doc_table_matches_the_packages() -> None:
    """Every package of src/fqtool appears in the doc with the rank this test enforces, and nothing else."""
    assert doc_layers(ARCHITECTURE_DOC.read_text(encoding="utf-8")) == LAYERS
    assert set(LAYERS) == packages()


def test_doc_table_reader_sees_a_wrong_rank_and_a_missing_package() -> None:
    text = ARCHITECTURE_DOC.read_text(encoding="utf-8")
    wrong = text.replace("| 4 | `train` |", "| 3 | `train` |")
    assert doc_layers(wrong)["train"] == 3
    missing = text.replace("`cli`, `demo` |", "`cli` |")
    assert "demo" not in doc_layers(missing) and "demo" in doc_layers(text)
