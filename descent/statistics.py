"""Float64 sufficient statistics of a data set, the same bits on every x86-64 CPU.

The whole-set loss of a linear model is a quadratic in its parameters, so every engine
logs losses from G = X1^T X1, c = X1^T y and yy = y^T y (X1 = [X, 1]). A BLAS product
would sum each entry in an order that depends on the CPU's kernel (OpenBLAS picks one per
CPU: `OPENBLAS_CORETYPE=Prescott` changes the last bits here), and with it every logged
loss and the committed `dvc.lock`. This module sums each entry in a fixed order instead:
rows in fixed blocks, each block row by row, the blocks' partial sums added in block
order. Only IEEE `*` and `+` on float64 are used, which round alike everywhere, and numba
without fastmath neither reorders nor fuses them, so the result does not depend on the
SIMD width, the thread count or the BLAS.
"""
from __future__ import annotations

import numpy as np

from descent.jit import njit_cached
from descent.parallel import in_parallel

# Rows per block: blocks run in parallel threads, and their partial sums are added in
# block order, so the result is the same whatever the number of cores.
BLOCK_ROWS = 1 << 18


@njit_cached(nogil=True)
def _accumulate(features, targets, start, stop, total):
    """total += Z^T Z over rows start..stop-1 of Z = [X, 1, y], row by row.

    The inner loop updates a whole row of `total` with one z[a]: each entry keeps its own
    sum (vectorizable without reassociation), and total[a, b], total[b, a] add the same
    products in the same order, so the matrix is exactly symmetric.
    """
    p = features.shape[1]
    q = p + 2
    z = np.empty(q)
    z[p] = 1.0
    for i in range(start, stop):
        for a in range(p):
            z[a] = features[i, a]
        z[p + 1] = targets[i]
        for a in range(q):
            za = z[a]
            for b in range(q):
                total[a, b] += za * z[b]


def sufficient_statistics(features, targets):
    """G = X1^T X1, c = X1^T y, yy = y^T y in float64 (X1 = [X, 1]), in a fixed order:
    (G (p+1, p+1) C-contiguous and exactly symmetric, c (p+1,), yy float)."""
    return combine(partial_statistics(features, targets))


def partial_statistics(features, targets) -> np.ndarray:
    """Z^T Z (Z = [X, 1, y]) of each block of BLOCK_ROWS rows: (blocks, p+2, p+2). A set
    read in parts whose lengths are multiples of BLOCK_ROWS has the same blocks, so
    combine(concatenated parts) is the whole set's statistics, bit for bit."""
    n, p = features.shape
    blocks = max(1, -(-n // BLOCK_ROWS))
    partial = np.zeros((blocks, p + 2, p + 2))

    def block(k):
        _accumulate(features, targets, k * BLOCK_ROWS, min(n, (k + 1) * BLOCK_ROWS),
                    partial[k])

    in_parallel(block, blocks)
    return partial


def combine(partial: np.ndarray):
    """(G, c, yy) from the blocks' Z^T Z, added in block order (whatever thread finished
    first)."""
    total = partial[0]
    for k in range(1, len(partial)):
        total = total + partial[k]
    p = len(total) - 2
    return (np.ascontiguousarray(total[:p + 1, :p + 1]), total[:p + 1, p + 1].copy(),
            float(total[p + 1, p + 1]))
