"""Stage `prepare`: parse and validate the raw airfoil file, standardize it, keep n_train rows.

Every column (the target too) is standardized over *all* rows to zero mean and unit
population standard deviation (ddof=0), as the d2l chapter does; then the first
`prepare.n_train` rows are kept. The per-column mean and std are saved beside the table
so results can be mapped back to physical units.

    python -m stages.prepare <raw airfoil file>     (dvc.yaml names it)
"""
from __future__ import annotations

from descent import config as configuration
from descent import paths
from descent.io import ROOT, UserError, cli


def main(raw: str = "") -> None:
    if not raw:
        raise UserError("usage: python -m stages.prepare <raw airfoil file>")
    config = configuration.load()
    from descent.data import prepare

    prepare(ROOT / raw, config.n_train, ROOT / paths.AIRFOIL_DATA, ROOT / paths.AIRFOIL_SCALING)
    print(f"prepared {paths.AIRFOIL_DATA}: {config.n_train} rows")


if __name__ == "__main__":
    cli(main)()
