"""The datasets: the airfoil file parsed and standardized, synthetic sets, and loading a
data file (feature columns, then the target) with a clear error for every bad file.

The pipeline's own sets are .npy files, float64 rows of features then the target: written
once, read a block of rows at a time into the dtype each stage works in, never parsed. Your
own data may be a CSV with a header (parsed with pandas, only where one is read) or a .npy
of the same layout."""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

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
def check_fits(spec: SyntheticSet, folder: Path) -> None:
    """Refuse a set too large for the disk (its file, and DVC's cached copy of it), before
    any set is written; it is generated a block at a time, in little memory."""
    import shutil

    needed = 2 * spec.n_rows * (len(spec.weights) + 1) * 8
    free = shutil.disk_usage(next(path for path in (folder, *folder.parents)
                                  if path.exists())).free
    if needed > free:
        raise UserError(f"synthetic.{spec.name} would need about {needed / 2**30:.3g} GiB of "
                        f"disk (its file and DVC's cached copy), more than the "
                        f"{free / 2**30:.3g} GiB free here; lower synthetic.{spec.name}.n_rows")


def generate(spec: SyntheticSet) -> tuple[np.ndarray, np.ndarray]:
    """y = X w + b + noise_std * N(0, 1), from the set's own seeded generator: the features
    drawn first, row by row, then the noise (what write_set streams, block by block)."""
    rng = np.random.default_rng(spec.seed)
    features = _features(spec, rng, 0, spec.n_rows)
    return features, _target(spec, features, rng.standard_normal(spec.n_rows))


def _features(spec: SyntheticSet, rng: np.random.Generator, start: int, count: int
              ) -> np.ndarray:
    """Rows start..start+count-1 of the features (the generator's next count x p draws)."""
    p, kind, a, b = len(spec.weights), spec.features.kind, spec.features.a, spec.features.b
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is refused below
        if kind == "grid":  # a, a + b, a + 2b, ...: the same evenly spaced grid per feature
            features = np.repeat((a + b * np.arange(start, start + count))[:, None], p, axis=1)
        elif kind == "uniform":
            try:
                features = rng.uniform(a, b, size=(count, p))
            except OverflowError:  # high - low beyond float64
                raise UserError(f"params.yaml: synthetic.{spec.name}.features spans "
                                f"{a:g} to {b:g}, wider than float64 holds; narrow "
                                "it") from None
        else:
            features = rng.normal(a, b, size=(count, p))
    check_magnitude(features, f"synthetic.{spec.name}", "use smaller features, weights, "
                    f"bias or noise_std in synthetic.{spec.name}")
    return features


def _target(spec: SyntheticSet, features: np.ndarray, noise: np.ndarray) -> np.ndarray:
    # X w column by column (elementwise IEEE products and sums, the same bits on every
    # CPU; a BLAS product's order and fused multiply-adds depend on the CPU's kernel).
    with np.errstate(over="ignore", invalid="ignore"):
        target = features[:, 0] * spec.weights[0]
        for j in range(1, features.shape[1]):
            target = target + features[:, j] * spec.weights[j]
        target = target + spec.bias + spec.noise_std * noise
    check_magnitude(target, f"synthetic.{spec.name}", "use smaller features, weights, "
                    f"bias or noise_std in synthetic.{spec.name}")
    return target


def write_set(spec: SyntheticSet, path: Path) -> None:
    """The set as generate() makes it, written a block of rows at a time (any size, in the
    memory of one block). generate() draws the noise after all the features, so a second
    generator first draws (and drops) every feature, to reach the noise."""
    n, p = spec.n_rows, len(spec.weights)
    rows = max(1, BLOCK_BYTES // ((p + 1) * 8))
    draws, noise = np.random.default_rng(spec.seed), np.random.default_rng(spec.seed)
    if spec.features.kind != "grid":  # (a grid draws nothing)
        for start in range(0, n, rows):
            _features(spec, noise, start, min(rows, n - start))

    def block(start: int) -> np.ndarray:
        count = min(rows, n - start)
        features = _features(spec, draws, start, count)
        return np.c_[features, _target(spec, features, noise.standard_normal(count))]

    write_blocks(path, n, p + 1, rows, block)


# Squares of the values are summed (the loss, the closed form's normal equations): beyond
# this magnitude they overflow float64 on a large set.
LARGEST_VALUE = 1e150


def check_magnitude(values: np.ndarray, what: str, fix: str) -> None:
    # max and min: no |values| copy; a NaN anywhere makes them NaN
    largest = max(-float(values.min()), float(values.max())) if values.size else 0.0
    if not largest <= LARGEST_VALUE:  # also catches inf and NaN
        raise UserError(f"{what} has values up to {largest:.3g}, beyond {LARGEST_VALUE:g}: "
                        f"their squares (the loss) overflow float64; {fix}")


def truth(spec: SyntheticSet) -> dict:
    return {"weights": list(spec.weights), "bias": spec.bias, "noise_std": spec.noise_std,
            "n_rows": spec.n_rows}


# --- data files ------------------------------------------------------------------------
# Rows at a time when the .npy files are written and read: a block of a few MB, so a set
# is never held twice (nor its float64 and float32 copies at once).
BLOCK_BYTES = 1 << 25


def write_table(path: Path, features: np.ndarray, target: np.ndarray) -> None:
    """features then the target as one C-ordered float64 .npy (memory-mappable), written a
    block of rows at a time (no second copy of the set)."""
    n, p = features.shape
    rows = max(1, BLOCK_BYTES // ((p + 1) * 8))
    write_blocks(path, n, p + 1, rows, lambda start: np.c_[features[start:start + rows],
                                                          target[start:start + rows]])


def write_blocks(path: Path, n: int, columns: int, rows: int, block) -> None:
    """An (n, columns) float64 .npy whose rows start..start+rows-1 are block(start)."""
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float64)),
              "fortran_order": False, "shape": (n, columns)}

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as file:
            np.lib.format.write_array_header_1_0(file, header)
            for start in range(0, n, rows):
                file.write(np.ascontiguousarray(block(start), dtype=np.float64).tobytes())

    atomic_write(path, write)


def load_dataset(path: Path, n_features: int | None = None, key: str = "",
                 dtype=np.float64, ones: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """A data file: feature columns, then the target as the last column; a .npy (2-d
    float32 or float64, read a block of rows at a time) or a CSV with a header. Returns
    (features (N, p), targets (N,)), each C-contiguous in `dtype`; with `ones`, the
    features with a column of ones after them (N, p+1): the design matrix, made as the
    file is read (no second copy).

    Every way a file can be wrong (missing, a folder, empty, not the format, wrong columns,
    non-numeric or non-finite values) is one clear UserError naming the file and `key`.
    """
    path, name = _existing(path, key), _name(path, key)
    if path.suffix == ".npy":
        features, targets, low, high = _read_npy(path, name, n_features, dtype, ones)
        _check_values(low, high, name, dtype)
        return features, targets
    values = _read_csv(path, name)
    _check_columns(values.shape, name, n_features)
    _check_values(float(values.min()), float(values.max()), name, dtype)
    features = values[:, :-1] if not ones else np.c_[values[:, :-1], np.ones(len(values))]
    return (np.ascontiguousarray(features, dtype=dtype),
            np.ascontiguousarray(values[:, -1], dtype=dtype))


def _check_values(low: float, high: float, name: str, dtype) -> None:
    """The smallest and largest values (NaN if any is) are finite, square within float64
    and fit `dtype`."""
    if not (np.isfinite(low) and np.isfinite(high)):
        raise UserError(f"{name} has missing or non-finite values; fix the file")
    check_magnitude(np.array([low, high]), name, "rescale the data")
    largest, kind = max(-low, high), np.dtype(dtype)
    if largest > float(np.finfo(kind).max):
        raise UserError(f"{name} has values up to {largest:.3g}, beyond {kind}'s range "
                        f"({np.finfo(kind).max:.3g}); rescale the data or set dtype: float64")


def _check_columns(shape: tuple[int, int], name: str, n_features: int | None) -> None:
    rows, columns = shape
    if columns < 2:
        raise UserError(f"{name} has {columns} column; a data file has feature columns then "
                        "the target")
    if n_features is not None and columns != n_features + 1:
        raise UserError(f"{name} has {columns} columns but {n_features} features + 1 target "
                        "were expected; rebuild it with `dvc repro`")
    if rows < 2:
        raise UserError(f"{name} has {rows} data row(s); a fit needs at least 2, add rows")


def _read_npy(path: Path, name: str, n_features: int | None, dtype, ones: bool
              ) -> tuple[np.ndarray, np.ndarray, float, float]:
    """The .npy's features and targets in `dtype`, read a block of rows at a time (its
    float64 rows are never all in memory beside the copy), and its smallest and largest
    values (NaN if any is)."""
    with open(path, "rb") as file:
        (n, columns), stored = _npy_header(file, name, n_features)
        _check_fits(name, n * (columns + ones) * np.dtype(dtype).itemsize, dtype)
        features, targets = np.empty((n, columns - 1 + ones), dtype), np.empty(n, dtype)
        if ones:
            features[:, -1] = 1
        low, high = np.inf, -np.inf
        rows = max(1, BLOCK_BYTES // (columns * stored.itemsize))
        for start, block in _npy_blocks(file, n, columns, stored, name, rows):
            low, high = min(low, float(block.min())), max(high, float(block.max()))
            if not (np.isfinite(low) and np.isfinite(high)) \
                    or max(-low, high) > float(np.finfo(dtype).max):
                return features, targets, low, high  # refused by the caller
            features[start:start + len(block), :columns - 1] = block[:, :-1]
            targets[start:start + len(block)] = block[:, -1]
    return features, targets, low, high


def _check_fits(name: str, needed: int, dtype) -> None:
    """A set is refused before it is read when its copy in `dtype` cannot fit."""
    fix = "set dtype: float32 in params.yaml (half the memory), or use fewer rows" \
        if np.dtype(dtype) == np.float64 else "use fewer rows, or a machine with more memory"
    check_memory(f"{name} read as {np.dtype(dtype).name}", needed, fix)


def npy_shape(path: Path, n_features: int | None = None, key: str = "") -> tuple[int, int]:
    """(rows, columns) of a .npy data file, from its header (checked as load_dataset checks
    it)."""
    with open(_existing(path, key), "rb") as file:
        return _npy_header(file, _name(path, key), n_features)[0]


def stream_dataset(path: Path, rows: int, n_features: int | None = None, key: str = "",
                   ones: bool = False):
    """A .npy data file's (features, targets) in float64, `rows` rows at a time (the last
    block shorter; with `ones`, the features with a column of ones after them): every
    check load_dataset makes, the values' as each block is read, so a set of any size
    passes through the memory of one block."""
    name = _name(path, key)
    with open(_existing(path, key), "rb") as file:
        (n, columns), stored = _npy_header(file, name, n_features)
        for _, block in _npy_blocks(file, n, columns, stored, name, rows):
            _check_values(float(block.min()), float(block.max()), name, np.float64)
            features = np.empty((len(block), columns - 1 + ones))
            features[:, :columns - 1] = block[:, :-1]
            if ones:
                features[:, -1] = 1
            yield features, np.ascontiguousarray(block[:, -1], dtype=np.float64)


def _name(path: Path, key: str) -> str:
    return relative(Path(path)) + (f" (set by {key})" if key else "")


def _existing(path: Path, key: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise UserError(f"{_name(path, key)} does not exist; check the path in params.yaml")
    if not path.is_file():
        raise UserError(f"{_name(path, key)} is a folder, not a data file; point it at a "
                        "file")
    return path


def _npy_header(file, name: str, n_features: int | None) -> tuple[tuple[int, int], np.dtype]:
    """A .npy's (rows, columns) and stored dtype, refused unless it is a 2-d float32 or
    float64 array in C order with the expected columns."""
    try:
        major, _ = np.lib.format.read_magic(file)
        read_header = np.lib.format.read_array_header_1_0 if major == 1 else \
            np.lib.format.read_array_header_2_0
        shape, fortran, stored = read_header(file)
    except (ValueError, OSError, EOFError, SyntaxError) as error:
        raise UserError(f"{name} is not a .npy array ({type(error).__name__}); rebuild it "
                        "with `dvc repro`, or save yours with numpy.save") from None
    if len(shape) != 2 or stored not in (np.float32, np.float64) or fortran:
        layout = "Fortran-ordered " if fortran else ""
        raise UserError(f"{name} holds a {len(shape)}-d {layout}{stored} array; a data "
                        "file is a 2-d float32 or float64 array (C order): feature "
                        "columns, then the target")
    _check_columns(shape, name, n_features)
    return shape, stored


def _npy_blocks(file, n: int, columns: int, stored: np.dtype, name: str, rows: int):
    """(first row, block (count, columns) as stored) for each block of `rows` rows read
    from the file after its header; a file that ends early is refused."""
    for start in range(0, n, rows):
        count = min(rows, n - start)
        block = np.fromfile(file, dtype=stored, count=count * columns)
        if block.size != count * columns:
            raise UserError(f"{name} ends after {start + block.size // columns} of its "
                            f"{n} rows; rebuild it with `dvc repro`, or save it again")
        yield start, block.reshape(count, columns)


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


def load_recipe_data(config: Config, recipe: Recipe, dtype=np.float64, ones: bool = False
                     ) -> tuple[np.ndarray, np.ndarray]:
    return load_dataset(recipe_file(config, recipe), config.n_features(recipe),
                        f"recipes.{recipe.name}.data", dtype, ones)


def recipe_file(config: Config, recipe: Recipe) -> Path:
    """The recipe's data file, refused if it is not built yet or lies outside the project."""
    path = ROOT / recipe.data
    if not path.exists() and config.is_pipeline_output(recipe.data):
        stage = "prepare" if recipe.data == AIRFOIL_DATA else "synthesize"
        raise UserError(f"{recipe.data} is not built yet; run `dvc repro {stage}` (or "
                        "`dvc repro`) first")
    if path.exists() and not path.resolve().is_relative_to(ROOT.resolve()):
        raise UserError(f"{recipe.data} (set by recipes.{recipe.name}.data) links to "
                        f"{path.resolve()}, outside the project, where DVC does not track it; "
                        "copy the file into the project instead")
    return _existing(path, f"recipes.{recipe.name}.data")


def check_datasets(config: Config, dtype=np.float64, ones: bool = False
                   ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every recipe's data, loaded in `dtype` (with `ones`: as design matrices, see
    load_dataset) and checked before any training starts."""
    loaded: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for recipe in config.recipes.values():
        features, targets = loaded[recipe.name] = load_recipe_data(config, recipe, dtype, ones)
        check_width(recipe, features.shape[1] - ones)
    return loaded


# A .npy with more rows than this is read a block of rows at a time by the stages that need
# only passes over it (solve, evaluate), never held whole. A fixed count, not this
# machine's memory, so that every machine computes a set's figures the same way.
STREAMED_ROWS = 1_000_000


@dataclass(frozen=True)
class Source:
    """A recipe's data, checked: held in memory (float64), or, above STREAMED_ROWS rows,
    read from its .npy a block at a time each time `blocks` is called."""
    held: tuple[np.ndarray, np.ndarray] | None  # (features, targets): the whole set
    blocks: Callable | None = None  # when not held: rows -> (features, targets) blocks


def recipe_sources(config: Config, ones: bool = False) -> dict[str, Source]:
    """Every recipe's data, checked before any is used (as check_datasets), with `ones`
    as design matrices; a .npy above STREAMED_ROWS rows checked from its header here, its
    values as its blocks are read."""
    sources = {}
    for name, recipe in config.recipes.items():
        path, key = recipe_file(config, recipe), f"recipes.{name}.data"
        expected = config.n_features(recipe)
        rows, columns = npy_shape(path, expected, key) if path.suffix == ".npy" else (0, 0)
        if rows > STREAMED_ROWS:
            sources[name] = Source(None, functools.partial(
                stream_dataset, path, n_features=expected, key=key, ones=ones))
        else:
            held = load_recipe_data(config, recipe, ones=ones)
            sources[name] = Source(held)
            columns = held[0].shape[1] + 1 - ones
        check_width(recipe, columns - 1)
    return sources


def check_width(recipe: Recipe, width: int) -> None:
    """A recipe's init weights, where it lists them, fit its data's `width` features."""
    fixed = recipe.init.weights.fixes
    if fixed not in (None, width):
        raise UserError(f"params.yaml: recipes.{recipe.name}.init.weights lists "
                        f"{fixed} numbers but {recipe.data} has {width} features; give "
                        "one per feature")


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
        check_fits(spec, folder)
    for name, spec in sets.items():
        write_set(spec, folder / f"{name}.npy")
        write_json(folder / f"{name}.json", truth(spec))
