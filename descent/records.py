"""What stage train writes and stages evaluate and report read back: each (recipe, variant)'s
runs, one per seed. One class per record, with the JSON it is written as (the file's
shape is these classes' `to_json`; nothing reads it back by key elsewhere)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SeedRun:
    """One seed's run, its figures to the precision of its dtype."""
    seed: int
    initial_loss: float
    weights: tuple[float, ...]
    bias: float
    loss: float                      # the final loss, or for a diverged run its last logged
    diverged_at_update: int | None   # the first unsound update; None: it did not diverge

    @property
    def diverged(self) -> bool:
        return self.diverged_at_update is not None

    def to_json(self) -> dict[str, Any]:
        record: dict[str, Any] = {"seed": self.seed, "initial_loss": self.initial_loss,
                                  "weights": list(self.weights), "bias": self.bias,
                                  "diverged": self.diverged}
        if self.diverged:  # its last logged loss is no final result: named apart
            record.update(diverged_at_update=self.diverged_at_update,
                          last_logged_loss=self.loss)
        else:
            record.update(loss=self.loss)
        return record

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> SeedRun:
        diverged = record["diverged"]
        return cls(seed=record["seed"], initial_loss=record["initial_loss"],
                   weights=tuple(record["weights"]), bias=record["bias"],
                   loss=record["last_logged_loss"] if diverged else record["loss"],
                   diverged_at_update=record["diverged_at_update"] if diverged else None)


@dataclass(frozen=True)
class VariantRuns:
    """A (recipe, variant)'s plan figures and its runs, one per seed."""
    batch_size: int
    lr: float
    epochs: int
    examples: int      # rows of the data (an epoch)
    updates: int       # updates of each run that did not diverge
    runs: tuple[SeedRun, ...]
    params: str        # digest of the params that shaped the runs (Config.fingerprint)

    def to_json(self) -> dict[str, Any]:
        return {"batch_size": self.batch_size, "lr": self.lr, "epochs": self.epochs,
                "examples": self.examples, "updates": self.updates,
                "runs": [run.to_json() for run in self.runs], "params": self.params}

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> VariantRuns:
        return cls(batch_size=record["batch_size"], lr=record["lr"], epochs=record["epochs"],
                   examples=record["examples"], updates=record["updates"],
                   runs=tuple(SeedRun.from_json(run) for run in record["runs"]),
                   params=record.get("params", ""))


@dataclass(frozen=True)
class Setup:
    """How a train stage ran: the same for all its recipes."""
    device: str
    dtype: str
    engine: str
    seed: int
    seeds: int

    def to_json(self) -> dict[str, Any]:
        return {"device": self.device, "dtype": self.dtype, "engine": self.engine,
                "seed": self.seed, "seeds": self.seeds}


@dataclass(frozen=True)
class Trained:
    """metrics/train/<variant>.json: the setup and every recipe's runs."""
    setup: Setup
    recipes: dict[str, VariantRuns]

    def to_json(self) -> dict[str, Any]:
        return {"setup": self.setup.to_json(),
                "recipes": {name: runs.to_json() for name, runs in self.recipes.items()}}

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> Trained:
        return cls(Setup(**record["setup"]),
                   {name: VariantRuns.from_json(runs) for name, runs in record["recipes"].items()})
