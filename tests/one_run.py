"""One run with any engine, every logged state kept: what the engine tests compare.

The library's engines return what the stages need (losses, the final parameters); these
tests hold every backend's parameters at every logging point against the plain PyTorch
loop, so they ask each backend for its logged states here.
"""
from __future__ import annotations

import dataclasses
import time

import numpy as np
import torch

from descent.engines.compiled import descend
from descent.engines.problem import Plan, Schedule, choose_engine
from descent.engines.torch_backends import Trajectory
from descent.engines.torch_backends import train as torch_train


def train(features: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor,
          bias: torch.Tensor, plan: Plan, schedule: Schedule, engine: str = "affine",
          progress=None) -> Trajectory:
    """engine `auto` is the compiled kernel on the CPU and the affine scan on a GPU."""
    engine = choose_engine(engine, features.device.type)
    if engine != "compiled":
        return torch_train(features, targets, weights, bias, plan, schedule, engine, progress)
    theta = torch.cat([weights, bias.reshape(1)])
    one = dataclasses.replace(schedule, order=schedule.order[None])
    started = time.perf_counter()
    logged, losses, diverged_at = descend(
        features.numpy(), targets.numpy(), theta[None].numpy(), one.order,
        min(plan.batch_size, plan.n_examples), plan.drop_last,
        2 * plan.gradient_scale * plan.lr, schedule.log_after, plan.blowup, plan.loss_scale)
    elapsed = time.perf_counter() - started
    if progress:
        progress(len(schedule.batch_sizes))
    points = int((~np.isnan(losses[0])).sum())  # up to the last sound point
    log_updates = schedule.log_updates[:points]
    # One call times the whole run; seconds at logging points are shared out by update count.
    seconds = elapsed * log_updates / max(1, schedule.log_after[-1])
    kept = torch.from_numpy(logged[0, :points])
    at = int(diverged_at[0])
    return Trajectory(log_updates, kept[:, :-1], kept[:, -1], losses[0, :points],
                      seconds, at if at > 0 else None)
