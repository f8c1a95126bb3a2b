"""Stage `plots`: one matplotlib figure comparing the three variants on every recipe.

Writes plots/comparison.png (mean excess loss over the closed-form optimum, with its band
over the seeds, against epochs and against time, a panel per recipe).
"""
from __future__ import annotations

from descent import config as configuration
from descent.io import ROOT, UserError, cli, read_json


def main() -> None:
    config = configuration.load()
    from descent.figure import draw

    try:
        judged = read_json(ROOT / "metrics/evaluate.json")
    except FileNotFoundError:
        raise UserError("metrics/evaluate.json not found; run `dvc repro evaluate`") from None
    draw(list(config.recipes), judged, config.seeds, ROOT / "plots/comparison.png")
    print("wrote plots/comparison.png")


if __name__ == "__main__":
    cli(main)()
