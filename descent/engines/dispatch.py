"""The engine's entry point: R runs of one plan on the device params.yaml names, with the
backend it calls for (the compiled kernel on the CPU, the torch backends elsewhere).

Backends are imported when first used: a CPU stage never pays for torch's import, and no
backend imports this module.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from descent.engines.problem import Plan, Runs, Schedule, choose_engine, unsound_start
from descent.io import UserError


def train_runs(features: np.ndarray, targets: np.ndarray, thetas: np.ndarray, plan: Plan,
               schedule: Schedule, engine: str = "auto", device: str = "cpu",
               progress=None, lrs=None, cluster: str = "none", statistics=None) -> Runs:
    """R runs at once from thetas (R, p+1), in the dtype of features, on `device`;
    schedule.order is (R, epochs, N), one order per run; lrs (R,), one learning rate per run
    (default: plan.lr for every run). So one call trains a grid of learning rates x seeds,
    each run bit for bit what it is alone; batch size and epochs are the plan's.

    The compiled kernel takes all runs in one call (in parallel over runs, in threads), the
    affine scan in one batched scan, the literal loop one after another (both in
    descent.engines.torch_backends, which imports torch). Every run's iterates are the same
    either way. cluster (compiled only): a dask scheduler whose workers take blocks of runs.
    statistics: the float64 (gram, cross, yy) of features and targets as given, when they
    are known already (stage solve records them); else computed here.
    """
    engine = choose_engine(engine, device)
    lrs = np.full(len(thetas), plan.lr) if lrs is None else np.asarray(lrs, np.float64)
    if lrs.shape != (len(thetas),) or not (np.isfinite(lrs) & (lrs > 0)).all():
        raise ValueError(f"lrs must be ({len(thetas)},) positive finite learning rates, one "
                         f"per run; got {lrs.shape}")
    if plan.target is not None and engine != "compiled":
        raise ValueError("a target loss is watched by the compiled engine only")
    if engine == "compiled":
        from descent.engines.compiled import compiled_runs

        runs = compiled_runs(features, targets, thetas, plan, schedule, progress, lrs, cluster,
                             statistics)
    elif cluster != "none":
        raise UserError(f"train.cluster sends the compiled engine's runs; engine {engine} "
                        "runs here: set train.cluster: none, or train.engine: compiled")
    else:
        from descent.engines.torch_backends import torch_runs

        runs = torch_runs(features, targets, thetas, plan, schedule, engine, device, progress,
                          lrs, statistics)
    if (runs.diverged_at == 0).any():
        raise unsound_start()
    return runs


def resolve_device(name: str) -> str:
    """`auto` picks cuda, else mps, else cpu; a named device must exist (no silent fallback).

    `auto` and `cpu` on a machine with no GPU driver answer without importing torch.
    """
    name = str(name).strip().lower()
    if name == "cpu" or (name == "auto" and not _gpu_possible()):
        return "cpu"
    import torch

    mps = getattr(torch.backends, "mps", None)
    mps_ok = bool(mps and mps.is_available())
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "mps" if mps_ok else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"device '{name}' is not a device name; use auto, cpu, cuda, "
                        "cuda:N or mps in params.yaml") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"device '{name}' requested but CUDA is not available on this "
                            "machine; set device: cpu (or auto) in params.yaml")
        if (device.index or 0) >= torch.cuda.device_count():
            raise UserError(f"device '{name}' requested but this machine has "
                            f"{torch.cuda.device_count()} CUDA device(s); pick another index")
    elif device.type == "mps" and not mps_ok:
        raise UserError(f"device '{name}' requested but MPS is not available on this machine; "
                        "set device: cpu (or auto) in params.yaml")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"device '{name}' is not supported; use auto, cpu, cuda, cuda:N or mps")
    return str(device)


def _gpu_possible() -> bool:
    """A CUDA/ROCm driver is installed (Linux), or this is an Apple-silicon Mac (MPS)."""
    import platform

    if platform.system() == "Darwin":
        return platform.machine() == "arm64"
    # A container may see only its own GPU's node (/dev/nvidia3); a sandbox, no /proc entry.
    return any(Path(p).exists() for p in ("/proc/driver/nvidia/version", "/dev/nvidiactl",
                                          "/dev/kfd")) \
        or any(Path("/dev").glob("nvidia[0-9]*")) or platform.system() == "Windows"
