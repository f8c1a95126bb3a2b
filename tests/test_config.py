"""The one config: params.yaml parsed and validated once, with one-line errors."""
from __future__ import annotations

import pytest

from descent import config as configuration
from descent.io import UserError
from tests.factory import REFERENCE, config, params


def test_the_default_params_are_the_reference_experiments():
    """The pipeline's default run IS the reference (README); tests state the reference."""
    live = configuration.load()
    assert live.recipes == config().recipes and live.variants == config().variants
    assert live.synthetic == config().synthetic and live.train == config().train


def test_yaml_1_2_floats_as_dvc_writes_them(tmp_path):
    """`dvc exp run -S lr=0.00001` writes 1e-05, a string under PyYAML's YAML 1.1 rules."""
    text = configuration.PARAMS_FILE.read_text().replace(
        "airfoil: {lr: 1.0, epochs: 6}", "airfoil: {lr: 1e-05, epochs: 6}", 1)
    assert "1e-05" in text
    (tmp_path / "params.yaml").write_text(text)
    assert configuration.load(tmp_path / "params.yaml").steps("gd", "airfoil").lr == 1e-05


def test_no_param_key_is_one_the_dvc_run_cache_ignores():
    """DVC 3.67 drops keys named like output metadata (size, nfiles) when it hashes a stage
    for its run cache: a change to such a param would restore stale outputs silently."""
    from dvc.output import Meta

    ignored = {Meta.PARAM_SIZE, Meta.PARAM_NFILES}

    def keys(node):
        if isinstance(node, dict):
            for key, value in node.items():
                yield key
                yield from keys(value)
        elif isinstance(node, list):
            for value in node:
                yield from keys(value)

    live = configuration.read_yaml(configuration.PARAMS_FILE)
    assert ignored == {"size", "nfiles"}
    assert not ignored & set(keys(live))


BAD = [
    # (dotted key, value, words the one-line error must contain)
    ("seed", -1, "seed is -1, but it must be an integer >= 0"),
    ("seed", True, "seed is True"),
    ("device", "gpu", "must be auto, cpu, cuda, cuda:N or mps"),
    ("dtype", "float16", "must be one of float32, float64"),
    ("batch_size", 0, "batch_size is 0, but it must be a positive integer"),
    ("batch_size", 2.5, "batch_size is 2.5"),
    ("train.engine", "jax", "must be one of auto, compiled, affine, loop"),
    ("train.log_every", 0, "train.log_every is 0"),
    ("train.blowup", 0.5, "must be a number above 1"),
    ("train.divergence_factor", 10.0, "train has an unknown key 'divergence_factor'"),
    ("recipes.airfoil.loss", "l1", "recipes.airfoil.loss is 'l1', but it must be one of "
                                   "half_squared, mse"),
    ("recipes.airfoil.shuffle", "yes", "recipes.airfoil.shuffle is 'yes', but it must be true "
                                       "or false"),
    ("recipes.airfoil.data", "../../etc/x.csv", "must be a .npy or .csv path inside the project"),
    ("recipes.airfoil.data", "data/synthetic/cube.npy", "names a synthetic set that "
                                                        "`synthetic:` does not define"),
    ("recipes.airfoil.init.weights", [1.0], "must list 5 numbers, one per feature"),
    ("recipes.airfoil.init.bias", "zero", "must be a number or torch_default"),
    ("variants.gd.airfoil.lr", -1, "variants.gd.airfoil.lr is -1, but it must be a positive"),
    ("variants.gd.airfoil.lr", ".inf", "variants.gd.airfoil.lr is '.inf'"),
    ("variants.sgd.airfoil.epochs", 0, "variants.sgd.airfoil.epochs is 0"),
    ("synthetic.line_minus5x.size", 50, "synthetic.line_minus5x has an unknown key 'size'"),
    ("synthetic.line_minus5x.n_rows", 1, "n_rows is 1, but it must be an integer >= 2"),
    ("synthetic.line_minus5x.weights", [], "must be a non-empty list"),
    ("synthetic.line_minus5x.features", {"kind": "poisson"}, "must be one of grid, uniform"),
    ("synthetic.line_minus5x.features", {"kind": "uniform", "low": 1, "high": 1},
     "must be above low"),
    ("synthetic.line_minus5x.noise_std", -1, "must be a number >= 0"),
    ("synthetic.line_minus5x.seed", -3, "must be an integer >= 0"),
    ("prepare.n_train", "all", "prepare.n_train is 'all'"),
    ("fetch.sha256", "abc", "must be 64 hexadecimal digits"),
    ("evaluate.target_excess", 0, "evaluate.target_excess is 0"),
    ("sweep.batch_sizes", [], "sweep.batch_sizes is [], but it must be a non-empty list"),
    ("sweep.batch_sizes", [0, 4], "sweep.batch_sizes is 0, but it must be a positive integer"),
    ("sweep.lr_factors", [0.1, 0.5], "must reach past 1 (the critical learning rate)"),
    ("sweep.recipes", ["cube"], "names 'cube', which is no recipe"),
    ("sweep.seeds", 1, "sweep.seeds is 1, but it must be an integer >= 2"),
]


@pytest.mark.parametrize("dotted, value, words", BAD, ids=[f"{d}={v!r}" for d, v, _ in BAD])
def test_every_bad_value_is_one_line_naming_key_value_and_rule(dotted, value, words):
    with pytest.raises(UserError) as error:
        config(**{dotted: value})
    message = str(error.value)
    assert words in message and "\n" not in message and "params.yaml" in message


@pytest.mark.parametrize("remove, words", [
    ("recipes", "has no 'recipes'"), ("variants.sgd", "variants has no 'sgd'"),
    ("variants.gd.airfoil", "variants.gd has no 'airfoil'"),
    ("variants.gd.airfoil.lr", "variants.gd.airfoil has no 'lr'"),
])
def test_a_missing_section_names_the_key_to_add(remove, words):
    tree = params()
    *parents, last = remove.split(".")
    node = tree
    for key in parents:
        node = node[key]
    del node[last]
    with pytest.raises(UserError, match=words):
        configuration.parse(tree)


def test_a_recipe_name_that_is_a_path_is_refused():
    tree = params()
    tree["recipes"]["../../x"] = tree["recipes"].pop("airfoil")
    with pytest.raises(UserError, match=r"recipes names '../../x'; names may use letters"):
        configuration.parse(tree)


def test_mps_with_float64_is_refused():
    with pytest.raises(UserError, match="MPS devices have no float64"):
        config(device="mps", dtype="float64")


def test_the_config_is_frozen():
    settings = config()
    with pytest.raises(AttributeError):
        settings.batch_size = 3  # type: ignore[misc]
    assert settings.recipes["airfoil"].loss.scale == 0.5
    assert settings.recipes["airfoil_concise"].gradient_loss.scale == 1.0
    assert REFERENCE["batch_size"] == settings.batch_size == 10


def test_broken_yaml_is_one_line(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("seed: 0\nrecipes: [unclosed\n")
    with pytest.raises(UserError) as error:
        configuration.load(path)
    assert "is not valid YAML at line" in str(error.value) and "\n" not in str(error.value)


def test_the_params_digest_of_runs_follows_exactly_the_params_that_shape_them():
    """Stage evaluate refuses runs whose digest differs from params.yaml's: it must change
    with every param that shapes a (recipe, variant)'s runs, and with no other."""
    import copy

    from descent.config import parse, read_yaml

    base = read_yaml(configuration.PARAMS_FILE)
    before = parse(base)

    def digest(change, variant="gd", recipe="airfoil"):
        params = copy.deepcopy(base)
        change(params)
        return parse(params).fingerprint(variant, recipe)

    same = before.fingerprint("gd", "airfoil")
    shaping = [lambda p: p.update(seeds=8), lambda p: p.update(seed=1),
               lambda p: p.update(dtype="float64"),
               lambda p: p["train"].update(log_every=50),
               lambda p: p["recipes"]["airfoil"].update(shuffle=False),
               lambda p: p["recipes"]["airfoil"]["init"].update(bias=1.0),
               lambda p: p["variants"]["gd"]["airfoil"].update(lr=0.5)]
    assert all(digest(change) != same for change in shaping)
    unrelated = [lambda p: p.update(batch_size=20), lambda p: p.update(device="cpu"),
                 lambda p: p["variants"]["sgd"]["airfoil"].update(lr=0.5),
                 lambda p: p["recipes"]["line_minus5x"].update(shuffle=True),
                 lambda p: p["evaluate"].update(target_excess=0.1)]
    assert all(digest(change) == same for change in unrelated)
    assert digest(lambda p: p.update(batch_size=20), "minibatch") != \
        before.fingerprint("minibatch", "airfoil")


def test_the_readme_lists_every_param_as_the_schema_does():
    """The tables in descent/config.py are the params' documentation: every key says what it
    means, and the README's "Parameters" table is theirs (`python -m descent.config`)."""
    for table in configuration.SECTIONS.values():
        assert all(key.meaning for key in table)
    readme = (configuration.ROOT / "README.md").read_text()
    shown = readme.split("<!-- params-table:start -->\n")[1].split("<!-- params-table:end -->")[0]
    assert shown == configuration.schema_table()
