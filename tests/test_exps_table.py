"""`make exps` (descent/exps.py) formats DVC's --csv table; the e2e test runs it on real
experiments, this checks the layout on a fixed CSV in milliseconds."""
from __future__ import annotations

from descent.exps import table

HEADLINE = {f"{recipe}.{variant}" for recipe in
            ("airfoil", "airfoil_concise", "line_3x_plus_2", "line_minus5x",
             "plane_2x1_minus3p4x2") for variant in ("gd", "sgd", "minibatch")}
MINIBATCH = [name for name in sorted(HEADLINE) if name.endswith(".minibatch")]
CSV = "\n".join(
    ["Experiment,rev,typ," + ",".join(MINIBATCH) + ",batch_size",
     ",workspace,baseline,0.2443017,0.2495369,0.01024906,0.4761293,5.222404e-05,10",
     ",main,baseline,0.2443017,0.2495369,0.01024906,0.4761293,5.222404e-05,10"]
    + [f"bs{size},abc{size:04d},branch_commit,0.2433639,0.2447859,0.01024693,diverged,"
       f"0.002621387,{size}" for size in (1, 2, 5, 20, 50, 100, 200, 500, 1500)]) + "\n"


def test_many_experiments_fit_120_columns_with_the_param_first():
    lines = table(CSV, HEADLINE).splitlines()
    assert max(map(len, lines)) <= 120
    tops, names, rule, *rows = lines
    assert names.split()[:3] == ["experiment", "batch_size", "minibatch"]  # param first
    assert tops.split() == [name.split(".")[0] for name in MINIBATCH]       # recipe above
    assert len(rows) == 11 and rows[2].split() == ["bs1", "1", "0.24336", "0.24479",
                                                   "0.010247", "diverged", "0.0026214"]
    assert rows[0].startswith("workspace") and rows[2].startswith("  bs1 ")  # nested


def test_nothing_changed_says_so():
    text = table("Experiment,rev,typ\n,workspace,baseline\n,main,baseline\n", HEADLINE)
    assert "no param or headline metric differs" in text and "main" in text
