"""Stage `synthesize`: generate the synthetic regression sets described in params.yaml.

Each set `name` under `synthetic:` becomes data/synthetic/<name>.npy (float64: features x1..xd, then
the target y) and data/synthetic/<name>.json (its true weights and bias). Each set has its
own seeded generator, so the same params give byte-identical files and adding a set
leaves the others unchanged.
"""
from __future__ import annotations

from descent import config as configuration
from descent import paths
from descent.io import ROOT, cli


def main() -> None:
    config = configuration.load()
    from descent.data import synthesize

    synthesize(config.synthetic, ROOT / paths.SYNTHETIC)
    print(f"synthesized {len(config.synthetic)} sets in {paths.SYNTHETIC}: "
          f"{', '.join(config.synthetic)}")


if __name__ == "__main__":
    cli(main)()
