"""One run with any engine, every logged state kept: what the engine tests compare."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from descent.engines.dispatch import train_runs
from descent.engines.problem import Plan, Schedule


@dataclass
class Trajectory:
    """The run at its sound logging points: row 0 is the start, row j follows update
    log_updates[j]; diverged_at_update is None for a run that never diverged."""
    log_updates: np.ndarray   # (points,) 0 first
    weights: torch.Tensor     # (points, p)
    biases: torch.Tensor      # (points,)
    losses: np.ndarray        # (points,) float64, whole-set loss in the recorded convention
    diverged_at_update: int | None = None


def train(features: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor,
          bias: torch.Tensor, plan: Plan, schedule: Schedule, engine: str = "affine",
          progress=None) -> Trajectory:
    """One run of `plan` from (weights, bias) with `engine` on the features' device
    (`auto`: the compiled kernel on the CPU, the affine scan on a GPU)."""
    theta = torch.cat([weights, bias.reshape(1)]).cpu().numpy()
    one = dataclasses.replace(schedule, order=schedule.order[None])
    runs = train_runs(features.cpu().numpy(), targets.cpu().numpy(), theta[None], plan, one,
                      engine=engine, device=str(features.device), progress=progress)
    points = int((~np.isnan(runs.losses[0])).sum())  # up to the last sound point
    kept = torch.from_numpy(runs.states[0, :points])
    at = int(runs.diverged_at[0])
    return Trajectory(runs.log_updates[:points], kept[:, :-1], kept[:, -1],
                      runs.losses[0, :points], at if at > 0 else None)
