"""This pipeline's figures beside the published ones (data/published.yaml).

A published figure is compared only with a run of the same experiment: the same data
(the airfoil file by checksum and rows kept, a synthetic set by its generating spec), the
same recipe (loss, gradient loss, initialisation, shuffling) and the same settings (batch
size, lr, epochs). Otherwise the row says why there is no figure, never a wrong one.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from descent import paths
from descent.config import LOSSES, VARIANTS, Config, Recipe, read_yaml
from descent.io import ROOT, UserError, read_json, write_text
from descent.judge import check_current, load_runs
from descent.numbers import DIGITS, significant
from descent.records import VariantRuns

PUBLISHED = ROOT / paths.PUBLISHED
README = ROOT / "README.md"
TABLE_START, TABLE_END = "<!-- reference-table:start -->", "<!-- reference-table:end -->"


def identity(config: Config, recipe: Recipe) -> dict[str, Any]:
    """What makes a recipe's figures comparable with a published experiment's."""
    if recipe.data == paths.AIRFOIL_DATA:
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
            "init_weights": init.weights.as_param(), "init_bias": init.bias.as_param(),
            "shuffle": recipe.shuffle,
            "drop_last": recipe.drop_last}


def differences(expected: dict[str, Any], actual: dict[str, Any]) -> list[str]:
    return [key for key, value in expected.items() if actual.get(key) != value]


# This pipeline's figure for a published row: one of three kinds, each able to say how it
# is written to metrics/reference.json and shown in the table.
@dataclass(frozen=True)
class OverSeeds:
    """Our distribution over the seeds that did not diverge, and the published value's
    z-score (None when it has none: a non-numeric published value, or sd 0)."""
    mean: float
    sd: float
    n: int
    diverged: int
    z: float | None
    compared = True

    def to_json(self) -> dict[str, Any]:
        record = {"mean": self.mean, "sd": self.sd, "n": self.n, "diverged": self.diverged}
        return record if self.z is None else {**record, "z": self.z}

    def cells(self) -> tuple[str, str]:
        text = f"{self.mean:.6g} ± {self.sd:.2g} (n {self.n}" + (
            f", {self.diverged} diverged)" if self.diverged else ")")
        return text, "" if self.z is None else f"{self.z:+.1f}"


@dataclass(frozen=True)
class Single:
    """One value, the same for every seed (the closed form's loss)."""
    value: float
    compared = True
    z = None

    def to_json(self) -> float:
        return self.value

    def cells(self) -> tuple[str, str]:
        return number(self.value), ""


@dataclass(frozen=True)
class NoFigure:
    """Why this run has no figure to set beside the published one."""
    why: str
    compared = False
    z = None

    def to_json(self) -> str:
        return self.why

    def cells(self) -> tuple[str, str]:
        return self.why, ""


class _Missing(Exception):
    """seed_values has no value for the row; its message says why."""


def seed_values(row: dict, recipe: Recipe, result: VariantRuns, curves) -> list[float]:
    """This run's value of a published row for each seed that did not diverge; _Missing
    (saying why) when there is none."""
    quantity = row["quantity"]
    runs = [run for run in result.runs if not run.diverged]
    if not runs:
        first = min(run.diverged_at_update for run in result.runs)
        raise _Missing(f"diverged (every seed; the first at update {first})")
    if quantity == "final_loss":  # in the published figure's loss convention
        convention = LOSSES[row.get("convention", recipe.loss.name)]
        return [run.loss * convention.scale / recipe.loss.scale for run in runs]
    if quantity == "weight":
        return [run.weights[0] for run in runs]
    if quantity == "bias":
        return [run.bias for run in runs]
    if quantity.startswith("loss_after_epoch_"):
        epoch = int(quantity.rsplit("_", 1)[1])
        at = np.flatnonzero(curves[f"{recipe.name}/examples"] == epoch * result.examples)
        if not len(at):
            raise _Missing("epoch not run")
        losses = curves[f"{recipe.name}/losses"][:, at[0]]
        return [float(value) for value in losses[~np.isnan(losses)]]
    if quantity == "max_parameter_error":
        truth = read_json((ROOT / recipe.data).with_suffix(".json"), "synthesize")
        return [max(abs(a - b) for a, b in zip((*run.weights, run.bias),
                                               (*truth["weights"], truth["bias"])))
                for run in runs]
    raise UserError(f"data/published.yaml: unknown quantity '{quantity}'")


def our_figure(row: dict, same_as: dict, config: Config, runs: dict, evaluation: dict,
               curves: dict) -> OverSeeds | Single | NoFigure:
    """Our distribution of a published row's quantity over the seeds (mean, sd, n and the
    published value's z-score), a single value (closed form), or why there is none."""
    recipe_name, variant, quantity = row["recipe"], row["variant"], row["quantity"]
    recipe = config.recipes.get(recipe_name)
    if recipe is None:
        return NoFigure(f"not comparable (no recipe {recipe_name} in params.yaml)")
    unlike = differences(same_as, identity(config, recipe))
    if unlike:
        return NoFigure(f"not comparable ({', '.join(unlike)} differ from the published "
                        "experiment)")
    if quantity == "closed_form_loss":
        return Single(evaluation[recipe_name]["closed_form"]["loss"])
    result = runs[variant].recipes[recipe_name]
    if differences(row.get("needs", {}), result.to_json()):
        settings = ", ".join(f"{key} {value}" for key, value in row["needs"].items())
        return NoFigure(f"not in this run ({settings} needed)")
    try:
        values = np.array(seed_values(row, recipe, result, curves[variant]))
    except _Missing as missing:
        return NoFigure(str(missing))
    mean, digits = float(values.mean()), DIGITS[config.dtype]
    sd = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    published = row["published"]
    z = round((published - mean) / sd, 2) \
        if isinstance(published, (int, float)) and sd > 0 else None  # for reading
    return OverSeeds(mean=significant(mean, digits), sd=significant(sd, digits, mean),
                     n=len(values), diverged=len(result.runs) - len(values), z=z)


def number(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def build(config: Config, evaluation: dict) -> tuple[list[dict], str, list]:
    """The published figures beside this run's (evaluation: metrics/evaluate.json): the
    rows of metrics/reference.json, the table, and our figure for each row."""
    published = read_yaml(PUBLISHED)
    runs, curves = {}, {}
    for variant in VARIANTS:
        runs[variant], curves[variant] = load_runs(variant)
        check_current(config, variant, runs[variant], curves[variant])
    rows, figures, lines = [], [], ["| experiment | recipe · variant | quantity | published | this pipeline: "
                       "mean ± sd over seeds | z of published |", "|---|---|---|---|---|---|"]
    for experiment in published:
        for row in experiment["rows"]:
            ours = our_figure(row, experiment["same_as"], config, runs, evaluation, curves)
            needs = row.get("needs", {})
            label = f"{row['recipe']} · {row['variant']}" + (
                f" (batch {needs['batch_size']})" if "batch_size" in needs else "")
            quantity = row["quantity"].replace("_", " ") + (
                " (plain MSE)" if row.get("convention") == "mse" else "")
            rows.append({**row, "experiment": experiment["experiment"], "ours": ours.to_json()})
            figures.append(ours)
            figure, z = ours.cells()
            lines.append(f"| {experiment['experiment']} | {label} | {quantity} | "
                         f"{number(row['published'])} | {figure} | {z} |")
    notes = [f"- {experiment['experiment']}: {experiment['note']}"
             for experiment in published if experiment.get("note")]
    return rows, "\n".join(lines + ([""] + notes if notes else [])) + "\n", figures


def update_readme(table: str) -> None:
    text = README.read_text()
    pattern = re.compile(re.escape(TABLE_START) + ".*?" + re.escape(TABLE_END), re.S)
    if not pattern.search(text):
        raise UserError(f"README.md has no {TABLE_START} ... {TABLE_END} section")
    write_text(README, pattern.sub(lambda _: f"{TABLE_START}\n{table}{TABLE_END}", text))
