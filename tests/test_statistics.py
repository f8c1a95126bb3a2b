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


def test_one_pass_over_blocks_gives_each_training_dtypes_statistics_bit_for_bit(monkeypatch):
    """What stage solve records (statistics.of_blocks, float64 blocks read from the file) is
    what a train stage would compute on its whole copy in its dtype, to the bit."""
    monkeypatch.setattr(statistics, "BLOCK_ROWS", 100)
    rng = np.random.default_rng(5)
    features = rng.normal(0, 3, (1001, 3))
    targets = features @ [0.5, -1.0, 2.0] + rng.normal(size=1001)
    held = statistics.of_blocks([(features, targets)])
    streamed = statistics.of_blocks((features[start:start + 200], targets[start:start + 200])
                                    for start in range(0, 1001, 200))
    for dtype in statistics.TRAINING_DTYPES:
        whole = sufficient_statistics(features.astype(dtype), targets.astype(dtype))
        for got in (held[dtype], streamed[dtype]):
            assert got[0].tobytes() == whole[0].tobytes()
            assert got[1].tobytes() == whole[1].tobytes() and got[2] == whole[2]
    # float32's statistics are of the rounded copy: not float64's
    assert not np.array_equal(held["float32"][0], held["float64"][0])


def test_recorded_statistics_of_other_data_are_refused(data):
    features, targets = data
    figures = sufficient_statistics(features, targets)
    statistics.check_matches(figures, features, targets, "mine")  # its own data: accepted
    edited = features.copy()
    edited[7, 2] *= 1.01  # one value of 4004, 1 % off
    others = [(edited, targets), (features[:-1], targets[:-1]), (features[:, :3], targets)]
    for other in others:
        with pytest.raises(statistics.UserError, match="does not match recipe mine's data"):
            statistics.check_matches(figures, *other, "mine")
