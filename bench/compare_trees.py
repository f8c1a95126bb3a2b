"""Time train_runs for each backend in one checkout of the project (min of repeats): run it
in two trees, interleaved, to compare an engine change before and after.

    git worktree add /tmp/before <rev>
    for i in 1 2 3; do for t in /tmp/before .; do
        (cd $t && PYTHONPATH=$t python <this file> data/prepared/airfoil.npy); done; done

ONLY=<substring> keeps the matching cases, REPEATS=<n> sets the repeats (default 5).
Works with the trees from before descent/engines/ too (descent.engine).
"""
import json
import os
import sys

import numpy as np
import pandas as pd

try:
    from descent.engines.dispatch import train_runs
    from descent.engines.problem import Plan, make_schedule
except ImportError:  # a tree from before descent/engines/
    from descent.engine import Plan, make_schedule, train_runs

table = np.load(sys.argv[1]) if sys.argv[1].endswith(".npy") else \
    pd.read_csv(sys.argv[1]).to_numpy()  # (a tree from before the .npy data)
x = np.ascontiguousarray(table[:, :-1], dtype=np.float32)
y = np.ascontiguousarray(table[:, -1], dtype=np.float32)
rng = np.random.default_rng(0)
big_x = rng.normal(size=(200_000, 10)).astype(np.float32)
big_y = (big_x.sum(1) + rng.normal(size=200_000)).astype(np.float32)
CASES = {  # name: (engine, features, targets, batch, epochs, runs, lr)
    "compiled sgd airfoil 16x2ep": ("compiled", x, y, 1, 2, 16, 0.005),
    "compiled mb10 airfoil 16x2ep": ("compiled", x, y, 10, 2, 16, 0.05),
    "compiled gd airfoil 16x6ep": ("compiled", x, y, 1500, 6, 16, 1.0),
    "compiled sgd 2e5x10 1x1ep": ("compiled", big_x, big_y, 1, 1, 1, 0.001),
    "affine mb10 airfoil 16x2ep": ("affine", x, y, 10, 2, 16, 0.05),
    "loop mb100 airfoil 2x1ep": ("loop", x, y, 100, 1, 2, 0.05),
}
seconds = {}
for name, (engine, xx, yy, batch, epochs, runs, lr) in CASES.items():
    if os.environ.get("ONLY", "") not in name:
        continue
    plan = Plan(n_examples=len(yy), batch_size=batch, epochs=epochs, lr=lr)
    schedule = make_schedule(plan, [np.random.default_rng(s) for s in range(runs)])
    thetas = np.zeros((runs, xx.shape[1] + 1))
    train_runs(xx, yy, thetas, plan, schedule, engine)  # warm: compile or load, allocate
    seconds[name] = min(train_runs(xx, yy, thetas, plan, schedule, engine).seconds
                        for _ in range(int(os.environ.get("REPEATS", 5))))
print(json.dumps(seconds))
