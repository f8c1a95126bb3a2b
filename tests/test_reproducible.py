"""Bit for bit on any x86-64 CPU: the committed `dvc.lock` names the bytes a fresh clone
produces, so `dvc checkout` and `dvc status` work there, and only wall-clock timings change.

This machine plays another CPU with three variables: OpenBLAS's kernel forced to an old one,
numpy's SIMD dispatch narrowed to its baseline, numba compiled for a generic target. Each
is first shown to change some float here (a variable that changes nothing proves nothing).
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, dvc, run

# The files that hold wall-clock measurements: the only ones a rerun may change (README,
# "Reproducible, precisely"), with their hash lines in dvc.lock.
TIMING = ("metrics/timing", "metrics/speed.json", "plots/seconds", "plots/comparison.png")


def is_timing(path: str) -> bool:
    return any(path == name or path.startswith(name + "/") for name in TIMING)


def numpy_dispatch_targets() -> str:
    """numpy's SIMD targets above its baseline on this CPU (numpy 2.4 names them X86_V3,
    X86_V4, AVX512_ICL...: the older names AVX2, AVX512F are ignored without a word)."""
    from numpy._core._multiarray_umath import __cpu_dispatch__

    return " ".join(__cpu_dispatch__)


def other_cpu(env: dict, cache: Path, only: str | None = None) -> dict:
    """env as another x86-64 CPU would compute: all three variables, or `only` one."""
    variables = {"OPENBLAS_CORETYPE": "Prescott", "NUMBA_CPU_NAME": "generic",
                 "NPY_DISABLE_CPU_FEATURES": numpy_dispatch_targets()}
    if only:
        variables = {only: variables[only]}
    return {**env, **variables, "NUMBA_CACHE_DIR": str(cache)}


# One computation per variable whose last bits depend on what the variable changes: a BLAS
# product, a SIMD-dispatched numpy ufunc, a numba reduction that may be vectorized.
PROBES = {
    "OPENBLAS_CORETYPE": "z = rng.normal(size=(1500, 7)); out = z.T @ z",
    "NPY_DISABLE_CPU_FEATURES": "out = np.exp(rng.normal(size=100_003))",
    "NUMBA_CPU_NAME": "import numba\n"
                      "total = numba.njit(fastmath=True)(lambda a: (a * a).sum())\n"
                      "out = np.float64(total(rng.normal(size=100_003)))",
}


def probe(code: str, env: dict) -> str:
    script = ("import hashlib, numpy as np\nrng = np.random.default_rng(0)\n" + code +
              "\nprint(hashlib.md5(np.ascontiguousarray(out).tobytes()).hexdigest())")
    return run([sys.executable, "-c", script], ROOT, env).stdout.strip()


@pytest.mark.parametrize("variable", sorted(PROBES))
def test_each_variable_really_plays_another_cpu_here(variable, env, tmp_path):
    if not numpy_dispatch_targets() and variable == "NPY_DISABLE_CPU_FEATURES":
        pytest.skip("numpy dispatches to no SIMD target above its baseline on this CPU")
    here = probe(PROBES[variable], {**env, "NUMBA_CACHE_DIR": str(tmp_path / "a")})
    there = probe(PROBES[variable], other_cpu(env, tmp_path / "b", only=variable))
    assert here != there, f"{variable} changes no bit of its probe on this CPU: the byte " \
        "comparisons below would not cover what it stands for"


def lock_entries(text: str) -> dict:
    """(stage, deps|outs, path) -> that entry's hash and size, and (stage, params) -> params."""
    entries = {}
    for stage, record in yaml.safe_load(text)["stages"].items():
        for kind in ("deps", "outs"):
            for entry in record.get(kind, []):
                entries[stage, kind, entry["path"]] = (entry.get("md5"), entry.get("size"))
        entries[stage, "params"] = record.get("params")
    return entries


def differing(before: str, after: str) -> set:
    old, new = lock_entries(before), lock_entries(after)
    return {key for key in old.keys() | new.keys() if old.get(key) != new.get(key)}


def changed_files(project: Path, env) -> set[str]:
    status = run(["git", "status", "--porcelain", "--untracked-files=all"], project, env)
    return {line[3:] for line in status.stdout.splitlines()}


@pytest.mark.e2e
def test_the_committed_lock_is_reproduced_here_bit_for_bit(built):
    """`built` reran every stage of a copy of this project (its DVC cache was empty): every
    output hash in its dvc.lock equals the committed one, but for the timing files."""
    assert {key for key in differing((ROOT / "dvc.lock").read_text(),
                                     (built / "dvc.lock").read_text())
            if not is_timing(key[-1])} == set()


@pytest.mark.e2e
@pytest.mark.slow
def test_a_fresh_clone_reproduces_another_cpus_baseline_and_returns_to_it(built, env,
                                                                          tmp_path):
    """The committed results come from "another CPU"; a fresh clone here runs the pipeline
    (only timings change), then the README's return to the baseline works."""
    origin = Path(shutil.copytree(built, tmp_path / "origin", symlinks=True))
    dvc(origin, other_cpu(env, tmp_path / "numba-other"), "repro", "--force")
    assert {name for name in changed_files(origin, env) if name != "dvc.lock"
            and not is_timing(name)} == set()
    run(["git", "add", "-A"], origin, env)
    run(["git", "commit", "-q", "-m", "results from another CPU"], origin, env)

    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(origin), str(clone)], tmp_path, env)
    dvc(clone, {**env, "NUMBA_CACHE_DIR": str(tmp_path / "numba-here")}, "repro")
    changed = changed_files(clone, env)
    assert {name for name in changed if name != "dvc.lock" and not is_timing(name)} == set()
    assert {key for key in differing(run(["git", "show", "HEAD:dvc.lock"], clone, env).stdout,
                                     (clone / "dvc.lock").read_text())
            if not is_timing(key[-1])} == set()
    assert run(["git", "diff", "--cached", "--name-only"], clone, env).stdout == "", \
        "dvc repro staged dvc.lock (core.autostage): git checkout would not restore it"

    run(["bash", "-c", "git checkout -- . && dvc checkout"], clone, env)
    assert changed_files(clone, env) == set()
    assert "Data and pipelines are up to date" in dvc(clone, env, "status").stdout
