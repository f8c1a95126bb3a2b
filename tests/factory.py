"""Configs built by the tests themselves, never read from the live params.yaml.

REFERENCE is the published reference experiments (README, "Reference experiments"): what
the reference tests check, stated here, so a leftover `dvc exp run -S batch_size=20` in the
workspace cannot change it. `test_config.py` checks params.yaml's defaults are this.
"""
from __future__ import annotations

import copy
from typing import Any

from descent.config import Config, parse

AIRFOIL_SHA256 = "74c75fd71783f1e6b71f8a622b993dc592897a97cd689c5090a07147a1b097b3"
_D2L_INIT = {"weights": {"normal_std": 0.01}, "bias": 0.0}


def _same(lr: float, epochs: int) -> dict[str, float | int]:
    return {"lr": lr, "epochs": epochs}


REFERENCE: dict[str, Any] = {
    "seed": 0, "seeds": 16, "device": "cpu", "dtype": "float32", "batch_size": 10,
    "fetch": {"sources": ["https://archive.ics.uci.edu/ml/machine-learning-databases/00291/"
                          "airfoil_self_noise.dat",
                          "http://d2l-data.s3-accelerate.amazonaws.com/airfoil_self_noise.dat"],
              "sha256": AIRFOIL_SHA256},
    "prepare": {"n_train": 1500},
    "synthetic": {
        "line_minus5x": {"n_rows": 100, "features": {"kind": "grid", "start": -5.0, "step": 0.1},
                         "weights": [-5.0], "bias": 0.0, "noise_std": 0.4, "seed": 42},
        "line_3x_plus_2": {"n_rows": 1000,
                           "features": {"kind": "uniform", "low": 0.0, "high": 1.0},
                           "weights": [3.0], "bias": 2.0, "noise_std": 0.1, "seed": 42},
        "plane_2x1_minus3p4x2": {"n_rows": 1000,
                                 "features": {"kind": "normal", "mean": 0.0, "std": 1.0},
                                 "weights": [2.0, -3.4], "bias": 4.2, "noise_std": 0.01,
                                 "seed": 42}},
    "train": {"engine": "auto", "log_every": 100, "blowup": 1e6},
    "recipes": {
        "airfoil": {"data": "data/prepared/airfoil.npy", "loss": "half_squared",
                    "init": _D2L_INIT, "shuffle": True},
        "airfoil_concise": {"data": "data/prepared/airfoil.npy", "loss": "half_squared",
                            "gradient_loss": "mse", "shuffle": True,
                            "init": {"weights": {"normal_std": 0.01}, "bias": "torch_default"}},
        "line_minus5x": {"data": "data/synthetic/line_minus5x.npy", "loss": "mse",
                         "init": {"weights": [-10.0], "bias": -20.0}, "shuffle": False},
        "line_3x_plus_2": {"data": "data/synthetic/line_3x_plus_2.npy", "loss": "mse",
                           "init": {"weights": "torch_default", "bias": "torch_default"},
                           "shuffle": True},
        "plane_2x1_minus3p4x2": {"data": "data/synthetic/plane_2x1_minus3p4x2.npy",
                                 "loss": "half_squared", "init": _D2L_INIT, "shuffle": True}},
    "variants": {
        variant: {"airfoil": airfoil, "airfoil_concise": _same(0.05, 6 if variant == "gd" else 2),
                  "line_minus5x": _same(0.1, 20), "line_3x_plus_2": _same(0.01, 1000),
                  "plane_2x1_minus3p4x2": _same(0.03, 3)}
        for variant, airfoil in (("gd", _same(1.0, 6)), ("sgd", _same(0.005, 2)),
                                 ("minibatch", _same(0.05, 2)))},
    "evaluate": {"target_excess": 0.01},
    "sweep": {"recipes": ["airfoil"], "batch_sizes": [1, 4, 16, 64, 256, 1500],
              "lr_factors": [0.05, 0.1, 0.2, 0.4, 0.7, 1.0, 1.4], "seeds": 8, "budget": 3000,
              "target_excess": 0.05},
}


def params(**changes: Any) -> dict[str, Any]:
    """REFERENCE with dotted keys changed: params(**{"variants.gd.airfoil.lr": 0.1})."""
    result = copy.deepcopy(REFERENCE)
    for dotted, value in changes.items():
        node = result
        *parents, last = dotted.split(".")
        for key in parents:
            node = node[key]
        node[last] = value
    return result


def config(**changes: Any) -> Config:
    return parse(params(**changes))
