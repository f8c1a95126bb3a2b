"""Each stage's `deps` in dvc.yaml list exactly the code its command runs: the stage module
and every `descent` module it imports, directly or through another, at the top or inside a
function. A missing one would let an edit leave stale results (DVC would not rerun the
stage); an extra one reruns the stage for nothing."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parent.parent


def imported_modules(path: Path) -> set[str]:
    """Names of the project modules (descent.*, stages.*) a file imports anywhere."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            # `from descent import config`: config is a module
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in found if name.split(".")[0] in ("descent", "stages")}


def module_file(name: str) -> Path | None:
    parts = name.split(".")
    for candidate in (ROOT.joinpath(*parts).with_suffix(".py"),
                      ROOT.joinpath(*parts, "__init__.py")):
        if candidate.is_file():
            return candidate
    return None


def code_of(module: str) -> set[str]:
    """Files (relative paths) of a module and everything it imports, transitively; a
    package's __init__ runs before any of its modules."""
    seen: set[Path] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for depth in range(1, len(parts) + 1):
            path = module_file(".".join(parts[:depth]))
            if path is not None and path not in seen:
                seen.add(path)
                todo.extend(imported_modules(path))
    # An empty package __init__ runs nothing: no dep.
    return {path.relative_to(ROOT).as_posix() for path in seen if path.read_text().strip()}


def spec() -> dict:
    """dvc.yaml's stages, as written."""
    return YAML(typ="safe", pure=True).load((ROOT / "dvc.yaml").read_text())["stages"]


def stages() -> dict[str, tuple[str, set[str]]]:
    """Stage name -> (its command, its deps), foreach members expanded."""
    found = {}
    for name, stage in spec().items():
        if "foreach" not in stage:
            found[name] = (stage["cmd"], set(stage.get("deps", [])))
            continue
        for key, item in stage["foreach"].items():
            def fill(text: str) -> str:
                text = text.replace("${key}", key)
                return re.sub(r"\$\{item\.(\w+)\}", lambda m: str(item[m.group(1)]), text)
            found[f"{name}@{key}"] = (fill(stage["do"]["cmd"]),
                                      {fill(dep) for dep in stage["do"].get("deps", [])})
    return found


STAGES = stages()


@pytest.mark.parametrize("stage", STAGES)
def test_each_stage_depends_on_exactly_the_code_it_runs(stage):
    cmd, deps = STAGES[stage]
    module = re.match(r"python -m (stages\.\w+)", cmd)
    assert module, f"{stage}: `{cmd}` is not `python -m stages.<name> ...`"
    listed = {dep for dep in deps if dep.endswith(".py")}
    assert listed == code_of(module.group(1)), (
        f"{stage}: missing {sorted(code_of(module.group(1)) - listed)}, "
        f"extra {sorted(listed - code_of(module.group(1)))}")


def test_the_import_walk_sees_imports_inside_functions():
    """The walk must follow a lazy import (inside a function), or the check above could
    not fail for one: stage train imports descent.training only inside main."""
    assert "descent/training.py" in code_of("stages.train")
    assert "descent/engines/torch_backends.py" in code_of("stages.train")  # lazily, two levels down
    assert "descent/figure.py" not in code_of("stages.train")
