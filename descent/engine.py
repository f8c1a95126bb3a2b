"""One gradient-descent engine for linear regression; the batch size is the only thing
that makes a run full-batch GD (batch = N), SGD (batch = 1) or mini-batch SGD.

Model y_hat = X w + b, loss `scale * mean((y_hat - y)^2)` over a batch (scale 1/2 is the
d2l "half squared" loss, 1 is MSELoss). With squared loss, one update is an affine map of
theta = (w, b):

    theta' = (I - a Xb' Xb) theta + a Xb' yb,    a = 2 * scale * lr / batch,  Xb = [X_B, 1]

Two engines compute the same iterates:
- `loop`: the tutorials' literal loop, nn.Linear + torch.optim.SGD, one Python step per update.
- `affine`: builds every update's map as a (p+1)x(p+1) matrix, multiplies the maps between
  two logging points together by tree reduction, then chains those segment maps with a
  parallel prefix scan: a few batched matmuls per chunk, no Python loop per update.
Both return the parameters at the logging points only; nothing is copied to the host per step.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from descent.config import ENGINES  # noqa: F401  (re-exported: the engines' names)
from descent.io import UserError
# The affine engine works in chunks of about this many gathered rows (updates x batch size),
# which bounds its memory whatever the run's length.
ROWS_PER_CHUNK = 1 << 18


def total_updates(plan: "Plan") -> int:
    """Updates of a run: full batches each epoch, plus a short one unless drop_last."""
    size = min(plan.batch_size, plan.n_examples)
    full, rest = divmod(plan.n_examples, size)
    return plan.epochs * (full + (1 if rest and not plan.drop_last else 0))


def memory_needed(n_examples: int, n_features: int, plan: "Plan", itemsize: int,
                  runs: int = 1) -> int:
    """Bytes `runs` runs of one plan need at their peak, estimated from the plan.

    Each run's schedule holds every epoch's order (epochs x N indices), and each run's
    parameters and loss at every logging point are kept; the schedule adds a few numbers per
    update. Engine affine (one run at a time) adds a chunk: its rows gathered, one (p+1)^2
    map per update (three times, for the scan's temporaries) and an N x (points in the chunk)
    residual matrix for the logged losses. A chunk stretches to the next logging point, so
    log_every sets its size when it is larger.
    """
    p1, n = n_features + 1, n_examples
    size = min(plan.batch_size, n)
    updates = total_updates(plan)
    points = updates * size // plan.log_every + plan.epochs + 1
    rows = min(max(ROWS_PER_CHUNK, plan.log_every + size), updates * size)
    chunk_updates = max(1, rows // size)
    chunk_points = min(points, rows // plan.log_every + 2)
    return (runs * (plan.epochs * n * 8 + points * (p1 * itemsize * 2 + 16)) + updates * 40
            + rows * (p1 * itemsize * 2 + 8) + chunk_updates * p1 * p1 * itemsize * 3
            + n * chunk_points * itemsize * 2)


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
    order: torch.Tensor          # (epochs, N) example indices, on the CPU
    batch_sizes: np.ndarray      # (updates,) examples in each update
    starts: np.ndarray           # (updates,) offset of each batch within its epoch's order
    epochs_of: np.ndarray        # (updates,) epoch (0-based) of each update
    log_after: np.ndarray        # (points,) update counts (1-based) after which to log


def make_schedule(plan: Plan, generator: torch.Generator) -> Schedule:
    n, size = plan.n_examples, min(plan.batch_size, plan.n_examples)
    if plan.shuffle:
        order = torch.stack([torch.randperm(n, generator=generator) for _ in range(plan.epochs)])
    else:
        order = torch.arange(n).repeat(plan.epochs, 1)
    full, rest = divmod(n, size)
    per_epoch = [size] * full + ([rest] if rest and not plan.drop_last else [])
    batch_sizes = np.tile(per_epoch, plan.epochs)
    starts = np.tile(np.concatenate([[0], np.cumsum(per_epoch)[:-1]]), plan.epochs)
    epochs_of = np.repeat(np.arange(plan.epochs), len(per_epoch))
    seen = np.cumsum(batch_sizes)
    crossed = seen // plan.log_every > (seen - batch_sizes) // plan.log_every
    epoch_end = np.r_[epochs_of[1:] != epochs_of[:-1], True]
    log_after = np.flatnonzero(crossed | epoch_end) + 1
    return Schedule(order, batch_sizes, starts, epochs_of, log_after)


@dataclass
class Trajectory:
    """The run at its logging points: row 0 is the start, row j follows update log_updates[j].

    A diverged run stops at its last sound logging point; diverged_at_update is the first
    update whose parameters are non-finite or whose whole-set loss passes the blow-up limit.
    """
    log_updates: np.ndarray   # (points,) 0 first
    weights: torch.Tensor     # (points, d)
    biases: torch.Tensor      # (points,)
    losses: np.ndarray        # (points,) float64, whole-set loss in the recorded convention
    seconds: np.ndarray       # (points,) training wall-clock time, loss evaluation excluded
    diverged_at_update: int | None = None


def resolve_device(name: str) -> torch.device:
    """`auto` picks cuda, else mps, else cpu; a named device must exist (no silent fallback)."""
    name = str(name).strip().lower()
    mps = getattr(torch.backends, "mps", None)
    mps_ok = bool(mps and mps.is_available())
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if mps_ok else "cpu")
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
    return device


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def train(features: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor,
          bias: torch.Tensor, plan: Plan, schedule: Schedule, engine: str = "affine",
          progress=None) -> Trajectory:
    """Run one descent from (weights, bias); features, targets and parameters share a device.

    engine `auto` is the compiled kernel on the CPU and the affine scan on a GPU.
    """
    theta = torch.cat([weights, bias.reshape(1)])
    if engine == "auto":
        engine = "compiled" if features.device.type == "cpu" else "affine"
    if engine == "compiled":
        if features.device.type != "cpu":
            raise UserError(f"train.engine 'compiled' runs on the CPU, not on "
                            f"{features.device}; set train.engine: auto (or device: cpu)")
        return _train_compiled(features, targets, theta, plan, schedule, progress)
    run = {"affine": _train_affine, "loop": _train_loop}[engine]
    watch = _Watch(features, targets, plan, schedule)
    logged, seconds, diverged_at = run(features, targets, theta, plan, schedule, watch,
                                       progress or (lambda n: None))
    losses = np.concatenate(watch.losses)
    points = len(losses)
    return Trajectory(np.r_[0, schedule.log_after][:points], logged[:points, :-1],
                      logged[:points, -1], losses, seconds[:points], diverged_at)


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


def train_runs(features: torch.Tensor, targets: torch.Tensor, thetas: torch.Tensor,
               plan: Plan, schedule: Schedule, engine: str = "auto", progress=None) -> Runs:
    """R runs at once from thetas (R, p+1); schedule.order is (R, epochs, N), one per run.

    The compiled kernel takes all runs in one call (in parallel over runs); the affine and
    loop engines take them one after another. Every run's iterates are the same either way.
    """
    if engine == "auto":
        engine = "compiled" if features.device.type == "cpu" else "affine"
    if engine == "compiled":
        if features.device.type != "cpu":
            raise UserError(f"train.engine 'compiled' runs on the CPU, not on "
                            f"{features.device}; set train.engine: auto (or device: cpu)")
        return _compiled_runs(features, targets, thetas, plan, schedule, progress)
    log_updates = np.r_[0, schedule.log_after]
    runs, p1 = len(thetas), thetas.shape[1]
    losses = np.full((runs, len(log_updates)), np.nan)
    final, diverged_at, seconds = np.empty((runs, p1)), np.full(runs, -1), 0.0
    for r in range(runs):
        one = train(features, targets, thetas[r, :-1], thetas[r, -1], plan,
                    dataclasses.replace(schedule, order=schedule.order[r]), engine, progress)
        losses[r, :len(one.losses)] = one.losses
        final[r] = np.r_[one.weights[-1].cpu().double().numpy(), float(one.biases[-1])]
        diverged_at[r] = -1 if one.diverged_at_update is None else one.diverged_at_update
        seconds += float(one.seconds[-1])
    return Runs(log_updates, losses, final, diverged_at, seconds)


def _compiled_runs(features, targets, thetas, plan, schedule, progress) -> Runs:
    logged, losses, last, diverged_at, seconds = _compiled(features, targets, thetas, plan,
                                                           schedule, progress)
    final = logged[np.arange(len(thetas)), last].astype(np.float64)
    return Runs(np.r_[0, schedule.log_after], losses, final, diverged_at, seconds)


@functools.cache
def _load_kernel(dtype: np.dtype) -> None:
    """Call the kernel once on a one-row problem, so its compilation is never timed."""
    from descent.kernel import descend

    descend(np.zeros((1, 1), dtype), np.zeros(1, dtype), np.zeros((1, 2), dtype),
            np.zeros((1, 1, 1), np.int64), 1, False, 0.0, np.array([1]), 2.0, 0.5)


def _compiled(features, targets, thetas, plan, schedule, progress):
    """The numba kernel (descent.kernel): exact sequential updates, R runs, on the CPU.

    Its whole-set losses come from float64 sufficient statistics (X'X, X'y, y'y), and it
    applies the same divergence rule as the other engines, checked at logging points and
    located exactly by replaying the interval. Returns (logged, losses, last sound point,
    diverged_at, seconds); losses after a run's last sound point are NaN.
    """
    from descent.kernel import descend

    x, y = features.numpy(), targets.numpy()
    _load_kernel(x.dtype)  # compile or load from cache, untimed
    started = time.perf_counter()
    logged, losses, diverged_at = descend(
        x, y, thetas.numpy(), schedule.order.numpy(), min(plan.batch_size, plan.n_examples),
        plan.drop_last, 2 * plan.gradient_scale * plan.lr, schedule.log_after, plan.blowup,
        plan.recorded_scale)
    seconds = time.perf_counter() - started
    if progress:
        progress(len(schedule.batch_sizes) * len(thetas))
    if (diverged_at == 0).any():
        raise UserError("the initial parameters give a non-finite loss; use a smaller init "
                        "or standardize the data")
    log_updates = np.r_[0, schedule.log_after]
    # A run's last sound point: the last logging point before the update it diverged at.
    last = np.where(diverged_at > 0, np.searchsorted(log_updates, diverged_at) - 1,
                    len(log_updates) - 1)
    losses[np.arange(len(log_updates)) > last[:, None]] = np.nan
    return logged, losses, last, diverged_at.astype(np.int64), seconds


def _train_compiled(features, targets, theta, plan, schedule, progress) -> Trajectory:
    one = dataclasses.replace(schedule, order=schedule.order[None])
    logged, losses, last, diverged_at, elapsed = _compiled(features, targets, theta[None],
                                                           plan, one, progress)
    log_updates = np.r_[0, schedule.log_after][:last[0] + 1]
    # One call times the whole run; seconds at logging points are shared out by update count.
    seconds = elapsed * log_updates / max(1, schedule.log_after[-1])
    kept = torch.from_numpy(logged[0, :last[0] + 1])
    at = int(diverged_at[0])
    return Trajectory(log_updates, kept[:, :-1], kept[:, -1], losses[0, :last[0] + 1],
                      seconds, at if at > 0 else None)


class _Watch:
    """Whole-set losses at logging points, and the divergence rule shared by both engines."""

    def __init__(self, features, targets, plan, schedule):
        self.features, self.targets, self.plan, self.schedule = features, targets, plan, schedule
        self.losses: list[np.ndarray] = []
        self.limit = math.inf

    def loss(self, thetas: torch.Tensor) -> torch.Tensor:
        residuals = self.features @ thetas[:, :-1].T + thetas[:, -1] - self.targets[:, None]
        return self.plan.recorded_scale * residuals.square().mean(dim=0)

    def is_sound(self, thetas: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
        return torch.isfinite(thetas).all(dim=1) & torch.isfinite(losses) & (losses <= self.limit)

    def record(self, thetas: torch.Tensor) -> int:
        """Log the rows; return how many are sound before the first unsound (one host sync)."""
        losses = self.loss(thetas)
        unsound = (~self.is_sound(thetas, losses)).nonzero()
        ok = int(unsound[0, 0]) if len(unsound) else len(losses)
        host = losses[:ok].cpu().double().numpy()  # MPS has no float64: convert on the host
        if not self.losses:  # the starting point fixes the blow-up limit
            if ok == 0:
                raise UserError("the initial parameters give a non-finite loss; use a "
                                "smaller init or standardize the data")
            self.limit = self.plan.blowup * max(float(host[0]), np.finfo(np.float64).tiny)
        self.losses.append(host)
        return ok

    def first_unsound_update(self, theta: torch.Tensor, first: int, last: int) -> int:
        """Replay updates first..last-1 (0-based) one by one from theta; the first unsound one.

        Runs only after a divergence, over at most one logging interval.
        """
        schedule, plan = self.schedule, self.plan
        order = schedule.order.to(self.features.device)
        for update in range(first, last):
            start = schedule.starts[update]
            batch = order[schedule.epochs_of[update], start:start + schedule.batch_sizes[update]]
            x, y = self.features[batch], self.targets[batch]
            residuals = x @ theta[:-1] + theta[-1] - y
            step = 2 * plan.gradient_scale * plan.lr / len(batch)
            theta = theta - step * torch.cat([x.T @ residuals, residuals.sum().reshape(1)])
            if not bool(self.is_sound(theta[None], self.loss(theta[None]))[0]):
                return update + 1
        return last


# --- the literal loop ----------------------------------------------------------------
def _train_loop(features, targets, theta, plan, schedule, watch, progress):
    device, dtype = features.device, features.dtype
    model = torch.nn.Linear(features.shape[1], 1, device=device, dtype=dtype)
    with torch.no_grad():
        model.weight.copy_(theta[None, :-1])
        model.bias.copy_(theta[-1:])
    optimizer = torch.optim.SGD(model.parameters(), lr=plan.lr)
    order = schedule.order.to(device)
    log_after = np.r_[0, schedule.log_after]
    logged = torch.empty(len(log_after), len(theta), device=device, dtype=dtype)
    logged[0] = theta
    seconds = np.zeros(len(log_after))
    watch.record(logged[:1])
    point, paused = 1, 0.0
    synchronize(device)
    started = time.perf_counter()
    for update, (epoch, start, size) in enumerate(
            zip(schedule.epochs_of, schedule.starts, schedule.batch_sizes), start=1):
        batch = order[epoch, start:start + size]
        optimizer.zero_grad()
        residuals = model(features[batch]).squeeze(1) - targets[batch]
        loss = plan.gradient_scale * residuals.square().mean()
        loss.backward()
        optimizer.step()
        if update == log_after[point]:
            synchronize(device)
            pause = time.perf_counter()
            seconds[point] = pause - started - paused
            with torch.no_grad():  # the loss evaluation is not timed, as in d2l
                logged[point] = torch.cat([model.weight[0], model.bias])
                n_sound = watch.record(logged[point:point + 1])
            progress(update - log_after[point - 1])
            if not n_sound:
                first = int(log_after[point - 1])
                return logged, seconds, watch.first_unsound_update(logged[point - 1], first,
                                                                   update)
            point += 1
            paused += time.perf_counter() - pause
    return logged, seconds, None


# --- the affine-map engine -------------------------------------------------------------
def _update_maps(features1, targets, order, schedule, plan, first, last) -> torch.Tensor:
    """Homogeneous (p+1)x(p+1) maps of updates first..last-1 (0-based), shape (K, p+1, p+1).

    features1 has a trailing ones column and an extra all-zero row at index N, which pads
    short batches so that every batch in the chunk has the same width.
    """
    device, dtype = features1.device, features1.dtype
    n, p = features1.shape[0] - 1, features1.shape[1]
    sizes = schedule.batch_sizes[first:last]
    width = int(sizes.max())
    offsets = np.arange(width)
    columns = schedule.starts[first:last, None] + offsets
    valid = offsets < sizes[:, None]
    rows = schedule.epochs_of[first:last, None].repeat(width, axis=1)
    index = torch.full(columns.shape, n, dtype=torch.long)
    index[torch.from_numpy(valid)] = schedule.order[torch.from_numpy(rows[valid]),
                                                    torch.from_numpy(columns[valid])]
    index = index.to(device)  # one copy per chunk, not per update
    batch_x, batch_y = features1[index], targets[index]             # (K, m, p), (K, m)
    step = torch.as_tensor(2 * plan.gradient_scale * plan.lr / sizes, device=device, dtype=dtype)
    maps = torch.zeros(len(sizes), p + 1, p + 1, device=device, dtype=dtype)
    maps[:, :p, :p] = torch.eye(p, device=device, dtype=dtype) \
        - step[:, None, None] * (batch_x.transpose(1, 2) @ batch_x)
    maps[:, :p, p] = step[:, None] * (batch_x.transpose(1, 2) @ batch_y[:, :, None])[:, :, 0]
    maps[:, p, p] = 1
    return maps


def _compose(maps: torch.Tensor) -> torch.Tensor:
    """Product maps[..., K-1] @ ... @ maps[..., 0] along dim 1, by pairwise tree reduction."""
    while maps.shape[1] > 1:
        if maps.shape[1] % 2:
            identity = torch.eye(maps.shape[-1], device=maps.device, dtype=maps.dtype)
            maps = torch.cat([maps, identity.expand(maps.shape[0], 1, -1, -1)], dim=1)
        maps = maps[:, 1::2] @ maps[:, 0::2]
    return maps[:, 0]


def _prefix(maps: torch.Tensor) -> torch.Tensor:
    """Running products maps[j] @ ... @ maps[0] for every j (Hillis-Steele scan)."""
    shift = 1
    while shift < maps.shape[0]:
        maps = torch.cat([maps[:shift], maps[shift:] @ maps[:-shift]])
        shift *= 2
    return maps


def _segment_maps(maps: torch.Tensor, ends: np.ndarray) -> torch.Tensor:
    """Compose consecutive runs of maps ending at the (exclusive) indices `ends`."""
    lengths = np.diff(np.r_[0, ends])
    width = int(lengths.max())
    p1 = maps.shape[-1]
    padded = torch.eye(p1, device=maps.device, dtype=maps.dtype).repeat(len(ends), width, 1, 1)
    # Left-align each segment; the identity padding after it leaves the product unchanged.
    offsets = np.arange(width)
    valid = offsets < lengths[:, None]
    source = (np.r_[0, ends[:-1]][:, None] + offsets)[valid]
    mask = torch.from_numpy(valid).to(maps.device)
    padded[mask] = maps[torch.from_numpy(source).to(maps.device)]
    return _compose(padded)


def _train_affine(features, targets, theta, plan, schedule, watch, progress):
    device, dtype = features.device, features.dtype
    n = features.shape[0]
    ones = torch.ones(n, 1, device=device, dtype=dtype)
    padding = torch.zeros(1, features.shape[1] + 1, device=device, dtype=dtype)
    features1 = torch.cat([torch.cat([features, ones], dim=1), padding])
    targets0 = torch.cat([targets, torch.zeros(1, device=device, dtype=dtype)])
    state = torch.cat([theta, torch.ones(1, device=device, dtype=dtype)])
    logged, seconds = [theta[None]], [0.0]
    watch.record(theta[None])
    total, done, elapsed = len(schedule.batch_sizes), 0, 0.0
    log_after = schedule.log_after
    while done < total:
        # A chunk ends on a logging point so that each segment lies in one chunk.
        limit = done + max(1, ROWS_PER_CHUNK // int(schedule.batch_sizes[done]))
        inside = log_after[(log_after > done) & (log_after <= limit)]
        last = int(inside[-1]) if len(inside) else int(log_after[log_after > done][0])
        synchronize(device)
        started = time.perf_counter()
        maps = _update_maps(features1, targets0, schedule.order, schedule, plan, done, last)
        ends = log_after[(log_after > done) & (log_after <= last)] - done
        states = _prefix(_segment_maps(maps, ends)) @ state                 # (points, p+1)
        synchronize(device)
        chunk_seconds = time.perf_counter() - started
        # Within a chunk, time is shared out in proportion to the updates done.
        seconds.extend(elapsed + chunk_seconds * ends / (last - done))
        elapsed += chunk_seconds
        logged.append(states[:, :-1])
        progress(last - done)
        n_sound = watch.record(states[:, :-1])
        if n_sound < len(ends):
            trajectory = torch.cat(logged)
            first = done + (int(ends[n_sound - 1]) if n_sound else 0)
            return (trajectory, np.array(seconds), watch.first_unsound_update(
                trajectory[-len(ends) - 1 + n_sound], first, done + int(ends[n_sound])))
        state = states[-1]
        done = last
    return torch.cat(logged), np.array(seconds), None
