"""The bad-input matrix: every error a user can cause, through the real stage commands.

Each case edits a built copy of the project, runs one stage as DVC would
(`python -m stages.<stage>`), and checks: exit status 1, exactly one line on stderr that
says what is wrong, no traceback, and the earlier outputs untouched.
"""
from __future__ import annotations

import hashlib
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import copy_project, run, stage_env

pytestmark = pytest.mark.e2e
OUTPUTS = ["metrics/train/gd.json", "data/runs/gd.npz", "metrics/evaluate.json",
           "metrics/final_loss.json", "data/closed_form.json", "plots/comparison.png",
           "metrics/reference.md", "plots/loss/airfoil.csv", "data/synthetic/line_minus5x.npy",
           "data/prepared/airfoil.npy", "data/raw/airfoil_self_noise.dat"]


@pytest.fixture(scope="module")
def built(tmp_path_factory, airfoil_file) -> Path:
    project = copy_project(tmp_path_factory.mktemp("bad") / "project", airfoil_file)
    run(["dvc", "repro"], project, stage_env(airfoil_file))
    return project


@pytest.fixture
def project(built):
    """The built project; params.yaml and any files a case adds are restored after it."""
    params = (built / "params.yaml").read_text()
    before = set(built.rglob("*"))
    yield built
    (built / "params.yaml").write_text(params)
    for added in sorted(set(built.rglob("*")) - before, reverse=True):
        added.rmdir() if added.is_dir() else added.unlink()


def digest(project: Path) -> dict[str, str]:
    """The outputs there (a case may have removed one), by content."""
    return {name: hashlib.sha256((project / name).read_bytes()).hexdigest() for name in OUTPUTS
            if (project / name).exists()}


def edit(project: Path, old: str, new: str) -> None:
    path = project / "params.yaml"
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


RAW = "data/raw/airfoil_self_noise.dat"  # the path dvc.yaml gives fetch and prepare


def one_clear_line(project: Path, env, stage: str, *args: str) -> str:
    args = args or {"fetch": (RAW,), "prepare": (RAW,)}.get(stage, ())
    before = digest(project)
    result = subprocess.run([sys.executable, "-m", f"stages.{stage}", *args], cwd=project,
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error [{stage}]: "), result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert digest(project) == before  # earlier outputs intact
    return lines[0]


AIRFOIL_DATA = "data: data/prepared/airfoil.npy\n    loss: half_squared\n    init: {weights"
PARAMS_CASES = {
    # name: (stage, old text, new text, words the error must contain)
    "negative lr": ("train", "airfoil: {lr: 1.0, epochs: 6}", "airfoil: {lr: -1, epochs: 6}",
                    "variants.gd.airfoil.lr is -1"),
    "string epochs": ("train", "airfoil: {lr: 1.0, epochs: 6}",
                      "airfoil: {lr: 1.0, epochs: six}", "variants.gd.airfoil.epochs is 'six'"),
    "1e9 epochs": ("train", "airfoil: {lr: 1.0, epochs: 6}",
                   "airfoil: {lr: 1.0, epochs: 1000000000}", "gd on recipe airfoil would"),
    "unknown key": ("train", "  log_every: 100", "  log_evry: 100",
                    "train has no 'log_every'"),
    "yes is not a flag": ("train", "shuffle: false", "shuffle: yes", "is 'yes'"),
    # No CUDA: "... CUDA is not available"; fewer than 8 GPUs: "... has N CUDA device(s)".
    "missing device": ("train", "device: auto", "device: cuda:7",
                       "device 'cuda:7' requested but"),
    "recipe path outside": ("train", "data: data/prepared/airfoil.npy",
                            "data: ../../etc/passwd.csv", "must be a .npy or .csv path inside"),
    # A file DVC does not watch could change without rerunning anything.
    "custom data outside data/custom": ("train", "data: data/prepared/airfoil.npy",
                                        "data: mine.csv", "move the file into data/custom/"),
    "recipe named like a path": ("train", "  airfoil:                   #",
                                 "  ../../x:                   #", "names may use letters"),
    "unknown synthetic set": ("train", "data: data/synthetic/line_minus5x.npy",
                              "data: data/synthetic/cube.npy", "does not define"),
    "huge synthetic set": ("synthesize", "n_rows: 100", "n_rows: 1000000000000",
                           "synthetic.line_minus5x would need about"),
    "old size key": ("synthesize", "n_rows: 100", "size: 100",
                     "synthetic.line_minus5x has no 'n_rows'"),
    "n_train above rows": ("prepare", "n_train: 1500", "n_train: 2000",
                           "prepare.n_train is 2000 but airfoil_self_noise.dat has only 1503"),
    "broken yaml": ("evaluate", "recipes:\n", "recipes: [\n", "params.yaml is not valid YAML"),
    # Inputs written under other params (a stage run by hand after an edit, or two runs at
    # once): judged, they would be reported as this config's.
    "fewer seeds than trained": ("evaluate", "seeds: 16", "seeds: 4",
                                 "seeds changed (16 there, 4 in params.yaml)"),
    "a recipe changed since training": ("evaluate", "shuffle: false", "shuffle: true",
                                        "recipes.line_minus5x or train changed"),
    "report on stale runs": ("report", "batch_size: 10", "batch_size: 20",
                             "batch_size changed (10 there, 20 in params.yaml)"),
    # Numbers beyond what the arithmetic holds: refused with the figure, not a traceback.
    "features wider than float64": ("synthesize", "{kind: uniform, low: 0.0, high: 1.0}",
                                    "{kind: uniform, low: -1.0e+308, high: 1.0e+308}",
                                    "wider than float64 holds"),
    "weights whose squares overflow": ("synthesize", "weights: [-5.0]", "weights: [1.0e+300]",
                                       "their squares (the loss) overflow float64"),
    "sweep batch above the rows": ("sweep", "batch_sizes: [1, 4, 16, 64, 256, 1500]",
                                   "batch_sizes: [1, 4, 2000]",
                                   "sweep.batch_sizes has 2000, more than the 1500 rows"),
    "sweep budget no point meets": ("sweep", "budget: 3000", "budget: 1",
                                    "raise sweep.budget or sweep.target_excess"),
    "sweep grid beyond memory": ("sweep", "budget: 3000", "budget: 1000000000",
                                 "the sweep of airfoil at batch 1 (56 runs) would need about"),
    "lr beyond float32": ("train", "airfoil: {lr: 1.0, epochs: 6}",
                          "airfoil: {lr: 1.0e+308, epochs: 6}", "beyond float32's range"),
}


@pytest.mark.parametrize("case", PARAMS_CASES)
def test_bad_params(project, env, case):
    stage, old, new, words = PARAMS_CASES[case]
    edit(project, old, new)
    line = one_clear_line(project, env, stage, *(["gd"] if stage == "train" else []))
    assert words in line, line


@pytest.mark.parametrize("stage, missing, words", [
    ("evaluate", "data/closed_form.json", "data/closed_form.json not found; run `dvc repro "
                                          "solve`"),
    ("report", "metrics/evaluate.json", "metrics/evaluate.json not found; run `dvc repro "
                                        "evaluate`"),
    ("train", "data/statistics.npz", "data/statistics.npz not found; run `dvc repro solve`")])
def test_a_stage_whose_input_is_missing_says_which_stage_to_run(project, env, stage, missing,
                                                                words):
    path = project / missing
    kept = path.read_bytes()
    path.unlink()
    try:
        line = one_clear_line(project, env, stage, *(["gd"] if stage == "train" else []))
    finally:
        path.write_bytes(kept)
    assert words in line, line


DATA_FILES = {
    # name: (how to make the file, words)
    "a folder": (lambda p: p.mkdir(), "is a folder, not a data file"),
    "an empty file": (lambda p: p.write_text(""), "is empty"),
    "a binary file": (lambda p: p.write_bytes(bytes(range(256)) * 8), "not a CSV table"),
    "the raw tab-separated file": (
        lambda p: p.write_bytes((p.parents[2] / "data/raw/airfoil_self_noise.dat").read_bytes()),
        "is it the raw tab-separated file?"),
    "wrong columns": (lambda p: p.write_text("a,b\n1,2\n3,4\n"), "has 2 columns but 5 features"),
    "text values": (lambda p: p.write_text("a,b,c,d,e,y\n1,2,3,4,x,6\n"), "non-numeric"),
    "nothing there": (lambda p: None, "does not exist; check the path"),
    "one row": (lambda p: p.write_text("a,b,c,d,e,y\n1,2,3,4,5,6\n"), "has 1 data row(s)"),
    "a comma ending every row": (lambda p: p.write_text("a,b,c,d,e,y\n1,2,3,4,5,6,\n"
                                                        "2,3,4,5,6,7,\n"), "trailing commas"),
    "a comma ending every line": (lambda p: p.write_text("a,b,c,d,e,y,\n1,2,3,4,5,6,\n"
                                                         "2,3,4,5,6,7,\n"), "trailing commas"),
    "a link out of the project": (lambda p: link_outside(p), "outside the project"),
    "values whose squares overflow": (lambda p: p.write_text("a,b,c,d,e,y\n1,2,3,4,5,6\n"
                                                             "2,3,4,5,1e200,7\n"),
                                      "their squares (the loss) overflow float64"),
}


def link_outside(path: Path) -> None:
    """path: a link to a good CSV beside the project, where DVC would not see it change."""
    outside = path.parents[2].parent / "outside.csv"
    outside.write_text("a,b,c,d,e,y\n1,2,3,4,5,6\n2,3,4,5,6,8\n")
    path.symlink_to(outside)


@pytest.mark.parametrize("case", DATA_FILES)
def test_bad_recipe_data_is_found_before_training(project, env, case):
    make, words = DATA_FILES[case]
    make(project / "data/custom/mine.csv")
    edit(project, "data: data/prepared/airfoil.npy", "data: data/custom/mine.csv")
    if case == "wrong columns":  # a custom file has no known width: the init list gives it
        edit(project, "init: {weights: {normal_std: 0.01}, bias: 0.0}\n    shuffle: true\n  "
                      "airfoil_concise",
             "init: {weights: [0.0, 0.0, 0.0, 0.0, 0.0], bias: 0.0}\n    shuffle: true\n  "
             "airfoil_concise")
        words = "lists 5 numbers but data/custom/mine.csv has 1 features"
    for stage in (["train", "sgd"], ["solve"]):  # both read every recipe's data first
        line = one_clear_line(project, env, *stage)
        assert words in line and "recipes.airfoil." in line, line  # names the key to fix


def npy_bytes(array: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


NPY_FILES = {
    # name: (the array or bytes written to data/custom/mine.npy, words)
    "a file cut short": (npy_bytes(np.ones((4, 6)))[:-20], "ends after 3 of its 4 rows"),
    "Fortran order": (npy_bytes(np.asfortranarray(np.ones((4, 6)))), "Fortran-ordered"),
    "text named .npy": (b"a,b,c,d,e,y\n1,2,3,4,5,6\n", "is not a .npy array"),
    "an empty file": (b"", "is not a .npy array"),
    "a 1-d array": (np.arange(12.0), "holds a 1-d float64 array"),
    "integers": (np.arange(12).reshape(2, 6), "holds a 2-d int64 array"),
    "a NaN": (np.array([[1.0, 2, 3, 4, 5, 6], [2, 3, np.nan, 5, 6, 7]]), "non-finite"),
    "values whose squares overflow": (np.array([[1.0, 2, 3, 4, 5, 6], [2, 3, 4, 5, 1e200, 7]]),
                                      "their squares (the loss) overflow float64"),
}


@pytest.mark.parametrize("case", NPY_FILES)
def test_bad_npy_data_is_found_before_training(project, env, case):
    content, words = NPY_FILES[case]
    path = project / "data/custom/mine.npy"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        np.save(path, content)
    edit(project, "data: data/prepared/airfoil.npy", "data: data/custom/mine.npy")
    line = one_clear_line(project, env, "train", "sgd")
    assert words in line and "recipes.airfoil." in line, line


def test_a_pipeline_output_not_yet_built_says_which_stage_builds_it(project, env):
    target = project / "data/synthetic/line_minus5x.npy"
    kept = target.read_bytes()
    target.unlink()
    try:
        result = subprocess.run([sys.executable, "-m", "stages.train", "gd"], cwd=project,
                                env=env, capture_output=True, text=True)
    finally:
        target.write_bytes(kept)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "data/synthetic/line_minus5x.npy is not built yet; run `dvc repro synthesize`" \
        in result.stderr


@pytest.mark.parametrize("source, words", [
    ("nowhere.dat", "nowhere.dat (no such file)"),
    ("data", "data (not a file)"),
    ("params.yaml", "checksum mismatch for params.yaml"),
    ("http://127.0.0.1:9/airfoil_self_noise.dat", "http://127.0.0.1:9/airfoil_self_noise.dat ("),
])
def test_bad_airfoil_source(project, env, source, words):
    line = one_clear_line(project, {**env, "AIRFOIL_SOURCE": source}, "fetch")
    assert words in line, line
    leftovers = [p.name for p in (project / "data/raw").iterdir()]
    assert leftovers == ["airfoil_self_noise.dat"] or sorted(leftovers) == \
        [".gitignore", "airfoil_self_noise.dat"]


def test_a_missing_params_section_is_named_before_any_stage_runs(project, env):
    """Stage check validates the whole params.yaml before DVC reaches train@sgd (README)."""
    text = (project / "params.yaml").read_text()
    start = text.index("  sgd:                       # batch = 1")
    end = text.index("  minibatch:")
    (project / "params.yaml").write_text(text[:start] + text[end:])
    result = run(["dvc", "repro", "train@sgd"], project, env, check=False)
    assert result.returncode != 0 and "Traceback" not in result.stdout + result.stderr
    assert "error [check]: params.yaml: variants has no 'sgd'" in result.stderr
    direct = one_clear_line(project, env, "train", "sgd")
    assert "variants has no 'sgd'" in direct


def running(status: Path) -> bool:
    """The process of that /proc/<pid>/stat has not ended (a zombie has, its parent just did
    not reap it yet)."""
    try:
        return status.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def pgrep(*args: str) -> list[str]:
    return subprocess.run(["pgrep", *args], capture_output=True, text=True).stdout.split()


def parent(status: Path) -> str:
    """The parent pid in a /proc/<pid>/stat."""
    return status.read_text().rsplit(")", 1)[1].split()[1]


def started_below(pid: int, pattern: str) -> int | None:
    """A process below pid (its child, or a child of its child) whose command line matches
    pattern; None if there is none yet."""
    for launcher in [str(pid), *pgrep("-P", str(pid))]:
        listed = pgrep("-P", launcher, "-f", pattern)
        if listed:
            return int(listed[0])
    return None


def outlived(pid: int, seconds: float, poll: float = 0.2) -> bool:
    """Process pid still runs after `seconds` (then it is killed, not to outlast the test)."""
    status = Path(f"/proc/{pid}/stat")
    deadline = time.monotonic() + seconds
    while running(status) and time.monotonic() < deadline:
        time.sleep(poll)
    alive = running(status)
    if alive:
        os.kill(pid, signal.SIGKILL)
    return alive


# dvc runs `cmd` through $SHELL, else /bin/sh. bash execs a lone command, so the stage is
# dvc's child; dash (Debian's sh, and what a CI runner without SHELL gets) forks it, so
# between dvc and the stage sits a shell that outlives dvc.
@pytest.mark.parametrize("shell", ["/bin/sh", "/bin/bash"])
def test_killing_dvc_ends_the_stage_too(project, env, shell):
    """SIGKILL of `dvc` alone must not leave the stage running unsupervised, whichever shell
    dvc runs it in, and even where whoever started dvc ignores SIGTERM (a CI runner did:
    the ignore is inherited)."""
    edit(project, "# batch = 1\n    airfoil: {lr: 0.005, epochs: 2}",
         "# batch = 1\n    airfoil: {lr: 0.005, epochs: 50000}")  # a minute of work
    dvc = subprocess.Popen(["dvc", "repro", "train@sgd"], cwd=project,
                           env={**env, "SHELL": shell},
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           preexec_fn=lambda: signal.signal(signal.SIGTERM, signal.SIG_IGN))
    stage = None
    deadline = time.monotonic() + 60
    while stage is None and time.monotonic() < deadline:
        time.sleep(0.2)
        # below this dvc only: a stage of another test's project must not be picked up;
        # the interpreter, not the shell whose command line also names the stage
        stage = started_below(dvc.pid, r"^\S*python\S* -m stages.train sgd")
    assert stage is not None, "the stage never started"
    time.sleep(0.3)  # past interpreter start-up, likely still importing: the racy case
    dvc.send_signal(signal.SIGKILL)
    dvc.wait()
    assert not outlived(stage, 20), "the stage outlived dvc"


def test_a_stage_whose_dvc_died_before_python_started_ends(project, env):
    """The worst race: dvc is gone before the stage could read who launched it. A shell that
    sets DVC_STAGE as dvc does and exits at once hands the stage to init straight away."""
    edit(project, "# batch = 1\n    airfoil: {lr: 0.005, epochs: 2}",
         "# batch = 1\n    airfoil: {lr: 0.005, epochs: 50000}")  # a minute of work
    before = digest(project)
    launcher = subprocess.run(
        ["sh", "-c", f"{sys.executable} -m stages.train sgd </dev/null >/dev/null 2>&1 & "
                     "echo $!"],
        cwd=project, env={**env, "DVC_STAGE": "train@sgd"}, capture_output=True, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGTERM, signal.SIG_IGN))  # as a CI runner may
    stage = int(launcher.stdout)
    status = Path(f"/proc/{stage}/stat")
    adopter = parent(status) if status.exists() else "1"
    if adopter != "1":
        os.kill(stage, signal.SIGKILL)
        pytest.skip(f"orphans here go to a subreaper (pid {adopter}), not to init")
    assert not outlived(stage, 20), "the orphaned stage kept running"
    assert digest(project) == before


# A stand-in for dvc: runs a command through a shell that forks it (the `; exit` keeps any
# shell from exec'ing it), with DVC_STAGE in the command's environment only, as dvc does.
STAND_IN_DVC = """
import os, subprocess, sys
subprocess.run(["/bin/sh", "-c", sys.argv[1] + "; exit $?"], env={**os.environ, "DVC_STAGE": "probe"})
"""

# The stage's side: the watch io.cli installs, then a minute of sleep. Without pidfds it
# must fall back to looking whether the shell was handed on.
WATCHED_STAGE = """
import os, sys, time
if sys.argv[1] == "without":
    del os.pidfd_open
from descent import io
io._end_with_parent()
open(sys.argv[2], "w").write(str(os.getpid()))
time.sleep(60)
"""


@pytest.mark.parametrize("pidfd", ["with", "without"])
def test_the_stage_watches_dvc_through_the_shell_between(tmp_path, pidfd):
    """Where a shell sits between dvc and the stage, the stage ends with dvc, whether the
    kernel lends it a pidfd to sleep on or not (a sandbox may refuse pidfd_open)."""
    written = tmp_path / "pid"
    stage = shlex.join([sys.executable, "-c", WATCHED_STAGE, pidfd, str(written)])
    root = Path(__file__).resolve().parents[1]
    dvc = subprocess.Popen([sys.executable, "-c", STAND_IN_DVC, stage], cwd=root,
                           env={k: v for k, v in os.environ.items() if k != "DVC_STAGE"})
    deadline = time.monotonic() + 30
    while not (written.exists() and written.read_text()) and time.monotonic() < deadline:
        time.sleep(0.1)
    pid = int(written.read_text())
    assert parent(Path(f"/proc/{pid}/stat")) != str(dvc.pid), \
        "the shell exec'd the stage: nothing between dvc and the stage to test"
    dvc.send_signal(signal.SIGKILL)
    dvc.wait()
    # the fallback looks twice a second
    assert not outlived(pid, 5, poll=0.1), "the stage outlived dvc"


def test_temporaries_are_written_where_dvc_and_git_do_not_look(tmp_path, monkeypatch):
    from descent import io

    monkeypatch.setattr(io, "ROOT", tmp_path)
    monkeypatch.setattr(io, "SCRATCH", tmp_path / ".dvc/tmp/descent")
    seen = []
    io.atomic_write(tmp_path / "plots/loss/a.csv",
                    lambda tmp: seen.append(sorted(os.listdir(tmp.parent))
                                            + [str(tmp.parent)]) or tmp.write_text("x"))
    assert seen[0][-1] == str(tmp_path / ".dvc/tmp/descent")
    assert os.listdir(tmp_path / "plots/loss") == ["a.csv"]
    # A writer killed midway leaves its temporary; the next stage start removes it.
    stale = tmp_path / ".dvc/tmp/descent/999999999-a.csv"
    stale.write_text("half")
    io._clean_stale_temporaries()
    assert not stale.exists()


# Every output of a built project: DVC removes a stage's outputs before it runs the stage,
# so a refusal must come before DVC reaches any stage that holds results.
EVERY_OUTPUT = OUTPUTS + ["metrics/train/sgd.json", "metrics/train/minibatch.json",
                          "data/runs/sgd.npz", "data/runs/minibatch.npz", "metrics/seeds.json",
                          "metrics/speed.json", "metrics/timing/gd.json",
                          "metrics/reference.json", "plots/seconds/airfoil.csv"]


def present_outputs(project: Path) -> dict[str, str]:
    """Every output there (an earlier case, the killed dvc, may have removed some), by
    content."""
    return {name: hashlib.sha256((project / name).read_bytes()).hexdigest()
            for name in EVERY_OUTPUT if (project / name).exists()}


def remove_section(text: str, header: str) -> str:
    start = text.index(header)
    end = text.find("\n# ---", start)
    return text[:start] + (text[end:] if end >= 0 else "")


REFUSED_RUNS = {
    # name: (edit of params.yaml, dvc arguments, words of the one error line)
    "misspelt top-level key": (lambda text: text + "batchsize: 20\n", ["repro"],
                               "unknown key 'batchsize'"),
    "new key through -S +key": (None, ["exp", "run", "-S", "+batchsize=20"],
                                "unknown key 'batchsize'"),
    "bad value through -S": (None, ["exp", "run", "-S", "seeds=0"], "seeds is 0"),
    "bad value edited": (lambda text: text.replace("batch_size: 10", "batch_size: -3"),
                         ["repro"], "batch_size is -3"),
    "emptied params.yaml": (lambda text: "", ["repro"], "params.yaml is empty"),
    # A missing file of your own is a params error: found before DVC reaches stage solve.
    "custom data missing": (None, ["exp", "run", "-S", "recipes.airfoil.data=data/custom/x.csv"],
                            "recipes.airfoil.data is 'data/custom/x.csv', which is not a file"),
    "evaluate section deleted": (lambda text: remove_section(text, "evaluate:\n"), ["repro"],
                                 "evaluate"),
}


@pytest.mark.parametrize("case", REFUSED_RUNS)
def test_a_refused_run_through_dvc_removes_no_output(project, env, case):
    change, arguments, words = REFUSED_RUNS[case]
    if change:
        path = project / "params.yaml"
        path.write_text(change(path.read_text()))
    # (an earlier case in this module, the killed dvc, may have left train@sgd's removed)
    before = present_outputs(project)
    assert len(before) >= len(OUTPUTS)
    result = run(["dvc", *arguments], project, env, check=False)
    assert result.returncode != 0 and "Traceback" not in result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error [")]
    assert len(errors) == 1 and errors[0].startswith("error [check]: "), result.stderr
    assert words in errors[0], errors[0]
    # Each output there before is there, unchanged (`dvc exp run` may restore a missing one).
    assert {name: hashlib.sha256((project / name).read_bytes()).hexdigest()
            if (project / name).exists() else None for name in before} == before


@pytest.mark.parametrize("stage, damaged, writer", [
    ("report", "metrics/evaluate.json", "evaluate"),
    ("evaluate", "data/runs/gd.npz", "train@gd"),
    ("evaluate", "metrics/train/gd.json", "train@gd"),
    ("evaluate", "data/closed_form.json", "solve"),
    ("train", "data/statistics.npz", "solve")])
def test_a_truncated_input_names_the_stage_that_rebuilds_it(project, env, stage, damaged,
                                                            writer):
    path = project / damaged
    whole = path.read_bytes()
    path.write_bytes(whole[:len(whole) // 2])
    try:
        line = one_clear_line(project, env, stage, *(["gd"] if stage == "train" else []))
    finally:
        path.write_bytes(whole)
    assert f"{damaged} is damaged" in line and f"`dvc repro --force {writer}`" in line, line


def test_data_beyond_float32_are_refused_by_training_in_float32(project, env):
    """1e100 squares fine in float64 (the closed form solves it) but is no float32."""
    (project / "data/custom/mine.csv").write_text("a,b,c,d,e,y\n1,2,3,4,5,6\n2,3,4,5,1e100,7\n"
                                                  "3,1,4,1,5,9\n")
    edit(project, "data: data/prepared/airfoil.npy", "data: data/custom/mine.csv")
    line = one_clear_line(project, env, "train", "gd")
    assert "data/custom/mine.csv (set by recipes.airfoil.data) has values up to 1e+100, " \
           "beyond float32's range" in line and "dtype: float64" in line, line


def test_a_file_in_data_custom_is_a_dependency_of_the_stages_that_read_data(project, env):
    """Editing custom data must rerun what reads it: `dvc status` says data/custom changed
    for exactly the stages that read recipe data (evaluate: for what theory predicts)."""
    def custom_changed() -> set[str]:
        text = run(["dvc", "status"], project, env).stdout
        blocks = re.split(r"^(\S+):$", text, flags=re.M)[1:]
        return {stage for stage, body in zip(blocks[::2], blocks[1::2])
                if re.search(r"modified:\s+data/custom$", body, flags=re.M)}

    assert custom_changed() == set()
    (project / "data/custom/mine.csv").write_text("x,y\n1,2\n2,4\n")
    assert custom_changed() == {"solve", "train@gd", "train@sgd", "train@minibatch", "evaluate",
                                "sweep"}


STAGE_WITH_A_FAULT = """
import errno, os, sys
from descent import io
real, calls = io.atomic_write, []
def failing(path, write):
    calls.append(path)
    if len(calls) == {at}:
        def half_then_full(tmp):
            tmp.write_bytes(b"half")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(path, half_then_full)
    return real(path, write)
io.atomic_write = failing
{setup}
from stages.{stage} import main
sys.argv = ["stages.{stage}", *{args!r}]
io.cli(main)()
"""


def run_with_fault(project: Path, env, stage: str, args: list[str], at: int,
                   setup: str = "") -> str:
    """The real stage in a process where its `at`-th output write fails as a full disk
    does (ENOSPC after part of the file): what the user sees and what is left."""
    before = present_outputs(project)
    code = STAGE_WITH_A_FAULT.format(at=at, stage=stage, args=args, setup=setup)
    result = subprocess.run([sys.executable, "-c", code], cwd=project, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert present_outputs(project) == before  # no new file beside old ones: all or none
    assert not list((project / ".dvc/tmp/descent").glob("*"))  # no temporary left
    return lines[0]


def test_a_full_disk_leaves_no_mixed_set_of_outputs(project, env):
    """The issue's case: train@sgd's second output hits a full disk. Before, the new
    metrics/train/sgd.json stayed beside the old data/runs/sgd.npz."""
    edit(project, "seeds: 16", "seeds: 8")  # so that new outputs differ from the old
    line = run_with_fault(project, env, "train", ["sgd"], at=2)
    assert line.startswith("error [") and "No space left on device; free some space and " \
        "rerun (the earlier outputs are unchanged)" in line, line


def test_an_unwritable_output_folder_is_one_line_and_no_partial_set(project, env):
    """As a non-root user sees a read-only metrics/train (root may write anywhere, so the
    check is played by os.access saying no): refused before any output is renamed."""
    setup = ("import os\nreal_access = os.access\n"
             "os.access = lambda path, mode: False if str(path).endswith('metrics/train') "
             "else real_access(path, mode)")
    edit(project, "seeds: 16", "seeds: 8")
    line = run_with_fault(project, env, "train", ["sgd"], at=0, setup=setup)
    assert "metrics/train/sgd.json: Permission denied; give yourself write access" in line, line


def test_a_second_dvc_run_in_the_workspace_is_refused_while_the_first_runs(project, env):
    """Two runs at once in one workspace interleave their stages (one run's dvc.lock then
    describes the other's outputs). A live holder of the workspace is played by a sleeping
    process: the second run stops at its first stage, and nothing is removed."""
    holder = subprocess.Popen(["sleep", "60"])
    try:
        started = Path(f"/proc/{holder.pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
        lock = project / ".dvc/tmp/descent-workspace.lock"
        lock.parent.mkdir(parents=True, exist_ok=True)
        lock.write_text(f"{holder.pid} {started}")
        before = present_outputs(project)
        result = run(["dvc", "exp", "run", "-S", "batch_size=20"], project, env, check=False)
        errors = [line for line in result.stderr.splitlines() if line.startswith("error [")]
        assert result.returncode != 0 and len(errors) == 1, result.stderr
        assert f"another dvc run (pid {holder.pid}) is running in this workspace" in errors[0]
        after = present_outputs(project)  # (`dvc exp run` may restore a missing one)
        assert {name: after.get(name) for name in before} == before
    finally:
        holder.kill()
        holder.wait()
    # Its holder gone, the workspace is free again.
    run([sys.executable, "-m", "stages.check", "data/params.checked"], project, env)
