"""The batch-size axis: for each batch size, a grid of learning rates (multiples of that
batch size's mean-square critical rate, so the grid reaches past it) x seeds, trained in one
engine call; the steps and examples each point needs to reach a target loss; the best
learning rate per batch size; and McCandlish et al.'s S_min, E_min, B_crit fitted to the
best points, beside B_noise predicted by the theory (descent.theory).

The fit. With S(B) the steps to target at batch B's best learning rate and E = B S its
examples, (S / S_min - 1)(E / E_min - 1) = 1 is S(B) = S_min + E_min / B: linear in
(S_min, E_min), fitted by least squares; B_crit = E_min / S_min. Its 95 % interval is the
percentile bootstrap's over seeds (each resample redraws the seeds of every grid point).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from descent import theory
from descent.engines.dispatch import train_runs
from descent.engines.problem import Plan, make_schedule, memory_needed, total_updates
from descent.io import UserError
from descent.limits import check_memory, check_work
from descent.parallel import cores
from descent.statistics import sufficient_statistics
from descent.numbers import significant

RESAMPLES = 1000
NOT_REACHED = "not reached"


@dataclass(frozen=True)
class Grid:
    """Steps to target of every (learning rate, seed) at one batch size."""
    batch: int
    critical_lr: float
    lrs: np.ndarray          # (L,)
    steps: np.ndarray        # (L, seeds) float: updates to target, inf if not reached
    diverged: np.ndarray     # (L, seeds) bool

    def best(self, steps: np.ndarray | None = None, diverged: np.ndarray | None = None
             ) -> tuple[int, float]:
        """(index of the learning rate with the fewest mean steps among those every seed
        reached and none diverged (a run may pass the target on its way to blowing up),
        that mean); (-1, inf) if none."""
        steps = self.steps if steps is None else steps
        diverged = self.diverged if diverged is None else diverged
        usable = np.isfinite(steps).all(axis=1) & ~diverged.any(axis=1)
        means = np.where(usable, steps.mean(axis=1), np.inf)
        best = int(np.argmin(means))
        return (best, float(means[best])) if np.isfinite(means[best]) else (-1, math.inf)


# A grid's runs log every this many updates: the watch counts the steps to target, the
# logging points only bound the replay that locates a divergence.
LOG_UPDATES = 100


def grid_plan(n: int, batch: int, budget: int, lr: float, gradient_scale: float = 0.5,
              loss_scale: float = 0.5, target: float | None = None) -> Plan:
    """The plan of a grid's runs: enough epochs for the step budget, each run watching for
    the target loss (the steps to target counted exactly, without logging every update:
    the whole-set loss costs three updates at batch 1, bench/README.md), logged every
    LOG_UPDATES updates (a divergence is located exactly by replaying such an interval)."""
    return Plan(n_examples=n, batch_size=batch, epochs=-(-budget * batch // n), lr=lr,
                gradient_scale=gradient_scale, log_every=LOG_UPDATES * batch,
                loss_scale=loss_scale, blowup=1e6, target=target)


def sweep_batch(features, targets, batch: int, factors, seeds: int, budget: int,
                target: float, gradient_scale: float, loss_scale: float, start,
                problem: theory.Quadratic, cluster: str = "none", statistics=None) -> Grid:
    """One batch size's grid, in one engine call (runs: learning rates x seeds; on a dask
    cluster's workers if one is named); statistics: of features and targets, when known."""
    n = len(targets)
    # Rounded to 8 digits: the grid's rates (and so every run's bits) do not depend on the
    # last bits LAPACK's eigenvalues have on this CPU.
    critical = significant(theory.lr_of(theory.critical_step(problem, batch,
                                                              replacement=False),
                                        gradient_scale), 8)
    lrs = np.array([factor * critical for factor in factors])
    plan = grid_plan(n, batch, budget, float(lrs[0]), gradient_scale, loss_scale, target)
    generators = [np.random.default_rng([seed, batch]) for _ in lrs for seed in range(seeds)]
    schedule = make_schedule(plan, generators, lazy=True)
    runs = train_runs(features, targets, np.tile(start, (len(generators), 1)), plan, schedule,
                      lrs=np.repeat(lrs, seeds), cluster=cluster, statistics=statistics)
    # -1: never, or only after diverging
    first = np.where((runs.reached_at >= 0) & (runs.reached_at <= budget), runs.reached_at,
                     np.inf)
    shape = (len(lrs), seeds)
    return Grid(batch, critical, lrs, first.reshape(shape).astype(float),
                (runs.diverged_at >= 0).reshape(shape))


def fit_hyperbola(batches, steps) -> tuple[float, float]:
    """(S_min, E_min) of S(B) = S_min + E_min / B by least squares."""
    batches, steps = np.asarray(batches, float), np.asarray(steps, float)
    design = np.c_[np.ones(len(batches)), 1 / batches]
    s_min, e_min = np.linalg.lstsq(design, steps, rcond=None)[0]
    return float(s_min), float(e_min)


def b_crit_interval(grids: list[Grid]) -> tuple[float, float]:
    """95 % percentile-bootstrap interval of B_crit over seeds (fixed seed: the same every
    run); resamples where some batch size reaches no target are left out."""
    rng = np.random.default_rng(0)
    values = []
    for _ in range(RESAMPLES):
        points = []
        for grid in grids:
            picks = rng.integers(0, grid.steps.shape[1], grid.steps.shape[1])
            _, mean = grid.best(grid.steps[:, picks], grid.diverged[:, picks])
            points.append((grid.batch, mean))
        if all(math.isfinite(mean) for _, mean in points):
            s_min, e_min = fit_hyperbola(*zip(*points))
            if s_min > 0:
                values.append(e_min / s_min)
    if not values:
        return math.nan, math.nan
    low, high = np.quantile(values, [0.025, 0.975])
    return float(low), float(high)


def theta_at_loss(problem: theory.Quadratic, start: np.ndarray, loss: float,
                  loss_scale: float) -> np.ndarray:
    """The point where full-batch GD at half its limit from start first reaches `loss` (a
    point on the path every variant's mean roughly follows): where B_noise is taken."""
    alpha = theory.gd_limit(problem) / 2
    theta = np.asarray(start, np.float64).copy()
    cross = problem.design.T @ problem.targets / problem.n
    for _ in range(100_000):
        if problem.loss(theta, loss_scale) <= loss:
            return theta
        theta = theta - alpha * (problem.hessian @ theta - cross)
    raise UserError("the sweep's target loss is not reached by GD in 100000 steps; raise "
                    "sweep.target_excess")


def sweep_recipe(settings, recipe, features, targets, dtype: str, cluster: str = "none"
                 ) -> tuple[dict, list[dict], list[dict]]:
    """One recipe's sweep: its headline for metrics/sweep.json, a row per grid point, and a
    row per batch size at its best learning rate with the fitted steps (the DVC plot)."""
    problem = theory.quadratic(features, targets)
    n = len(targets)
    too_large = [b for b in settings.batch_sizes if b > n]
    if too_large:
        raise UserError(f"params.yaml: sweep.batch_sizes has {too_large[0]}, more than the "
                        f"{n} rows of {recipe.data}; use batch sizes up to {n}")
    runs = len(settings.lr_factors) * settings.seeds
    target = problem.best_loss(recipe.loss.scale) * (1 + settings.target_excess)
    for batch in settings.batch_sizes:  # refuse a grid that cannot fit, before any work
        plan = grid_plan(n, batch, settings.budget, 1.0, target=target)
        where = f"the sweep of {recipe.name} at batch {batch} ({runs} runs)"
        fix = "lower sweep.budget, sweep.seeds or the number of sweep.lr_factors"
        check_memory(where, memory_needed(n, features.shape[1], plan,
                                          np.dtype(dtype).itemsize, runs, cores()), fix)
        check_work(where, total_updates(plan) * runs, fix)
    start = np.zeros(features.shape[1] + 1)
    x, y = np.asarray(features, dtype), np.asarray(targets, dtype)
    statistics = sufficient_statistics(x, y)  # once, for every batch size's grid
    grids = [sweep_batch(x, y, batch, settings.lr_factors, settings.seeds, settings.budget,
                         target, recipe.gradient_loss.scale, recipe.loss.scale, start,
                         problem, cluster, statistics) for batch in sorted(settings.batch_sizes)]
    rows, points = [], []
    for grid in grids:
        best, mean = grid.best()
        if best >= 0:
            points.append((grid.batch, mean))
        for index, lr in enumerate(grid.lrs):
            steps = grid.steps[index]
            reached = np.isfinite(steps)
            rows.append({"batch_size": grid.batch, "lr": significant(lr, 6),
                         "lr_over_critical": significant(lr / grid.critical_lr, 4),
                         # "not reached" when a seed missed it (diverged, or out of budget)
                         "steps": significant(steps.mean(), 6) if reached.all()
                         else NOT_REACHED,
                         "examples": significant(steps.mean() * grid.batch, 6)
                         if reached.all() else NOT_REACHED,
                         "reached_fraction": float(reached.mean()),
                         "diverged_fraction": float(grid.diverged[index].mean()),
                         "best": index == best})
    if len(points) < 2:
        raise UserError(f"the sweep of {recipe.name} reached its target at fewer than 2 batch "
                        "sizes within sweep.budget steps; raise sweep.budget or "
                        "sweep.target_excess")
    s_min, e_min = fit_hyperbola(*zip(*points))
    low, high = b_crit_interval(grids)
    scale = theory.noise_scale(problem, theta_at_loss(problem, start, target,
                                                      recipe.loss.scale))
    headline = {
        "b_crit": significant(e_min / s_min, 3) if s_min > 0 else None,
        "b_crit_ci95_low": significant(low, 3), "b_crit_ci95_high": significant(high, 3),
        "s_min": significant(s_min, 4), "e_min": significant(e_min, 4),
        "b_noise_predicted": significant(scale.b_noise, 3),
        "b_simple_predicted": significant(scale.b_simple, 3),
        "critical_lr_1": significant(grids[0].critical_lr, 4) if grids[0].batch == 1
        else None,
        "critical_lr_n": significant(theory.lr_of(theory.gd_limit(problem),
                                                  recipe.gradient_loss.scale), 4)}
    best = [{"batch_size": batch, "steps": significant(steps, 6),
             "fitted": significant(s_min + e_min / batch, 6)} for batch, steps in points]
    return {key: value for key, value in headline.items() if value is not None}, rows, best
