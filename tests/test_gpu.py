"""The affine scan on a CUDA device gives the compiled CPU kernel's runs (skipped without
CUDA: CI has no GPU; `bash bench/gpu_check.sh` runs this on a lent one)."""
from __future__ import annotations

import numpy as np
import pytest

from descent.engines.dispatch import train_runs
from descent.engines.problem import Plan, make_schedule

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")


def problem(n: int, p: int, dtype):
    generator = np.random.default_rng(n + p)
    features = generator.normal(size=(n, p)).astype(dtype)
    targets = (features @ generator.normal(size=p) + 0.1 * generator.normal(size=n)) \
        .astype(dtype)
    return features, targets


@pytest.mark.parametrize("dtype, tolerance", [(np.float64, 1e-9), (np.float32, 2e-4)])
@pytest.mark.parametrize("batch_size", [1, 10, 200])
def test_the_cuda_scan_matches_the_compiled_kernel_for_every_seed(dtype, tolerance,
                                                                   batch_size):
    features, targets = problem(200, 5, dtype)
    plan = Plan(n_examples=200, batch_size=batch_size, epochs=3, lr=0.02, log_every=50)
    schedule = make_schedule(plan, [np.random.default_rng(seed) for seed in range(16)])
    starts = np.random.default_rng(1).normal(scale=0.1, size=(16, 6))
    cpu = train_runs(features, targets, starts, plan, schedule, engine="compiled")
    gpu = train_runs(features, targets, starts, plan, schedule, engine="affine",
                     device="cuda")
    # float64: a few hundred contracting updates in two summation orders agree to ~1e-12;
    # float32: to a few hundred ulps of the O(1) parameters.
    np.testing.assert_allclose(gpu.final, cpu.final, rtol=0, atol=tolerance)
    np.testing.assert_allclose(gpu.losses, cpu.losses, rtol=tolerance, equal_nan=True)
    np.testing.assert_array_equal(gpu.diverged_at, cpu.diverged_at)


def test_a_diverging_seed_on_cuda_stops_at_the_kernel_s_update_and_others_go_on():
    features, targets = problem(60, 2, np.float64)
    features[:, 1] *= 3
    plan = Plan(n_examples=60, batch_size=1, epochs=3, lr=0.2, log_every=7, blowup=1e4)
    schedule = make_schedule(plan, [np.random.default_rng(seed) for seed in range(8)])
    starts = np.random.default_rng(2).normal(size=(8, 3))
    cpu = train_runs(features, targets, starts, plan, schedule, engine="compiled")
    gpu = train_runs(features, targets, starts, plan, schedule, engine="affine",
                     device="cuda")
    np.testing.assert_array_equal(gpu.diverged_at, cpu.diverged_at)
    np.testing.assert_allclose(gpu.final, cpu.final, rtol=1e-9, atol=1e-9)
