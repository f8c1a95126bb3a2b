"""The pipeline on a large synthetic set, through the real `dvc repro` (issue 21's targets).

    python -m bench.scale [ROWS] [FEATURES]        (default 10^7 x 10; from the project root)

A fresh copy of the project gets one more synthetic set and recipe, `big` (ROWS x FEATURES,
normal features), with 16 seeds: GD 10 epochs, SGD and mini-batch 1 epoch, as the issue
measures. Each stage's command is wrapped in GNU time, so the table gives every stage's
wall-clock seconds and peak resident memory, beside the float32 size of the data. Not a
test: nothing here asserts a speed. Prints a table and writes bench/scale_ROWSxFEATURES.json.
"""
from __future__ import annotations

import re
import sys
import tempfile
import time
from pathlib import Path

import yaml

from descent.io import ROOT, write_json
from tests.conftest import copy_project, find_airfoil, run, stage_env


def add_big_set(project: Path, rows: int, features: int) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["synthetic"]["big"] = {
        "n_rows": rows, "features": {"kind": "normal", "mean": 0.0, "std": 1.0},
        "weights": [round(0.5 + 0.1 * j, 2) for j in range(features)], "bias": 1.0,
        "noise_std": 0.1, "seed": 21}
    params["recipes"]["big"] = {"data": "data/synthetic/big.npy", "loss": "half_squared",
                                "init": {"weights": {"normal_std": 0.01}, "bias": 0.0},
                                "shuffle": True}
    params["variants"]["gd"]["big"] = {"lr": 0.5, "epochs": 10}
    params["variants"]["sgd"]["big"] = {"lr": 0.001, "epochs": 1}
    params["variants"]["minibatch"]["big"] = {"lr": 0.01, "epochs": 1}
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    # Each stage's command under GNU time: seconds and peak RSS (kB) per stage.
    text = (project / "dvc.yaml").read_text()
    text = re.sub(r"cmd: python -m stages\.(\w+)( \$\{key\})?(.*)",
                  lambda m: (f"cmd: /usr/bin/time -f '%e %M' -o "
                             f"bench-time-{m.group(1)}{'-${key}' if m.group(2) else ''}.txt "
                             f"python -m stages.{m.group(1)}{m.group(2) or ''}{m.group(3)}"),
                  text)
    (project / "dvc.yaml").write_text(text)


def main(rows: int = 10**7, features: int = 10) -> None:
    airfoil = find_airfoil()
    env = stage_env(airfoil)
    with tempfile.TemporaryDirectory() as folder:
        project = copy_project(Path(folder) / "project", airfoil)
        add_big_set(project, rows, features)
        run(["git", "commit", "-qam", "a large set"], project, env)
        started = time.perf_counter()
        run(["dvc", "repro"], project, env)
        total = time.perf_counter() - started
        stages = {}
        for path in sorted(project.glob("bench-time-*.txt")):
            seconds, kilobytes = path.read_text().split()[-2:]
            stages[path.stem.removeprefix("bench-time-")] = {
                "seconds": float(seconds), "peak_rss_bytes": int(kilobytes) * 1024}
        size = (project / "data/synthetic/big.npy").stat().st_size
    data32 = rows * (features + 1) * 4
    result = {"rows": rows, "features": features, "dvc_repro_s": total,
              "float32_data_bytes": data32, "npy_bytes": size, "stages": stages}
    write_json(ROOT / f"bench/scale_{rows}x{features}.json", result)
    print(f"{rows} x {features}: dvc repro {total:.1f} s; float32 data {data32 / 2**20:.0f} "
          f"MiB, .npy {size / 2**20:.0f} MiB")
    print(f"{'stage':>18s}{'seconds':>9s}{'peak RSS MiB':>14s}{'peak / data':>12s}")
    for name, figures in stages.items():
        print(f"{name:>18s}{figures['seconds']:9.1f}{figures['peak_rss_bytes'] / 2**20:14.0f}"
              f"{figures['peak_rss_bytes'] / data32:12.2f}")


if __name__ == "__main__":
    main(*(int(value) for value in sys.argv[1:]))
