"""The sweep's steps to target, counted by the kernel's watch (an O(p) estimate of the loss
after each update, the exact loss only where it could decide), against the same runs with
the exact whole-set loss logged after every update.

No tolerance: the counts and the divergences must be equal, update for update.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from descent import theory
from descent.engines.dispatch import train_runs
from descent.engines.problem import make_schedule
from descent.sweep import grid_plan

FACTORS = (0.05, 0.2, 0.7, 1.0, 1.4, 3.0)  # of the mean-square critical rate: past it too
SEEDS, BUDGET = 8, 3000


def sets(airfoil) -> dict:
    rng = np.random.default_rng(7)
    x = rng.normal(size=(1000, 2))
    return {"airfoil": airfoil,
            "plane": (x, x @ [2.0, -3.4] + 4.2 + 0.01 * rng.standard_normal(1000)),
            # no noise: the target sits near the float32 rounding of the loss
            "exact plane": (x, x @ [2.0, -3.4] + 4.2)}


@pytest.mark.parametrize("name", ["airfoil", "plane", "exact plane"])
@pytest.mark.parametrize("batch", [1, 4, 64])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_watch_counts_what_every_updates_exact_loss_counts(airfoil, name, batch, dtype):
    features, targets = sets(airfoil)[name]
    problem = theory.quadratic(features, targets)
    start_loss = problem.loss(np.zeros(features.shape[1] + 1), 0.5)
    # 5 % above the best loss, as the sweep's default; for the noise-free set a millionth
    # of the start's (its best loss is 0, below float32's rounding)
    target = problem.best_loss(0.5) * 1.05 if name != "exact plane" else 1e-6 * start_loss
    critical = theory.lr_of(theory.critical_step(problem, batch, replacement=False), 0.5)
    lrs = np.repeat([factor * critical for factor in FACTORS], SEEDS)
    x, y = features.astype(dtype), targets.astype(dtype)
    watched = grid_plan(len(y), batch, BUDGET, float(lrs[0]), target=target)
    every = dataclasses.replace(watched, target=None, log_every=batch)

    def train(plan):
        generators = [np.random.default_rng([seed, batch]) for seed in range(len(lrs))]
        return train_runs(x, y, np.zeros((len(lrs), x.shape[1] + 1), dtype), plan,
                          make_schedule(plan, generators, lazy=True), lrs=lrs)

    fast, slow = train(watched), train(every)
    assert len(slow.log_updates) == slow.log_updates[-1] + 1  # every update logged
    reached = slow.losses <= target  # NaN after a divergence compares False
    first = np.where(reached.any(axis=1), slow.log_updates[reached.argmax(axis=1)], -1)
    assert (fast.reached_at == first).all(), np.c_[fast.reached_at, first]
    assert (fast.diverged_at == slow.diverged_at).all()
    # the grid is not trivial: targets reached and missed, runs diverged and not
    assert (first >= 0).any() and (first < 0).any()
    assert (slow.diverged_at >= 0).any() and (slow.diverged_at < 0).any()


def test_only_the_compiled_engine_watches_for_a_target(airfoil):
    """The torch backends log at points; a watched target would be silently ignored there."""
    features, targets = airfoil
    plan = grid_plan(len(targets), 4, 10, 0.01, target=0.3)
    with pytest.raises(ValueError, match="compiled engine only"):
        train_runs(features, targets, np.zeros((1, features.shape[1] + 1)), plan,
                   make_schedule(plan, [np.random.default_rng(0)]), engine="affine")
