"""The judge: scikit-learn's closed-form least squares, and each run's metrics against it."""
from __future__ import annotations

from typing import Any

import numpy as np

from descent.config import VARIANTS
from descent.io import ROOT, UserError, read_json

NOT_REACHED = "not reached"
DIVERGED = "diverged"


def closed_form(features: np.ndarray, targets: np.ndarray, loss_scale: float) -> dict:
    """Least squares with an intercept; its loss in the convention scale * mean(r^2)."""
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


def judge(result: dict, curve, timing: dict, optimum: dict, truth: dict | None,
          target_excess: float) -> tuple[dict, dict]:
    """Metrics of one (recipe, variant) result: (deterministic, timings)."""
    deterministic: dict[str, Any] = {
        "batch_size": result["batch_size"], "lr": result["lr"], "epochs": result["epochs"],
        "updates": result["updates"], "diverged": result["diverged"]}
    speed: dict[str, Any] = {}
    if "seconds_per_epoch" in timing:
        speed["seconds_per_epoch"] = timing["seconds_per_epoch"]
    if result["diverged"]:
        deterministic["diverged_at_update"] = result["diverged_at_update"]
        for key in ("final_loss", "excess_loss", "relative_excess", "weights_distance",
                    "bias_distance", "examples_to_target"):
            deterministic[key] = DIVERGED
        speed["seconds_to_target"] = DIVERGED
        return deterministic, speed

    weights, bias = np.array(result["weights"]), result["bias"]
    excess = result["loss"] - optimum["loss"]
    deterministic.update({
        "final_loss": result["loss"], "excess_loss": excess,
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


def load_trained(variant: str) -> tuple[dict, Any, dict, Any]:
    """What train@<variant> wrote: results, loss curves, timings, timing curves."""
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


def load_all_trained() -> dict[str, tuple[dict, Any, dict, Any]]:
    return {variant: load_trained(variant) for variant in VARIANTS}
