"""The evaluate stage's judge: closed form, distances, targets, divergence."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from descent.judge import DIVERGED, NOT_REACHED, closed_form, judge


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


def test_the_airfoil_closed_form_loss_is_the_published_one(airfoil_file, tmp_path):
    from descent.data import prepare

    prepare(airfoil_file, 1500, tmp_path / "a.csv", tmp_path / "s.json")
    table = pd.read_csv(tmp_path / "a.csv").to_numpy()
    optimum = closed_form(table[:, :-1], table[:, -1], 0.5)
    lstsq = np.linalg.lstsq(np.c_[table[:, :-1], np.ones(1500)], table[:, -1], rcond=None)
    # Published to 6 decimals: 0.241688 +- 5e-7.
    assert abs(optimum["loss"] - 0.241688) <= 5e-7
    assert optimum["loss"] == pytest.approx(0.5 * lstsq[1][0] / 1500, rel=1e-12)


def make_run(losses, diverged=False):
    curve = pd.DataFrame({"examples": np.arange(len(losses)) * 100,
                          "updates": np.arange(len(losses)) * 10, "loss": losses})
    run = {"batch_size": 10, "lr": 0.1, "epochs": 1, "updates": 10 * (len(losses) - 1),
           "diverged": diverged, "weights": [1.0, 2.0], "bias": 0.5, "loss": losses[-1]}
    if diverged:
        run["diverged_at_update"] = 42
    timing = {"seconds_per_epoch": 0.5,
              "curve": pd.DataFrame({"updates": curve["updates"],
                                     "seconds": np.arange(len(losses)) * 0.25})}
    return run, curve, timing


OPTIMUM = {"loss": 1.0, "weights": [1.0, 2.0], "bias": 0.0}


def test_judge_finds_the_first_point_within_the_target():
    run, curve, timing = make_run([3.0, 1.5, 1.009, 1.02, 1.005])
    metrics, speed = judge(run, curve, timing, OPTIMUM, {"weights": [1.0, 1.0], "bias": 0.0},
                           target_excess=0.01)
    assert metrics["examples_to_target"] == 200 and metrics["updates_to_target"] == 20
    assert speed["seconds_to_target"] == 0.5
    assert metrics["excess_loss"] == pytest.approx(0.005)
    assert metrics["relative_excess"] == pytest.approx(0.005)
    assert metrics["bias_distance"] == 0.5 and metrics["weights_distance"] == 0.0
    assert metrics["true_weights_distance"] == 1.0


def test_judge_says_not_reached_and_diverged_explicitly():
    run, curve, timing = make_run([3.0, 2.0, 1.5])
    metrics, speed = judge(run, curve, timing, OPTIMUM, None, target_excess=0.01)
    assert metrics["examples_to_target"] == NOT_REACHED == speed["seconds_to_target"]
    assert "true_weights_distance" not in metrics
    run, curve, timing = make_run([3.0, 9.0], diverged=True)
    metrics, speed = judge(run, curve, timing, OPTIMUM, None, target_excess=0.01)
    assert metrics["diverged"] is True and metrics["diverged_at_update"] == 42
    assert metrics["final_loss"] == DIVERGED == speed["seconds_to_target"]


def test_the_readme_table_is_the_one_the_compare_stage_wrote():
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
