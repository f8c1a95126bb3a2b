"""Stage `prepare`: parse and validate the raw airfoil file, standardize it, keep n_train rows.

Every column (the target too) is standardized over *all* rows to zero mean and unit
population standard deviation (ddof=0), as the d2l chapter does; then the first
`prepare.n_train` rows are kept. The per-column mean and std are saved beside the table
so results can be mapped back to physical units.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from stages.common import (ROOT, UserError, cli, load_params, positive_int, require,
                           write_csv, write_json)

COLUMNS = ("frequency", "angle_of_attack", "chord_length", "free_stream_velocity",
           "displacement_thickness", "sound_pressure")  # the last one is the target
FLOAT_FORMAT = "%.17g"  # round-trips float64 exactly


def parse(text: str, source: str) -> np.ndarray:
    """Rows of tab-separated numbers, one per line; a bad line is named by its number."""
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.strip().split("\t")
        if len(fields) != len(COLUMNS):
            raise UserError(f"{source} line {number}: expected {len(COLUMNS)} tab-separated "
                            f"columns, found {len(fields)}; is this the airfoil file?")
        if any(not field.strip() for field in fields):
            raise UserError(f"{source} line {number}: missing value; fix or re-fetch the file")
        try:
            values = [float(field) for field in fields]
        except ValueError:
            raise UserError(f"{source} line {number}: non-numeric value in {line.strip()!r}; "
                            "fix or re-fetch the file") from None
        if not np.all(np.isfinite(values)):
            raise UserError(f"{source} line {number}: missing or infinite value; "
                            "fix or re-fetch the file")
        rows.append(values)
    if len(rows) < 2:
        raise UserError(f"{source} has {len(rows)} data rows; at least 2 are needed")
    return np.array(rows, dtype=np.float64)


def standardize(table: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    mean = table.mean(axis=0)
    std = table.std(axis=0)  # ddof=0, the population std, as numpy and d2l use
    constant = [name for name, s in zip(COLUMNS, std) if s == 0]
    if constant:
        raise UserError(f"column {', '.join(constant)} is constant, so it cannot be "
                        "standardized; the data file is wrong")
    return (table - mean) / std, mean, std


def prepare(raw: Path, n_train: int, table_path: Path, scaling_path: Path) -> None:
    import pandas as pd

    try:
        text = raw.read_text()
    except FileNotFoundError:
        raise UserError(f"{raw} not found; run `dvc repro fetch` first") from None
    except UnicodeDecodeError:
        raise UserError(f"{raw} is not a text file; re-fetch it") from None
    table = parse(text, raw.name)
    if n_train > len(table):
        raise UserError(f"prepare.n_train is {n_train} but {raw.name} has only "
                        f"{len(table)} rows; lower it in params.yaml")
    scaled, mean, std = standardize(table)
    frame = pd.DataFrame(scaled[:n_train], columns=COLUMNS)
    write_csv(table_path, frame, float_format=FLOAT_FORMAT)
    write_json(scaling_path, {
        "rows_standardized": len(table), "rows_kept": n_train, "target": COLUMNS[-1],
        "mean": dict(zip(COLUMNS, mean.tolist())), "std": dict(zip(COLUMNS, std.tolist())),
    })


def main() -> None:
    params = load_params()
    n_train = positive_int(require(params, "prepare.n_train"), "prepare.n_train")
    prepare(ROOT / require(params, "fetch.output"), n_train,
            ROOT / "data/prepared/airfoil.csv", ROOT / "data/prepared/airfoil_scaling.json")
    print(f"prepared data/prepared/airfoil.csv: {n_train} rows x {len(COLUMNS)} columns")


if __name__ == "__main__":
    cli(main)()
