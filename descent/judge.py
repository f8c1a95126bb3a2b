"""The judge: scikit-learn's closed-form least squares, and each run's metrics against it
over the seeds (what stage `evaluate` writes)."""
from __future__ import annotations

import math
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from descent.config import VARIANTS
from descent.io import ROOT, UserError, damaged, read_json
from descent.numbers import DIGITS, significant

NOT_REACHED = "not reached"
DIVERGED = "diverged"


CLOSED_FORM = ROOT / "data/closed_form.json"


def load_closed_form(recipes) -> dict[str, dict]:
    """What stage `solve` wrote, for every recipe."""
    try:
        optima = read_json(CLOSED_FORM, "solve")
    except FileNotFoundError:
        raise UserError("data/closed_form.json not found; run `dvc repro solve` first") \
            from None
    missing = [name for name in recipes if name not in optima]
    if missing:
        raise UserError(f"data/closed_form.json has no solution for {', '.join(missing)}; "
                        "run `dvc repro solve`")
    return optima


def as_metrics(optimum: dict, digits: int) -> dict:
    """Weights as w1, w2, ... keys: DVC's metric tables show numbers, not lists."""
    weights = {f"w{i + 1}": significant(value, digits)
               for i, value in enumerate(optimum["weights"])}
    return {"loss": significant(optimum["loss"], digits),
            "bias": significant(optimum["bias"], digits), **weights}


def spread(values, digits: int, scale: float) -> dict:
    """Mean, standard deviation and 95 % confidence interval of the mean (Student t), over
    runs; rounded to `digits` significant digits of `scale` (the figures' magnitude)."""
    from scipy.special import stdtrit  # Student t quantile; scipy.stats costs 0.4 s more

    values = np.asarray(values, dtype=float)
    n, mean = len(values), float(np.mean(values))
    result = {"mean": significant(mean, digits, scale), "n": n}
    if n >= 2:
        sd = float(np.std(values, ddof=1))
        half = float(stdtrit(n - 1, 0.975)) * sd / np.sqrt(n)
        result.update(sd=significant(sd, digits, scale),
                      ci95_low=significant(mean - half, digits, scale),
                      ci95_high=significant(mean + half, digits, scale))
    return result


def distance(a, b) -> float:
    """Euclidean distance with an exactly rounded sum (no BLAS: the same bits on any CPU)."""
    return math.sqrt(math.fsum((float(x) - float(y)) ** 2 for x, y in zip(a, b)))


def seed_figures(run: dict, losses: np.ndarray, examples: np.ndarray, optimum: dict,
                 truth: dict | None, target: float) -> dict[str, Any]:
    """One seed's figures against the optimum (unrounded); a diverged run has none."""
    if run["diverged"]:
        return {"diverged": True, "diverged_at_update": run["diverged_at_update"]}
    weights, bias = np.array(run["weights"]), run["bias"]
    figures: dict[str, Any] = {
        "diverged": False, "final_loss": run["loss"],
        "excess_loss": run["loss"] - optimum["loss"],
        "weights_distance": distance(weights, optimum["weights"]),
        "bias_distance": abs(bias - optimum["bias"])}
    if truth is not None:
        figures["true_weights_distance"] = distance(weights, truth["weights"])
        figures["true_bias_distance"] = abs(bias - truth["bias"])
    reached = np.flatnonzero(losses <= target)  # NaN (after divergence) never compares true
    figures["examples_to_target"] = int(examples[reached[0]]) if len(reached) else None
    return figures


SPREAD_FIGURES = ("final_loss", "excess_loss", "weights_distance", "bias_distance",
                  "true_weights_distance", "true_bias_distance")


def judge(result: dict, curves: dict, optimum: dict, truth: dict | None,
          target_excess: float, digits: int) -> tuple[dict, list[dict]]:
    """A (recipe, variant)'s metrics over its seeds, and each seed's figures.

    Spreads are over the runs that did not diverge; `diverged_fraction` says how many did,
    and a figure no run reached reads "diverged" or "not reached", never NaN or null.
    """
    target = optimum["loss"] * (1 + target_excess)
    seeds = [seed_figures(run, curves["losses"][r], curves["examples"], optimum, truth, target)
             for r, run in enumerate(result["runs"])]
    sound = [figures for figures in seeds if not figures["diverged"]]
    metrics: dict[str, Any] = {key: result[key] for key in ("batch_size", "lr", "epochs",
                                                            "updates")}
    metrics["runs"] = len(seeds)
    metrics["diverged_fraction"] = 1 - len(sound) / len(seeds)
    if len(sound) < len(seeds):
        metrics["earliest_divergence_update"] = min(
            figures["diverged_at_update"] for figures in seeds if figures["diverged"])
    loss_scale = np.mean([f["final_loss"] for f in sound]) if sound else 1.0
    parameter_scale = max(np.abs(np.r_[optimum["weights"], optimum["bias"]]).max(), 1e-300)
    for key in SPREAD_FIGURES:
        if truth is None and key.startswith("true_"):
            continue
        scale = parameter_scale if key.endswith("distance") else loss_scale
        metrics[key] = spread([f[key] for f in sound], digits, scale) if sound else DIVERGED
    reached = [f["examples_to_target"] for f in sound if f["examples_to_target"] is not None]
    metrics["reached_fraction"] = len(reached) / len(seeds)
    metrics["examples_to_target"] = spread(reached, 6, np.mean(reached)) if reached \
        else (DIVERGED if not sound else NOT_REACHED)
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
    difference = spread(losses[:, 0] - losses[:, 1], digits, losses.mean())
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


def _curves(path: Path, writer: str) -> dict[str, np.ndarray]:
    """Every array of a .npz curves file, read now (np.load is lazy: a damaged member would
    fail later, far from the file's name)."""
    try:
        with np.load(path) as archive:
            return {name: archive[name] for name in archive.files}
    except (zipfile.BadZipFile, zlib.error, ValueError, EOFError):
        raise damaged(path, writer) from None


def load_runs(variant: str) -> tuple[dict, Any]:
    """What train@<variant> wrote: its results and each seed's loss curves."""
    return (_written_by_train(variant, read_json, f"metrics/train/{variant}.json"),
            _written_by_train(variant, _curves, f"data/runs/{variant}.npz"))


def load_trained(variant: str) -> tuple[dict, Any, dict]:
    """load_runs, and the timings of train@<variant>."""
    results, curves = load_runs(variant)
    timings = _written_by_train(variant, read_json, f"metrics/timing/{variant}.json")
    return results, curves, timings["recipes"]


def recipe_curves(curves, recipe: str) -> dict[str, np.ndarray]:
    return {key: curves[f"{recipe}/{key}"] for key in ("updates", "examples", "losses")}


@dataclass
class Judgement:
    """Everything stage `evaluate` writes, keyed by recipe then variant."""
    headline: dict     # mean final loss (or "diverged")
    metrics: dict      # every figure's spread, the closed form, the paired comparisons
    per_seed: dict     # each seed's final loss, excess loss, examples to target
    speeds: dict       # the timings of each training call
    bands: dict        # recipe -> DataFrame of every variant's mean curve and band


def judge_all(config, optima: dict[str, dict]) -> Judgement:
    """Every recipe's variants, judged over their seeds against the recipe's closed form."""
    import pandas as pd

    digits = DIGITS[config.dtype]
    trained = {variant: load_trained(variant) for variant in VARIANTS}
    out = Judgement({}, {}, {}, {}, {})
    for name, recipe in config.recipes.items():
        optimum = optima[name]
        truth = read_json((ROOT / recipe.data).with_suffix(".json"), "synthesize") \
            if config.synthetic_source(recipe) else None
        metrics = out.metrics[name] = {"closed_form": as_metrics(optimum, DIGITS["float64"])}
        out.headline[name], out.per_seed[name], out.speeds[name] = {}, {}, {}
        seeds, frames = {}, []
        for variant, (results, curves, timings) in trained.items():
            if name not in results["recipes"]:
                raise UserError(f"train@{variant} has no result for recipe '{name}'; "
                                f"run `dvc repro train@{variant}`")
            result, curve = results["recipes"][name], recipe_curves(curves, name)
            metrics[variant], seeds[variant] = judge(result, curve, optimum, truth,
                                                     config.target_excess, digits)
            final = metrics[variant]["final_loss"]
            out.headline[name][variant] = final if final == DIVERGED else final["mean"]
            out.per_seed[name][variant] = {"seed": [run["seed"] for run in result["runs"]],
                                           **per_seed_table(seeds[variant], digits)}
            out.speeds[name][variant] = timing = timings[name]
            per_update = timing["seconds"] / timing["runs"] / max(1, result["updates"])
            diverged_at = [run.get("diverged_at_update") for run in result["runs"]]
            frames.append(band(curve, result["examples"], per_update, diverged_at)
                          .assign(variant=variant))
        metrics["comparisons"] = {f"{a}_vs_{b}": compare_pair(a, b, seeds, digits)
                                  for a, b in PAIRS}
        out.bands[name] = pd.concat(frames).assign(closed_form=optimum["loss"])
    return out


MAX_PLOT_POINTS = 200  # per curve: enough for a smooth line, small HTML (`dvc plots diff`)


def band(curves: dict, n_examples: int, seconds_per_update: float,
         diverged_at: list[int | None]):
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
    sound = (~np.isnan(losses)).sum(axis=0)
    keep = np.flatnonzero(sound > 0)
    if len(keep) > MAX_PLOT_POINTS:
        spread_out = np.linspace(0, len(keep) - 1, MAX_PLOT_POINTS).round().astype(int)
        keep = keep[np.unique(spread_out)]
    with np.errstate(all="ignore"):
        low, high = np.nanpercentile(losses[:, keep], [10, 90], axis=0)
        mean = np.nanmean(losses[:, keep], axis=0)
    updates, examples = curves["updates"][keep], curves["examples"][keep]
    diverged = len(losses) - sound[keep]
    if diverged_at and all(update is not None for update in diverged_at):
        last = max(diverged_at)
        # Examples at an update between logging points: batches are even within an interval.
        seen = round(float(np.interp(last, curves["updates"], curves["examples"])))
        updates, examples = np.r_[updates, last], np.r_[examples, seen]
        mean, low, high = (np.r_[column, column[-1]] for column in (mean, low, high))
        diverged = np.r_[diverged, len(losses)]
    return pd.DataFrame({
        "epoch": examples / n_examples, "examples": examples, "updates": updates,
        "seconds": updates * seconds_per_update,
        "loss": mean, "low": low, "high": high, "diverged": diverged})
