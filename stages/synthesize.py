"""Stage `synthesize`: generate the synthetic regression sets described in params.yaml.

Each set `name` under `synthetic:` becomes data/synthetic/<name>.csv (features x1..xd, then
the target y) and data/synthetic/<name>.json (its true weights and bias). y = X w + b + noise,
noise ~ N(0, noise_std^2). Each set has its own seeded generator, so the same params give
byte-identical files and adding a set leaves the others unchanged.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from stages.common import (ROOT, UserError, cli, finite_float, load_params, positive_int,
                           require, write_csv, write_json)

OUTPUT_DIR = ROOT / "data/synthetic"
FEATURE_KINDS = ("grid", "uniform", "normal")
NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")  # safe as a file name and DVC key


def sample_features(spec: Any, size: int, n_features: int, rng: np.random.Generator,
                    where: str) -> np.ndarray:
    if not isinstance(spec, dict) or spec.get("kind") not in FEATURE_KINDS:
        raise UserError(f"{where}.features.kind must be one of {', '.join(FEATURE_KINDS)}")
    kind = spec["kind"]

    def number(key: str) -> float:
        return finite_float(spec.get(key), f"{where}.features.{key}")

    if kind == "grid":  # start, start + step, ... : the same evenly spaced grid per feature
        column = number("start") + number("step") * np.arange(size)
        return np.repeat(column[:, None], n_features, axis=1)
    if kind == "uniform":
        low, high = number("low"), number("high")
        if not low < high:
            raise UserError(f"{where}.features needs low < high, got {low} and {high}")
        return rng.uniform(low, high, size=(size, n_features))
    std = number("std")
    if std < 0:
        raise UserError(f"{where}.features.std must be >= 0, got {std}")
    return rng.normal(number("mean"), std, size=(size, n_features))


def generate(name: str, spec: Any) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    where = f"synthetic.{name}"
    if not NAME_PATTERN.match(name):
        raise UserError(f"{where}: set names may use letters, digits and _ only")
    if not isinstance(spec, dict):
        raise UserError(f"{where} must be a mapping (size, features, weights, bias, ...)")
    size = positive_int(spec.get("size"), f"{where}.size")
    weights = spec.get("weights")
    if not isinstance(weights, list) or not weights:
        raise UserError(f"{where}.weights must be a non-empty list of numbers")
    weights = np.array([finite_float(w, f"{where}.weights") for w in weights])
    bias = finite_float(spec.get("bias"), f"{where}.bias")
    noise_std = finite_float(spec.get("noise_std"), f"{where}.noise_std")
    if noise_std < 0:
        raise UserError(f"{where}.noise_std must be >= 0, got {noise_std}")
    seed = spec.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise UserError(f"{where}.seed must be a non-negative integer, got {seed!r}")

    rng = np.random.default_rng(seed)
    features = sample_features(spec.get("features"), size, len(weights), rng, where)
    target = features @ weights + bias + noise_std * rng.standard_normal(size)
    truth = {"weights": weights.tolist(), "bias": bias, "noise_std": noise_std, "size": size}
    return features, target, truth


def synthesize(sets: dict[str, Any], output_dir: Path) -> None:
    import pandas as pd

    generated = {name: generate(name, spec) for name, spec in sets.items()}  # validate all first
    for name, (features, target, truth) in generated.items():
        columns = [f"x{i + 1}" for i in range(features.shape[1])]
        frame = pd.DataFrame(features, columns=columns).assign(y=target)
        write_csv(output_dir / f"{name}.csv", frame, float_format="%.17g")
        write_json(output_dir / f"{name}.json", truth)


def main() -> None:
    sets = require(load_params(), "synthetic")
    if not isinstance(sets, dict) or not sets:
        raise UserError("params.yaml 'synthetic' must map set names to their settings")
    synthesize(sets, OUTPUT_DIR)
    print(f"synthesized {len(sets)} sets in data/synthetic: {', '.join(sets)}")


if __name__ == "__main__":
    cli(main)()
