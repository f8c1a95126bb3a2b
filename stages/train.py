"""Stage `train@<variant>`: train the linear model on every recipe with one descent variant.

    python -m stages.train gd|sgd|minibatch

Writes, for the variant:
- metrics/train/<variant>.json  final parameters and loss per recipe (deterministic)
- plots/train/<variant>.csv     whole-set loss at each logging point (deterministic)
- metrics/timing/<variant>.json seconds per epoch per recipe (varies run to run)
- plots/timing/<variant>.csv    wall-clock seconds at each logging point
"""
from __future__ import annotations

from descent import config as configuration
from descent.io import ROOT, UserError, cli, write_csv, write_json


def main(variant: str = "") -> None:
    if variant not in configuration.VARIANTS:
        raise UserError(f"usage: python -m stages.train {{{'|'.join(configuration.VARIANTS)}}}")
    config = configuration.load()
    from descent.data import check_datasets  # after the config check: it imports pandas

    datasets = check_datasets(config)
    from descent import training  # imports torch
    from descent.engine import resolve_device

    for recipe in config.recipes.values():  # refuse what cannot fit before any work
        features, _ = datasets[recipe.name]
        training.check_fits(config, recipe, variant, *features.shape)
    device = resolve_device(config.device)
    import pandas as pd
    from tqdm import tqdm

    results, timings, loss_curves, timing_curves = {}, {}, [], []
    for recipe in config.recipes.values():
        features, targets = datasets[recipe.name]
        with tqdm(desc=f"{variant} {recipe.name}", unit="upd", delay=1.0, leave=False) as bar:
            run = training.descend(config, recipe, variant, features, targets, device,
                                   config.seed, progress=bar.update)
        results[recipe.name] = summary = training.summary(run)
        timings[recipe.name] = training.timing(run)
        loss_curve, timing_curve = training.curves(run, recipe.name, variant)
        loss_curves.append(loss_curve)
        timing_curves.append(timing_curve)
        state = (f"diverged at update {summary['diverged_at_update']}" if run.diverged
                 else f"loss {summary['loss']:.6f}")
        print(f"{variant:9s} {recipe.name:22s} batch {summary['batch_size']:5d}  {state}")

    setup = {"device": str(device), "dtype": config.dtype, "engine": config.train.engine}
    write_json(ROOT / f"metrics/train/{variant}.json", {"setup": setup, "recipes": results})
    write_csv(ROOT / f"plots/train/{variant}.csv", pd.concat(loss_curves),
              float_format="%.10g")
    write_json(ROOT / f"metrics/timing/{variant}.json", {"setup": setup, "recipes": timings})
    write_csv(ROOT / f"plots/timing/{variant}.csv", pd.concat(timing_curves),
              float_format="%.6g")


if __name__ == "__main__":
    cli(main)()
