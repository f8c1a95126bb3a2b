"""Stage `sweep`: the batch-size axis. For each recipe in `sweep.recipes` and each batch size,
a grid of learning rates x seeds in one engine call; the steps and examples to the target
loss; the best learning rate per batch size; B_crit fitted, beside B_noise predicted
(descent/sweep.py). Writes:
- metrics/sweep.json        per recipe: B_crit (95 % interval), S_min, E_min, B_noise and
                            B_simple predicted, the critical lr at batch 1 and N (the headline)
- plots/sweep/<recipe>.csv  every grid point: batch, lr (and over its critical lr), mean
                            steps and examples to target, reached and diverged fractions
- plots/sweep_best/<recipe>.csv  each batch size's steps at its best lr, and the fitted curve
- plots/sweep.png           all of it as one figure, for the README (descent/sweep_figure.py)
"""
from __future__ import annotations

from descent import config as configuration
from descent import paths
from descent.io import ROOT, cli, write_csv, write_json


def main() -> None:
    config = configuration.load()
    import pandas as pd

    from descent.data import load_recipe_data
    from descent.sweep import sweep_recipe
    from descent.sweep_figure import draw

    headline, drawn = {}, {}
    for name in config.sweep.recipes:
        recipe = config.recipes[name]
        features, targets = load_recipe_data(config, recipe)
        headline[name], rows, best = sweep_recipe(config.sweep, recipe, features, targets,
                                                  config.dtype, config.train.cluster)
        write_csv(ROOT / paths.sweep_plot(name), pd.DataFrame(rows), float_format="%.7g")
        write_csv(ROOT / paths.sweep_best(name), pd.DataFrame(best), float_format="%.7g")
        drawn[name] = headline[name], rows, best
        print(f"swept {name}: B_crit {headline[name].get('b_crit')} (95 % "
              f"{headline[name]['b_crit_ci95_low']}-{headline[name]['b_crit_ci95_high']}), "
              f"B_noise predicted {headline[name]['b_noise_predicted']}")
    draw(drawn, ROOT / paths.SWEEP_FIGURE)
    write_json(ROOT / paths.SWEEP_HEADLINE, headline)


if __name__ == "__main__":
    cli(main)()
