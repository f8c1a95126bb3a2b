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
    print(table)
    if "--readme" in flags:
        update_readme(table)


if __name__ == "__main__":
    cli(main)()
