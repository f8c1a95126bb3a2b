"""The closed-form least-squares solution every run is judged against (stage `solve`).

scikit-learn's LinearRegression (with intercept) on exactly the rows the variants train
on; above STREAMED_ROWS rows, the normal equations from the float64 sufficient statistics,
the data read a block at a time (a .npy file is never held whole). What it writes is the
same on every CPU (see `closed_form`).
"""
from __future__ import annotations

import functools
import itertools
import math

import numpy as np

from descent.data import STREAMED_ROWS, recipe_sources
from descent.statistics import (BLOCK_ROWS, combine, of_blocks, partial_statistics,
                                sufficient_statistics)

# Above data.STREAMED_ROWS rows the closed form comes from the normal equations (a set that
# large is streamed from its file, never held): scikit-learn holds about three copies of the
# data (10^7 x 10 in float64: 2.6 GB). tests/test_evaluate.py holds the two routes to one
# answer where both run.

# Rows read at a time when streamed: two blocks of statistics, summed in parallel (about
# 46 MB of float64 at 10 features).
STREAM_ROWS = 2 * BLOCK_ROWS


def closed_forms(config) -> tuple[dict[str, dict], dict[str, dict[str, tuple]]]:
    """Every recipe's closed_form (stage solve), its data checked first (every recipe's
    before any is solved); a set above data.STREAMED_ROWS rows read from its file a block
    at a time, twice, and never held whole. And, from the same first pass, each recipe's
    sufficient statistics in every training dtype (statistics.of_blocks), which the train
    stages read instead of computing them each."""
    solutions, statistics = {}, {}
    for name, source in recipe_sources(config).items():
        scale = config.recipes[name].loss.scale
        if source.held is not None:
            statistics[name] = of_blocks([source.held])
            solutions[name] = closed_form(*source.held, scale, statistics[name]["float64"])
        else:
            blocks = functools.partial(source.blocks, STREAM_ROWS)
            statistics[name] = of_blocks(blocks())
            solutions[name] = streamed_closed_form(blocks, scale, statistics[name]["float64"])
    return solutions, statistics


def closed_form(features: np.ndarray, targets: np.ndarray, loss_scale: float,
                statistics: tuple | None = None) -> dict:
    """Least squares with an intercept (scikit-learn), recorded so that every CPU writes
    the same bytes; its loss in the convention scale * mean(r^2).

    LAPACK's solution differs between CPUs in its last bits, so the weights and bias are
    rounded on the scale of the whole solution (the largest |parameter|: a bias of 1e-16
    beside weights of order 1 is 0) to the digits its conditioning supports. The loss is
    then computed from those rounded parameters in a fixed order (residuals column by
    column, an exactly rounded sum), so it is the same everywhere too. `statistics`: the
    data's float64 (gram, cross, yy), when they are known already.
    """
    n = len(targets)
    if n > STREAMED_ROWS:
        return streamed_closed_form(lambda: ((features[start:start + BLOCK_ROWS],
                                              targets[start:start + BLOCK_ROWS])
                                             for start in range(0, n, BLOCK_ROWS)), loss_scale,
                                    statistics)
    from sklearn.linear_model import LinearRegression

    model = LinearRegression(fit_intercept=True).fit(features, targets)
    theta, rank = np.r_[model.coef_, model.intercept_], int(model.rank_)
    gram = (statistics or sufficient_statistics(features, targets))[0]
    return _recorded(theta, rank, gram, n, lambda: [(features, targets)], loss_scale)


def streamed_closed_form(blocks, loss_scale: float, statistics: tuple | None = None) -> dict:
    """closed_form from the normal equations, the data passed over twice in blocks of rows
    (blocks() yields (features, targets) anew each time, every block but the last a
    multiple of BLOCK_ROWS rows long): a set of any size in the memory of one block. Once
    only when `statistics`, the data's float64 (gram, cross, yy), are known already."""
    if statistics is None:
        statistics = combine(np.concatenate([partial_statistics(features, targets)
                                             for features, targets in blocks()]))
    gram, cross, _ = statistics
    n = int(gram[-1, -1])  # the sum of the ones column: exact below 2^53 rows
    return _recorded(*normal_equations(gram, cross, n), gram, n, blocks, loss_scale)


def _recorded(theta: np.ndarray, rank: int, gram: np.ndarray, n: int, blocks,
              loss_scale: float) -> dict:
    """What closed_form records of a solution (see there); blocks() yields the data."""
    digits = solution_digits(gram)
    exponent = math.floor(math.log10(max(np.abs(theta).max(), 1e-300))) - (digits - 1)
    theta = np.array([round(float(value), -exponent) + 0.0 for value in theta])

    def squares():  # each block's squared residuals
        for features, targets in blocks():
            residuals = np.full(len(targets), theta[-1]) - targets
            for j in range(features.shape[1]):  # elementwise, in column order: no BLAS
                residuals += features[:, j] * theta[j]
            yield residuals * residuals

    # exactly rounded, however the rows are cut into blocks
    loss = loss_scale * math.fsum(itertools.chain.from_iterable(squares())) / n
    # rank: of the centred features. Below their number, many parameters share the minimum
    # loss and scikit-learn's (the minimum-norm one) is only one of them.
    return {"loss": loss, "weights": theta[:-1].tolist(), "bias": float(theta[-1]),
            "digits": digits, "rank": rank}


def normal_equations(gram: np.ndarray, cross: np.ndarray, n: int) -> tuple[np.ndarray, int]:
    """(theta, rank of the centred features) from G = X1^T X1 and c = X1^T y, as
    LinearRegression solves it: centred (the intercept apart), the minimum-norm weights
    where the features are rank-deficient."""
    p = len(cross) - 1
    means, mean_y = gram[:p, p] / n, cross[p] / n
    covariance = gram[:p, :p] / n - np.outer(means, means)
    covariance_y = cross[:p] / n - means * mean_y
    weights, _, rank, _ = np.linalg.lstsq(covariance, covariance_y, rcond=None)
    return np.r_[weights, mean_y - means @ weights], int(rank)


def solution_digits(gram: np.ndarray) -> int:
    """Significant digits (of the largest parameter) that the least-squares solution keeps
    on any CPU: a backward-stable solver's relative error is about cond(X1^T X1) * eps
    (the square of X1's condition number, as the residual is not zero); three digits of
    margin keep a rounding boundary between two CPUs' answers unlikely (~1e-4 per value).
    Between 3 (nearly rank-deficient data) and 12 (float64's reliable digits)."""
    eigenvalues = np.linalg.eigvalsh(gram)
    eps = np.finfo(np.float64).eps
    condition = eigenvalues[-1] / max(eigenvalues[0], eigenvalues[-1] * eps)
    return int(min(12, max(3, math.floor(-math.log10(condition * eps)) - 3)))
