"""One matplotlib figure comparing the three variants on every recipe (the `plots` stage).

Top row: excess loss over the closed-form optimum against epochs; bottom row: against
wall-clock seconds (the d2l chapter's point: per epoch GD looks best, per second
mini-batches win). Both on log axes. Writes plots/comparison.png.
"""
from __future__ import annotations

from descent.io import ROOT, UserError, atomic_write

COLOURS = {"gd": "tab:blue", "sgd": "tab:orange", "minibatch": "tab:green"}
LABELS = {"gd": "GD (whole set)", "sgd": "SGD (batch 1)", "minibatch": "mini-batch"}


def draw(recipes: list[str], judged: dict, output) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt
    import pandas as pd

    figure, axes = plt.subplots(2, len(recipes), figsize=(3.6 * len(recipes), 6.4),
                                squeeze=False, constrained_layout=True)
    for column, name in enumerate(recipes):
        try:
            by_examples = pd.read_csv(ROOT / f"plots/loss/{name}.csv")
            by_seconds = pd.read_csv(ROOT / f"plots/seconds/{name}.csv")
        except FileNotFoundError:
            raise UserError(f"plots/loss/{name}.csv not found; run `dvc repro evaluate`") \
                from None
        optimum = float(by_examples["closed_form"].iloc[0])
        # Excess loss spans decades; a floor keeps points at the optimum on the log axis.
        floor = max(optimum, 1e-12) * 1e-7
        for row, (frame, x, label) in enumerate(((by_examples, "epoch", "epochs"),
                                                 (by_seconds, "seconds", "seconds"))):
            axis = axes[row][column]
            for variant, curve in frame.groupby("variant", sort=False):
                excess = (curve["loss"] - optimum).clip(lower=floor)
                legend = LABELS.get(variant, variant)
                if judged[name][variant]["diverged"]:  # its curve stops where it blew up
                    legend += f", diverged at update {judged[name][variant]['diverged_at_update']}"
                axis.plot(curve[x], excess, color=COLOURS.get(variant), marker=".",
                          markersize=3, linewidth=1.2, label=legend)
            axis.set_yscale("log")
            axis.set_xlabel(label)
            axis.grid(True, which="major", alpha=0.3)
        axes[0][column].set_title(f"{name}\nclosed-form loss {optimum:.6g}", fontsize=9)
    axes[0][0].set_ylabel("loss - closed-form loss")
    axes[1][0].set_ylabel("loss - closed-form loss")
    for column in range(len(recipes)):
        axes[0][column].legend(fontsize=7)
    atomic_write(output, lambda tmp: figure.savefig(tmp, format="png", dpi=110))
    plt.close(figure)
