"""The compiled kernel is cached by its source's content (descent.jit): a copy of the tree at
another path loads it without compiling (DVC's `exp run --temp` and queued runs), an edited
kernel compiles again and never loads the old code. Each check imports the kernel in a fresh
process, in a copy of the package, with a temporary NUMBA_CACHE_DIR."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# One tiny float64 problem through the kernel; counts numba's cache hits and misses over all
# of the kernel's jitted functions (a miss is a compilation).
PROBE = """
import json
import numpy as np
from descent.engines import compiled as kernel
x = np.arange(6.0).reshape(3, 2)
_, losses, *_ = kernel.descend(x, np.ones(3), np.zeros((1, 3)), np.arange(3)[None, None],
                               1, False, 0.01, np.array([1, 3]), 1e6, 0.5)
jitted = [f for f in vars(kernel).values() if hasattr(f, "stats")]
print(json.dumps({
    "jitted": len(jitted),
    "hits": sum(sum(f.stats.cache_hits.values()) for f in jitted),
    "misses": sum(sum(f.stats.cache_misses.values()) for f in jitted),
    "paths": sorted({f.stats.cache_path for f in jitted}),
    "losses": losses.tolist()}))
"""


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("NUMBA_") and k not in ("PYTHONPATH", "XDG_CACHE_HOME")}
    return dict(env, **extra)


def copy_package(destination: Path) -> Path:
    """The descent package alone at a new path: new mtimes, no __pycache__."""
    shutil.copytree(ROOT / "descent", destination / "descent",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return destination


def probe(tree: Path, cache: Path) -> dict:
    result = subprocess.run([sys.executable, "-c", PROBE], cwd=tree, capture_output=True,
                            text=True, env=clean_env(NUMBA_CACHE_DIR=str(cache),
                                                     PYTHONPATH=str(tree)))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def compiled_files(tree: Path) -> list[Path]:
    return list(tree.rglob("*.nbi")) + list(tree.rglob("*.nbc"))


@pytest.fixture(scope="module")
def warm(tmp_path_factory):
    """A first copy run once into an empty cache: it must compile."""
    base = tmp_path_factory.mktemp("jit")
    cache, tree = base / "numba-cache", copy_package(base / "first")
    first = probe(tree, cache)
    # the kernel and its two helpers (_runs, _loss, _sound) each compile once
    assert first["jitted"] >= 3 and first["misses"] > 0 and first["hits"] == 0, first
    return base, cache, first


def test_a_copy_at_another_path_with_new_mtimes_loads_the_kernel_without_compiling(warm):
    base, cache, first = warm
    tree = copy_package(base / "elsewhere" / "deeper")
    later = os.stat(tree / "descent" / "engines" / "compiled.py").st_mtime + 3600
    for path in tree.rglob("*"):
        os.utime(path, (later, later))  # newer than the cached build, as in a fresh checkout
    second = probe(tree, cache)
    assert second["misses"] == 0 and second["hits"] > 0, second
    assert second["paths"] == first["paths"]
    assert second["losses"] == first["losses"]
    # in the shared cache, not beside the source (a --temp copy is deleted after its run)
    assert [Path(p).parent for p in second["paths"]] == [cache]
    assert compiled_files(tree) == [] and compiled_files(base / "first") == []


def test_an_edited_kernel_compiles_again_and_never_loads_the_old_code(warm):
    base, cache, first = warm
    tree = copy_package(base / "edited")
    kernel = tree / "descent" / "engines" / "compiled.py"
    # Edit a callee only: the top-level jitted function's own bytecode, which numba also
    # keys on, is unchanged, so only the source's content tells the two builds apart.
    line = "    loss = problem.loss_scale * total / problem.features.shape[0]\n"
    source = kernel.read_text()
    assert source.count(line) == 1
    kernel.write_text(source.replace(line, "    loss = 2.0 * problem.loss_scale * total / "
                                           "problem.features.shape[0]\n"))
    edited = probe(tree, cache)
    assert edited["misses"] > 0 and edited["hits"] == 0, edited
    assert edited["paths"] != first["paths"]
    assert edited["losses"] == [[2 * v for v in run] for run in first["losses"]]
    # and the original source still loads its own build, untouched by the edited one's
    again = probe(copy_package(base / "original-again"), cache)
    assert again["misses"] == 0 and again["losses"] == first["losses"], again


@pytest.mark.parametrize("numba_cache_dir", [False, True])
def test_the_cache_is_numba_cache_dir_when_set_else_the_user_cache_directory(
        tmp_path, numba_cache_dir):
    extra = {"XDG_CACHE_HOME": str(tmp_path / "xdg")}
    if numba_cache_dir:
        extra["NUMBA_CACHE_DIR"] = str(tmp_path / "chosen")
    result = subprocess.run(
        [sys.executable, "-c", "from descent.jit import cache_root; print(cache_root())"],
        cwd=ROOT, capture_output=True, text=True, env=clean_env(**extra, PYTHONPATH=str(ROOT)))
    assert result.returncode == 0, result.stderr
    expected = tmp_path / "chosen" if numba_cache_dir else tmp_path / "xdg" / "descent" / "numba"
    assert Path(result.stdout.strip()) == expected
