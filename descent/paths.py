"""Every file the stages read or write, named once, relative to the project root.

dvc.yaml names the same paths (DVC must know them to track them); tests/test_paths.py
checks that its stages' outputs are exactly `STAGE_OUTPUTS` and that the paths its commands
pass are these. Change a path here and in dvc.yaml together; the test says if one is left.
"""
from __future__ import annotations

PARAMS = "params.yaml"
CHECKED = "data/params.checked"                # stage check: params.yaml is valid
RAW_AIRFOIL = "data/raw/airfoil_self_noise.dat"  # passed to fetch and prepare by dvc.yaml
PREPARED = "data/prepared"
AIRFOIL_DATA = "data/prepared/airfoil.npy"    # float64 rows: features, then the target
AIRFOIL_SCALING = "data/prepared/airfoil_scaling.json"
SYNTHETIC = "data/synthetic"                   # <set>.npy and <set>.json (the truth)
CUSTOM = "data/custom"                         # your own data (.csv or .npy)
CLOSED_FORM = "data/closed_form.json"
STATISTICS = "data/statistics.npz"             # each recipe's, per training dtype (solve)
PUBLISHED = "data/published.yaml"              # the published figures (in git)
HEADLINE = "metrics/final_loss.json"
EVALUATION = "metrics/evaluate.json"
PER_SEED = "metrics/seeds.json"
SPEED = "metrics/speed.json"
LOSS_PLOTS = "plots/loss"                      # <recipe>.csv
SECONDS_PLOTS = "plots/seconds"                # <recipe>.csv
FIGURE = "plots/comparison.png"
REFERENCE_JSON = "metrics/reference.json"
REFERENCE_TABLE = "metrics/reference.md"
SWEEP_HEADLINE = "metrics/sweep.json"
SWEEP_PLOTS = "plots/sweep"                    # <recipe>.csv: every grid point
SWEEP_BEST = "plots/sweep_best"                # <recipe>.csv: the best lr's, and the fit
SWEEP_FIGURE = "plots/sweep.png"


def train_results(variant: str) -> str:
    return f"metrics/train/{variant}.json"


def curves(variant: str) -> str:
    return f"data/runs/{variant}.npz"


def timing(variant: str) -> str:
    return f"metrics/timing/{variant}.json"


def loss_plot(recipe: str) -> str:
    return f"{LOSS_PLOTS}/{recipe}.csv"


def seconds_plot(recipe: str) -> str:
    return f"{SECONDS_PLOTS}/{recipe}.csv"


def sweep_plot(recipe: str) -> str:
    return f"{SWEEP_PLOTS}/{recipe}.csv"


def sweep_best(recipe: str) -> str:
    return f"{SWEEP_BEST}/{recipe}.csv"


def stage_outputs(variants: tuple[str, ...]) -> dict[str, list[str]]:
    """What each stage writes (a folder stands for the files in it), as dvc.yaml declares."""
    return {"check": [CHECKED], "fetch": [RAW_AIRFOIL], "prepare": [PREPARED],
            "synthesize": [SYNTHETIC], "solve": [CLOSED_FORM, STATISTICS],
            **{f"train@{variant}": [train_results(variant), curves(variant), timing(variant)]
               for variant in variants},
            "evaluate": [HEADLINE, EVALUATION, PER_SEED, SPEED, LOSS_PLOTS, SECONDS_PLOTS],
            "report": [FIGURE, REFERENCE_JSON, REFERENCE_TABLE],
            "sweep": [SWEEP_HEADLINE, SWEEP_PLOTS, SWEEP_BEST, SWEEP_FIGURE]}
