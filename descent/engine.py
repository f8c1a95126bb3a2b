"""One gradient-descent engine for linear regression; the batch size is the only thing
that makes a run full-batch GD (batch = N), SGD (batch = 1) or mini-batch SGD.

Model y_hat = X w + b, loss `scale * mean((y_hat - y)^2)` over a batch (scale 1/2 is the
d2l "half squared" loss, 1 is MSELoss). This module holds what every backend shares — the
plan, the schedule (which examples each update uses, when to log), the up-front memory
estimate, the device choice — and runs R runs at once (`train_runs`): on the CPU with the
compiled kernel (descent.kernel), elsewhere with the torch engines (descent.torch_engines).
It imports neither torch nor numba itself, so a CPU stage never pays for torch.
"""
from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from descent.config import ENGINES  # noqa: F401  (re-exported: the engines' names)
from descent.io import UserError
from descent.parallel import in_parallel

# The affine engine (descent.torch_engines) works in chunks of at most this many bytes of
# update maps and gathered rows, which bounds its memory whatever the run's length.
CHUNK_BYTES = 1 << 28


def epoch_batches(n_examples: int, batch_size: int, drop_last: bool) -> tuple[int, int]:
    """(full batches, size of the short last batch) of one epoch: the short batch holds the
    N mod m examples left over, and is 0 (no batch) when there are none or drop_last."""
    full, rest = divmod(n_examples, batch_size)
    return full, (0 if drop_last else rest)


def total_updates(plan: "Plan") -> int:
    """Updates of a run: full batches each epoch, plus a short one unless drop_last."""
    full, short = epoch_batches(plan.n_examples, min(plan.batch_size, plan.n_examples),
                                plan.drop_last)
    return plan.epochs * (full + (short > 0))


def memory_needed(n_examples: int, n_features: int, plan: "Plan", itemsize: int,
                  runs: int = 1) -> int:
    """Bytes `runs` runs of one plan need at their peak, estimated from the plan.

    Each run's schedule holds every epoch's order (epochs x N indices), and each run's
    parameters and loss at every logging point are kept; the schedule adds a few numbers per
    update. Engine affine adds one chunk for all runs, at most CHUNK_BYTES.
    """
    p1 = n_features + 1
    updates = total_updates(plan)
    points = updates * min(plan.batch_size, n_examples) // plan.log_every + plan.epochs + 1
    return (runs * (plan.epochs * n_examples * 8 + points * (p1 * itemsize * 2 + 16))
            + updates * 40 + CHUNK_BYTES)


@dataclass(frozen=True)
class Plan:
    """How one run walks through the data."""
    n_examples: int
    batch_size: int
    epochs: int
    lr: float
    gradient_scale: float = 0.5  # scale of the loss whose gradient drives the update
    shuffle: bool = True
    drop_last: bool = False
    log_every: int = 100     # examples between logged losses (d2l: 100); epoch ends too
    recorded_scale: float = 0.5  # scale of the whole-set loss recorded at logging points
    blowup: float = 1e6      # a logged loss above blowup x the initial loss counts as diverged


@dataclass
class Schedule:
    """Which examples each update uses, and after which updates to log."""
    order: np.ndarray            # (epochs, N) int64 example indices ((R, epochs, N) for R runs)
    batch_sizes: np.ndarray      # (updates,) examples in each update
    starts: np.ndarray           # (updates,) offset of each batch within its epoch's order
    epochs_of: np.ndarray        # (updates,) epoch (0-based) of each update
    log_after: np.ndarray        # (points,) update counts (1-based) after which to log

    @functools.cached_property
    def log_updates(self) -> np.ndarray:
        """Update counts at the logging points, the start (0) first."""
        return np.concatenate([np.zeros(1, np.int64), self.log_after])


def make_schedule(plan: Plan, generators) -> Schedule:
    """The schedule of one run (a Generator: order (epochs, N)) or of R runs (a list of R
    Generators: order (R, epochs, N)); only the example orders differ between runs."""
    if isinstance(generators, np.random.Generator):
        return _layout(plan, shuffled_order(plan, generators))
    orders = np.empty((len(generators), plan.epochs, plan.n_examples), np.int64)

    def fill(run: int) -> None:
        shuffled_order(plan, generators[run], out=orders[run])

    # numpy's shuffles release the GIL: the runs' orders are drawn in parallel, in place
    # (no per-run copies to stack), each from its own generator, so with the same bits.
    in_parallel(fill, len(generators))
    return _layout(plan, orders)


def shuffled_order(plan: Plan, generator: np.random.Generator, out=None) -> np.ndarray:
    """(epochs, N) example indices: a fresh permutation per epoch, drawn in epoch order."""
    order = np.empty((plan.epochs, plan.n_examples), np.int64) if out is None else out
    order[...] = np.arange(plan.n_examples)
    return generator.permuted(order, axis=1, out=order) if plan.shuffle else order


def _layout(plan: Plan, order: np.ndarray) -> Schedule:
    n, size = plan.n_examples, min(plan.batch_size, plan.n_examples)
    full, short = epoch_batches(n, size, plan.drop_last)
    per_epoch = [size] * full + ([short] if short else [])
    batch_sizes = np.tile(per_epoch, plan.epochs)
    starts = np.tile(np.concatenate([[0], np.cumsum(per_epoch)[:-1]]), plan.epochs)
    epochs_of = np.repeat(np.arange(plan.epochs), len(per_epoch))
    seen = np.cumsum(batch_sizes)
    crossed = seen // plan.log_every > (seen - batch_sizes) // plan.log_every
    epoch_end = np.r_[epochs_of[1:] != epochs_of[:-1], True]
    log_after = np.flatnonzero(crossed | epoch_end) + 1
    return Schedule(order, batch_sizes, starts, epochs_of, log_after)


def resolve_device(name: str) -> str:
    """`auto` picks cuda, else mps, else cpu; a named device must exist (no silent fallback).

    `auto` and `cpu` on a machine with no GPU driver answer without importing torch (~1.5 s).
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


def loss_cap(dtype, n, report_scale) -> float:
    """The loss whose sum of squared residuals overflows the run's dtype: a loss evaluated in
    that dtype (as the other engines do) is infinite above it, so the run counts as diverged
    there too, although the float64 statistics would still give a finite number."""
    return float(np.finfo(dtype).max) * report_scale / n


def unsound_start() -> UserError:
    """The error every engine gives when a run's starting point is already unsound."""
    return UserError("the initial parameters give a non-finite loss; use a smaller init or "
                     "standardize the data")


def choose_engine(engine: str, device: str) -> str:
    """`auto` is the compiled kernel on the CPU and the affine scan elsewhere; the compiled
    kernel runs on the CPU only."""
    if engine == "auto":
        return "compiled" if device == "cpu" else "affine"
    if engine == "compiled" and device != "cpu":
        raise UserError(f"train.engine 'compiled' runs on the CPU, not on {device}; set "
                        "train.engine: auto (or device: cpu)")
    return engine


@dataclass
class Runs:
    """R runs of one plan from R starts, logged at the same points.

    A diverged run stops at its last sound logging point: its later losses are NaN (they
    never reach a metrics file) and `final` holds its parameters at that point.
    """
    log_updates: np.ndarray   # (P,) update counts at the logging points, 0 first
    losses: np.ndarray        # (R, P) float64 whole-set loss in the recorded convention
    final: np.ndarray         # (R, p+1) float64 weights then bias at the last sound point
    diverged_at: np.ndarray   # (R,) int64 first unsound update, -1 for a run that never was
    seconds: float            # wall-clock time training all R runs (loss evaluation aside)


def train_runs(features: np.ndarray, targets: np.ndarray, thetas: np.ndarray, plan: Plan,
               schedule: Schedule, engine: str = "auto", device: str = "cpu",
               progress=None) -> Runs:
    """R runs at once from thetas (R, p+1), in the dtype of features, on `device`;
    schedule.order is (R, epochs, N), one order per run.

    The compiled kernel takes all runs in one call (in parallel over runs, in threads), the affine
    scan in one batched scan, the literal loop one after another (both in
    descent.torch_engines, which imports torch). Every run's iterates are the same either way.
    """
    engine = choose_engine(engine, device)
    if engine == "compiled":
        return _compiled_runs(features, targets, thetas, plan, schedule, progress)
    from descent.torch_engines import torch_runs

    return torch_runs(features, targets, thetas, plan, schedule, engine, device, progress)


def _compiled_runs(features, targets, thetas, plan, schedule, progress) -> Runs:
    _, losses, _, final, diverged_at, seconds = run_kernel(features, targets, thetas, plan,
                                                           schedule, progress)
    return Runs(schedule.log_updates, losses, final, diverged_at, seconds)


@functools.cache
def _load_kernel(dtype: np.dtype) -> None:
    """Call the kernel on a one-row problem, so that its compilation (~2 s, once per
    checkout) or cache load (~0.25 s) is never timed."""
    from descent.kernel import descend

    descend(np.zeros((1, 1), dtype), np.zeros(1, dtype), np.zeros((1, 2), dtype),
            np.zeros((1, 1, 1), np.int64), 1, False, 0.0, np.array([1]), 2.0, 0.5)


def _check_fit(features, targets, thetas, plan, schedule) -> None:
    """The kernel's arguments fit together: then its indices stay in bounds (make_schedule
    draws permutations of the rows, and the logging points of the plan's updates), so the
    kernel can skip its own checks on every element (descent.kernel.descend_valid)."""
    n, p = features.shape
    if not (features.dtype in (np.float32, np.float64) and targets.dtype == features.dtype
            and targets.shape == (n,) and plan.n_examples == n
            and schedule.order.dtype == np.int64 and schedule.log_after.dtype == np.int64
            and schedule.order.shape == (len(thetas), plan.epochs, n)
            and thetas.shape[1:] == (p + 1,)
            and len(schedule.batch_sizes) == total_updates(plan)):
        raise ValueError(
            f"the compiled kernel needs float32/float64 ({n}, {p}) features and ({n},) "
            f"targets of one dtype, (R, {p + 1}) starts and the int64 schedule of this plan "
            f"for R runs; got {features.dtype} {features.shape}, {targets.dtype} "
            f"{targets.shape}, starts {thetas.shape}, orders {schedule.order.shape} "
            f"{schedule.order.dtype} for {plan.epochs} epochs")


def run_kernel(features, targets, thetas, plan, schedule, progress):
    """The numba kernel (descent.kernel): exact sequential updates, R runs, on the CPU.

    Its whole-set losses come from float64 sufficient statistics (X'X, X'y, y'y), and it
    applies the same divergence rule as the other engines, checked at logging points and
    located exactly by replaying the interval. Returns (logged, losses, last sound point,
    the parameters there in float64, diverged_at, seconds); losses after a run's last sound
    point are NaN.
    """
    from descent.kernel import descend_valid

    x, y = np.ascontiguousarray(features), np.ascontiguousarray(targets)
    thetas = np.ascontiguousarray(thetas, dtype=x.dtype)
    _check_fit(x, y, thetas, plan, schedule)
    _load_kernel(x.dtype)  # compile or load from cache, untimed
    started = time.perf_counter()
    logged, losses, diverged_at, last, final = descend_valid(
        x, y, thetas, schedule.order, min(plan.batch_size, plan.n_examples), plan.drop_last,
        2 * plan.gradient_scale * plan.lr, schedule.log_after, plan.blowup,
        plan.recorded_scale)
    seconds = time.perf_counter() - started
    if progress:
        progress(len(schedule.batch_sizes) * len(thetas))
    if (diverged_at == 0).any():
        raise unsound_start()
    return logged, losses, last, final, diverged_at, seconds


