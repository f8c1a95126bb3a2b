"""Shared fixtures: the airfoil file and throw-away copies of the project."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_AIRFOIL = ROOT.parent / "shared" / "data" / "airfoil_self_noise.dat"
GIT_IDENTITY = {"GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@example.com",
                "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@example.com"}


TEST_COPY = ROOT / ".dvc" / "tmp" / "descent-tests" / "airfoil_self_noise.dat"


def find_airfoil() -> Path:
    """AIRFOIL_SOURCE, else ../shared/data, else a copy fetched once (checksum checked) from
    the sources in params.yaml, as the fetch stage would."""
    if os.environ.get("AIRFOIL_SOURCE"):
        return Path(os.environ["AIRFOIL_SOURCE"]).resolve()
    if SHARED_AIRFOIL.is_file():
        return SHARED_AIRFOIL.resolve()
    if not TEST_COPY.is_file():
        from descent import config as configuration
        from descent.download import fetch

        settings = configuration.load()
        fetch(list(settings.fetch.sources), settings.fetch.sha256, TEST_COPY)
    return TEST_COPY


def pytest_sessionstart(session) -> None:
    """Without the airfoil data most tests cannot run: say so in one line, before any."""
    from descent.io import UserError

    try:
        path = find_airfoil()
    except UserError:
        path = None
    if os.environ.get("AIRFOIL_SOURCE") and (path is None or not path.is_file()):
        pytest.exit(f"AIRFOIL_SOURCE={os.environ['AIRFOIL_SOURCE']} is not a file; point it "
                    "at a copy of airfoil_self_noise.dat and rerun", returncode=2)
    if path is None or not path.is_file():
        pytest.exit("the tests need the airfoil data and could not fetch it (no network?); "
                    "set AIRFOIL_SOURCE=/path/to/airfoil_self_noise.dat and rerun",
                    returncode=2)
    os.environ["AIRFOIL_SOURCE"] = str(path)  # stages run by the tests use the same copy


@pytest.fixture(scope="session")
def airfoil_file() -> Path:
    """The local copy of the airfoil data (checked at session start)."""
    return find_airfoil()


@pytest.fixture(scope="session")
def airfoil(airfoil_file, tmp_path_factory):
    """The prepared airfoil set as the pipeline makes it (float64 features, targets)."""
    import numpy as np

    from descent.data import prepare

    folder = tmp_path_factory.mktemp("prepared")
    prepare(airfoil_file, 1500, folder / "a.npy", folder / "s.json")
    table = np.load(folder / "a.npy")
    return table[:, :-1].copy(), table[:, -1].copy()


def project_files() -> list[str]:
    """Tracked and untracked-but-not-ignored files: the project as a user would clone it."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard",
                             "-z"], cwd=ROOT, check=True, capture_output=True, text=True)
    return [name for name in listed.stdout.split("\0") if name and (ROOT / name).exists()]


def stage_env(airfoil: Path) -> dict[str, str]:
    """Environment for stage commands: this interpreter's venv first on PATH, offline source."""
    env = dict(os.environ, **GIT_IDENTITY, AIRFOIL_SOURCE=str(airfoil))
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.pop("DVC_STAGE", None)
    # As in a user's terminal, not inside `make test`: a nested make prints "Entering directory".
    for name in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS"):
        env.pop(name, None)
    return env


def run(args: list[str], cwd: Path, env: dict[str, str], check: bool = True):
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({result.returncode}):\n"
                             f"{result.stdout}\n{result.stderr}")
    return result


def copy_project(destination: Path, airfoil: Path, with_outputs_from: Path | None = None) -> Path:
    """A fresh git repository holding the project's files, committed once."""
    destination.mkdir(parents=True, exist_ok=True)
    for name in project_files():
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    env = stage_env(airfoil)
    run(["git", "init", "-q", "-b", "main"], destination, env)
    run(["git", "add", "-A"], destination, env)
    run(["git", "commit", "-q", "-m", "project as cloned"], destination, env)
    return destination


@pytest.fixture
def env(airfoil_file) -> dict[str, str]:
    return stage_env(airfoil_file)


def dvc(project: Path, env, *args: str, check: bool = True):
    return run(["dvc", *args], project, env, check=check)


def ran(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


@pytest.fixture(scope="session")
def built(tmp_path_factory, airfoil_file) -> Path:
    """The project after `dvc repro`, results committed, as a user would have it."""
    project = copy_project(tmp_path_factory.mktemp("built") / "project", airfoil_file)
    env = stage_env(airfoil_file)
    first = dvc(project, env, "repro")
    # The clone carries the committed results; only the DVC-cached data must be rebuilt.
    assert {"fetch", "prepare", "synthesize"} <= ran(first.stdout)
    run(["git", "add", "-A"], project, env)
    if run(["git", "status", "--porcelain"], project, env).stdout.strip():
        run(["git", "commit", "-q", "-m", "results"], project, env)
    return project
