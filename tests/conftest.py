"""Shared fixtures: the airfoil file and throw-away copies of the project."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_AIRFOIL = ROOT.parent / "shared" / "data" / "airfoil_self_noise.dat"
GIT_IDENTITY = {"GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@example.com",
                "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@example.com"}


@pytest.fixture(scope="session")
def airfoil_file() -> Path:
    """The local copy of the airfoil data (AIRFOIL_SOURCE, else ../shared/data)."""
    path = Path(os.environ.get("AIRFOIL_SOURCE") or SHARED_AIRFOIL).resolve()
    if not path.is_file():
        pytest.fail(f"airfoil data not found at {path}: set AIRFOIL_SOURCE to a local copy")
    return path


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
