"""The torch backends of the engine (descent.engine): the literal loop and the affine scan,
on any torch device, one run at a time.

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
import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from descent.engine import CHUNK_BYTES, Plan, Runs, Schedule, run_kernel
from descent.io import UserError


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


def train_one_by_one(features: np.ndarray, targets: np.ndarray, thetas: np.ndarray,
                     plan: Plan, schedule: Schedule, engine: str, device: str,
                     progress=None) -> Runs:
    """engine.train_runs for the torch engines: the runs one after another on `device`."""
    device = torch.device(device)
    x = torch.as_tensor(features, device=device)
    y = torch.as_tensor(targets, device=device)
    starts = torch.as_tensor(thetas, device=device, dtype=x.dtype)
    log_updates = np.r_[0, schedule.log_after]
    runs, p1 = len(thetas), thetas.shape[1]
    losses = np.full((runs, len(log_updates)), np.nan)
    final, diverged_at, seconds = np.empty((runs, p1)), np.full(runs, -1), 0.0
    for r in range(runs):
        one = train(x, y, starts[r, :-1], starts[r, -1], plan,
                    dataclasses.replace(schedule, order=schedule.order[r]), engine, progress)
        losses[r, :len(one.losses)] = one.losses
        final[r] = np.r_[one.weights[-1].cpu().double().numpy(), float(one.biases[-1])]
        diverged_at[r] = -1 if one.diverged_at_update is None else one.diverged_at_update
        seconds += float(one.seconds[-1])
    return Runs(log_updates, losses, final, diverged_at, seconds)


def _train_compiled(features, targets, theta, plan, schedule, progress) -> Trajectory:
    one = dataclasses.replace(schedule, order=schedule.order[None])
    logged, losses, last, diverged_at, elapsed = run_kernel(
        features.numpy(), targets.numpy(), theta[None].numpy(), plan, one, progress)
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
        # The whole-set loss is a quadratic in theta: float64 sufficient statistics, made
        # once on the host (MPS has no float64), cost O(p^2) per logged loss and no N x points
        # matrix. A loss whose sum of squared residuals would overflow the run's dtype counts
        # as infinite, as a direct evaluation in that dtype would be (descent.kernel does too).
        x = features.detach().cpu().double().numpy()
        y = targets.detach().cpu().double().numpy()
        x1 = np.c_[x, np.ones(len(y))]
        self.gram, self.cross, self.yy, self.n = x1.T @ x1, x1.T @ y, float(y @ y), len(y)
        self.cap = float(torch.finfo(features.dtype).max) * plan.recorded_scale / len(y)

    def loss(self, thetas: torch.Tensor) -> np.ndarray:
        """Whole-set losses of the rows of thetas (points, p+1), float64 on the host."""
        theta = thetas.detach().cpu().double().numpy()
        with np.errstate(all="ignore"):  # an overflowing theta gives inf/nan: unsound
            quadratic = np.einsum("ij,jk,ik->i", theta, self.gram, theta) \
                - 2 * theta @ self.cross + self.yy
        return self.plan.recorded_scale * np.maximum(quadratic, 0.0) / self.n

    def is_sound(self, thetas: torch.Tensor, losses: np.ndarray) -> np.ndarray:
        finite = torch.isfinite(thetas).all(dim=1).cpu().numpy()
        with np.errstate(invalid="ignore"):
            return finite & np.isfinite(losses) & (losses <= min(self.limit, self.cap))

    def record(self, thetas: torch.Tensor) -> int:
        """Log the rows; return how many are sound before the first unsound (one host sync)."""
        losses = self.loss(thetas)
        unsound = np.flatnonzero(~self.is_sound(thetas, losses))
        ok = int(unsound[0]) if len(unsound) else len(losses)
        if not self.losses:  # the starting point fixes the blow-up limit
            if ok == 0:
                raise UserError("the initial parameters give a non-finite loss; use a "
                                "smaller init or standardize the data")
            self.limit = self.plan.blowup * max(float(losses[0]), np.finfo(np.float64).tiny)
        self.losses.append(losses[:ok])
        return ok

    def first_unsound_update(self, theta: torch.Tensor, first: int, last: int) -> int:
        """Replay updates first..last-1 (0-based) one by one from theta; the first unsound one.

        Runs only after a divergence, over at most one logging interval.
        """
        schedule, plan = self.schedule, self.plan
        order = torch.from_numpy(schedule.order).to(self.features.device)
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
    order = torch.from_numpy(schedule.order).to(device)
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
    index[torch.from_numpy(valid)] = torch.from_numpy(schedule.order[rows[valid],
                                                                     columns[valid]])
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


def chunk_updates(plan: Plan, n_features: int, itemsize: int, width: int) -> int:
    """Updates per chunk of the affine engine, so that a chunk's maps (three copies, for the
    scan's temporaries) and its gathered rows stay within CHUNK_BYTES."""
    p1 = n_features + 1
    per_update = 3 * p1 * p1 * itemsize + width * (p1 * itemsize + itemsize + 8)
    return max(1, CHUNK_BYTES // per_update)


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
    size = chunk_updates(plan, features.shape[1], features.element_size(),
                         int(schedule.batch_sizes.max()))
    # A chunk is a fixed number of updates, whatever the logging interval: a segment (the
    # updates between two logging points) cut by a chunk's end is carried, as its partial
    # product, into the next chunk.
    carry, last_logged = None, 0
    while done < total:
        last = min(total, done + size)
        synchronize(device)
        started = time.perf_counter()
        maps = _update_maps(features1, targets0, schedule.order, schedule, plan, done, last)
        inside = log_after[(log_after > done) & (log_after <= last)] - done
        cut = not len(inside) or inside[-1] < last - done  # the chunk ends mid-segment
        segments = _segment_maps(maps, np.r_[inside, last - done] if cut else inside)
        if carry is not None:
            segments[0] = segments[0] @ carry
        carry = segments[-1] if cut else None
        segments = segments[:len(inside)]
        states = _prefix(segments) @ state if len(inside) else None   # (points, p+1)
        synchronize(device)
        chunk_seconds = time.perf_counter() - started
        progress(last - done)
        if states is not None:
            # Within a chunk, time is shared out in proportion to the updates done.
            seconds.extend(elapsed + chunk_seconds * inside / (last - done))
            logged.append(states[:, :-1])
            n_sound = watch.record(states[:, :-1])
            if n_sound < len(inside):
                trajectory = torch.cat(logged)
                first = done + int(inside[n_sound - 1]) if n_sound else last_logged
                return (trajectory, np.array(seconds), watch.first_unsound_update(
                    trajectory[-len(inside) - 1 + n_sound], first, done + int(inside[n_sound])))
            state, last_logged = states[-1], done + int(inside[-1])
        elapsed += chunk_seconds
        done = last
    return torch.cat(logged), np.array(seconds), None
