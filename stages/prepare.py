"""Stage `prepare`: parse and validate the raw airfoil file, standardize it, keep n_train rows.

Every column (the target too) is standardized over *all* rows to zero mean and unit
population standard deviation (ddof=0), as the d2l chapter does; then the first
`prepare.n_train` rows are kept. The per-column mean and std are saved beside the table
so results can be mapped back to physical units.
"""
from __future__ import annotations

from descent import config as configuration
from descent.io import ROOT, UserError, cli, write_csv, write_json


def main() -> None:
    config = configuration.load()
    import pandas as pd

    from descent.data import COLUMNS, EXACT, read_airfoil, standardize

    raw = ROOT / config.fetch.output
    table = read_airfoil(raw)
    if config.n_train > len(table):
        raise UserError(f"params.yaml: prepare.n_train is {config.n_train} but {raw.name} "
                        f"has only {len(table)} rows; lower it in params.yaml")
    scaled, mean, std = standardize(table)
    write_csv(ROOT / configuration.AIRFOIL_CSV,
              pd.DataFrame(scaled[:config.n_train], columns=COLUMNS), float_format=EXACT)
    write_json(ROOT / "data/prepared/airfoil_scaling.json", {
        "rows_standardized": len(table), "rows_kept": config.n_train, "target": COLUMNS[-1],
        "mean": dict(zip(COLUMNS, mean.tolist())), "std": dict(zip(COLUMNS, std.tolist()))})
    print(f"prepared {configuration.AIRFOIL_CSV}: {config.n_train} rows x {len(COLUMNS)} "
          "columns")


if __name__ == "__main__":
    cli(main)()
