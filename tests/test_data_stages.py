"""Unit tests of the data stages: fetch, prepare, synthesize."""
from __future__ import annotations

import json

import numpy as np
import pytest

from descent import data
from descent import download as fetch
from descent.config import parse
from descent.io import UserError
from tests.factory import AIRFOIL_SHA256, REFERENCE, params


def synthetic_sets(sets: dict) -> dict:
    """Validated SyntheticSet objects for raw `synthetic:` settings."""
    return parse(params(synthetic=sets, recipes={"r": REFERENCE["recipes"]["airfoil"]},
                        variants={v: {"r": {"lr": 1.0, "epochs": 1}}
                                  for v in ("gd", "sgd", "minibatch")},
                        sweep={**REFERENCE["sweep"], "recipes": ["r"]})).synthetic


# --- fetch ---------------------------------------------------------------------------
def test_fetch_copies_a_local_source_after_checking_its_hash(airfoil_file, tmp_path):
    destination = tmp_path / "raw" / "airfoil.dat"
    used = fetch.fetch([str(airfoil_file)], AIRFOIL_SHA256, destination)
    assert used == str(airfoil_file)
    assert destination.read_bytes() == airfoil_file.read_bytes()


def test_fetch_rejects_a_checksum_mismatch_and_keeps_nothing(tmp_path):
    wrong = tmp_path / "wrong.dat"
    wrong.write_text("1\t2\t3\t4\t5\t6\r\n")
    destination = tmp_path / "raw" / "airfoil.dat"
    with pytest.raises(UserError, match=f"expected sha256 {AIRFOIL_SHA256}, got "
                                        f"{fetch.sha256_of(wrong)}"):
        fetch.fetch([str(wrong)], AIRFOIL_SHA256, destination)
    assert list(destination.parent.iterdir()) == []


def test_fetch_keeps_the_previous_file_when_the_new_one_is_bad(airfoil_file, tmp_path):
    destination = tmp_path / "airfoil.dat"
    fetch.fetch([str(airfoil_file)], AIRFOIL_SHA256, destination)
    wrong = tmp_path / "wrong.dat"
    wrong.write_text("not the data")
    with pytest.raises(UserError):
        fetch.fetch([str(wrong)], AIRFOIL_SHA256, destination)
    assert destination.read_bytes() == airfoil_file.read_bytes()


def test_fetch_names_every_unreachable_source_and_the_override(tmp_path):
    # Port 9 (discard) on loopback refuses at once: an unreachable URL without internet.
    sources = ["http://127.0.0.1:9/airfoil_self_noise.dat", str(tmp_path / "missing.dat")]
    with pytest.raises(UserError) as error:
        fetch.fetch(sources, AIRFOIL_SHA256, tmp_path / "raw" / "airfoil.dat")
    message = str(error.value)
    assert all(source in message for source in sources)
    assert "AIRFOIL_SOURCE" in message and "\n" not in message
    assert not (tmp_path / "raw" / "airfoil.dat").exists()


def test_fetch_tries_sources_in_order(airfoil_file, tmp_path):
    destination = tmp_path / "airfoil.dat"
    used = fetch.fetch([str(tmp_path / "missing.dat"), str(airfoil_file)], AIRFOIL_SHA256,
                       destination)
    assert used == str(airfoil_file)


def test_params_point_fetch_at_the_two_public_sources_and_the_known_hash():
    from descent.config import load

    fetch_config = load().fetch  # the project's own params.yaml, read when the test runs
    assert fetch_config.sha256 == AIRFOIL_SHA256
    assert [source.rsplit("/", 1)[-1] for source in fetch_config.sources] == \
        ["airfoil_self_noise.dat"] * 2
    assert "archive.ics.uci.edu" in fetch_config.sources[0]
    assert "d2l-data" in fetch_config.sources[1]


# --- prepare -------------------------------------------------------------------------
def run_prepare(raw_text: str, tmp_path, n_train: int = 2):
    raw = tmp_path / "raw.dat"
    raw.write_text(raw_text)
    data.prepare(raw, n_train, tmp_path / "table.npy", tmp_path / "scaling.json")
    return tmp_path / "table.npy", tmp_path / "scaling.json"


def test_prepare_standardizes_over_all_rows_and_keeps_the_first_1500(airfoil_file, tmp_path):
    table_path, scaling_path = tmp_path / "t.npy", tmp_path / "s.json"
    data.prepare(airfoil_file, 1500, table_path, scaling_path)
    table = np.load(table_path)
    # Independent computation: numpy's own parser and (x - mean) / std with ddof=0.
    raw = np.loadtxt(airfoil_file, delimiter="\t")
    assert raw.shape == (1503, 6)
    expected = ((raw - raw.mean(axis=0)) / raw.std(axis=0))[:1500]
    assert table.shape == (1500, 6) and table.dtype == np.float64
    # Only float64 rounding of the two computations (a few ulps of values of order 1)
    # separates them.
    np.testing.assert_allclose(table, expected, rtol=0, atol=1e-14)
    scaling = json.loads(scaling_path.read_text())
    assert scaling["columns"][-1] == "sound_pressure"
    for key, expected_values in (("mean", raw.mean(axis=0)), ("std", raw.std(axis=0))):
        saved = [scaling[key][column] for column in data.COLUMNS]
        np.testing.assert_allclose(saved, expected_values, rtol=1e-15)
    assert scaling["rows_standardized"] == 1503 and scaling["rows_kept"] == 1500


@pytest.mark.parametrize("text, message", [
    ("1\t2\t3\t4\t5\t6\r\n1\t2\t3\t4\t5\r\n", "line 2: expected 6 tab-separated columns, found 5"),
    ("1\t2\t3\t4\t5\t6\r\n1\t2\tx\t4\t5\t6\r\n", "line 2: non-numeric value"),
    ("1\t2\t3\t4\t5\t6\r\n1\t\t3\t4\t5\t6\r\n", "line 2: missing value"),
    ("1\t2\t3\t4\t5\tnan\r\n1\t2\t3\t4\t5\t6\r\n", "line 1: missing or infinite value"),
    ("1\t2\t3\t4\t5\t6\r\n", "has 1 data rows; at least 2 are needed"),
    ("1\t2\t3\t4\t5\t6\r\n2\t3\t3\t5\t6\t7\r\n", "column chord_length is constant"),
])
def test_prepare_rejects_bad_data_with_a_clear_message(text, message, tmp_path):
    with pytest.raises(UserError, match=message):
        run_prepare(text, tmp_path)
    assert not (tmp_path / "table.npy").exists()


def test_prepare_rejects_n_train_larger_than_the_data(tmp_path):
    with pytest.raises(UserError, match="n_train is 3 but raw.dat has only 2 rows"):
        run_prepare("1\t2\t3\t4\t5\t6\r\n2\t3\t4\t5\t6\t7\r\n", tmp_path, n_train=3)


def test_prepare_names_the_missing_raw_file(tmp_path):
    with pytest.raises(UserError, match="run `dvc repro fetch` first"):
        data.prepare(tmp_path / "absent.dat", 2, tmp_path / "t.npy", tmp_path / "s.json")


# --- synthesize ----------------------------------------------------------------------
REFERENCE_SETS = REFERENCE["synthetic"]


def test_synthesize_is_byte_identical_for_the_same_params(tmp_path):
    sets = synthetic_sets(REFERENCE_SETS)
    data.synthesize(sets, tmp_path / "a")
    data.synthesize(sets, tmp_path / "b")
    names = sorted(path.name for path in (tmp_path / "a").iterdir())
    assert names == sorted(f"{name}.{ext}" for name in sets for ext in ("npy", "json"))
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_adding_a_set_leaves_the_others_unchanged(tmp_path):
    data.synthesize(synthetic_sets(REFERENCE_SETS), tmp_path / "a")
    extra = {"n_rows": 50, "features": {"kind": "uniform", "low": -1, "high": 1},
             "weights": [1.0, 2.0, 3.0], "bias": -1.0, "noise_std": 0.5, "seed": 7}
    data.synthesize(synthetic_sets({**REFERENCE_SETS, "cube": extra}), tmp_path / "b")
    for name in REFERENCE_SETS:
        assert (tmp_path / "a" / f"{name}.npy").read_bytes() == \
            (tmp_path / "b" / f"{name}.npy").read_bytes()
    assert np.load(tmp_path / "b" / "cube.npy").shape == (50, 4)  # x1, x2, x3, y


def test_the_reference_sets_have_the_published_shapes_and_truths():
    sets = synthetic_sets(REFERENCE_SETS)
    line, _ = data.generate(sets["line_minus5x"])
    np.testing.assert_allclose(line[:, 0], -5.0 + 0.1 * np.arange(100))
    assert line[-1, 0] == pytest.approx(4.9)
    assert data.truth(sets["line_minus5x"])["weights"] == [-5.0]
    line2, _ = data.generate(sets["line_3x_plus_2"])
    assert line2.shape == (1000, 1) and 0 <= line2.min() and line2.max() < 1
    plane, _ = data.generate(sets["plane_2x1_minus3p4x2"])
    assert plane.shape == (1000, 2)
    assert data.truth(sets["plane_2x1_minus3p4x2"]) == {
        "weights": [2.0, -3.4], "bias": 4.2, "noise_std": 0.01, "n_rows": 1000}


@pytest.mark.parametrize("name", ["line_minus5x", "line_3x_plus_2", "plane_2x1_minus3p4x2"])
def test_synthetic_noise_matches_its_stated_law(name):
    """Residuals y - (Xw + b) are the noise: mean 0 and std noise_std, within sampling error."""
    spec = synthetic_sets(REFERENCE_SETS)[name]
    features, target = data.generate(spec)
    noise = target - features @ np.array(spec.weights) - spec.bias
    n, sigma = len(noise), spec.noise_std
    # 5 standard errors: the mean's is sigma/sqrt(n), the std's about sigma/sqrt(2n).
    assert abs(noise.mean()) < 5 * sigma / np.sqrt(n)
    assert abs(noise.std() - sigma) < 5 * sigma / np.sqrt(2 * n)


def test_a_set_too_large_for_the_disk_is_refused_before_anything_is_written(tmp_path):
    """Sets are generated a block at a time (any size fits in memory); 10^12 rows would take
    16 TB of file, and as much again in DVC's cache."""
    huge = {**REFERENCE_SETS["line_minus5x"], "n_rows": 10**12}
    sets = synthetic_sets({"line_minus5x": REFERENCE_SETS["line_minus5x"], "huge": huge})
    with pytest.raises(UserError, match=r"synthetic.huge would need about 2.98e\+04 GiB of "
                                        r"disk \(its file and DVC's cached copy\)"):
        data.synthesize(sets, tmp_path)
    assert not tmp_path.joinpath("line_minus5x.npy").exists()


@pytest.mark.parametrize("kind", ["grid", "uniform", "normal"])
def test_a_set_written_a_block_at_a_time_is_the_set_generated_whole(tmp_path, kind):
    """write_set streams what generate makes in memory, bit for bit: the features drawn in
    blocks are the same draws, and the noise, drawn after every feature, comes from a
    second generator that first draws them all (blocks of 3 rows here)."""
    spec = {"n_rows": 20, "features": {"grid": {"kind": "grid", "start": -1.0, "step": 0.1},
                                       "uniform": {"kind": "uniform", "low": 0.0, "high": 2.0},
                                       "normal": {"kind": "normal", "mean": 1.0, "std": 2.0}
                                       }[kind],
            "weights": [1.0, -2.0, 0.5], "bias": 0.3, "noise_std": 0.1, "seed": 5}
    [set_] = synthetic_sets({"s": spec}).values()
    features, target = data.generate(set_)
    original = data.BLOCK_BYTES
    data.BLOCK_BYTES = 3 * 4 * 8
    try:
        data.write_set(set_, tmp_path / "s.npy")
    finally:
        data.BLOCK_BYTES = original
    np.testing.assert_array_equal(np.load(tmp_path / "s.npy"), np.c_[features, target])


@pytest.mark.parametrize("suffix", [".npy", ".csv"])
def test_a_data_file_reads_as_features_or_as_its_design_matrix(tmp_path, suffix):
    """load_dataset gives C-contiguous features and targets in the dtype asked (float32:
    each value rounded once, as numpy's cast does), or the design matrix [X, 1]; a .npy is
    read a block of rows at a time (here blocks of 3 rows of 7)."""
    rng = np.random.default_rng(2)
    table = rng.normal(size=(10, 3))
    path = tmp_path / f"t{suffix}"
    if suffix == ".npy":
        data.write_table(path, table[:, :2], table[:, 2])
    else:
        path.write_text("a,b,y\n" + "".join(",".join(repr(float(v)) for v in row) + "\n"
                                             for row in table))
    original = data.BLOCK_BYTES
    data.BLOCK_BYTES = 3 * 3 * 8
    try:
        features, targets = data.load_dataset(path, 2, dtype=np.float32)
        design, wide = data.load_dataset(path, 2, ones=True)
    finally:
        data.BLOCK_BYTES = original
    assert features.flags.c_contiguous and features.dtype == np.float32
    np.testing.assert_array_equal(features, table[:, :2].astype(np.float32))
    np.testing.assert_array_equal(targets, table[:, 2].astype(np.float32))
    np.testing.assert_array_equal(design, np.c_[table[:, :2], np.ones(10)])
    np.testing.assert_array_equal(wide, table[:, 2])


def test_a_set_that_cannot_fit_is_refused_before_it_is_read(monkeypatch, tmp_path):
    """The copy a stage would make is sized from the .npy's header: past the memory limit
    (half the RAM; 1 MB here) it is one clear line, naming the fix, before any allocation."""
    from descent import limits
    from descent.io import UserError

    np.save(tmp_path / "big.npy", np.ones((100_000, 3)))  # 2.4 MB in float64, 1.2 in float32
    monkeypatch.setattr(limits, "memory_limit", lambda: 1_000_000)
    with pytest.raises(UserError, match=r"big.npy read as float64 would need about 0.00224 "
                                         r"GiB.*set dtype: float32 in params.yaml"):
        data.load_dataset(tmp_path / "big.npy", 2)
    with pytest.raises(UserError, match="read as float32 .*use fewer rows"):
        data.load_dataset(tmp_path / "big.npy", 2, dtype=np.float32)
    monkeypatch.setattr(limits, "memory_limit", lambda: 3_000_000)
    assert data.load_dataset(tmp_path / "big.npy", 2)[0].shape == (100_000, 2)
