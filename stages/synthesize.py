"""Stage `synthesize`: generate the synthetic regression sets described in params.yaml.

Each set `name` under `synthetic:` becomes data/synthetic/<name>.csv (features x1..xd, then
the target y) and data/synthetic/<name>.json (its true weights and bias). Each set has its
own seeded generator, so the same params give byte-identical files and adding a set
leaves the others unchanged.
"""
from __future__ import annotations

from descent import config as configuration
from descent.io import ROOT, cli, write_csv, write_json


def main() -> None:
    config = configuration.load()
    import pandas as pd

    from descent.data import EXACT, check_fits, generate, truth

    for spec in config.synthetic.values():
        check_fits(spec)
    folder = ROOT / configuration.SYNTHETIC_DIR
    for name, spec in config.synthetic.items():
        features, target = generate(spec)
        columns = [f"x{i + 1}" for i in range(features.shape[1])]
        write_csv(folder / f"{name}.csv", pd.DataFrame(features, columns=columns)
                  .assign(y=target), float_format=EXACT)
        write_json(folder / f"{name}.json", truth(spec))
    print(f"synthesized {len(config.synthetic)} sets in {configuration.SYNTHETIC_DIR}: "
          f"{', '.join(config.synthetic)}")


if __name__ == "__main__":
    cli(main)()
