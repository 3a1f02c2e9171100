"""The numeric-sequence classification reader (``rnnlab.data.uea``): the UEA/UCR ``.ts`` format — equal and
unequal lengths, one or several dimensions, the @classLabel label set and order, comments, the missing-value
policy — and the NPZ layout, each on small files written here; malformed files as one ``DataError`` naming file,
line and problem; the stratified validation split; normalisation statistics from the training cases alone; and the
real UEA files when the shared data is there (``RNNLAB_DATA``)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from rnnlab.data.text import DataError
from rnnlab.data.uea import CaseBatches, SeriesClassData, collate_cases, detect_series_format, fit_normalizer, \
    parse_ts, read_labeled_series, read_npz, read_ts, stratified_split

DATA = Path(os.environ.get("RNNLAB_DATA") or Path(__file__).parents[2] / "shared" / "data")
UEA = DATA / "uea"

HEADER = """#A comment before the header
@problemName Toy
@timeStamps false
@missing false
@univariate false
@dimensions 2
@equalLength true
@seriesLength 3
@classLabel true up down
@data
"""


def write(tmp_path: Path, text: str, name: str = "toy.ts") -> Path:
    f = tmp_path / name
    f.write_text(text, encoding="utf-8")
    return f


def test_equal_length_multivariate_with_labels_and_comments(tmp_path):
    f = write(tmp_path, HEADER + "1,2,3:4,5,6:up\n# a comment between cases\n\n3,2,1:6, 5 ,4:down\r\n")
    d = read_ts(f)
    assert len(d) == 2 and d.n_features == 2 and d.lengths == [3, 3]
    assert d.labels == ["up", "down"] and d.label_set == ["up", "down"] and d.problem == "Toy"
    assert d.where == ["line 11", "line 14"]
    np.testing.assert_array_equal(d.values[0], [[1, 4], [2, 5], [3, 6]])  # (T, F): one column per dimension
    np.testing.assert_array_equal(d.values[1], [[3, 6], [2, 5], [1, 4]])
    assert d.describe() == "2 cases, 2 features, length 3"


def test_unequal_length_univariate_and_the_label_order_of_the_header(tmp_path):
    text = "@problemName U\n@univariate true\n@equalLength false\n@classLabel true b a c\n@data\n" \
           "1,2:a\n1,2,3,4,5:b\n-1.5e-1:c\n"
    d = read_ts(write(tmp_path, text))
    assert d.lengths == [2, 5, 1] and d.n_features == 1 and d.label_set == ["b", "a", "c"]
    data = SeriesClassData(d, valid_fraction=0.0)
    assert data.labels == ["b", "a", "c"] and data.ids["train"] == [1, 0, 2]  # class ids follow @classLabel
    x, lengths, y = collate_cases(data.cases("train"))
    assert x.shape == (3, 5, 1) and lengths.tolist() == [2, 5, 1] and y.tolist() == [1, 0, 2]
    assert float(x[0, 2:].abs().sum()) == 0  # zero padding after each case's length


def test_without_a_dimensions_line_the_first_case_sets_the_count(tmp_path):
    f = write(tmp_path, "@classLabel true x y\n@data\n1,2:3,4:x\n1:2:3:y\n")
    with pytest.raises(DataError, match=r"toy\.ts: line 4: 3 dimensions where line 3 has 2; separate dimensions"):
        read_ts(f)


def test_unlabelled_cases_are_for_prediction_only(tmp_path):
    f = write(tmp_path, "@classLabel false\n@data\n1,2:3,4\n5,6:7,8\n")
    d = read_ts(f, require_labels=False)
    assert d.labels == [None, None] and not d.labelled and d.n_features == 2
    with pytest.raises(DataError, match=r"@classLabel false: the cases have no class labels; a classifier trains"):
        read_ts(f)


@pytest.mark.parametrize("body, message", [
    ("1,2,3:4,5,6:up\n1,2,3:4,5,6\n", r"line 12: no class label after the last dimension \('4,5,6' is values"),
    ("1,2,3:4,5,6:1,2,3:up\n", r"line 11: 3 dimensions where @dimensions says 2; separate dimensions with ':' and end"),
    ("1,2,3:4,5,6:sideways\n", r"line 11: the class label 'sideways' is not in @classLabel \(up, down\)"),
    ("1,2,3:4,x,6:up\n", r"line 11, dimension 2, value 2: 'x' is not a number"),
    ("1,2:4,5:up\n", r"line 11: 2 values per dimension where @seriesLength says 3"),
    ("1,2,3:4,5:up\n", r"line 11: dimension 2 has 2 values where dimension 1 has 3; every dimension of a case"),
    ("1,2,3:4,5,inf:up\n", r"line 11, dimension 2, value 3: 'inf' is not a finite number"),
    ("1,2,,3:4,5,6:up\n", r"line 11, dimension 1, value 3: an empty value"),
    ("1,2,3:4,5,6:\n", r"line 11: an empty class label is not in @classLabel"),
    ("1,2,3:4,5,6:up\n@classLabel true a b\n", r"line 12: a header line .* after @data \(line 10\)"),
    ("", r"no cases after @data \(line 10\)"),
])
def test_malformed_cases_name_the_line_and_the_problem(tmp_path, body, message):
    with pytest.raises(DataError, match=r"^" + str(tmp_path / "toy.ts").replace("\\", "\\\\") + ": " + message):
        read_ts(write(tmp_path, HEADER + body))


def test_unequal_dimensions_within_one_case(tmp_path):
    f = write(tmp_path, "@classLabel true a b\n@data\n1,2,3:4,5:a\n")
    with pytest.raises(DataError, match=r"line 3: dimension 2 has 2 values where dimension 1 has 3; every dimension"):
        read_ts(f)


@pytest.mark.parametrize("text, message", [
    ("@classLabel true a b\n1,2:a\n", r"line 2: a case .* with no @data line above it"),
    ("@classLabel true a b\n", r"no @data line; a \.ts file lists its header lines"),
    ("@problemName P\n@clasLabel true a\n@data\n", r"line 2: unknown header line '@clasLabel'"),
    ("@classLabel true a a\n@data\n1:a\n", r"line 1: @classLabel lists 'a' twice"),
    ("@classLabel true\n@data\n1:a\n", r"line 1: @classLabel true without labels"),
    ("@equalLength maybe\n@data\n", r"line 1: @equalLength 'maybe': must be true or false"),
    ("@dimensions 0\n@data\n", r"line 1: @dimensions '0': must be a whole number >= 1"),
    ("@timeStamps true\n@classLabel true a\n@data\n(1,2):a\n", r"@timeStamps true: the values carry time stamps"),
    ("@targetLabel true\n@data\n1:0.5\n", r"line 1: @targetLabel true: the cases end in a numeric regression target"),
    ("@univariate true\n@dimensions 3\n@classLabel true a\n@data\n", r"@univariate true with @dimensions 3"),
    ("@problemName P\n@problemName Q\n@data\n", r"line 2: a second @problemName line \(the first is line 1\)"),
    ("just some text\n", r"line 1: a case .* with no @data line above it.*\(is this a \.ts file\? labelled text is read by"),
    ("@classLabel true a b\n@data extra\n", r"line 2: text after @data"),
])
def test_malformed_headers(tmp_path, text, message):
    with pytest.raises(DataError, match=message):
        read_ts(write(tmp_path, text))


def test_missing_values_are_refused_by_default_naming_line_dimension_and_position(tmp_path):
    f = write(tmp_path, HEADER.replace("@missing false", "@missing true") + "1,2,3:4,5,6:up\n1,?,3:4,5,6:down\n")
    with pytest.raises(DataError, match=r"toy\.ts: line 12, dimension 1, value 2: a missing value \('\?'\); rnnlab "
                                        r"does not fill gaps unless told to\. Pass --missing fill"):
        read_ts(f)


def test_missing_values_with_fill(tmp_path):
    text = ("@classLabel true a\n@equalLength true\n@data\n"
            "?,2,?,4,5:NaN,20,30,?,?:a\n"  # gaps inside, at the start and at the end of a dimension
            "1,2,3,?,?:10,20,30,?,?:a\n")  # the last two steps missing in every dimension: padding, the case ends
    d = read_ts(write(tmp_path, text), missing="fill")
    np.testing.assert_array_equal(d.values[0], [[2, 20], [2, 20], [2, 30], [4, 30], [5, 30]])
    np.testing.assert_array_equal(d.values[1], [[1, 10], [2, 20], [3, 30]])
    assert d.lengths == [5, 3] and d.filled == 5 and "5 missing values filled" in d.describe()  # not the padding
    f = write(tmp_path, "@classLabel true a\n@data\n1,2:?,?:a\n", "gap.ts")
    with pytest.raises(DataError, match=r"gap\.ts: line 3: every value of dimension 2 is missing; nothing to fill"):
        read_ts(f, missing="fill")


def test_a_bom_and_crlf_line_ends_are_read(tmp_path):
    f = tmp_path / "bom.ts"
    f.write_bytes(b"\xef\xbb\xbf@classLabel true a b\r\n@data\r\n1,2:a\r\n3,4:b\r\n")
    assert read_ts(f).lengths == [2, 2]


def test_not_utf8_or_empty_files(tmp_path):
    f = tmp_path / "latin.ts"
    f.write_bytes("@problemName caf\xe9\n@data\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin\.ts: line 1: invalid UTF-8"):
        read_ts(f)
    with pytest.raises(DataError, match=r"empty"):
        read_ts(write(tmp_path, "  \n", "blank.ts"))
    with pytest.raises(DataError, match=r"no such file"):
        read_ts(tmp_path / "nope.ts")


# -- NPZ -----------------------------------------------------------------------------------------------------------
def test_npz_layout(tmp_path):
    X = np.zeros((3, 4, 2))
    X[0, :2] = [[1, 2], [3, 4]]
    X[1] = 5
    X[2, :1] = 7
    np.savez(tmp_path / "d.npz", X=X, lengths=np.array([2, 4, 1]), y=np.array(["b", "a", "b"]),
             classes=np.array(["b", "a"]))
    d = read_labeled_series(tmp_path / "d.npz")
    assert d.format == "npz" and d.lengths == [2, 4, 1] and d.labels == ["b", "a", "b"] and d.label_set == ["b", "a"]
    np.testing.assert_array_equal(d.values[0], [[1, 2], [3, 4]])
    # (N, T) for one feature, integer labels, no classes: sorted numerically; no lengths: all T
    np.savez(tmp_path / "u.npz", X=np.arange(6.0).reshape(3, 2), y=np.array([10, 2, 2]))
    u = read_npz(tmp_path / "u.npz")
    assert u.n_features == 1 and u.lengths == [2, 2, 2] and u.label_set == ["2", "10"]
    assert detect_series_format(tmp_path / "u.npz") == "npz"


@pytest.mark.parametrize("arrays, message", [
    ({"Y": np.zeros((2, 3))}, r"no array 'X' \(arrays: Y\)"),
    ({"X": np.zeros((2, 3, 1)), "y": np.array(["a"])}, r"y is <U1 of shape \(1,\); it must be \(2,\) labels"),
    ({"X": np.zeros((2, 3, 1)), "lengths": np.array([0, 3]), "y": np.array(["a", "b"])}, r"lengths is int"),
    ({"X": np.array([[[np.nan]], [[1.0]]]), "y": np.array(["a", "b"])}, r"case 1, dimension 1, value 1: a missing "),
    ({"X": np.zeros((2, 3, 1))}, r"no array 'y': the cases have no class labels"),
    ({"X": np.zeros((2, 3, 1)), "y": np.array(["a", "c"]), "classes": np.array(["a", "b"])},
     r"case 2: the label 'c' is not in classes \(a, b\)"),
    ({"X": np.array([["a"]]), "y": np.array(["a"])}, r"X is <U1 of shape \(1, 1\); it must be numbers"),
])
def test_malformed_npz(tmp_path, arrays, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match=r"bad\.npz: " + message):
        read_npz(tmp_path / "bad.npz")


def test_npz_that_is_not_a_zip_or_holds_a_pickle(tmp_path):
    (tmp_path / "text.npz").write_text("hello", encoding="utf-8")
    with pytest.raises(DataError, match=r"text\.npz: not an \.npz file"):
        read_npz(tmp_path / "text.npz")
    np.savez(tmp_path / "obj.npz", X=np.array([np.zeros(2), np.zeros(3)], dtype=object))
    with pytest.raises(DataError, match=r"obj\.npz: holds an object array \(a pickle\)"):
        read_npz(tmp_path / "obj.npz")


# -- split, normalisation, batches ---------------------------------------------------------------------------------
def test_stratified_split_keeps_each_class_share_and_a_training_case():
    labels = [0] * 30 + [1] * 10 + [2] * 2 + [3]
    train, valid = stratified_split(labels, 0.2, seed=0)
    held = [labels[i] for i in valid]
    assert held.count(0) == 6 and held.count(1) == 2 and held.count(2) == 1 and held.count(3) == 0
    assert sorted(train + valid) == list(range(len(labels))) and not set(train) & set(valid)
    assert stratified_split(labels, 0.2, seed=0) == (train, valid)  # the same seed, the same split
    assert stratified_split(labels, 0.2, seed=1) != (train, valid)
    assert stratified_split(labels, 0.0) == (list(range(len(labels))), [])


def _toy(tmp_path, name, offset, n=8):
    rng = np.random.default_rng(abs(offset))
    lines = [f"{','.join(f'{v:.4f}' for v in rng.normal(offset + k % 2, 1 + k, size=4))}:"
             f"{','.join(f'{v:.4f}' for v in rng.normal(-offset, 2, size=4))}:{'ab'[k % 2]}" for k in range(n)]
    return read_ts(write(tmp_path, "@classLabel true a b\n@data\n" + "\n".join(lines) + "\n", name))


def test_normalisation_uses_the_training_cases_alone(tmp_path):
    train = _toy(tmp_path, "train.ts", 0, n=10)
    test_a, test_b = _toy(tmp_path, "test_a.ts", 50), _toy(tmp_path, "test_b.ts", -300)
    valid = _toy(tmp_path, "valid.ts", 1000)
    held = SeriesClassData(train, None, test_a, valid_fraction=0.2, seed=0)
    trained_on = [train.values[i] for i in held.train_index]
    expect = np.concatenate(trained_on)  # every step of the cases trained on, none of the held-out ones
    np.testing.assert_allclose(held.normalizer.mean, expect.mean(0))
    np.testing.assert_allclose(held.normalizer.std, expect.std(0))
    assert len(held.valid_index) == 2 and held.normalizer.mean != fit_normalizer(train.values).mean
    # Another test file (or a validation file) changes nothing
    assert SeriesClassData(train, None, test_b, valid_fraction=0.2, seed=0).normalizer == held.normalizer
    assert SeriesClassData(train, None, None, valid_fraction=0.2, seed=0).normalizer == held.normalizer
    with_valid = SeriesClassData(train, valid, test_b)
    assert with_valid.normalizer == fit_normalizer(train.values) and with_valid.valid_index == []
    # The training cases come out with mean 0 and std 1 per feature
    x = np.concatenate([c.x.numpy() for c in held.cases("train")])
    np.testing.assert_allclose(x.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(x.std(0), 1, atol=1e-5)


def test_other_files_must_fit_the_training_file(tmp_path):
    train = _toy(tmp_path, "train.ts", 0)
    other = read_ts(write(tmp_path, "@classLabel true a c\n@data\n1:a\n2:c\n", "one_dim.ts"))
    with pytest.raises(DataError, match=r"one_dim\.ts: 1 dimension per case where the training file .* has 2"):
        SeriesClassData(train, other)
    labels = read_ts(write(tmp_path, "@classLabel true a c\n@data\n1:1:a\n2:2:c\n", "labels.ts"))
    with pytest.raises(DataError, match=r"labels\.ts: line 4: the class label 'c' is not one of the training labels"):
        SeriesClassData(train, None, labels)
    one = read_ts(write(tmp_path, "@classLabel true a b\n@data\n1:1:a\n2:2:a\n", "one.ts"))
    with pytest.raises(DataError, match=r"one\.ts: only 1 distinct label"):
        SeriesClassData(one)


def test_case_batches_resume_exactly_and_cover_every_case(tmp_path):
    data = SeriesClassData(_toy(tmp_path, "train.ts", 0, n=9), valid_fraction=0.0)
    b = CaseBatches(data.cases("train"), 4, shuffle=True, seed=3)
    assert b.num_batches(0) == 3 and sorted(sum(b.order(5), [])) == list(range(9))
    assert b.order(1) == CaseBatches(data.cases("train"), 4, shuffle=True, seed=3).order(1) != b.order(2)
    full = [y.tolist() for _, _, y in b.batches(1)]
    assert [y.tolist() for _, _, y in b.batches(1, start=1)] == full[1:]


def test_parse_ts_is_what_read_ts_reads(tmp_path):
    text = HEADER + "1,2,3:4,5,6:up\n"
    assert parse_ts(text, "x.ts").values[0].tolist() == read_ts(write(tmp_path, text)).values[0].tolist()


# -- the real UEA files --------------------------------------------------------------------------------------------
@pytest.mark.skipif(not UEA.is_dir(), reason=f"shared data not present at {UEA} (set RNNLAB_DATA)")
@pytest.mark.parametrize("name, n, features, lengths, labels", [
    ("JapaneseVowels_TRAIN", 270, 12, (7, 26), [str(k) for k in range(1, 10)]),
    ("JapaneseVowels_TEST", 370, 12, (7, 29), [str(k) for k in range(1, 10)]),
    ("BasicMotions_TRAIN", 40, 6, (100, 100), ["Standing", "Running", "Walking", "Badminton"]),
    ("BasicMotions_TEST", 40, 6, (100, 100), ["Standing", "Running", "Walking", "Badminton"]),
])
def test_the_uea_files(name, n, features, lengths, labels):
    d = read_ts(UEA / name.split("_")[0] / f"{name}.ts")
    assert len(d) == n and d.n_features == features and (min(d.lengths), max(d.lengths)) == lengths
    assert d.label_set == labels and set(d.labels) == set(labels) and d.filled == 0
    assert all(np.isfinite(v).all() for v in d.values)
