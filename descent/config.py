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
from descent.paths import AIRFOIL_CSV, CUSTOM, PARAMS, SYNTHETIC

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


@dataclass(frozen=True)
class Steps:
    lr: float
    epochs: int


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
        shaping = {"seed": self.seed, "seeds": self.seeds, "dtype": self.dtype,
                   "train": asdict(self.train), "recipe": written,
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
        return data == AIRFOIL_CSV or _synthetic_name(data) in self.synthetic


def _synthetic_name(data: str) -> str | None:
    """The set a path data/synthetic/<set>.csv names, else None."""
    path = Path(data)
    return path.stem if path.parent.as_posix() == SYNTHETIC and path.suffix == ".csv" \
        else None


def _n_features(data: str, synthetic: dict[str, SyntheticSet]) -> int | None:
    if data == AIRFOIL_CSV:
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
                            "which is not a file; put the CSV there or fix the path")


# --- validation helpers: each raises one line naming key, value, rule and fix -----------
def _fail(key: str, value: Any, rule: str, fix: str = "fix it in params.yaml") -> UserError:
    return UserError(f"params.yaml: {key} is {value!r}, but it {rule}; {fix}")


def _section(node: Any, key: str, required: tuple[str, ...], optional: tuple[str, ...] = ()
             ) -> dict[str, Any]:
    if not isinstance(node, dict):
        raise _fail(key, node, f"must be a mapping with keys {', '.join(required + optional)}")
    missing = [k for k in required if k not in node]
    if missing:
        where = missing[0] if key == "the file" else f"{key}.{missing[0]}"
        raise UserError(f"params.yaml: {key} has no '{missing[0]}'; add {where} (see the "
                        "comments in params.yaml and the README, or `git checkout params.yaml`)")
    unknown = [str(k) for k in node if k not in required + optional]
    if unknown:
        raise UserError(f"params.yaml: {key} has an unknown key '{unknown[0]}'; allowed: "
                        f"{', '.join(required + optional)} (a typo?)")
    return node


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _integer(value: Any, key: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        rule = "must be a positive integer" if minimum == 1 else \
            f"must be an integer >= {minimum}"
        raise _fail(key, value, rule)
    return value


def _number(value: Any, key: str, check: Callable[[float], bool] = math.isfinite,
            rule: str = "must be a finite number") -> float:
    if not _is_number(value) or not math.isfinite(value) or not check(value):
        raise _fail(key, value, rule)
    return float(value)


def _positive(value: Any, key: str) -> float:
    return _number(value, key, lambda v: v > 0, "must be a positive number")


def _choice(value: Any, key: str, allowed: tuple[str, ...] | dict) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise _fail(key, value, f"must be one of {', '.join(allowed)}")
    return value


def _flag(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise _fail(key, value, "must be true or false")
    return value


def _name(value: Any, key: str) -> str:
    if not isinstance(value, str) or not NAME.match(value):
        raise UserError(f"params.yaml: {key} names {value!r}; names may use letters, digits "
                        "and _ only, starting with a letter (they become file names); "
                        "rename it")
    return value


def _device(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", value):
        raise _fail("device", value, "must be auto, cpu, cuda, cuda:N or mps")
    return value


# --- the sections --------------------------------------------------------------------
TOP = ("seed", "seeds", "device", "dtype", "batch_size", "fetch", "prepare", "synthetic", "train",
       "recipes", "variants", "evaluate")


def parse(params: Any) -> Config:
    top = _section(params, "the file", TOP)
    fetch = _section(top["fetch"], "fetch", ("sources", "sha256"))
    sources = fetch["sources"]
    if not isinstance(sources, list) or not all(isinstance(s, str) and s for s in sources):
        raise _fail("fetch.sources", sources, "must be a list of URLs or paths")
    sha = fetch["sha256"]
    if not isinstance(sha, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", sha):
        raise _fail("fetch.sha256", sha, "must be 64 hexadecimal digits")
    prepare = _section(top["prepare"], "prepare", ("n_train",))
    synthetic = _synthetic(top["synthetic"])
    train = _section(top["train"], "train", ("engine", "log_every", "blowup"))
    recipes = _recipes(top["recipes"], synthetic)
    dtype = _choice(top["dtype"], "dtype", DTYPES)
    device = _device(top["device"])
    if device == "mps" and dtype == "float64":
        raise UserError("params.yaml: device is 'mps' and dtype 'float64', but MPS devices "
                        "have no float64; set dtype: float32 or device: cpu")
    return Config(
        seed=_integer(top["seed"], "seed", 0),
        seeds=_seeds(top["seeds"]),
        device=device, dtype=dtype,
        batch_size=_integer(top["batch_size"], "batch_size", 1),
        fetch=Fetch(tuple(sources), sha.lower()),
        n_train=_integer(prepare["n_train"], "prepare.n_train", 2),
        synthetic=synthetic,
        train=Train(engine=_choice(train["engine"], "train.engine", ENGINES),
                    log_every=_integer(train["log_every"], "train.log_every", 1),
                    blowup=_number(train["blowup"], "train.blowup", lambda v: v > 1,
                                   "must be a number above 1")),
        recipes=recipes,
        variants=_variants(top["variants"], recipes),
        target_excess=_positive(_section(top["evaluate"], "evaluate", ("target_excess",))
                                ["target_excess"], "evaluate.target_excess"))


def _synthetic(node: Any) -> dict[str, SyntheticSet]:
    if not isinstance(node, dict):
        raise _fail("synthetic", node, "must map set names to their settings")
    sets = {}
    for name, spec in node.items():
        key = f"synthetic.{_name(name, 'synthetic')}"
        spec = _section(spec, key, ("n_rows", "features", "weights", "bias", "noise_std",
                                    "seed"))
        kind = spec["features"].get("kind") if isinstance(spec["features"], dict) else None
        _choice(kind, f"{key}.features.kind", tuple(FEATURE_KINDS))
        first, second = FEATURE_KINDS[kind]
        features = _section(spec["features"], f"{key}.features", ("kind", first, second))
        a = _number(features[first], f"{key}.features.{first}")
        b = _number(features[second], f"{key}.features.{second}")
        if kind == "uniform" and not a < b:
            raise _fail(f"{key}.features.high", b, f"must be above low ({a})")
        if kind == "normal" and b < 0:
            raise _fail(f"{key}.features.std", b, "must be >= 0")
        weights = spec["weights"]
        if not isinstance(weights, list) or not weights:
            raise _fail(f"{key}.weights", weights, "must be a non-empty list of numbers "
                        "(one per feature)")
        sets[name] = SyntheticSet(
            name=name, n_rows=_integer(spec["n_rows"], f"{key}.n_rows", 2),
            features=Features(kind, a, b),
            weights=tuple(_number(w, f"{key}.weights") for w in weights),
            bias=_number(spec["bias"], f"{key}.bias"),
            noise_std=_number(spec["noise_std"], f"{key}.noise_std", lambda v: v >= 0,
                              "must be a number >= 0"),
            seed=_integer(spec["seed"], f"{key}.seed", 0))
    return sets


def _init(node: Any, key: str) -> Init:
    init = _section(node, key, (), ("weights", "bias"))
    weights = init.get("weights", {"normal_std": 0.01})
    if isinstance(weights, dict):
        weights = Normal(_positive(_section(weights, f"{key}.weights", ("normal_std",))
                                   ["normal_std"], f"{key}.weights.normal_std"))
    elif isinstance(weights, list) and weights:
        weights = Given(tuple(_number(w, f"{key}.weights") for w in weights))
    elif weights == "torch_default":
        weights = TorchDefault()
    else:
        raise _fail(f"{key}.weights", weights, "must be torch_default, {normal_std: s} or a "
                    "list of numbers (one per feature)")
    bias = init.get("bias", 0.0)
    if bias == "torch_default":
        return Init(weights, TorchDefault())
    if not _is_number(bias):
        raise _fail(f"{key}.bias", bias, "must be a number or torch_default")
    return Init(weights, Value(_number(bias, f"{key}.bias")))


def _recipes(node: Any, synthetic: dict[str, SyntheticSet]) -> dict[str, Recipe]:
    if not isinstance(node, dict) or not node:
        raise _fail("recipes", node, "must map recipe names to their settings")
    recipes = {}
    for name, spec in node.items():
        key = f"recipes.{_name(name, 'recipes')}"
        spec = _section(spec, key, ("data", "loss"),
                        ("gradient_loss", "init", "shuffle", "drop_last"))
        data = spec["data"]
        if not isinstance(data, str) or not data.endswith(".csv") or Path(data).is_absolute() \
                or ".." in Path(data).parts:
            raise _fail(f"{key}.data", data, f"must be a .csv path inside the project: "
                        f"{AIRFOIL_CSV}, {SYNTHETIC}/<set>.csv or {CUSTOM}/<file>.csv")
        if _synthetic_name(data) not in (None, *synthetic):
            raise _fail(f"{key}.data", data, f"names a synthetic set that `synthetic:` does "
                        f"not define (sets: {', '.join(synthetic) or 'none'})",
                        "add the set or fix the path in params.yaml")
        # Only these folders are deps of the stages that read data (dvc.yaml): a file
        # elsewhere could change without DVC rerunning anything.
        if data != AIRFOIL_CSV and _synthetic_name(data) is None and \
                Path(data).parts[:2] != tuple(CUSTOM.split("/")):
            raise _fail(f"{key}.data", data, f"is outside {CUSTOM}/, the folder DVC "
                        "watches for your own data", f"move the file into {CUSTOM}/ and "
                        "point the recipe there")
        loss = LOSSES[_choice(spec["loss"], f"{key}.loss", tuple(LOSSES))]
        gradient = spec.get("gradient_loss", loss.name)
        recipe = Recipe(
            name=name, data=data, loss=loss,
            gradient_loss=LOSSES[_choice(gradient, f"{key}.gradient_loss", tuple(LOSSES))],
            init=_init(spec.get("init", {}), f"{key}.init"),
            shuffle=_flag(spec.get("shuffle", True), f"{key}.shuffle"),
            drop_last=_flag(spec.get("drop_last", False), f"{key}.drop_last"))
        features = _n_features(data, synthetic)
        if recipe.init.weights.fixes not in (None, features) and features is not None:
            raise _fail(f"{key}.init.weights", recipe.init.weights.as_param(),
                        f"must list {features} numbers, one per feature of {data}")
        recipes[name] = recipe
    return recipes


def _variants(node: Any, recipes: dict[str, Recipe]) -> dict[str, dict[str, Steps]]:
    node = _section(node, "variants", VARIANTS)
    variants = {}
    for variant in VARIANTS:
        settings = _section(node[variant], f"variants.{variant}", tuple(recipes))
        variants[variant] = {}
        for name in recipes:
            key = f"variants.{variant}.{name}"
            steps = _section(settings[name], key, ("lr", "epochs"))
            variants[variant][name] = Steps(lr=_positive(steps["lr"], f"{key}.lr"),
                                            epochs=_integer(steps["epochs"], f"{key}.epochs",
                                                            1))
    return variants


MAX_SEEDS = 4096  # runs per (recipe, variant); past this the per-seed files grow unwieldy


def _seeds(value: Any) -> int:
    seeds = _integer(value, "seeds", 1)  # one run, as the tutorials: no spread, n = 1
    if seeds > MAX_SEEDS:
        raise _fail("seeds", value, f"must be at most {MAX_SEEDS}")
    return seeds


def batch_size(config: Config, variant: str, n_examples: int) -> int:
    """gd: every example; sgd: one; minibatch: `batch_size`, at most every example."""
    return {"gd": n_examples, "sgd": 1}.get(variant, min(config.batch_size, n_examples))
