"""Stage `compare`: this pipeline's figures beside the published ones (data/published.yaml).

Writes metrics/reference.md (a Markdown table) and metrics/reference.json.

    python -m stages.compare --readme   also copies the table into README.md
"""
from __future__ import annotations

from descent import config as configuration
from descent.io import ROOT, cli, write_json, write_text
from descent.reference import build, update_readme


def main(*flags: str) -> None:
    rows, table = build(configuration.load())
    write_json(ROOT / "metrics/reference.json", rows)
    write_text(ROOT / "metrics/reference.md", table)
    zs = [abs(row["ours"]["z"]) for row in rows
          if isinstance(row["ours"], dict) and "z" in row["ours"]]
    print(f"wrote metrics/reference.md: {len(rows)} published figures, "
          f"{sum(isinstance(row['ours'], (dict, float)) for row in rows)} compared with this "
          f"run" + (f", largest |z| {max(zs):.1f}" if zs else ""))
    if "--readme" in flags:
        update_readme(table)


if __name__ == "__main__":
    cli(main)()
