"""Stage `evaluate`: judge every descent run against the closed-form least-squares solution.

For each recipe, scikit-learn's LinearRegression (with intercept) is fitted on exactly the
rows the variants trained on, and its loss is computed in the recipe's loss convention.
Writes:
- metrics/evaluate.json  <recipe>.<variant>.<metric> and <recipe>.closed_form.* (deterministic)
- metrics/speed.json     <recipe>.<variant>.seconds_per_epoch / seconds_to_target (timings)
- plots/loss/<recipe>.csv, plots/seconds/<recipe>.csv  the three variants' curves, overlaid
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from stages.common import (LOSS_SCALES, ROOT, VARIANTS, UserError, cli, load_params,
                           positive_float, read_json, require, write_csv, write_json)

NOT_REACHED = "not reached"
DIVERGED = "diverged"


def closed_form(features: np.ndarray, targets: np.ndarray, loss_scale: float) -> dict:
    from sklearn.linear_model import LinearRegression

    model = LinearRegression(fit_intercept=True).fit(features, targets)
    residuals = features @ model.coef_ + model.intercept_ - targets
    return {"loss": float(loss_scale * np.mean(residuals ** 2)),
            "weights": model.coef_.tolist(), "bias": float(model.intercept_)}


def as_metrics(optimum: dict) -> dict:
    """Weights as w1, w2, ... keys: DVC's metric tables show numbers, not lists."""
    weights = {f"w{i + 1}": value for i, value in enumerate(optimum["weights"])}
    return {"loss": optimum["loss"], "bias": optimum["bias"], **weights}


def first_reaching(curve, threshold: float):
    """The first logged row whose loss is at or below threshold, or None."""
    reached = curve[curve["loss"] <= threshold]
    return None if reached.empty else reached.iloc[0]


def judge(run: dict, curve, timing, optimum: dict, truth: dict | None,
          target_excess: float) -> tuple[dict, dict]:
    """Metrics of one (recipe, variant) run: (deterministic, timings)."""
    deterministic: dict[str, Any] = {
        "batch_size": run["batch_size"], "lr": run["lr"], "epochs": run["epochs"],
        "updates": run["updates"], "diverged": run["diverged"]}
    speed: dict[str, Any] = {}
    if "seconds_per_epoch" in timing:
        speed["seconds_per_epoch"] = timing["seconds_per_epoch"]
    if run["diverged"]:
        deterministic["diverged_at_update"] = run["diverged_at_update"]
        for key in ("final_loss", "excess_loss", "relative_excess", "weights_distance",
                    "bias_distance", "examples_to_target"):
            deterministic[key] = DIVERGED
        speed["seconds_to_target"] = DIVERGED
        return deterministic, speed

    weights, bias = np.array(run["weights"]), run["bias"]
    excess = run["loss"] - optimum["loss"]
    deterministic.update({
        "final_loss": run["loss"], "excess_loss": excess,
        "relative_excess": excess / optimum["loss"] if optimum["loss"] > 0 else excess,
        "weights_distance": float(np.linalg.norm(weights - np.array(optimum["weights"]))),
        "bias_distance": abs(bias - optimum["bias"])})
    if truth is not None:
        deterministic["true_weights_distance"] = float(
            np.linalg.norm(weights - np.array(truth["weights"])))
        deterministic["true_bias_distance"] = abs(bias - truth["bias"])
    target = first_reaching(curve, optimum["loss"] * (1 + target_excess))
    if target is None:
        deterministic["examples_to_target"] = NOT_REACHED
        speed["seconds_to_target"] = NOT_REACHED
    else:
        deterministic["examples_to_target"] = int(target["examples"])
        deterministic["updates_to_target"] = int(target["updates"])
        seconds = timing["curve"].set_index("updates")["seconds"]
        speed["seconds_to_target"] = float(seconds[int(target["updates"])])
    return deterministic, speed


def load_runs(variant: str) -> tuple[dict, Any, dict, Any]:
    import pandas as pd

    try:
        results = read_json(ROOT / f"metrics/train/{variant}.json")["recipes"]
        curves = pd.read_csv(ROOT / f"plots/train/{variant}.csv")
        timings = read_json(ROOT / f"metrics/timing/{variant}.json")["recipes"]
        timing_curves = pd.read_csv(ROOT / f"plots/timing/{variant}.csv")
    except FileNotFoundError as missing:
        raise UserError(f"{missing.filename} not found; run `dvc repro train@{variant}` "
                        "first") from None
    return results, curves, timings, timing_curves


def evaluate(params: dict[str, Any]) -> None:
    import pandas as pd

    from stages.train import load_dataset

    recipes = require(params, "recipes")
    target_excess = positive_float(require(params, "evaluate.target_excess"),
                                   "evaluate.target_excess")
    runs = {variant: load_runs(variant) for variant in VARIANTS}
    metrics, speeds = {}, {}
    for name, recipe in recipes.items():
        data = ROOT / str(recipe["data"])
        loss = recipe.get("loss")
        if loss not in LOSS_SCALES:
            raise UserError(f"recipes.{name}.loss must be one of {', '.join(LOSS_SCALES)}")
        features, targets = load_dataset(data)
        optimum = closed_form(features, targets, LOSS_SCALES[loss])
        truth_file = data.with_suffix(".json")
        truth = read_json(truth_file) if data.parent.name == "synthetic" and \
            truth_file.exists() else None
        metrics[name] = {"closed_form": as_metrics(optimum)}
        speeds[name] = {}
        loss_curves, second_curves = [], []
        for variant, (results, curves, timings, timing_curves) in runs.items():
            if name not in results:
                raise UserError(f"train@{variant} has no result for recipe '{name}'; "
                                f"run `dvc repro train@{variant}`")
            curve = curves[curves["recipe"] == name]
            timing_curve = timing_curves[timing_curves["recipe"] == name]
            timing = {**timings[name], "curve": timing_curve}
            metrics[name][variant], speeds[name][variant] = judge(
                results[name], curve, timing, optimum, truth, target_excess)
            loss_curves.append(curve.drop(columns="recipe"))
            second_curves.append(curve[["variant", "updates", "loss"]].merge(
                timing_curve[["updates", "seconds"]], on="updates"))
        for folder, frames in (("loss", loss_curves), ("seconds", second_curves)):
            frame = pd.concat(frames).assign(closed_form=optimum["loss"])
            write_csv(ROOT / f"plots/{folder}/{name}.csv", frame, float_format="%.10g")
    write_json(ROOT / "metrics/evaluate.json", metrics)
    write_json(ROOT / "metrics/speed.json", speeds)


def main() -> None:
    evaluate(load_params())
    print("wrote metrics/evaluate.json, metrics/speed.json, plots/loss/, plots/seconds/")


if __name__ == "__main__":
    cli(main)()
