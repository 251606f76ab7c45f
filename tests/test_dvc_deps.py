"""Every stage lists what it runs: its script and every project module that script imports.

A module missing from a stage's `deps` means editing it reruns nothing, and the cached
results silently stop matching the code. The import closure is read from the source
(``ast``, function-local imports included, and each package's ``__init__``), so the
test fails as soon as a stage's code starts importing a module its deps do not list.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
PACKAGE = "colorstudy"


def _module_file(name: str) -> Path | None:
    base = SRC.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(path: Path) -> set[str]:
    """Project modules named by the imports of ``path`` (absolute and relative)."""
    names: set[str] = set()
    package = ".".join(path.relative_to(SRC).with_suffix("").parts[:-1]) if SRC in path.parents else ""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                module = ".".join([*package.split(".")[:len(package.split(".")) - node.level + 1], module]).strip(".")
            names.add(module)
            names.update(f"{module}.{a.name}" for a in node.names)  # `from pkg import module`
    return {n for n in names if n == PACKAGE or n.startswith(PACKAGE + ".")}


def import_closure(script: Path) -> set[Path]:
    """Files of every project module ``script`` imports, directly or not, with their packages."""
    seen: set[Path] = set()
    todo = [script]
    while todo:
        path = todo.pop()
        for name in _imports(path):
            parts = name.split(".")
            for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__
                file = _module_file(".".join(parts[:i]))
                if file is not None and file not in seen:
                    seen.add(file)
                    todo.append(file)
    return seen


def _stages() -> list[tuple[str, Path, list[str]]]:
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    out = []
    for name, stage in stages.items():
        body = stage.get("do", stage)
        match = re.search(r"python (stages/\S+\.py)", body["cmd"])
        assert match, f"stage {name}: its cmd runs no stages/*.py script"
        out.append((name, ROOT / match.group(1), [str(d) for d in body.get("deps", [])]))
    return out


@pytest.mark.parametrize("name, script, deps", _stages(), ids=[s[0] for s in _stages()])
def test_stage_deps_cover_its_import_closure(name, script, deps):
    listed = [(ROOT / d).resolve() for d in deps if "${" not in d]
    needed = {script, *import_closure(script)}
    missing = sorted(str(f.relative_to(ROOT)) for f in needed
                     if not any(f == d or d in f.parents for d in listed))
    assert not missing, f"dvc.yaml stage {name!r} imports these but does not list them in deps: {missing}"


def test_the_closure_follows_indirect_and_local_imports():
    closure = {str(p.relative_to(SRC)) for p in import_closure(ROOT / "stages" / "train.py")}
    # train.py -> colorstudy.train -> colorstudy.weights (via losses / models); package inits too
    assert {"colorstudy/__init__.py", "colorstudy/_torchvision_compat.py", "colorstudy/train.py",
            "colorstudy/checkpoint.py", "colorstudy/data/__init__.py"} <= closure
