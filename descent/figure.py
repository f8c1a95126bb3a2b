"""One matplotlib figure comparing the three variants on every recipe (stage `report`).

Top row: excess loss over the closed-form optimum against epochs; bottom row: against
wall-clock time per run (the d2l chapter's point: per epoch GD looks best, per second
mini-batches win). Each line is the mean over the seeds, its band the 10th-90th percentile
of the runs; log y. Writes plots/comparison.png.
"""
from __future__ import annotations

from descent.io import ROOT, UserError, atomic_write

# The same colours as the DVC plots' template (.dvc/plots/variants.json).
COLOURS = {"gd": "#1f77b4", "sgd": "#ff7f0e", "minibatch": "#2ca02c"}
NAMES = {"gd": "GD", "sgd": "SGD", "minibatch": "mini-batch"}


def time_unit(largest: float) -> tuple[float, str]:
    """A unit that puts the longest time between about 1 and 1000."""
    for factor, unit in ((1.0, "s"), (1e3, "ms"), (1e6, "µs")):
        if largest * factor >= 1:
            return factor, unit
    return 1e6, "µs"


def draw(recipes: list[str], judged: dict, seeds: int, output) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt
    import pandas as pd
    from matplotlib.ticker import NullLocator

    # A fixed title height: automatic placement measured every tick label (~0.4 s).
    plt.rcParams.update({"font.size": 11, "axes.titlesize": 11, "axes.titley": 1.02})
    figure, axes = plt.subplots(2, len(recipes), figsize=(3.3 * len(recipes), 6.6),
                                squeeze=False)
    for column, name in enumerate(recipes):
        try:
            frame = pd.read_csv(ROOT / f"plots/loss/{name}.csv")
            timed = pd.read_csv(ROOT / f"plots/seconds/{name}.csv")
        except FileNotFoundError:
            raise UserError(f"plots/loss/{name}.csv not found; run `dvc repro evaluate`") \
                from None
        optimum = float(frame["closed_form"].iloc[0])
        # Excess loss spans decades; a floor keeps points at the optimum on the log axis.
        floor = max(optimum, 1e-12) * 1e-7
        factor, unit = time_unit(float(timed["seconds"].max()))
        for row, (data, x, scale) in enumerate(((frame, "epoch", 1.0),
                                                (timed, "seconds", factor))):
            axis = axes[row][column]
            for variant, curve in data.groupby("variant", sort=False):
                judged_variant = judged[name][variant]
                label = f"{NAMES.get(variant, variant)} (batch {judged_variant['batch_size']})"
                x_values = curve[x] * scale
                excess = (curve["loss"] - optimum).clip(lower=floor)
                axis.fill_between(x_values, (curve["low"] - optimum).clip(lower=floor),
                                  (curve["high"] - optimum).clip(lower=floor),
                                  color=COLOURS.get(variant), alpha=0.18, linewidth=0)
                axis.plot(x_values, excess, color=COLOURS.get(variant), linewidth=1.6,
                          label=label if column == 0 and row == 0 else None)
                if judged_variant["diverged_fraction"] > 0:  # mark where runs start to stop
                    first = curve[curve["diverged"] > 0].head(1)
                    if not first.empty:
                        axis.plot(first[x] * scale, (first["loss"] - optimum).clip(lower=floor),
                                  "x", color=COLOURS.get(variant), markersize=9, mew=2)
                    axis.annotate(f"{NAMES.get(variant, variant)}: "
                                  f"{judged_variant['diverged_fraction']:.0%} diverged",
                                  (0.02, 0.04 + 0.08 * list(COLOURS).index(variant)),
                                  xycoords="axes fraction", fontsize=9,
                                  color=COLOURS.get(variant))
            axis.set_yscale("log")
            # No minor ticks: each is two lines and a label to lay out (~0.3 s in all).
            axis.yaxis.set_minor_locator(NullLocator())
            axis.set_xlabel("epochs" if row == 0 else f"time per run ({unit})")
            axis.grid(True, which="major", alpha=0.3)
        axes[0][column].set_title(f"{name}\nclosed-form loss {optimum:.4g}")
    for row in range(2):
        axes[row][0].set_ylabel("loss − closed-form loss")
    figure.legend(loc="upper center", ncol=3, frameon=False, fontsize=12,
                  title=f"mean over {seeds} seeds; band: 10th–90th percentile of runs")
    # Fixed margins: tight_layout measures every log-axis tick label and took ~1.5 s here.
    figure.subplots_adjust(left=0.06, right=0.99, bottom=0.08, top=0.8, wspace=0.32,
                           hspace=0.42)
    atomic_write(output, lambda tmp: figure.savefig(tmp, format="png", dpi=80))
    plt.close(figure)
