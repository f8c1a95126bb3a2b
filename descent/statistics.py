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

from descent import paths
from descent.io import ROOT, UserError, read_arrays
from descent.jit import njit_cached
from descent.parallel import in_parallel

# Rows per block: blocks run in parallel threads, and their partial sums are added in
# block order, so the result is the same whatever the number of cores.
BLOCK_ROWS = 1 << 18
# The dtypes a train stage may hold its data in (params.yaml `dtype`): stage solve records
# each recipe's statistics in both, so that changing dtype does not rerun it.
TRAINING_DTYPES = ("float32", "float64")
PARTS = ("gram", "cross", "yy")


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


def of_blocks(blocks) -> dict[str, tuple]:
    """A data set's statistics as each training dtype holds it, in one pass over `blocks`
    ((features, targets) pairs, every one but the last a multiple of BLOCK_ROWS rows long):
    each block cast as a train stage casts the whole set, so the same bits as
    sufficient_statistics of that stage's copy."""
    partial: dict[str, list] = {dtype: [] for dtype in TRAINING_DTYPES}
    for features, targets in blocks:
        for dtype in TRAINING_DTYPES:
            with np.errstate(over="ignore"):  # beyond float32: train refuses the data itself
                copy = (np.ascontiguousarray(features, dtype),
                        np.ascontiguousarray(targets, dtype))
            partial[dtype].append(partial_statistics(*copy))
    return {dtype: combine(np.concatenate(parts)) for dtype, parts in partial.items()}


def as_arrays(statistics: dict[str, dict[str, tuple]]) -> dict[str, np.ndarray]:
    """{recipe: {dtype: (gram, cross, yy)}} as the arrays of data/statistics.npz."""
    return {f"{name}/{dtype}/{part}": np.asarray(value)
            for name, by_dtype in statistics.items() for dtype, figures in by_dtype.items()
            for part, value in zip(PARTS, figures)}


def recorded(names, dtype: str) -> dict[str, tuple]:
    """What stage solve recorded: each recipe's (gram, cross, yy) in the training dtype, so
    that every variant and seed reuses one computation."""
    path = ROOT / paths.STATISTICS
    try:
        arrays = read_arrays(path, "solve")
    except FileNotFoundError:
        raise UserError(f"{paths.STATISTICS} not found; run `dvc repro solve` first") from None
    try:
        return {name: tuple(arrays[f"{name}/{dtype}/{part}"] for part in PARTS[:2])
                + (float(arrays[f"{name}/{dtype}/yy"]),) for name in names}
    except KeyError:
        raise UserError(f"{paths.STATISTICS} has no statistics for every recipe; run `dvc "
                        "repro solve`") from None


def check_matches(figures: tuple, features: np.ndarray, targets: np.ndarray, name: str) -> None:
    """Refuse recorded statistics that are not of these data (a file older than the data,
    say, when a stage runs outside dvc): the shape and row count exactly, and each column's
    sum to 1e-7 of sqrt(N sum of its squares), at least its absolute sum: past the rounding
    of any order of summing up to 10^9 rows (N eps / 2 of the absolute sum). A guard, not a
    proof: DVC's dependency makes them match."""
    gram, cross, yy = figures
    n, p = features.shape
    if gram.shape != (p + 1, p + 1) or gram[p, p] != n:
        raise _stale(name)
    sums = _column_sums(features, targets)
    scale = np.sqrt(n * np.r_[np.diag(gram)[:p], yy])  # no copy of the data, as abs() makes
    if not (np.abs(np.r_[gram[p, :p], cross[p]] - sums) <= 1e-7 * scale).all():
        raise _stale(name)


def _stale(name: str) -> UserError:
    return UserError(f"{paths.STATISTICS} does not match recipe {name}'s data (made before the "
                     "data changed?); rebuild it with `dvc repro solve`")


@njit_cached(nogil=True)
def _column_sums(features, targets):
    """Each column's float64 sum, then the targets': one pass at memory speed (numpy's
    casting sum over rows took 7x a pass)."""
    n, p = features.shape
    sums = np.zeros(p + 1)
    for i in range(n):
        for a in range(p):
            sums[a] += features[i, a]
        sums[p] += targets[i]
    return sums
