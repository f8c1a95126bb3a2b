"""`make exps`: every experiment in one table that fits a 120-column terminal.

    python -m descent.exps [more dvc exp show options, e.g. -A or --sort-by batch_size]

`dvc exp show --only-changed` puts a hash column beside each metric for every dependency
that changed (data/runs, metrics/train, ...: 1,400 characters for a batch-size sweep), and
even with those dropped (`--drop '.*/'`) the five headline names (`plane_2x1_minus3p4x2.
minibatch`, ...) make the row 170 characters wide, so DVC cuts it to `…` at 120. This takes
DVC's own table (`--csv --only-changed`, dependency columns dropped), puts the params that
differ first and writes each column name on two lines split at its last dot (recipe above
variant), so the width grows with the number of changed columns, not with the number of
experiments. Values are shown to 5 significant digits, as `dvc exp show` does.
"""
from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

from descent import paths

# Columns that say nothing about the results: the dependencies' hashes (any name with a
# slash: DVC anchors the regex at the start) and the queue's bookkeeping.
DROP = ".*/|Created|State|Executor"
ROW_NAME = ("Experiment", "rev", "typ", "parent")  # DVC's own columns in --csv output
HEADLINE = Path(paths.HEADLINE)


def flat(tree: dict, prefix: str = "") -> list[str]:
    keys = []
    for key, value in tree.items():
        keys += flat(value, f"{prefix}{key}.") if isinstance(value, dict) else [prefix + key]
    return keys


def shown(value: str) -> str:
    """A figure to 5 significant digits (as `dvc exp show`); words ("diverged") as they are."""
    if value == "":
        return "-"
    try:
        return f"{float(value):.5g}"
    except ValueError:
        return value


def table(text: str, metrics: set[str]) -> str:
    """DVC's CSV as a table: name, the params that differ, then the headline metrics."""
    rows = list(csv.DictReader(io.StringIO(text)))
    if not rows:
        return "no experiments\n"
    columns = [name for name in rows[0] if name not in ROW_NAME]
    columns.sort(key=lambda name: name in metrics)  # params first (a stable sort)
    names = [row["rev"] if row["typ"] == "baseline" else f"  {row['Experiment'] or row['rev']}"
             for row in rows]
    cells = [[name, *(shown(row[column]) for column in columns)]
             for name, row in zip(names, rows)]
    # Two header lines: "airfoil_concise" above "minibatch", "" above "batch_size".
    tops = ["", *(name.rpartition(".")[0] for name in columns)]
    bottoms = ["experiment", *(name.rpartition(".")[2] for name in columns)]
    widths = [max(len(top), len(bottom), *(len(line[i]) for line in cells))
              for i, (top, bottom) in enumerate(zip(tops, bottoms))]

    def line(values: list[str]) -> str:
        first, *rest = values
        return "  ".join([first.ljust(widths[0]),
                          *(v.rjust(w) for v, w in zip(rest, widths[1:]))]).rstrip()

    lines = [line(tops), line(bottoms), "  ".join("-" * width for width in widths)]
    lines += [line(values) for values in cells]
    if not columns:
        lines.append("(no param or headline metric differs between these experiments)")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    # This interpreter's dvc, whether or not its venv is on PATH.
    result = subprocess.run([sys.executable, "-m", "dvc", "exp", "show", "--csv",
                             "--only-changed", "--drop", DROP, *argv],
                            capture_output=True, text=True)
    if result.returncode != 0:
        sys.stderr.write(result.stderr)
        return result.returncode
    metrics = set(flat(json.loads(HEADLINE.read_text()))) if HEADLINE.is_file() else set()
    sys.stdout.write(table(result.stdout, metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
