"""One matplotlib figure comparing the three variants on every recipe (stage `report`).

Top row: excess loss over the closed-form optimum against epochs; bottom row: against
wall-clock time per run (the d2l chapter's question: what an epoch of each costs in time).
Each line is the mean over the seeds, its band the 10th-90th percentile of the runs; log y.
Writes plots/comparison.png.

The figure is drawn for the README, which GitHub shows at most 880 CSS px wide (the PNG,
WIDTH * DPI px, at about half size): every text is at least 10 pt there at 100 % zoom, i.e.
FONT >= 10 * 96 / DPI * (WIDTH * DPI / 880) = 10 * 96 * WIDTH / 880 points in the figure
(11.8 for 10.8 in; tests/test_figure.py checks every text against the PNG it draws).
"""
from __future__ import annotations

from pathlib import Path

from descent import paths
from descent.io import ROOT, UserError, atomic_write

# The same colours as the DVC plots' template (.dvc/plots/variants.json).
COLOURS = {"gd": "#1f77b4", "sgd": "#ff7f0e", "minibatch": "#2ca02c"}
NAMES = {"gd": "GD", "sgd": "SGD", "minibatch": "mini-batch"}

WIDTH = 10.8           # inches
DPI = 160              # 1728 px: sharp on 2x screens, shown at about half size
FONT = 12              # points in the figure, every text (see above)


def time_unit(largest: float) -> tuple[float, str]:
    """A unit that puts `largest` (seconds) at 1 or more, as few digits as that allows."""
    for factor, unit in ((1.0, "s"), (1e3, "ms"), (1e6, "µs")):
        if largest * factor >= 1:
            return factor, unit
    return 1e6, "µs"


def read(root: Path, recipes: list[str]):
    """Each recipe's loss-per-epoch and loss-per-second frames (stage evaluate's plots)."""
    import pandas as pd

    frames = {}
    for name in recipes:
        try:
            frames[name] = (pd.read_csv(root / paths.loss_plot(name)),
                            pd.read_csv(root / paths.seconds_plot(name)))
        except FileNotFoundError:
            raise UserError(f"{paths.loss_plot(name)} not found; run `dvc repro evaluate`") \
                from None
    return frames


def covered(axis, box, renderer, bands: bool) -> bool:
    """Whether the display box `box` touches a line (or, with bands, a band) of `axis`."""
    import numpy as np
    from matplotlib.path import Path as MplPath

    for line in axis.lines:
        points = line.get_transform().transform(np.column_stack(line.get_data()))
        finite = np.isfinite(points).all(axis=1)
        if line.get_marker() not in (None, "None", ""):  # a marker is drawn around a point
            reach = line.get_markersize() * renderer.points_to_pixels(1) / 2
            if box.padded(reach).count_contains(points[finite]):
                return True
        if line.get_linestyle() in ("None", ""):
            continue
        # A NaN breaks the line: check each unbroken piece's segments.
        for piece in np.split(points, np.flatnonzero(~finite)):
            piece = piece[np.isfinite(piece).all(axis=1)]
            if len(piece) == 1 and box.count_contains(piece):
                return True
            if len(piece) > 1 and MplPath(piece).intersects_bbox(box, filled=False):
                return True
    if bands:
        for collection in axis.collections:
            transform = collection.get_transform()
            for path in collection.get_paths():
                if transform.transform_path(path).intersects_bbox(box, filled=True):
                    return True
    return False


# Where a note may go, in axes fraction, tried in order: corners first, then edges.
SPOTS = [((0.97, 0.95), "right", "top"), ((0.03, 0.04), "left", "bottom"),
         ((0.03, 0.95), "left", "top"), ((0.97, 0.04), "right", "bottom"),
         ((0.5, 0.95), "center", "top"), ((0.5, 0.04), "center", "bottom"),
         ((0.97, 0.5), "right", "center"), ((0.03, 0.5), "left", "center")]


def place_note(axis, text: str, colour: str, renderer) -> None:
    """Write `text` inside `axis` where it covers no curve (and, if it can, no band)."""
    note = axis.text(0, 0, text, transform=axis.transAxes, color=colour, fontsize=FONT,
                     gid="note")

    def put(spot) -> None:
        xy, horizontal, vertical = spot
        note.set_position(xy)
        note.set_horizontalalignment(horizontal)
        note.set_verticalalignment(vertical)

    for bands in (True, False):
        for spot in SPOTS:
            put(spot)
            if not covered(axis, note.get_window_extent(renderer), renderer, bands):
                return
    put(SPOTS[0])  # nowhere is free: the test of the figure says so


def build(recipes: list[str], judged: dict, seeds: int, root: Path = ROOT):
    """The figure (a matplotlib Figure, not yet saved)."""
    import matplotlib

    from matplotlib.backends.backend_agg import FigureCanvasAgg  # no display needed
    from matplotlib.figure import Figure
    from matplotlib.ticker import LogLocator, MaxNLocator, NullLocator

    frames = read(root, recipes)
    # One time unit for the whole row: the largest in which every recipe's longest run
    # takes at least 1 (the longest of all may then need a few more digits).
    factor, unit = time_unit(min(float(timed["seconds"].max())
                                 for _, timed in frames.values()))

    # Layout in inches, top to bottom; fixed, as tight_layout measured every log-axis tick
    # label.
    line = FONT / 72 * 1.25
    heading, titles, legend = 0.12 + line, 2 * line + 0.08, 3 * line + 0.12
    panel, below, gap, bottom = 1.95, 2 * line + 0.16, 0.22, 2 * line + 0.14
    height = heading + titles + legend + panel + below + gap + panel + bottom
    left, right = 0.72, 0.36
    figure = Figure(figsize=(WIDTH, height), dpi=DPI)
    FigureCanvasAgg(figure)  # measures the notes' text
    with matplotlib.rc_context({"font.size": FONT, "axes.titlesize": FONT,
                                "legend.fontsize": FONT}):
        axes = figure.subplots(2, len(recipes), squeeze=False)
        figure.subplots_adjust(left=left / WIDTH, right=1 - right / WIDTH,
                               bottom=bottom / height,
                               top=1 - (heading + titles + legend) / height,
                               hspace=(below + gap) / panel, wspace=0.5)
        crosses = predicted = False
        for column, name in enumerate(recipes):
            frame, timed = frames[name]
            optimum = float(frame["closed_form"].iloc[0])
            # Excess loss spans decades; a floor keeps points at the optimum on the log axis.
            floor = max(optimum, 1e-12) * 1e-7
            for row, (data, x, scale) in enumerate(((frame, "epoch", 1.0),
                                                    (timed, "seconds", factor))):
                axis = axes[row][column]
                for variant, curve in data.groupby("variant", sort=False):
                    judged_variant = judged[name][variant]
                    label = f"{NAMES.get(variant, variant)} ({judged_variant['batch_size']})"
                    x_values = curve[x] * scale
                    excess = (curve["loss"] - optimum).clip(lower=floor)
                    axis.fill_between(x_values, (curve["low"] - optimum).clip(lower=floor),
                                      (curve["high"] - optimum).clip(lower=floor),
                                      color=COLOURS.get(variant), alpha=0.18, linewidth=0)
                    axis.plot(x_values, excess, color=COLOURS.get(variant), linewidth=1.6,
                              label=label)
                    if "predicted" in curve and curve["predicted"].notna().any():
                        predicted = True  # batches drawn with replacement: exact theory
                        axis.plot(x_values, (curve["predicted"] - optimum).clip(lower=floor),
                                  ":", color=COLOURS.get(variant), linewidth=1.4)
                    if judged_variant["diverged_fraction"] > 0:  # where runs start to stop
                        first = curve[curve["diverged"] > 0].head(1)
                        if not first.empty:
                            crosses = True
                            axis.plot(first[x] * scale,
                                      (first["loss"] - optimum).clip(lower=floor), "x",
                                      color=COLOURS.get(variant), markersize=9, mew=2)
                axis.set_yscale("log")
                axis.yaxis.set_major_locator(LogLocator(numticks=5))
                # No minor ticks: each is two lines and a label to lay out.
                axis.yaxis.set_minor_locator(NullLocator())
                # Time ticks run to five digits: three labels fit a panel at 12 pt.
                axis.xaxis.set_major_locator(MaxNLocator(nbins=4 if row == 0 else 2,
                                                         integer=row == 0))
                axis.set_xlabel("epochs" if row == 0 else f"time per run ({unit})")
                axis.grid(True, which="major", alpha=0.3)
            top = axes[0][column]
            # Each recipe's own batch sizes (GD's is its number of rows), above its panels.
            top.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False,
                       handlelength=1.0, handletextpad=0.4, borderaxespad=0.1,
                       borderpad=0.1, labelspacing=0.2)
            top.set_title(f"{name}\nclosed form {optimum:.4g}",
                          y=1 + (legend + 0.04) / panel, pad=0)
        for row in range(2):
            axes[row][0].set_ylabel("loss − closed-form loss")
        figure.text(0.5, 1 - 0.1 / height, f"(n): batch size; line: mean over {seeds} "
                    "seeds, band: 10th–90th percentile of the runs"
                    + ("; ×: runs start to diverge" if crosses else "")
                    + ("; dotted: expected loss (theory)" if predicted else ""),
                    ha="center", va="top")
        # Notes last: where they may go depends on the final axes and limits.
        renderer = figure.canvas.get_renderer()
        for column, name in enumerate(recipes):
            for variant, results in judged[name].items():
                if isinstance(results, dict) and results.get("diverged_fraction", 0) > 0:
                    for row in range(2):
                        place_note(axes[row][column],
                                   f"{NAMES.get(variant, variant)}: "
                                   f"{results['diverged_fraction']:.0%}\ndiverged",
                                   COLOURS.get(variant), renderer)
    return figure


def draw(recipes: list[str], judged: dict, seeds: int, output) -> None:
    figure = build(recipes, judged, seeds)
    atomic_write(output, lambda tmp: figure.savefig(tmp, format="png", dpi=DPI))
