"""The README figure (descent.figure) reads well where GitHub shows it, about 880 px wide.

Drawn here from the committed plots/loss, plots/seconds and metrics/evaluate.json (in git),
which hold the cases that once went wrong: GD batches of 1500, 100 and 1000, times from
tens of microseconds to milliseconds, and a recipe whose SGD runs all diverge.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.text import Text

from tests.conftest import ROOT

GITHUB_WIDTH = 880  # CSS px of the README column; a narrower PNG is shown at its own size


def drawn(root: Path, tmp_path: Path):
    """The figure as stage `report` draws it from `root`'s files, once saved (which lays out
    every text), with its recipes, metrics/evaluate.json, and its PNG's width and dpi."""
    from PIL import Image

    from descent import figure
    from descent.config import load

    config = load(root / "params.yaml")
    judged = json.loads((root / "metrics/evaluate.json").read_text())
    names = list(config.recipes)
    built = figure.build(names, judged, config.seeds, root=root)
    png = tmp_path / "comparison.png"
    built.savefig(png, format="png", dpi=figure.DPI)  # as draw() does
    with Image.open(png) as image:
        width, dpi = image.width, image.info["dpi"][0]
    return built, names, judged, width, dpi


def panels(built, names: list[str]):
    """{recipe: (epoch axes, time axes)}, found by the recipe's name in the top title."""
    top = {axis.get_title().split("\n")[0]: axis for axis in built.axes if axis.get_title()}
    assert set(top) == set(names)
    bottom = [axis for axis in built.axes if not axis.get_title()]
    found = {}
    for name, axis in top.items():  # the time panel is the one right below
        x = axis.get_position().x0
        found[name] = (axis, min(bottom, key=lambda other: abs(other.get_position().x0 - x)))
    return found


def texts(built) -> list[Text]:
    return [text for text in built.findobj(Text)
            if text.get_visible() and text.get_text().strip()]


def check_gd_labels(built, names, judged) -> None:
    for name, (top, _) in panels(built, names).items():
        labels = [text.get_text() for text in top.get_legend().get_texts()]
        for variant, shown in (("gd", "GD"), ("sgd", "SGD"), ("minibatch", "mini-batch")):
            batch = judged[name][variant]["batch_size"]
            assert f"{shown} ({batch})" in labels, (name, labels)
    heading = " ".join(text.get_text() for text in built.texts)
    assert "(n): batch size" in heading


def check_one_time_unit_per_row(built, names, root) -> None:
    found = panels(built, names)
    assert {top.get_xlabel() for top, _ in found.values()} == {"epochs"}
    units = {bottom.get_xlabel() for _, bottom in found.values()}
    assert len(units) == 1, units
    unit = re.fullmatch(r"time per run \((s|ms|µs)\)", units.pop()).group(1)
    factor = {"s": 1.0, "ms": 1e3, "µs": 1e6}[unit]
    for name, (_, bottom) in found.items():
        # The axis really is in that unit: the longest time drawn is the longest measured.
        seconds = pd.read_csv(root / f"plots/seconds/{name}.csv")["seconds"].max()
        longest = max(np.nanmax(line.get_xdata()) for line in bottom.lines)
        assert longest == pytest.approx(seconds * factor, rel=1e-9), name


def check_font_sizes(built, width: float, dpi: float) -> None:
    # An f-point font is f * dpi / 72 PNG px; shown scaled by min(1, 880 / width) it must be
    # at least 10 pt at 100 % zoom, i.e. 10 * 96 / 72 CSS px.
    scale = min(1.0, GITHUB_WIDTH / width)
    bound = 10 * 96 / 72 / (dpi / 72) / scale
    small = {(text.get_text(), text.get_fontsize()) for text in texts(built)
             if text.get_fontsize() < bound - 1e-9}
    assert not small, f"under {bound:.2f} pt: {sorted(small)[:5]}"


def curve_points(line) -> np.ndarray:
    """Display points along every drawn segment of `line`, about a pixel apart."""
    xy = line.get_transform().transform(np.column_stack(line.get_data()))
    points = [xy[np.isfinite(xy).all(axis=1)]]
    if line.get_linestyle() not in ("None", ""):
        for start, end in zip(xy[:-1], xy[1:]):
            if np.isfinite(start).all() and np.isfinite(end).all():
                steps = int(np.hypot(*(end - start))) + 2
                points.append(start + np.linspace(0, 1, steps)[:, None] * (end - start))
    return np.concatenate(points)


def check_no_text_covers_a_curve(built) -> list[Text]:
    renderer = built.canvas.get_renderer()
    curves = [(axis, curve_points(line)) for axis in built.axes for line in axis.lines]
    notes = [text for text in texts(built) if text.get_gid() == "note"]
    for text in texts(built):
        box = text.get_window_extent(renderer)
        for axis, points in curves:
            inside = ((points[:, 0] >= box.x0) & (points[:, 0] <= box.x1)
                      & (points[:, 1] >= box.y0) & (points[:, 1] <= box.y1))
            assert not inside.any(), (text.get_text(), axis.get_title())
    return notes


@pytest.fixture(scope="module")
def committed(tmp_path_factory):
    return drawn(ROOT, tmp_path_factory.mktemp("figure"))


def test_each_panel_names_its_own_gd_batch(committed):
    built, names, judged, _, _ = committed
    assert {judged[name]["gd"]["batch_size"] for name in names} == {100, 1000, 1500}
    check_gd_labels(built, names, judged)


def test_one_time_unit_for_the_whole_time_row(committed):
    built, names, _, _, _ = committed
    check_one_time_unit_per_row(built, names, ROOT)


def test_every_text_is_at_least_10_pt_at_githubs_width(committed):
    built, _, _, width, dpi = committed
    check_font_sizes(built, width, dpi)


def test_no_note_or_other_text_covers_a_curve(committed):
    built, names, judged, _, _ = committed
    notes = check_no_text_covers_a_curve(built)
    # line_minus5x's SGD runs all diverge: both its panels say so.
    assert judged["line_minus5x"]["sgd"]["diverged_fraction"] == 1.0
    assert [note.get_text() for note in notes] == ["SGD: 100%\ndiverged"] * 2


def test_the_sweep_figure_shows_every_batch_size_and_reads_at_githubs_width(tmp_path):
    """plots/sweep.png drawn again from the committed sweep outputs: a point per batch size
    in the steps and examples panels, a red x per grid point where runs diverged, a cell
    per grid point that every seed reached, and every text at least 10 pt at GitHub's
    width."""
    from PIL import Image

    from descent import sweep_figure
    from descent.config import load

    config = load(ROOT / "params.yaml")
    headlines = json.loads((ROOT / "metrics/sweep.json").read_text())
    sweeps = {}
    for name in config.sweep.recipes:
        grid = pd.read_csv(ROOT / f"plots/sweep/{name}.csv").to_dict("records")
        for point in grid:  # as the stage holds them: numbers, or "not reached"
            if point["steps"] != sweep_figure.NOT_REACHED:
                point["steps"] = float(point["steps"])
        best = pd.read_csv(ROOT / f"plots/sweep_best/{name}.csv").to_dict("records")
        sweeps[name] = headlines[name], grid, best
    built = sweep_figure.build(sweeps)
    png = tmp_path / "sweep.png"
    built.savefig(png, format="png", dpi=sweep_figure.DPI)
    with Image.open(png) as image:
        check_font_sizes(built, image.width, image.info["dpi"][0])
    axes = [axis for axis in built.axes if axis.get_label() != "<colorbar>"]
    for row, (name, (_, grid, best)) in enumerate(sweeps.items()):
        steps, examples, cells = axes[3 * row:3 * row + 3]
        for axis in (steps, examples):
            [points] = [line for line in axis.lines if line.get_marker() == "o"]
            assert len(points.get_xdata()) == len(best)
        crosses = [line for line in cells.lines if line.get_marker() == "x"]
        assert len(crosses) == sum(point["diverged_fraction"] > 0 for point in grid) > 0
        [image] = cells.images
        reached = sum(point["steps"] != sweep_figure.NOT_REACHED for point in grid)
        assert int(np.isfinite(image.get_array().filled(np.nan)).sum()) == reached
