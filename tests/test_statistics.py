"""The float64 sufficient statistics: exact sums to float64 rounding, in an order that does not
depend on the cores (nor on the CPU: tests/test_reproducible.py)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from descent import parallel, statistics
from descent.statistics import sufficient_statistics


@pytest.fixture
def data():
    rng = np.random.default_rng(3)
    features = rng.normal(size=(1001, 4)).astype(np.float32)
    return features, (features @ [1, -2, 3, 0.5] + rng.normal(size=1001)).astype(np.float32)


def test_each_entry_is_its_exact_sum_to_float64_rounding(data):
    features, targets = data
    gram, cross, yy = sufficient_statistics(features, targets)
    z = np.c_[features.astype(np.float64), np.ones(len(targets)), targets.astype(np.float64)]
    exact = np.array([[math.fsum(z[:, a] * z[:, b]) for b in range(6)] for a in range(6)])
    # A recursive sum of n terms errs by at most (n - 1) eps times the sum of |terms|.
    bound = len(z) * np.finfo(np.float64).eps * (np.abs(z).T @ np.abs(z))
    assert np.all(np.abs(gram - exact[:5, :5]) <= bound[:5, :5])
    assert np.all(np.abs(cross - exact[:5, 5]) <= bound[:5, 5])
    assert abs(yy - exact[5, 5]) <= bound[5, 5]
    assert np.array_equal(gram, gram.T)  # exactly: the kernel's loss relies on it


def test_the_bits_do_not_depend_on_the_number_of_cores(data, monkeypatch):
    monkeypatch.setattr(statistics, "BLOCK_ROWS", 100)  # 11 blocks
    results = []
    for cores in (1, 2, 5):
        monkeypatch.setattr(parallel, "cores", lambda cores=cores: cores)
        results.append(sufficient_statistics(*data))
    for gram, cross, yy in results[1:]:
        assert gram.tobytes() == results[0][0].tobytes()
        assert cross.tobytes() == results[0][1].tobytes() and yy == results[0][2]
