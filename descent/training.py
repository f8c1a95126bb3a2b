"""One (recipe, variant) run: its plan, seeded start, descent, and the tables it records."""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np
import torch

from descent.config import Config, Init, Recipe, batch_size
from descent.engine import (Plan, Trajectory, make_schedule, memory_needed, total_updates,
                            train)
from descent.limits import check_memory, check_work


def run_seed(seed: int, recipe: str, variant: str) -> int:
    """A stable per-run seed, so each (recipe, variant) has its own random stream."""
    return zlib.crc32(f"{seed}/{recipe}/{variant}".encode())


def initial_parameters(init: Init, n_features: int, generator: torch.Generator
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """(weights, bias) on the CPU in float64, drawn from the run's generator."""
    bound = 1 / math.sqrt(n_features)  # nn.Linear's default: U(-1/sqrt(fan_in), +...)
    if init.weights == "torch_default":
        weights = (torch.rand(n_features, generator=generator, dtype=torch.float64) * 2 - 1) \
            * bound
    elif isinstance(init.weights, float):
        weights = torch.randn(n_features, generator=generator, dtype=torch.float64) \
            * init.weights
    else:
        weights = torch.tensor(init.weights, dtype=torch.float64)
    if init.bias == "torch_default":
        bias = (torch.rand((), generator=generator, dtype=torch.float64) * 2 - 1) * bound
    else:
        bias = torch.tensor(float(init.bias), dtype=torch.float64)
    return weights, bias


def plan_of(config: Config, recipe: Recipe, variant: str, n_examples: int) -> Plan:
    steps = config.steps(variant, recipe.name)
    return Plan(n_examples=n_examples, batch_size=batch_size(config, variant, n_examples),
                epochs=steps.epochs, lr=steps.lr, gradient_scale=recipe.gradient_loss.scale,
                shuffle=recipe.shuffle, drop_last=recipe.drop_last,
                log_every=config.train.log_every, recorded_scale=recipe.loss.scale,
                blowup=config.train.blowup)


def check_fits(config: Config, recipe: Recipe, variant: str, n_examples: int,
               n_features: int) -> None:
    """Refuse, before any work, a run whose memory or number of updates cannot fit."""
    plan = plan_of(config, recipe, variant, n_examples)
    where = f"{variant} on recipe {recipe.name}"
    fix = f"lower variants.{variant}.{recipe.name}.epochs"
    check_work(where, total_updates(plan), fix)
    itemsize = 4 if config.dtype == "float32" else 8
    check_memory(where, memory_needed(n_examples, n_features, plan, itemsize),
                 f"{fix}, or raise train.log_every")


@dataclass
class Run:
    """A finished run: its plan, the trajectory at logging points, and examples seen there."""
    plan: Plan
    trajectory: Trajectory
    examples: np.ndarray     # (points,) examples seen at each logging point

    @property
    def diverged(self) -> bool:
        return self.trajectory.diverged_at_update is not None


def descend(config: Config, recipe: Recipe, variant: str, features: np.ndarray,
            targets: np.ndarray, device: torch.device, seed: int, progress=None) -> Run:
    """Train one (recipe, variant) from its seeded start on (features, targets)."""
    dtype = getattr(torch, config.dtype)
    plan = plan_of(config, recipe, variant, len(targets))
    generator = torch.Generator().manual_seed(run_seed(seed, recipe.name, variant))
    weights, bias = initial_parameters(recipe.init, features.shape[1], generator)
    schedule = make_schedule(plan, generator)
    trajectory = train(torch.as_tensor(features, dtype=dtype, device=device),
                       torch.as_tensor(targets, dtype=dtype, device=device),
                       weights.to(device, dtype), bias.to(device, dtype), plan, schedule,
                       engine=config.train.engine, progress=progress)
    examples = np.r_[0, np.cumsum(schedule.batch_sizes)][trajectory.log_updates]
    return Run(plan, trajectory, examples)


def summary(run: Run) -> dict:
    """The deterministic result of a run, as recorded in metrics/train/<variant>.json."""
    trajectory, plan = run.trajectory, run.plan
    result = {
        "batch_size": plan.batch_size, "lr": plan.lr, "epochs": plan.epochs,
        "examples": plan.n_examples, "updates": int(trajectory.log_updates[-1]),
        "diverged": run.diverged,
        "weights": [float(v) for v in trajectory.weights[-1].cpu().double().numpy()],
        "bias": float(trajectory.biases[-1]), "initial_loss": float(trajectory.losses[0])}
    if run.diverged:
        # The run stopped at its last sound logging point; that loss is no final result.
        result["diverged_at_update"] = int(trajectory.diverged_at_update)
        result["last_logged_loss"] = float(trajectory.losses[-1])
    else:
        result["loss"] = float(trajectory.losses[-1])
    return result


def curves(run: Run, recipe: str, variant: str):
    """(loss curve, timing curve) of a run as DataFrames, one row per logging point."""
    import pandas as pd

    trajectory = run.trajectory
    loss = pd.DataFrame({"recipe": recipe, "variant": variant,
                         "epoch": run.examples / run.plan.n_examples,
                         "updates": trajectory.log_updates, "examples": run.examples,
                         "loss": trajectory.losses})
    timing = pd.DataFrame({"recipe": recipe, "variant": variant,
                           "updates": trajectory.log_updates, "seconds": trajectory.seconds})
    return loss, timing


def timing(run: Run) -> dict:
    """Wall-clock figures of a run (vary from run to run; kept apart from results)."""
    seconds = float(run.trajectory.seconds[-1])
    epochs_run = run.examples[-1] / run.plan.n_examples
    # A run that diverged in its first logging interval has no rate.
    return {"seconds": seconds, **({"seconds_per_epoch": seconds / epochs_run}
                                   if epochs_run > 0 else {})}
