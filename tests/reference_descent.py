"""The compiled kernel's computation written as plainly as possible (python loops, numpy,
every state kept), for the tests to hold `descent.engines.compiled.descend` against."""
from __future__ import annotations

import math

import numpy as np

from descent.engines.problem import loss_cap

TINY = float(np.finfo(np.float64).tiny)


def reference_descend(features, targets, thetas0, orders, batch_size, drop_last, step_scale,
                       log_after, blowup, loss_scale):
    """`descend` written plainly: every update in python, every state kept, numpy maths."""
    features, targets, thetas0 = np.asarray(features), np.asarray(targets), np.asarray(thetas0)
    dtype = features.dtype
    n, p = features.shape
    runs, epochs = thetas0.shape[0], np.asarray(orders).shape[1]
    log_after = [int(v) for v in log_after]
    scales = np.broadcast_to(np.asarray(step_scale, dtype=np.float64), (runs,))
    x1 = np.c_[features.astype(np.float64), np.ones(n)]
    y64 = targets.astype(np.float64)
    gram, cross, yy = x1.T @ x1, x1.T @ y64, float(y64 @ y64)

    def loss_of(theta):
        th = theta.astype(np.float64)
        with np.errstate(all="ignore"):
            value = loss_scale * float(th @ gram @ th - 2 * th @ cross + yy) / n
        return max(value, 0.0) if not math.isnan(value) else value

    logged = np.full((runs, len(log_after) + 1, p + 1), np.nan, dtype=dtype)
    losses = np.full((runs, len(log_after) + 1), np.nan)
    diverged_at = np.full(runs, -1, dtype=np.int64)
    for run in range(runs):
        batches = []  # the example indices of every update, in order
        for epoch in range(epochs):
            order = np.asarray(orders[run][epoch])
            for start in range(0, n, batch_size):
                batch = order[start:start + batch_size]
                if len(batch) == batch_size or not drop_last:
                    batches.append(batch)
        theta = thetas0[run].copy()
        states = [theta.copy()]  # states[u]: the parameters after u updates
        for batch in batches[:log_after[-1] if log_after else 0]:
            x, y = features[batch], targets[batch]
            step = dtype.type(scales[run] / len(batch))
            with np.errstate(all="ignore"):
                residuals = x @ theta[:p] + theta[p] - y
                theta = np.r_[theta[:p] - step * (x.T @ residuals),
                              theta[p] - step * residuals.sum()].astype(dtype)
            states.append(theta.copy())

        def sound(u, limit):
            loss = loss_of(states[u])
            return bool(np.isfinite(states[u]).all()) and math.isfinite(loss) and loss <= limit

        logged[run, 0], losses[run, 0] = states[0], loss_of(states[0])
        if not sound(0, math.inf):
            diverged_at[run] = 0
            continue
        limit = min(blowup * max(losses[run, 0], TINY),
                    loss_cap(features.dtype, len(targets), loss_scale))
        previous = 0
        for point, update in enumerate(log_after, start=1):
            if not sound(update, limit):
                diverged_at[run] = next(u for u in range(previous + 1, update + 1)
                                        if not sound(u, limit))
                break
            logged[run, point], losses[run, point] = states[update], loss_of(states[update])
            previous = update
    return logged, losses, diverged_at
