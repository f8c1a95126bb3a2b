"""What the theory of least squares predicts for gradient descent on a data set, exactly, in
float64, from the data alone.

Notation. x~ = (x, 1), theta = (w, b), e = theta - theta* (theta* the least-squares
solution), H = X~^T X~ / N, rho_i = y_i - x~_i^T theta* (the residuals at the optimum). The
engine's update on a batch B of size m is

    theta <- theta - alpha (1/m) sum_{i in B} x~_i (x~_i^T theta - y_i),   alpha = 2 g lr,

g the scale of the loss whose gradient drives it (1/2 for half_squared, 1 for mse). Every
quantity here is in alpha, the step of the half-squared gradient; `lr_of` converts back.
The recorded loss is s mean(r^2) = L* + s e^T H e (s its scale), as the cross term vanishes
at the optimum (X~^T rho = 0).

- GD is stable iff alpha < 2 / lambda_max(H).
- Mini-batch SGD, each batch's examples drawn independently (with replacement): the second
  moment M = E[e e^T] evolves by the linear map
      T(M) = (I - alpha H) M (I - alpha H) + (alpha^2 / m) [S(M) - H M H],
      S(M) = (1/N) sum_i x~_i (x~_i^T M x~_i) x~_i^T,
  plus terms in E[e] and the noise at the optimum (`expected_losses`); it is mean-square
  stable iff the spectral radius of T is below 1, which defines alpha_crit(m). Drawing a
  batch without replacement from the N rows replaces 1/m by (N - m) / (m (N - 1)), which is
  0 for m = N: GD's 2 / lambda_max (the reshuffled epochs of the engine are not independent
  batches, so for them this is the one-batch approximation).
- The gradient noise scales of McCandlish et al. (2018), at a point theta: per-example
  gradients g_i = x~_i (x~_i^T theta - y_i), G their mean, Sigma their covariance;
  B_simple = tr(Sigma) / |G|^2, B_noise = tr(H Sigma) / (G^T H G); the best step of a batch
  of m is eps_max / (1 + B_noise / m), eps_max = |G|^2 / (G^T H G), and the expected
  decrease of the half-squared loss in one step of eps is, exactly for a quadratic,
      eps |G|^2 - (eps^2 / 2) (G^T H G + tr(H Sigma) / m).
- Ma, Bassily & Belkin (2018): beta = max_i |x~_i|^2; batch 1 is safe for alpha of order
  1 / beta, and the critical batch m* = beta / lambda_1 + 1 (lambda_1 = lambda_max(H)).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import numpy as np


class LeastSquares:
    """What every figure here reads of a least-squares problem; `Quadratic` computes it from
    the rows held in memory, `Streamed` from passes over them a block at a time."""
    n: int
    hessian: np.ndarray    # (q, q) H = X~^T X~ / N

    @functools.cached_property
    def lambda_max(self) -> float:
        return float(np.linalg.eigvalsh(self.hessian)[-1])

    def best_loss(self, loss_scale: float) -> float:
        """The closed-form loss L* = s mean(rho^2)."""
        return loss_scale * self.residual_squares / self.n

    def loss(self, theta: np.ndarray, loss_scale: float) -> float:
        """L(theta) = L* + s e^T H e (the cross term vanishes at the optimum)."""
        error = np.asarray(theta, np.float64) - self.optimum
        return self.best_loss(loss_scale) + loss_scale * float(error @ self.hessian @ error)


@dataclass(frozen=True)
class Quadratic(LeastSquares):
    """A least-squares problem held in memory."""
    design: np.ndarray     # (N, q) float64 rows x~_i = (x_i, 1)
    targets: np.ndarray    # (N,) float64
    hessian: np.ndarray

    @property
    def n(self) -> int:
        return len(self.targets)

    @functools.cached_property
    def optimum(self) -> np.ndarray:
        """theta* (q,): solved only when asked (the stability figures never need it)."""
        return np.linalg.lstsq(self.design, self.targets, rcond=None)[0]

    @functools.cached_property
    def residuals(self) -> np.ndarray:
        """rho_i (N,) at the optimum."""
        return self.targets - self.design @ self.optimum

    @functools.cached_property
    def residual_squares(self) -> float:
        return float(self.residuals @ self.residuals)

    @functools.cached_property
    def fourth(self) -> np.ndarray:
        """S as a (q^2, q^2) matrix on vec(M): (1/N) sum_i kron(x~ x~^T, x~ x~^T), built once
        for all the critical steps asked of this problem."""
        return _outer_products(self.design) / self.n

    @functools.cached_property
    def beta(self) -> float:
        """max_i |x~_i|^2 (Ma, Bassily & Belkin)."""
        return _largest_row(self.design)

    @functools.cached_property
    def noise_moments(self) -> tuple[np.ndarray, np.ndarray]:
        """(Sigma_rho (q, q), C (q^2, q)) of `expected_losses`: the noise at the optimum
        and its cross term's map."""
        sigma, cross_map = _noise_sums(self.design, self.residuals)
        return sigma / self.n, cross_map / self.n


@dataclass(frozen=True, eq=False)
class Streamed(LeastSquares):
    """A least-squares problem too large to hold (data.STREAMED_ROWS), from passes over its
    rows a block at a time: H, X~^T y, beta and S in one pass when made, the moments at the
    optimum in a second when first asked. theta* comes from the normal equations in
    float64 (as the solve stage's), not from a QR of the rows."""
    blocks: Callable       # () -> (design block (k, q), targets block (k,)) blocks, anew
    n: int
    hessian: np.ndarray
    cross: np.ndarray      # (q,) X~^T y / N
    beta: float
    fourth: np.ndarray

    @classmethod
    def of(cls, blocks: Callable) -> "Streamed":
        n, gram, cross, beta, fourth = 0, 0.0, 0.0, 0.0, 0.0
        for design, targets in blocks():
            n += len(targets)
            gram, cross = gram + design.T @ design, cross + design.T @ targets
            beta = max(beta, _largest_row(design))
            fourth = fourth + _outer_products(design)
        return cls(blocks, n, gram / n, cross / n, beta, fourth / n)

    @functools.cached_property
    def optimum(self) -> np.ndarray:
        return np.linalg.lstsq(self.hessian, self.cross, rcond=None)[0]

    @functools.cached_property
    def _at_optimum(self) -> tuple[float, np.ndarray, np.ndarray]:
        squares, sigma, cross_map = 0.0, 0.0, 0.0
        for x, targets in self.blocks():
            rho = targets - x @ self.optimum
            squares += float(rho @ rho)
            block_sigma, block_map = _noise_sums(x, rho)
            sigma, cross_map = sigma + block_sigma, cross_map + block_map
        return squares, sigma / self.n, cross_map / self.n

    @property
    def residual_squares(self) -> float:
        return self._at_optimum[0]

    @property
    def noise_moments(self) -> tuple[np.ndarray, np.ndarray]:
        return self._at_optimum[1:]


# Rows at a time in sums over the N rows of per-row q^2 vectors: their N x q^2 matrix
# would take 121 x 8 bytes a row at 10 features (10 GB at 10^7 rows).
BLOCK_ROWS = 1 << 15


def _largest_row(design: np.ndarray) -> float:
    return float(np.max(np.einsum("ij,ij->i", design, design)))


def _noise_sums(x: np.ndarray, rho: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """sum_i rho_i^2 x~_i x~_i^T and sum_i vec(x~_i x~_i^T) (rho_i x~_i)^T over these rows."""
    return (x * rho[:, None] ** 2).T @ x, _outer_products(x, x * rho[:, None])


def _outer_products(design: np.ndarray, right: np.ndarray | None = None) -> np.ndarray:
    """sum over rows i of vec(x~_i x~_i^T) right_i^T (right: (N, k); default: the
    vec(x~_i x~_i^T) themselves), a block of rows at a time (one block, one product, when
    N <= BLOCK_ROWS)."""
    q = design.shape[1]
    total = None
    for start in range(0, len(design), BLOCK_ROWS):
        block = design[start:start + BLOCK_ROWS]
        rows = np.einsum("ij,ik->ijk", block, block).reshape(len(block), q * q)
        part = rows.T @ (rows if right is None else right[start:start + BLOCK_ROWS])
        total = part if total is None else total + part
    return total


def quadratic(features: np.ndarray, targets: np.ndarray) -> Quadratic:
    return from_design(np.c_[np.asarray(features, np.float64), np.ones(len(targets))],
                       targets)


def from_design(design: np.ndarray, targets: np.ndarray) -> Quadratic:
    """The problem of a float64 design matrix [X, 1] (descent.data loads one directly)."""
    targets = np.asarray(targets, np.float64)
    return Quadratic(design, targets, design.T @ design / len(targets))


# Rows a block when a Streamed problem reads its file.
STREAM_ROWS = 1 << 18


def problem_of(source) -> LeastSquares:
    """The problem of a recipe's data (data.Source, read with `ones`: design matrices): a
    Quadratic when the set is held, else Streamed from its file."""
    if source.held is not None:
        return from_design(*source.held)
    return Streamed.of(functools.partial(source.blocks, STREAM_ROWS))


def lr_of(alpha: float, gradient_scale: float) -> float:
    """The learning rate of a recipe whose gradient loss has this scale, for step alpha."""
    return alpha / (2 * gradient_scale)


def gd_limit(problem: LeastSquares) -> float:
    """The largest stable step of full-batch GD: 2 / lambda_max(H)."""
    return 2 / problem.lambda_max


def critical_batch_mbb(problem: LeastSquares) -> float:
    """Ma, Bassily & Belkin's m* = beta / lambda_1 + 1 (lambda_1 = lambda_max(H))."""
    return problem.beta / problem.lambda_max + 1


def batch_noise_factor(m: int, n: int, replacement: bool) -> float:
    """Var of a batch mean over that of one example: 1/m with replacement, (N-m)/(m(N-1))
    without."""
    return 1 / m if replacement else (n - m) / (m * (n - 1))


def second_moment_map(problem: LeastSquares, alpha: float, m: int, replacement: bool = True
                      ) -> np.ndarray:
    """T as a (q^2, q^2) matrix on vec(M)."""
    q = problem.hessian.shape[0]
    step = np.eye(q) - alpha * problem.hessian
    hh = np.kron(problem.hessian, problem.hessian)
    return np.kron(step, step) + alpha ** 2 * batch_noise_factor(m, problem.n, replacement) \
        * (problem.fourth - hh)


def symmetric_radius(matrix: np.ndarray) -> float:
    """The spectral radius of a map on vec(M) that commutes with transposition, on the
    symmetric matrices (where second moments live): it is P T P's, P the projector onto
    them (P T P is 0 on the antisymmetric ones)."""
    q2 = matrix.shape[0]
    q = int(round(q2 ** 0.5))
    swap = np.eye(q2).reshape(q, q, q, q).transpose(1, 0, 2, 3).reshape(q2, q2)
    project = (np.eye(q2) + swap) / 2
    return float(np.max(np.abs(np.linalg.eigvals(project @ matrix @ project))))


def critical_step(problem: LeastSquares, m: int, replacement: bool = True,
                  tolerance: float = 1e-10) -> float:
    """alpha_crit(m): where the spectral radius of T reaches 1 (bisection; for alpha below
    it the second moment of e decays). At most GD's 2 / lambda_max."""
    high = gd_limit(problem) * (1 + 1e-9)
    low = 0.0

    def stable(alpha: float) -> bool:
        return symmetric_radius(second_moment_map(problem, alpha, m, replacement)) < 1

    while high - low > tolerance * high:
        middle = (low + high) / 2
        low, high = (middle, high) if stable(middle) else (low, middle)
    return low


@dataclass(frozen=True)
class NoiseScale:
    """McCandlish et al.'s figures at one point theta (half-squared gradient)."""
    gradient_norm2: float    # |G|^2
    curvature: float         # G^T H G
    trace_sigma: float       # tr(Sigma)
    trace_h_sigma: float     # tr(H Sigma)

    @property
    def b_simple(self) -> float:
        return self.trace_sigma / self.gradient_norm2

    @property
    def b_noise(self) -> float:
        return self.trace_h_sigma / self.curvature

    @property
    def eps_max(self) -> float:
        return self.gradient_norm2 / self.curvature

    def eps_opt(self, m: float) -> float:
        return self.eps_max / (1 + self.b_noise / m)

    def expected_decrease(self, eps: float, m: float) -> float:
        """E[L(theta) - L(theta')] of the half-squared loss after one step of eps with a
        batch of m drawn with replacement (exact: the loss is quadratic)."""
        return eps * self.gradient_norm2 - eps ** 2 / 2 * (self.curvature
                                                           + self.trace_h_sigma / m)


def noise_scale(problem: Quadratic, theta: np.ndarray) -> NoiseScale:
    residuals = problem.design @ np.asarray(theta, np.float64) - problem.targets
    gradients = problem.design * residuals[:, None]          # (N, q) g_i
    mean = gradients.mean(axis=0)
    sigma = gradients.T @ gradients / problem.n - np.outer(mean, mean)
    return NoiseScale(float(mean @ mean), float(mean @ problem.hessian @ mean),
                      float(np.trace(sigma)), float(np.trace(problem.hessian @ sigma)))


def expected_losses(problem: LeastSquares, theta0: np.ndarray, alpha: float,
                    batch_sizes: np.ndarray, log_after: np.ndarray, loss_scale: float
                    ) -> np.ndarray:
    """E[recorded loss] at the start and after each update count in log_after, for batches
    of the given sizes (one per update) drawn with replacement: exact, by the linear
    recursion of (E[e], E[e e^T]):

        E[e'] = (I - alpha H) E[e]
        E[e' e'^T] = T(E[e e^T]) - (alpha^2 / m) (K + K^T) + (alpha^2 / m) Sigma_rho,
        K = (1/N) sum_i rho_i x~_i x~_i^T E[e] x~_i^T,  Sigma_rho = (1/N) sum_i rho_i^2 x~_i x~_i^T,

    (the batch's Hessian and its noise come from the same examples: K is their cross term),
    and E[L] = L* + s tr(H E[e e^T]). theta0 is one start (q,) or R starts (R, q): then the
    expectation is over the runs from those starts too (the recursion is linear in the
    moments, so their mean over the starts is where it begins).

    The maps are built once: S (`fourth`) on vec(E[e e^T]) and C on E[e], vec K = C E[e],
    so an update costs O(q^4), whatever N."""
    hessian = problem.hessian
    q = hessian.shape[0]
    step = np.eye(q) - alpha * hessian
    sigma_rho, cross_map = problem.noise_moments                            # C: (q^2, q)
    best = problem.best_loss(loss_scale)
    errors = np.atleast_2d(np.asarray(theta0, np.float64)) - problem.optimum
    mean, second = errors.mean(axis=0), errors.T @ errors / len(errors)
    losses = [best + loss_scale * float(np.sum(hessian * second))]
    done = 0
    for target in log_after:
        for m in batch_sizes[done:target]:
            factor = alpha ** 2 / m
            cross = (cross_map @ mean).reshape(q, q)                        # K
            quartic = (problem.fourth @ second.reshape(-1)).reshape(q, q)
            second = step @ second @ step + factor * (quartic - hessian @ second @ hessian) \
                - factor * (cross + cross.T) + factor * sigma_rho
            mean = step @ mean
        done = target
        losses.append(best + loss_scale * float(np.sum(hessian * second)))
    return np.array(losses)


def figures(problem: LeastSquares, gradient_scale: float) -> dict[str, float]:
    """A recipe's theory figures for metrics/evaluate.json, to 4 significant digits (figures
    to read; their last bits, from BLAS and LAPACK, differ between CPUs far below that)."""
    from descent.numbers import significant

    return {"lambda_max": significant(problem.lambda_max, 4),
            "gd_limit_lr": significant(lr_of(gd_limit(problem), gradient_scale), 4),
            "beta": significant(problem.beta, 4),
            "critical_batch_mbb": significant(critical_batch_mbb(problem), 4)}


def stability(problem: LeastSquares, batch: int, lr: float, gradient_scale: float
              ) -> dict[str, float | str]:
    """A (recipe, variant)'s learning rate beside its mean-square stability limit at its
    batch size (batches drawn without replacement, the one-batch view of reshuffling; for
    GD exactly 2 / lambda_max), to 4 significant digits."""
    from descent.numbers import significant

    critical = lr_of(critical_step(problem, batch, replacement=False), gradient_scale)
    return {"critical_lr": significant(critical, 4),
            "lr_over_critical": significant(lr / critical, 4),
            "mean_square": "stable" if lr < critical else "unstable"}
