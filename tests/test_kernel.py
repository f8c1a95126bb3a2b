"""The compiled descent kernel: exact against a plain PyTorch loop, honest losses, per-run
divergence, and runs that do not see each other."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from descent.engines.compiled import descend
from tests.reference_descent import reference_descend

EPS64 = float(np.finfo(np.float64).eps)
EPS32 = float(np.finfo(np.float32).eps)


def batch_count(n, batch_size, drop_last):
    return n // batch_size + (1 if n % batch_size and not drop_last else 0)


def torch_history(features, targets, theta0, order, batch_size, drop_last, lr, gradient_scale):
    """The tutorials' loop, written independently: nn.Linear + torch.optim.SGD on
    gradient_scale * mean(r^2), one step per batch. The parameters after every update, (K+1, p+1)."""
    n, p = features.shape
    x, y = torch.from_numpy(features), torch.from_numpy(targets)
    model = torch.nn.Linear(p, 1, dtype=x.dtype)
    with torch.no_grad():
        model.weight.copy_(torch.from_numpy(theta0[:p])[None])
        model.bias.copy_(torch.from_numpy(theta0[p:]))
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    history = [theta0.copy()]
    for epoch_order in order:
        for start in range(0, n, batch_size):
            batch = torch.from_numpy(epoch_order[start:start + batch_size])
            if drop_last and len(batch) < batch_size:
                continue
            optimizer.zero_grad()
            loss = gradient_scale * (model(x[batch]).squeeze(1) - y[batch]).square().mean()
            loss.backward()
            optimizer.step()
            history.append(torch.cat([model.weight[0], model.bias]).detach().numpy().copy())
    return np.stack(history)


def direct_losses(features, targets, thetas, loss_scale):
    """loss_scale * mean((X w + b - y)^2) in float64, one per row of thetas."""
    thetas = thetas.astype(np.float64)
    residuals = features.astype(np.float64) @ thetas[:, :-1].T + thetas[:, -1] \
        - targets.astype(np.float64)[:, None]
    return loss_scale * np.square(residuals).mean(axis=0)


def make_problem(n, p, runs, epochs, seed, dtype=np.float64, feature_scale=1.0, offset=0.0):
    rng = np.random.default_rng(seed)
    features = rng.standard_normal((n, p)) * feature_scale + offset
    targets = features @ rng.standard_normal(p) + 0.7 + 0.3 * rng.standard_normal(n)
    thetas0 = rng.standard_normal((runs, p + 1))
    orders = np.stack([np.stack([rng.permutation(n) for _ in range(epochs)])
                       for _ in range(runs)])
    orders[-1] = np.arange(n)  # the last run is not shuffled
    return (features.astype(dtype), targets.astype(dtype), thetas0.astype(dtype), orders)


def stable_lr(features, gradient_scale):
    # A batch's update map I - 2 c lr X~'X~/m has spectral norm <= 1 when
    # lr <= 1 / (c max|x~|^2) (x~ = [x, 1]): every step is then non-expansive, so rounding
    # errors made at one update are not amplified by the later ones.
    return 1.0 / (gradient_scale * float((np.square(features.astype(np.float64)).sum(1) + 1).max()))


def step_tolerance(eps, updates, batch_size, p, scale):
    # Both sides compute the same maths with different rounding (torch: grad_r = 2c/m r then
    # X'grad_r and w -= lr grad; here: w -= (2c lr/m) X'r). One update rounds a (p+1)-term dot
    # product, a sum of m products and the step, i.e. at most ~(m + p + 2) eps relative to the
    # magnitudes involved (bounded by `scale` under a non-expansive step); errors then add up
    # over the updates without amplification: (updates + 1)(m + p + 2) eps scale, times 16
    # for the constants of those bounds. A wrong batch, order or step is off by ~1e-2 or more.
    return 16 * (updates + 1) * (batch_size + p + 2) * eps * scale


def shape_cases():
    cases = []
    for n in (1, 7, 40):
        sizes = sorted({1, n, {1: 1, 7: 3, 40: 7}[n]})  # 3 and 7 do not divide 7 and 40
        for p in (1, 3):
            for batch_size in sizes:
                for drop_last in (False, True):
                    cases.append((n, p, batch_size, drop_last))
    return cases


@pytest.mark.parametrize("n, p, batch_size, drop_last", shape_cases())
def test_follows_the_plain_pytorch_loop_float64(n, p, batch_size, drop_last):
    runs, epochs, gradient_scale, loss_scale = 3, 3, (0.5, 1.0)[p % 2], 0.5
    features, targets, thetas0, orders = make_problem(n, p, runs, epochs, seed=n * 10 + p)
    lr = 0.8 * stable_lr(features, gradient_scale)
    updates = epochs * batch_count(n, batch_size, drop_last)
    log_after = np.arange(1, updates + 1)  # every update: all parameters are compared
    logged, losses, diverged_at = descend(features, targets, thetas0, orders, batch_size,
                                          drop_last, 2 * gradient_scale * lr, log_after, 1e300,
                                          loss_scale)
    assert logged.shape == (runs, updates + 1, p + 1) and logged.dtype == np.float64
    assert losses.shape == (runs, updates + 1)
    assert list(diverged_at) == [-1] * runs
    for run in range(runs):
        expected = torch_history(features, targets, thetas0[run], orders[run], batch_size,
                                 drop_last, lr, gradient_scale)
        assert len(expected) == updates + 1
        scale = 1 + np.abs(expected).max() + np.abs(targets).max()
        np.testing.assert_allclose(logged[run], expected, rtol=0, atol=step_tolerance(
            EPS64, updates, batch_size, p, scale))


@pytest.mark.parametrize("n, p, batch_size, drop_last, epochs", [
    (7, 3, 3, False, 2), (40, 1, 1, True, 1), (40, 3, 7, True, 2)])
def test_follows_the_plain_pytorch_loop_float32(n, p, batch_size, drop_last, epochs):
    runs, gradient_scale = 3, 0.5
    features, targets, thetas0, orders = make_problem(n, p, runs, epochs, seed=n + p,
                                                      dtype=np.float32)
    lr = 0.8 * stable_lr(features, gradient_scale)
    updates = epochs * batch_count(n, batch_size, drop_last)
    log_after = np.arange(1, updates + 1)
    args = (features, targets, thetas0, orders, batch_size, drop_last, 2 * gradient_scale * lr,
            log_after, 1e300, 0.5)
    logged, losses, diverged_at = descend(*args)
    assert logged.dtype == np.float32 and losses.dtype == np.float64
    assert list(diverged_at) == [-1] * runs
    reference = reference_descend(*args)
    for run in range(runs):
        expected = torch_history(features, targets, thetas0[run], orders[run], batch_size,
                                 drop_last, lr, gradient_scale)
        scale = 1 + np.abs(expected).max() + np.abs(targets).max()
        tolerance = step_tolerance(EPS32, updates, batch_size, p, scale)  # float32 rounding
        np.testing.assert_allclose(logged[run], expected, rtol=0, atol=tolerance)
        np.testing.assert_allclose(logged[run], reference[0][run], rtol=0, atol=tolerance)


def loss_tolerance(features, targets, thetas, loss_scale):
    # loss = s (th'G th - 2 th'c + yy) / N cancels: its rounding error is relative to the
    # terms, not to the result. G, c, yy are sums of N products (error <= N eps each, relative
    # to |G|, |c|, yy); the quadratic form adds (p+1)^2 terms; the direct formula's own
    # error is smaller. So |error| <= 4 (N + (p+1)^2) eps (|th|^2 ||G|| + 2|th||c| + yy) s / N.
    n = len(targets)
    x1 = np.c_[features.astype(np.float64), np.ones(n)]
    y = targets.astype(np.float64)
    gram_norm, cross_norm = np.linalg.norm(x1.T @ x1), np.linalg.norm(x1.T @ y)
    size = np.linalg.norm(thetas.astype(np.float64), axis=-1)
    q = x1.shape[1]
    return 4 * (n + q * q) * EPS64 * (size ** 2 * gram_norm + 2 * size * cross_norm + y @ y) \
        * loss_scale / n


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("loss_scale", [0.5, 1.0])
@pytest.mark.parametrize("offset", [0.0, 50.0])  # 50: large uncentred features, cancellation
def test_losses_from_sufficient_statistics_match_the_direct_formula(dtype, loss_scale,
                                                                   offset):
    n, p, runs, epochs = 40, 3, 3, 2
    features, targets, thetas0, orders = make_problem(n, p, runs, epochs, seed=5, dtype=dtype,
                                                      offset=offset)
    lr = 0.5 * stable_lr(features, 0.5)
    log_after = np.arange(5, epochs * n + 1, 5)
    logged, losses, diverged_at = descend(features, targets, thetas0, orders, 1, False, lr,
                                          log_after, 1e300, loss_scale)
    assert list(diverged_at) == [-1] * runs
    for run in range(runs):
        expected = direct_losses(features, targets, logged[run], loss_scale)
        tolerance = loss_tolerance(features, targets, logged[run], loss_scale)
        np.testing.assert_array_less(np.abs(losses[run] - expected), tolerance)
        assert (losses[run] >= 0).all()


def test_loss_at_the_exact_optimum_is_clamped_at_zero():
    """Noise-free data started at the least-squares solution: the true loss is ~0 and the
    sufficient statistics may round below it; the logged loss stays in [0, tolerance]."""
    rng = np.random.default_rng(11)
    features = rng.standard_normal((40, 3)) * 10 + 100
    targets = features @ np.array([1.5, -2.0, 0.25]) + 3.0
    x1 = np.c_[features, np.ones(40)]
    optimum = np.linalg.lstsq(x1, targets, rcond=None)[0]
    thetas0 = np.stack([optimum, optimum + 1e-9])
    orders = np.stack([np.arange(40)[None], rng.permutation(40)[None]])
    logged, losses, diverged_at = descend(features, targets, thetas0, orders, 40, False,
                                          1e-6, np.array([1]), 1e300, 0.5)
    assert list(diverged_at) == [-1, -1]
    tolerance = loss_tolerance(features, targets, logged.reshape(-1, 4), 0.5).reshape(2, 2)
    assert (losses >= 0).all() and (losses <= tolerance).all()


def plain_divergence(features, targets, theta0, order, batch_size, lr, gradient_scale, blowup,
                     loss_scale):
    """First update of the plain loop after which a parameter is non-finite or the
    whole-set loss is non-finite, above blowup x the initial loss, or so large that its sum
    of squares overflows the features' dtype (where the loss evaluated in that dtype, as
    the torch engines do, is inf); None if none."""
    history = torch_history(features, targets, theta0, order, batch_size, False, lr,
                            gradient_scale)
    with np.errstate(all="ignore"):
        losses = direct_losses(features, targets, history, loss_scale)
    limit = min(blowup * max(losses[0], np.finfo(np.float64).tiny),
                float(np.finfo(features.dtype).max) * loss_scale / len(targets))
    for update, (theta, loss) in enumerate(zip(history, losses)):
        if not (np.isfinite(theta).all() and np.isfinite(loss) and loss <= limit):
            return update, history
    return None, history


@pytest.mark.parametrize("dtype, lr, blowup", [
    (np.float32, 5.0, 1e300),  # the float32 loss overflows to inf
    (np.float64, 3.0, 1e6),    # the blow-up limit, long before any overflow
])
def test_a_diverging_run_stops_at_the_exact_update_and_does_not_stop_the_others(dtype, lr,
                                                                               blowup):
    n, p, epochs, gradient_scale, loss_scale = 50, 2, 5, 0.5, 0.5
    rng = np.random.default_rng(3)
    features = (rng.standard_normal((n, p)) * 3).astype(dtype)
    targets = (features @ np.array([1.0, -2.0], dtype=dtype) + dtype(0.5)).astype(dtype)
    thetas0 = np.zeros((2, p + 1), dtype=dtype)
    orders = np.stack([np.stack([rng.permutation(n) for _ in range(epochs)])
                       for _ in range(2)])
    log_after = np.arange(20, epochs * n + 1, 20)
    small_lr = 0.5 * stable_lr(features, gradient_scale)
    step_scales = 2 * gradient_scale * np.array([lr, small_lr])
    args = (features, targets, thetas0, orders, 1, False, step_scales, log_after, blowup,
            loss_scale)
    logged, losses, diverged_at = descend(*args)

    expected, history = plain_divergence(features, targets, thetas0[0], orders[0], 1, lr,
                                         gradient_scale, blowup, loss_scale)
    assert expected is not None and expected > 0
    if dtype == np.float32:  # this case is an overflow of the float32 loss
        theta = history[expected].astype(np.float32)
        with np.errstate(over="ignore"):
            residuals = features @ theta[:-1] + theta[-1] - targets
            assert not np.isfinite(np.sum(residuals * residuals, dtype=np.float32))
    # Same dtype, same updates: the first unsound update agrees exactly.
    assert diverged_at[0] == expected
    assert diverged_at[1] == -1
    assert list(reference_descend(*args)[2]) == [expected, -1]
    # Run 0 keeps its sound points (those before the divergence), then NaN.
    sound = np.r_[0, log_after] < expected
    assert np.isfinite(logged[0][sound]).all() and np.isfinite(losses[0][sound]).all()
    assert np.isnan(logged[0][~sound]).all() and np.isnan(losses[0][~sound]).all()
    # Run 1 is exactly what it would be alone, and run 0's sound rows too.
    alone = descend(features, targets, thetas0[1:], orders[1:], 1, False, step_scales[1:],
                    log_after, blowup, loss_scale)
    assert np.array_equal(logged[1], alone[0][0]) and np.array_equal(losses[1], alone[1][0])
    assert alone[2][0] == -1
    alone = descend(features, targets, thetas0[:1], orders[:1], 1, False, step_scales[0],
                    log_after, blowup, loss_scale)
    assert np.array_equal(logged[0], alone[0][0], equal_nan=True)
    assert alone[2][0] == expected


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_runs_are_bitwise_independent_and_logging_does_not_change_them(dtype):
    n, p, runs, epochs, batch_size = 23, 3, 5, 4, 5
    features, targets, thetas0, orders = make_problem(n, p, runs, epochs, seed=8, dtype=dtype)
    thetas0[3, 1] = np.nan  # an unsound start: that run diverged "after 0 updates"
    lr = 0.5 * stable_lr(features, 1.0)
    step_scales = 2 * np.array([lr, lr, 50 * lr, lr, 0.5 * lr])  # run 2 diverges
    updates = epochs * batch_count(n, batch_size, False)
    dense = np.arange(1, updates + 1)
    logged, losses, diverged_at = descend(features, targets, thetas0, orders, batch_size,
                                          False, step_scales, dense, 1e4, 1.0)
    assert diverged_at[2] > 0 and diverged_at[3] == 0
    assert (diverged_at[[0, 1, 4]] == -1).all()
    assert np.isnan(logged[3, 1:]).all() and np.array_equal(logged[3, 0], thetas0[3],
                                                            equal_nan=True)
    sparse = np.array([3, 7, 8, 15, updates - 1])
    sparse_logged, sparse_losses, _ = descend(features, targets, thetas0, orders, batch_size,
                                              False, step_scales, sparse, 1e4, 1.0)
    for run in range(runs):
        alone = descend(features, targets, thetas0[run:run + 1], orders[run:run + 1],
                        batch_size, False, step_scales[run], dense, 1e4, 1.0)
        assert np.array_equal(alone[0][0], logged[run], equal_nan=True)
        assert np.array_equal(alone[1][0], losses[run], equal_nan=True)
        assert alone[2][0] == diverged_at[run]
        if diverged_at[run] == -1:  # logged points are the same states, bit for bit
            assert np.array_equal(sparse_logged[run], logged[run][np.r_[0, sparse]])
            assert np.array_equal(sparse_losses[run], losses[run][np.r_[0, sparse]])
    # int32 orders give the same bits
    int32 = descend(features, targets, thetas0, orders.astype(np.int32), batch_size, False,
                    step_scales, dense, 1e4, 1.0)
    assert np.array_equal(int32[0], logged, equal_nan=True)
    assert np.array_equal(int32[2], diverged_at)
    # and the plain reference agrees
    reference = reference_descend(features, targets, thetas0, orders, batch_size, False,
                                   step_scales, dense, 1e4, 1.0)
    assert np.array_equal(reference[2], diverged_at)
    assert np.array_equal(np.isnan(reference[0]), np.isnan(logged))


@pytest.mark.parametrize("change, message", [
    (dict(batch_size=0), "batch_size"),
    (dict(batch_size=8), "batch_size"),
    (dict(log_after=np.array([2, 2])), "increase strictly"),
    (dict(log_after=np.array([0, 3])), "increase strictly"),
    (dict(log_after=np.array([3, 8])), "increase strictly"),  # only 7 updates
    (dict(orders=np.full((2, 1, 7), 7)), "orders must index"),
    (dict(orders=np.zeros((2, 1, 6), dtype=np.int64)), "orders must be"),
    (dict(targets=np.zeros(7, dtype=np.float32)), "targets must be"),
    (dict(thetas0=np.zeros((2, 3))), "thetas0 must be"),
])
def test_bad_arguments_are_clear_errors(change, message):
    args = dict(features=np.ones((7, 3)), targets=np.zeros(7), thetas0=np.zeros((2, 4)),
                orders=np.zeros((2, 1, 7), dtype=np.int64), batch_size=1, drop_last=False,
                step_scale=0.1, log_after=np.array([3]), blowup=1e6, loss_scale=0.5)
    args.update(change)
    with pytest.raises((TypeError, ValueError), match=message):
        descend(**args)


def test_the_whole_set_loss_is_one_rule_in_both_backends():
    """The loss from the float64 sufficient statistics: the kernel's numba `_loss` and the
    torch backends' `_Losses.loss` give the same bits, for one theta or a batch of them
    (so a run's logged losses do not depend on its backend or on the runs beside it)."""
    import torch

    from descent.engines.compiled import Problem, _loss
    from descent.engines.problem import Plan
    from descent.engines.torch_backends import _Losses
    from descent.statistics import sufficient_statistics

    rng = np.random.default_rng(8)
    features = rng.normal(0, 2, (300, 4))
    targets = features @ [1.0, -2.0, 0.5, 3.0] + rng.normal(size=300)
    plan = Plan(n_examples=300, batch_size=1, epochs=1, lr=0.1, loss_scale=0.5)
    statistics = _Losses(features, targets, plan)
    gram, cross, yy = sufficient_statistics(features, targets)
    thetas = rng.normal(0, 3, (7, 5, 5))
    thetas[0, 0] = np.linalg.lstsq(np.c_[features, np.ones(300)], targets, rcond=None)[0]
    batched = statistics.loss(torch.as_tensor(thetas))
    for index in np.ndindex(thetas.shape[:2]):
        one = _loss(thetas[index], Problem(features, targets, gram, cross, float(yy), 0.5,
                                           np.inf))
        assert batched[index] == one == statistics.loss(torch.as_tensor(thetas[index]))


def test_the_divergence_rule_is_one_rule_in_both_backends():
    """A state is sound (engines/problem.py) when its parameters are finite and its loss is
    finite and within min(blowup x the start's loss, the overflow cap): the kernel's
    `_sound` with its limit and the torch backends' `_Losses` give the same verdicts."""
    import torch

    from descent.engines.compiled import _sound
    from descent.engines.problem import Plan, loss_cap
    from descent.engines.torch_backends import _Losses

    features = np.random.default_rng(1).normal(size=(20, 2)).astype(np.float32)
    targets = features.sum(axis=1)
    plan = Plan(n_examples=20, batch_size=1, epochs=1, lr=0.1, loss_scale=0.5)
    statistics = _Losses(features, targets, plan)
    cap = loss_cap(np.float32, 20, 0.5)
    for start in (0.0, 2.5):
        for blowup in (3.0, 1e300):
            torch_limit = statistics.limits(np.array(start), blowup)
            kernel_limit = min(blowup * max(start, 2.2250738585072014e-308), cap)
            for theta in ([0.5, -1.0, 0.1], [np.nan, 0.0, 0.0], [0.0, np.inf, 0.0]):
                for loss in (0.0, 2.5, 7.4, 7.6, cap * 0.99, cap * 1.01, np.inf, np.nan):
                    theta32 = np.array(theta, dtype=np.float32)
                    expected = _sound(theta32, loss, kernel_limit)
                    got = statistics.sound(torch.as_tensor(theta32)[None], np.array([loss]),
                                           torch_limit)[0]
                    assert bool(got) == bool(expected), (start, blowup, theta, loss)


@pytest.mark.parametrize("p, batch_size", [(9, 7), (12, 40), (8, 5), (3, 7)])
def test_each_update_is_the_sequential_sum_bit_for_bit(p, batch_size):
    """The kernel's update, bit for bit, against the rule written one float32 operation at a
    time: each row's residual summed over the features in order, the gradient summed over
    the batch's rows in order. From 8 features up the kernel computes 4 rows' residuals side
    by side (LANES): that may change its speed, never a bit."""
    n, epochs = 40, 2
    features, targets, thetas0, orders = make_problem(n, p, 2, epochs, seed=p, dtype=np.float32)
    lr = np.float32(0.5 * stable_lr(features, 0.5))
    logged, _, _ = descend(features, targets, thetas0, orders, batch_size, False, float(lr),
                           np.array([epochs * -(-n // batch_size)]), 1e300, 0.5)
    for run in range(2):
        theta = thetas0[run].copy()
        for epoch in range(epochs):
            for start in range(0, n, batch_size):
                rows = orders[run, epoch, start:start + batch_size]
                step = np.float32(float(lr) / len(rows))
                grad = np.zeros(p + 1, np.float32)
                for k in rows:
                    dot = features[k, 0] * theta[0]
                    for c in range(1, p):
                        dot = dot + features[k, c] * theta[c]
                    r = dot + theta[p] - targets[k]
                    for c in range(p):
                        grad[c] = grad[c] + r * features[k, c]
                    grad[p] = grad[p] + r
                theta = theta - step * grad if len(rows) > 1 else \
                    np.r_[theta[:p] - step * (r * features[rows[0]]), theta[p] - step * r]
        np.testing.assert_array_equal(logged[run, -1], theta.astype(np.float32))
