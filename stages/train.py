"""Stage `train@<variant>`: train the linear model on every recipe with one descent variant,
once per seed (`seed`, `seed + 1`, ... `seeds` runs), all seeds in one call of the engine.

    python -m stages.train gd|sgd|minibatch

Writes, for the variant:
- metrics/train/<variant>.json  each seed's final parameters and loss per recipe
- data/runs/<variant>.npz       each seed's whole-set loss at every logging point (DVC-cached)
- metrics/timing/<variant>.json wall-clock seconds per recipe (varies run to run)
"""
from __future__ import annotations

from descent import config as configuration
from descent import paths
from descent.io import ROOT, UserError, cli, write_arrays, write_json


def main(variant: str = "") -> None:
    if variant not in configuration.VARIANTS:
        raise UserError(f"usage: python -m stages.train {{{'|'.join(configuration.VARIANTS)}}}")
    config = configuration.load()
    from descent.data import check_datasets  # after the config check (pandas for a CSV)

    datasets = check_datasets(config, config.dtype)  # in the training dtype: one copy
    from descent import training  # numpy and numba; torch only for a torch engine
    from descent.engines.dispatch import resolve_device
    from descent.numbers import DIGITS
    from descent.records import Setup, Trained
    from descent.statistics import recorded

    statistics = recorded(config.recipes, config.dtype)  # solve's, for every seed

    device = resolve_device(config.device)
    for recipe in config.recipes.values():  # refuse what cannot fit before any work
        training.check_fits(config, recipe, variant, *datasets[recipe.name], device)
    notice = training.slow_loop_notice(config, variant, datasets)
    if notice:
        print(notice, flush=True)
    from tqdm import tqdm

    results, timings, arrays = {}, {}, {}
    for recipe in config.recipes.values():
        features, targets = datasets[recipe.name]
        with tqdm(desc=f"{variant} {recipe.name}", unit="upd", delay=1.0, leave=False) as bar:
            seeded = training.seeded_runs(config, recipe, variant, features, targets, device,
                                          config.seed_list, progress=bar.update,
                                          statistics=statistics[recipe.name])
        results[recipe.name] = training.summary(seeded, DIGITS[config.dtype],
                                                config.fingerprint(variant, recipe.name))
        timings[recipe.name] = training.timing(seeded)
        arrays.update({f"{recipe.name}/{key}": value
                       for key, value in training.curves(seeded).items()})
        diverged = int((seeded.runs.diverged_at >= 0).sum())
        print(f"{variant:9s} {recipe.name:22s} batch {seeded.plan.batch_size:5d}  "
              f"{config.seeds} seeds" + (f", {diverged} diverged" if diverged else ""))
    clipped = [name for name, result in results.items()
               if variant == "minibatch" and result.batch_size < config.batch_size]
    if clipped:
        print(f"notice: batch_size {config.batch_size} is more than the rows of "
              f"{', '.join(clipped)}; those ran with every row per batch (recorded as their "
              "batch_size)")

    setup = Setup(device=str(device), dtype=config.dtype, engine=config.train.engine,
                  seed=config.seed, seeds=config.seeds)
    write_json(ROOT / paths.train_results(variant), Trained(setup, results).to_json())
    write_arrays(ROOT / paths.curves(variant), arrays)
    write_json(ROOT / paths.timing(variant), {"setup": setup.to_json(), "recipes": timings})


if __name__ == "__main__":
    cli(main)()
