"""The exact theory of least squares (descent.theory) against the engine's runs.

Tolerances: 99.9 % intervals of a mean over seeds (3.29 standard errors, the central limit
theorem over 1024 or 4096 independent runs), or the bisection's own tolerance."""
from __future__ import annotations

import numpy as np
import pytest

from descent import theory
from descent.engines.dispatch import train_runs
from descent.engines.problem import Plan, make_schedule

Z999 = 3.29  # two-sided 99.9 % normal quantile


def plane(n: int = 1000):
    rng = np.random.default_rng(42)
    features = rng.normal(size=(n, 2))
    return features, features @ [2.0, -3.4] + 4.2 + 0.01 * rng.standard_normal(n)


def test_the_airfoil_figures_the_issue_quotes(airfoil):
    """lambda_max(H) = 2.098 (so GD's limit is 0.953 and d2l's lr 1.0 is past it) and
    beta = max |x~|^2 = 35.6, to the digits quoted."""
    problem = theory.quadratic(*airfoil)
    assert 2 / theory.gd_limit(problem) == pytest.approx(2.098, abs=5e-4)
    assert theory.gd_limit(problem) == pytest.approx(0.953, abs=5e-4)
    assert problem.beta == pytest.approx(35.6, abs=0.05)


def test_the_critical_step_of_full_batches_is_gds_and_grows_with_the_batch(airfoil):
    """Without replacement a batch of N has no noise: alpha_crit(N) = 2 / lambda_max (to the
    bisection's relative tolerance 1e-10); a larger batch never lowers it (its noise term
    only shrinks), with or without replacement."""
    problem = theory.quadratic(*airfoil)
    limit = theory.gd_limit(problem)
    assert theory.critical_step(problem, 1500, replacement=False) == \
        pytest.approx(limit, rel=1e-9)
    for replacement in (True, False):
        steps = [theory.critical_step(problem, m, replacement)
                 for m in (1, 2, 5, 10, 50, 200, 1500)]
        assert steps == sorted(steps) and steps[-1] <= limit * (1 + 1e-9)


def gd(features, targets, lr, epochs):
    plan = Plan(n_examples=len(targets), batch_size=len(targets), epochs=epochs, lr=lr,
                shuffle=False, log_every=len(targets), blowup=1e6)
    schedule = make_schedule(plan, [np.random.default_rng(0)])
    start = np.zeros((1, features.shape[1] + 1))
    return train_runs(features, targets, start, plan, schedule, "compiled")


def test_gd_converges_just_below_its_limit_and_diverges_just_above(airfoil):
    """On airfoil (half-squared: alpha = lr): at 0.99 x 2/lambda_max the top direction
    shrinks by |1 - 1.98| = 0.98 a step, at 1.01 x it grows by 1.02: 3000 steps take the
    loss past blowup (1e6 x the start) in the second case and to the optimum in the first."""
    features, targets = airfoil
    limit = theory.gd_limit(theory.quadratic(features, targets))
    below, above = gd(features, targets, 0.99 * limit, 3000), gd(features, targets,
                                                                 1.01 * limit, 3000)
    assert below.diverged_at[0] == -1 and below.losses[0, -1] < 0.2417  # optimum 0.241688
    assert above.diverged_at[0] > 0


def mean_losses(features, targets, batch, lr, epochs, runs, log_every):
    """The logged whole-set loss of `runs` runs, batches drawn with replacement, from one
    start: (mean, standard error) at every logging point, and the schedule."""
    plan = Plan(n_examples=len(targets), batch_size=batch, epochs=epochs, lr=lr,
                log_every=log_every, blowup=1e300, with_replacement=True)
    schedule = make_schedule(plan, [np.random.default_rng(seed) for seed in range(runs)])
    start = np.full((runs, features.shape[1] + 1), 0.1)
    losses = train_runs(features, targets, start, plan, schedule, "compiled").losses
    assert not np.isnan(losses).any()
    return losses.mean(axis=0), losses.std(axis=0, ddof=1) / np.sqrt(runs), schedule


@pytest.mark.parametrize("name, batch, lr, log_every", [
    ("airfoil", 10, 0.05, 100), ("airfoil", 1, 0.02, 100), ("plane", 10, 0.03, 100)])
def test_the_mean_loss_over_1024_seeds_follows_the_exact_expected_curve(airfoil, name,
                                                                       batch, lr, log_every):
    """Batches drawn with replacement: the mean over 1024 runs of the logged loss lies in
    the 99.9 % interval of the predicted E[L_t] at every logged point (float64 runs: their
    rounding is far below the sampling error)."""
    features, targets = airfoil if name == "airfoil" else plane()
    mean, error, schedule = mean_losses(features, targets, batch, lr, 1, 1024, log_every)
    predicted = theory.expected_losses(theory.quadratic(features, targets), np.full(
        features.shape[1] + 1, 0.1), lr, schedule.batch_sizes, schedule.log_after, 0.5)
    assert len(predicted) == len(mean) >= 10
    # (+ 1e-9 relative: at the start every run has the same loss, computed from the float64
    # statistics there and from e'He here; the two roundings differ by ~1e-14.)
    assert (np.abs(mean - predicted) <= Z999 * error + 1e-9 * predicted).all(), \
        np.c_[mean, predicted, error]
    # and the prediction is not trivially right: the loss moves by far more than the error
    assert predicted[0] - predicted[-1] > 100 * error.max()


def test_the_expected_one_step_decrease_at_the_optimal_step(airfoil):
    """McCandlish et al.: one step of eps_opt(m) = eps_max / (1 + B_noise / m) from theta
    decreases the half-squared loss by eps |G|^2 - eps^2 / 2 (G'HG + tr(H Sigma) / m) in
    expectation (exact: the loss is quadratic). 4096 runs of one update, with replacement."""
    features, targets = airfoil
    problem = theory.quadratic(features, targets)
    start = np.full(6, 0.1)
    scale = theory.noise_scale(problem, start)
    m = 10
    eps = scale.eps_opt(m)
    plan = Plan(n_examples=1500, batch_size=m, epochs=1, lr=eps, log_every=m, blowup=1e300,
                with_replacement=True)
    schedule = make_schedule(plan, [np.random.default_rng(seed) for seed in range(4096)])
    losses = train_runs(features, targets, np.tile(start, (4096, 1)), plan, schedule,
                        "compiled").losses
    decrease = losses[:, 0] - losses[:, 1]
    predicted = scale.expected_decrease(eps, m)
    error = decrease.std(ddof=1) / np.sqrt(len(decrease))
    assert abs(decrease.mean() - predicted) <= Z999 * error
    # eps_opt is the best step: a step 20 % off either side loses in expectation
    assert predicted > max(scale.expected_decrease(0.8 * eps, m),
                           scale.expected_decrease(1.2 * eps, m))


def test_the_stability_figure_predicts_the_minus5x_sgd_divergence():
    """The DataLoader tutorial's line (y = -5x on a grid, MSE: alpha = 2 lr): SGD at lr 0.1
    is past its mean-square limit (evaluate says `unstable`) and every one of 16 seeds
    diverges, in order (no shuffling) as the tutorial runs it; at half the limit none does."""
    from descent.config import Features, SyntheticSet
    from descent.data import generate

    spec = SyntheticSet("line", 100, Features("grid", -5.0, 0.1), (-5.0,), 0.0, 0.4, 42)
    features, targets = generate(spec)
    problem = theory.quadratic(features, targets)
    verdict = theory.stability(problem, 1, 0.1, 1.0)
    assert verdict["mean_square"] == "unstable" and verdict["lr_over_critical"] > 1
    for lr, diverging in ((0.1, 16), (0.5 * verdict["critical_lr"], 0)):
        plan = Plan(n_examples=100, batch_size=1, epochs=20, lr=lr, gradient_scale=1.0,
                    shuffle=False, loss_scale=1.0)
        schedule = make_schedule(plan, [np.random.default_rng(s) for s in range(16)])
        starts = np.random.default_rng(0).normal(size=(16, 2))
        runs = train_runs(features, targets, starts, plan, schedule, "compiled")
        assert (runs.diverged_at > 0).sum() == diverging


def test_the_b_crit_fit_recovers_points_on_the_hyperbola():
    """(S/S_min - 1)(E/E_min - 1) = 1 with E = B S is S = S_min + E_min / B: points made
    exactly on it give back S_min and E_min to rounding (1e-9 relative)."""
    from descent.sweep import fit_hyperbola

    s_min, e_min = 37.0, 2960.0  # B_crit 80
    batches = np.array([1, 4, 16, 64, 256, 1500])
    s_fit, e_fit = fit_hyperbola(batches, s_min + e_min / batches)
    assert s_fit == pytest.approx(s_min, rel=1e-9) and e_fit == pytest.approx(e_min, rel=1e-9)
    steps = s_min + e_min / batches
    assert np.allclose((steps / s_min - 1) * (batches * steps / e_min - 1), 1)


def test_the_fourth_moment_summed_a_block_of_rows_at_a_time_is_the_whole_sum(monkeypatch):
    """S and the cross map never hold an N x q^2 matrix: summed over blocks of rows they
    equal the one product, up to the float64 rounding of a reordered sum (relative 1e-13:
    sums of 100 products of order 1-100)."""
    rng = np.random.default_rng(3)
    features, targets = rng.normal(size=(100, 3)), rng.normal(size=100)
    whole = theory.quadratic(features, targets)
    rows = np.einsum("ij,ik->ijk", whole.design, whole.design).reshape(100, -1)
    expected = rows.T @ rows / 100
    assert np.array_equal(whole.fourth, expected)  # one block: the very same product
    monkeypatch.setattr(theory, "BLOCK_ROWS", 7)
    blocked = theory.quadratic(features, targets)
    np.testing.assert_allclose(blocked.fourth, expected, rtol=1e-13, atol=1e-13)


def test_a_streamed_problem_is_the_held_one(tmp_path):
    """A set too large to hold is read a block at a time (theory.Streamed): its figures are
    the held Quadratic's up to the order of float64 sums (relative error at most ~N eps
    = 2e-12 of the summed magnitudes at N = 20000, times H's condition number, < 10 for
    these normal features: 1e-9 leaves margin), and beta, a maximum, exactly."""
    from descent.data import Source, stream_dataset

    rng = np.random.default_rng(3)
    features = rng.normal(size=(20_000, 3)) * [1.0, 2.0, 0.5] + [0.0, 1.0, -1.0]
    targets = features @ [1.0, -2.0, 0.5] + 3 + rng.standard_normal(20_000)
    np.save(tmp_path / "set.npy", np.c_[features, targets])
    held = theory.quadratic(features, targets)
    streamed = theory.problem_of(Source(None, lambda rows: stream_dataset(
        tmp_path / "set.npy", 3000, ones=True)))  # 7 blocks, the last one shorter
    assert isinstance(streamed, theory.Streamed) and streamed.n == 20_000
    assert streamed.beta == held.beta
    close = dict(rtol=1e-9, atol=0)
    np.testing.assert_allclose(streamed.hessian, held.hessian, **close)
    np.testing.assert_allclose(streamed.fourth, held.fourth, **close)
    np.testing.assert_allclose(streamed.optimum, held.optimum, **close)
    assert streamed.best_loss(0.5) == pytest.approx(held.best_loss(0.5), rel=1e-9)
    for mine, theirs in zip(streamed.noise_moments, held.noise_moments):
        np.testing.assert_allclose(mine, theirs, rtol=1e-9, atol=1e-12 * np.abs(theirs).max())
    for batch in (1, 10, 20_000):
        assert theory.critical_step(streamed, batch) == pytest.approx(
            theory.critical_step(held, batch), rel=1e-8)  # the bisection's own 1e-10, and H's
    curve = dict(theta0=np.zeros(4), alpha=0.05, batch_sizes=np.full(50, 10),
                 log_after=np.array([10, 50]), loss_scale=0.5)
    np.testing.assert_allclose(theory.expected_losses(streamed, **curve),
                               theory.expected_losses(held, **curve), **close)
