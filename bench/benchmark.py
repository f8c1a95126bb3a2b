"""`make bench`: the engine's speed and memory, measured in one run on this machine.

    python -m bench.benchmark            (from the project root, after `dvc repro`)

Writes bench/results.json and bench/results.png and prints a table. Not a test: timings on
shared machines are noisy, so nothing here asserts a speed. Every figure is the minimum of
repeats (noise only adds time); the compiled kernel and SGDRegressor, whose ratio is a
target, are also timed in interleaved rounds. On airfoil every backend's result is checked
against the literal loop before it is timed; the large sets, too slow for the loop, are
checked finite.
Schedules (the shuffled orders) are built before the clock starts and timed apart.
"""
from __future__ import annotations

import functools
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from descent.engines.dispatch import train_runs
from descent.engines.problem import Plan, make_schedule
from descent.io import ROOT, write_json

OUT = ROOT / "bench"
REPEATS = 3


def best_of(function, repeats: int = REPEATS) -> float:
    return interleaved({"one": function}, repeats)["one"]


def interleaved(functions: dict, rounds: int) -> dict:
    """Best time of each function over `rounds` rounds that call each of them in turn, so
    that a noisy moment on a shared machine slows them all alike (for ratios)."""
    best = dict.fromkeys(functions, float("inf"))
    for _ in range(rounds):
        for name, function in functions.items():
            started = time.perf_counter()
            function()
            best[name] = min(best[name], time.perf_counter() - started)
    return best


def schedule(plan: Plan, runs: int = 1):
    return make_schedule(plan, [np.random.default_rng(r) for r in range(runs)])


def timed_runs(engine: str, x, y, plan: Plan, runs: int = 1, device: str = "cpu", made=None):
    """R runs from zero; `made` is a schedule built beforehand (so it is not timed)."""
    thetas = np.zeros((runs, x.shape[1] + 1))
    return train_runs(x, y, thetas, plan, made or schedule(plan, runs), engine=engine,
                      device=device)


def seconds_per_call(engine: str, x, y, plan: Plan, device: str = "cpu",
                     repeats: int = 101) -> float:
    """Best time of one call on a schedule built beforehand; the literal loop, far slower,
    gets fewer repeats."""
    made = schedule(plan)
    return best_of(lambda: timed_runs(engine, x, y, plan, device=device, made=made),
                   REPEATS if engine == "loop" else repeats)


def against_sklearn(x, y, plan: Plan, rounds: int = 101) -> tuple[float, float, float]:
    """Seconds per call of the compiled kernel and of scikit-learn's SGDRegressor (batch 1,
    constant lr, no penalty, one epoch, on the same data in float64), interleaved; and of
    SGDRegressor alone."""
    import warnings

    from sklearn.linear_model import SGDRegressor

    made = schedule(plan)
    model = SGDRegressor(penalty=None, learning_rate="constant", eta0=plan.lr, max_iter=1,
                         tol=None, shuffle=True, random_state=0)
    wide_x, wide_y = x.astype(np.float64), y.astype(np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "max_iter reached": one epoch is the point
        fit = functools.partial(model.fit, wide_x, wide_y)
        best = interleaved({"compiled": lambda: timed_runs("compiled", x, y, plan, made=made),
                            "sklearn": fit}, rounds)
        return best["compiled"], best["sklearn"], best_of(fit, rounds)


def airfoil(engines: list[str], device: str) -> list[dict]:
    """Seconds per epoch of each backend on airfoil at batch 1, 10, 100, 1500."""
    table = np.load(ROOT / "data/prepared/airfoil.npy")
    x, y = table[:, :-1].astype(np.float32), table[:, -1].astype(np.float32)
    rows = []
    for batch, lr, epochs in ((1, 0.005, 1), (10, 0.05, 2), (100, 0.05, 4), (1500, 1.0, 6)):
        plan = Plan(n_examples=len(y), batch_size=batch, epochs=epochs, lr=lr)
        reference = timed_runs("loop", x, y, plan).final[0]
        row = {"batch_size": batch, "epochs": epochs}
        for engine in engines:
            on = "cpu" if engine in ("compiled", "loop") else device
            got = timed_runs(engine, x, y, plan, device=on).final[0]
            # float32, a few thousand contracting updates in another rounding order
            assert np.allclose(got, reference, rtol=0, atol=1e-4), (engine, got, reference)
            row[f"{engine}_s_per_epoch"] = seconds_per_call(engine, x, y, plan, on) / epochs
        if batch == 1:
            # What one more epoch costs (the slope from 1 to 11 epochs, each timed alone),
            # and so what is fixed per call: argument checks, the sufficient statistics,
            # result arrays.
            alone = row["compiled_s_per_epoch"]
            longer = Plan(n_examples=len(y), batch_size=1, epochs=11, lr=lr)
            slope = (seconds_per_call("compiled", x, y, longer) - alone) / 10
            row["compiled_ns_per_update"] = slope / len(y) * 1e9
            row["compiled_fixed_s_per_call"] = alone - slope
            # The ratio to scikit-learn: both timed in the same rounds, one after the other
            # (each then finds the caches as the other left them: both slower than alone).
            row["compiled_alone_s_per_epoch"] = alone
            (row["compiled_s_per_epoch"], row["sklearn_s_per_epoch"],
             row["sklearn_alone_s_per_epoch"]) = against_sklearn(x, y, plan)
        rows.append(row)
    return rows


def sweep_grid_cost() -> list[dict]:
    """Nanoseconds per run-update of one sweep grid call (the default 7 learning rates x 8
    seeds, 3000 steps, in one train_runs, logging as the sweep does) against one compiled run
    of 10^5 updates logging every 100 examples (its fixed cost per call spread thin),
    airfoil, at batch 1, 16, 256, both on one core (how the runs spread over threads is
    another question): interleaved, minimum of 7 rounds."""
    from descent.parallel import cores

    every = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(every)})
    cores.cache_clear()
    try:
        return _sweep_grid_cost()
    finally:
        os.sched_setaffinity(0, every)
        cores.cache_clear()


def _sweep_grid_cost() -> list[dict]:
    from descent import theory
    from descent.sweep import grid_plan

    table = np.load(ROOT / "data/prepared/airfoil.npy")
    x, y = table[:, :-1].astype(np.float32), table[:, -1].astype(np.float32)
    target = theory.quadratic(table[:, :-1], table[:, -1]).best_loss(0.5) * 1.05  # the sweep's
    rows, runs = [], 56
    for batch, lr in ((1, 0.005), (16, 0.05), (256, 0.2)):
        grid = grid_plan(len(y), batch, budget=3000, lr=lr, target=target)
        single = Plan(n_examples=len(y), batch_size=batch, epochs=-(-10**5 * batch // len(y)),
                      lr=lr)
        grid_made, single_made = schedule(grid, runs), schedule(single)
        lrs = np.full(runs, lr)
        best = interleaved({
            "grid": lambda: train_runs(x, y, np.zeros((runs, x.shape[1] + 1)), grid,
                                       grid_made, lrs=lrs),
            "single": lambda: timed_runs("compiled", x, y, single, made=single_made)}, 7)
        updates = grid_made.updates
        row = {"batch_size": batch,
               "single_ns_per_update": best["single"] / single_made.updates * 1e9,
               "grid_ns_per_run_update": best["grid"] / (updates * runs) * 1e9}
        row["ratio"] = row["grid_ns_per_run_update"] / row["single_ns_per_update"]
        rows.append(row)
    return rows


def time_to_target() -> list[dict]:
    """Wall-clock time to the sweep's target, per batch size and engine: the steps the sweep
    measured at each batch size's best learning rate (plots/sweep_best, airfoil) times the
    seconds an update costs there (the slope between calls of U and 2U updates, so that a
    call's fixed cost drops out; interleaved, minimum of 5 rounds). The chapter's argument:
    a framework that pays per call (the literal loop) wins time with larger batches, while
    the compiled kernel, paying per example, wins with the fewest examples."""
    import pandas as pd

    table = np.load(ROOT / "data/prepared/airfoil.npy")
    x, y = table[:, :-1].astype(np.float32), table[:, -1].astype(np.float32)
    steps = pd.read_csv(ROOT / "plots/sweep_best/airfoil.csv").set_index("batch_size")
    grid = pd.read_csv(ROOT / "plots/sweep/airfoil.csv")
    lrs = grid[grid["best"]].set_index("batch_size")["lr"]
    rows = []
    for batch in steps.index:
        per_epoch = -(-len(y) // batch)
        row = {"batch_size": int(batch), "steps": float(steps.loc[batch, "steps"]),
               "lr": float(lrs[batch])}
        for engine, updates in (("loop", 200), ("affine", 400), ("compiled", 20000)):
            epochs = -(-updates // per_epoch)
            plans = [Plan(n_examples=len(y), batch_size=int(batch), epochs=e,
                          lr=row["lr"]) for e in (epochs, 2 * epochs)]
            made = [schedule(plan) for plan in plans]
            # a run that diverged would stop early and time fewer updates than counted
            assert timed_runs(engine, x, y, plans[1], made=made[1]).diverged_at[0] < 0
            best = interleaved({k: functools.partial(timed_runs, engine, x, y, plans[k],
                                                     made=made[k]) for k in (0, 1)}, 5)
            per_update = (best[1] - best[0]) / (epochs * per_epoch)
            row[f"{engine}_s_to_target"] = row["steps"] * per_update
        rows.append(row)
    return rows


def features_sweep(device: str) -> list[dict]:
    """Microseconds per update of each backend as the features grow (1000 rows, batch 1,
    one epoch): the affine maps cost O(p^3) per update, the others O(p), so past some p the
    affine scan loses even to the literal loop. Run on `device` too where it is a GPU."""
    rows = []
    for p in (2, 5, 10, 20, 50, 100, 200):
        generator = np.random.default_rng(p)
        x = generator.standard_normal((1000, p), dtype=np.float32)
        y = x @ generator.standard_normal(p, dtype=np.float32)
        plan = Plan(n_examples=1000, batch_size=1, epochs=1, lr=0.01 / p)
        row = {"features": p}
        runs = [("loop", "cpu"), ("affine", "cpu"), ("compiled", "cpu")]
        if device != "cpu":
            runs += [("loop", device), ("affine", device)]
        for engine, on in runs:
            timed_runs(engine, x, y, plan, device=on)  # warm (compile, allocate)
            key = f"{engine}_us_per_update" + ("" if on == "cpu" else f"_{on.split(':')[0]}")
            row[key] = seconds_per_call(engine, x, y, plan, on, repeats=11) / 1000 * 1e6
        rows.append(row)
    return rows


LARGE = """
import resource, sys, time
import numpy as np
from bench.benchmark import Plan, timed_runs, schedule
n, p, runs = (int(v) for v in sys.argv[1:4])
engine, device = sys.argv[4:6]
rng = np.random.default_rng(0)
x = rng.standard_normal((n, p), dtype=np.float32)
y = x @ rng.standard_normal(p, dtype=np.float32) + rng.standard_normal(n, dtype=np.float32) / 10
plan = Plan(n_examples=n, batch_size=1, epochs=1, lr=0.01 / p, log_every=100)
timed_runs(engine, x[:1000], y[:1000], Plan(n_examples=1000, batch_size=1, epochs=1, lr=0.01),
        device=device)  # compile or load the kernel, untimed
def status(key):  # kB figures of /proc/self/status, in bytes
    line = next(l for l in open("/proc/self/status") if l.startswith(key + ":"))
    return int(line.split()[1]) * 1024
open("/proc/self/clear_refs", "w").write("5")  # restart the peak (VmHWM) from here
base = status("VmRSS")
started = time.perf_counter()
made = schedule(plan, runs)
scheduling = time.perf_counter() - started
started = time.perf_counter()
runs_done = timed_runs(engine, x, y, plan, runs, device, made)
seconds = time.perf_counter() - started
assert np.isfinite(runs_done.final).all()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(scheduling, seconds, peak, status("VmHWM") - base + x.nbytes + y.nbytes,
      x.nbytes + y.nbytes)
"""


def large(n: int, p: int, runs: int, engine: str = "compiled", device: str = "cpu") -> dict:
    """One epoch of batch-1 SGD on an n x p float32 set, logging every 100 examples, in a
    fresh process: its peak resident memory, and the run's part of it (the peak less what
    the interpreter and libraries held before the data was made, plus the data)."""
    best, scheduling, peak, run_peak, data = float("inf"), float("inf"), 0.0, 0.0, 0.0
    for _ in range(2):
        out = subprocess.run([sys.executable, "-c", LARGE, str(n), str(p), str(runs), engine,
                              device], cwd=ROOT, capture_output=True, text=True, check=True)
        making, seconds, peak, run_peak, data = (float(v) for v in out.stdout.split()[-5:])
        best, scheduling = min(best, seconds), min(scheduling, making)
    return {"rows": n, "features": p, "runs": runs, "engine": engine, "device": device,
            "seconds_per_epoch": best, "ns_per_update": best / (n * runs) * 1e9,
            "schedule_seconds": scheduling,
            "peak_memory_bytes": int(peak), "data_bytes": int(data),
            # the run's own peak (data, schedule, results) over the data, interpreter aside
            "peak_over_data": run_peak / data}


def pipeline() -> dict:
    """Cold `dvc repro` of a fresh copy of the project, then one `dvc exp run -S` (left out
    where dvc is not installed, as on a lent GPU machine's image)."""
    import shutil
    import tempfile

    if not (shutil.which("dvc") and shutil.which("git")):
        return {}

    from tests.conftest import copy_project, find_airfoil, run, stage_env

    airfoil_file = find_airfoil()
    env = stage_env(airfoil_file)
    with tempfile.TemporaryDirectory() as folder:
        project = copy_project(Path(folder) / "project", airfoil_file)
        started = time.perf_counter()
        run(["dvc", "repro"], project, env)
        cold = time.perf_counter() - started
        run(["git", "add", "-A"], project, env)
        run(["git", "commit", "-qm", "results", "--allow-empty"], project, env)
        started = time.perf_counter()
        run(["dvc", "exp", "run", "-S", "batch_size=20"], project, env)
        experiment = time.perf_counter() - started
    return {"cold_dvc_repro_s": cold, "dvc_exp_run_batch_size_20_s": experiment}


def imports() -> dict:
    """Seconds to import what a stage needs (each in a fresh interpreter)."""
    def cost(statement: str) -> float:
        return min(float(subprocess.run(
            [sys.executable, "-c", f"import time; t = time.perf_counter(); {statement}; "
             "print(time.perf_counter() - t)"], cwd=ROOT, capture_output=True, text=True,
            check=True).stdout) for _ in range(3))

    return {"train_stage_cpu": cost("import descent.training, descent.data, "
                                    "descent.engines.compiled"),
            "torch": cost("import torch"), "sklearn": cost("import sklearn.linear_model"),
            "matplotlib": cost("import matplotlib.pyplot")}


def draw(results: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right, sweep, target) = plt.subplots(1, 4, figsize=(21, 4))
    batches = [row["batch_size"] for row in results["airfoil"]]
    for key in [k for k in results["airfoil"][0] if k.endswith("_s_per_epoch")]:
        points = [(row["batch_size"], row[key]) for row in results["airfoil"] if key in row]
        left.plot(*zip(*points), marker="o", label=key.removesuffix("_s_per_epoch"))
    left.set(xscale="log", yscale="log", xlabel="batch size", ylabel="seconds per epoch",
             title="airfoil (1500 x 5), per epoch", xticks=batches)
    left.legend()
    for p in sorted({row["features"] for row in results["large"]}):
        points = [(row["rows"], row["seconds_per_epoch"]) for row in results["large"]
                  if row["features"] == p and row["runs"] == 1 and row["device"] == "cpu"]
        right.plot(*zip(*points), marker="o", label=f"compiled, {p} features")
    right.set(xscale="log", yscale="log", xlabel="rows (one epoch, batch 1)",
              ylabel="seconds", title="synthetic sets, loss every 100 examples")
    right.legend()
    for key in [k for k in results["features"][0] if k != "features"]:
        sweep.plot([row["features"] for row in results["features"]],
                   [row[key] for row in results["features"]], marker="o",
                   label=key.replace("_us_per_update", "").replace("_", " on "))
    sweep.set(xscale="log", yscale="log", xlabel="features (1000 rows, batch 1)",
              ylabel="µs per update", title="cost per update as features grow")
    sweep.legend()
    rows = results["time_to_target"]
    for engine, color in (("loop", "C3"), ("affine", "C0"), ("compiled", "C2")):  # as left
        target.plot([row["batch_size"] for row in rows],
                    [row[f"{engine}_s_to_target"] for row in rows], marker="o", label=engine,
                    color=color)
    target.set(xscale="log", yscale="log", xlabel="batch size (best lr, steps measured)",
               ylabel="seconds", title="airfoil, wall-clock time to the sweep's target")
    target.legend()
    figure.tight_layout()
    figure.savefig(OUT / "results.png", dpi=90)


def main() -> None:
    import torch  # the loop and affine engines need it anyway

    cuda = torch.cuda.is_available()
    engines = ["loop", "affine", "compiled"]
    results = {"machine": {"cpu": platform.processor() or platform.machine(),
                           "cores": os.cpu_count(), "python": platform.python_version(),
                           "cuda": cuda},
               "imports_s": imports(), "airfoil": airfoil(engines, "cuda" if cuda else "cpu")}
    cases = [(10**4, 5, 1), (10**5, 5, 1), (10**6, 5, 1), (10**7, 5, 1), (10**4, 100, 1),
             (10**5, 100, 1), (10**6, 100, 1), (10**6, 10, 1), (10**4, 10, 16),
             (10**4, 10, 256)]
    results["sweep_grid"] = sweep_grid_cost()
    results["time_to_target"] = time_to_target()
    results["features"] = features_sweep("cuda" if cuda else "cpu")
    results["large"] = [large(*case) for case in cases]
    if cuda:  # the engine issue's GPU targets: 256 seeds x 10^6 updates, 10^6 x 100 batch 1
        results["large"] += [large(10**6, 10, 1, "affine", "cuda"),
                             large(10**4, 10, 256, "affine", "cuda"),
                             large(10**6, 10, 256, "affine", "cuda"),
                             large(10**6, 100, 1, "affine", "cuda")]
    results["pipeline"] = pipeline()
    write_json(OUT / "results.json", results)
    draw(results)
    print(f"machine: {results['machine']}")
    print("imports (s): " + ", ".join(f"{k} {v:.2f}" for k, v in results["imports_s"].items()))
    print(f"{'airfoil batch':>14s}" + "".join(f"{e + ' s/epoch':>20s}" for e in engines)
          + f"{'sklearn s/epoch':>18s}")
    for row in results["airfoil"]:
        print(f"{row['batch_size']:14d}" + "".join(f"{row[e + '_s_per_epoch']:20.6f}"
                                                   for e in engines)
              + (f"{row['sklearn_s_per_epoch']:18.6f}" if "sklearn_s_per_epoch" in row else ""))
    sgd = results["airfoil"][0]
    print(f"airfoil SGD, SGDRegressor over compiled: "
          f"{sgd['sklearn_s_per_epoch'] / sgd['compiled_s_per_epoch']:.1f}x interleaved, "
          f"{sgd['sklearn_alone_s_per_epoch'] / sgd['compiled_alone_s_per_epoch']:.1f}x each "
          f"alone; {sgd['compiled_ns_per_update']:.1f} ns per update, "
          f"{sgd['compiled_fixed_s_per_call'] * 1e6:.0f} µs fixed per call")
    print(f"{'sweep batch':>12s}{'single ns/upd':>15s}{'grid ns/run-upd':>17s}{'ratio':>7s}")
    for row in results["sweep_grid"]:
        print(f"{row['batch_size']:12d}{row['single_ns_per_update']:15.1f}"
              f"{row['grid_ns_per_run_update']:17.1f}{row['ratio']:7.2f}")
    print(f"{'target batch':>12s}{'steps':>8s}" + "".join(
        f"{e + ' ms':>13s}" for e in ("loop", "affine", "compiled")))
    for row in results["time_to_target"]:
        print(f"{row['batch_size']:12d}{row['steps']:8.1f}" + "".join(
            f"{row[e + '_s_to_target'] * 1e3:13.4f}" for e in ("loop", "affine", "compiled")))
    keys = [k for k in results["features"][0] if k != "features"]
    print(f"{'features':>9s}" + "".join(f"{k.replace('_us_per_update', ' µs/upd'):>22s}"
                                        for k in keys))
    for row in results["features"]:
        print(f"{row['features']:9d}" + "".join(f"{row[k]:22.2f}" for k in keys))
    print(f"{'rows':>10s}{'features':>9s}{'runs':>6s}{'device':>7s}{'s/epoch':>10s}"
          f"{'ns/update':>10s}{'schedule s':>11s}{'peak/data':>10s}")
    for row in results["large"]:
        print(f"{row['rows']:10d}{row['features']:9d}{row['runs']:6d}{row['device']:>7s}"
              f"{row['seconds_per_epoch']:10.3f}{row['ns_per_update']:10.1f}"
              f"{row['schedule_seconds']:11.3f}{row['peak_over_data']:10.1f}")
    print("pipeline (s): " + (", ".join(f"{k} {v:.1f}" for k, v in results["pipeline"].items())
                              or "left out (no dvc here)"))
    print(f"wrote {OUT / 'results.json'} and {OUT / 'results.png'}")


if __name__ == "__main__":
    main()
