"""The sweep as one PNG for the README (stage `sweep`): per swept recipe, a row of three panels.

- steps to target at each batch size's best learning rate (points), the fitted
  S_min + E_min / B (dashed), the measured B_crit with its 95 % interval (shaded) and the
  predicted B_noise (dotted), log-log;
- the same in examples (steps x B): flat where a larger batch stops paying;
- every grid point, batch size x learning rate over its critical rate, coloured by the
  mean steps to target (grey: a seed missed it, x: runs diverged), with the mean-square
  limit at 1 (theory) as a line.

Sized as plots/comparison.png is (descent.figure: every text at least 10 pt at GitHub's
width). Writes plots/sweep.png.
"""
from __future__ import annotations

import math

import numpy as np

from descent.figure import DPI, FONT, WIDTH
from descent.io import atomic_write

NOT_REACHED = "not reached"


def build(sweeps: dict):
    """sweeps: recipe -> (headline dict, grid rows, best rows) as the sweep stage writes
    them. Returns the matplotlib Figure."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import LogNorm
    from matplotlib.figure import Figure

    row_height = 3.3
    figure = Figure(figsize=(WIDTH, 0.9 + row_height * len(sweeps)), dpi=DPI)
    FigureCanvasAgg(figure)
    with matplotlib.rc_context({"font.size": FONT, "axes.titlesize": FONT,
                                "legend.fontsize": FONT}):
        axes = figure.subplots(len(sweeps), 3, squeeze=False)
        figure.subplots_adjust(left=0.08, right=0.98, bottom=0.16 / len(sweeps) + 0.06,
                               top=1 - 0.75 / (0.9 + row_height * len(sweeps)),
                               wspace=0.45, hspace=0.6)
        for row, (name, (headline, grid, best)) in enumerate(sweeps.items()):
            steps_axis, examples_axis, grid_axis = axes[row]
            batches = np.array([point["batch_size"] for point in best], float)
            steps = np.array([point["steps"] for point in best], float)
            curve = np.geomspace(batches.min(), batches.max(), 100)
            s_min, e_min = headline["s_min"], headline["e_min"]
            for axis, scale, label in ((steps_axis, 1.0, "steps"),
                                       (examples_axis, None, "examples")):
                factor = curve if scale is None else 1.0
                axis.plot(batches, steps * (batches if scale is None else 1.0), "o",
                          color="black", label="best lr")
                axis.plot(curve, (s_min + e_min / curve) * factor, "--", color="black",
                          linewidth=1.2, label="fit")
                _mark_batches(axis, headline)
                axis.set(xscale="log", yscale="log", xlabel="batch size",
                         ylabel=f"{label} to target")
                axis.grid(True, which="major", alpha=0.3)
            steps_axis.set_title(f"{name}: steps")
            examples_axis.set_title("examples")
            steps_axis.legend(loc="upper right", frameon=False, handlelength=1.2)
            _grid_map(grid_axis, grid, LogNorm)
            grid_axis.set_title("steps at each lr")
        figure.text(0.5, 1 - 0.08 / (0.9 + row_height * len(sweeps)),
                    "shaded: B_crit measured (95 %); dotted: B_noise predicted; "
                    "grid: dark = fewer steps, grey = missed, x = diverged",
                    ha="center", va="top")
    return figure


def _mark_batches(axis, headline: dict) -> None:
    """The measured B_crit (its interval shaded) and the predicted B_noise."""
    low, high = headline.get("b_crit_ci95_low"), headline.get("b_crit_ci95_high")
    if low is not None and high is not None and math.isfinite(low) and math.isfinite(high):
        axis.axvspan(low, high, color="tab:blue", alpha=0.12, linewidth=0)
    if headline.get("b_crit") is not None:
        axis.axvline(headline["b_crit"], color="tab:blue", linewidth=1.2)
    axis.axvline(headline["b_noise_predicted"], color="tab:red", linestyle=":",
                 linewidth=1.6)


def _grid_map(axis, grid: list[dict], norm) -> None:
    """Batch size (columns, in order) x lr over its critical lr (log), coloured by steps."""
    batches = sorted({point["batch_size"] for point in grid})
    factors = sorted({point["lr_over_critical"] for point in grid})
    cells = np.full((len(factors), len(batches)), np.nan)
    for point in grid:
        if point["steps"] != NOT_REACHED:
            cells[factors.index(point["lr_over_critical"]),
                  batches.index(point["batch_size"])] = point["steps"]
    axis.set_facecolor("0.85")  # grey where a seed missed the target
    shown = axis.imshow(cells, origin="lower", aspect="auto", cmap="viridis",
                        norm=norm(vmin=np.nanmin(cells), vmax=np.nanmax(cells)),
                        extent=(-0.5, len(batches) - 0.5, -0.5, len(factors) - 0.5))
    for point in grid:
        if point["diverged_fraction"] > 0:
            axis.plot(batches.index(point["batch_size"]),
                      factors.index(point["lr_over_critical"]), "x", color="red",
                      markersize=7, mew=1.8)
    # The mean-square limit (lr = critical lr) between the grid's rows around 1.
    below = sum(factor < 1 for factor in factors)
    at = below - 0.5 if 1.0 not in factors else factors.index(1.0)
    axis.axhline(at, color="white", linewidth=1.5)
    axis.set_xticks(range(len(batches)), [str(b) for b in batches], rotation=45)
    axis.set_yticks(range(len(factors))[::2], [f"{f:g}" for f in factors][::2])
    axis.set(xlabel="batch size", ylabel="lr / critical lr")
    axis.figure.colorbar(shown, ax=axis, pad=0.02).set_label("mean steps")


def draw(sweeps: dict, output) -> None:
    figure = build(sweeps)
    atomic_write(output, lambda tmp: figure.savefig(tmp, format="png", dpi=DPI))
