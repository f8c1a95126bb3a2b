"""Stage `compare`: this pipeline's figures beside the published ones (data/published.yaml).

Writes metrics/reference.md (a Markdown table) and metrics/reference.json. A published
figure whose recipe (batch size, lr, epochs) differs from this run's is listed with the
command that reruns it, never with a figure from other settings.

    python -m stages.compare --readme   also copies the table into README.md
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from stages.common import (LOSS_SCALES, ROOT, VARIANTS, UserError, cli, load_params,
                           read_json, write_json, write_text)

PUBLISHED = ROOT / "data/published.yaml"
README = ROOT / "README.md"
TABLE_START, TABLE_END = "<!-- reference-table:start -->", "<!-- reference-table:end -->"


def our_figure(row: dict, params: dict, runs: dict, evaluation: dict, curves: dict):
    """This run's value for a published row, or a string saying why there is none."""
    recipe, variant, quantity = row["recipe"], row["variant"], row["quantity"]
    if quantity == "closed_form_loss":
        return evaluation[recipe]["closed_form"]["loss"]
    run = runs[variant]["recipes"][recipe]
    if any(run[key] != value for key, value in row.get("needs", {}).items()):
        settings = ", ".join(f"{key} {value}" for key, value in row["needs"].items())
        return f"not in this run ({settings} needed)"
    if run["diverged"]:
        return f"diverged at update {run['diverged_at_update']}"
    if quantity == "final_loss":  # in the published figure's loss convention
        recorded = params["recipes"][recipe]["loss"]
        return run["loss"] * LOSS_SCALES[row.get("convention", recorded)] / LOSS_SCALES[recorded]
    if quantity == "weight":
        return run["weights"][0]
    if quantity == "bias":
        return run["bias"]
    if quantity.startswith("loss_after_epoch_"):
        epoch = int(quantity.rsplit("_", 1)[1])
        curve = curves[variant]
        at = curve[(curve["recipe"] == recipe) & (curve["epoch"] == epoch)]
        return float(at["loss"].iloc[0]) if len(at) else "epoch not run"
    if quantity == "max_parameter_error":
        truth = read_json(ROOT / Path(params["recipes"][recipe]["data"]).with_suffix(".json"))
        errors = [abs(a - b) for a, b in zip(run["weights"] + [run["bias"]],
                                             truth["weights"] + [truth["bias"]])]
        return max(errors)
    raise UserError(f"data/published.yaml: unknown quantity '{quantity}'")


def number(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def build(params: dict) -> tuple[list[dict], str]:
    import pandas as pd

    published = yaml.safe_load(PUBLISHED.read_text())
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
            ours = our_figure(row, params, runs, evaluation, curves)
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


def main(*flags: str) -> None:
    rows, table = build(load_params())
    write_json(ROOT / "metrics/reference.json", rows)
    write_text(ROOT / "metrics/reference.md", table)
    print(table)
    if "--readme" in flags:
        update_readme(table)


if __name__ == "__main__":
    cli(main)()
