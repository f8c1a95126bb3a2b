"""The torch backends of the engine (descent.engines): the literal loop (one run at a time)
and the affine scan (all runs in one batched scan), on any torch device.

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

import numpy as np
import torch

from descent.engines.problem import CHUNK_BYTES, Plan, Runs, Schedule, loss_cap, unsound_start
from descent.io import UserError
from descent.statistics import sufficient_statistics


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def torch_runs(features: np.ndarray, targets: np.ndarray, thetas: np.ndarray, plan: Plan,
               schedule: Schedule, engine: str, device: str, progress, lrs,
               statistics=None) -> Runs:
    """engine.train_runs for the torch engines on `device`: the affine scan takes all runs
    at once, the literal loop one after another (run r at learning rate lrs[r]); every run's
    losses from one set of statistics (given, or made here)."""
    device = torch.device(device)
    schedule = schedule.drawn()  # these backends index every run's orders
    x = torch.as_tensor(features, device=device)
    y = torch.as_tensor(targets, device=device)
    starts = torch.as_tensor(thetas, device=device, dtype=x.dtype)
    losses_of = _Losses(features, targets, plan, statistics)
    if engine == "affine":
        return _affine_runs(x, y, starts, plan, schedule, progress, lrs, losses_of)
    log_updates = schedule.log_updates
    runs, p1 = len(thetas), thetas.shape[1]
    losses = np.full((runs, len(log_updates)), np.nan)
    states = np.full((runs, len(log_updates), p1), np.nan, features.dtype)
    diverged_at, seconds = np.full(runs, -1), 0.0
    for r in range(runs):
        own = dataclasses.replace(plan, lr=float(lrs[r]))
        one = dataclasses.replace(schedule, order=schedule.order[r])
        watch = _Watch(x, y, own, one, losses_of)
        logged, elapsed, at = _train_loop(x, y, starts[r], own, one, watch,
                                          progress or (lambda n: None))
        points = sum(len(part) for part in watch.losses)
        losses[r, :points] = np.concatenate(watch.losses)
        states[r, :points] = logged[:points].cpu().numpy()
        diverged_at[r] = -1 if at is None else at
        seconds += elapsed
    return Runs(log_updates, losses, states, diverged_at, seconds)


class _Losses:
    """Whole-set losses from float64 sufficient statistics, and the soundness rule.

    The whole-set loss is a quadratic in theta: the statistics, made once on the host (MPS
    has no float64), cost O(p^2) per logged loss and no N x points matrix. A loss whose sum
    of squared residuals would overflow the run's dtype counts as infinite, as a direct
    evaluation in that dtype would be (the compiled kernel does the same).
    """

    def __init__(self, features: np.ndarray, targets: np.ndarray, plan, statistics=None):
        self.gram, self.cross, self.yy = statistics or sufficient_statistics(features, targets)
        self.n, self.scale = len(targets), plan.loss_scale
        self.cap = loss_cap(features.dtype, len(targets), plan.loss_scale)

    def limits(self, start: np.ndarray, blowup: float) -> np.ndarray:
        """The blow-up limit of runs whose starting losses are `start`."""
        return blowup * np.maximum(start, np.finfo(np.float64).tiny)

    def loss(self, thetas: torch.Tensor) -> np.ndarray:
        """Whole-set losses of thetas (..., p+1), float64 on the host: the compiled kernel's
        `_loss`, operation for operation (elementwise, over the parameters in index order),
        so a run's losses are the same bits whatever other runs share the array (an einsum
        or a matrix product picks its summation by shape) and whichever backend ran it."""
        theta = thetas.detach().cpu().double().numpy()
        with np.errstate(all="ignore"):  # an overflowing theta gives inf/nan: unsound
            rows = np.zeros(theta.shape)
            for b in range(theta.shape[-1]):  # rows[a] = sum over b of gram[b, a] theta[b]
                rows += self.gram[b] * theta[..., b:b + 1]
            total = np.full(theta.shape[:-1], self.yy)
            for a in range(theta.shape[-1]):
                total = total + theta[..., a] * (rows[..., a] - 2.0 * self.cross[a])
            losses = self.scale * total / self.n
        return np.where(losses < 0.0, 0.0, losses)  # cancellation near the optimum; NaN stays

    def sound(self, thetas: torch.Tensor, losses: np.ndarray, limit) -> np.ndarray:
        finite = torch.isfinite(thetas).all(dim=-1).cpu().numpy()
        with np.errstate(invalid="ignore"):
            return finite & np.isfinite(losses) & (losses <= np.minimum(limit, self.cap))


class _Watch:
    """The literal loop's logged losses and divergence rule (one run)."""

    def __init__(self, features, targets, plan, schedule, statistics: _Losses):
        self.features, self.targets, self.plan, self.schedule = features, targets, plan, schedule
        self.losses: list[np.ndarray] = []
        self.limit = math.inf
        self.statistics = statistics

    def loss(self, thetas: torch.Tensor) -> np.ndarray:
        return self.statistics.loss(thetas)

    def is_sound(self, thetas: torch.Tensor, losses: np.ndarray) -> np.ndarray:
        return self.statistics.sound(thetas, losses, self.limit)

    def record(self, thetas: torch.Tensor) -> int:
        """Log the rows; return how many are sound before the first unsound (one host sync)."""
        losses = self.loss(thetas)
        unsound = np.flatnonzero(~self.is_sound(thetas, losses))
        ok = int(unsound[0]) if len(unsound) else len(losses)
        if not self.losses:  # the starting point fixes the blow-up limit
            if ok == 0:
                raise unsound_start()
            self.limit = float(self.statistics.limits(losses[0], self.plan.blowup))
        self.losses.append(losses[:ok])
        return ok

    def first_unsound_update(self, theta: torch.Tensor, first: int, last: int) -> int:
        return _first_unsound(self.features, self.targets, self.schedule.order, self.schedule,
                              self.plan, self.plan.lr, self.statistics, self.limit, theta,
                              first, last)


def _first_unsound(features, targets, order, schedule, plan, lr, statistics, limit, theta,
                   first: int, last: int) -> int:
    """Replay updates first..last-1 (0-based) of one run (its order (epochs, N), its learning
    rate lr) one by one from theta; the first unsound one. Runs only after a divergence,
    over at most one logging interval."""
    # A copy: rows read in order are a read-only view, which torch warns of.
    order = torch.from_numpy(np.array(order, np.int64)).to(features.device)
    for update in range(first, last):
        start = schedule.starts[update]
        batch = order[schedule.epochs_of[update], start:start + schedule.batch_sizes[update]]
        x, y = features[batch], targets[batch]
        residuals = x @ theta[:-1] + theta[-1] - y
        step = 2 * plan.gradient_scale * lr / len(batch)
        theta = theta - step * torch.cat([x.T @ residuals, residuals.sum().reshape(1)])
        if not bool(statistics.sound(theta[None], statistics.loss(theta[None]), limit)[0]):
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
    order = torch.from_numpy(np.array(schedule.order, np.int64)).to(device)  # a copy, as above
    log_updates = schedule.log_updates
    logged = torch.empty(len(log_updates), len(theta), device=device, dtype=dtype)
    logged[0] = theta
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
        if update == log_updates[point]:
            synchronize(device)
            pause = time.perf_counter()
            with torch.no_grad():  # the loss evaluation is not timed, as in d2l
                logged[point] = torch.cat([model.weight[0], model.bias])
                n_sound = watch.record(logged[point:point + 1])
            progress(update - log_updates[point - 1])
            if not n_sound:
                first = int(log_updates[point - 1])
                return logged, pause - started - paused, watch.first_unsound_update(
                    logged[point - 1], first, update)
            point += 1
            paused += time.perf_counter() - pause
    synchronize(device)
    return logged, time.perf_counter() - started - paused, None


# --- the affine-map engine -------------------------------------------------------------
def _update_maps(features1, targets, orders, runs, schedule, plan, lrs, first, last
                 ) -> torch.Tensor:
    """Homogeneous (q x q) maps of updates first..last-1 (0-based) of the runs listed in
    `runs` (at learning rates lrs, one each), shape (R, K, q, q), q = p + 2; orders is (all
    runs, epochs, N), of which only the chunk's entries are read.

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
    index = torch.full((len(runs), *columns.shape), n, dtype=torch.long)
    index[:, torch.from_numpy(valid)] = torch.from_numpy(
        orders[np.asarray(runs)[:, None], rows[valid], columns[valid]].astype(np.int64))
    index = index.to(device)  # one copy per chunk, not per update
    batch_x, batch_y = features1[index], targets[index]         # (R, K, m, p), (R, K, m)
    step = torch.as_tensor(2 * plan.gradient_scale * lrs[:, None] / sizes, device=device,
                           dtype=dtype)                                     # (R, K)
    maps = torch.zeros(len(runs), len(sizes), p + 1, p + 1, device=device, dtype=dtype)
    maps[..., :p, :p] = torch.eye(p, device=device, dtype=dtype) \
        - step[..., None, None] * (batch_x.transpose(-1, -2) @ batch_x)
    maps[..., :p, p] = step[..., None] * (batch_x.transpose(-1, -2) @ batch_y[..., None])[..., 0]
    maps[..., p, p] = 1
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
    """Compose consecutive stretches of each run's maps (R, K, q, q) ending at the
    (exclusive) indices `ends`: (R, segments, q, q)."""
    runs, q = maps.shape[0], maps.shape[-1]
    lengths = np.diff(np.r_[0, ends])
    width = int(lengths.max())
    padded = torch.eye(q, device=maps.device, dtype=maps.dtype).repeat(runs, len(ends), width,
                                                                      1, 1)
    # Left-align each segment; the identity padding after it leaves the product unchanged.
    offsets = np.arange(width)
    valid = offsets < lengths[:, None]
    source = (np.r_[0, ends[:-1]][:, None] + offsets)[valid]
    mask = torch.from_numpy(valid).to(maps.device)
    padded[:, mask] = maps[:, torch.from_numpy(source).to(maps.device)]
    return _compose(padded.flatten(0, 1)).unflatten(0, (runs, len(ends)))


def update_bytes(n_features: int, itemsize: int, width: int, runs: int = 1) -> int:
    """Bytes one update of the affine engine holds for all runs: its map (three copies, for
    the scan's temporaries) and its gathered rows."""
    q = n_features + 2
    return runs * (3 * q * q * itemsize + width * ((q - 1) * itemsize + itemsize + 8))


# On a CUDA device the maps live in its memory, and fewer, larger chunks mean fewer host
# round trips per run: chunks of up to this many bytes, or an eighth of the device's memory
# if that is less. (Not yet measured on a GPU: the knob for the GPU rows of `make bench`.)
CUDA_CHUNK_BYTES = 1 << 31


def chunk_budget(device: torch.device) -> int:
    """Bytes of one affine chunk on `device`."""
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        return min(CUDA_CHUNK_BYTES, total // 8)
    return CHUNK_BYTES


def chunk_updates(n_features: int, itemsize: int, width: int, runs: int,
                  device: torch.device) -> int:
    """Updates per chunk of the affine engine, so that a chunk stays within its budget on
    `device` (chunk_budget).

    Its maps grow as p^2 (and their products cost p^3): past the point where one update no
    longer fits a chunk, the engine says so instead of breaking its memory bound."""
    budget = chunk_budget(device)
    one = update_bytes(n_features, itemsize, width, runs)
    if one > budget:
        raise UserError(
            f"train.engine affine: one update's {n_features + 1}x{n_features + 1} maps for "
            f"{runs} run(s) need {one / 2**20:.0f} MiB, more than its {budget >> 20} MiB "
            f"chunk; with {n_features} features use train.engine loop (or compiled on the "
            "CPU), or fewer seeds")
    return budget // one


def _affine_runs(features, targets, thetas, plan, schedule, progress, lrs, statistics
                 ) -> Runs:
    """R runs of the affine scan at once, from thetas (R, p+1); schedule.order (R, epochs, N);
    lrs (R,) their learning rates. A diverged run is found exactly (its last interval
    replayed), stops, and leaves the batch; the others go on.
    """
    device, dtype = features.device, features.dtype
    n, p = features.shape
    runs = thetas.shape[0]
    ones = torch.ones(n, 1, device=device, dtype=dtype)
    padding = torch.zeros(1, p + 1, device=device, dtype=dtype)
    features1 = torch.cat([torch.cat([features, ones], dim=1), padding])
    targets0 = torch.cat([targets, torch.zeros(1, device=device, dtype=dtype)])
    log_updates = schedule.log_updates
    losses = np.full((runs, len(log_updates)), np.nan)
    logged = torch.full((runs, len(log_updates), p + 1), math.nan, device=device,
                        dtype=dtype)
    start = statistics.loss(thetas)
    if not statistics.sound(thetas, start, math.inf).all():
        raise unsound_start()
    limits = statistics.limits(start, plan.blowup)
    losses[:, 0] = start
    logged[:, 0] = thetas
    diverged_at = np.full(runs, -1)
    active = np.arange(runs)                       # the runs still going
    state = torch.cat([thetas, torch.ones(runs, 1, device=device, dtype=dtype)], dim=1)
    total, done, elapsed, point = schedule.updates, 0, 0.0, 1
    size = chunk_updates(p, features.element_size(), int(schedule.epoch_sizes.max()), runs,
                         device)
    # A chunk is a fixed number of updates, whatever the logging interval: a segment (the
    # updates between two logging points) cut by a chunk's end is carried, as its partial
    # product, into the next chunk.
    carry, last_logged = None, 0
    while done < total and len(active):
        last = min(total, done + size)
        synchronize(device)
        started = time.perf_counter()
        maps = _update_maps(features1, targets0, schedule.order, active, schedule, plan,
                            lrs[active], done, last)
        inside = schedule.log_after[(schedule.log_after > done)
                                    & (schedule.log_after <= last)] - done
        cut = not len(inside) or inside[-1] < last - done  # the chunk ends mid-segment
        segments = _segment_maps(maps, np.r_[inside, last - done] if cut else inside)
        if carry is not None:
            segments[:, 0] = segments[:, 0] @ carry
        carry = segments[:, -1] if cut else None
        states = None
        if len(inside):
            prefix = _prefix(segments[:, :len(inside)].transpose(0, 1))   # (S, R, q, q)
            states = (prefix @ state[None, :, :, None])[..., 0]           # (S, R, q)
        synchronize(device)
        chunk_seconds = time.perf_counter() - started
        if progress:
            progress((last - done) * len(active))
        if states is not None:
            points = np.arange(point, point + len(inside))
            thetas_at = states[..., :-1]                                   # (S, R, p+1)
            at_losses = statistics.loss(thetas_at)                         # (S, R)
            sound = statistics.sound(thetas_at, at_losses, limits[active][None])
            # Every run at once (one host copy per chunk, not one per run): a run's points
            # are kept up to its first unsound one.
            n_sound = np.where(sound.all(axis=0), len(inside), sound.argmin(axis=0))
            kept = np.arange(len(inside))[:, None] < n_sound                  # (S, R)
            losses[np.ix_(active, points)] = np.where(kept, at_losses, np.nan).T
            going = n_sound == len(inside)
            for j, run in enumerate(active):  # each run's parameters at its sound points
                logged[run, points[:n_sound[j]]] = thetas_at[:n_sound[j], j]
            for j in np.flatnonzero(~going):  # a diverged run: find its update, then stop
                run, n = active[j], int(n_sound[j])
                before = thetas_at[n - 1, j] if n else state[j, :-1]
                first = done + int(inside[n - 1]) if n else last_logged
                diverged_at[run] = _first_unsound(
                    features, targets, schedule.order[run], schedule, plan, lrs[run],
                    statistics, limits[run], before, first, done + int(inside[n]))
            keep_going = torch.from_numpy(going).to(device)
            state, active = states[-1][keep_going], active[going]
            carry = carry[keep_going] if carry is not None else None
            last_logged, point = done + int(inside[-1]), point + len(inside)
        elapsed += chunk_seconds
        done = last
    return Runs(log_updates, losses, logged.cpu().numpy(), diverged_at, elapsed)
