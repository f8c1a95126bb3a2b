"""The datasets: the airfoil file parsed and standardized, synthetic sets, and loading a
data file (feature columns, then the target) with a clear error for every bad file.

The pipeline's own sets are .npy files, float64 rows of features then the target: written
once, memory-mapped by every stage that reads them, never parsed. Your own data may be a CSV
with a header (parsed with pandas, only where one is read) or a .npy of the same layout."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from descent.config import Config, Recipe, SyntheticSet
from descent.io import ROOT, UserError, atomic_write, relative, write_json
from descent.limits import check_memory
from descent.paths import AIRFOIL_DATA

COLUMNS = ("frequency", "angle_of_attack", "chord_length", "free_stream_velocity",
           "displacement_thickness", "sound_pressure")  # the last one is the target


# --- the airfoil file ----------------------------------------------------------------
def parse_airfoil(text: str, source: str) -> np.ndarray:
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


def read_airfoil(raw: Path) -> np.ndarray:
    try:
        text = raw.read_text()
    except FileNotFoundError:
        raise UserError(f"{relative(raw)} not found; run `dvc repro fetch` first") from None
    except (UnicodeDecodeError, IsADirectoryError):
        raise UserError(f"{relative(raw)} is not a text file; re-fetch it with "
                        "`dvc repro --force fetch`") from None
    return parse_airfoil(text, raw.name)


def standardize(table: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Zero mean, unit population std (ddof=0, as numpy and d2l) per column."""
    mean = table.mean(axis=0)
    std = table.std(axis=0)
    constant = [name for name, s in zip(COLUMNS, std) if s == 0]
    if constant:
        raise UserError(f"column {', '.join(constant)} is constant, so it cannot be "
                        "standardized; the data file is wrong")
    return (table - mean) / std, mean, std


# --- synthetic sets --------------------------------------------------------------------
def check_fits(spec: SyntheticSet) -> None:
    """Refuse a set too large to generate, before any set is written."""
    # features, target and the table written live at once.
    check_memory(f"synthetic.{spec.name}", spec.n_rows * (len(spec.weights) + 1) * 3 * 8,
                 f"lower synthetic.{spec.name}.n_rows")


def generate(spec: SyntheticSet) -> tuple[np.ndarray, np.ndarray]:
    """y = X w + b + noise_std * N(0, 1), from the set's own seeded generator."""
    n, p = spec.n_rows, len(spec.weights)
    rng = np.random.default_rng(spec.seed)
    kind, a, b = spec.features.kind, spec.features.a, spec.features.b
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is refused just below
        if kind == "grid":  # a, a + b, a + 2b, ...: the same evenly spaced grid per feature
            features = np.repeat((a + b * np.arange(n))[:, None], p, axis=1)
        elif kind == "uniform":
            try:
                features = rng.uniform(a, b, size=(n, p))
            except OverflowError:  # high - low beyond float64
                raise UserError(f"params.yaml: synthetic.{spec.name}.features spans "
                                f"{a:g} to {b:g}, wider than float64 holds; narrow "
                                "it") from None
        else:
            features = rng.normal(a, b, size=(n, p))
        # X w column by column (elementwise IEEE products and sums, the same bits on every
        # CPU; a BLAS product's order and fused multiply-adds depend on the CPU's kernel).
        target = features[:, 0] * spec.weights[0]
        for j in range(1, p):
            target = target + features[:, j] * spec.weights[j]
        target = target + spec.bias + spec.noise_std * rng.standard_normal(n)
    check_magnitude(np.c_[features, target], f"synthetic.{spec.name}",
                    f"use smaller features, weights, bias or noise_std in synthetic.{spec.name}")
    return features, target


# Squares of the values are summed (the loss, the closed form's normal equations): beyond
# this magnitude they overflow float64 on a large set.
LARGEST_VALUE = 1e150


def check_magnitude(values: np.ndarray, what: str, fix: str) -> None:
    largest = float(np.max(np.abs(values))) if values.size else 0.0
    if not largest <= LARGEST_VALUE:  # also catches inf and NaN
        raise UserError(f"{what} has values up to {largest:.3g}, beyond {LARGEST_VALUE:g}: "
                        f"their squares (the loss) overflow float64; {fix}")


def truth(spec: SyntheticSet) -> dict:
    return {"weights": list(spec.weights), "bias": spec.bias, "noise_std": spec.noise_std,
            "n_rows": spec.n_rows}


# --- data files ------------------------------------------------------------------------
def write_table(path: Path, features: np.ndarray, target: np.ndarray) -> None:
    """features then the target as one C-ordered float64 .npy (memory-mappable)."""
    table = np.ascontiguousarray(np.c_[features, target], dtype=np.float64)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as file:  # (given a name, np.save would add ".npy" to it)
            np.save(file, table, allow_pickle=False)

    atomic_write(path, write)


def load_dataset(path: Path, n_features: int | None = None, key: str = "") -> \
        tuple[np.ndarray, np.ndarray]:
    """A data file: feature columns, then the target as the last column; a .npy (2-d float,
    memory-mapped: the returned columns are read-only views of the file) or a CSV with a
    header.

    Every way a file can be wrong (missing, a folder, empty, not the format, wrong columns,
    non-numeric or non-finite values) is one clear UserError naming the file and `key`.
    """
    path = Path(path)
    name = relative(path)
    where = f" (set by {key})" if key else ""
    if not path.exists():
        raise UserError(f"{name}{where} does not exist; check the path in params.yaml")
    if not path.is_file():
        raise UserError(f"{name}{where} is a folder, not a data file; point it at a file")
    values = _read_npy(path, name + where) if path.suffix == ".npy" else \
        _read_csv(path, name + where)
    if values.shape[1] < 2:
        raise UserError(f"{name}{where} has {values.shape[1]} column; a data file has "
                        "feature columns then the target")
    if n_features is not None and values.shape[1] != n_features + 1:
        raise UserError(f"{name}{where} has {values.shape[1]} columns but {n_features} "
                        f"features + 1 target were expected; rebuild it with `dvc repro`")
    if len(values) < 2:
        raise UserError(f"{name}{where} has {len(values)} data row(s); a fit needs at least "
                        "2, add rows")
    # Two passes over the file, no copy of it (a NaN anywhere makes both NaN).
    low, high = float(values.min()), float(values.max())
    if not (np.isfinite(low) and np.isfinite(high)):
        raise UserError(f"{name}{where} has missing or non-finite values; fix the file")
    check_magnitude(np.array([low, high]), f"{name}{where}", "rescale the data")
    return values[:, :-1], values[:, -1]


def _read_npy(path: Path, name: str) -> np.ndarray:
    try:
        values = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise UserError(f"{name} is not a .npy array ({type(error).__name__}); rebuild it with "
                        "`dvc repro`, or save yours with numpy.save") from None
    if values.ndim != 2 or values.dtype not in (np.float32, np.float64):
        raise UserError(f"{name} holds a {values.ndim}-d {values.dtype} array; a data file "
                        "is a 2-d float32 or float64 array: feature columns, then the target")
    return values


def _read_csv(path: Path, name: str) -> np.ndarray:
    import pandas as pd

    try:
        table = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise UserError(f"{name} is empty; rebuild it with `dvc repro` or point it at a CSV "
                        "file") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as error:
        raise UserError(f"{name} is not a CSV table ({type(error).__name__}); point it at a "
                        "comma-separated file with a header row") from None
    # pandas makes an extra field on every row the index (header without it), or an all-empty
    # "Unnamed" column (header with it): a comma at the end of each line.
    unnamed = [column for column in table.columns if str(column).startswith("Unnamed: ")]
    if not table.index.equals(pd.RangeIndex(len(table))) or \
            (unnamed and table[unnamed].isna().all().all()):
        raise UserError(f"{name} has one field more on each row than its header names (a "
                        "comma at the end of every line?); remove the trailing commas")
    if table.shape[1] < 2:
        raise UserError(f"{name} has {table.shape[1]} column; a CSV data file has comma-"
                        "separated feature columns then the target, with a header (is it "
                        "the raw tab-separated file?)")
    try:
        return table.to_numpy(dtype=np.float64)
    except (ValueError, TypeError):
        raise UserError(f"{name} has non-numeric values; fix the file") from None


def load_recipe_data(config: Config, recipe: Recipe) -> tuple[np.ndarray, np.ndarray]:
    path = ROOT / recipe.data
    if not path.exists() and config.is_pipeline_output(recipe.data):
        stage = "prepare" if recipe.data == AIRFOIL_DATA else "synthesize"
        raise UserError(f"{recipe.data} is not built yet; run `dvc repro {stage}` (or "
                        "`dvc repro`) first")
    if path.exists() and not path.resolve().is_relative_to(ROOT.resolve()):
        raise UserError(f"{recipe.data} (set by recipes.{recipe.name}.data) links to "
                        f"{path.resolve()}, outside the project, where DVC does not track it; "
                        "copy the file into the project instead")
    return load_dataset(path, config.n_features(recipe), f"recipes.{recipe.name}.data")


def check_datasets(config: Config) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every recipe's data, loaded and checked before any training starts."""
    loaded: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for recipe in config.recipes.values():
        features, targets = loaded[recipe.name] = load_recipe_data(config, recipe)
        fixed = recipe.init.weights.fixes
        if fixed not in (None, features.shape[1]):
            raise UserError(f"params.yaml: recipes.{recipe.name}.init.weights lists "
                            f"{fixed} numbers but {recipe.data} has "
                            f"{features.shape[1]} features; give one per feature")
    return loaded


# --- what the data stages write --------------------------------------------------------
def prepare(raw: Path, n_train: int, table_path: Path, scaling_path: Path) -> None:
    """Standardize the raw airfoil file over all rows; keep the first n_train rows."""
    table = read_airfoil(raw)
    if n_train > len(table):
        raise UserError(f"params.yaml: prepare.n_train is {n_train} but {raw.name} has only "
                        f"{len(table)} rows; lower it in params.yaml")
    scaled, mean, std = standardize(table)
    write_table(table_path, scaled[:n_train, :-1], scaled[:n_train, -1])
    write_json(scaling_path, {
        "rows_standardized": len(table), "rows_kept": n_train, "columns": list(COLUMNS),
        "target": COLUMNS[-1], "mean": dict(zip(COLUMNS, mean.tolist())),
        "std": dict(zip(COLUMNS, std.tolist()))})


def synthesize(sets: dict[str, SyntheticSet], folder: Path) -> None:
    """<name>.npy (x1..xd, then y) and <name>.json (the truth) for every set; sizes checked
    first."""
    for spec in sets.values():
        check_fits(spec)
    for name, spec in sets.items():
        features, target = generate(spec)
        write_table(folder / f"{name}.npy", features, target)
        write_json(folder / f"{name}.json", truth(spec))
