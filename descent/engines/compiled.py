"""The compiled CPU backend: R independent runs of mini-batch gradient descent on a linear
model, each an exact sequential chain of updates (numba), the runs in parallel threads.

From the engine down: `compiled_runs` (the problem set up, blocks of runs in threads, or
on a dask cluster's workers) -> `_runs` (the kernel: each run's updates, logging points and
divergence replay, and with a target loss (the sweep's) the first update at it; the update
rule is in its loop). `descend` is the same computation on raw arrays, every argument
checked, for direct use; tests/reference_descent.py writes it as plainly as possible.
"""
from __future__ import annotations

import functools
import time
from typing import NamedTuple

import numpy as np

from descent.engines.problem import (Plan, Runs, epoch_batches, index_dtype, layout, loss_cap,
                                     total_updates)
from descent.jit import njit_cached  # numba's cache, shared by copies of the tree
from descent.parallel import cores, in_parallel
from descent.statistics import sufficient_statistics

__all__ = ["compiled_runs", "descend"]

LANES = 4  # rows of a batch whose residuals the kernel computes side by side
LANE_FEATURES = 8  # from this many features up
# Watching for a target loss: the exact loss at least every RESYNC updates, and whenever
# the estimate is within MARGIN of itself plus FLOOR of the start's loss above the target
# (or below the divergence limit). The estimate's drift over RESYNC updates is orders of
# magnitude smaller (see _runs).
RESYNC = 64
BLOCK_MIN = 16  # at batch 1, a block shorter than this costs more than the estimate saves
MARGIN = 1e-3
FLOOR = 1e-8


class Problem(NamedTuple):
    """The data every run of a call descends on, and what its whole-set loss needs."""
    features: np.ndarray   # (N, p) float32 or float64, C-contiguous
    targets: np.ndarray    # (N,) same dtype
    gram: np.ndarray       # (p+1, p+1) float64 X1^T X1 (X1 = [X, 1])
    cross: np.ndarray      # (p+1,) float64 X1^T y
    yy: float              # y^T y
    loss_scale: float      # the recorded loss: loss_scale * mean squared residual
    cap: float             # a loss above it overflows the dtype's sum of squares (loss_cap)


class Walk(NamedTuple):
    """How every run walks through the data, and when it stops to log."""
    m: int                 # batch size
    full: int              # full batches an epoch
    per_epoch: int         # batches an epoch (full, and a short one unless dropped)
    log_after: np.ndarray  # (P,) int64 update counts after which each run logs
    blowup: float          # a loss above blowup x the start's is unsound


class Watch(NamedTuple):
    """A target loss every run watches for (plan.target). The kernel is compiled apart with
    and without one (None), so that runs without one pay nothing for it."""
    target: float
    rows: np.ndarray       # at batch 1, (N, p+4) float64: for each row z = (x_k, 1),
                           # gram z, z.cross, z.gram z, and |z| rounded up; else (0, p+4)
    curvature: float       # loss_scale/N x the largest eigenvalue of gram, rounded up
    rounding: float        # x's dtype's machine epsilon


class Record(NamedTuple):
    """What the kernel writes for each run (NaN after its last sound logging point)."""
    states: np.ndarray       # (R, P+1, p+1) parameters at the start and each logging point
    losses: np.ndarray       # (R, P+1) float64 whole-set loss there
    diverged_at: np.ndarray  # (R,) int64 first unsound update; -1 none, 0 the start
    reached_at: np.ndarray   # (R,) int64 first update whose loss <= watch.target; -1 none


def compiled_runs(features, targets, thetas, plan, schedule, progress, lrs,
                  cluster: str | None = None, statistics=None) -> Runs:
    """engine `compiled`: R runs on the CPU, run r from thetas[r] at learning rate lrs[r]
    with the order schedule.order[r]; every update exact and in order (the kernel), the
    whole-set losses from the float64 sufficient statistics, a divergence located exactly by
    replaying its interval. A run with an unsound start has diverged_at 0.

    cluster: None or "none" (threads in this process), or a dask scheduler's address (or
    "local": a LocalCluster here) whose workers take blocks of runs: the same runs, bit for
    bit (descent.engines.cluster). statistics: the data's (gram, cross, yy), when they are
    known already (a block on a worker)."""
    x, y = np.ascontiguousarray(features), np.ascontiguousarray(targets)
    thetas = np.ascontiguousarray(thetas, dtype=x.dtype)
    _check_fit(x, y, thetas, plan, schedule)
    (n, p), runs = x.shape, len(thetas)
    gram, cross, yy = sufficient_statistics(x, y) if statistics is None else statistics
    m = min(plan.batch_size, n)
    problem = Problem(x, y, gram, cross, float(yy), float(plan.loss_scale),
                      loss_cap(x.dtype, n, plan.loss_scale))
    full, short = epoch_batches(n, m, plan.drop_last)
    walk = Walk(m, full, full + (short > 0), schedule.log_after, float(plan.blowup))
    watch = None if plan.target is None else Watch(
        float(plan.target),
        _watch_rows(x, gram, cross) if m == 1 else np.empty((0, p + 4)),
        float(plan.loss_scale) / n * np.linalg.eigvalsh(gram)[-1] * (1 + 1e-6),
        float(np.finfo(x.dtype).eps))
    # The step of a full and of the short batch, each divided in float64 and rounded once
    # to the working dtype.
    scale = 2 * plan.gradient_scale * np.asarray(lrs, np.float64)
    steps = np.stack([scale / m, scale / (short or m)], axis=1).astype(x.dtype)
    points = len(schedule.log_after) + 1
    record = Record(np.full((runs, points, p + 1), np.nan, x.dtype),
                    np.full((runs, points), np.nan), np.full(runs, -1, np.int64),
                    np.full(runs, -1, np.int64))
    # compile or load from cache, untimed (rows read in order are a read-only view: another
    # build of the kernel)
    held = schedule.order
    _load_kernel(x.dtype, index_dtype(n) if held is None else held.dtype,
                 held is None or held.flags.c_contiguous)
    started = time.perf_counter()
    if cluster in (None, "none"):
        # The runs in contiguous blocks, one per usable core. The kernel releases the GIL
        # (nogil), so the blocks run in parallel; one build serves one run and many
        # (numba's `parallel=True` would be a second, slower compilation).
        workers = min(runs, cores())
        bounds = [runs * k // workers for k in range(workers + 1)]

        def block(index: int) -> None:
            if schedule.order is not None:  # every run's orders held: the block in one call
                part = slice(bounds[index], bounds[index + 1])
                _runs(problem, walk, thetas[part], schedule.order[part], steps[part],
                      Record(*(array[part] for array in record)), watch)
                return
            for run in range(bounds[index], bounds[index + 1]):  # drawn as each run starts
                part = slice(run, run + 1)
                _runs(problem, walk, thetas[part], schedule.orders(part), steps[part],
                      Record(*(array[part] for array in record)), watch)

        in_parallel(block, workers)
    else:  # blocks of runs, each this function on a dask worker: the same runs, bit for bit
        from descent.engines.cluster import map_blocks

        blocks = [slice(first, min(runs, first + CLUSTER_BLOCK_RUNS))
                  for first in range(0, runs, CLUSTER_BLOCK_RUNS)]
        done = map_blocks(cluster, compiled_runs, (x, y), [
            (thetas[part], plan, schedule.part(part), None, lrs[part]) for part in blocks],
            statistics=(gram, cross, yy))
        for part, block_runs in zip(blocks, done):
            record.states[part], record.losses[part] = block_runs.states, block_runs.losses
            record.diverged_at[part] = block_runs.diverged_at
            if watch is not None:
                record.reached_at[part] = block_runs.reached_at
    seconds = time.perf_counter() - started
    if progress:
        progress(schedule.updates * runs)
    return Runs(schedule.log_updates, record.losses, record.states, record.diverged_at,
                seconds, None if watch is None else record.reached_at)


# Runs per block sent to a cluster: enough work per task to pay for its round trip, and
# blocks enough to spread over the workers.
CLUSTER_BLOCK_RUNS = 8


@njit_cached(nogil=True)
def _runs(problem, walk, thetas0, orders, steps, record, watch):
    """Each run of a block in turn, from thetas0[run] with the order orders[run] (epochs, N)
    and the steps steps[run] (full batch, short batch): its updates up to each logging point,
    its state and loss there (record), and its first unsound update.

    An unsound logging point replays that run's interval from its last sound state, update by
    update, to find the exact update; the same code on the same bits gives the same updates.

    Watching for watch.target, every update is judged as if it were logged (sound? at the
    target yet?) without paying for the exact loss each time: each update also moves an
    estimate of the loss, L(theta - D) = L(theta) - loss_scale/N D.(2v - gram D) with
    v = gram theta - cross and D the update's change. At batch 1, D = along z for the
    example's z = (x_k, 1), and z.v and z.gram z come from watch.rows in O(p); at larger
    batches D = step * gradient and v is kept up to date, O(p^2) an update. Cheaper still at
    batch 1, far from the target and the limit: a block, begun at an exact loss L at theta0
    (v0 there), knows L(theta0 + D) lies within L -+ loss_scale/N (2|D||v0| +
    curvature |D|^2) and bounds |D| by the sum of each update's |along| |z| (plus its
    rounding), O(1) an update; the block ends when that sum passes the room _room left it.
    Only the exact loss (_loss) decides, computed when the estimate comes near the target or
    the divergence limit, every RESYNC updates, and when a block ends, each time restarting
    the estimate or a block from it. The estimate follows the float64 ideal of each float32
    update: their gap is the loss of the roundings, about eps32^2 of the start's loss an
    update plus a cross term that vanishes with the gradient, far inside MARGIN and FLOOR
    (tests/test_sweep.py checks the counts against every update's exact loss).
    """
    features, targets = problem.features, problem.targets
    n, p = features.shape
    m, full, per_epoch, log_after = walk.m, walk.full, walk.per_epoch, walk.log_after
    # The parameters and gradient, padded so that no two threads' blocks share a cache line.
    pad = 16
    work = np.zeros(3 * pad + 2 * (p + 1), features.dtype)
    theta, grad = work[pad:pad + p + 1], work[2 * pad + p + 1:2 * pad + 2 * p + 2]
    rows, dots = np.empty(LANES, np.int64), np.empty(LANES, features.dtype)
    # the watch at batches above 1, float64: v = gram theta - cross, and an update's change
    q, per_n = p + 1, problem.loss_scale / n
    near = np.zeros(3 * pad + 2 * q)
    v, change = near[pad:pad + q], near[2 * pad + q:2 * pad + 2 * q]
    for run in range(thetas0.shape[0]):
        order, states, losses = orders[run], record.states[run], record.losses[run]
        for c in range(p + 1):
            theta[c] = thetas0[run, c]
            states[0, c] = theta[c]
        loss = _loss(theta, problem)
        losses[0] = loss
        if not _sound(theta, loss, np.inf):
            record.diverged_at[run] = 0
            continue
        limit = min(walk.blowup * max(loss, 2.2250738585072014e-308), problem.cap)
        point = 0                            # logging points passed; next: log_after[point]
        update, epoch, batch = 0, 0, 0       # updates done; the next one's epoch and batch
        replaying = False
        # the watch: an estimate inside (above, below) needs no exact loss before `due`;
        # at batch 1, a block (bounded) needs none while theta travelled at most `room` from
        # where the block began, at `since`
        watching, above, below, estimate, due = False, 0.0, 0.0, 0.0, 0
        bounded, travelled, room, slack, since = False, 0.0, 0.0, 0.0, 0
        if watch is not None:  # (numba compiles this only for a watch, not for None)
            watching = True
            # estimate - MARGIN estimate > target + FLOOR start's loss: not at the target
            above = (watch.target + FLOOR * loss) / (1.0 - MARGIN)
            if loss <= watch.target:
                record.reached_at[run] = 0
                above = -np.inf
            below = limit * (1.0 - MARGIN)
            estimate, due = loss, RESYNC
            _gradient(theta, problem, v)
            if m == 1:
                bounded = True
                room, slack = _room(theta, v, loss, above, below, per_n, watch)
        while point < log_after.shape[0]:
            # The update rule, in the dtype of the features:
            #   r = X_B w + b - y_B;  w -= step * X_B^T r;  b -= step * sum(r)
            start = batch * m
            if batch < full:
                stop, step = start + m, steps[run, 0]
            else:
                stop, step = n, steps[run, 1]
            if stop - start == 1:  # one example: no gradient to accumulate (same roundings:
                k = order[epoch, start]  # grad would hold exactly r * x, as 0 + r * x is exact)
                dot = features[k, 0] * theta[0]
                for c in range(1, p):
                    dot += features[k, c] * theta[c]
                r = dot + theta[p] - targets[k]
                for c in range(p):
                    theta[c] -= step * (r * features[k, c])
                theta[p] -= step * r
            else:
                for c in range(p + 1):
                    grad[c] = 0
                i = start
                # LANES rows at a time: their residuals are independent chains of sums that
                # the CPU overlaps; the gradient still adds them in row order (same bits).
                # Below LANE_FEATURES features the chains are short and this costs more
                # than it saves (bench/README.md).
                while p >= LANE_FEATURES and i + LANES <= stop:
                    for lane in range(LANES):
                        rows[lane] = order[epoch, i + lane]
                        dots[lane] = features[rows[lane], 0] * theta[0]
                    for c in range(1, p):
                        for lane in range(LANES):
                            dots[lane] += features[rows[lane], c] * theta[c]
                    for lane in range(LANES):
                        k = rows[lane]
                        r = dots[lane] + theta[p] - targets[k]
                        for c in range(p):
                            grad[c] += r * features[k, c]
                        grad[p] += r
                    i += LANES
                for i in range(i, stop):
                    k = order[epoch, i]
                    dot = features[k, 0] * theta[0]
                    for c in range(1, p):
                        dot += features[k, c] * theta[c]
                    r = dot + theta[p] - targets[k]
                    for c in range(p):
                        grad[c] += r * features[k, c]
                    grad[p] += r
                for c in range(p + 1):
                    theta[c] -= step * grad[c]
            update += 1
            batch += 1
            if batch == per_epoch:
                batch = 0
                epoch += 1
            if watch is not None and watching:  # every update judged as if logged
                if bounded:  # |theta - theta at since| <= travelled (NaN: not inside)
                    travelled += abs(np.float64(step) * np.float64(r)) * watch.rows[k, q + 2] \
                        + slack
                    inside = travelled <= room
                    exact = not inside
                elif m == 1:  # D = along z: with the new theta, z.v = slope - along z.gram z
                    along = np.float64(step) * np.float64(r)
                    slope = -watch.rows[k, q]
                    for c in range(q):
                        slope += watch.rows[k, c] * np.float64(theta[c])
                    drop = along * (2.0 * slope + along * watch.rows[k, q + 1])
                else:  # D = step * gradient (along z for a last batch of one), and gram D
                    if stop - start == 1:
                        along = np.float64(step) * np.float64(r)
                        for c in range(p):
                            change[c] = along * np.float64(features[k, c])
                        change[p] = along
                    else:
                        for c in range(q):
                            change[c] = np.float64(step) * np.float64(grad[c])
                    drop = 0.0
                    for a in range(q):
                        moved = 0.0
                        for b in range(q):  # gram is symmetric: row a's entries, in order
                            moved += problem.gram[b, a] * change[b]
                        drop += change[a] * (2.0 * v[a] - moved)
                        v[a] -= moved
                if not bounded:
                    estimate -= per_n * drop
                    inside = above < estimate < below  # (NaN: not inside)
                    exact = not inside or update == due
                if exact:
                    loss = _loss(theta, problem)
                    if not _sound(theta, loss, limit):
                        record.diverged_at[run] = update
                        break
                    if loss <= watch.target and record.reached_at[run] < 0:
                        record.reached_at[run] = update
                        above = -np.inf
                    estimate, due = loss, update + RESYNC
                    # batch 1: blocks while they last BLOCK_MIN updates, else the estimate,
                    # until a quiet stretch of it (exact only as due) tries a block again
                    bounded = m == 1 and (update - since >= BLOCK_MIN if bounded else inside)
                    if m > 1 or bounded:
                        _gradient(theta, problem, v)
                    if bounded:
                        room, slack = _room(theta, v, loss, above, below, per_n, watch)
                        travelled, since = 0.0, update
            if replaying:  # every update checked, up to the unsound logging point
                if not _sound(theta, _loss(theta, problem), limit) \
                        or update == log_after[point]:  # (reached only if the replay differs)
                    record.diverged_at[run] = update
                    break
            elif update == log_after[point]:
                loss = _loss(theta, problem)
                if _sound(theta, loss, limit):
                    point += 1
                    for c in range(p + 1):
                        states[point, c] = theta[c]
                    losses[point] = loss
                else:  # back to the last sound state, to replay this interval
                    for c in range(p + 1):
                        theta[c] = states[point, c]
                    update = 0 if point == 0 else log_after[point - 1]
                    epoch = update // per_epoch
                    batch = update - epoch * per_epoch
                    replaying = True
                    watching = False  # the first pass watched this interval already
        if 0 <= record.diverged_at[run] <= record.reached_at[run]:  # not before diverging
            record.reached_at[run] = -1


@njit_cached(nogil=True)
def _loss(theta, problem):
    """loss_scale * mean squared residual from the float64 sufficient statistics, >= 0."""
    gram, cross = problem.gram, problem.cross
    q = theta.shape[0]
    # theta^T (gram theta - 2 cross) + yy, each entry of gram theta summed in the order
    # b = 0, 1, ... in a scalar (a scratch array kept in memory made this 4x slower).
    total = problem.yy
    for a in range(q):
        row = 0.0
        for b in range(q):  # gram is symmetric: gram[b, a] is row a's b-th entry
            row += gram[b, a] * np.float64(theta[b])
        total += np.float64(theta[a]) * (row - 2.0 * cross[a])
    loss = problem.loss_scale * total / problem.features.shape[0]
    if loss < 0.0:  # cancellation near the optimum; NaN stays NaN
        loss = 0.0
    return loss


def _watch_rows(x, gram, cross) -> np.ndarray:
    """(gram z, z.cross, z.gram z, |z|) for each row z = (x_k, 1); an estimate's inputs
    (BLAS's rounding is fine there: exact losses decide) and a bound's: |z| rounded up past
    the rounding of an update along z in x's dtype."""
    z = np.c_[x, np.ones(len(x))]
    moved = z @ gram
    length = np.sqrt(np.einsum("ij,ij->i", z, z)) * (1 + 4 * np.finfo(x.dtype).eps)
    return np.c_[moved, z @ cross, np.einsum("ij,ij->i", moved, z), length]


@njit_cached(nogil=True)
def _gradient(theta, problem, v):
    """v = gram theta - cross, from which the watch's estimate moves at batches above 1."""
    for a in range(theta.shape[0]):
        total = -problem.cross[a]
        for b in range(theta.shape[0]):
            total += problem.gram[b, a] * np.float64(theta[b])
        v[a] = total


@njit_cached(nogil=True)
def _room(theta, v, loss, above, below, per_n, watch):
    """How far (2-norm) theta may move before its loss could leave (above, below), and the
    rounding an update may add to that distance. With v = gram theta - cross, exactly
    L(theta + D) = L + per_n (2 D.v + D^T gram D), which lies within
    L -+ per_n (2 |D| |v|) (+ watch.curvature |D|^2 above)."""
    norm, size = 0.0, 0.0
    for a in range(theta.shape[0]):
        norm += v[a] * v[a]
        size += np.float64(theta[a]) * np.float64(theta[a])
    slope = per_n * np.sqrt(norm)
    low = np.inf if slope == 0.0 else (loss - above) / (2.0 * slope)
    headroom = below - loss
    high = 0.0 if not headroom > 0.0 else \
        headroom / (slope + np.sqrt(slope * slope + watch.curvature * headroom))
    room = max(0.0, min(low, high))
    # an update's own rounding: half an ulp of each parameter, whose norm is at most
    # |theta| + room within the block
    return room, watch.rounding * (np.sqrt(size) + room)


@njit_cached(nogil=True)
def _sound(theta, loss, limit):
    """The divergence rule (engines/problem.py): finite parameters, a finite loss <= limit."""
    for a in range(theta.shape[0]):
        if not np.isfinite(theta[a]):
            return False
    return np.isfinite(loss) and loss <= limit


# --- around the kernel -------------------------------------------------------------
@functools.cache
def _load_kernel(dtype: np.dtype, index: np.dtype, contiguous: bool) -> None:
    """Call the kernel on a one-row problem, so that its compilation (once per checkout) or
    its cache load is never timed (bench/README.md has both costs)."""
    orders = np.zeros((1, 1, 1), index) if contiguous else \
        np.broadcast_to(np.zeros(1, index), (1, 1, 1))
    problem = Problem(np.zeros((1, 1), dtype), np.zeros(1, dtype), np.zeros((2, 2)),
                      np.zeros(2), 0.0, 0.5, 1.0)
    record = Record(np.zeros((1, 2, 2), dtype), np.zeros((1, 2)), np.zeros(1, np.int64),
                    np.zeros(1, np.int64))
    _runs(problem, Walk(1, 1, 1, np.ones(1, np.int64), 2.0), np.zeros((1, 2), dtype),
          orders, np.zeros((1, 2), dtype), record, None)


def _check_fit(features, targets, thetas, plan, schedule) -> None:
    """The kernel's arguments fit together: then its indices stay in bounds (make_schedule
    draws permutations of the rows, and the logging points of the plan's updates), so the
    kernel can skip its own checks on every element."""
    n, p = features.shape
    if not (features.dtype in (np.float32, np.float64) and targets.dtype == features.dtype
            and targets.shape == (n,) and plan.n_examples == n
            and _orders_fit(schedule, len(thetas), plan.epochs, n)
            and schedule.log_after.dtype == np.int64
            and thetas.shape[1:] == (p + 1,)
            and schedule.updates == total_updates(plan)):
        raise ValueError(
            f"the compiled kernel needs float32/float64 ({n}, {p}) features and ({n},) "
            f"targets of one dtype, (R, {p + 1}) starts and the int schedule of this plan "
            f"for R runs; got {features.dtype} {features.shape}, {targets.dtype} "
            f"{targets.shape}, starts {thetas.shape}, orders "
            f"{schedule.orders(slice(0, 1)).shape} for {plan.epochs} epochs")


def _orders_fit(schedule, runs: int, epochs: int, n: int) -> bool:
    """Held orders are (R, epochs, N) ints; drawn ones come from R generators."""
    if schedule.order is None:
        return len(schedule.generators) == runs and schedule.plan.epochs == epochs \
            and schedule.plan.n_examples == n
    return schedule.order.dtype in (np.int64, np.int32) \
        and schedule.order.shape == (runs, epochs, n)


def descend(features, targets, thetas0, orders, batch_size, drop_last, step_scale, log_after,
            blowup, loss_scale):
    """R independent runs of mini-batch gradient descent on a linear model, exactly sequential.

    features: (N, p) float32 or float64, C-contiguous.  targets: (N,) same dtype.
    thetas0: (R, p+1) same dtype: weights then bias for each run.
    orders: (R, E, N) int64 (or int32): example order of each run in each epoch (a
      permutation, or arange when not shuffled).
    batch_size: m (1 <= m <= N). Each epoch is cut into floor(N/m) batches of m consecutive
      entries of that epoch's order, plus one short last batch of N mod m entries unless
      drop_last (or N mod m == 0).
    step_scale: float = 2 * gradient_loss_scale * lr (the update uses
      step = step_scale / len(batch), rounded once to the dtype of features). May also be an
      (R,) array: one step scale (learning rate) per run.
    Update (in the dtype of features): r = X_B w + b - y_B;  w -= step * X_B^T r;
      b -= step * sum(r)  (the gradient of gradient_loss_scale * mean(r^2)).
    log_after: (P,) int sorted strictly increasing update counts (1-based, each <= the total
      E * batches_per_epoch) after which the state is logged; row 0 of the output is the start.
      Updates after the last logging point are not run (nothing would record them).
    blowup: float; loss_scale: float (0.5 or 1.0).

    Returns (logged, losses, diverged_at):
      logged: (R, P+1, p+1), dtype of features: parameters at the start and at each point.
      losses: (R, P+1) float64: loss_scale * mean over all N examples of (x.w + b - y)^2,
        from float64 sufficient statistics G = X1^T X1, c = X1^T y, yy = y^T y (X1 = [X, 1])
        accumulated once: loss_scale * (th^T G th - 2 th^T c + yy) / N, clamped at >= 0.
      diverged_at: (R,) int64: -1 if the run never diverged, else the 1-based index of the
        first update after which the run is unsound (a non-finite parameter, or a loss that is
        non-finite or > blowup * max(initial_loss, tiny), or so large that the sum of squared
        residuals overflows the dtype of features, where a loss evaluated in that dtype would be
        infinite); 0 if the start itself is unsound.
        Soundness is checked at logging points; an unsound point replays that run's interval
        from its last sound logged state, update by update, to find the exact update. A
        diverged run stops: its rows after the last sound point are NaN. Other runs go on.
    """
    features = np.ascontiguousarray(features)
    dtype = features.dtype
    if dtype not in (np.float32, np.float64) or features.ndim != 2:
        raise TypeError(f"features must be a 2-d float32 or float64 array, got "
                        f"{features.ndim}-d {dtype}")
    n, p = features.shape
    if n < 1 or p < 1:
        raise ValueError(f"features must have at least one row and one column, got {n}x{p}")
    targets = np.ascontiguousarray(targets)
    thetas0 = np.ascontiguousarray(thetas0)
    if targets.dtype != dtype or targets.shape != (n,):
        raise TypeError(f"targets must be ({n},) {dtype}, got {targets.shape} {targets.dtype}")
    if thetas0.dtype != dtype or thetas0.ndim != 2 or thetas0.shape[1] != p + 1:
        raise TypeError(f"thetas0 must be (R, {p + 1}) {dtype}, got {thetas0.shape} "
                        f"{thetas0.dtype}")
    runs = thetas0.shape[0]
    orders = np.asarray(orders)
    if orders.dtype not in (np.int64, np.int32):
        if not np.issubdtype(orders.dtype, np.integer):
            raise TypeError(f"orders must be integer, got {orders.dtype}")
        orders = orders.astype(np.int64)
    orders = np.ascontiguousarray(orders)
    if orders.ndim != 3 or orders.shape[0] != runs or orders.shape[2] != n:
        raise ValueError(f"orders must be ({runs}, E, {n}), got {orders.shape}")
    epochs = orders.shape[1]
    m = int(batch_size)
    if not 1 <= m <= n:
        raise ValueError(f"batch_size must be in [1, {n}], got {batch_size}")
    full, short = epoch_batches(n, m, drop_last)
    per_epoch = full + (short > 0)
    total = epochs * per_epoch
    log_after = np.asarray(log_after)
    if log_after.ndim != 1 or (log_after.size and not np.issubdtype(log_after.dtype,
                                                                   np.integer)):
        raise TypeError("log_after must be a 1-d integer array")
    log_after = np.ascontiguousarray(log_after, dtype=np.int64)
    if log_after.size and (log_after[0] < 1 or log_after[-1] > total
                           or (log_after[1:] <= log_after[:-1]).any()):
        raise ValueError(f"log_after must increase strictly within [1, {total}]")
    if orders.size and (orders.min() < 0 or orders.max() >= n):
        raise ValueError(f"orders must index examples in [0, {n})")
    # As the engine's plan and schedule: gradient_scale 1/2 makes 2 * 1/2 * lr = step_scale
    # exactly.
    scales = np.broadcast_to(np.asarray(step_scale, np.float64), (runs,))
    plan = Plan(n_examples=n, batch_size=m, epochs=epochs, lr=float(scales[0]) if runs else 0.0,
                gradient_scale=0.5, drop_last=bool(drop_last), loss_scale=float(loss_scale),
                blowup=float(blowup))
    result = compiled_runs(features, targets, thetas0, plan, layout(plan, orders, log_after),
                           None, scales)
    return result.states, result.losses, result.diverged_at
