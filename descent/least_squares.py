"""The closed-form least-squares solution every run is judged against (stage `solve`).

scikit-learn's LinearRegression (with intercept) on exactly the rows the variants train
on; above STREAMED_ROWS rows, the normal equations from the float64 sufficient statistics
(one pass over the data, no copy of it). What it writes is the same on every CPU (see
`closed_form`).
"""
from __future__ import annotations

import math

import numpy as np

from descent.statistics import sufficient_statistics

# Rows above which the closed form comes from the normal equations: scikit-learn holds about
# three copies of the data (10^7 x 10 in float64: 2.6 GB). A fixed count, not this machine's
# memory, so every machine solves a set the same way; tests/test_evaluate.py holds the two
# routes to one answer where both run.
STREAMED_ROWS = 1_000_000


def closed_form(features: np.ndarray, targets: np.ndarray, loss_scale: float) -> dict:
    """Least squares with an intercept (scikit-learn), recorded so that every CPU writes
    the same bytes; its loss in the convention scale * mean(r^2).

    LAPACK's solution differs between CPUs in its last bits, so the weights and bias are
    rounded on the scale of the whole solution (the largest |parameter|: a bias of 1e-16
    beside weights of order 1 is 0) to the digits its conditioning supports. The loss is
    then computed from those rounded parameters in a fixed order (residuals column by
    column, an exactly rounded sum), so it is the same everywhere too.
    """
    gram, cross, _ = sufficient_statistics(features, targets)
    if len(targets) > STREAMED_ROWS:
        theta, rank = normal_equations(gram, cross, len(targets))
    else:
        from sklearn.linear_model import LinearRegression

        model = LinearRegression(fit_intercept=True).fit(features, targets)
        theta, rank = np.r_[model.coef_, model.intercept_], int(model.rank_)
    digits = solution_digits(gram)
    exponent = math.floor(math.log10(max(np.abs(theta).max(), 1e-300))) - (digits - 1)
    theta = np.array([round(float(value), -exponent) + 0.0 for value in theta])
    residuals = np.full(len(targets), theta[-1]) - targets
    for j in range(features.shape[1]):  # elementwise, in column order: no BLAS
        residuals += features[:, j] * theta[j]
    loss = loss_scale * math.fsum(residuals * residuals) / len(targets)
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
