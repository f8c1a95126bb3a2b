"""This pipeline's figures beside the published ones (data/published.yaml).

A published figure is compared only with a run of the same experiment: the same data
(the airfoil file by checksum and rows kept, a synthetic set by its generating spec), the
same recipe (loss, gradient loss, initialisation, shuffling) and the same settings (batch
size, lr, epochs). Otherwise the row says why there is no figure, never a wrong one.
"""
from __future__ import annotations

import re
from typing import Any

from descent.config import AIRFOIL_CSV, LOSSES, Config, Recipe, read_yaml
from descent.io import ROOT, UserError, read_json, write_text

PUBLISHED = ROOT / "data/published.yaml"
README = ROOT / "README.md"
TABLE_START, TABLE_END = "<!-- reference-table:start -->", "<!-- reference-table:end -->"


def identity(config: Config, recipe: Recipe) -> dict[str, Any]:
    """What makes a recipe's figures comparable with a published experiment's."""
    if recipe.data == AIRFOIL_CSV:
        data: Any = {"airfoil_sha256": config.fetch.sha256, "n_train": config.n_train}
    elif (spec := config.synthetic_source(recipe)) is not None:
        # The generator's seed is left out: another draw of the same set is comparable.
        data = {"n_rows": spec.n_rows, "features": [spec.features.kind, spec.features.a,
                                                    spec.features.b],
                "weights": list(spec.weights), "bias": spec.bias, "noise_std": spec.noise_std}
    else:
        data = {"file": recipe.data}
    init = recipe.init
    return {"data": data, "loss": recipe.loss.name, "gradient_loss": recipe.gradient_loss.name,
            "init_weights": list(init.weights) if isinstance(init.weights, tuple)
            else {"normal_std": init.weights} if isinstance(init.weights, float)
            else init.weights, "init_bias": init.bias, "shuffle": recipe.shuffle,
            "drop_last": recipe.drop_last}


def differences(expected: dict[str, Any], actual: dict[str, Any]) -> list[str]:
    return [key for key, value in expected.items() if actual.get(key) != value]


def our_figure(row: dict, same_as: dict, config: Config, runs: dict, evaluation: dict,
               curves: dict):
    """This run's value for a published row, or a string saying why there is none."""
    recipe_name, variant, quantity = row["recipe"], row["variant"], row["quantity"]
    recipe = config.recipes.get(recipe_name)
    if recipe is None:
        return f"not comparable (no recipe {recipe_name} in params.yaml)"
    unlike = differences(same_as, identity(config, recipe))
    if unlike:
        return f"not comparable ({', '.join(unlike)} differ from the published experiment)"
    if quantity == "closed_form_loss":
        return evaluation[recipe_name]["closed_form"]["loss"]
    result = runs[variant]["recipes"][recipe_name]
    if differences(row.get("needs", {}), result):
        settings = ", ".join(f"{key} {value}" for key, value in row["needs"].items())
        return f"not in this run ({settings} needed)"
    if result["diverged"]:
        return f"diverged at update {result['diverged_at_update']}"
    if quantity == "final_loss":  # in the published figure's loss convention
        convention = LOSSES[row.get("convention", recipe.loss.name)]
        return result["loss"] * convention.scale / recipe.loss.scale
    if quantity == "weight":
        return result["weights"][0]
    if quantity == "bias":
        return result["bias"]
    if quantity.startswith("loss_after_epoch_"):
        epoch = int(quantity.rsplit("_", 1)[1])
        curve = curves[variant]
        at = curve[(curve["recipe"] == recipe_name) & (curve["epoch"] == epoch)]
        return float(at["loss"].iloc[0]) if len(at) else "epoch not run"
    if quantity == "max_parameter_error":
        truth = read_json((ROOT / recipe.data).with_suffix(".json"))
        errors = [abs(a - b) for a, b in zip(result["weights"] + [result["bias"]],
                                             truth["weights"] + [truth["bias"]])]
        return max(errors)
    raise UserError(f"data/published.yaml: unknown quantity '{quantity}'")


def number(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def build(config: Config) -> tuple[list[dict], str]:
    import pandas as pd

    from descent.config import VARIANTS

    published = read_yaml(PUBLISHED)
    try:
        runs = {v: read_json(ROOT / f"metrics/train/{v}.json") for v in VARIANTS}
        curves = {v: pd.read_csv(ROOT / f"plots/train/{v}.csv") for v in VARIANTS}
        evaluation = read_json(ROOT / "metrics/evaluate.json")
    except FileNotFoundError as missing:
        raise UserError(f"{missing.filename} not found; run `dvc repro` first") from None
    rows, lines = [], ["| experiment | recipe · variant | quantity | published | this pipeline |",
                       "|---|---|---|---|---|"]
    for experiment in published:
        for row in experiment["rows"]:
            ours = our_figure(row, experiment["same_as"], config, runs, evaluation, curves)
            needs = row.get("needs", {})
            label = f"{row['recipe']} · {row['variant']}" + (
                f" (batch {needs['batch_size']})" if "batch_size" in needs else "")
            quantity = row["quantity"].replace("_", " ") + (
                " (plain MSE)" if row.get("convention") == "mse" else "")
            rows.append({**row, "experiment": experiment["experiment"], "ours": ours})
            lines.append(f"| {experiment['experiment']} | {label} | {quantity} | "
                         f"{number(row['published'])} | {number(ours)} |")
    return rows, "\n".join(lines) + "\n"


def update_readme(table: str) -> None:
    text = README.read_text()
    pattern = re.compile(re.escape(TABLE_START) + ".*?" + re.escape(TABLE_END), re.S)
    if not pattern.search(text):
        raise UserError(f"README.md has no {TABLE_START} ... {TABLE_END} section")
    write_text(README, pattern.sub(lambda _: f"{TABLE_START}\n{table}{TABLE_END}", text))
