"""One `dvc exp run -S batch_size=...` in two versions of the project, interleaved.

    python -m bench.startup OLD_REV [ROUNDS]      (from the project root; default 5 rounds)

Each version is cloned from this repository into a temporary folder, built once with
`dvc repro` and committed. Then each round runs one experiment in each version, one after
the other, with the same batch size. The batch size is new every round, so DVC's run cache
never answers one. Printed per version: the minimum over the rounds of the experiment's
wall-clock seconds, and of DVC's own share (the experiment's time less the time its stages'
processes ran, from `time` wrapped around each stage's command). Not a test.
"""
from __future__ import annotations

import re
import sys
import tempfile
import time
from pathlib import Path

from descent.io import ROOT
from tests.conftest import find_airfoil, run, stage_env


def clone(rev: str, folder: Path, env: dict) -> Path:
    project = folder / rev.replace("/", "_")
    run(["git", "clone", "-q", str(ROOT), str(project)], folder, env)
    run(["git", "checkout", "-q", rev], project, env)
    text = (project / "dvc.yaml").read_text()
    # Each stage's process timed: what is left of an experiment's time is DVC's own.
    text = re.sub(r"cmd: (python -m stages\.\S+)(.*)",
                  r"cmd: /usr/bin/time -a -f %e -o stage-seconds.txt \1\2", text)
    (project / "dvc.yaml").write_text(text)
    run(["git", "commit", "-qam", "stages timed"], project, env)
    run(["dvc", "repro"], project, env)
    run(["git", "add", "-A"], project, env)
    run(["git", "commit", "-qm", "results", "--allow-empty"], project, env)
    return project


def one_experiment(project: Path, env: dict, batch_size: int) -> tuple[float, float]:
    seconds = project / "stage-seconds.txt"
    seconds.unlink(missing_ok=True)
    started = time.perf_counter()
    run(["dvc", "exp", "run", "-S", f"batch_size={batch_size}"], project, env)
    total = time.perf_counter() - started
    stages = sum(float(line) for line in seconds.read_text().split()) if seconds.exists() \
        else 0.0
    run(["git", "checkout", "-q", "params.yaml"], project, env)  # -S leaves it edited
    return total, stages


def main(old: str, rounds: int = 5) -> None:
    env = stage_env(find_airfoil())
    with tempfile.TemporaryDirectory() as folder:
        projects = {"before": clone(old, Path(folder), env),
                    "now": clone("HEAD", Path(folder), env)}
        best = {name: (float("inf"), float("inf"), float("inf")) for name in projects}
        for round_ in range(rounds):
            for name, project in projects.items():
                total, stages = one_experiment(project, env, 20 + round_)
                best[name] = (min(best[name][0], total), min(best[name][1], stages),
                              min(best[name][2], total - stages))
    for name, (total, stages, own) in best.items():
        print(f"{name:>7s}: exp run {total:5.1f} s, its stages {stages:5.1f} s, DVC's own "
              f"{own:5.1f} s (minimum of {rounds})")
    print(f"now / before: {best['now'][0] / best['before'][0]:.2f}")


if __name__ == "__main__":
    main(sys.argv[1], *(int(value) for value in sys.argv[2:]))
