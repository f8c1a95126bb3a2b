"""The `dvc plots diff` page, drawn by a real browser: headless Chromium renders every chart
with Vega's SVG renderer, and a script in the page measures what each layer drew.

Vega-Lite specs that compile can still draw nothing (a band as thousands of one-point paths,
a rule with an infinite extent): only the drawn geometry shows it. Skipped without Chromium
(`apt-get install -y chromium`).
"""
from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import dvc, run, stage_env

BROWSER = next(filter(None, map(shutil.which, ("chromium", "chromium-browser",
                                               "google-chrome"))), None)
pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(BROWSER is None, reason="needs Chromium to render the "
                                 "plots page (apt-get install -y chromium)")]
BATCH_SIZES = (20, 100)  # one experiment each: with HEAD, three revisions on the page
# The second experiment also draws the plane's batches with replacement: its loss charts
# then carry the predicted mean curves (dotted, .dvc/plots/variants.json). A curve without
# a prediction gets an invisible dotted copy of itself: an empty layer would make Vega warn.
REPLACED = "plane_2x1_minus3p4x2"
PREDICTED_DASH = "2,2"

# Runs in the page after every chart: per chart, per panel (a facet cell, or the whole
# chart), each drawn mark of the layers (role-mark groups) with its geometry and style.
MEASURE = r"""
<script>
Promise.allSettled(window.plotsDrawn).then(settled => {
  const charts = {};
  try {
  settled.forEach((outcome, i) => {
    const id = window.plotIds[i];
    if (outcome.status === 'rejected') { charts[id] = {error: String(outcome.reason)}; return; }
    const svg = document.querySelector('#' + id + ' svg');
    const headers = [...svg.querySelectorAll('.role-column-header text')].map(t => t.textContent);
    const cells = [...svg.querySelectorAll('g.cell > g')];
    const panels = (cells.length ? cells : [svg]).map((cell, c) => ({
      name: cells.length ? headers[c] : null,
      marks: [...cell.querySelectorAll('g.role-mark')].flatMap(group =>
        [...group.children].map(el => {
          const box = el.getBBox(), style = getComputedStyle(el);
          return {type: group.getAttribute('class').match(/mark-(\w+)/)[1],
                  points: ((el.getAttribute('d') || '').match(/[MLC]/g) || []).length,
                  width: box.width, height: box.height, stroke: style.stroke,
                  fill: style.fill, opacity: +style.opacity, dash: el.getAttribute('stroke-dasharray')};
        }))}));
    charts[id] = {panels};
  });
  } catch (error) { charts.error = String(error); }
  const report = document.createElement('pre');
  report.id = 'plot-report';
  report.textContent = JSON.stringify({charts, warnings: window.plotWarnings});
  document.body.appendChild(report);
});
</script>
"""
# Before any chart: collect Vega's warnings (e.g. "Infinite extent for field").
COLLECT = "<script>window.plotsDrawn = []; window.plotIds = []; window.plotWarnings = [];" \
          "const warn = console.warn; console.warn = (...a) => " \
          "{ window.plotWarnings.push(a.join(' ')); warn(...a); };</script>"


def render(page: Path, browser_profile: Path) -> dict:
    """What the browser drew on a `dvc plots` page (vega-embed switched to SVG)."""
    text = page.read_text()
    # The inlined libraries spell "</head>" and "</body>" in strings: take the last ones.
    head, body = text.rfind("</head>"), text.rfind("</body>")
    text = text[:head] + COLLECT + text[head:body] + MEASURE + text[body:]
    text = re.sub(r"vegaEmbed\('#([^']+)', spec\)",
                  r"window.plotIds.push('\1'); "
                  r"window.plotsDrawn.push(vegaEmbed('#\1', spec, {renderer: 'svg'}))", text)
    measured = page.with_name("measured.html")
    measured.write_text(text)
    dom = subprocess.run(
        ["timeout", "180", BROWSER, "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", f"--user-data-dir={browser_profile}",
         "--virtual-time-budget=30000", "--dump-dom", measured.as_uri()],
        capture_output=True, text=True).stdout
    found = re.search(r'<pre id="plot-report">(.*?)</pre>', dom, re.S)
    assert found, f"the page never finished drawing; the browser returned {dom[-2000:]!r}"
    return json.loads(html.unescape(found.group(1)))


@pytest.fixture(scope="module")
def page(built, tmp_path_factory, airfoil_file) -> tuple[dict, dict]:
    """The `dvc plots diff` page of HEAD and two batch-size experiments, as drawn, and the
    plot data of each chart (rows by revision) to hold it against."""
    project = Path(shutil.copytree(built, tmp_path_factory.mktemp("plots") / "project",
                                   symlinks=True))
    env = stage_env(airfoil_file)
    revisions = ["HEAD"]
    for size in BATCH_SIZES:
        extra = ["-S", f"+recipes.{REPLACED}.with_replacement=true"] \
            if size == BATCH_SIZES[-1] else []
        dvc(project, env, "exp", "run", "-n", f"bs{size}", "-S", f"batch_size={size}", *extra)
        run(["git", "checkout", "params.yaml"], project, env)  # -S leaves it modified
        revisions.append(f"bs{size}")
    dvc(project, env, "plots", "diff", *revisions, "-o", "out")
    shown = json.loads(dvc(project, env, "plots", "diff", *revisions, "--json").stdout)
    data = {re.sub(r"\W", "_", name): [row for entry in entries
                                       for row in entry["content"]["data"]["values"]]
            for name, entries in shown["data"].items()
            if entries and "data" in entries[0].get("content", {})}
    drawn = render(project / "out/index.html", tmp_path_factory.mktemp("chromium-profile"))
    return drawn, data


def series(rows: list[dict]) -> dict[tuple[str, str], list[dict]]:
    """A chart's rows by (revision, variant): one drawn curve each."""
    grouped: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        grouped.setdefault((row["rev"], row["variant"]), []).append(row)
    return grouped


def check_panel(marks: list[dict], curves: dict[tuple[str, str], list[dict]],
                predictions: bool = True) -> None:
    """One panel drew a band and a line per curve, a closed-form rule per revision, a
    cross where runs diverged, and (with `predictions`: the variants template) a dotted line
    per curve with a predicted mean."""
    of = lambda kind: [mark for mark in marks if mark["type"] == kind]  # noqa: E731
    lengths = sorted(len(rows) for rows in curves.values())
    # A line has a vertex per logged point; a band goes out along low and back along high.
    dotted = [mark for mark in of("line") if mark["dash"] == PREDICTED_DASH]
    predicted = [mark for mark in dotted if mark["opacity"] > 0]
    assert sorted(mark["points"] for mark in of("line") if mark not in dotted) == lengths
    assert sorted(mark["points"] for mark in predicted) == sorted(
        n for n in (sum(row.get("predicted", "") != "" for row in rows)
                    for rows in curves.values()) if n and predictions)
    assert sorted(mark["points"] for mark in of("area")) == [2 * n for n in lengths]
    assert all(mark["width"] > 0 for mark in of("area") + of("line"))
    # One closed-form rule per revision, drawn across the curves (was: none).
    assert len(of("rule")) == len({rev for rev, _ in curves})
    assert all(mark["width"] > 10 and mark["height"] == 0 for mark in of("rule"))
    # A cross for each curve whose diverged count rises (was: none, even for line_minus5x SGD).
    rises = sum(int(b["diverged"]) > int(a["diverged"])
                for rows in curves.values() for a, b in zip([{"diverged": 0}] + rows, rows))
    # Each curve's first point also carries an invisible symbol: an empty layer would make
    # Vega warn of an infinite extent.
    crosses = [mark for mark in of("symbol") if mark["opacity"] > 0]
    assert len(crosses) == rises
    assert all(mark["width"] > 0 and mark["height"] > 0 for mark in crosses)


SWEEP = "plots_sweep_best"  # the sweep's chart (its template: .dvc/plots/sweep.json)
GRID = "plots_sweep_"       # and its grid (.dvc/plots/sweep_grid.json)


def check_grid(panels: list[dict], rows: list[dict]) -> None:
    """A panel per revision: a grey cell per grid point, a coloured one over each point every
    seed reached, a cross on each point where runs diverged."""
    assert sorted(panel["name"] for panel in panels) == sorted({row["rev"] for row in rows})
    for panel in panels:
        mine = [row for row in rows if row["rev"] == panel["name"]]
        reached = sum(row["steps"] != "not reached" for row in mine)
        diverged = sum(float(row["diverged_fraction"]) > 0 for row in mine)
        kinds = Counter(mark["type"] for mark in panel["marks"])
        assert kinds["rect"] == len(mine) + reached and kinds["text"] == diverged, kinds
        assert 0 < reached < len(mine) and diverged > 0  # the grid reaches past the limit


def check_sweep(marks: list[dict], rows: list[dict]) -> None:
    """The sweep chart drew a point per (revision, batch size) and a dashed fitted line per
    revision through every batch size."""
    revisions = {row["rev"] for row in rows}
    points = [mark for mark in marks if mark["type"] == "symbol" and mark["opacity"] > 0]
    lines = [mark for mark in marks if mark["type"] == "line"]
    assert len(points) == len(rows)
    assert sorted(line["points"] for line in lines) == sorted(
        sum(row["rev"] == rev for row in rows) for rev in revisions)
    assert all(line["dash"] for line in lines)


def test_the_page_draws_every_layer_without_warnings(page):
    drawn, data = page
    assert drawn["warnings"] == []  # e.g. "Infinite extent for field" from a rule
    charts = {name: chart for name, chart in drawn["charts"].items() if name in data}
    assert len(charts) == 17  # 5 recipes x (loss, seconds, by revision), the sweep and grid
    for name, chart in charts.items():
        assert "error" not in chart, name
        if name.startswith(GRID) and not name.startswith(SWEEP):
            check_grid(chart["panels"], data[name])
            continue
        if name.startswith(SWEEP):
            [panel] = chart["panels"]
            check_sweep(panel["marks"], data[name])
            continue
        curves = series(data[name])
        panels = chart["panels"]
        if name.startswith("by_revision"):
            assert [panel["name"] for panel in panels] == ["gd", "sgd", "minibatch"]
            for panel in panels:
                check_panel(panel["marks"], {key: rows for key, rows in curves.items()
                                             if key[1] == panel["name"]}, predictions=False)
        else:
            [panel] = panels
            check_panel(panel["marks"], curves)
    # The predicted curves: on the plane's loss chart, one per variant of the experiment
    # whose batches were drawn with replacement, and none elsewhere.
    for name in data:
        if name.startswith(("plots_loss_", "plots_seconds_")):
            marks = drawn["charts"][name]["panels"][0]["marks"]
            dotted = [mark for mark in marks if mark["dash"] == PREDICTED_DASH
                      and mark["opacity"] > 0]
            assert len(dotted) == (3 if REPLACED in name else 0), name
    # The case that drew nothing: every SGD run on line_minus5x diverges at update 8.
    sgd = series(data["plots_loss_line_minus5x_csv"])[("HEAD", "sgd")]
    assert int(sgd[-1]["diverged"]) > 0 and int(sgd[-1]["updates"]) == 8


def test_revisions_are_told_apart_by_dash_per_variant_and_by_colour_per_revision(page):
    drawn, data = page
    for name, chart in drawn["charts"].items():
        if name not in data or name.startswith(GRID):
            continue
        if not name.startswith("by_revision"):
            # The variants charts: colour = variant, and each revision its own dash.
            lines = [mark for mark in chart["panels"][0]["marks"] if mark["type"] == "line"
                     and mark["dash"] != PREDICTED_DASH]
            for colour in {line["stroke"] for line in lines}:
                dashes = [line["dash"] for line in lines if line["stroke"] == colour]
                assert len(set(dashes)) == len(dashes) == 3, name
            continue
        for panel in chart["panels"]:
            lines = [mark for mark in panel["marks"] if mark["type"] == "line"]
            revisions = {rev for rev, variant in series(data[name]) if variant == panel["name"]}
            assert len({line["stroke"] for line in lines}) == len(revisions) == 3, name
            # Only the mini-batch runs change with batch_size: the GD and SGD curves of the
            # three revisions coincide, and take turns in dashes so that all three show.
            dashes = Counter(line["dash"] for line in lines)
            if panel["name"] == "minibatch":
                assert set(dashes) <= {None, "1,0"}, name
            else:
                assert len(dashes) == 3 and None not in dashes, name
