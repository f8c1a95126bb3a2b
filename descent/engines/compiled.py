"""The compiled CPU backend: R independent runs of mini-batch gradient descent on a linear
model, each an exact sequential chain of updates (numba), the runs in parallel threads.

From the engine down: `compiled_runs` (fit checked, timed) -> `descend_valid` (the problem
and the walk set up, blocks of runs in threads) -> `_runs` -> `_run` (one run: its logging
points, the divergence replay) -> `_advance` (the update rule).
`descend` is `descend_valid` with every argument checked, for direct use;
tests/reference_descent.py is the same computation written as plainly as possible.
"""
from __future__ import annotations

import functools
import time
from typing import NamedTuple

import numpy as np

from descent.engines.problem import (Runs, epoch_batches, loss_cap, total_updates,
                                     unsound_start)
from descent.jit import njit_cached  # numba's cache, shared by copies of the tree
from descent.parallel import cores, in_parallel
from descent.statistics import sufficient_statistics

__all__ = ["compiled_runs", "descend", "descend_valid"]



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
    return descend_valid(features, targets, thetas0, orders, m, drop_last, step_scale,
                         log_after, blowup, loss_scale)[:3]


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


def descend_valid(features, targets, thetas0, orders, batch_size, drop_last, step_scale,
                  log_after, blowup, loss_scale):
    """`descend` without its argument checks, for arguments that are valid by construction,
    as the engine's are (its schedules' orders are permutations of the rows, its logging
    points increase within the run): C-contiguous arrays of the shapes and dtypes that
    `descend` documents, int64 log_after, 1 <= batch_size <= N. The compiled code does not
    check its indices: arguments that are not valid read out of bounds here.

    Returns `descend`'s (logged, losses, diverged_at), then each run's last sound logging
    point, last: (R,) int64 (its last non-NaN loss), and its parameters there, final:
    (R, p+1) float64.
    """
    n, p = features.shape
    runs, dtype, m = thetas0.shape[0], features.dtype, batch_size
    full, short = epoch_batches(n, m, drop_last)
    # The step of a full and of the short batch, each divided in float64 and rounded once
    # to the working dtype (one scale for all runs, or one per run; a wrong count fails to
    # broadcast).
    scale = step_scale if isinstance(step_scale, float) else \
        np.asarray(step_scale, dtype=np.float64).reshape(-1)
    steps = np.empty((runs, 2), dtype)
    steps[:, 0] = scale / m
    steps[:, 1] = scale / (short or m)
    gram, cross, yy = sufficient_statistics(features, targets)
    problem = Problem(features, targets, gram, cross, float(yy), float(loss_scale),
                      loss_cap(dtype, n, loss_scale))
    walk = Walk(m, full, full + (short > 0), log_after, float(blowup))
    logged = np.full((runs, log_after.size + 1, p + 1), np.nan, dtype=dtype)
    losses = np.full((runs, log_after.size + 1), np.nan)
    diverged_at = np.full(runs, -1, dtype=np.int64)
    last, final = np.empty(runs, dtype=np.int64), np.empty((runs, p + 1))
    # Each run's parameters and gradient, padded so that no two runs share a cache line.
    stride = -(-(p + 1) // 16) * 16 + 16
    work = np.zeros((runs, 2 * stride), dtype=dtype)

    # The runs in contiguous blocks, one per usable core. The kernel releases the GIL
    # (nogil), so the blocks run in parallel; one build serves one run and many (numba's
    # `parallel=True` would be a second, slower compilation).
    workers = min(runs, cores())
    bounds = [runs * k // workers for k in range(workers + 1)]

    def block(index: int) -> None:
        part = slice(bounds[index], bounds[index + 1])
        _runs(problem, walk, thetas0[part], orders[part], steps[part], logged[part],
              losses[part], diverged_at[part], last[part], final[part], work[part], stride)

    if workers == 1:  # the whole arrays: no views to make
        _runs(problem, walk, thetas0, orders, steps, logged, losses, diverged_at, last, final,
              work, stride)
    else:
        in_parallel(block, workers)
    return logged, losses, diverged_at, last, final


@njit_cached(nogil=True)
def _runs(problem, walk, thetas0, orders, steps, logged, losses, diverged_at, last, final,
          work, stride):
    """Each run of a block in turn: its rows of logged and losses (NaN after its last sound
    point), diverged_at, and its last sound point and the parameters there."""
    q = thetas0.shape[1]
    for run in range(thetas0.shape[0]):
        diverged_at[run] = _run(problem, walk, thetas0[run], orders[run], steps[run],
                                logged[run], losses[run], work[run, :q],
                                work[run, stride:stride + q])
        point = losses.shape[1] - 1  # the last sound point: the losses after it are NaN
        while point > 0 and np.isnan(losses[run, point]):
            point -= 1
        last[run] = point
        for c in range(q):
            final[run, c] = logged[run, point, c]


@njit_cached(nogil=True)
def _run(problem, walk, theta0, order, steps, logged, losses, theta, grad):
    """One run from theta0: the updates up to each logging point, its state and loss there;
    returns the first unsound update (0: the start; -1: none)."""
    q = theta.shape[0]
    for c in range(q):
        theta[c] = theta0[c]
        logged[0, c] = theta[c]
    loss = _loss(theta, problem)
    losses[0] = loss
    if not _sound(theta, loss, np.inf):
        return 0
    limit = min(walk.blowup * max(loss, 2.2250738585072014e-308), problem.cap)
    done = np.int64(0)  # updates behind the last sound state (int64: one build of _advance)
    for point in range(walk.log_after.shape[0]):
        target = walk.log_after[point]
        _advance(problem, walk, order, steps, theta, grad, done, target)
        loss = _loss(theta, problem)
        if _sound(theta, loss, limit):
            for c in range(q):
                logged[point + 1, c] = theta[c]
            losses[point + 1] = loss
            done = target
            continue
        # Replay this interval from the last sound state, checking every update; the same
        # code on the same bits gives the same updates.
        for c in range(q):
            theta[c] = logged[point, c]
        for update in range(done, target):
            _advance(problem, walk, order, steps, theta, grad, update, update + 1)
            if not _sound(theta, _loss(theta, problem), limit):
                return update + 1
        return target  # unreachable unless the replay differs from the first pass
    return -1


@njit_cached(nogil=True)
def _advance(problem, walk, order, steps, theta, grad, first, last):
    """The update rule: updates first..last-1 (0-based) in place on theta, in the dtype of
    the features: r = X_B w + b - y_B; w -= step * X_B^T r; b -= step * sum(r)."""
    features, targets = problem.features, problem.targets
    n, p = features.shape
    m, full, per_epoch = walk.m, walk.full, walk.per_epoch
    epoch = first // per_epoch
    batch = first - epoch * per_epoch
    for _ in range(first, last):
        start = batch * m
        if batch < full:
            stop, step = start + m, steps[0]
        else:
            stop, step = n, steps[1]
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
            for i in range(start, stop):
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
        batch += 1
        if batch == per_epoch:
            batch = 0
            epoch += 1


@njit_cached(nogil=True)
def _loss(theta, problem):
    """loss_scale * mean squared residual from the float64 sufficient statistics, >= 0."""
    gram, cross = problem.gram, problem.cross
    q = theta.shape[0]
    # rows[a] = sum over b of gram[a, b] * theta[b], each summed in the order b = 0, 1, ...;
    # gram is symmetric, so reading gram[b, a] instead lets the loop over a vectorize
    # without changing any rounding.
    rows = np.zeros(q)
    for b in range(q):
        tb = np.float64(theta[b])
        for a in range(q):
            rows[a] += gram[b, a] * tb
    total = problem.yy
    for a in range(q):
        total += np.float64(theta[a]) * (rows[a] - 2.0 * cross[a])
    loss = problem.loss_scale * total / problem.features.shape[0]
    if loss < 0.0:  # cancellation near the optimum; NaN stays NaN
        loss = 0.0
    return loss


@njit_cached(nogil=True)
def _sound(theta, loss, limit):
    """The divergence rule (engines/problem.py): finite parameters, a finite loss <= limit."""
    for a in range(theta.shape[0]):
        if not np.isfinite(theta[a]):
            return False
    return np.isfinite(loss) and loss <= limit


# --- the engine's entry to the kernel -------------------------------------------------
@functools.cache
def _load_kernel(dtype: np.dtype) -> None:
    """Call the kernel on a one-row problem, so that its compilation (once per checkout) or
    its cache load is never timed (bench/README.md has both costs)."""
    descend(np.zeros((1, 1), dtype), np.zeros(1, dtype), np.zeros((1, 2), dtype),
            np.zeros((1, 1, 1), np.int64), 1, False, 0.0, np.array([1]), 2.0, 0.5)


def _check_fit(features, targets, thetas, plan, schedule) -> None:
    """The kernel's arguments fit together: then its indices stay in bounds (make_schedule
    draws permutations of the rows, and the logging points of the plan's updates), so the
    kernel can skip its own checks on every element (descend_valid)."""
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


def compiled_runs(features, targets, thetas, plan, schedule, progress, lrs) -> Runs:
    """engine `compiled`: R runs on the CPU, run r at learning rate lrs[r]; every update
    exact and in order (the kernel), the whole-set losses from the float64 sufficient
    statistics, a divergence located exactly by replaying its interval."""
    x, y = np.ascontiguousarray(features), np.ascontiguousarray(targets)
    thetas = np.ascontiguousarray(thetas, dtype=x.dtype)
    _check_fit(x, y, thetas, plan, schedule)
    _load_kernel(x.dtype)  # compile or load from cache, untimed
    started = time.perf_counter()
    _, losses, diverged_at, _, final = descend_valid(
        x, y, thetas, schedule.order, min(plan.batch_size, plan.n_examples), plan.drop_last,
        2 * plan.gradient_scale * lrs, schedule.log_after, plan.blowup, plan.loss_scale)
    seconds = time.perf_counter() - started
    if progress:
        progress(len(schedule.batch_sizes) * len(thetas))
    if (diverged_at == 0).any():
        raise unsound_start()
    return Runs(schedule.log_updates, losses, final, diverged_at, seconds)
