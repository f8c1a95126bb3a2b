"""Stage `solve`: the closed-form least-squares solution of every recipe's data.

scikit-learn's LinearRegression (with intercept) is fitted on exactly the rows the variants
train on, and its loss computed in the recipe's loss convention. It depends on the data and
the recipes only, so `dvc exp run -S batch_size=...` never reruns it (nor pays for
scikit-learn's import). Writes data/closed_form.json (at the precision the
solution has on any CPU: see descent/least_squares.py), and data/statistics.npz: each
recipe's float64 sufficient statistics in every training dtype, computed once here for
every train stage and seed.
"""
from __future__ import annotations

from descent import config as configuration
from descent import paths
from descent.io import ROOT, cli, write_arrays, write_json


def main() -> None:
    config = configuration.load()
    from descent.least_squares import closed_forms
    from descent.statistics import as_arrays

    solutions, statistics = closed_forms(config)
    write_json(ROOT / paths.CLOSED_FORM, solutions)
    write_arrays(ROOT / paths.STATISTICS, as_arrays(statistics))
    print(f"solved {len(config.recipes)} recipes in closed form: {paths.CLOSED_FORM}, "
          f"{paths.STATISTICS}")


if __name__ == "__main__":
    cli(main)()
