"""Runs over seeds: each seed's run is the same whatever other seeds are trained beside it,
the variants start from the same point for a seed (paired comparisons), and the spread the
pipeline reports is over seeds that really differ."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from descent import plans, training
from descent.engines.dispatch import train_runs
from descent.engines.problem import Plan, make_schedule
from tests.factory import config

CPU = "cpu"


def plane(n: int = 200, seed: int = 0):
    generator = np.random.default_rng(seed)
    features = generator.normal(size=(n, 2)).astype(np.float32)
    targets = (features @ [2.0, -3.4] + 4.2 + 0.01 * generator.normal(size=n)).astype(np.float32)
    return features, targets


@pytest.mark.parametrize("engine", ["compiled", "affine", "loop"])
def test_a_seed_gives_the_same_run_alone_or_among_others(engine):
    settings = config(**{"train.engine": engine, "variants.sgd.plane_2x1_minus3p4x2.epochs": 1})
    recipe = settings.recipes["plane_2x1_minus3p4x2"]
    features, targets = plane()
    together = training.seeded_runs(settings, recipe, "sgd", features, targets, CPU, [5, 6, 7, 8])
    alone = training.seeded_runs(settings, recipe, "sgd", features, targets, CPU, [7])
    # Bit for bit: the same updates in the same order, whichever runs share the call.
    np.testing.assert_array_equal(together.runs.losses[2], alone.runs.losses[0])
    np.testing.assert_array_equal(together.runs.final[2], alone.runs.final[0])
    # ... and the seeds do differ (shuffling and initial weights).
    assert not np.array_equal(together.runs.final[0], together.runs.final[1])


def test_the_engines_agree_on_every_seed():
    features, targets = plane()
    finals = {}
    for engine in ("compiled", "affine", "loop"):
        settings = config(**{"train.engine": engine, "dtype": "float64",
                             "variants.minibatch.plane_2x1_minus3p4x2.epochs": 1})
        recipe = settings.recipes["plane_2x1_minus3p4x2"]
        finals[engine] = training.seeded_runs(settings, recipe, "minibatch", features,
                                          targets.astype(np.float64), CPU, [0, 1, 2]).runs.final
    # float64, 20 updates of a contraction: the engines' different summation orders agree
    # to a few ulps of the O(1) parameters.
    np.testing.assert_allclose(finals["affine"], finals["compiled"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(finals["loop"], finals["compiled"], rtol=0, atol=1e-12)


def test_a_seed_starts_every_variant_from_the_same_point():
    recipe = config().recipes["line_3x_plus_2"]
    starts = plans.starts(recipe, 1, [0, 1, 2])
    assert np.array_equal(starts, plans.starts(recipe, 1, [0, 1, 2]))
    assert len({tuple(row.tolist()) for row in starts}) == 3  # seeds differ
    settings = config()
    features, targets = plane()
    recipe = settings.recipes["plane_2x1_minus3p4x2"]
    first = {variant: training.seeded_runs(settings, recipe, variant, features, targets, CPU,
                                       [3]).runs.losses[0, 0] for variant in ("gd", "sgd")}
    assert first["gd"] == first["sgd"]  # the same start, so the same initial loss


def test_seeds_is_validated():
    from descent.io import UserError

    for bad in (0, -3, 2.5, "16", True, 10**6):
        with pytest.raises(UserError, match="seeds"):
            config(seeds=bad)
    assert config(seeds=1).seed_list == [0]  # one run, as the tutorials do: n = 1, no interval
    assert config(seeds=2).seed_list == [0, 1]
    assert config(seed=5, seeds=3).seed_list == [5, 6, 7]


@pytest.mark.parametrize("chunk", [1, 5, None])  # updates per chunk (None: the default)
def test_the_batched_affine_scan_tracks_each_run_and_lets_diverged_runs_drop_out(
        monkeypatch, chunk):
    """All runs in one scan (the GPU path), chunks short or long: each run equals the
    compiled kernel's, and runs that diverge stop at their own update while others go on."""
    import descent.engines.torch_backends as engines

    generator = np.random.default_rng(4)
    features = generator.normal(size=(30, 2)) * np.array([1.0, 3.0])
    targets = features @ [1.0, -2.0] + 0.5
    # lr near the stability edge of the largest batch-1 steps: some orders blow up first.
    plan = Plan(n_examples=30, batch_size=1, epochs=4, lr=0.2, log_every=7, blowup=1e4)
    schedule = make_schedule(plan, [np.random.default_rng(seed) for seed in range(8)])
    starts = generator.normal(size=(8, 3))
    if chunk:
        monkeypatch.setattr(engines, "CHUNK_BYTES", chunk * engines.update_bytes(2, 8, 1, 8))
    compiled = train_runs(features, targets, starts, plan, schedule, engine="compiled")
    affine = train_runs(features, targets, starts, plan, schedule, engine="affine")
    diverged = compiled.diverged_at >= 0
    assert diverged.any() and not diverged.all()  # the case this test is about
    np.testing.assert_array_equal(affine.diverged_at, compiled.diverged_at)
    # float64, ~120 updates in two rounding orders: agree to 1e-9 of the O(1-100) values.
    np.testing.assert_allclose(affine.final, compiled.final, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(affine.losses, compiled.losses, rtol=1e-9, equal_nan=True)


@pytest.mark.parametrize("engine", ["compiled", "affine", "loop"])
def test_a_run_is_bit_identical_alone_or_inside_a_grid_of_learning_rates(engine):
    """The run axis over step sizes: one call trains lrs x seeds (each run its own learning
    rate, start and order); each run's losses, final parameters and divergence point are
    exactly those of the run trained alone at its learning rate. 0.6 diverges (SGD on
    features of scale 3), so a run leaving the grid early is covered too."""
    rng = np.random.default_rng(4)
    features = rng.normal(0, 3, (40, 2))
    targets = features @ [1.0, -2.0] + 0.5 + rng.normal(0, 0.1, 40)
    plan = Plan(n_examples=40, batch_size=4, epochs=3, lr=1.0, log_every=12, blowup=1e6)
    grid = [(lr, seed) for lr in (0.001, 0.02, 0.6) for seed in (0, 1)]
    lrs = np.array([lr for lr, _ in grid])
    generators = [np.random.default_rng(seed) for _, seed in grid]
    schedule = make_schedule(plan, generators)
    starts = np.array([[0.1 * seed, -0.2, 0.05] for _, seed in grid])
    together = train_runs(features, targets, starts, plan, schedule, engine, lrs=lrs)
    assert (together.diverged_at[lrs == 0.6] > 0).all()  # the large step diverges
    for r, (lr, _) in enumerate(grid):
        one = dataclasses.replace(schedule, order=schedule.order[r:r + 1])
        alone = train_runs(features, targets, starts[r:r + 1],
                           dataclasses.replace(plan, lr=lr), one, engine)
        np.testing.assert_array_equal(together.losses[r], alone.losses[0])  # NaN == NaN
        np.testing.assert_array_equal(together.final[r], alone.final[0])
        assert together.diverged_at[r] == alone.diverged_at[0]


@pytest.mark.parametrize("sampling", ["reshuffle", "with_replacement"])
def test_orders_are_the_int64_draws_of_each_runs_generator_in_4_bytes(sampling):
    """int32 indices (half the memory) hold the same draws as int64 ones: the same generator
    calls in the same sequence, epoch after epoch."""
    plan = Plan(n_examples=1000, batch_size=10, epochs=3, lr=0.1,
                with_replacement=sampling == "with_replacement")
    schedule = make_schedule(plan, [np.random.default_rng(seed) for seed in (5, 6)])
    assert schedule.order.dtype == np.int32
    for run, seed in enumerate((5, 6)):
        rng = np.random.default_rng(seed)
        if plan.with_replacement:
            expected = rng.integers(0, 1000, size=(3, 1000))
        else:
            expected = np.stack([rng.permuted(np.arange(1000, dtype=np.int64))
                                 for _ in range(3)])
        np.testing.assert_array_equal(schedule.order[run], expected)


def test_full_batches_and_unshuffled_runs_read_the_rows_in_order_and_hold_no_orders():
    for plan in (Plan(n_examples=1000, batch_size=1000, epochs=50, lr=0.1),
                 Plan(n_examples=1000, batch_size=10, epochs=50, lr=0.1, shuffle=False)):
        schedule = make_schedule(plan, [np.random.default_rng(seed) for seed in range(16)])
        assert schedule.order.shape == (16, 50, 1000)
        assert (schedule.order == np.arange(1000)).all()
        assert schedule.order.base is not None and schedule.order.strides[:2] == (0, 0)


@pytest.mark.parametrize("engine", ["compiled", "affine"])
def test_orders_drawn_as_each_run_starts_give_the_runs_of_orders_drawn_up_front(engine):
    """A lazy schedule holds no orders; each run's are drawn from a copy of its generator
    when it runs (the compiled kernel), or all at once where a backend needs them (affine):
    the runs are bit for bit those of the schedule drawn up front."""
    rng = np.random.default_rng(0)
    features = rng.normal(size=(300, 3)).astype(np.float32)
    targets = (features @ [1.0, -2.0, 0.5] + 0.1 * rng.normal(size=300)).astype(np.float32)
    plan = Plan(n_examples=300, batch_size=7, epochs=3, lr=0.05)
    generators = lambda: [np.random.default_rng(seed) for seed in range(5)]  # noqa: E731
    lazy = make_schedule(plan, generators(), lazy=True)
    eager = make_schedule(plan, generators())
    assert lazy.order is None
    np.testing.assert_array_equal(lazy.orders(slice(1, 3)), eager.order[1:3])
    np.testing.assert_array_equal(lazy.orders(slice(1, 3)), eager.order[1:3])  # again
    starts = np.zeros((5, 4))
    a = train_runs(features, targets, starts, plan, lazy, engine=engine)
    b = train_runs(features, targets, starts, plan, eager, engine=engine)
    np.testing.assert_array_equal(a.states, b.states)
    np.testing.assert_array_equal(a.losses, b.losses)
