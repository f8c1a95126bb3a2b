"""Stage `train@<variant>`: train the linear model on every recipe with one descent variant.

    python -m stages.train gd|sgd|minibatch

Writes, for the variant:
- metrics/train/<variant>.json  final parameters and loss per recipe (deterministic)
- plots/train/<variant>.csv     whole-set loss at each logging point (deterministic)
- metrics/timing/<variant>.json seconds per epoch per recipe (varies run to run)
- plots/timing/<variant>.csv    wall-clock seconds at each logging point
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stages.common import (LOSS_SCALES, ROOT, VARIANTS, UserError, cli, load_params,
                           positive_float, positive_int, require, write_csv, write_json)

DTYPES = ("float32", "float64")
FLOAT_FORMAT = "%.10g"


@dataclass
class Recipe:
    name: str
    data: Path
    loss_scale: float           # of the recorded loss
    gradient_scale: float       # of the loss whose gradient drives the update
    init: dict[str, Any]
    shuffle: bool
    drop_last: bool
    lr: float
    epochs: int


def load_dataset(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A prepared CSV: feature columns, then the target as the last column."""
    import pandas as pd

    try:
        table = pd.read_csv(path)
    except FileNotFoundError:
        raise UserError(f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path} "
                        "not found; run `dvc repro` to build the data first") from None
    values = table.to_numpy(dtype=np.float64)
    if values.shape[1] < 2 or len(values) < 1 or not np.isfinite(values).all():
        raise UserError(f"{path} must hold finite feature columns and a target column")
    return values[:, :-1], values[:, -1]


def read_recipes(params: dict[str, Any], variant: str) -> list[Recipe]:
    recipes = require(params, "recipes")
    settings = require(params, f"variants.{variant}")
    if not isinstance(recipes, dict) or not recipes:
        raise UserError("params.yaml 'recipes' must map recipe names to their settings")
    result = []
    for name, recipe in recipes.items():
        where = f"recipes.{name}"
        if not isinstance(recipe, dict):
            raise UserError(f"{where} must be a mapping (data, loss, init, shuffle)")
        run = settings.get(name) if isinstance(settings, dict) else None
        if not isinstance(run, dict):
            raise UserError(f"variants.{variant}.{name} is missing: give it "
                            "{lr: ..., epochs: ...} in params.yaml")
        loss = recipe.get("loss")
        gradient_loss = recipe.get("gradient_loss", loss)
        for key, value in (("loss", loss), ("gradient_loss", gradient_loss)):
            if value not in LOSS_SCALES:
                raise UserError(f"{where}.{key} must be one of {', '.join(LOSS_SCALES)}, "
                                f"got {value!r}")
        for key in ("shuffle", "drop_last"):
            if not isinstance(recipe.get(key, False), bool):
                raise UserError(f"{where}.{key} must be true or false")
        result.append(Recipe(
            name=name, data=ROOT / str(require(params, f"{where}.data")),
            loss_scale=LOSS_SCALES[loss], gradient_scale=LOSS_SCALES[gradient_loss],
            init=recipe.get("init") or {}, shuffle=recipe.get("shuffle", True),
            drop_last=recipe.get("drop_last", False),
            lr=positive_float(run.get("lr"), f"variants.{variant}.{name}.lr"),
            epochs=positive_int(run.get("epochs"), f"variants.{variant}.{name}.epochs")))
    return result


def batch_size_of(variant: str, params: dict[str, Any], n_examples: int) -> int:
    """gd: every example; sgd: one; minibatch: `batch_size` (at most every example)."""
    if variant == "gd":
        return n_examples
    if variant == "sgd":
        return 1
    return min(positive_int(require(params, "batch_size"), "batch_size"), n_examples)


def run_seed(seed: int, recipe: str, variant: str) -> int:
    """A stable per-run seed, so each (recipe, variant) has its own random stream."""
    return zlib.crc32(f"{seed}/{recipe}/{variant}".encode())


def initial_parameters(init: dict[str, Any], n_features: int, generator, where: str):
    """(weights, bias) on the CPU in float64, drawn from the run's generator."""
    import torch

    bound = 1 / math.sqrt(n_features)  # nn.Linear's default: U(-1/sqrt(fan_in), +...)
    weights_spec = init.get("weights", {"normal_std": 0.01})
    if weights_spec == "torch_default":
        weights = (torch.rand(n_features, generator=generator, dtype=torch.float64) * 2 - 1) \
            * bound
    elif isinstance(weights_spec, dict) and "normal_std" in weights_spec:
        std = positive_float(weights_spec["normal_std"], f"{where}.init.weights.normal_std")
        weights = torch.randn(n_features, generator=generator, dtype=torch.float64) * std
    elif isinstance(weights_spec, list) and len(weights_spec) == n_features and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in weights_spec):
        weights = torch.tensor(weights_spec, dtype=torch.float64)
    else:
        raise UserError(f"{where}.init.weights must be torch_default, {{normal_std: s}} or a "
                        f"list of {n_features} numbers (one per feature), got {weights_spec!r}")
    bias_spec = init.get("bias", 0.0)
    if bias_spec == "torch_default":
        bias = (torch.rand((), generator=generator, dtype=torch.float64) * 2 - 1) * bound
    elif isinstance(bias_spec, (int, float)) and not isinstance(bias_spec, bool):
        bias = torch.tensor(float(bias_spec), dtype=torch.float64)
    else:
        raise UserError(f"{where}.init.bias must be a number or torch_default, "
                        f"got {bias_spec!r}")
    return weights, bias


def train_recipe(recipe: Recipe, variant: str, params: dict[str, Any], device, dtype,
                 engine: str, log_every: int, blowup: float) -> tuple[dict, Any, Any]:
    """Train one (recipe, variant); return its summary, loss curve and timing curve."""
    import pandas as pd
    import torch
    from tqdm import tqdm

    from stages.engine import Plan, make_schedule, train

    features_np, targets_np = load_dataset(recipe.data)
    n = len(targets_np)
    batch_size = batch_size_of(variant, params, n)
    plan = Plan(n_examples=n, batch_size=batch_size, epochs=recipe.epochs, lr=recipe.lr,
                loss_scale=recipe.gradient_scale, shuffle=recipe.shuffle,
                drop_last=recipe.drop_last, log_every=log_every,
                report_scale=recipe.loss_scale, blowup=blowup)
    generator = torch.Generator().manual_seed(run_seed(params["seed"], recipe.name, variant))
    weights, bias = initial_parameters(recipe.init, features_np.shape[1], generator,
                                       f"recipes.{recipe.name}")
    schedule = make_schedule(plan, generator)
    if len(schedule.batch_sizes) == 0:
        raise UserError(f"recipes.{recipe.name}: drop_last leaves no batch of {batch_size} "
                        f"in {n} examples; lower batch_size or set drop_last: false")
    features = torch.as_tensor(features_np, dtype=dtype, device=device)
    targets = torch.as_tensor(targets_np, dtype=dtype, device=device)
    with tqdm(total=len(schedule.batch_sizes), desc=f"{variant} {recipe.name}", unit="upd",
              delay=1.0, leave=False) as bar:
        trajectory = train(features, targets, weights.to(device, dtype), bias.to(device, dtype),
                           plan, schedule, engine=engine, progress=bar.update)
    losses, updates = trajectory.losses, trajectory.log_updates
    diverged_at = trajectory.diverged_at_update
    examples = np.r_[0, np.cumsum(schedule.batch_sizes)][updates]
    curve = pd.DataFrame({"recipe": recipe.name, "variant": variant, "epoch": examples / n,
                          "updates": updates, "examples": examples, "loss": losses})
    timing = pd.DataFrame({"recipe": recipe.name, "variant": variant, "updates": updates,
                           "seconds": trajectory.seconds})
    final_w = trajectory.weights[-1].cpu().double().numpy()
    final_b = float(trajectory.biases[-1])
    summary = {
        "batch_size": batch_size, "lr": recipe.lr, "epochs": recipe.epochs, "examples": n,
        "updates": int(updates[-1]), "diverged": diverged_at is not None,
        "weights": [float(v) for v in final_w], "bias": final_b,
        "loss": float(losses[-1]), "initial_loss": float(losses[0]),
    }
    if diverged_at is not None:
        summary["diverged_at_update"] = int(diverged_at)
        # The run stopped at its last sound logging point; that loss is no final result.
        summary["last_logged_loss"] = summary.pop("loss")
    epochs_run = examples[-1] / n
    summary_timing = {"seconds": float(trajectory.seconds[-1])}
    if epochs_run > 0:  # a run that diverged in its first logging interval has no rate
        summary_timing["seconds_per_epoch"] = summary_timing["seconds"] / epochs_run
    return {**summary, "timing": summary_timing}, curve, timing


def main(variant: str = "") -> None:
    import pandas as pd
    import torch

    from stages.engine import ENGINES, resolve_device

    if variant not in VARIANTS:
        raise UserError(f"usage: python -m stages.train {{{'|'.join(VARIANTS)}}}")
    params = load_params()
    device = resolve_device(require(params, "device"))
    dtype_name = require(params, "dtype")
    if dtype_name not in DTYPES:
        raise UserError(f"dtype must be float32 or float64, got {dtype_name!r}")
    if device.type == "mps" and dtype_name == "float64":
        raise UserError("MPS devices have no float64; set dtype: float32 or device: cpu")
    engine = require(params, "train.engine")
    if engine not in ENGINES:
        raise UserError(f"train.engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    log_every = positive_int(require(params, "train.log_every"), "train.log_every")
    blowup = positive_float(require(params, "train.divergence_factor"),
                            "train.divergence_factor")
    if isinstance(params.get("seed"), bool) or not isinstance(params.get("seed"), int):
        raise UserError(f"seed must be an integer, got {params.get('seed')!r}")
    recipes = read_recipes(params, variant)

    results, timings, curves, timing_curves = {}, {}, [], []
    for recipe in recipes:
        summary, curve, timing = train_recipe(recipe, variant, params, device,
                                              getattr(torch, dtype_name), engine, log_every,
                                              blowup)
        timings[recipe.name] = summary.pop("timing")
        results[recipe.name] = summary
        curves.append(curve)
        timing_curves.append(timing)
        state = (f"diverged at update {summary['diverged_at_update']}" if summary["diverged"]
                 else f"loss {summary['loss']:.6f}")
        print(f"{variant:9s} {recipe.name:22s} batch {summary['batch_size']:5d}  {state}")

    run = {"device": str(device), "dtype": dtype_name, "engine": engine}
    write_json(ROOT / f"metrics/train/{variant}.json", {"run": run, "recipes": results})
    write_csv(ROOT / f"plots/train/{variant}.csv", pd.concat(curves), float_format=FLOAT_FORMAT)
    write_json(ROOT / f"metrics/timing/{variant}.json", {"run": run, "recipes": timings})
    write_csv(ROOT / f"plots/timing/{variant}.csv", pd.concat(timing_curves),
              float_format="%.6g")


if __name__ == "__main__":
    cli(main)()
