"""rnnlab.data.series: reading numeric CSVs (with and without a header, choosing columns, skipping a date column),
windows and targets aligned row by row (checked by hand on tiny series), the chronological split, normalisation
fitted on the training rows only, the naive last-value forecast, reproducible batches, and every bad input as a
DataError naming the file, the line and the column."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from rnnlab.data.series import Denormalized, LastValue, Normalizer, SeriesDataset, SeriesWindows, read_series
from rnnlab.data.text import DataError
from rnnlab.train.supervised import RegressionTask, evaluate_regression


def write(tmp_path, text: str, name: str = "s.csv"):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def ramp(tmp_path, n: int = 20):
    """date, a = row number, b = 100 + 2 * row number."""
    rows = "".join(f"2024-01-{i + 1:02d},{i},{100 + 2 * i}\n" for i in range(n))
    return write(tmp_path, "date,a,b\n" + rows)


# -- reading -------------------------------------------------------------------------------------------------------
def test_header_names_and_the_date_column_is_not_a_feature(tmp_path):
    t = read_series(ramp(tmp_path, 5))
    assert t.header and t.names == ["date", "a", "b"] and len(t) == 5 and t.time_column == 0
    assert t.numeric_columns() == [1, 2]
    assert t.numeric([2, 1]).tolist() == [[100, 0], [102, 1], [104, 2], [106, 3], [108, 4]]
    assert t.lines == [2, 3, 4, 5, 6]  # line numbers in the file, for error messages


def test_no_header_columns_by_number_and_a_date_found_by_its_look(tmp_path):
    p = write(tmp_path, "2024-01-01 09:30,1.5,7\n2024-01-01 09:31,2.5,8\n\n2024-01-01 09:32,3.5,9\n")
    t = read_series(p)  # the first row has numbers: no header; a date-time in column 1: the time column
    assert not t.header and t.names == ["1", "2", "3"] and t.time_column == 0 and len(t) == 3
    assert t.column("3") == 2 and t.column(2) == 1
    d = SeriesDataset(t, ["3"], window=1, valid_fraction=0, test_fraction=0)
    assert d.feature_names == ["2", "3"] and d.target_names == ["3"] and d.time_column == "1"
    # all numbers and no time column: the first column is a feature like the others
    t = read_series(write(tmp_path, "1,2\n3,4\n", "n.csv"))
    assert t.time_column is None and t.numeric_columns() == [0, 1]
    # explicit choices: --header no keeps a numeric-looking first row; a time column by name
    t = read_series(write(tmp_path, "x\ty\tclock\n1\t2\t5\n3\t4\t6\n", "tab.tsv"), time_column="clock")
    assert t.names == ["x", "y", "clock"] and t.time_column == 2 and t.numeric_columns() == [0, 1]
    t = read_series(write(tmp_path, "10;20\n30;40\n", "semi.csv"), header=False)
    assert t.numeric([0, 1]).tolist() == [[10, 20], [30, 40]]


def test_choosing_features_and_targets(tmp_path):
    t = read_series(ramp(tmp_path))
    d = SeriesDataset(t, "b", ["b", 2], window=2, valid_fraction=0, test_fraction=0)  # a name and a number
    assert d.feature_names == ["b", "a"] and d.target_names == ["b"] and d.input_size == 2
    d = SeriesDataset(t, ["a", "b"], window=2, horizon=3, valid_fraction=0, test_fraction=0)
    assert d.feature_names == ["a", "b"] and d.n_outputs == 6  # 3 steps ahead x 2 targets
    with pytest.raises(DataError, match=r"s\.csv: target 'close': no such column; the file has 3 columns "
                                        r"\(1=date, 2=a, 3=b\)"):
        SeriesDataset(t, "close", window=2)
    with pytest.raises(DataError, match=r"features: column 2 \('a'\) is named twice"):
        SeriesDataset(t, "a", ["a", "2"], window=2)


# -- windows, targets, splits --------------------------------------------------------------------------------------
def test_many_to_one_windows_and_targets_line_up_by_hand(tmp_path):
    # 20 rows: test = the last 4 (rows 16-19), valid = the 4 before (12-15), train = rows 0-11
    d = SeriesDataset(read_series(ramp(tmp_path)), "b", ["a"], window=3, horizon=2, valid_fraction=0.2,
                      test_fraction=0.2)
    assert d.bounds == {"train": (0, 12), "valid": (12, 16), "test": (16, 20)}
    # a window ends at row t, reads rows t-2..t and predicts rows t+1, t+2; targets stay inside the split
    assert d.ends("train").tolist() == list(range(2, 10))  # last: rows 8-9 -> 10, 11
    assert d.ends("valid").tolist() == [11, 12, 13]  # inputs may reach back into train (rows 9-11 -> 12, 13)
    assert d.ends("test").tolist() == [15, 16, 17]
    x, lengths, y = next(d.windows("valid", 8, units="original").batches(0))
    assert lengths.tolist() == [3, 3, 3]
    a = d.normalizer.invert(x[..., 0].double().numpy(), ["a"])  # back to the row numbers
    assert np.allclose(a, [[9, 10, 11], [10, 11, 12], [11, 12, 13]])
    assert y.tolist() == [[124, 126], [126, 128], [128, 130]]  # b = 100 + 2 * row at rows t+1, t+2
    # normalised targets are the same values through the train rows' statistics
    _, _, yn = next(d.windows("valid", 8).batches(0))
    assert torch.allclose(yn * d.normalizer.std[1] + d.normalizer.mean[1], y)
    assert "train rows 1-12 (8 windows); valid rows 13-16 (3 windows); test rows 17-20 (3 windows)" in d.describe()


def test_per_step_targets_at_every_step_by_hand(tmp_path):
    d = SeriesDataset(read_series(ramp(tmp_path)), "a", ["a"], window=4, horizon=2, per_step=True,
                      valid_fraction=0.25, test_fraction=0.25)
    assert d.bounds == {"train": (0, 10), "valid": (10, 15), "test": (15, 20)}
    # every target of a window in the split: earliest target row t-2 >= first row of the split
    assert d.ends("train").tolist() == list(range(3, 8))
    assert d.ends("valid").tolist() == [12]
    assert d.ends("train", stride=4).tolist() == [3, 7]  # every 4th, counted back from the newest
    w = d.windows("train", 2, units="original")
    x, lengths, y = next(w.batches(0))
    assert y.shape == (2, 4, 2) and lengths.tolist() == [4, 4]
    # window ending at row 3: steps at rows 0..3, each predicting rows s+1, s+2
    assert y[0].tolist() == [[1, 2], [2, 3], [3, 4], [4, 5]]
    assert y[1].tolist() == [[2, 3], [3, 4], [4, 5], [5, 6]]
    base = evaluate_regression(LastValue(2, per_step=True), d.baseline_windows("train", 8), device="cpu")
    assert base["mse"] == pytest.approx(2.5) and base["mae"] == pytest.approx(1.5)  # misses by 1 and 2


def test_a_split_too_short_for_one_window_names_the_fix(tmp_path):
    t = read_series(ramp(tmp_path))
    with pytest.raises(DataError, match=r"the train part has 12 rows; a window of 11 steps predicting 2 ahead "
                                        r"needs at least 13\. Give a shorter window"):
        SeriesDataset(t, "a", window=11, horizon=2, valid_fraction=0.2, test_fraction=0.2)
    with pytest.raises(DataError, match=r"the test part has 2 rows \(0\.1 of 20\); a window of 3 steps predicting "
                                        r"2 ahead at every step needs at least 4\. .*a larger test fraction"):
        SeriesDataset(t, "a", window=3, horizon=2, per_step=True, valid_fraction=0.25, test_fraction=0.1)
    with pytest.raises(ValueError, match="leave at least 10% of the rows"):
        SeriesDataset(t, "a", window=2, valid_fraction=0.5, test_fraction=0.4)


def test_normalisation_is_fitted_on_the_training_rows_only(tmp_path):
    # train rows around 0, the test rows around 1000: their mean must not leak into the statistics
    values = [(-1) ** i for i in range(16)] + [1000 + (-1) ** i for i in range(4)]
    p = write(tmp_path, "v\n" + "".join(f"{v}\n" for v in values))
    d = SeriesDataset(read_series(p), "v", window=2, valid_fraction=0, test_fraction=0.2)
    assert d.normalizer.mean == [0.0] and d.normalizer.std == [1.0]
    assert d.x[:16].abs().max() == 1 and d.x[16:].min() > 998  # the test part stays far from the train scale
    # a stored normalizer is reused as is (a resumed run, new data)
    other = SeriesDataset(read_series(p), "v", window=2, valid_fraction=0, test_fraction=0.2,
                          normalizer=Normalizer(["v"], [5.0], [2.0]))
    assert other.x[0, 0] == pytest.approx((1 - 5) / 2)
    assert Normalizer.from_json(d.normalizer.to_json()) == d.normalizer
    # a constant column is shifted, not divided by zero
    n = Normalizer.fit(np.array([[3.0, 1.0], [3.0, 2.0]]), ["c", "d"])
    assert n.std[0] == 1.0 and n.apply(np.array([[3.0, 1.5]]), ["c", "d"]).tolist() == [[0.0, 0.0]]


def test_denormalized_and_last_value_predict_in_the_target_units():
    class Zero(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))

        def forward(self, x, lengths=None):
            return torch.zeros(x.shape[0], 4) + self.w

    m = Denormalized(Zero(), [10.0, -1.0], [2.0, 3.0], horizon=2)
    assert m(torch.zeros(3, 5, 1)).tolist() == [[10.0, -1.0, 10.0, -1.0]] * 3  # the mean of each target
    x = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])  # (B=1, T=2, K=2)
    assert LastValue(2)(x).tolist() == [[3.0, 4.0, 3.0, 4.0]]
    assert LastValue(1, per_step=True)(x).tolist() == x.tolist()


def test_batches_are_reproducible_per_seed_and_epoch_and_resume_mid_epoch(tmp_path):
    d = SeriesDataset(read_series(ramp(tmp_path, 60)), "a", window=3, valid_fraction=0, test_fraction=0)
    w = d.windows("train", 7, shuffle=True, seed=3)
    assert len(w) == 57 and w.num_batches(0) == 9 and w.batch_size == 7
    e0 = [b.y for b in w.batches(0)]
    assert all(torch.equal(a, b.y) for a, b in zip(e0, d.windows("train", 7, shuffle=True, seed=3).batches(0)))
    assert not torch.equal(torch.cat(e0), torch.cat([b.y for b in w.batches(1)]))  # each epoch its own order
    assert not torch.equal(torch.cat(e0), torch.cat([b.y for b in d.windows("train", 7, shuffle=True,
                                                                              seed=4).batches(0)]))
    assert sorted(torch.cat(e0).flatten().tolist()) == sorted(torch.cat([b.y for b in w.batches(1)])
                                                             .flatten().tolist())  # the same windows
    tail = [b.y for b in w.batches(0, start=5)]
    assert len(tail) == 4 and all(torch.equal(a, b) for a, b in zip(e0[5:], tail))
    # the batches are what RegressionTask takes
    x, lengths, y = batch = next(w.batches(0))
    assert x.dtype == torch.float32 and lengths.dtype == torch.long and y.shape == (7, 1)
    model = torch.nn.Module()
    model.forward = lambda x, lengths: x[:, -1, :1]  # noqa: E731 - a stand-in with the right shape
    model.p = torch.nn.Parameter(torch.zeros(1))
    loss, n, state = RegressionTask(model).step(batch, None)
    assert n == 7 and state is None and loss.item() >= 0
    assert isinstance(w, SeriesWindows) and sum(1 for _ in w) == 9


# -- errors --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, target, features, must", [
    ("date,a,b\n2024-01-01,1,2\n2024-01-02,,3\n", "b", None,
     r"s\.csv: line 3, column 2 \('a'\): a missing value \(''\); rnnlab does not fill gaps\. Fill it"),
    ("date,a,b\n2024-01-01,1,2\n2024-01-02,2,NA\n", "b", None, r"line 3, column 3 \('b'\): a missing value \('NA'\)"),
    ("a,b\n1,2\n2,x7\n", "b", ["a"], r"line 3, column 2 \('b'\): 'x7' is not a number; fix the cell or leave the "
                                     r"column out of the targets"),
    ("a,b\n1,2\n2,inf\n", "a", None, r"line 3, column 2 \('b'\): 'inf' is not a finite number"),
    ("1,2\n2,2024-01-05\n", "1", None, r"line 2, column 2: '2024-01-05' is not a number.*--time-column"),
    ("t,1\n1,2\n", "1", None, r"line 1, column 1: 't' is not a number.*--header yes"),
])
def test_bad_cells_name_the_file_line_column_and_fix(tmp_path, text, target, features, must):
    t = read_series(write(tmp_path, text))
    with pytest.raises(DataError, match=must):
        SeriesDataset(t, target, features, window=1, valid_fraction=0, test_fraction=0)


def test_bad_files(tmp_path):
    with pytest.raises(DataError, match=r"nope\.csv: no such file"):
        read_series(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="the file is empty"):
        read_series(write(tmp_path, "\n\n"))
    with pytest.raises(DataError, match="a header and no data rows"):
        read_series(write(tmp_path, "a,b\n"))
    with pytest.raises(DataError, match=r"line 3 has 3 cells but the header has 2; every row needs one cell per "
                                        r"column"):
        read_series(write(tmp_path, "a,b\n1,2\n3,4,5\n"))
    with pytest.raises(DataError, match="names column 'a' twice"):
        read_series(write(tmp_path, "a,a\n1,2\n"))
    with pytest.raises(DataError, match=r"time column 'when': no such column"):
        read_series(write(tmp_path, "a,b\n1,2\n"), time_column="when")
    (tmp_path / "latin1.csv").write_bytes("caf\xe9,b\n1,2\n".encode("latin-1"))
    with pytest.raises(DataError, match="invalid UTF-8"):
        read_series(tmp_path / "latin1.csv")
