"""A prototype, not the engine: full-batch GD for G runs in lockstep (bench/README.md, "GD
per epoch against one pass over the data").

    python -m bench.lockstep            (one core, 10^7 x 10 float32, about a minute)

Rows read in order are the same for every run, so G runs can take each row together. The
state is held as (q, G), so that the loop over runs is contiguous and vectorizes. Each run
does its own operations in the kernel's order, so it would get the kernel's bits.
Prints ms per run-epoch against one pass over the data (`x.sum()`).
"""
from __future__ import annotations

import os
import time

import numba
import numpy as np


@numba.njit(nogil=True)
def epoch(x, y, theta, step, grad):
    """One GD epoch of every run: theta (q, G) and grad (q, G), float32."""
    n, p = x.shape
    runs = theta.shape[1]
    dots = np.empty(runs, x.dtype)
    grad[:] = 0
    for k in range(n):
        for g in range(runs):
            dots[g] = x[k, 0] * theta[0, g]
        for c in range(1, p):
            for g in range(runs):
                dots[g] += x[k, c] * theta[c, g]
        for g in range(runs):
            dots[g] = dots[g] + theta[p, g] - y[k]
        for c in range(p):
            for g in range(runs):
                grad[c, g] += dots[g] * x[k, c]
        for g in range(runs):
            grad[p, g] += dots[g]
    for c in range(p + 1):
        for g in range(runs):
            theta[c, g] -= step * grad[c, g]


def main() -> None:
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    rng = np.random.default_rng(0)
    x = rng.normal(size=(10_000_000, 10)).astype(np.float32)
    y = (x.sum(axis=1) + rng.normal(size=len(x))).astype(np.float32)
    one_pass = min(_seconds(lambda: x.reshape(-1).sum()) for _ in range(5))
    for runs in (1, 4, 8, 16):
        theta, grad = np.zeros((11, runs), np.float32), np.zeros((11, runs), np.float32)
        epoch(x[:100], y[:100], theta, np.float32(1e-8), grad)  # compile, untimed
        best = min(_seconds(lambda: epoch(x, y, theta, np.float32(1e-8), grad))
                   for _ in range(3))
        print(f"{runs:3d} runs: {best / runs * 1e3:6.1f} ms per run-epoch, "
              f"{best / runs / one_pass:.2f}x one pass ({one_pass * 1e3:.1f} ms)")


def _seconds(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
