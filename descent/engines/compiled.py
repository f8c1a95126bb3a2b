"""A compiled CPU descent kernel: R independent runs of mini-batch gradient descent on a
linear model, each an exact sequential chain of updates (numba), the runs in parallel threads.

`descend` checks every argument; `descend_valid` is the same without those checks, for the
engine, whose arguments are valid by construction. tests/reference_descent.py holds the
same computation written as plainly as possible (python loops, numpy).
"""
from __future__ import annotations

import functools
import time

import numpy as np

from descent.engines.problem import (Runs, epoch_batches, loss_cap, total_updates,
                                     unsound_start)
from descent.jit import njit_cached  # numba's cache, shared by copies of the tree
from descent.parallel import cores, in_parallel
from descent.statistics import sufficient_statistics

__all__ = ["compiled_runs", "descend", "descend_valid", "run_kernel"]



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


def descend_valid(features, targets, thetas0, orders, batch_size, drop_last, step_scale,
                  log_after, blowup, loss_scale):
    """`descend` without its argument checks, for arguments that are valid by construction,
    as the engine's are (its schedules' orders are permutations of the rows, its logging
    points increase within the run): C-contiguous arrays of the shapes and dtypes that
    `descend` documents, int64 log_after, 1 <= batch_size <= N.

    The checks cost ~20 µs a call, a quarter of an airfoil SGD epoch. The compiled code
    does not check its indices: arguments that are not valid read out of bounds here.

    Returns `descend`'s (logged, losses, diverged_at), then each run's last sound logging
    point, last: (R,) int64 (its last non-NaN loss), and its parameters there, final:
    (R, p+1) float64.
    """
    n, p = features.shape
    runs, dtype, m = thetas0.shape[0], features.dtype, batch_size
    full, short = epoch_batches(n, m, drop_last)
    per_epoch = full + (short > 0)
    # The step of a full and of the short batch, each divided in float64 and rounded once
    # to the working dtype (one scale for all runs, or one per run; a wrong count fails to
    # broadcast).
    scale = step_scale if isinstance(step_scale, float) else \
        np.asarray(step_scale, dtype=np.float64).reshape(-1)
    steps = np.empty((runs, 2), dtype)
    steps[:, 0] = scale / m
    steps[:, 1] = scale / (short or m)
    gram, cross, yy = sufficient_statistics(features, targets)
    logged = np.full((runs, log_after.size + 1, p + 1), np.nan, dtype=dtype)
    losses = np.full((runs, log_after.size + 1), np.nan)
    diverged_at = np.full(runs, -1, dtype=np.int64)
    # Per-run parameters and gradient, padded so that no two runs share a cache line.
    stride = -(-(p + 1) // 16) * 16 + 16
    work = np.zeros((runs, 2 * stride), dtype=dtype)
    last, final = np.empty(runs, dtype=np.int64), np.empty((runs, p + 1))
    _descend_in_threads(
        features, targets, thetas0, orders, m, full, per_epoch, steps, log_after,
        float(blowup), float(loss_scale), gram, cross, float(yy), logged, losses,
        diverged_at, work, stride, loss_cap(dtype, n, loss_scale), last, final)
    return logged, losses, diverged_at, last, final


@njit_cached(nogil=True)
def _loss(theta, gram, cross, yy, n, loss_scale):
    """loss_scale * mean squared residual from the float64 sufficient statistics, >= 0."""
    q = theta.shape[0]
    # rows[a] = sum over b of gram[a, b] * theta[b], each summed in the order b = 0, 1, ...;
    # gram is symmetric, so reading gram[b, a] instead lets the loop over a vectorize
    # without changing any rounding.
    rows = np.zeros(q)
    for b in range(q):
        tb = np.float64(theta[b])
        for a in range(q):
            rows[a] += gram[b, a] * tb
    total = yy
    for a in range(q):
        total += np.float64(theta[a]) * (rows[a] - 2.0 * cross[a])
    loss = loss_scale * total / n
    if loss < 0.0:  # cancellation near the optimum; NaN stays NaN
        loss = 0.0
    return loss


@njit_cached(nogil=True)
def _sound(theta, loss, limit):
    for a in range(theta.shape[0]):
        if not np.isfinite(theta[a]):
            return False
    return np.isfinite(loss) and loss <= limit


@njit_cached(nogil=True)
def _advance(features, targets, order, theta, grad, first, last, m, full, per_epoch, steps):
    """Updates first..last-1 (0-based) in place on theta, in the dtype of features."""
    n, p = features.shape
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
            batch += 1
            if batch == per_epoch:
                batch = 0
                epoch += 1
            continue
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
def _one_run(features, targets, theta0, order, m, full, per_epoch, steps, log_after, blowup,
             loss_scale, gram, cross, yy, logged, losses, theta, grad, cap):
    """One run; fills its sound rows of logged and losses; returns its diverged_at."""
    n = features.shape[0]
    q = theta.shape[0]
    for c in range(q):
        theta[c] = theta0[c]
        logged[0, c] = theta[c]
    loss = _loss(theta, gram, cross, yy, n, loss_scale)
    losses[0] = loss
    if not _sound(theta, loss, np.inf):
        return 0
    limit = min(blowup * max(loss, 2.2250738585072014e-308), cap)
    done = np.int64(0)  # updates behind the last sound state (int64: one build of _advance)
    for point in range(log_after.shape[0]):
        target = log_after[point]
        _advance(features, targets, order, theta, grad, done, target, m, full, per_epoch,
                 steps)
        loss = _loss(theta, gram, cross, yy, n, loss_scale)
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
            _advance(features, targets, order, theta, grad, update, update + 1, m, full,
                     per_epoch, steps)
            if not _sound(theta, _loss(theta, gram, cross, yy, n, loss_scale), limit):
                return update + 1
        return target  # unreachable unless the replay differs from the first pass
    return -1


@njit_cached(nogil=True)
def _descend_runs(features, targets, thetas0, orders, m, full, per_epoch, steps, log_after,
                  blowup, loss_scale, gram, cross, yy, logged, losses, diverged_at, work,
                  stride, cap, last, final):
    q = thetas0.shape[1]
    for run in range(thetas0.shape[0]):
        diverged_at[run] = _one_run(
            features, targets, thetas0[run], orders[run], m, full, per_epoch, steps[run],
            log_after, blowup, loss_scale, gram, cross, yy, logged[run], losses[run],
            work[run, :q], work[run, stride:stride + q], cap)
        point = losses.shape[1] - 1  # the last sound point: the losses after it are NaN
        while point > 0 and np.isnan(losses[run, point]):
            point -= 1
        last[run] = point
        for c in range(q):
            final[run, c] = logged[run, point, c]


def _descend_in_threads(features, targets, thetas0, orders, m, full, per_epoch, steps,
                        log_after, blowup, loss_scale, gram, cross, yy, logged, losses,
                        diverged_at, work, stride, cap, last, final):
    """The runs in contiguous blocks, one block per usable core. The kernel releases the GIL
    (nogil), so the blocks run in parallel; one build serves one run and many (numba's
    `parallel=True` would be a second, slower compilation)."""
    def run(thetas0, orders, steps, logged, losses, diverged_at, work, last, final):
        _descend_runs(features, targets, thetas0, orders, m, full, per_epoch, steps,
                      log_after, blowup, loss_scale, gram, cross, yy, logged, losses,
                      diverged_at, work, stride, cap, last, final)  # a block of runs

    runs = thetas0.shape[0]
    workers = min(runs, cores())
    if workers == 1:  # one block: the whole arrays, no views to make (~4 µs a call)
        return run(thetas0, orders, steps, logged, losses, diverged_at, work, last, final)
    bounds = [runs * k // workers for k in range(workers + 1)]

    def block(index):
        part = slice(bounds[index], bounds[index + 1])
        run(thetas0[part], orders[part], steps[part], logged[part], losses[part],
            diverged_at[part], work[part], last[part], final[part])

    in_parallel(block, workers)


# --- the engine's entry to the kernel -------------------------------------------------
def compiled_runs(features, targets, thetas, plan, schedule, progress, lrs) -> Runs:
    _, losses, _, final, diverged_at, seconds = run_kernel(features, targets, thetas, plan,
                                                           schedule, progress, lrs)
    return Runs(schedule.log_updates, losses, final, diverged_at, seconds)


@functools.cache
def _load_kernel(dtype: np.dtype) -> None:
    """Call the kernel on a one-row problem, so that its compilation (~2 s, once per
    checkout) or cache load (~0.25 s) is never timed."""
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


def run_kernel(features, targets, thetas, plan, schedule, progress, lrs=None):
    """The numba kernel (`descend_valid`): exact sequential updates, R runs, on the CPU,
    run r at learning rate lrs[r] (default: plan.lr).

    Its whole-set losses come from float64 sufficient statistics (X'X, X'y, y'y), and it
    applies the same divergence rule as the other engines, checked at logging points and
    located exactly by replaying the interval. Returns (logged, losses, last sound point,
    the parameters there in float64, diverged_at, seconds); losses after a run's last sound
    point are NaN.
    """
    x, y = np.ascontiguousarray(features), np.ascontiguousarray(targets)
    thetas = np.ascontiguousarray(thetas, dtype=x.dtype)
    _check_fit(x, y, thetas, plan, schedule)
    _load_kernel(x.dtype)  # compile or load from cache, untimed
    lrs = np.full(len(thetas), plan.lr) if lrs is None else lrs
    started = time.perf_counter()
    logged, losses, diverged_at, last, final = descend_valid(
        x, y, thetas, schedule.order, min(plan.batch_size, plan.n_examples), plan.drop_last,
        2 * plan.gradient_scale * lrs, schedule.log_after, plan.blowup, plan.loss_scale)
    seconds = time.perf_counter() - started
    if progress:
        progress(len(schedule.batch_sizes) * len(thetas))
    if (diverged_at == 0).any():
        raise unsound_start()
    return logged, losses, last, final, diverged_at, seconds
