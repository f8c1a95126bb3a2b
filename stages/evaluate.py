"""Stage `evaluate`: judge every descent run against the closed-form least-squares solution.

The closed form of each recipe (scikit-learn's, on exactly the rows the variants trained
on, its loss in the recipe's convention) comes from stage `solve`. Each variant's seeds
give a spread (mean, sd, 95 % interval), and the variants are compared pair by pair over
the same seeds. Writes:
- metrics/final_loss.json  <recipe>.<variant>: mean final loss over the seeds (the headline)
- metrics/evaluate.json    every figure's spread, the closed form, the paired comparisons
- metrics/seeds.json       each seed's final loss, excess loss and examples to target
- metrics/speed.json       wall-clock seconds (vary from run to run)
- plots/loss/<recipe>.csv, plots/seconds/<recipe>.csv  mean curves with their bands
"""
from __future__ import annotations

from descent import config as configuration
from descent.io import ROOT, UserError, cli, read_json, write_csv, write_json


def main() -> None:
    config = configuration.load()
    import pandas as pd

    from descent.judge import (DIVERGED, PAIRS, as_metrics, band, compare_pair, judge,
                               load_all_trained, load_closed_form, per_seed_table,
                               recipe_curves)
    from descent.numbers import DIGITS

    digits = DIGITS[config.dtype]
    optima = load_closed_form(config.recipes)
    trained = load_all_trained()
    headline, metrics, per_seed, speeds = {}, {}, {}, {}
    for name, recipe in config.recipes.items():
        optimum = optima[name]
        truth = read_json((ROOT / recipe.data).with_suffix(".json")) \
            if config.synthetic_source(recipe) else None
        metrics[name] = {"closed_form": as_metrics(optimum, DIGITS["float64"])}
        headline[name], per_seed[name], speeds[name], seeds, frames = {}, {}, {}, {}, []
        for variant, (results, curves, timings) in trained.items():
            if name not in results["recipes"]:
                raise UserError(f"train@{variant} has no result for recipe '{name}'; "
                                f"run `dvc repro train@{variant}`")
            result, curve = results["recipes"][name], recipe_curves(curves, name)
            metrics[name][variant], seeds[variant] = judge(
                result, curve, optimum, truth, config.target_excess, digits)
            final = metrics[name][variant]["final_loss"]
            headline[name][variant] = final if final == DIVERGED else final["mean"]
            per_seed[name][variant] = {"seed": [run["seed"] for run in result["runs"]],
                                       **per_seed_table(seeds[variant], digits)}
            speeds[name][variant] = timing = timings[name]
            per_update = timing["seconds"] / timing["runs"] / max(1, result["updates"])
            frames.append(band(curve, result["examples"], per_update).assign(variant=variant))
        metrics[name]["comparisons"] = {f"{a}_vs_{b}": compare_pair(a, b, seeds, digits)
                                        for a, b in PAIRS}
        frame = pd.concat(frames).assign(closed_form=optimum["loss"])
        columns = ["variant", "loss", "low", "high", "diverged", "closed_form"]
        write_csv(ROOT / f"plots/loss/{name}.csv",
                  frame[["epoch", "examples", "updates", *columns]], float_format="%.7g")
        write_csv(ROOT / f"plots/seconds/{name}.csv", frame[["seconds", *columns]],
                  float_format="%.7g")
    write_json(ROOT / "metrics/final_loss.json", headline)
    write_json(ROOT / "metrics/evaluate.json", metrics)
    write_json(ROOT / "metrics/seeds.json", per_seed)
    write_json(ROOT / "metrics/speed.json", speeds)
    print(f"judged {config.seeds} seeds x {len(trained)} variants x {len(config.recipes)} "
          "recipes: metrics/final_loss.json (headline), evaluate.json, seeds.json, speed.json")


if __name__ == "__main__":
    cli(main)()
