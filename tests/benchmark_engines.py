"""Speed of the two engines on the airfoil recipes, as ratios measured in one run.

    python -m tests.benchmark_engines        (after `dvc repro`, from the project root)

Not a test: timings on shared machines are noisy, so nothing here asserts a speed.
"""
from __future__ import annotations

import time

import pandas as pd
import torch

from descent.engine import Plan, make_schedule, train

RUNS = [("gd", 1500, 1.0, 6), ("sgd", 1, 0.005, 2), ("minibatch", 10, 0.05, 2)]
ENGINES = ("loop", "affine", "compiled")


def seconds(engine: str, features, targets, plan: Plan) -> float:
    schedule = make_schedule(plan, torch.Generator().manual_seed(0))
    started = time.perf_counter()
    train(features, targets, torch.zeros(features.shape[1]), torch.zeros(()), plan,
          schedule, engine=engine)
    return time.perf_counter() - started


def sklearn_epoch(features, targets, lr: float) -> float:
    """scikit-learn's SGDRegressor: batch 1, constant lr, no penalty, one epoch."""
    import warnings

    from sklearn.linear_model import SGDRegressor

    model = SGDRegressor(penalty=None, learning_rate="constant", eta0=lr, max_iter=1,
                         tol=None, shuffle=True, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "max_iter reached": one epoch is the point
        started = time.perf_counter()
        model.fit(features, targets)
    return time.perf_counter() - started


def main() -> None:
    table = pd.read_csv("data/prepared/airfoil.csv").to_numpy()
    features = torch.tensor(table[:, :-1], dtype=torch.float32)
    targets = torch.tensor(table[:, -1], dtype=torch.float32)
    seconds("compiled", features, targets, Plan(n_examples=1500, batch_size=1, epochs=1,
                                                lr=0.005))  # numba compile/cache load
    print(f"{'variant':10s}" + "".join(f"{e + ' s/epoch':>18s}" for e in ENGINES)
          + f"{'loop/compiled':>15s}")
    for variant, batch, lr, epochs in RUNS:
        plan = Plan(n_examples=len(targets), batch_size=batch, epochs=epochs, lr=lr)
        # Minimum of interleaved repeats: the machine is shared, so noise only adds time.
        best = {engine: float("inf") for engine in ENGINES}
        for _ in range(3):
            for engine in ENGINES:
                best[engine] = min(best[engine], seconds(engine, features, targets, plan) / epochs)
        print(f"{variant:10s}" + "".join(f"{best[e]:18.6f}" for e in ENGINES)
              + f"{best['loop'] / best['compiled']:15.0f}")
    x64, y64 = table[:, :-1], table[:, -1]
    plan = Plan(n_examples=1500, batch_size=1, epochs=1, lr=0.005)
    ours, theirs = float("inf"), float("inf")
    for _ in range(7):
        theirs = min(theirs, sklearn_epoch(x64, y64, 0.005))
        ours = min(ours, seconds("compiled", features, targets, plan))
    print(f"airfoil SGD batch 1, one epoch: compiled {ours * 1e3:.3f} ms, scikit-learn "
          f"SGDRegressor {theirs * 1e3:.3f} ms, ratio {theirs / ours:.1f}")
    # The 10^6-update recipe, y = 3x + 2 at batch 1 for 1000 epochs.
    line = pd.read_csv("data/synthetic/line_3x_plus_2.csv").to_numpy()
    x, y = torch.tensor(line[:, :-1], dtype=torch.float32), torch.tensor(line[:, -1],
                                                                          dtype=torch.float32)
    long_plan = Plan(n_examples=1000, batch_size=1, epochs=1000, lr=0.01, gradient_scale=1.0)
    print("y = 3x + 2, 10^6 SGD updates: " + ", ".join(
        f"{engine} {seconds(engine, x, y, long_plan):.2f} s" for engine in ("affine", "compiled")))


if __name__ == "__main__":
    main()
