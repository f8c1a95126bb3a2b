"""What a (recipe, variant)'s runs start from, read from the config: their plan, and each
seed's random streams and starting point. Shared by train (which runs them) and evaluate
(which predicts their expected loss)."""
from __future__ import annotations

import zlib

import numpy as np

from descent.config import Config, Init, Recipe, batch_size
from descent.engines.problem import Plan


def run_seed(seed: int, recipe: str, variant: str) -> int:
    """A stable per-run seed, so each (recipe, variant) has its own random stream."""
    return zlib.crc32(f"{seed}/{recipe}/{variant}".encode())


def initial_parameters(init: Init, n_features: int, generator: np.random.Generator
                       ) -> np.ndarray:
    """(p+1,) float64 weights then bias, drawn from the run's generator in that order."""
    weights = init.weights.draw(n_features, n_features, generator)
    return np.r_[weights, init.bias.draw(None, n_features, generator)].astype(np.float64)


def plan_of(config: Config, recipe: Recipe, variant: str, n_examples: int) -> Plan:
    steps = config.steps(variant, recipe.name)
    return Plan(n_examples=n_examples, batch_size=batch_size(config, variant, n_examples),
                epochs=steps.epochs, lr=steps.lr, gradient_scale=recipe.gradient_loss.scale,
                shuffle=recipe.shuffle, drop_last=recipe.drop_last,
                with_replacement=recipe.with_replacement,
                log_every=config.train.log_every, loss_scale=recipe.loss.scale,
                blowup=config.train.blowup)


def generator(seed: int, recipe: str, stream: str) -> np.random.Generator:
    return np.random.default_rng(run_seed(seed, recipe, stream))


def starts(recipe: Recipe, n_features: int, seeds: list[int]) -> np.ndarray:
    """(R, p+1) float64 starting weights and bias, one row per seed.

    A seed's start depends on the recipe only, not on the variant, so the variants' runs
    with one seed begin at the same point and can be compared pair by pair.
    """
    return np.stack([initial_parameters(recipe.init, n_features,
                                        generator(seed, recipe.name, "init"))
                     for seed in seeds])
