"""A sweep-sized grid (256 runs) in-process and on a 2-worker dask LocalCluster.

    python -m bench.cluster            (from the project root, after `dvc repro`)

The 256 runs of airfoil (32 learning rates x 8 seeds, batch 16, the sweep's budget of 3000
steps) trained with train.cluster none and local. Checks that they are the same runs bit
for bit, then prints the best wall-clock of each over interleaved rounds, and the cluster's
overhead per block of runs (its extra time over the in-process run, spread over its blocks).
Not a test: nothing here asserts a speed.
"""
from __future__ import annotations

import numpy as np

from bench.benchmark import interleaved
from descent.engines.compiled import CLUSTER_BLOCK_RUNS
from descent.engines.dispatch import train_runs
from descent.engines.problem import make_schedule
from descent.io import ROOT
from descent.sweep import grid_plan


def main(rounds: int = 5) -> None:
    table = np.load(ROOT / "data/prepared/airfoil.npy")
    x, y = table[:, :-1].astype(np.float32), table[:, -1].astype(np.float32)
    plan = grid_plan(len(y), 16, budget=3000, lr=0.1)
    lrs = np.repeat(np.geomspace(0.01, 1.2, 32), 8)
    starts = np.zeros((256, x.shape[1] + 1))

    def grid(cluster: str):
        schedule = make_schedule(plan, [np.random.default_rng([seed, 16]) for _ in range(32)
                                        for seed in range(8)], lazy=True)
        return train_runs(x, y, starts, plan, schedule, lrs=lrs, cluster=cluster)

    here, there = grid("none"), grid("local")  # (the first starts the cluster)
    for field in ("states", "losses", "diverged_at"):
        np.testing.assert_array_equal(getattr(there, field), getattr(here, field))
    best = interleaved({"none": lambda: grid("none"), "local": lambda: grid("local")}, rounds)
    blocks = -(-256 // CLUSTER_BLOCK_RUNS)
    print(f"256 runs, {plan.epochs} epochs of airfoil at batch 16: the same bits in-process "
          f"and on the cluster; in-process {best['none']:.3f} s, 2-worker LocalCluster "
          f"{best['local']:.3f} s ({blocks} blocks: "
          f"{(best['local'] - best['none']) / blocks * 1e3:.1f} ms overhead per block)")


if __name__ == "__main__":
    main()
