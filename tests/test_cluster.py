"""Blocks of runs on a dask cluster (train.cluster) are the runs trained in-process, bit for
bit: a 2-worker LocalCluster, real worker processes."""
from __future__ import annotations

import numpy as np
import pytest

from descent.engines import cluster as cluster_module
from descent.engines.dispatch import train_runs
from descent.engines.problem import Plan, make_schedule
from descent.io import UserError


def problem(n=400, p=9, seed=0):
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(n, p)).astype(np.float32)
    targets = (features @ rng.normal(size=p) + 0.1 * rng.normal(size=n)).astype(np.float32)
    return features, targets


@pytest.mark.parametrize("lazy, target", [(True, None), (False, 0.01)])
def test_a_grid_on_a_local_dask_cluster_is_the_grid_in_process(lazy, target):
    """20 runs (3 blocks of at most 8), a learning rate each, some past the stable range so
    that runs diverge on the workers too; with a target loss (the sweep's), some reach it."""
    features, targets = problem()
    plan = Plan(n_examples=400, batch_size=6, epochs=2, lr=0.01, log_every=30, target=target)
    lrs = np.geomspace(0.001, 3.0, 20)
    starts = np.zeros((20, 10))

    def schedule():
        return make_schedule(plan, [np.random.default_rng(seed) for seed in range(20)],
                             lazy=lazy)

    here = train_runs(features, targets, starts, plan, schedule(), lrs=lrs)
    # Twice on the same data, as two recipes on one data set are (data sent by content
    # once lost the second call's copy when the first released it: the stage hung).
    for _ in range(2):
        there = train_runs(features, targets, starts, plan, schedule(), lrs=lrs,
                           cluster="local")
    assert (here.diverged_at >= 0).any() and (here.diverged_at < 0).any()
    np.testing.assert_array_equal(there.states, here.states)
    np.testing.assert_array_equal(there.losses, here.losses)
    np.testing.assert_array_equal(there.diverged_at, here.diverged_at)
    if target is not None:
        assert (here.reached_at >= 0).any() and (here.reached_at < 0).any()
        np.testing.assert_array_equal(there.reached_at, here.reached_at)


def test_a_scheduler_that_does_not_answer_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(cluster_module, "CONNECT_SECONDS", 1)
    features, targets = problem(n=20, p=2)
    plan = Plan(n_examples=20, batch_size=4, epochs=1, lr=0.01)
    with pytest.raises(UserError, match="no dask scheduler answers at tcp://127.0.0.1:9"):
        train_runs(features, targets, np.zeros((2, 3)), plan,
                   make_schedule(plan, [np.random.default_rng(0)] * 2),
                   cluster="tcp://127.0.0.1:9")


def test_the_torch_engines_say_the_cluster_is_the_compiled_engines():
    features, targets = problem(n=20, p=2)
    plan = Plan(n_examples=20, batch_size=4, epochs=1, lr=0.01)
    with pytest.raises(UserError, match="train.cluster sends the compiled engine's runs"):
        train_runs(features, targets, np.zeros((1, 3)), plan,
                   make_schedule(plan, [np.random.default_rng(0)]), engine="affine",
                   cluster="local")
