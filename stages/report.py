"""Stage `report`: what evaluate judged, shown two ways.

- plots/comparison.png: the three variants on every recipe, against epochs and against time
  (mean excess loss over the closed form, with its band over the seeds; descent.figure).
- metrics/reference.md and metrics/reference.json: this run's figures beside the published
  ones in data/published.yaml (descent.reference).

    python -m stages.report --readme   also copies the table into README.md
"""
from __future__ import annotations

from descent import config as configuration
from descent import paths
from descent.io import ROOT, UserError, cli, read_json, write_json, write_text


def main(*flags: str) -> None:
    config = configuration.load()
    from descent.figure import draw
    from descent.reference import build, update_readme

    try:
        judged = read_json(ROOT / paths.EVALUATION, "evaluate")
    except FileNotFoundError:
        raise UserError("metrics/evaluate.json not found; run `dvc repro evaluate`") from None
    rows, table, figures = build(config, judged)  # every input checked before any writing
    draw(list(config.recipes), judged, config.seeds, ROOT / paths.FIGURE)
    write_json(ROOT / paths.REFERENCE_JSON, rows)
    write_text(ROOT / paths.REFERENCE_TABLE, table)
    zs = [abs(figure.z) for figure in figures if figure.z is not None]
    print(f"wrote plots/comparison.png and metrics/reference.md: {len(rows)} published "
          f"figures, {sum(figure.compared for figure in figures)} compared "
          f"with this run" + (f", largest |z| {max(zs):.1f}" if zs else ""))
    if "--readme" in flags:
        update_readme(table)


if __name__ == "__main__":
    cli(main)()
