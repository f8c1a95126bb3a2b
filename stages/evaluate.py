"""Stage `evaluate`: judge every descent run against the closed-form least-squares solution.

For each recipe, scikit-learn's LinearRegression (with intercept) is fitted on exactly the
rows the variants trained on, and its loss is computed in the recipe's loss convention.
Writes:
- metrics/evaluate.json  <recipe>.<variant>.<metric> and <recipe>.closed_form.* (deterministic)
- metrics/speed.json     <recipe>.<variant>.seconds_per_epoch / seconds_to_target (timings)
- plots/loss/<recipe>.csv, plots/seconds/<recipe>.csv  the three variants' curves, overlaid
"""
from __future__ import annotations

from descent import config as configuration
from descent.io import ROOT, UserError, cli, read_json, write_csv, write_json


def main() -> None:
    config = configuration.load()
    import pandas as pd

    from descent.data import check_datasets
    from descent.judge import as_metrics, closed_form, judge, load_all_trained

    datasets = check_datasets(config)
    trained = load_all_trained()
    metrics, speeds = {}, {}
    for name, recipe in config.recipes.items():
        optimum = closed_form(*datasets[name], recipe.loss.scale)
        truth = read_json((ROOT / recipe.data).with_suffix(".json")) \
            if config.synthetic_source(recipe) else None
        metrics[name], speeds[name] = {"closed_form": as_metrics(optimum)}, {}
        loss_curves, second_curves = [], []
        for variant, (results, curves, timings, timing_curves) in trained.items():
            if name not in results:
                raise UserError(f"train@{variant} has no result for recipe '{name}'; "
                                f"run `dvc repro train@{variant}`")
            curve = curves[curves["recipe"] == name]
            timing_curve = timing_curves[timing_curves["recipe"] == name]
            metrics[name][variant], speeds[name][variant] = judge(
                results[name], curve, {**timings[name], "curve": timing_curve}, optimum,
                truth, config.target_excess)
            loss_curves.append(curve.drop(columns="recipe"))
            second_curves.append(curve[["variant", "updates", "loss"]].merge(
                timing_curve[["updates", "seconds"]], on="updates"))
        for folder, frames in (("loss", loss_curves), ("seconds", second_curves)):
            frame = pd.concat(frames).assign(closed_form=optimum["loss"])
            write_csv(ROOT / f"plots/{folder}/{name}.csv", frame, float_format="%.10g")
    write_json(ROOT / "metrics/evaluate.json", metrics)
    write_json(ROOT / "metrics/speed.json", speeds)
    print("wrote metrics/evaluate.json, metrics/speed.json, plots/loss/, plots/seconds/")


if __name__ == "__main__":
    cli(main)()
