"""The judge: scikit-learn's closed-form least squares, and each run's metrics against it
over the seeds (what stage `evaluate` writes)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from descent.config import VARIANTS, batch_size
from descent import paths
from descent.io import ROOT, UserError, damaged, read_arrays, read_json
from descent.numbers import DIGITS, significant
from descent.records import SeedRun, Trained, VariantRuns

NOT_REACHED = "not reached"
DIVERGED = "diverged"




def load_closed_form(recipes) -> dict[str, dict]:
    """What stage `solve` wrote, for every recipe."""
    try:
        optima = read_json(ROOT / paths.CLOSED_FORM, "solve")
    except FileNotFoundError:
        raise UserError("data/closed_form.json not found; run `dvc repro solve` first") \
            from None
    missing = [name for name in recipes if name not in optima]
    if missing:
        raise UserError(f"data/closed_form.json has no solution for {', '.join(missing)}; "
                        "run `dvc repro solve`")
    return optima


def unique(optimum: dict) -> bool:
    """Whether the data have one minimum (features of full rank), so that distances to the
    closed-form parameters mean something."""
    return optimum["rank"] == len(optimum["weights"])


def as_metrics(optimum: dict, digits: int) -> dict:
    """Weights as w1, w2, ... keys: DVC's metric tables show numbers, not lists."""
    weights = {f"w{i + 1}": significant(value, digits)
               for i, value in enumerate(optimum["weights"])}
    note = {} if unique(optimum) else {"rank_deficient": (
        f"rank {optimum['rank']} of {len(optimum['weights'])} features: the minimum loss "
        "is reached on a line or plane of parameters; runs are judged by loss only")}
    return {"loss": significant(optimum["loss"], digits),
            "bias": significant(optimum["bias"], digits), **weights, **note}


def spread(values, digits: int, magnitude: float, signed: bool = False) -> dict:
    """Mean, standard deviation and 95 % confidence interval of the mean over runs, rounded
    to `digits` significant digits of `magnitude` (the figures').

    The interval of a signed quantity (a paired difference) is Student t's. A loss, a
    distance or a count is positive and often skewed (a few seeds far out): Student t's
    symmetric interval can then reach below 0, so theirs is the percentile bootstrap's,
    which stays inside the values' range.
    """
    values = np.asarray(values, dtype=float)
    n, mean = len(values), float(np.mean(values))
    result = {"mean": significant(mean, digits, magnitude), "n": n}
    if n >= 2:
        sd = float(np.std(values, ddof=1))
        low, high = t_interval(values) if signed else bootstrap_interval(values)
        result.update(sd=significant(sd, digits, magnitude),
                      ci95_low=significant(low, digits, magnitude),
                      ci95_high=significant(high, digits, magnitude))
    return result


def t_interval(values: np.ndarray) -> tuple[float, float]:
    from scipy.special import stdtrit  # Student t quantile; scipy.stats costs 0.4 s more

    mean, n = float(np.mean(values)), len(values)
    half = float(stdtrit(n - 1, 0.975)) * float(np.std(values, ddof=1)) / math.sqrt(n)
    return mean - half, mean + half


RESAMPLES = 4000   # the 2.5 % and 97.5 % quantiles of 4000 means: ~1 % of their spread
BLOCK = 1 << 22    # values resampled at once (32 MiB)


def bootstrap_interval(values: np.ndarray) -> tuple[float, float]:
    """95 % percentile-bootstrap interval of the mean, from a fixed seed (the same figures
    every run). Each resample's sum is a running sum in index order (np.cumsum), not a
    SIMD-width-dependent reduction, so the bits are the same on every CPU."""
    rng = np.random.default_rng(0)
    n = len(values)
    means = np.empty(RESAMPLES)
    rows = max(1, BLOCK // n)
    for start in range(0, RESAMPLES, rows):
        picks = rng.integers(0, n, size=(min(rows, RESAMPLES - start), n))
        means[start:start + len(picks)] = np.cumsum(values[picks], axis=1)[:, -1] / n
    low, high = np.quantile(means, [0.025, 0.975])
    return float(low), float(high)


def distance(a, b) -> float:
    """Euclidean distance with an exactly rounded sum (no BLAS: the same bits on any CPU)."""
    return math.sqrt(math.fsum((float(x) - float(y)) ** 2 for x, y in zip(a, b)))


def seed_figures(run: SeedRun, losses: np.ndarray, examples: np.ndarray, optimum: dict,
                 truth: dict | None, target: float) -> dict[str, Any]:
    """One seed's figures against the optimum (unrounded); a diverged run has none."""
    if run.diverged:
        return {"diverged": True, "diverged_at_update": run.diverged_at_update}
    weights, bias = np.array(run.weights), run.bias
    figures: dict[str, Any] = {
        "diverged": False, "final_loss": run.loss, "excess_loss": run.loss - optimum["loss"]}
    if not unique(optimum):  # parameters at the minimum are not unique: no distance to them
        truth = None
    else:
        figures["weights_distance"] = distance(weights, optimum["weights"])
        figures["bias_distance"] = abs(bias - optimum["bias"])
    if truth is not None:
        figures["true_weights_distance"] = distance(weights, truth["weights"])
        figures["true_bias_distance"] = abs(bias - truth["bias"])
    reached = np.flatnonzero(losses <= target)  # NaN (after divergence) never compares true
    figures["examples_to_target"] = int(examples[reached[0]]) if len(reached) else None
    return figures


SPREAD_FIGURES = ("final_loss", "excess_loss", "weights_distance", "bias_distance",
                  "true_weights_distance", "true_bias_distance")


def target_loss(optimum: float, initial: list[float], target_excess: float, dtype: str
                ) -> float:
    """The loss a run must reach: within target_excess of the optimum, relative to the
    optimum or, when that is near 0 (noise-free data), to the starting loss times the
    dtype's resolution eps (a loss 1/eps below its start is as low as training in that
    dtype resolves), so that a noise-free set has a reachable target."""
    floor = float(np.finfo(dtype).eps) * float(np.mean(initial))
    return optimum + target_excess * max(optimum, floor)


def judge(result: VariantRuns, curves: dict, optimum: dict, truth: dict | None,
          target_excess: float, digits: int, dtype: str) -> tuple[dict, list[dict]]:
    """A (recipe, variant)'s metrics over its seeds, and each seed's figures.

    Spreads are over the runs that did not diverge; `diverged_fraction` says how many did,
    and a figure no run reached reads "diverged" or "not reached", never NaN or null.
    """
    target = target_loss(optimum["loss"], [run.initial_loss for run in result.runs],
                         target_excess, dtype)
    seeds = [seed_figures(run, curves["losses"][r], curves["examples"], optimum, truth, target)
             for r, run in enumerate(result.runs)]
    finished = [figures for figures in seeds if not figures["diverged"]]
    metrics: dict[str, Any] = {"batch_size": result.batch_size, "lr": result.lr,
                               "epochs": result.epochs, "updates": result.updates}
    metrics["runs"] = len(seeds)
    metrics["diverged_fraction"] = 1 - len(finished) / len(seeds)
    if len(finished) < len(seeds):
        metrics["earliest_divergence_update"] = min(
            figures["diverged_at_update"] for figures in seeds if figures["diverged"])
    loss_magnitude = np.mean([f["final_loss"] for f in finished]) if finished else 1.0
    parameter_magnitude = max(np.abs(np.r_[optimum["weights"], optimum["bias"]]).max(), 1e-300)
    for key in SPREAD_FIGURES:
        if finished and key not in finished[0]:  # no truth, or no unique minimum
            continue
        magnitude = parameter_magnitude if key.endswith("distance") else loss_magnitude
        metrics[key] = spread([f[key] for f in finished], digits, magnitude) if finished \
            else DIVERGED
    reached = [f["examples_to_target"] for f in finished
               if f["examples_to_target"] is not None]
    metrics["reached_fraction"] = len(reached) / len(seeds)
    metrics["examples_to_target"] = spread(reached, 6, np.mean(reached)) if reached \
        else (DIVERGED if not finished else NOT_REACHED)
    return metrics, seeds


PAIRS = (("gd", "sgd"), ("gd", "minibatch"), ("sgd", "minibatch"))


def compare_pair(first: str, second: str, seeds: dict[str, list[dict]], digits: int) -> dict:
    """Paired comparison of two variants' final losses, seed by seed (same starts).

    `difference` is the spread of (first - second) over the seeds; `lower` names the variant
    whose mean final loss is lower when its 95 % interval excludes zero, and says
    "no clear difference" otherwise.
    """
    pairs = [(a["final_loss"], b["final_loss"]) for a, b in zip(seeds[first], seeds[second])
             if not (a["diverged"] or b["diverged"])]
    if len(pairs) < 2:
        return {"n": len(pairs), "lower": "too few runs that did not diverge"}
    losses = np.array(pairs)
    difference = spread(losses[:, 0] - losses[:, 1], digits, losses.mean(), signed=True)
    lower = first if difference["ci95_high"] < 0 else second if difference["ci95_low"] > 0 \
        else "no clear difference"
    return {"difference": difference, "lower": lower}


def per_seed_table(seeds: list[dict], digits: int) -> dict[str, list]:
    """Each seed's headline figures, as lists (the per-seed detail file)."""
    def value(figures, key):
        if figures["diverged"]:
            return DIVERGED
        found = figures[key]
        if found is None:
            return NOT_REACHED
        return found if isinstance(found, int) else significant(
            found, digits, figures["final_loss"])

    return {key: [value(figures, key) for figures in seeds]
            for key in ("final_loss", "excess_loss", "examples_to_target")}


def _written_by_train(variant: str, read, path: str):
    try:
        return read(ROOT / path, f"train@{variant}")
    except FileNotFoundError as missing:
        raise UserError(f"{missing.filename} not found; run `dvc repro train@{variant}` "
                        "first") from None


def load_runs(variant: str) -> tuple[Trained, Any]:
    """What train@<variant> wrote: its results and each seed's loss curves."""
    path = paths.train_results(variant)
    record = _written_by_train(variant, read_json, path)
    try:
        trained = Trained.from_json(record)
    except (KeyError, TypeError, AttributeError):  # valid JSON of another shape
        raise damaged(ROOT / path, f"train@{variant}") from None
    return trained, _written_by_train(variant, read_arrays, paths.curves(variant))


def load_trained(variant: str) -> tuple[Trained, Any, dict]:
    """load_runs, and the timings of train@<variant>."""
    results, curves = load_runs(variant)
    timings = _written_by_train(variant, read_json, paths.timing(variant))
    return results, curves, timings["recipes"]


def recipe_curves(curves, recipe: str) -> dict[str, np.ndarray]:
    return {key: curves[f"{recipe}/{key}"] for key in ("updates", "examples", "losses")}


def check_current(config, variant: str, results: Trained, curves) -> None:
    """Refuse runs written under other params than params.yaml's (a stage run by hand
    after an edit, or two dvc runs at once): judged, they would be reported as this
    config's."""
    written = paths.train_results(variant)
    for name in config.recipes:
        if name not in results.recipes:
            raise UserError(f"{written} has no result for recipe '{name}'; run "
                            f"`dvc repro train@{variant}`")
    setup = results.setup
    for name in config.recipes:
        result, steps = results.recipes[name], config.steps(variant, name)
        now = {"seed": config.seed, "seeds": config.seeds, "dtype": config.dtype,
               f"variants.{variant}.{name}.lr": steps.lr,
               f"variants.{variant}.{name}.epochs": steps.epochs,
               "batch_size": batch_size(config, variant, result.examples)}
        then = {"seed": setup.seed, "seeds": len(result.runs), "dtype": setup.dtype,
                f"variants.{variant}.{name}.lr": result.lr,
                f"variants.{variant}.{name}.epochs": result.epochs,
                "batch_size": result.batch_size}
        changed = [key for key in now if now[key] != then[key]]
        if not changed and result.params != config.fingerprint(variant, name):
            changed = [f"recipes.{name} or train"]
        if changed or len(curves.get(f"{name}/losses", ())) != len(result.runs):
            key = changed[0] if changed else "seeds"
            was = f" ({then[key]} there, {now[key]} in params.yaml)" if key in now else ""
            raise UserError(f"{written} was trained under other params: {key} changed"
                            f"{was}; run `dvc repro` to retrain what changed")


@dataclass
class Judgement:
    """Everything stage `evaluate` writes, keyed by recipe then variant."""
    headline: dict     # mean final loss (or "diverged")
    metrics: dict      # every figure's spread, the closed form, the paired comparisons
    per_seed: dict     # each seed's final loss, excess loss, examples to target
    speeds: dict       # the timings of each training call
    bands: dict        # recipe -> DataFrame of every variant's mean curve and band


def judge_all(config, optima: dict[str, dict], problems: dict) -> Judgement:
    """Every recipe's variants, judged over their seeds against the recipe's closed form,
    and set beside what theory predicts (problems: each recipe's theory.Quadratic)."""
    import pandas as pd

    from descent import theory

    digits = DIGITS[config.dtype]
    trained = {variant: load_trained(variant) for variant in VARIANTS}
    for variant, (results, curves, _) in trained.items():
        check_current(config, variant, results, curves)
    out = Judgement({}, {}, {}, {}, {})
    for name, recipe in config.recipes.items():
        optimum = optima[name]
        truth = read_json((ROOT / recipe.data).with_suffix(".json"), "synthesize") \
            if config.synthetic_source(recipe) else None
        metrics = out.metrics[name] = {
            "closed_form": as_metrics(optimum, DIGITS["float64"]),
            "theory": theory.figures(problems[name], recipe.gradient_loss.scale)}
        out.headline[name], out.per_seed[name], out.speeds[name] = {}, {}, {}
        seeds, frames = {}, []
        for variant, (results, curves, timings) in trained.items():
            result, curve = results.recipes[name], recipe_curves(curves, name)
            metrics[variant], seeds[variant] = judge(result, curve, optimum, truth,
                                                     config.target_excess, digits,
                                                     config.dtype)
            metrics[variant]["theory"] = theory.stability(
                problems[name], result.batch_size, result.lr, recipe.gradient_loss.scale)
            final = metrics[variant]["final_loss"]
            out.headline[name][variant] = final if final == DIVERGED else final["mean"]
            out.per_seed[name][variant] = {"seed": [run.seed for run in result.runs],
                                           **per_seed_table(seeds[variant], digits)}
            out.speeds[name][variant] = timing = timings[name]
            per_update = timing["seconds"] / timing["runs"] / max(1, result.updates)
            diverged_at = [run.diverged_at_update for run in result.runs]
            predicted = expected_curve(config, recipe, variant, problems[name], curve) \
                if recipe.with_replacement else None
            frames.append(band(curve, result.examples, per_update, diverged_at, predicted)
                          .assign(variant=variant))
        metrics["comparisons"] = {f"{a}_vs_{b}": compare_pair(a, b, seeds, digits)
                                  for a, b in PAIRS}
        out.bands[name] = pd.concat(frames).assign(closed_form=optimum["loss"])
    return out


def expected_curve(config, recipe, variant: str, problem, curve: dict) -> np.ndarray:
    """The exact expected loss at each logging point of a variant whose batches are drawn
    with replacement, over its seeds' starts (descent.theory.expected_losses)."""
    from descent import theory
    from descent.engines.problem import epoch_sizes
    from descent.plans import plan_of, starts

    plan = plan_of(config, recipe, variant, problem.n)
    sizes = np.tile(epoch_sizes(plan), plan.epochs)
    with np.errstate(over="ignore", invalid="ignore"):  # a mean-square divergence: inf
        return theory.expected_losses(
            problem, starts(recipe, problem.hessian.shape[0] - 1, config.seed_list),
            2 * plan.gradient_scale * plan.lr, sizes, curve["updates"][1:], plan.loss_scale)


MAX_PLOT_POINTS = 200  # per curve: enough for a smooth line, small HTML (`dvc plots diff`)


def band(curves: dict, n_examples: int, seconds_per_update: float,
         diverged_at: list[int | None], predicted: np.ndarray | None = None):
    """The mean loss over runs at each logging point, with the 10th-90th percentile band and
    the number of runs diverged by then, thinned to at most MAX_PLOT_POINTS evenly spread
    points (first and last kept). `diverged_at` is each run's divergence update (None: it
    did not diverge).

    A point is left out once every run has diverged before it. When every run diverged, one
    more row marks where the last of them did (its update, the examples seen by then) with
    the last logged mean and band, and every run counted as diverged: without it a variant
    that diverges inside its first logging interval would have no marked row at all.
    """
    import pandas as pd

    losses = curves["losses"]
    going = (~np.isnan(losses)).sum(axis=0)
    keep = np.flatnonzero(going > 0)
    if len(keep) > MAX_PLOT_POINTS:
        spread_out = np.linspace(0, len(keep) - 1, MAX_PLOT_POINTS).round().astype(int)
        keep = keep[np.unique(spread_out)]
    with np.errstate(all="ignore"):
        low, high = np.nanpercentile(losses[:, keep], [10, 90], axis=0)
        mean = np.nanmean(losses[:, keep], axis=0)
    updates, examples = curves["updates"][keep], curves["examples"][keep]
    diverged = len(losses) - going[keep]
    if diverged_at and all(update is not None for update in diverged_at):
        last = max(diverged_at)
        # Examples at an update between logging points: batches are even within an interval.
        seen = round(float(np.interp(last, curves["updates"], curves["examples"])))
        updates, examples = np.r_[updates, last], np.r_[examples, seen]
        mean, low, high = (np.r_[column, column[-1]] for column in (mean, low, high))
        diverged = np.r_[diverged, len(losses)]
        if predicted is not None:
            predicted = np.r_[predicted[keep], np.nan]
    elif predicted is not None:
        predicted = predicted[keep]
    frame = pd.DataFrame({
        "epoch": examples / n_examples, "examples": examples, "updates": updates,
        "seconds": updates * seconds_per_update,
        "loss": mean, "low": low, "high": high, "diverged": diverged})
    if predicted is not None:
        frame["predicted"] = np.where(np.isfinite(predicted), predicted, np.nan)
    return frame
