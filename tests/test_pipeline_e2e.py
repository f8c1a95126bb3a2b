"""End to end: the real `dvc` command line in a temporary copy of the project."""
from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import ROOT, dvc, ran, run

pytestmark = pytest.mark.e2e
STAGES_AFTER_DATA = {"train@gd", "train@sgd", "train@minibatch", "evaluate", "report"}


@pytest.fixture
def project(built, tmp_path) -> Path:
    """A private copy of the built project, for tests that change it."""
    return Path(shutil.copytree(built, tmp_path / "project", symlinks=True))


def set_param(project: Path, dotted: str, value) -> None:
    params_file = project / "params.yaml"
    params = yaml.safe_load(params_file.read_text())
    node = params
    *parents, last = dotted.split(".")
    for key in parents:
        node = node[key]
    node[last] = value
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))


def test_the_committed_lock_file_names_exactly_the_stages_of_dvc_yaml():
    """DVC keeps a removed stage's entry in dvc.lock; a stale entry is parsed by every DVC
    command (slower) and says the pipeline has a stage it has not."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    names = {f"{name}@{key}" if "foreach" in body else name
             for name, body in stages.items() for key in body.get("foreach", [None])}
    assert set(yaml.safe_load((ROOT / "dvc.lock").read_text())["stages"]) == names



def test_every_recipe_has_a_by_revision_plot():
    """DVC cannot name the plots/loss folder twice, so the by-revision charts name each
    recipe's file: a recipe added to params.yaml needs its entry in dvc.yaml."""
    recipes = yaml.safe_load((ROOT / "params.yaml").read_text())["recipes"]
    plots = [next(iter(entry.items())) for entry in
             yaml.safe_load((ROOT / "dvc.yaml").read_text())["plots"] if isinstance(entry, dict)]
    by_revision = {plot_id: props for plot_id, props in plots
                   if props.get("template") == "by_revision"}
    assert {plot_id: props["y"] for plot_id, props in by_revision.items()} == {
        f"by_revision/{name}": {f"plots/loss/{name}.csv": "loss"} for name in recipes}


def test_dvc_reads_our_yaml_through_the_c_parser_with_the_same_values():
    """DVC parses dvc.lock and params.yaml ~50 times per `exp run` (~1 s of pure-Python
    parsing on 2 cores); requirements.txt pins libyaml's parser for ruamel.yaml. It must be
    found, and read our files (YAML 1.2 floats such as 1e-05 included) as the pure one does."""
    from dvc.utils.serialize import parse_yaml
    from ruamel.yaml import YAML, main

    assert main.CParser is not None, "ruamel.yaml.clib is missing: pip install -r requirements.txt"
    for name in ("params.yaml", "dvc.lock", "dvc.yaml"):
        text = (ROOT / name).read_text()
        assert parse_yaml(text, name) == YAML(typ="safe", pure=True).load(text)
    assert parse_yaml("lr: 1e-05\n", "x") == {"lr": 1e-05}

def test_repro_builds_every_output_and_a_second_repro_reruns_nothing(built, env):
    assert (built / "data/raw/airfoil_self_noise.dat").stat().st_size == 59_984
    for output in ["data/prepared/airfoil.npy", "metrics/evaluate.json", "metrics/speed.json",
                   "plots/comparison.png", "metrics/reference.md", "plots/loss/airfoil.csv"]:
        assert (built / output).is_file(), output
    second = dvc(built, env, "repro")
    assert ran(second.stdout) == set()
    assert "Data and pipelines are up to date" in dvc(built, env, "status").stdout
    # The data file is DVC's, not git's.
    tracked = run(["git", "ls-files"], built, env).stdout.split()
    assert not any(name.endswith("airfoil_self_noise.dat") for name in tracked)


def test_metrics_are_strict_json_and_judge_every_run(built):
    def strict(value):  # json.loads accepts NaN/Infinity unless told not to
        raise ValueError(f"non-strict JSON token {value}")

    for path in (built / "metrics").rglob("*.json"):
        json.loads(path.read_text(), parse_constant=strict)
    metrics = json.loads((built / "metrics/evaluate.json").read_text())
    headline = json.loads((built / "metrics/final_loss.json").read_text())
    per_seed = json.loads((built / "metrics/seeds.json").read_text())
    params = yaml.safe_load((built / "params.yaml").read_text())
    assert set(metrics) == set(headline) == set(per_seed) == set(params["recipes"])
    for recipe, results in metrics.items():
        assert set(results) == {"closed_form", "theory", "gd", "sgd", "minibatch", "comparisons"}
        optimum = results["closed_form"]["loss"]
        for variant in ("gd", "sgd", "minibatch"):
            judged, seeds = results[variant], per_seed[recipe][variant]
            assert judged["runs"] == params["seeds"] == len(seeds["final_loss"])
            diverged = [loss == "diverged" for loss in seeds["final_loss"]]
            assert judged["diverged_fraction"] == pytest.approx(np.mean(diverged))
            if all(diverged):
                assert judged["final_loss"] == "diverged" == headline[recipe][variant]
                continue
            final = judged["final_loss"]
            assert headline[recipe][variant] == final["mean"]
            assert final["ci95_low"] <= final["mean"] <= final["ci95_high"]
            assert final["n"] == len(diverged) - sum(diverged)
            # No descent beats least squares; float32 sums over n <= 1500 rows carry a
            # relative rounding error of at most n * 2^-24 ~ 1e-4.
            sound = [loss for loss in seeds["final_loss"] if loss != "diverged"]
            assert min(sound) >= optimum * (1 - 1e-4), (recipe, variant)
            assert final["mean"] == pytest.approx(np.mean(sound), rel=1e-6)  # 7 digits kept
            assert judged["excess_loss"]["mean"] == pytest.approx(final["mean"] - optimum,
                                                                  abs=1e-6 * final["mean"])
        for comparison in results["comparisons"].values():
            assert comparison["lower"] in ("gd", "sgd", "minibatch", "no clear difference",
                                           "too few runs that did not diverge")


def test_the_comparison_figure_is_a_real_picture(built):
    from matplotlib.image import imread

    image = imread(built / "plots/comparison.png")
    height, width = image.shape[:2]
    assert width >= 1000 and height >= 400
    colours = {tuple(pixel) for pixel in (image[..., :3] * 255).astype(int).reshape(-1, 3)}
    # The three variants' colours (matplotlib tab:blue, tab:orange, tab:green) are drawn.
    for colour in [(31, 119, 180), (255, 127, 14), (44, 160, 44)]:
        assert colour in colours, colour


def test_the_comparison_figure_of_this_run_reads_well_at_githubs_width(built, tmp_path):
    """tests/test_figure.py's checks, on the figure drawn from this run's own outputs."""
    from matplotlib.image import imread

    from tests import test_figure

    figure, names, judged, width, dpi = test_figure.drawn(built, tmp_path)
    assert imread(built / "plots/comparison.png").shape[1] == width  # the same picture size
    test_figure.check_gd_labels(figure, names, judged)
    test_figure.check_one_time_unit_per_row(figure, names, built)
    test_figure.check_font_sizes(figure, width, dpi)
    test_figure.check_no_text_covers_a_curve(figure)


def test_changing_one_synthetic_param_reruns_only_what_depends_on_it(project, env):
    set_param(project, "synthetic.line_minus5x.noise_std", 0.5)
    # check validates every param change; its output never changes, so it reruns nothing.
    assert ran(dvc(project, env, "repro").stdout) == \
        {"check", "synthesize", "solve", "sweep"} | STAGES_AFTER_DATA  # sweep: its data deps


def test_the_batch_size_never_reruns_the_sweep_and_a_sweep_param_reruns_only_it(project, env):
    set_param(project, "batch_size", 20)
    assert ran(dvc(project, env, "repro").stdout) == \
        {"check", "train@minibatch", "evaluate", "report"}
    set_param(project, "sweep.seeds", 4)
    assert ran(dvc(project, env, "repro").stdout) == {"check", "sweep"}


def test_changing_the_airfoil_sgd_lr_reruns_only_train_sgd_and_its_dependents(project, env):
    set_param(project, "variants.sgd.airfoil.lr", 0.01)
    assert ran(dvc(project, env, "repro").stdout) == {"check", "train@sgd", "evaluate", "report"}


def test_same_params_give_byte_identical_deterministic_outputs(project, env):
    """Two forced runs here, compared with each other: never with committed bytes, which
    another CPU computes differently in the last float32 digits."""
    paths = ["metrics/train/minibatch.json", "data/runs/minibatch.npz", "metrics/evaluate.json",
             "metrics/seeds.json", "metrics/final_loss.json", "plots/loss/airfoil.csv"]
    outputs = []
    for _ in range(2):
        dvc(project, env, "repro", "--force", "train@minibatch", "evaluate")
        outputs.append({path: (project / path).read_bytes() for path in paths})
    assert outputs[0] == outputs[1]


def test_changing_n_rows_through_exp_run_really_changes_the_data(project, env):
    """The run cache ignores params named `size`: the key is n_rows, so this reruns."""
    dvc(project, env, "exp", "run", "-S", "synthetic.line_minus5x.n_rows=50")
    assert np.load(project / "data/synthetic/line_minus5x.npy").shape == (50, 2)
    results = json.loads((project / "metrics/train/gd.json").read_text())["recipes"]
    assert results["line_minus5x"]["examples"] == 50


def test_a_float_written_by_dvc_exp_run_is_read_as_a_float(project, env):
    first = dvc(project, env, "exp", "run", "-S", "variants.gd.airfoil.lr=0.00001")
    assert "1e-05" in (project / "params.yaml").read_text()  # as DVC writes it
    assert "train@gd" in ran(first.stdout)
    results = json.loads((project / "metrics/train/gd.json").read_text())["recipes"]
    assert results["airfoil"]["lr"] == 1e-05


def test_a_reference_row_on_other_data_says_not_comparable(project, env):
    set_param(project, "recipes.airfoil.data", "data/synthetic/plane_2x1_minus3p4x2.npy")
    # (1000 rows there: the sweep's batch sizes must fit them, or it refuses in one line)
    set_param(project, "sweep.batch_sizes", [1, 10, 100, 1000])
    dvc(project, env, "repro")
    table = (project / "metrics/reference.md").read_text()
    airfoil_rows = [line for line in table.splitlines() if "| airfoil ·" in line]
    assert len(airfoil_rows) == 4
    assert all("not comparable (data differ from the published experiment)" in line
               for line in airfoil_rows), airfoil_rows


@pytest.mark.parametrize("dotted, value, message", [
    ("device", "cuda", "CUDA is not available"),
    ("batch_size", 0, "batch_size is 0, but it must be a positive integer"),
    ("variants.gd.airfoil.lr", -1, "variants.gd.airfoil.lr is -1, but it must be a positive"),
])
def test_bad_params_fail_with_one_clear_line(project, env, dotted, value, message):
    import torch

    if value == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    set_param(project, dotted, value)
    result = dvc(project, env, "repro", check=False)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error [")]
    assert len(errors) == 1 and message in errors[0], result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_fetch_without_network_or_copy_names_the_override(project, env):
    env = {**env, "AIRFOIL_SOURCE": str(project / "nowhere.dat")}
    result = dvc(project, env, "repro", "--force", "fetch", check=False)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "AIRFOIL_SOURCE" in result.stderr and "nowhere.dat (no such file)" in result.stderr


def readme_commands(name: str) -> list[str]:
    """The command lines of a README code block between <!-- name:start/end --> markers."""
    text = (ROOT / "README.md").read_text()
    block = text.split(f"<!-- {name}:start -->", 1)[1].split(f"<!-- {name}:end -->", 1)[0]
    lines = block.strip().removeprefix("```bash").removesuffix("```").strip().splitlines()
    return [line for line in lines if line.strip()]


def wait_for_queue(project: Path, env, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = dvc(project, env, "queue", "status").stdout
        if not re.search(r"\b(Queued|Running)\b", status):
            assert "Failed" not in status, status
            return
        time.sleep(2)
    raise AssertionError(f"the queue did not finish in {timeout} s:\n{status}")


def run_readme_block(name: str, project: Path, env) -> dict[str, str]:
    """Run a README block's lines as written, in order (waiting for a started queue to
    finish); each command's output, by command."""
    outputs = {}
    for line in readme_commands(name):
        outputs[line.split("#")[0].strip()] = run(["bash", "-c", line], project, env).stdout
        if line.startswith("dvc queue start"):
            wait_for_queue(project, env)
    return outputs


def test_the_readme_session_runs_as_written_and_ends_at_the_baseline(project, env):
    env = {**env, "COLUMNS": "120"}
    outputs = run_readme_block("everyday", project, env)
    assert len(outputs) >= 10

    # The workspace is back at the committed baseline, results and all.
    assert run(["git", "status", "--porcelain"], project, env).stdout == ""
    assert "Data and pipelines are up to date" in dvc(project, env, "status").stdout
    assert "batch-20" in run(["git", "branch"], project, env).stdout

    # exp diff: the batch size and each recipe's mini-batch headline, in 120 columns, uncut.
    table = outputs["dvc exp diff bs20 bs100"]
    params = yaml.safe_load((project / "params.yaml").read_text())
    assert "…" not in table and "batch_size" in table
    assert all(f"{recipe}.minibatch" in table for recipe in params["recipes"])
    assert not re.search(r"\.(gd|sgd)\b", table)  # they did not rerun: nothing to report
    assert max(len(line) for line in table.splitlines()) <= 120
    # make exps: the table the README recommends for many experiments, uncut in 120
    # columns (dvc exp show --only-changed is 400+ wide, cut to "…"), with the param that
    # differs and the changed headline losses of every experiment.
    experiments_table = outputs["make exps"]
    assert "…" not in experiments_table
    assert max(len(line) for line in experiments_table.splitlines()) <= 120
    header, names, _, *rows = experiments_table.splitlines()
    assert "batch_size" in names.split() and "minibatch" in names.split()
    assert all(recipe in header.split() for recipe in params["recipes"])
    assert {row.split()[0] for row in rows} >= {"bs20", "bs100", "bs1", "bs5", "bs1500"}
    assert "data/runs" not in experiments_table  # no dependency hashes
    page = (project / "dvc_plots/index.html").read_text()
    assert len(page) < 3_000_000  # thinned curves (0.8 MB of it is the inlined vega)
    # Offline by default: the committed template inlines vega; nothing loads from a CDN.
    assert "cdn.jsdelivr.net" not in page and "vegaEmbed" in page

    shown = json.loads(dvc(project, env, "exp", "show", "--json").stdout)
    experiments = {revision["name"]: revision["data"] for commit in shown
                   for experiment in commit.get("experiments") or []
                   for revision in experiment["revs"]}
    assert {"bs20", "bs100", "bs1", "bs5", "bs1500"} <= set(experiments)
    for name, size in (("bs20", 20), ("bs100", 100), ("bs1", 1), ("bs5", 5), ("bs1500", 1500)):
        data = experiments[name]
        assert data["params"]["params.yaml"]["data"]["batch_size"] == size
        # Only the headlines are declared metrics: the detail stays out of exp show.
        assert set(data["metrics"]) == {"metrics/final_loss.json", "metrics/sweep.json"}
    # The detail is one --targets away, with the batch size each run really used.
    detail = json.loads(dvc(project, env, "metrics", "diff", "bs20", "bs1500", "--json",
                            "--targets", "metrics/evaluate.json").stdout)["metrics/evaluate.json"]
    assert detail["airfoil.minibatch.batch_size"] == {"old": 20, "new": 1500, "diff": 1480}
    # line_minus5x has 100 rows: batch 1500 is clipped to them, and said so.
    assert detail["line_minus5x.minibatch.batch_size"] == {"old": 20, "new": 100, "diff": 80}

    plots = dvc(project, env, "plots", "diff", "bs20", "bs100", "--json",
                "--targets", "plots/loss/airfoil.csv")
    rows = [row for entry in json.loads(plots.stdout)["data"]["plots/loss/airfoil.csv"]
            for row in entry["content"]["data"]["values"]]
    assert {row["rev"] for row in rows} == {"bs20", "bs100"}
    # Logged every 100 examples either way: same points, different mini-batch losses; the
    # GD curve did not rerun and coincides.
    minibatch = {rev: [r["loss"] for r in rows if r["rev"] == rev and r["variant"] == "minibatch"]
                 for rev in ("bs20", "bs100")}
    assert len(minibatch["bs20"]) == len(minibatch["bs100"]) == 31  # 2 epochs x 15 + start
    assert minibatch["bs20"][0] == minibatch["bs100"][0]          # same starts
    assert minibatch["bs20"][1:] != minibatch["bs100"][1:]
    gd = {rev: [r["loss"] for r in rows if r["rev"] == rev and r["variant"] == "gd"]
          for rev in ("bs20", "bs100")}
    assert gd["bs20"] == gd["bs100"]


def test_a_clipped_batch_size_is_noticed_once(project, env):
    set_param(project, "batch_size", 2000)
    result = dvc(project, env, "repro", "train@minibatch")
    notices = [line for line in result.stdout.splitlines() if line.startswith("notice:")]
    assert len(notices) == 1 and "line_minus5x" in notices[0] and "airfoil," in notices[0]
    recorded = json.loads((project / "metrics/train/minibatch.json").read_text())["recipes"]
    assert recorded["line_minus5x"]["batch_size"] == 100
    assert recorded["airfoil"]["batch_size"] == 1500


def test_dvc_plots_use_the_offline_template_instead_of_the_cdn(built, env, tmp_path):
    from descent.offline_html import template

    page = tmp_path / "offline.html"
    page.write_text(template(["window.fakeVega = 1;", "window.fakeVegaLite = 2;"]))
    dvc(built, env, "plots", "show", "--html-template", str(page), "-o", str(tmp_path / "out"))
    html = (tmp_path / "out/index.html").read_text()
    assert "window.fakeVegaLite = 2;" in html and "plots_loss_airfoil_csv" in html
    assert "cdn.jsdelivr.net" not in html and "{plot_divs}" not in html


def test_an_experiment_shared_through_a_git_and_a_dvc_remote_reaches_another_clone(
        project, env, tmp_path):
    """The README's sharing commands: experiment refs travel by git, its DVC-cached outputs
    by the DVC remote (the README's folder beside the project; S3 and the others work the
    same way). The project starts as a user's clone does: `origin` exists, nothing pushed,
    no DVC remote; the block adds the DVC remote, commits it and pushes."""
    origin = tmp_path / "origin.git"
    run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], tmp_path, env)
    run(["git", "remote", "add", "origin", str(origin)], project, env)
    run_readme_block("share", project, env)
    assert (tmp_path / "dvc-storage").is_dir()  # ../dvc-storage, beside the project
    ours = json.loads((project / "metrics/final_loss.json").read_text())

    other = tmp_path / "other"
    run(["git", "clone", "-q", str(origin), str(other)], tmp_path, env)
    run_readme_block("clone", other, env)
    # The other clone has the experiment's results and the cached curves behind them.
    assert json.loads((other / "metrics/final_loss.json").read_text()) != ours  # bs20 now
    assert yaml.safe_load((other / "params.yaml").read_text())["batch_size"] == 20
    assert (other / "data/runs/minibatch.npz").is_file()
    status = dvc(other, env, "status").stdout
    assert "Data and pipelines are up to date" in status, status


def test_the_readme_reference_runs_fill_in_the_reference_table(project, env):
    run_readme_block("reference-runs", project, env)
    shown = json.loads(dvc(project, env, "exp", "show", "--json").stdout)
    names = {revision["name"] for commit in shown
             for experiment in commit.get("experiments") or [] for revision in experiment["revs"]}
    assert {"reference", "line-bs20", "line-bs128"} <= names
    for name, recipe, size in (("line-bs20", "line_minus5x", 20),
                               ("line-bs128", "line_3x_plus_2", 128)):
        dvc(project, env, "exp", "apply", name)
        rows = json.loads((project / "metrics/reference.json").read_text())
        filled = [row for row in rows if row["recipe"] == recipe
                  and row.get("needs", {}).get("batch_size") == size]
        assert filled and all(isinstance(row["ours"], dict) for row in filled), filled
        run(["bash", "-c", "git checkout -- . && dvc checkout"], project, env)
