"""The descent engine: exact against a plain PyTorch loop, convergent, and honest on divergence."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from descent.io import UserError
from descent.engines.dispatch import resolve_device
from descent.config import ENGINES
from descent.engines.problem import Plan, make_schedule
from tests.one_run import train

EPS64 = float(np.finfo(np.float64).eps)


def plain_loop(features, targets, weights, bias, plan, schedule):
    """The tutorials' loop, written independently: nn.Linear + torch.optim.SGD, one step per
    batch in the schedule's order. Returns the parameters after every update, (K+1, p)."""
    model = torch.nn.Linear(features.shape[1], 1, dtype=features.dtype)
    with torch.no_grad():
        model.weight.copy_(weights[None])
        model.bias.fill_(float(bias))
    optimizer = torch.optim.SGD(model.parameters(), lr=plan.lr)
    history = [torch.cat([weights, bias.reshape(1)])]
    for epoch in range(plan.epochs):
        order = np.array(schedule.order[epoch])  # (a read-only view when in order)
        for start in range(0, plan.n_examples, plan.batch_size):
            batch = order[start:start + plan.batch_size]
            if plan.drop_last and len(batch) < plan.batch_size:
                continue
            optimizer.zero_grad()
            loss = plan.gradient_scale * (model(features[batch]).squeeze(1) - targets[batch]) \
                .square().mean()
            loss.backward()
            optimizer.step()
            history.append(torch.cat([model.weight[0], model.bias]).detach().clone())
    return torch.stack(history)


@st.composite
def problems(draw):
    n = draw(st.integers(1, 40))
    d = draw(st.integers(1, 4))
    batch = draw(st.one_of(st.just(1), st.just(n), st.integers(1, n)))
    seed = draw(st.integers(0, 2**31 - 1))
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(n, d, generator=generator, dtype=torch.float64) \
        * draw(st.sampled_from([0.1, 1.0, 3.0]))
    targets = features @ torch.randn(d, generator=generator, dtype=torch.float64) \
        + torch.randn(n, generator=generator, dtype=torch.float64)
    gradient_scale = draw(st.sampled_from([0.5, 1.0]))
    # Each update map I - 2 c lr X'X/m has spectral norm <= 1 when
    # lr <= 1 / (c max|x~|^2); staying under it keeps every step non-expansive.
    stable_lr = 1 / (gradient_scale * float((features.square().sum(1) + 1).max()))
    plan = Plan(n_examples=n, batch_size=batch, epochs=draw(st.integers(1, 4)),
                lr=draw(st.floats(0.01, 1.0)) * stable_lr, gradient_scale=gradient_scale,
                shuffle=draw(st.booleans()), drop_last=draw(st.booleans()),
                log_every=draw(st.integers(1, 2 * n)), blowup=1e300)
    return features, targets, plan, generator


@settings(max_examples=150, deadline=None, derandomize=True,  # same examples every run
          suppress_health_check=[HealthCheck.too_slow])
@given(problems(), st.sampled_from(ENGINES))
def test_engines_follow_the_plain_pytorch_loop_exactly(problem, engine):
    features, targets, plan, generator = problem
    schedule = make_schedule(plan, np.random.default_rng(generator.initial_seed()))
    weights = torch.randn(features.shape[1], generator=generator, dtype=torch.float64)
    bias = torch.randn((), generator=generator, dtype=torch.float64)
    if len(schedule.batch_sizes) == 0:  # drop_last with batch > n: nothing to train
        return
    expected = plain_loop(features, targets, weights, bias, plan, schedule)
    run = train(features, targets, weights, bias, plan, schedule, engine=engine)
    got = torch.cat([run.weights, run.biases[:, None]], dim=1)
    assert run.diverged_at_update is None
    assert list(run.log_updates) == [0, *schedule.log_after]
    # Tolerance: both compute the same maths with different rounding. With non-expansive
    # steps, each of the K updates adds at most ~ (batch * p) eps of error relative to the
    # magnitudes involved, and errors are not amplified afterwards; the affine engine's tree
    # of products adds log2(K) rounding levels of (p + 1) terms each. 64 (K + 1)(m + p + 2)
    # eps x scale bounds both with a wide margin; a wrong batch, order or step is ~1e-2.
    K, p = len(schedule.batch_sizes), features.shape[1] + 1
    scale = 1 + float(expected.abs().max()) + float(targets.abs().max())
    tolerance = 64 * (K + 1) * (plan.batch_size + p + 2) * EPS64 * scale
    np.testing.assert_allclose(got.numpy(), expected[run.log_updates].numpy(), rtol=0,
                               atol=tolerance)
    residuals = features @ got[:, :-1].T + got[:, -1] - targets[:, None]
    # The compiled engine computes the loss from float64 sufficient statistics,
    # (th'G th - 2 th'c + y'y)/n: near the optimum the terms cancel, leaving an absolute
    # error of a few q^2 eps times their size, (|th|_1 max|x1| + max|y|)^2, q = p + 1.
    size = (got.abs().sum(1).numpy() * (1 + float(features.abs().max()))
            + float(targets.abs().max())) ** 2
    np.testing.assert_allclose(run.losses, (0.5 * residuals.square().mean(0)).numpy(),
                               rtol=1e-12, atol=16 * p * p * EPS64 * float(size.max()))


def test_schedule_visits_every_example_once_per_epoch_and_keeps_the_short_batch():
    plan = Plan(n_examples=23, batch_size=5, epochs=3, lr=0.1, log_every=10)
    schedule = make_schedule(plan, np.random.default_rng(0))
    assert list(schedule.batch_sizes) == [5, 5, 5, 5, 3] * 3
    for epoch in range(3):
        assert sorted(schedule.order[epoch].tolist()) == list(range(23))
    assert not np.array_equal(schedule.order[0], schedule.order[1])  # reshuffled
    seen = np.cumsum(schedule.batch_sizes)
    # Logged after the update that reaches or crosses each multiple of 10 examples
    # (10, 20, 33, 43, 51, 61) and at each epoch end (23, 46, 69).
    assert list(seen[schedule.log_after - 1]) == [10, 20, 23, 33, 43, 46, 51, 61, 69]


def test_logging_points_are_where_the_examples_seen_pass_a_multiple_or_an_epoch_ends():
    """The schedule finds its logging points per epoch, without a per-update array: held
    against the rule written per update (a point after each update whose examples seen
    reach or pass a multiple of log_every, and after each epoch's last), on 2000 random
    shapes, short batches and drop_last included, and with the examples seen there."""
    rng = np.random.default_rng(0)
    for _ in range(2000):
        n, m, every = (int(v) for v in rng.integers(1, [60, 70, 90]))
        plan = Plan(n_examples=n, batch_size=m, epochs=int(rng.integers(1, 5)), lr=0.1,
                    log_every=every, drop_last=bool(rng.integers(0, 2)))
        sizes = [min(m, n)] * (n // min(m, n)) + ([n % min(m, n)] if n % min(m, n)
                                                  and not plan.drop_last else [])
        per_update = np.tile(sizes, plan.epochs).astype(int)
        seen = np.cumsum(per_update)
        epoch_end = (np.arange(len(per_update)) + 1) % max(1, len(sizes)) == 0
        expected = np.flatnonzero((seen // every > (seen - per_update) // every)
                                  | epoch_end) + 1
        schedule = make_schedule(plan, np.random.default_rng(0))
        np.testing.assert_array_equal(schedule.log_after, expected)
        np.testing.assert_array_equal(schedule.examples_after(expected), seen[expected - 1])


def test_schedule_drop_last_and_no_shuffle():
    plan = Plan(n_examples=23, batch_size=5, epochs=2, lr=0.1, shuffle=False, drop_last=True)
    schedule = make_schedule(plan, np.random.default_rng(0))
    assert list(schedule.batch_sizes) == [5] * 8
    assert schedule.order[1].tolist() == list(range(23))


def test_the_d2l_logging_rule_for_the_airfoil_minibatch_run():
    """d2l logs when (batch_index + 1) * batch_size % 100 == 0: every 10th batch of 10."""
    plan = Plan(n_examples=1500, batch_size=10, epochs=2, lr=0.05)
    schedule = make_schedule(plan, np.random.default_rng(0))
    assert list(schedule.log_after) == list(range(10, 301, 10))


def reference_divergence(features, targets, weights, bias, plan, schedule, blowup):
    """First update of the plain loop whose parameters or whole-set loss are unsound."""
    history = plain_loop(features, targets, weights, bias, plan, schedule)
    residuals = features @ history[:, :-1].T + history[:, -1] - targets[:, None]
    losses = plan.loss_scale * residuals.square().mean(0)
    limit = blowup * float(losses[0])
    sound = torch.isfinite(history).all(1) & torch.isfinite(losses) & (losses <= limit)
    return int(torch.argmin(sound.int())) if not bool(sound.all()) else None


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("dtype, lr, blowup", [
    (torch.float32, 5.0, 1e300),   # overflow to inf in float32
    (torch.float64, 3.0, 1e6),     # the blow-up limit, long before overflow
])
def test_divergence_stops_at_the_exact_update(engine, dtype, lr, blowup):
    generator = torch.Generator().manual_seed(3)
    features = torch.randn(50, 2, generator=generator, dtype=dtype) * 3
    targets = features @ torch.tensor([1.0, -2.0], dtype=dtype) + 0.5
    plan = Plan(n_examples=50, batch_size=1, epochs=5, lr=lr, log_every=20, blowup=blowup)
    schedule = make_schedule(plan, np.random.default_rng(generator.initial_seed()))
    weights, bias = torch.zeros(2, dtype=dtype), torch.zeros((), dtype=dtype)
    run = train(features, targets, weights, bias, plan, schedule, engine=engine)
    expected = reference_divergence(features, targets, weights, bias, plan, schedule, blowup)
    assert expected is not None and run.diverged_at_update is not None
    # Same dtype, same updates: the first unsound update must agree exactly.
    assert run.diverged_at_update == expected
    assert np.isfinite(run.losses).all() and torch.isfinite(run.weights).all()
    assert run.log_updates[-1] < run.diverged_at_update


def test_each_variant_converges_to_the_true_parameters_within_the_noise():
    """Plane y = 2 x1 - 3.4 x2 + 4.2 + 0.01 eps; each variant from the same start."""
    from descent.data import generate
    from tests.factory import config

    spec = config().synthetic["plane_2x1_minus3p4x2"]
    features_np, targets_np = generate(spec)
    features = torch.tensor(features_np)
    targets = torch.tensor(targets_np)
    true = np.r_[spec.weights, spec.bias]
    n, sigma = len(targets_np), spec.noise_std
    design = np.c_[features_np, np.ones(n)]
    standard_errors = sigma * np.sqrt(np.diag(np.linalg.inv(design.T @ design)))
    for batch, lr, epochs in [(n, 0.5, 100), (1, 0.01, 5), (10, 0.03, 10)]:
        plan = Plan(n_examples=n, batch_size=batch, epochs=epochs, lr=lr, gradient_scale=0.5)
        run = train(features, targets, torch.zeros(2, dtype=torch.float64),
                    torch.zeros((), dtype=torch.float64), plan,
                    make_schedule(plan, np.random.default_rng(0)))
        final = np.r_[run.weights[-1].numpy(), run.biases[-1].item()]
        # Least squares misses the truth by ~1 standard error; constant-step SGD then
        # jitters around it with stationary sd ~ sigma sqrt(c lr / batch) per coordinate.
        # Allow 4 of each (four-sigma events are ~1e-4 per coordinate).
        jitter = sigma * np.sqrt(0.5 * lr / batch) if batch < n else 0.0
        np.testing.assert_array_less(np.abs(final - true), 4 * (standard_errors + jitter))


def test_auto_device_is_available_and_a_missing_cuda_is_a_clear_error():
    assert resolve_device("auto") in ("cpu", "cuda", "mps")
    assert resolve_device("cpu") == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="CUDA is not available"):
            resolve_device("cuda")
        with pytest.raises(UserError, match="CUDA is not available"):
            resolve_device("cuda:1")
    with pytest.raises(UserError, match="not a device name"):
        resolve_device("gpu0")


@pytest.mark.parametrize("chunk", [1, 2, 7])
def test_affine_chunks_bounded_in_bytes_give_the_same_iterates(monkeypatch, chunk):
    """Chunks far shorter than a logging interval: segments span chunks (their partial
    product is carried), and the iterates, losses and divergence point do not change."""
    import descent.engines.torch_backends as engines

    generator = torch.Generator().manual_seed(5)
    features = torch.randn(40, 3, generator=generator, dtype=torch.float64)
    targets = features @ torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64) + 0.3
    plan = Plan(n_examples=40, batch_size=3, epochs=3, lr=0.05, log_every=35)
    schedule = make_schedule(plan, np.random.default_rng(1))
    weights, bias = torch.zeros(3, dtype=torch.float64), torch.zeros((), dtype=torch.float64)
    expected = train(features, targets, weights, bias, plan, schedule, engine="loop")
    monkeypatch.setattr(engines, "CHUNK_BYTES", chunk * engines.update_bytes(3, 8, 3))
    assert engines.chunk_updates(3, 8, 3, 1, torch.device("cpu")) == chunk  # < 12 per log
    got = train(features, targets, weights, bias, plan, schedule, engine="affine")
    assert list(got.log_updates) == list(expected.log_updates)
    np.testing.assert_allclose(got.weights.numpy(), expected.weights.numpy(), rtol=0,
                               atol=1e-12)  # float64, ~40 updates: a few ulps
    np.testing.assert_allclose(got.losses, expected.losses, rtol=1e-12)
    diverging = Plan(n_examples=40, batch_size=1, epochs=3, lr=2.0, log_every=35, blowup=1e6)
    schedule = make_schedule(diverging, np.random.default_rng(1))
    expected = train(features * 3, targets, weights, bias, diverging, schedule, engine="loop")
    got = train(features * 3, targets, weights, bias, diverging, schedule, engine="affine")
    assert expected.diverged_at_update is not None
    assert got.diverged_at_update == expected.diverged_at_update


def test_affine_says_so_when_one_update_no_longer_fits_its_chunk():
    """16 runs of 1200 features: one update's maps (3 x 1202^2 float32 per run) are 277 MB,
    more than the 256 MiB chunk; the engine refuses in one line instead of breaking its
    memory bound (the compiled kernel and the loop have no such maps)."""
    from descent.engines.dispatch import train_runs

    runs, p = 16, 1200
    features = np.random.default_rng(0).standard_normal((3, p)).astype(np.float32)
    plan = Plan(n_examples=3, batch_size=1, epochs=1, lr=0.01)
    schedule = make_schedule(plan, [np.random.default_rng(r) for r in range(runs)])
    with pytest.raises(UserError, match=r"one update's 1201x1201 maps for 16 run\(s\) need "
                                        r"\d+ MiB, more than its 256 MiB chunk"):
        train_runs(features, features[:, 0].copy(), np.zeros((runs, p + 1)), plan, schedule,
                   engine="affine", device="cpu")
    fits = train_runs(features, features[:, 0].copy(), np.zeros((1, p + 1)), plan,
                      make_schedule(plan, [np.random.default_rng(0)]), engine="compiled")
    assert np.isfinite(fits.final).all()


@pytest.mark.parametrize("case", ["another plan's schedule", "too few starts",
                                  "starts too wide", "float16 data", "targets too short"])
def test_the_compiled_engine_refuses_arguments_that_do_not_fit_together(case):
    """The kernel skips its per-element checks on the engine's own schedules (they are valid
    by construction); the engine instead checks that data, starts, plan and schedule fit
    together, so a mismatch is an error, never an out-of-bounds read."""
    from descent.engines.dispatch import train_runs

    features = np.random.default_rng(0).standard_normal((20, 3))
    targets, starts = features.sum(axis=1), np.zeros((2, 4))
    plan = Plan(n_examples=20, batch_size=5, epochs=2, lr=0.01)
    schedule = make_schedule(plan, [np.random.default_rng(r) for r in range(2)])
    if case == "another plan's schedule":  # batch 1: four times the updates of batch 5
        schedule = make_schedule(dataclasses.replace(plan, batch_size=1),
                                 [np.random.default_rng(r) for r in range(2)])
    elif case == "too few starts":
        starts = starts[:1]
    elif case == "starts too wide":
        starts = np.zeros((2, 5))
    elif case == "float16 data":
        features, targets = features.astype(np.float16), targets.astype(np.float16)
    else:
        targets = targets[:-1]
    with pytest.raises(ValueError, match="the compiled kernel needs"):
        train_runs(features, targets, starts, plan, schedule, engine="compiled")


def test_engine_loop_says_up_front_how_long_it_will_take():
    """The issue's case: the default recipes with `-S train.engine=loop` run ~35 min for SGD
    (16 seeds x 1.01M updates at ~130 µs) without a word. Now a notice gives the figure;
    the compiled engine (seconds) gets none."""
    import dataclasses

    from descent import config as configuration
    from descent.training import slow_loop_notice

    config = configuration.load()
    sizes = {"airfoil": 1500, "airfoil_concise": 1500, "line_minus5x": 100,
             "line_3x_plus_2": 1000, "plane_2x1_minus3p4x2": 1000}
    datasets = {name: (np.zeros((n, 1)), np.zeros(n)) for name, n in sizes.items()}
    assert slow_loop_notice(config, "sgd", datasets) == ""   # engine auto
    loop = dataclasses.replace(config, train=dataclasses.replace(config.train, engine="loop"))
    updates = 16 * (2 * 1500 + 2 * 1500 + 20 * 100 + 1000 * 1000 + 3 * 1000)
    notice = slow_loop_notice(loop, "sgd", datasets)
    assert f"at least {updates * 130e-6 / 60:.0f} min for sgd" in notice
    assert slow_loop_notice(loop, "gd", datasets) == ""  # 16 x 1035 updates: 2 s
