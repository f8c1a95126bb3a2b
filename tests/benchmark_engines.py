"""Speed of the two engines on the airfoil recipes, as ratios measured in one run.

    python -m tests.benchmark_engines        (after `dvc repro`, from the project root)

Not a test: timings on shared machines are noisy, so nothing here asserts a speed.
"""
from __future__ import annotations

import time

import pandas as pd
import torch

from stages.engine import Plan, make_schedule, train

RUNS = [("gd", 1500, 1.0, 6), ("sgd", 1, 0.005, 2), ("minibatch", 10, 0.05, 2)]


def seconds(engine: str, features, targets, plan: Plan, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        schedule = make_schedule(plan, torch.Generator().manual_seed(0))
        started = time.perf_counter()
        train(features, targets, torch.zeros(features.shape[1]), torch.zeros(()), plan,
              schedule, engine=engine)
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    table = pd.read_csv("data/prepared/airfoil.csv").to_numpy()
    features = torch.tensor(table[:, :-1], dtype=torch.float32)
    targets = torch.tensor(table[:, -1], dtype=torch.float32)
    print(f"{'variant':10s} {'loop s/epoch':>13s} {'affine s/epoch':>15s} {'loop/affine':>12s}")
    for variant, batch, lr, epochs in RUNS:
        plan = Plan(n_examples=len(targets), batch_size=batch, epochs=epochs, lr=lr)
        loop = seconds("loop", features, targets, plan, repeats=2) / epochs
        affine = seconds("affine", features, targets, plan, repeats=5) / epochs
        print(f"{variant:10s} {loop:13.5f} {affine:15.5f} {loop / affine:12.1f}")
    # The 10^6-update recipe, y = 3x + 2 at batch 1 for 1000 epochs: affine only (the loop
    # would take minutes); one loop epoch gives its rate.
    line = pd.read_csv("data/synthetic/line_3x_plus_2.csv").to_numpy()
    x, y = torch.tensor(line[:, :-1], dtype=torch.float32), torch.tensor(line[:, -1],
                                                                          dtype=torch.float32)
    long_plan = Plan(n_examples=1000, batch_size=1, epochs=1000, lr=0.01, loss_scale=1.0)
    one_epoch = Plan(n_examples=1000, batch_size=1, epochs=1, lr=0.01, loss_scale=1.0)
    affine = seconds("affine", x, y, long_plan, repeats=2)
    loop = seconds("loop", x, y, one_epoch, repeats=1) * 1000
    print(f"y = 3x + 2, 10^6 SGD updates: affine {affine:.2f} s, loop ~{loop:.0f} s "
          f"(1 epoch x 1000), ratio ~{loop / affine:.0f}")


if __name__ == "__main__":
    main()
