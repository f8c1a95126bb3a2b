"""The evaluate stage's judge: closed form, distances, targets, divergence."""
from __future__ import annotations

import numpy as np
import pytest

from descent.judge import DIVERGED, NOT_REACHED, band, compare_pair, judge
from descent.least_squares import closed_form
from descent.numbers import significant
from descent.records import SeedRun, VariantRuns


def test_closed_form_matches_the_normal_equations():
    rng = np.random.default_rng(1)
    features = rng.normal(size=(200, 3))
    targets = features @ [1.0, -2.0, 0.5] + 3 + rng.normal(size=200)
    optimum = closed_form(features, targets, 0.5)
    design = np.c_[features, np.ones(200)]
    solution = np.linalg.solve(design.T @ design, design.T @ targets)  # independent route
    np.testing.assert_allclose(optimum["weights"], solution[:3], rtol=1e-10)
    assert optimum["bias"] == pytest.approx(solution[3], rel=1e-10)
    residuals = design @ solution - targets
    assert optimum["loss"] == pytest.approx(0.5 * np.mean(residuals ** 2), rel=1e-12)


@pytest.mark.parametrize("case", ["well posed", "ill conditioned", "a constant column",
                                  "a repeated column"])
def test_the_streamed_normal_equations_give_scikit_learns_closed_form(monkeypatch, case):
    """Above least_squares.STREAMED_ROWS rows the closed form comes from the normal
    equations; where both routes run they write the same figures: the parameters agree to
    one unit of the last digit kept (each route's error is about cond(X1'X1) eps, and
    `digits` leaves three digits of margin above it), the rank exactly, and the loss to
    the relative change that a last-digit difference in the parameters can make."""
    from descent import least_squares

    rng = np.random.default_rng(4)
    x = rng.normal(size=(3000, 3))
    features = {"well posed": x, "ill conditioned": np.c_[x, x[:, 0] + 1e-4 * x[:, 1]],
                "a constant column": np.c_[x, np.full(3000, 3.0)],
                "a repeated column": np.c_[x, x[:, 2]]}[case]
    targets = features[:, :3] @ [1.5, -2.0, 0.25] + 3 + 0.1 * rng.normal(size=3000)
    scikit = closed_form(features, targets, 0.5)
    monkeypatch.setattr(least_squares, "STREAMED_ROWS", 0)
    streamed = closed_form(features, targets, 0.5)
    assert streamed["rank"] == scikit["rank"] and streamed["digits"] == scikit["digits"]
    theta = np.r_[scikit["weights"], scikit["bias"]]
    unit = 10.0 ** (np.floor(np.log10(np.abs(theta).max())) - (scikit["digits"] - 1))
    assert np.abs(np.r_[streamed["weights"], streamed["bias"]] - theta).max() <= unit * 1.0001
    assert streamed["loss"] == pytest.approx(scikit["loss"], rel=1e-6)


def big_set(path, rows: int, features: int = 3, seed: int = 5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    table = rng.normal(size=(rows, features + 1))
    table[:, -1] = table[:, :-1] @ np.arange(1.0, features + 1) + 2 + 0.1 * table[:, -1]
    np.save(path, table)
    return table


def test_a_set_streamed_from_its_file_is_the_set_solved_in_memory(monkeypatch, tmp_path):
    """The solve stage streams a big .npy (two passes, a block at a time); the figures are
    those of the whole arrays, bit for bit: statistics summed in the same blocks, the loss
    an exactly rounded sum however the rows are cut. Small blocks here stand for the real
    ones (2^18 rows), so that the file spans many, and a last one shorter."""
    from descent import least_squares, statistics
    from descent.data import stream_dataset

    monkeypatch.setattr(statistics, "BLOCK_ROWS", 1000)
    monkeypatch.setattr(least_squares, "BLOCK_ROWS", 1000)
    monkeypatch.setattr(least_squares, "STREAMED_ROWS", 0)
    table = big_set(tmp_path / "big.npy", 10_500)
    whole = closed_form(table[:, :-1], table[:, -1], 0.5)
    streamed = least_squares.streamed_closed_form(
        lambda: stream_dataset(tmp_path / "big.npy", 3000), 0.5)
    assert streamed == whole
    # and the blocks' statistics are the whole arrays'
    parts = [statistics.partial_statistics(x, y)
             for x, y in stream_dataset(tmp_path / "big.npy", 3000)]
    for mine, theirs in zip(statistics.combine(np.concatenate(parts)),
                            statistics.sufficient_statistics(table[:, :-1], table[:, -1])):
        assert np.array_equal(mine, theirs)


def test_a_streamed_set_is_held_a_block_at_a_time(monkeypatch, tmp_path):
    """Solving a streamed set peaks at the memory of its blocks, not its size: twice the
    rows (10^6 and 2 * 10^6 x 3 features, 32 and 64 MB of float64, in blocks of 2^17 rows)
    add less than a tenth of a block's 4 MB to the peak (numpy reports its arrays to
    tracemalloc), and the peak is under 5 blocks: the block as read, its features and
    targets apart, the residuals and their squares."""
    import tracemalloc

    from descent import least_squares
    from descent.data import stream_dataset

    monkeypatch.setattr(least_squares, "STREAM_ROWS", 1 << 17)
    peaks, sizes = [], []
    for rows in (1_000_000, 2_000_000):
        path = tmp_path / f"{rows}.npy"
        big_set(path, rows)
        sizes.append(path.stat().st_size)
        tracemalloc.start()
        try:
            least_squares.streamed_closed_form(
                lambda: stream_dataset(path, least_squares.STREAM_ROWS), 0.5)
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
    block = (1 << 17) * 4 * 8
    assert peaks[1] - peaks[0] < 0.1 * block and peaks[1] < 5 * block, (peaks, sizes)


def test_a_bad_value_deep_in_a_streamed_set_is_one_clear_error(tmp_path):
    """A NaN in the third block of a streamed file: the same one line as a loaded file's."""
    from descent.data import stream_dataset
    from descent.io import UserError

    table = big_set(tmp_path / "big.npy", 10_000)
    table[7_500, 1] = np.nan
    np.save(tmp_path / "big.npy", table)
    with pytest.raises(UserError, match="has missing or non-finite values; fix the file"):
        for _ in stream_dataset(tmp_path / "big.npy", 3000):
            pass


def test_the_airfoil_closed_form_loss_is_the_published_one(airfoil_file, tmp_path):
    from descent.data import prepare

    prepare(airfoil_file, 1500, tmp_path / "a.npy", tmp_path / "s.json")
    table = np.load(tmp_path / "a.npy")
    optimum = closed_form(table[:, :-1], table[:, -1], 0.5)
    lstsq = np.linalg.lstsq(np.c_[table[:, :-1], np.ones(1500)], table[:, -1], rcond=None)
    # Published to 6 decimals: 0.241688 +- 5e-7.
    assert abs(optimum["loss"] - 0.241688) <= 5e-7
    assert optimum["loss"] == pytest.approx(0.5 * lstsq[1][0] / 1500, rel=1e-12)


def make_runs(losses, diverged_at=()):
    """Runs of two weights with the given loss curves (rows: seeds), logged every 100
    examples; a run listed in diverged_at diverged at update 42 after its last point."""
    losses = np.array(losses, dtype=float)
    runs = []
    for r, curve in enumerate(losses):
        diverged = r in diverged_at
        if diverged:
            curve[-1] = np.nan
        runs.append(SeedRun(seed=r, initial_loss=curve[0], weights=(1.0, 2.0), bias=0.5 + r,
                            loss=curve[-2] if diverged else curve[-1],
                            diverged_at_update=42 if diverged else None))
    result = VariantRuns(batch_size=10, lr=0.1, epochs=1, examples=1000,
                         updates=10 * (losses.shape[1] - 1), runs=tuple(runs), params="")
    curves = {"examples": np.arange(losses.shape[1]) * 100,
              "updates": np.arange(losses.shape[1]) * 10, "losses": losses}
    return result, curves


OPTIMUM = {"loss": 1.0, "weights": [1.0, 2.0], "bias": 0.0, "rank": 2}


def test_judge_gives_the_spread_over_seeds_and_the_first_point_within_the_target():
    result, curves = make_runs([[3.0, 1.5, 1.009, 1.02, 1.005],
                                [3.0, 1.2, 1.1, 1.05, 1.015]])
    metrics, seeds = judge(result, curves, OPTIMUM, {"weights": [1.0, 1.0], "bias": 0.0},
                           target_excess=0.01, digits=12,
                           dtype="float32")
    assert [s["examples_to_target"] for s in seeds] == [200, None]
    assert metrics["examples_to_target"] == {"mean": 200, "n": 1}
    assert metrics["reached_fraction"] == 0.5 and metrics["diverged_fraction"] == 0
    final = metrics["final_loss"]
    assert final["mean"] == pytest.approx(1.01) and final["n"] == 2
    assert final["sd"] == pytest.approx(np.std([1.005, 1.015], ddof=1))
    # Two values: a resample's mean is 1.005, 1.01 or 1.015 (chances 1/4, 1/2, 1/4), so the
    # 2.5 % and 97.5 % quantiles of 4000 resampled means are the two extremes.
    assert (final["ci95_low"], final["ci95_high"]) == (pytest.approx(1.005), pytest.approx(1.015))
    assert metrics["excess_loss"]["mean"] == pytest.approx(0.01)
    assert metrics["bias_distance"]["mean"] == 1.0 and metrics["weights_distance"]["mean"] == 0
    assert metrics["true_weights_distance"]["mean"] == 1.0


def test_judge_says_not_reached_and_diverged_explicitly():
    result, curves = make_runs([[3.0, 2.0, 1.5], [3.0, 2.0, 1.6]])
    metrics, _ = judge(result, curves, OPTIMUM, None, target_excess=0.01, digits=12,
                           dtype="float32")
    assert metrics["examples_to_target"] == NOT_REACHED
    assert "true_weights_distance" not in metrics
    result, curves = make_runs([[3.0, 9.0], [3.0, 9.0]], diverged_at=(0, 1))
    metrics, _ = judge(result, curves, OPTIMUM, None, target_excess=0.01, digits=12,
                           dtype="float32")
    assert metrics["diverged_fraction"] == 1 and metrics["earliest_divergence_update"] == 42
    assert metrics["final_loss"] == DIVERGED == metrics["examples_to_target"]


def test_a_partly_diverged_variant_is_judged_on_the_runs_that_did_not_diverge():
    result, curves = make_runs([[3.0, 1.2], [3.0, 1.4], [3.0, 9.0]], diverged_at=(2,))
    metrics, _ = judge(result, curves, OPTIMUM, None, target_excess=0.01, digits=12,
                           dtype="float32")
    assert metrics["diverged_fraction"] == pytest.approx(1 / 3)
    assert metrics["final_loss"]["n"] == 2 and metrics["final_loss"]["mean"] == pytest.approx(1.3)


def test_a_variant_diverging_before_its_first_logged_point_still_has_a_marked_row():
    """line_minus5x SGD diverges at update 8, inside its first logging interval: the plot
    data must still say where, or the charts draw no divergence mark for it."""
    curves = {"updates": np.array([0, 100, 200]), "examples": np.array([0, 200, 400]),
              "losses": np.array([[5.0, np.nan, np.nan], [7.0, np.nan, np.nan]])}
    frame = band(curves, 100, 0.5, [8, 6])
    assert frame["updates"].tolist() == [0, 8]      # where the last run diverged
    assert frame["examples"].tolist() == [0, 16]    # 2 examples an update in that interval
    assert frame["examples"].dtype.kind == "i"      # ints stay ints in the CSVs
    assert frame["diverged"].tolist() == [0, 2]
    assert frame["loss"].tolist() == [6.0, 6.0] and frame["seconds"].tolist() == [0, 4.0]
    # Some runs still sound: their curve goes on, the others counted where their loss is NaN.
    curves["losses"] = np.array([[5.0, 3.0, 2.0], [7.0, np.nan, np.nan]])
    frame = band(curves, 100, 0.5, [None, 8])
    assert frame["updates"].tolist() == [0, 100, 200]
    assert frame["diverged"].tolist() == [0, 1, 1] and frame["loss"].tolist() == [6.0, 3.0, 2.0]


def test_paired_comparison_names_the_lower_variant_only_when_the_interval_excludes_zero():
    def seeds(losses):
        return [{"diverged": False, "final_loss": loss} for loss in losses]

    clear = {"a": seeds([1.0, 1.1, 1.2, 1.3]), "b": seeds([1.5, 1.6, 1.8, 1.8])}
    assert compare_pair("a", "b", clear, 12)["lower"] == "a"
    assert compare_pair("b", "a", clear, 12)["lower"] == "a"
    noisy = {"a": seeds([1.0, 1.6, 1.2, 1.8]), "b": seeds([1.5, 1.1, 1.8, 1.2])}
    comparison = compare_pair("a", "b", noisy, 12)
    assert comparison["lower"] == "no clear difference"
    assert comparison["difference"]["ci95_low"] < 0 < comparison["difference"]["ci95_high"]


def test_figures_are_recorded_at_the_precision_the_dtype_supports():
    assert significant(0.24374951234, 7) == 0.2437495
    # A difference of two figures keeps their absolute precision, not its own.
    assert significant(0.0020615123456, 7, magnitude=0.2437495) == 0.0020615
    assert significant(-0.0, 7) == 0.0 and significant(123456789.0, 7) == 123456800.0


def test_the_readme_table_is_the_one_the_report_stage_wrote():
    from descent.io import ROOT
    from descent.reference import TABLE_END, TABLE_START

    readme = (ROOT / "README.md").read_text()
    section = readme.split(TABLE_START, 1)[1].split(TABLE_END, 1)[0].strip()
    assert section == (ROOT / "metrics/reference.md").read_text().strip()
    assert section.count("\n") >= 10


def test_the_offline_template_refuses_scripts_that_would_break_it():
    from descent.io import UserError
    from descent.offline_html import template

    assert template(["var a = 1;"]).count("{plot_divs}") == 1
    with pytest.raises(UserError, match="cannot be inlined"):
        template(["document.write('</script>')"])


def test_one_seed_gives_a_mean_and_no_interval():
    """seeds: 1 (the tutorials' single run): n = 1, no sd or interval, no paired verdict."""
    from descent.judge import spread

    assert spread([0.25], 7, 0.25) == {"mean": 0.25, "n": 1}
    seeds = {"gd": [{"diverged": False, "final_loss": 0.3}],
             "sgd": [{"diverged": False, "final_loss": 0.2}]}
    assert compare_pair("gd", "sgd", seeds, 7)["n"] == 1


def test_a_loss_interval_stays_positive_where_student_t_would_not():
    """The issue's case: final losses with mean ~45 and sd ~95 over 16 seeds. Student t's
    interval reaches below 0; the bootstrap's lies within the values' range."""
    from descent.judge import bootstrap_interval, t_interval

    losses = np.r_[np.full(14, 5.0), 390.0, 330.0]
    assert t_interval(losses)[0] < 0
    low, high = bootstrap_interval(losses)
    assert losses.min() <= low < np.mean(losses) < high <= losses.max()
    assert bootstrap_interval(losses) == (low, high)  # a fixed seed: the same every run


def test_the_bootstrap_interval_agrees_with_student_t_on_a_large_normal_sample():
    """For 400 normal values both intervals estimate mean +- 1.96 se. They differ by the
    t quantile (1.966 vs 1.960: 0.006 se), the bootstrap's plug-in sd (0.1 %) and its Monte
    Carlo error: the 2.5 % quantile of 4000 means has sd sqrt(0.025 * 0.975 / 4000) /
    phi(1.96) = 0.042 se. 0.2 se is over 4 of those sds."""
    from descent.judge import bootstrap_interval, t_interval

    values = np.random.default_rng(3).normal(10.0, 2.0, 400)
    se = values.std(ddof=1) / np.sqrt(len(values))
    for boot, t in zip(bootstrap_interval(values), t_interval(values)):
        assert abs(boot - t) <= 0.2 * se


def test_a_noise_free_set_has_a_reachable_target():
    """noise_std: 0 makes the optimum ~1e-31: 1 % of it is below anything float32 training
    resolves. The target then counts from eps(float32) x the starting loss (16 here:
    1.9e-6, so within 1 % is 1.9e-8 above the optimum), which a run at 1e-11 reaches and
    one at 1e-7 does not."""
    optimum = {**OPTIMUM, "loss": 1.5e-31}
    result, curves = make_runs([[16.0, 1e-3, 1e-11], [16.0, 1e-3, 1e-7]])
    _, seeds = judge(result, curves, optimum, None, target_excess=0.01, digits=12,
                     dtype="float32")
    assert [s["examples_to_target"] for s in seeds] == [200, None]
    # float64 resolves 2^29 times finer: then 1e-11 is far from the target.
    _, seeds = judge(result, curves, optimum, None, target_excess=0.01, digits=12,
                     dtype="float64")
    assert [s["examples_to_target"] for s in seeds] == [None, None]


def test_rank_deficient_data_are_judged_by_loss_only():
    """A constant feature column: the centred features have rank p - 1, so every parameter
    vector on a line reaches the minimum. Distances to scikit-learn's (minimum-norm) one
    would call runs at the minimum far from it."""
    from descent.judge import as_metrics

    rng = np.random.default_rng(0)
    features = np.c_[rng.normal(size=200), np.full(200, 3.0)]
    optimum = closed_form(features, 2 * features[:, 0] + 1, 0.5)
    assert optimum["rank"] == 1
    assert "rank 1 of 2 features" in as_metrics(optimum, 12)["rank_deficient"]
    result, curves = make_runs([[3.0, 1.0], [3.0, 1.0]])
    metrics, seeds = judge(result, curves, {**OPTIMUM, "rank": 1},
                           {"weights": [1.0, 1.0], "bias": 0.0}, target_excess=0.01,
                           digits=12, dtype="float32")
    assert not any(key.endswith("distance") for key in metrics)
    assert not any(key.endswith("distance") for key in seeds[0])
    assert metrics["final_loss"]["mean"] == 1.0 and metrics["reached_fraction"] == 1


def test_a_train_record_reads_back_as_it_was_written():
    """metrics/train/<variant>.json is records.Trained's JSON: written and read back, a
    diverged run and a finished one keep every field (and the file's key names)."""
    from descent.records import Setup, Trained

    result, _ = make_runs([[3.0, 1.2, 1.1], [3.0, 9.0, 9.5]], diverged_at=(1,))
    trained = Trained(Setup("cpu", "float32", "auto", 0, 2), {"r": result})
    record = trained.to_json()
    assert Trained.from_json(record) == trained
    finished, diverged = record["recipes"]["r"]["runs"]
    assert finished["loss"] == 1.1 and "last_logged_loss" not in finished
    assert diverged["last_logged_loss"] == 9.0 and diverged["diverged_at_update"] == 42
    assert "loss" not in diverged  # a diverged run's last loss is no final result
