"""The runs of one (recipe, variant), one per seed: plan, seeded starts, descent, records."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from descent.config import Config, Recipe
from descent.engines.dispatch import train_runs
from descent.engines.problem import (Plan, Runs, Schedule, choose_engine, make_schedule,
                                     memory_needed, total_updates)
from descent.io import UserError
from descent.limits import (ANNOUNCE_SECONDS, LOOP_SECONDS_PER_UPDATE, check_memory,
                            check_work)
from descent.numbers import significant
from descent.parallel import cores
from descent.plans import generator, plan_of, starts
from descent.records import SeedRun, VariantRuns
from descent.statistics import check_matches


def check_fits(config: Config, recipe: Recipe, variant: str, features: np.ndarray,
               targets: np.ndarray, device: str = "cpu") -> None:
    """Refuse, before any work, runs whose numbers, memory or number of updates cannot fit."""
    n_examples, n_features = features.shape
    plan = plan_of(config, recipe, variant, n_examples)
    where = f"{variant} on recipe {recipe.name}"
    largest = float(np.finfo(config.dtype).max)
    if plan.lr > largest:
        raise UserError(f"params.yaml: variants.{variant}.{recipe.name}.lr is {plan.lr:g}, "
                        f"beyond {config.dtype}'s range ({largest:.3g}); lower it")
    # (data beyond the dtype's range is refused as it is read: descent.data.load_dataset)
    fix = f"lower variants.{variant}.{recipe.name}.epochs"
    check_work(where, total_updates(plan) * config.seeds, f"{fix} (or seeds)")
    itemsize = 4 if config.dtype == "float32" else 8
    # The compiled kernel draws each run's orders as it starts (a lazy schedule): one per
    # core at a time; the torch backends hold every run's.
    held = cores() if choose_engine(config.train.engine, device) == "compiled" else None
    check_memory(where, memory_needed(n_examples, n_features, plan, itemsize, config.seeds,
                                      held),
                 f"{fix}, lower seeds, or raise train.log_every")


def slow_loop_notice(config: Config, variant: str, datasets: dict) -> str:
    """With engine `loop` (the tutorials' literal loop, ~10^4 times the compiled kernel's
    cost an update), a line saying how long it will take at least, when that is long."""
    if config.train.engine != "loop":
        return ""
    updates = sum(total_updates(plan_of(config, recipe, variant, len(datasets[name][1])))
                  for name, recipe in config.recipes.items())
    seconds = updates * config.seeds * LOOP_SECONDS_PER_UPDATE
    if seconds <= ANNOUNCE_SECONDS:
        return ""
    return (f"notice: engine loop will take at least {seconds / 60:.0f} min for {variant} "
            f"({updates * config.seeds:.3g} updates at ~{LOOP_SECONDS_PER_UPDATE * 1e6:.0f} "
            "µs); engine compiled takes seconds (`-S train.engine=auto`)")


@dataclass
class SeededRuns:
    """The runs of one (recipe, variant), one per seed, and the examples seen at each point."""
    plan: Plan
    seeds: list[int]
    runs: Runs
    examples: np.ndarray     # (points,) examples seen at each logging point


def schedule_of(plan: Plan, recipe: Recipe, variant: str, seeds: list[int]) -> Schedule:
    """The shared schedule with each seed's own example order: order is (R, epochs, N)."""
    return make_schedule(plan, [generator(seed, recipe.name, variant) for seed in seeds],
                         lazy=True)


def seeded_runs(config: Config, recipe: Recipe, variant: str, features: np.ndarray,
                targets: np.ndarray, device: str, seeds: list[int], progress=None,
                statistics: tuple | None = None) -> SeededRuns:
    """Train one (recipe, variant) once per seed, all seeds in one call of the engine.

    Seed s gives the same run whichever other seeds are trained beside it. statistics: the
    data's in config.dtype as stage solve recorded them (statistics.recorded), checked
    against the data here; else the engine computes them.
    """
    plan = plan_of(config, recipe, variant, len(targets))
    schedule = schedule_of(plan, recipe, variant, seeds)
    x, y = np.asarray(features, dtype=config.dtype), np.asarray(targets, dtype=config.dtype)
    if statistics is not None:
        check_matches(statistics, x, y, recipe.name)
    runs = train_runs(x, y, starts(recipe, features.shape[1], seeds), plan, schedule,
                      engine=config.train.engine, device=device, progress=progress,
                      cluster=config.train.cluster, statistics=statistics)
    examples = schedule.examples_after(runs.log_updates)
    return SeededRuns(plan, list(seeds), runs, examples)


def summary(result: SeededRuns, digits: int, params: str) -> VariantRuns:
    """The deterministic result, as recorded in metrics/train/<variant>.json: the plan's
    figures and each seed's final parameters and loss, to `digits` significant digits."""
    plan, runs = result.plan, result.runs
    per_seed = []
    for r, seed in enumerate(result.seeds):
        logged = runs.losses[r][~np.isnan(runs.losses[r])]  # up to its last sound point
        per_seed.append(SeedRun(
            seed=seed, initial_loss=significant(logged[0], digits),
            weights=tuple(significant(v, digits) for v in runs.final[r, :-1]),
            bias=significant(runs.final[r, -1], digits), loss=significant(logged[-1], digits),
            diverged_at_update=int(runs.diverged_at[r]) if runs.diverged_at[r] >= 0 else None))
    return VariantRuns(batch_size=plan.batch_size, lr=plan.lr, epochs=plan.epochs,
                       examples=plan.n_examples, updates=int(runs.log_updates[-1]),
                       runs=tuple(per_seed), params=params)


def curves(result: SeededRuns) -> dict[str, np.ndarray]:
    """Every seed's loss at every logging point (NaN after a run diverged), for the judge."""
    return {"updates": result.runs.log_updates, "examples": result.examples,
            "losses": result.runs.losses}


def timing(result: SeededRuns) -> dict:
    """Wall-clock figures (vary from run to run; kept apart from results)."""
    seconds, runs = result.runs.seconds, len(result.seeds)
    return {"seconds": seconds, "runs": runs,
            "seconds_per_run_epoch": seconds / (runs * result.plan.epochs)}
