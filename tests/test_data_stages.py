"""Unit tests of the data stages: fetch, prepare, synthesize."""
from __future__ import annotations

import json

import numpy as np
import pytest

from stages import fetch, prepare, synthesize
from stages.common import UserError, load_params

AIRFOIL_SHA256 = "74c75fd71783f1e6b71f8a622b993dc592897a97cd689c5090a07147a1b097b3"


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
    params = load_params()
    assert params["fetch"]["sha256"] == AIRFOIL_SHA256
    assert [source.rsplit("/", 1)[-1] for source in params["fetch"]["sources"]] == \
        ["airfoil_self_noise.dat"] * 2
    assert "archive.ics.uci.edu" in params["fetch"]["sources"][0]
    assert "d2l-data" in params["fetch"]["sources"][1]


# --- prepare -------------------------------------------------------------------------
def run_prepare(raw_text: str, tmp_path, n_train: int = 2):
    raw = tmp_path / "raw.dat"
    raw.write_text(raw_text)
    prepare.prepare(raw, n_train, tmp_path / "table.csv", tmp_path / "scaling.json")
    return tmp_path / "table.csv", tmp_path / "scaling.json"


def test_prepare_standardizes_over_all_rows_and_keeps_the_first_1500(airfoil_file, tmp_path):
    import pandas as pd

    table_path, scaling_path = tmp_path / "t.csv", tmp_path / "s.json"
    prepare.prepare(airfoil_file, 1500, table_path, scaling_path)
    table = pd.read_csv(table_path)
    # Independent computation: numpy's own parser and (x - mean) / std with ddof=0.
    raw = np.loadtxt(airfoil_file, delimiter="\t")
    assert raw.shape == (1503, 6)
    expected = ((raw - raw.mean(axis=0)) / raw.std(axis=0))[:1500]
    assert table.shape == (1500, 6)
    assert list(table.columns)[-1] == "sound_pressure"
    # %.17g round-trips float64 exactly, so only float64 rounding of the two
    # computations (a few ulps of values of order 1) separates them.
    np.testing.assert_allclose(table.to_numpy(), expected, rtol=0, atol=1e-14)
    scaling = json.loads(scaling_path.read_text())
    for key, expected_values in (("mean", raw.mean(axis=0)), ("std", raw.std(axis=0))):
        saved = [scaling[key][column] for column in prepare.COLUMNS]
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
    assert not (tmp_path / "table.csv").exists()


def test_prepare_rejects_n_train_larger_than_the_data(tmp_path):
    with pytest.raises(UserError, match="n_train is 3 but raw.dat has only 2 rows"):
        run_prepare("1\t2\t3\t4\t5\t6\r\n2\t3\t4\t5\t6\t7\r\n", tmp_path, n_train=3)


def test_prepare_names_the_missing_raw_file(tmp_path):
    with pytest.raises(UserError, match="run `dvc repro fetch` first"):
        prepare.prepare(tmp_path / "absent.dat", 2, tmp_path / "t.csv", tmp_path / "s.json")


# --- synthesize ----------------------------------------------------------------------
def test_synthesize_is_byte_identical_for_the_same_params(tmp_path):
    sets = load_params()["synthetic"]
    synthesize.synthesize(sets, tmp_path / "a")
    synthesize.synthesize(sets, tmp_path / "b")
    names = sorted(path.name for path in (tmp_path / "a").iterdir())
    assert names == sorted(f"{name}.{ext}" for name in sets for ext in ("csv", "json"))
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_adding_a_set_leaves_the_others_unchanged(tmp_path):
    sets = load_params()["synthetic"]
    synthesize.synthesize(sets, tmp_path / "a")
    extra = {"size": 50, "features": {"kind": "uniform", "low": -1, "high": 1},
             "weights": [1.0, 2.0, 3.0], "bias": -1.0, "noise_std": 0.5, "seed": 7}
    synthesize.synthesize({**sets, "cube": extra}, tmp_path / "b")
    for name in sets:
        assert (tmp_path / "a" / f"{name}.csv").read_bytes() == \
            (tmp_path / "b" / f"{name}.csv").read_bytes()
    assert (tmp_path / "b" / "cube.csv").read_text().splitlines()[0] == "x1,x2,x3,y"


def test_the_reference_sets_have_the_published_shapes_and_truths():
    sets = load_params()["synthetic"]
    line = synthesize.generate("line_minus5x", sets["line_minus5x"])
    np.testing.assert_allclose(line[0][:, 0], -5.0 + 0.1 * np.arange(100))
    assert line[0][-1, 0] == pytest.approx(4.9)
    assert line[2]["weights"] == [-5.0] and line[2]["bias"] == 0.0
    line2 = synthesize.generate("line_3x_plus_2", sets["line_3x_plus_2"])
    assert line2[0].shape == (1000, 1) and 0 <= line2[0].min() and line2[0].max() < 1
    plane = synthesize.generate("plane_2x1_minus3p4x2", sets["plane_2x1_minus3p4x2"])
    assert plane[0].shape == (1000, 2) and plane[2]["weights"] == [2.0, -3.4]
    assert plane[2]["bias"] == 4.2


@pytest.mark.parametrize("name", ["line_minus5x", "line_3x_plus_2", "plane_2x1_minus3p4x2"])
def test_synthetic_noise_matches_its_stated_law(name):
    """Residuals y - (Xw + b) are the noise: mean 0 and std noise_std, within sampling error."""
    spec = load_params()["synthetic"][name]
    features, target, truth = synthesize.generate(name, spec)
    noise = target - features @ np.array(truth["weights"]) - truth["bias"]
    n, sigma = len(noise), truth["noise_std"]
    # 5 standard errors: the mean's is sigma/sqrt(n), the std's about sigma/sqrt(2n).
    assert abs(noise.mean()) < 5 * sigma / np.sqrt(n)
    assert abs(noise.std() - sigma) < 5 * sigma / np.sqrt(2 * n)


@pytest.mark.parametrize("change, message", [
    ({"size": 0}, "size must be a positive integer"),
    ({"weights": []}, "weights must be a non-empty list"),
    ({"features": {"kind": "poisson"}}, "features.kind must be one of grid, uniform, normal"),
    ({"features": {"kind": "uniform", "low": 1, "high": 1}}, "needs low < high"),
    ({"noise_std": -1}, "noise_std must be >= 0"),
    ({"bias": "a lot"}, "bias must be a finite number"),
    ({"seed": -3}, "seed must be a non-negative integer"),
])
def test_synthesize_rejects_bad_params(change, message, tmp_path):
    spec = {**load_params()["synthetic"]["line_minus5x"], **change}
    with pytest.raises(UserError, match=message):
        synthesize.synthesize({"bad": spec}, tmp_path)
    assert not tmp_path.joinpath("bad.csv").exists()

