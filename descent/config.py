"""The whole params.yaml, parsed once into frozen, typed objects and validated.

Every key, type, range and cross-reference is checked here, before any stage does work;
an error names the key, the value, what is allowed and the fix, in one line. Unknown keys
are refused (a typo must not be silently ignored). params.yaml is read with YAML 1.2 rules,
as DVC reads it, so every number DVC writes (`1e-05`) is a number.

Checks that need the data files (a recipe's CSV exists, has the right columns) are in
`check_datasets`, which the stages that read data call before training starts.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from descent.io import ROOT, UserError
from descent.paths import AIRFOIL_DATA, CUSTOM, PARAMS, SYNTHETIC

PARAMS_FILE = ROOT / PARAMS
VARIANTS = ("gd", "sgd", "minibatch")
DTYPES = ("float32", "float64")
ENGINES = ("auto", "compiled", "affine", "loop")
FEATURE_KINDS = {"grid": ("start", "step"), "uniform": ("low", "high"),
                 "normal": ("mean", "std")}
# Safe as a file name, a DVC metric key and a plot name: no dots, slashes or spaces.
NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
AIRFOIL_FEATURES = 5


@dataclass(frozen=True)
class Loss:
    """A loss convention: scale * mean((y_hat - y)^2)."""
    name: str
    scale: float


LOSSES = {"half_squared": Loss("half_squared", 0.5), "mse": Loss("mse", 1.0)}


@dataclass(frozen=True)
class Fetch:
    sources: tuple[str, ...]
    sha256: str


@dataclass(frozen=True)
class Features:
    kind: str                        # grid | uniform | normal
    a: float                         # start | low | mean
    b: float                         # step | high | std


@dataclass(frozen=True)
class SyntheticSet:
    name: str
    n_rows: int
    features: Features
    weights: tuple[float, ...]
    bias: float
    noise_std: float
    seed: int


@dataclass(frozen=True)
class Train:
    engine: str
    log_every: int                   # examples between logged whole-set losses
    blowup: float                    # a loss above blowup x the initial loss = diverged
    cluster: str = "none"            # where blocks of runs go: none, local or tcp://host:port


# How a run's first parameters are drawn: one class per way, each able to draw itself from
# the run's generator and to say what params.yaml called it. `count` is None for the bias.
@dataclass(frozen=True)
class TorchDefault:
    """nn.Linear's own: U(-1/sqrt(fan_in), +1/sqrt(fan_in))."""
    fixes = None  # the number of values it fixes: none

    def draw(self, count: int | None, fan_in: int, generator) -> Any:
        bound = 1 / math.sqrt(fan_in)
        return generator.uniform(-bound, bound) if count is None else \
            generator.uniform(-bound, bound, count)

    def as_param(self) -> Any:
        return "torch_default"


@dataclass(frozen=True)
class Normal:
    """N(0, std^2) each (d2l's weights)."""
    std: float
    fixes = None

    def draw(self, count: int | None, fan_in: int, generator) -> Any:
        return generator.normal(0.0, self.std, count)

    def as_param(self) -> Any:
        return {"normal_std": self.std}


@dataclass(frozen=True)
class Given:
    """The listed weights, one per feature."""
    values: tuple[float, ...]

    @property
    def fixes(self) -> int:
        return len(self.values)

    def draw(self, count: int | None, fan_in: int, generator) -> Any:
        return list(self.values)

    def as_param(self) -> Any:
        return list(self.values)


@dataclass(frozen=True)
class Value:
    """One given number (a bias)."""
    value: float
    fixes = None

    def draw(self, count: int | None, fan_in: int, generator) -> Any:
        return self.value

    def as_param(self) -> Any:
        return self.value


@dataclass(frozen=True)
class Init:
    weights: TorchDefault | Normal | Given
    bias: TorchDefault | Value


@dataclass(frozen=True)
class Recipe:
    name: str
    data: str                        # path relative to the project root
    loss: Loss                       # the loss recorded and judged
    gradient_loss: Loss              # the loss whose gradient drives the update
    init: Init
    shuffle: bool
    drop_last: bool
    with_replacement: bool = False


@dataclass(frozen=True)
class Steps:
    lr: float
    epochs: int


@dataclass(frozen=True)
class Sweep:
    recipes: tuple[str, ...]
    batch_sizes: tuple[int, ...]
    lr_factors: tuple[float, ...]   # learning rates, as multiples of each batch size's
    seeds: int                      # mean-square critical one
    budget: int                     # steps each run may take
    target_excess: float


@dataclass(frozen=True)
class Config:
    seed: int
    seeds: int      # runs per (recipe, variant): seeds seed, seed + 1, ..., seed + seeds - 1
    device: str
    dtype: str
    batch_size: int
    fetch: Fetch
    n_train: int
    synthetic: dict[str, SyntheticSet]
    train: Train
    recipes: dict[str, Recipe]
    variants: dict[str, dict[str, Steps]]   # variant -> recipe -> steps
    target_excess: float
    sweep: Sweep

    @property
    def seed_list(self) -> list[int]:
        """The seeds of every (recipe, variant)'s runs; run k alone is `seed: seed + k`."""
        return [self.seed + k for k in range(self.seeds)]

    def steps(self, variant: str, recipe: str) -> Steps:
        return self.variants[variant][recipe]

    def fingerprint(self, variant: str, recipe: str) -> str:
        """A digest of every param that shapes a (recipe, variant)'s runs, recorded with
        them: a stage reading the runs refuses ones trained under other params."""
        import hashlib
        import json
        from dataclasses import asdict

        r = self.recipes[recipe]  # as params.yaml spells it: no refactor changes the digest
        written = {"data": r.data, "loss": r.loss.name, "gradient_loss": r.gradient_loss.name,
                   "init": {"weights": r.init.weights.as_param(),
                            "bias": r.init.bias.as_param()},
                   "shuffle": r.shuffle, "drop_last": r.drop_last}
        if r.with_replacement:  # (only then: the digests from before this key stay valid)
            written["with_replacement"] = True
        shaping = {"seed": self.seed, "seeds": self.seeds, "dtype": self.dtype,
                   # where the runs ran (train.cluster) does not change them
                   "train": {key: value for key, value in asdict(self.train).items()
                             if key != "cluster"}, "recipe": written,
                   "steps": asdict(self.steps(variant, recipe)),
                   "batch_size": self.batch_size if variant == "minibatch" else None}
        text = json.dumps(shaping, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def n_features(self, recipe: Recipe) -> int | None:
        """Features of a recipe's data when the config fixes them (airfoil, synthetic)."""
        return _n_features(recipe.data, self.synthetic)

    def synthetic_source(self, recipe: Recipe) -> SyntheticSet | None:
        return self.synthetic.get(_synthetic_name(recipe.data) or "")

    def is_pipeline_output(self, data: str) -> bool:
        return data == AIRFOIL_DATA or _synthetic_name(data) in self.synthetic


def _synthetic_name(data: str) -> str | None:
    """The set a path data/synthetic/<set>.npy names, else None."""
    path = Path(data)
    return path.stem if path.parent.as_posix() == SYNTHETIC and path.suffix == ".npy" \
        else None


def _n_features(data: str, synthetic: dict[str, SyntheticSet]) -> int | None:
    if data == AIRFOIL_DATA:
        return AIRFOIL_FEATURES
    source = synthetic.get(_synthetic_name(data) or "")
    return len(source.weights) if source else None


# --- reading -------------------------------------------------------------------------
def read_yaml(path: Path) -> Any:
    """YAML 1.2, as DVC reads params (PyYAML's 1.1 rules read `1e-05` as a string)."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise UserError(f"{path} not found; run the stages from the project root") from None
    except (IsADirectoryError, UnicodeDecodeError):
        raise UserError(f"{path} is not a YAML text file; restore it with "
                        f"`git checkout {Path(path).name}`") from None
    try:
        return YAML(typ="safe", pure=True).load(text)
    except YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        problem = getattr(error, "problem", None) or type(error).__name__
        raise UserError(f"{Path(path).name} is not valid YAML{where} ({problem}); fix the "
                        f"file or restore it with `git checkout {Path(path).name}`") from None


def load(path: Path = PARAMS_FILE) -> Config:
    """The validated config of the project (the whole params.yaml)."""
    params = read_yaml(path)
    if params is None:
        raise UserError("params.yaml is empty; restore it with `git checkout params.yaml`")
    return parse(params)


def check_custom_data(config: Config) -> None:
    """Your own data files exist (stage check, before DVC removes any stage's outputs; the
    pipeline's own data may not be built yet, and their contents are checked later)."""
    for recipe in config.recipes.values():
        if not config.is_pipeline_output(recipe.data) and not (ROOT / recipe.data).is_file():
            raise UserError(f"params.yaml: recipes.{recipe.name}.data is {recipe.data!r}, "
                            "which is not a file; put the data there or fix the path")


# --- the schema --------------------------------------------------------------------------
# Every key of params.yaml, section by section: its name, its check (the YAML value in, the
# typed value out, or one line naming key, value, rule and fix), what it means, and its
# default when it may be left out. `parse` reads each section with its table; the rules that
# span sections are in `_across`.
REQUIRED = object()
MAX_SEEDS = 4096  # runs per (recipe, variant); past this the per-seed files grow unwieldy


@dataclass(frozen=True)
class Key:
    name: str
    check: Callable[[Any, str], Any]   # (value, dotted key) -> the typed value
    meaning: str
    default: Any = REQUIRED


def _fail(key: str, value: Any, rule: str, fix: str = "fix it in params.yaml") -> UserError:
    return UserError(f"params.yaml: {key} is {value!r}, but it {rule}; {fix}")


def _dotted(where: str, name: str) -> str:
    return name if where == "the file" else f"{where}.{name}"


def read(node: Any, where: str, table: tuple[Key, ...]) -> dict[str, Any]:
    """A section's typed values by its table: unknown keys refused (a typo must not be
    silently ignored), required ones named when missing, defaults filled in."""
    names = [key.name for key in table]
    if not isinstance(node, dict):
        raise _fail(where, node, f"must be a mapping with keys {', '.join(names)}")
    missing = [key.name for key in table if key.default is REQUIRED and key.name not in node]
    if missing:
        raise UserError(f"params.yaml: {where} has no '{missing[0]}'; add "
                        f"{_dotted(where, missing[0])} (see the comments in params.yaml and "
                        "the README, or `git checkout params.yaml`)")
    unknown = [str(name) for name in node if name not in names]
    if unknown:
        raise UserError(f"params.yaml: {where} has an unknown key '{unknown[0]}'; allowed: "
                        f"{', '.join(names)} (a typo?)")
    return {key.name: key.check(node.get(key.name, key.default), _dotted(where, key.name))
            for key in table}


# --- checks: each takes (value, dotted key) ------------------------------------------------
def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def integer(minimum: int, maximum: int | None = None) -> Callable[[Any, str], int]:
    def check(value: Any, key: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise _fail(key, value, "must be a positive integer" if minimum == 1 else
                        f"must be an integer >= {minimum}")
        if maximum is not None and value > maximum:
            raise _fail(key, value, f"must be at most {maximum}")
        return value
    return check


def number(test: Callable[[float], bool] = math.isfinite, rule: str = "must be a finite number"
           ) -> Callable[[Any, str], float]:
    def check(value: Any, key: str) -> float:
        if not _is_number(value) or not math.isfinite(value) or not test(value):
            raise _fail(key, value, rule)
        return float(value)
    return check


positive = number(lambda v: v > 0, "must be a positive number")


def choice(allowed) -> Callable[[Any, str], str]:
    def check(value: Any, key: str) -> str:
        if not isinstance(value, str) or value not in allowed:
            raise _fail(key, value, f"must be one of {', '.join(allowed)}")
        return value
    return check


def flag(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise _fail(key, value, "must be true or false")
    return value


def device(value: Any, key: str) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", value):
        raise _fail(key, value, "must be auto, cpu, cuda, cuda:N or mps")
    return value


def sha256(value: Any, key: str) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", value):
        raise _fail(key, value, "must be 64 hexadecimal digits")
    return value.lower()


def sources(value: Any, key: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(s, str) and s for s in value):
        raise _fail(key, value, "must be a list of URLs or paths")
    return tuple(value)


def numbers(value: Any, key: str) -> tuple[float, ...]:
    if not isinstance(value, list) or not value:
        raise _fail(key, value, "must be a non-empty list of numbers (one per feature)")
    return tuple(number()(item, key) for item in value)


def loss(value: Any, key: str) -> Loss:
    return LOSSES[choice(tuple(LOSSES))(value, key)]


DATA_SUFFIXES = (".npy", ".csv")  # the pipeline's own sets are .npy; yours may be text


def cluster_address(value: Any, key: str) -> str:
    if not isinstance(value, str) or not (value in ("none", "local")
                                          or re.fullmatch(r"(tcp|tls)://[^\s/]+:\d+", value)):
        raise _fail(key, value, "must be none, local or a dask scheduler's address "
                    "(tcp://host:8786)")
    return value


def data_path(value: Any, key: str) -> str:
    """Its form only; which folders a recipe may read is a rule across sections."""
    if not isinstance(value, str) or not value.endswith(DATA_SUFFIXES) \
            or Path(value).is_absolute() or ".." in Path(value).parts:
        raise _fail(key, value, f"must be a .npy or .csv path inside the project: "
                    f"{AIRFOIL_DATA}, {SYNTHETIC}/<set>.npy or {CUSTOM}/<file>.csv (or .npy)")
    return value


def features(value: Any, key: str) -> Features:
    """{kind, and that kind's two numbers}: grid (start, step), uniform (low < high),
    normal (mean, std >= 0)."""
    kind = choice(tuple(FEATURE_KINDS))(value.get("kind") if isinstance(value, dict) else None,
                                        f"{key}.kind")
    first, second = FEATURE_KINDS[kind]
    values = read(value, key, (Key("kind", choice(tuple(FEATURE_KINDS)), "how x is drawn"),
                               Key(first, number(), ""), Key(second, number(), "")))
    a, b = values[first], values[second]
    if kind == "uniform" and not a < b:
        raise _fail(f"{key}.high", b, f"must be above low ({a})")
    if kind == "normal" and b < 0:
        raise _fail(f"{key}.std", b, "must be >= 0")
    return Features(kind, a, b)


def init_weights(value: Any, key: str) -> TorchDefault | Normal | Given:
    if isinstance(value, dict):
        return Normal(read(value, key, (Key("normal_std", positive, "N(0, s^2)"),))
                      ["normal_std"])
    if isinstance(value, list) and value:
        return Given(tuple(number()(item, key) for item in value))
    if value == "torch_default":
        return TorchDefault()
    raise _fail(key, value, "must be torch_default, {normal_std: s} or a list of numbers (one "
                "per feature)")


def init_bias(value: Any, key: str) -> TorchDefault | Value:
    if value == "torch_default":
        return TorchDefault()
    if not _is_number(value):
        raise _fail(key, value, "must be a number or torch_default")
    return Value(number()(value, key))


def name(value: Any, key: str) -> str:
    if not isinstance(value, str) or not NAME.match(value):
        raise UserError(f"params.yaml: {key} names {value!r}; names may use letters, digits "
                        "and _ only, starting with a letter (they become file names); "
                        "rename it")
    return value


def section(table: tuple[Key, ...]) -> Callable[[Any, str], dict[str, Any]]:
    return lambda value, key: read(value, key, table)


def named(table: tuple[Key, ...], build: Callable[..., Any], what: str, empty_ok: bool = True
          ) -> Callable[[Any, str], dict[str, Any]]:
    """A mapping of names (file-name safe) to sections of one table, each built into an
    object by build(name, **values)."""
    def check(value: Any, key: str) -> dict[str, Any]:
        if not isinstance(value, dict) or (not value and not empty_ok):
            raise _fail(key, value, f"must map {what} names to their settings")
        return {item: build(item, **read(spec, f"{key}.{name(item, key)}", table))
                for item, spec in value.items()}
    return check


def raw(value: Any, key: str) -> Any:
    """Checked later, against other sections (variants: against the recipes)."""
    return value


# --- the tables ------------------------------------------------------------------------------
FETCH = (
    Key("sources", sources, "URLs (or paths) of the airfoil file, tried in order"),
    Key("sha256", sha256, "the airfoil file's checksum"))
PREPARE = (Key("n_train", integer(2), "rows kept after standardizing all of them"),)
SYNTHETIC_SET = (
    Key("n_rows", integer(2), "rows generated"),
    Key("features", features, "how x is drawn: {kind: grid, start, step}, {kind: uniform, "
                              "low, high} or {kind: normal, mean, std}"),
    Key("weights", numbers, "the true weights, one per feature"),
    Key("bias", number(), "the true bias"),
    Key("noise_std", number(lambda v: v >= 0, "must be a number >= 0"),
        "std of the Gaussian noise added to y"),
    Key("seed", integer(0), "the set's own generator seed"))
TRAIN = (
    Key("engine", choice(ENGINES), "auto (compiled on CPU, affine on GPU), compiled, "
                                   "affine or loop (the tutorials' own)"),
    Key("log_every", integer(1), "examples between logged whole-set losses"),
    Key("blowup", number(lambda v: v > 1, "must be a number above 1"),
        "a logged loss above blowup x the initial loss = diverged"),
    Key("cluster", cluster_address, "none (threads here), local (a dask LocalCluster here) "
                                    "or a dask scheduler, tcp://host:8786: where the compiled "
                                    "engine's blocks of runs go (the same runs, bit for bit)",
        "none"))
INIT = (
    Key("weights", init_weights, "a list (one per feature), {normal_std: s} or "
                                 "torch_default (nn.Linear's own)",
        {"normal_std": 0.01}),
    Key("bias", init_bias, "a value or torch_default", 0.0))
RECIPE = (
    Key("data", data_path, "the data (features, then the target): data/prepared/airfoil.npy, "
                           "data/synthetic/<set>.npy or data/custom/<file>.csv (or .npy)"),
    Key("loss", loss, "the loss recorded and judged: half_squared ((y_hat - y)^2 / 2) or mse"),
    Key("gradient_loss", raw, "the loss whose gradient drives the update (default: loss)",
        None),
    Key("init", section(INIT), "how the model starts", {}),
    Key("shuffle", flag, "reshuffle every epoch", True),
    Key("drop_last", flag, "drop a short last batch", False),
    Key("with_replacement", flag, "draw each batch's examples independently (shuffle then "
                                  "does not apply): descent/theory.py's expected loss curve "
                                  "is exact, and the loss plots draw it", False))
STEPS = (Key("lr", positive, "learning rate"), Key("epochs", integer(1), "passes over the data"))
def names(value: Any, key: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise _fail(key, value, "must be a non-empty list of recipe names")
    return tuple(value)


def integers(minimum: int) -> Callable[[Any, str], tuple[int, ...]]:
    def check(value: Any, key: str) -> tuple[int, ...]:
        if not isinstance(value, list) or not value:
            raise _fail(key, value, "must be a non-empty list of integers")
        return tuple(integer(minimum)(item, key) for item in value)
    return check


def factors(value: Any, key: str) -> tuple[float, ...]:
    if not isinstance(value, list) or len(value) < 2:
        raise _fail(key, value, "must list at least 2 positive numbers")
    values = tuple(positive(item, key) for item in value)
    if max(values) <= 1:
        raise _fail(key, value, "must reach past 1 (the critical learning rate), to find "
                    "where runs diverge")
    return values


SWEEP = (
    Key("recipes", names, "recipes swept over batch sizes and learning rates"),
    Key("batch_sizes", integers(1), "batch sizes of the sweep (each at most the rows)"),
    Key("lr_factors", factors, "learning rates as multiples of each batch size's "
        "mean-square critical lr (the grid reaches past 1)"),
    Key("seeds", integer(2, MAX_SEEDS), "runs per (batch size, learning rate)"),
    Key("budget", integer(1), "steps each run may take to reach the target"),
    Key("target_excess", positive, "the sweep's target: the closed-form loss x (1 + this)"))
EVALUATE = (Key("target_excess", positive, "reached the optimum = loss within this fraction "
                "of the closed-form loss (noise-free data: of eps(dtype) x the start)"),)
TOP = (
    Key("seed", integer(0), "first seed (starts and shuffling); run k uses seed + k"),
    Key("seeds", integer(1, MAX_SEEDS), "runs per recipe and variant, trained together; 1 "
                                        "is one run (no spread)"),
    Key("device", device, "auto (cuda, else mps, else cpu), cpu, cuda, cuda:N or mps; a "
                          "missing device is an error"),
    Key("dtype", choice(DTYPES), "float32 or float64"),
    Key("batch_size", integer(1), "batch size of train@minibatch (only it depends on it)"),
    Key("fetch", section(FETCH), "where the airfoil data come from"),
    Key("prepare", section(PREPARE), "how the airfoil data are prepared"),
    Key("synthetic", named(SYNTHETIC_SET, lambda item, **v: SyntheticSet(name=item, **v), "set"),
        "the synthetic sets"),
    Key("train", section(TRAIN), "how runs are trained"),
    Key("recipes", named(RECIPE, lambda item, **v: v, "recipe", empty_ok=False),
        "what is trained"),
    Key("variants", raw, "lr and epochs of each variant on each recipe"),
    Key("evaluate", section(EVALUATE), "how runs are judged"),
    Key("sweep", section(SWEEP), "the batch-size sweep"))


SECTIONS = {"": TOP, "fetch": FETCH, "prepare": PREPARE, "synthetic.<set>": SYNTHETIC_SET,
            "train": TRAIN, "recipes.<recipe>": RECIPE, "recipes.<recipe>.init": INIT,
            "variants.<variant>.<recipe>": STEPS, "evaluate": EVALUATE, "sweep": SWEEP}


def schema_table() -> str:
    """Every key as a markdown table, from the tables above (the README's "Parameters"):
    `python -m descent.config`."""
    def shown(value: Any) -> str:
        if value is REQUIRED:
            return ""
        if value is None:
            return "the loss"
        if isinstance(value, bool):
            return f"`{str(value).lower()}`"
        if isinstance(value, dict):
            return "`{" + ", ".join(f"{k}: {v}" for k, v in value.items()) + "}`"
        return f"`{value}`"

    lines = ["| key | meaning | default |", "|---|---|---|"]
    for where, table in SECTIONS.items():
        for key in table:
            dotted = _dotted(where or "the file", key.name)
            if any(other.startswith((f"{dotted}.", dotted)) for other in SECTIONS if other):
                continue  # a section: its keys are listed one by one
            lines.append(f"| `{dotted}` | {key.meaning} | {shown(key.default)} |")
    return "\n".join(lines) + "\n"


def parse(params: Any) -> Config:
    top = read(params, "the file", TOP)
    recipes = {item: _recipe(item, spec) for item, spec in top["recipes"].items()}
    steps = section(tuple(Key(variant, section(tuple(Key(item, section(STEPS), "")
                                                     for item in recipes)), "")
                          for variant in VARIANTS))(top["variants"], "variants")
    config = Config(
        seed=top["seed"], seeds=top["seeds"], device=top["device"], dtype=top["dtype"],
        batch_size=top["batch_size"], fetch=Fetch(**top["fetch"]),
        n_train=top["prepare"]["n_train"], synthetic=top["synthetic"],
        train=Train(**top["train"]), recipes=recipes,
        variants={variant: {item: Steps(**values) for item, values in by_recipe.items()}
                  for variant, by_recipe in steps.items()},
        target_excess=top["evaluate"]["target_excess"], sweep=Sweep(**top["sweep"]))
    _across(config)
    return config


def _recipe(item: str, values: dict[str, Any]) -> Recipe:
    gradient = values["gradient_loss"]
    key = f"recipes.{item}.gradient_loss"
    return Recipe(name=item, data=values["data"], loss=values["loss"],
                  gradient_loss=values["loss"] if gradient is None else loss(gradient, key),
                  init=Init(**values["init"]), shuffle=values["shuffle"],
                  drop_last=values["drop_last"], with_replacement=values["with_replacement"])


def _across(config: Config) -> None:
    """The rules that span sections."""
    if config.device == "mps" and config.dtype == "float64":
        raise UserError("params.yaml: device is 'mps' and dtype 'float64', but MPS devices "
                        "have no float64; set dtype: float32 or device: cpu")
    unknown = [name for name in config.sweep.recipes if name not in config.recipes]
    if unknown:
        raise _fail("sweep.recipes", list(config.sweep.recipes), f"names '{unknown[0]}', which "
                    f"is no recipe (recipes: {', '.join(config.recipes)})")
    for recipe in config.recipes.values():
        key, data = f"recipes.{recipe.name}", recipe.data
        if _synthetic_name(data) not in (None, *config.synthetic):
            raise _fail(f"{key}.data", data, f"names a synthetic set that `synthetic:` does "
                        f"not define (sets: {', '.join(config.synthetic) or 'none'})",
                        "add the set or fix the path in params.yaml")
        # Only these folders are deps of the stages that read data (dvc.yaml): a file
        # elsewhere could change without DVC rerunning anything.
        if data != AIRFOIL_DATA and _synthetic_name(data) is None and \
                Path(data).parts[:2] != tuple(CUSTOM.split("/")):
            raise _fail(f"{key}.data", data, f"is outside {CUSTOM}/, the folder DVC watches "
                        "for your own data", f"move the file into {CUSTOM}/ and point the "
                        "recipe there")
        features = config.n_features(recipe)
        if recipe.init.weights.fixes not in (None, features) and features is not None:
            raise _fail(f"{key}.init.weights", recipe.init.weights.as_param(),
                        f"must list {features} numbers, one per feature of {data}")


def batch_size(config: Config, variant: str, n_examples: int) -> int:
    """gd: every example; sgd: one; minibatch: `batch_size`, at most every example."""
    return {"gd": n_examples, "sgd": 1}.get(variant, min(config.batch_size, n_examples))


if __name__ == "__main__":
    print(schema_table(), end="")
