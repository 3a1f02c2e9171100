"""Numeric time series from a CSV file: columns → windows of past steps → the next value(s) of a target.

Data flows: file → ``read_series`` (a ``SeriesTable``: column names and the cells as text, nothing converted yet)
→ ``SeriesDataset`` (feature and target columns chosen and converted to numbers, the rows split chronologically
into train / valid / test, every column normalised with the TRAIN part's mean and std) → ``SeriesWindows`` (the
trainer's data protocol: ``batches(epoch, start)``, ``num_batches(epoch)``, ``batch_size``) whose batches are
``SeqBatch(x, lengths, y)`` as ``rnnlab.train.RegressionTask`` takes them.

The file: one row per time step, oldest first; a header row with the column names or none (then the columns are
named by number, "1", "2", ...); commas, tabs or semicolons between cells (read off the first line). A date/time
column (its header is date/time/timestamp/..., or its first cell looks like a date or a time) is not a feature
unless requested. Columns are chosen by name or by number counted from 1, as in the error messages. An empty cell,
NA, NaN or a word in a chosen column is a ``DataError`` naming the file, line and column: nothing is filled in.

Two shapes, ``W`` = window, ``h`` = horizon, ``K`` target columns, ``F`` feature columns; a window ends at row t:

    many-to-one   x = features[t-W+1 .. t]   (B, W, F)   y = target[t+1 .. t+h]              (B, h*K)
    per step      x = features[t-W+1 .. t]   (B, W, F)   y[:, s] = target[s+1 .. s+h] at
                                                          each row s of the window          (B, W, h*K)

``y`` lists the h steps ahead in order, each with the K targets (``[t+1: k1..kK, t+2: k1..kK, ...]``). Every window
is complete, so ``lengths`` is W for all of them. ``LastValue`` is the naive forecast x̂[t+k] = x[t] to compare
with; ``Denormalized`` wraps a model so that it predicts in the target's own units.
"""
from __future__ import annotations

import csv
import hashlib
import io
import math
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from .synthetic import SeqBatch
from .text import DataError

SPLITS = ("train", "valid", "test")
# Header names that mark the first column as the time axis (compared in lower case).
TIME_NAMES = {"date", "time", "datetime", "timestamp", "ts", "ds", "day", "month", "year", "period", "date_time",
              "time_stamp"}
_DATE_LIKE = re.compile(r"^\d{1,4}[-/.]\d{1,2}([-/.]\d{1,4})?([ T]\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?)?"
                        r"(Z|[+-]\d{2}:?\d{2})?$|^\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?$")
_MISSING = {"", "na", "n/a", "nan", "null", "none", "?", "-", "--"}


def _is_number(cell: str) -> bool:
    try:
        return math.isfinite(float(cell))
    except ValueError:
        return False


def _looks_like_time(cell: str) -> bool:
    if _DATE_LIKE.match(cell):
        return True
    try:
        datetime.fromisoformat(cell)
        return True
    except ValueError:
        return False


# -- reading -------------------------------------------------------------------------------------------------------
@dataclass
class SeriesTable:
    """A CSV as read: ``names`` (one per column), ``rows`` (the cells as text) and ``lines`` (each row's line in the
    file, for error messages), ``time_column`` (its index, or None). Columns become numbers in ``numeric``."""

    path: str
    names: list[str]
    rows: list[list[str]]
    lines: list[int]
    time_column: int | None
    header: bool

    def __len__(self) -> int:
        return len(self.rows)

    def _label(self, i: int) -> str:
        return f"column {i + 1}" + (f" ({self.names[i]!r})" if self.header else "")

    def column(self, spec: str | int, flag: str = "column") -> int:
        """The index (from 0) of the column ``spec`` names: a header name, or a number counted from 1 (a name
        wins when a header name is itself a number)."""
        if isinstance(spec, str):
            s = spec.strip()
            if s in self.names:
                return self.names.index(s)
            if s.isdigit():
                spec = int(s)
        if isinstance(spec, int) and not isinstance(spec, bool) and 1 <= spec <= len(self.names):
            return spec - 1
        known = ", ".join(f"{i + 1}={n}" if self.header else str(i + 1) for i, n in enumerate(self.names))
        raise DataError(f"{self.path}: {flag} {spec!r}: no such column; the file has {len(self.names)} column"
                        f"{'s' if len(self.names) != 1 else ''} ({known}); give a header name or a number from 1")

    def columns(self, specs: Sequence[str | int], flag: str = "column") -> list[int]:
        out = []
        for spec in specs:
            i = self.column(spec, flag)
            if i in out:
                raise DataError(f"{self.path}: {flag}: {self._label(i)} is named twice; give each column once")
            out.append(i)
        return out

    def numeric_columns(self) -> list[int]:
        """Every column but the time column: the default features."""
        return [i for i in range(len(self.names)) if i != self.time_column]

    def numeric(self, columns: Sequence[int], role: str = "features") -> np.ndarray:
        """(N, len(columns)) float64 of those columns; a DataError at the first missing or non-numeric cell."""
        out = np.empty((len(self.rows), len(columns)), dtype=np.float64)
        for j, c in enumerate(columns):
            for r, row in enumerate(self.rows):
                cell = row[c]
                try:
                    value = float(cell)
                except ValueError:
                    value = None
                if value is not None and math.isfinite(value):
                    out[r, j] = value
                    continue
                where = f"{self.path}: line {self.lines[r]}, {self._label(c)}"
                if cell.strip().lower() in _MISSING or (value is not None and math.isnan(value)):
                    raise DataError(f"{where}: a missing value ({cell!r}); rnnlab does not fill gaps. Fill it (e.g. "
                                    "with the previous value) or drop the row, or leave the column out of the "
                                    f"{role}")
                if value is not None:
                    raise DataError(f"{where}: {cell!r} is not a finite number; fix the cell or leave the column out "
                                    f"of the {role}")
                hint = (" (a date or time column is not a feature: mark it as the time column, --time-column, "
                        f"or leave it out of the {role})" if _looks_like_time(cell.strip()) else
                        " (a header row? say so: --header yes)" if r == 0 and not self.header else "")
                raise DataError(f"{where}: {cell!r} is not a number; fix the cell or leave the column out of the "
                                f"{role}{hint}")
        return out


def read_series(path: str | Path, *, header: bool | None = None, time_column: str | int | None = None,
                delimiter: str | None = None) -> SeriesTable:
    """Read a CSV of numeric columns. ``header``: True / False / None = the first row is a header when none of its
    cells is a number. ``time_column``: a name or a number from 1; None = the first column when its header is a
    time name (date, time, timestamp, ...) or its first cell looks like a date or a time. ``delimiter``: None = the
    one of ``,`` tab ``;`` that the first line has most of."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such file; check the path")
    if p.is_dir():
        raise DataError(f"{p}: is a directory, not a CSV file; pass a file")
    raw = p.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        at = exc.start + (3 if raw.startswith(b"\xef\xbb\xbf") else 0)  # the offset in the file, BOM included
        line = raw.count(b"\n", 0, at) + 1
        raise DataError(f"{p}: line {line}: invalid UTF-8 (byte offset {at}); save the file as UTF-8 (plain CSV), e.g. "
                        f"'iconv -f latin1 -t utf-8 {p} > {p.stem}.utf8{p.suffix}'") from None
    first = next((line for line in text.splitlines() if line.strip()), None)
    if first is None:
        raise DataError(f"{p}: the file is empty; a series needs one row per time step")
    if delimiter is None:
        counts = {d: first.count(d) for d in (",", "\t", ";")}
        delimiter = max(counts, key=counts.get) if max(counts.values()) else ","
    # Lines end at \n, \r or \r\n only (as the csv module wants), so the line numbers are the file's.
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    rows, lines = [], []
    try:
        for row in reader:
            if not row or all(not c.strip() for c in row):
                continue  # blank lines
            rows.append([c.strip() for c in row])
            lines.append(reader.line_num)
    except csv.Error as exc:  # e.g. a field over csv.field_size_limit(): an unclosed quote swallowing the file
        raise DataError(f"{p}: line {reader.line_num}: not readable as CSV ({exc}); check for an unclosed quote "
                        '(") and that each row is one line of cells') from None
    if not rows:  # e.g. only delimiters: ",,\n,"
        raise DataError(f"{p}: no cells, only delimiters ({delimiter!r}) and blank lines; a series needs one row of "
                        "numbers per time step")
    if header is None:
        header = not any(_is_number(c) for c in rows[0])
    if header:
        names, rows, lines = rows[0], rows[1:], lines[1:]
        for i, n in enumerate(names):
            if not n:
                names[i] = str(i + 1)
        dup = next((n for n in names if names.count(n) > 1), None)
        if dup is not None:
            raise DataError(f"{p}: line {lines[0] - 1 if lines else 1}: the header names column {dup!r} twice; give "
                            "every column its own name")
    else:
        names = [str(i + 1) for i in range(len(rows[0]))]
    if not rows:
        raise DataError(f"{p}: a header and no data rows; a series needs one row per time step")
    width = len(names)
    for row, line in zip(rows, lines):
        if len(row) != width:
            raise DataError(f"{p}: line {line} has {len(row)} cell{'s' if len(row) != 1 else ''} but the "
                            f"{'header' if header else 'first row'} has {width}; every row needs one cell per column "
                            f"(delimiter {delimiter!r})")
    table = SeriesTable(str(p), names, rows, lines, None, bool(header))
    if time_column is not None:
        table.time_column = table.column(time_column, "time column")
    elif (header and names[0].strip().lower() in TIME_NAMES) or \
            (not _is_number(rows[0][0]) and _looks_like_time(rows[0][0])):
        table.time_column = 0
    return table


# -- normalisation -------------------------------------------------------------------------------------------------
@dataclass
class Normalizer:
    """Per-column ``(value - mean) / std``, fitted on the training rows; ``invert`` maps predictions back."""

    names: list[str]
    mean: list[float]
    std: list[float]

    @classmethod
    def fit(cls, values: np.ndarray, names: Sequence[str]) -> Normalizer:
        mean = values.mean(0)
        std = values.std(0)
        std = np.where(std > 1e-12 * np.maximum(np.abs(mean), 1.0), std, 1.0)  # a constant column: shift only
        return cls(list(names), [float(v) for v in mean], [float(v) for v in std])

    def _stats(self, names: Sequence[str]):
        idx = [self.names.index(n) for n in names]
        return np.array([self.mean[i] for i in idx]), np.array([self.std[i] for i in idx])

    def apply(self, values: np.ndarray, names: Sequence[str]) -> np.ndarray:
        mean, std = self._stats(names)
        return (values - mean) / std

    def invert(self, values: np.ndarray, names: Sequence[str]) -> np.ndarray:
        mean, std = self._stats(names)
        return values * std + mean

    def to_json(self) -> dict:
        return {"names": list(self.names), "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_json(cls, d: dict) -> Normalizer:
        return cls(list(d["names"]), [float(v) for v in d["mean"]], [float(v) for v in d["std"]])


# -- windows -------------------------------------------------------------------------------------------------------
def _check_int(name: str, value, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ValueError(f"{name} must be an integer >= {lo}; got {value!r}")
    return value


class SeriesWindows:
    """Windows of a series as batches ``SeqBatch(x, lengths, y)`` (shapes in the module docstring). ``ends``: the
    row each window ends at (its last input step). With ``shuffle`` every epoch has its own order, the same for the
    same (seed, epoch), so ``batches(epoch, start)`` resumes exactly with no RNG state to store; without it the
    windows come in time order (evaluation)."""

    def __init__(self, x: Tensor, y: Tensor, ends: np.ndarray, *, window: int, horizon: int, per_step: bool,
                 batch_size: int, shuffle: bool = False, seed: int = 0, name: str = "series") -> None:
        self.batch_size = _check_int("batch_size", batch_size, 1)
        self.window, self.horizon, self.per_step = window, horizon, per_step
        self.x, self.y, self.ends = x, y, np.asarray(ends, dtype=np.int64)
        if len(self.ends) == 0:
            raise ValueError(f"{name}: no windows")
        self.shuffle, self.seed, self.name = shuffle, _check_int("seed", seed, 0), name

    def __len__(self) -> int:
        return len(self.ends)

    def num_batches(self, epoch: int = 0) -> int:
        return -(-len(self.ends) // self.batch_size)

    def order(self, epoch: int = 0) -> np.ndarray:
        """The window indices in the order ``epoch`` reads them."""
        if not self.shuffle:
            return np.arange(len(self.ends))
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, epoch]))  # its own generator: see above
        return rng.permutation(len(self.ends))

    def batch(self, index: np.ndarray) -> SeqBatch:
        """The windows ``index`` (positions in ``ends``) as one batch."""
        ends = torch.as_tensor(self.ends[index])  # (B,)
        steps = torch.arange(-self.window + 1, 1)  # (W,)
        ahead = torch.arange(1, self.horizon + 1)  # (h,)
        rows = ends[:, None] + steps  # (B, W): the input rows
        x = self.x[rows]  # (B, W, F)
        B = len(ends)
        if self.per_step:
            y = self.y[rows[:, :, None] + ahead].reshape(B, self.window, -1)  # (B, W, h, K) -> (B, W, h*K)
        else:
            y = self.y[ends[:, None] + ahead].reshape(B, -1)  # (B, h, K) -> (B, h*K)
        return SeqBatch(x, torch.full((B,), self.window, dtype=torch.long), y)

    def batches(self, epoch: int = 0, start: int = 0) -> Iterator[SeqBatch]:
        order = self.order(epoch)
        for k in range(start * self.batch_size, len(order), self.batch_size):
            yield self.batch(order[k:k + self.batch_size])

    def __iter__(self):
        return self.batches(0)


class SeriesDataset:
    """A series ready to train on: ``target`` (one or more columns) predicted ``horizon`` steps ahead from windows
    of ``window`` rows of ``features`` (default: every column but the time column). ``per_step``: a prediction at
    every step of the window (many-to-many) instead of once at its end.

    The rows are split in time order: the last ``test_fraction`` of the rows is the test part, the
    ``valid_fraction`` before it the validation part, the rest (the oldest rows) the training part. A window
    belongs to the part its target rows fall in; its input rows may reach back into the part before (that past is
    known when the forecast is made), but no target is ever predicted in two parts.

    Why chronological and never shuffled across the split: neighbouring windows overlap and a series is
    autocorrelated, so a random split would put near-copies of every test window in the training data and the
    test error would measure memory, not forecasting; and forecasting means predicting a future from its past, so
    everything tested on must lie after everything trained on. (Shuffling the training windows among themselves,
    as ``windows(shuffle=True)`` does, is harmless.)

    Normalisation: each column's mean and std come from the training rows only (``normalizer``; pass a stored one
    to reuse it), since the validation and test rows are the future a real forecast would not have seen.
    """

    def __init__(self, table: SeriesTable, target: Sequence[str | int], features: Sequence[str | int] | None = None,
                 *, window: int, horizon: int = 1, per_step: bool = False, valid_fraction: float = 0.1,
                 test_fraction: float = 0.1, normalizer: Normalizer | None = None) -> None:
        self.path = table.path
        self.window = _check_int("window", window, 1)
        self.horizon = _check_int("horizon", horizon, 1)
        self.per_step = bool(per_step)
        for name, f in (("valid_fraction", valid_fraction), ("test_fraction", test_fraction)):
            if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 <= f < 1:
                raise ValueError(f"{name} must be a number in [0, 1); got {f!r}")
        if valid_fraction + test_fraction >= 0.9:
            raise ValueError(f"valid_fraction + test_fraction must leave at least 10% of the rows to train on; got "
                             f"{valid_fraction:g} + {test_fraction:g}")
        self.valid_fraction, self.test_fraction = float(valid_fraction), float(test_fraction)
        if isinstance(target, (str, int)):
            target = [target]
        if not target:
            raise DataError(f"{table.path}: no target column; name at least one")
        t_idx = table.columns(target, "target")
        f_idx = table.columns(features, "features") if features is not None else table.numeric_columns()
        if not f_idx:
            raise DataError(f"{table.path}: no feature columns (the only column is the time column); name the "
                            "features")
        self.target_names = [table.names[i] for i in t_idx]
        self.feature_names = [table.names[i] for i in f_idx]
        self.time_column = None if table.time_column is None else table.names[table.time_column]
        feats = table.numeric(f_idx, "features")  # (N, F) float64
        targets = table.numeric(t_idx, "targets")  # (N, K)
        n = len(table)
        n_test = round(n * self.test_fraction)
        n_valid = round(n * self.valid_fraction)
        n_train = n - n_valid - n_test
        self.bounds = {"train": (0, n_train), "valid": (n_train, n_train + n_valid),
                       "test": (n_train + n_valid, n)}  # [first row, end) of each part
        self.n_rows = n
        names = list(dict.fromkeys(self.feature_names + self.target_names))
        if normalizer is None:
            both = np.concatenate([feats, targets], 1)[:n_train]
            cols = [*self.feature_names, *self.target_names]
            keep = [cols.index(c) for c in names]
            normalizer = Normalizer.fit(both[:, keep], names)
        elif not set(names) <= set(normalizer.names):
            raise ValueError(f"the normalizer has columns {normalizer.names}; the data needs {names}")
        self.normalizer = normalizer
        self.x = torch.from_numpy(normalizer.apply(feats, self.feature_names)).float()  # (N, F)
        self.y = torch.from_numpy(normalizer.apply(targets, self.target_names)).float()  # (N, K)
        self.y_raw = torch.from_numpy(targets).float()  # (N, K): the original units
        self.n_outputs = self.horizon * len(self.target_names)  # per window (many-to-one) or per step
        self._check_parts()

    @property
    def input_size(self) -> int:
        return len(self.feature_names)

    def ends(self, split: str, stride: int = 1) -> np.ndarray:
        """The rows the windows of ``split`` end at (time order). Their targets lie in the split's rows; their
        inputs start at row 0 or later. ``stride`` > 1 keeps every stride-th window, counted back from the newest."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
        a, b = self.bounds[split]
        W, h = self.window, self.horizon
        first = 2 - W if self.per_step else 1  # the earliest target row is t + first (t: the window's last row)
        lo = max(a - first, W - 1)  # the earliest target in the split, the first input row >= 0
        hi = b - h - 1  # the latest target, t + h, in the split
        if hi < lo:
            return np.zeros(0, dtype=np.int64)
        return np.arange(hi, lo - 1, -stride, dtype=np.int64)[::-1].copy()

    def _need(self, split: str) -> int:
        """Rows the split needs for one window."""
        W, h = self.window, self.horizon
        if split == "train":
            return W + h
        return W + h - 1 if self.per_step else h

    def _check_parts(self) -> None:
        for split in SPLITS:
            a, b = self.bounds[split]
            fraction = {"valid": self.valid_fraction, "test": self.test_fraction}.get(split)
            if fraction == 0:
                continue
            if len(self.ends(split)) == 0:
                share = f" ({fraction:g} of {self.n_rows})" if fraction is not None else ""
                raise DataError(f"{self.path}: the {split} part has {b - a} rows{share}; a window of {self.window} "
                                f"steps predicting {self.horizon} ahead{' at every step' if self.per_step else ''} "
                                f"needs at least {self._need(split)}. Give a shorter window or horizon, "
                                + ("smaller valid/test fractions" if split == "train" else
                                   f"a larger {split} fraction") + ", or a longer series")

    def windows(self, split: str, batch_size: int, *, shuffle: bool = False, seed: int = 0,
                units: str = "normalized", stride: int = 1) -> SeriesWindows:
        """The windows of ``split``. ``units``: the targets normalised (training, validation loss) or in their
        ``original`` units (for a ``Denormalized`` model's error in those units)."""
        if units not in ("normalized", "original"):
            raise ValueError(f"units must be 'normalized' or 'original'; got {units!r}")
        y = self.y if units == "normalized" else self.y_raw
        return SeriesWindows(self.x, y, self.ends(split, stride), window=self.window, horizon=self.horizon,
                             per_step=self.per_step, batch_size=batch_size, shuffle=shuffle, seed=seed,
                             name=f"{self.path} ({split})")

    def baseline_windows(self, split: str, batch_size: int, stride: int = 1) -> SeriesWindows:
        """The same windows with the target columns (original units) as the input: what ``LastValue`` reads."""
        return SeriesWindows(self.y_raw, self.y_raw, self.ends(split, stride), window=self.window,
                             horizon=self.horizon, per_step=self.per_step, batch_size=batch_size,
                             name=f"{self.path} ({split}, last-value baseline)")

    def denormalized(self, model: nn.Module) -> Denormalized:
        mean, std = self.normalizer._stats(self.target_names)
        return Denormalized(model, mean.tolist(), std.tolist(), self.horizon)

    def describe(self) -> str:
        parts = []
        for split in SPLITS:
            a, b = self.bounds[split]
            if b > a:
                parts.append(f"{split} rows {a + 1}-{b} ({len(self.ends(split)):,} windows)")
        return "; ".join(parts)

    def to_json(self) -> dict:
        """What a checkpoint stores to read new data the same way and to de-normalise predictions."""
        return {"features": self.feature_names, "targets": self.target_names, "time_column": self.time_column,
                "window": self.window, "horizon": self.horizon, "per_step": self.per_step,
                "valid_fraction": self.valid_fraction, "test_fraction": self.test_fraction,
                "rows": {s: list(self.bounds[s]) for s in SPLITS}, "normalizer": self.normalizer.to_json()}


def sha256_file(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# -- predictions in the target's units, and the naive baseline ---------------------------------------------------
class Denormalized(nn.Module):
    """``model(x, lengths) * std + mean``: a model trained on normalised targets, predicting in the original units
    (mean and std of each target column, repeated for the ``horizon`` steps ahead, as ``y`` is laid out)."""

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float], horizon: int = 1) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(list(mean) * horizon, dtype=torch.float32), persistent=False)
        self.register_buffer("std", torch.tensor(list(std) * horizon, dtype=torch.float32), persistent=False)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        out = self.model(x, lengths)  # (B, h*K) or (B, T, h*K)
        return out * self.std.to(out.device) + self.mean.to(out.device)


class LastValue(nn.Module):
    """The naive forecast: the next ``horizon`` values are all the last one seen, x̂[t+k] = x[t] (for a random walk,
    e.g. a stock price, hard to beat). Reads the target columns themselves (``SeriesDataset.baseline_windows``):
    x (B, T, K) → (B, h*K), or (B, T, h*K) with ``per_step``. No parameters."""

    def __init__(self, horizon: int = 1, per_step: bool = False) -> None:
        super().__init__()
        self.horizon, self.per_step = horizon, per_step

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        if self.per_step:
            return x.repeat(1, 1, self.horizon)  # (B, T, K) -> (B, T, h*K)
        return x[:, -1].repeat(1, self.horizon)  # (B, K) -> (B, h*K); every window is complete
