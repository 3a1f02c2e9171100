"""Labelled numeric sequences for many-to-one classification: the UEA/UCR archive's ``.ts`` files, and an NPZ layout.

Data flows: file → ``read_ts`` / ``read_npz`` (a ``LabeledSeries``: one (T_i, F) float64 array per case, its label
as text, where it came from) → ``SeriesClassData`` (the label ids in the training file's label order, a stratified
validation split of the training cases when no validation file is given, every feature normalised with the
TRAINING cases' mean and std) → ``CaseBatches`` (the trainer's data protocol: ``batches(epoch, start)``,
``num_batches(epoch)``, ``batch_size``) whose batches are ``(x (B, T, F) float32, lengths (B,), y (B,))``, as
``rnnlab.train.ClassificationTask`` takes them.

The ``.ts`` format (the UEA/UCR time-series classification archive; https://www.timeseriesclassification.com)::

    # comment lines start with '#', anywhere
    @problemName BasicMotions
    @timeStamps false          time-stamped values '(t,v)' are refused (see below)
    @missing false             informational: '?' is handled by the missing-value policy either way
    @univariate false          true: exactly one dimension
    @dimensions 6              optional: the number of dimensions every case must have
    @equalLength true          true: every case has the same length (@seriesLength when given)
    @seriesLength 100
    @classLabel true Standing Running Walking Badminton      the label set, in its order (the class ids)
    @data
    0.1,0.2,...,0.3:1.5,1.4,...,1.2:...:Standing          one case a line: dimensions separated by ':',
                                                           values by ',', the class label last

Unequal lengths are fine (``@equalLength false``): each case keeps its own length and batches are packed, so no
padding reaches the model. Every dimension of one case must have the same length.

Missing values ('?', or NaN written out) — ``missing``:
    ``refuse`` (the default) — a ``DataError`` naming the file, line, dimension and position. Filling a gap invents
        data, and which fill is right depends on what the gap is (a sensor dropout, padding to a common length):
        the choice is left to the user, as ``rnnlab train regress`` leaves gaps in a CSV to the user.
    ``fill`` — steps missing in every dimension at the end of a case are padding (unequal-length series written
        out to a common length): the case ends before them. Every other gap takes the previous value of the same
        dimension (the last reading holds, as a sampled sensor would report), and a gap at the start the first
        value that follows. A dimension with no value at all is still refused.

The NPZ layout (``numpy.savez``), for data that is not in ``.ts`` files::

    X          (N, T, F) float, or (N, T) for one feature; padded to T after each case's length
    lengths    (N,) int, optional: each case's length, 1..T (default: T for every case)
    y          (N,) str or int, optional for prediction: the class of each case
    classes    (K,) str or int, optional: the label set and its order (default: y's distinct values, sorted,
               numerically when they are all integers)

NaN inside a case's length is a missing value (the same policy); what follows the length is ignored. Object
arrays (pickles) are refused: ``np.load`` never runs code from the file.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from .series import Normalizer
from .text import DataError, check_file, read_text

MISSING_POLICIES = ("refuse", "fill")
SERIES_FORMATS = ("auto", "ts", "npz")
SPLITS = ("train", "valid", "test")
# The header tags of the .ts format (lower case) and the known ones the reader refuses.
_BOOL_TAGS = ("timestamps", "missing", "univariate", "equallength")
_INT_TAGS = ("dimension", "dimensions", "serieslength")
_TAGS = ("problemname", *_BOOL_TAGS, *_INT_TAGS, "classlabel", "targetlabel", "data")
_TAG_NAMES = "@problemName, @timeStamps, @missing, @univariate, @dimensions, @equalLength, @seriesLength, " \
             "@classLabel, @data"
_MISSING = {"?", "nan", "+nan", "-nan"}


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def _short(s: str, n: int = 30) -> str:
    return repr(s if len(s) <= n else s[:n] + "...")


@dataclass
class LabeledSeries:
    """Cases as read: ``values`` (one (T_i, F) float64 array each, every value finite), ``labels`` (the class of
    each as text, or None when the file has none), ``label_set`` (the file's labels in their order: @classLabel,
    or NPZ ``classes``; None when the file names none), ``where`` (each case's place for messages: "line 17",
    "case 3"), ``filled`` (how many missing values the ``fill`` policy filled)."""

    path: str
    values: list[np.ndarray]
    labels: list[str | None]
    label_set: list[str] | None
    where: list[str]
    format: str
    problem: str | None = None
    filled: int = 0
    header: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.values)

    @property
    def n_features(self) -> int:
        return int(self.values[0].shape[1])

    @property
    def lengths(self) -> list[int]:
        return [int(v.shape[0]) for v in self.values]

    @property
    def labelled(self) -> bool:
        return all(label is not None for label in self.labels)

    def label_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for label in self.labels:
            if label is not None:
                counts[label] = counts.get(label, 0) + 1
        return counts

    def describe(self) -> str:
        """``270 cases, 12 features, lengths 7-29`` (and the filled values)."""
        lo, hi = min(self.lengths), max(self.lengths)
        span = f"length {lo}" if lo == hi else f"lengths {lo}-{hi}"
        filled = f", {_plural(self.filled, 'missing value')} filled" if self.filled else ""
        return f"{_plural(len(self), 'case')}, {_plural(self.n_features, 'feature')}, {span}{filled}"


def _check_missing(missing: str) -> str:
    if missing not in MISSING_POLICIES:
        raise ValueError(f"missing must be one of {', '.join(MISSING_POLICIES)}; got {missing!r}")
    return missing


def _fill(case: np.ndarray, path: str, where: str) -> tuple[np.ndarray, int]:
    """The ``fill`` policy on one case (T, F) holding NaN: (the filled case, how many values were filled)."""
    gap = np.isnan(case)
    keep = len(case)
    while keep > 0 and gap[keep - 1].all():  # trailing steps missing in every dimension: padding
        keep -= 1
    if keep == 0:
        raise DataError(f"{path}: {where}: every value of the case is missing; nothing to fill from. Remove the case")
    case, gap = case[:keep].copy(), gap[:keep]
    for d in range(case.shape[1]):
        col, miss = case[:, d], gap[:, d]
        if not miss.any():
            continue
        if miss.all():
            raise DataError(f"{path}: {where}: every value of dimension {d + 1} is missing; nothing to fill from. "
                            "Remove the case or the dimension")
        idx = np.where(~miss, np.arange(len(col)), 0)
        np.maximum.accumulate(idx, out=idx)  # the last observed step at or before each step
        first = int(np.argmax(~miss))
        idx[:first] = first  # a gap at the start: the first value that follows
        case[:, d] = col[idx]
    return case, int(gap.sum())


def _missing_error(path: str, where: str, dim: int, pos: int, cell: str) -> DataError:
    return DataError(f"{path}: {where}, dimension {dim}, value {pos}: a missing value ({cell!r}); rnnlab does not "
                     "fill gaps unless told to. Pass --missing fill (the previous value of the dimension; trailing "
                     "gaps end the case) or remove the case")


# -- the .ts format ------------------------------------------------------------------------------------------------
def _bool(path: str, line: int, tag: str, value: str) -> bool:
    v = value.strip().lower()
    if v not in ("true", "false"):
        raise DataError(f"{path}: line {line}: @{tag} {_short(value)}: must be true or false")
    return v == "true"


def _positive(path: str, line: int, tag: str, value: str) -> int:
    v = value.strip()
    if not v.isdigit() or int(v) < 1:
        raise DataError(f"{path}: line {line}: @{tag} {_short(value)}: must be a whole number >= 1")
    return int(v)


def _parse_header(path: str, lines: list[str]) -> tuple[dict, int]:
    """(the header tags, the index of the first line after @data)."""
    header: dict = {}
    seen: dict[str, int] = {}
    for i, raw in enumerate(lines):
        n, s = i + 1, raw.strip()
        if not s or s.startswith("#"):
            continue
        if not s.startswith("@"):
            raise DataError(f"{path}: line {n}: a case ({_short(s)}) with no @data line above it; a .ts file lists "
                            f"its header lines ({_TAG_NAMES}), then a line '@data', then one case per line"
                            + (" (is this a .ts file? labelled text is read by 'rnnlab train classify')"
                               if not seen else ""))
        parts = s[1:].split(None, 1)
        tag, value = (parts[0] if parts else ""), (parts[1] if len(parts) > 1 else "")
        key = tag.lower()
        if key not in _TAGS:
            raise DataError(f"{path}: line {n}: unknown header line {_short('@' + tag)}; the .ts header lines are "
                            f"{_TAG_NAMES} (check the spelling)")
        if key == "dimension":
            key = "dimensions"
        if key in seen:
            raise DataError(f"{path}: line {n}: a second @{tag} line (the first is line {seen[key]}); give each "
                            "header line once")
        seen[key] = n
        if key == "data":
            if value.strip():
                raise DataError(f"{path}: line {n}: text after @data ({_short(value.strip())}); the cases start on "
                                "the next line")
            header["data_line"] = n
            return header, i + 1
        if key in _BOOL_TAGS:
            header[key] = _bool(path, n, tag, value)
        elif key in ("dimensions", "serieslength"):
            header[key] = _positive(path, n, tag, value)
        elif key == "problemname":
            header[key] = value.strip()
        elif key == "targetlabel":
            if _bool(path, n, tag, value.split()[0] if value.split() else value):
                raise DataError(f"{path}: line {n}: @targetLabel true: the cases end in a numeric regression target, "
                                "not a class; rnnlab classifies (a file with '@classLabel true LABELS ...')")
        else:  # classlabel
            words = value.split()
            if not words:
                raise DataError(f"{path}: line {n}: @classLabel without true or false; write '@classLabel true "
                                "LABEL1 LABEL2 ...' (or '@classLabel false' for unlabelled cases)")
            on = _bool(path, n, tag, words[0])
            labels = words[1:]
            if on and not labels:
                raise DataError(f"{path}: line {n}: @classLabel true without labels; list them after it: "
                                "'@classLabel true LABEL1 LABEL2 ...'")
            if not on and labels:
                raise DataError(f"{path}: line {n}: @classLabel false followed by labels ({' '.join(labels[:5])}); "
                                "write 'true' when the cases end in a class label")
            dup = next((lab for k, lab in enumerate(labels) if lab in labels[:k]), None)
            if dup is not None:
                raise DataError(f"{path}: line {n}: @classLabel lists {dup!r} twice; list each class once")
            header["classlabel"] = labels if on else None
            header["classlabel_line"] = n
    raise DataError(f"{path}: no @data line; a .ts file lists its header lines ({_TAG_NAMES}), then a line "
                    "'@data', then one case per line" + ("" if seen else " (is this a .ts file?)"))


def _parse_values(path: str, where: str, dim: int, text: str) -> np.ndarray:
    """One dimension's comma-separated values; NaN for a missing one."""
    cells = text.split(",")
    try:
        out = np.array([float(c) for c in cells], dtype=np.float64)
    except ValueError:
        out = None
    if out is not None and np.isfinite(out).all():
        return out
    out = np.empty(len(cells), dtype=np.float64)
    for k, raw in enumerate(cells, start=1):
        c = raw.strip()
        if c.lower() in _MISSING:
            out[k - 1] = math.nan
            continue
        if not c:
            what = "an empty dimension" if len(cells) == 1 else "an empty value (two commas in a row, or a comma at " \
                                                                "an end)"
            raise DataError(f"{path}: {where}, dimension {dim}, value {k}: {what}; every dimension is numbers "
                            "separated by commas ('?' for a missing value)")
        if c.startswith("(") or c.endswith(")"):
            raise DataError(f"{path}: {where}, dimension {dim}: {_short(c)} looks like a time-stamped value; rnnlab "
                            "reads plain values only (@timeStamps false): drop the time stamps")
        try:
            value = float(c)
        except ValueError:
            raise DataError(f"{path}: {where}, dimension {dim}, value {k}: {_short(c)} is not a number; fix the "
                            "value ('?' marks a missing one)") from None
        if not math.isfinite(value):
            raise DataError(f"{path}: {where}, dimension {dim}, value {k}: {_short(c)} is not a finite number; fix "
                            "the value")
        out[k - 1] = value
    return out


def parse_ts(text: str, path: str, *, missing: str = "refuse", require_labels: bool = True) -> LabeledSeries:
    """The cases of a ``.ts`` file's text (``path`` names it in messages). ``require_labels``: the file must have
    class labels (``@classLabel true ...``; training); without it an unlabelled file (``@classLabel false``, or
    none) gives cases whose labels are None. Any problem is a ``DataError`` naming the file and the line."""
    _check_missing(missing)
    if text.startswith("\ufeff"):
        text = text[1:]
    # Lines end at \n (and \r\n), so the numbers are the file's even with form feeds or other separators inside.
    lines = [line.rstrip("\r") for line in text.split("\n")]
    header, start = _parse_header(path, lines)
    if header.get("timestamps"):
        raise DataError(f"{path}: @timeStamps true: the values carry time stamps '(t,v)'; rnnlab reads equally spaced "
                        "values only: write the file without time stamps (@timeStamps false)")
    labels_set = header.get("classlabel")
    if labels_set is None and require_labels:
        why = "@classLabel false" if "classlabel" in header else "no @classLabel line"
        raise DataError(f"{path}: {why}: the cases have no class labels; a classifier trains on labelled cases: "
                        "add '@classLabel true LABEL1 LABEL2 ...' and end each case with its label")
    want_dims = header.get("dimensions")
    if header.get("univariate") and want_dims not in (None, 1):
        raise DataError(f"{path}: @univariate true with @dimensions {want_dims}; a univariate file has one "
                        "dimension: fix one of the two lines")
    dims_rule = f"@dimensions says {want_dims}" if want_dims else None  # completes "N dimensions where ..."
    if header.get("univariate"):
        want_dims, dims_rule = 1, "@univariate true says 1"
    equal = header.get("equallength")
    want_len = header.get("serieslength") if equal is not False else None
    len_rule = f"@seriesLength says {want_len}" if want_len else None  # completes "N values per dimension where ..."

    values, labels, where = [], [], []
    filled = 0
    for i in range(start, len(lines)):
        n, s = i + 1, lines[i].strip()
        if not s or s.startswith("#"):
            continue
        at = f"line {n}"
        if s.startswith("@"):
            raise DataError(f"{path}: {at}: a header line ({_short(s)}) after @data (line {header['data_line']}); "
                            "move it above @data")
        fields = s.split(":")
        label = None
        if labels_set is not None:
            if len(fields) < 2:
                raise DataError(f"{path}: {at}: no ':' before a class label; a case is DIM1:DIM2:...:LABEL "
                                f"(@classLabel true, line {header['classlabel_line']})")
            label = fields.pop().strip()
            shown = ", ".join(labels_set[:12]) + (", ..." if len(labels_set) > 12 else "")
            if label not in labels_set and ("," in label or len(fields) + 1 == want_dims):
                raise DataError(f"{path}: {at}: no class label after the last dimension ({_short(label)} is values, "
                                f"not a label); end the case with ':LABEL', one of {shown}")
            if label not in labels_set:
                what = "an empty class label" if not label else f"the class label {_short(label)}"
                raise DataError(f"{path}: {at}: {what} is not in @classLabel ({shown}); fix the label or add it to "
                                "the @classLabel line")
        if want_dims is not None and len(fields) != want_dims:
            label_hint = " and end the case with its class label" if labels_set is not None else ""
            raise DataError(f"{path}: {at}: {_plural(len(fields), 'dimension')} where {dims_rule}; separate "
                            f"dimensions with ':'{label_hint}")
        if want_dims is None:
            want_dims, dims_rule = len(fields), f"line {n} has {len(fields)}"
        dims = [_parse_values(path, at, d, f) for d, f in enumerate(fields, start=1)]
        T = len(dims[0])
        for d, v in enumerate(dims[1:], start=2):
            if len(v) != T:
                raise DataError(f"{path}: {at}: dimension {d} has {_plural(len(v), 'value')} where dimension 1 has "
                                f"{T}; every dimension of a case needs the same length")
        if equal:  # the length as written: padding that 'fill' trims still counts here
            if want_len is None:
                want_len, len_rule = T, f"line {n} has {T} (@equalLength true)"
            elif T != want_len:
                raise DataError(f"{path}: {at}: {_plural(T, 'value')} per dimension where {len_rule}; fix the "
                                "case, or write @equalLength false")
        case = np.stack(dims, 1)  # (T, F)
        if np.isnan(case).any():
            if missing == "refuse":
                d, k = next((d, int(np.argmax(np.isnan(v)))) for d, v in enumerate(dims) if np.isnan(v).any())
                raise _missing_error(path, at, d + 1, k + 1, fields[d].split(",")[k].strip())
            case, k = _fill(case, path, at)
            filled += k
        values.append(case)
        labels.append(label)
        where.append(at)
    if not values:
        raise DataError(f"{path}: no cases after @data (line {header['data_line']}); write one case per line: "
                        "DIM1:DIM2:...:LABEL")
    return LabeledSeries(path, values, labels, labels_set, where, "ts", header.get("problemname"), filled,
                         {k: v for k, v in header.items() if not k.endswith("_line")})


def read_ts(path: str | Path, *, missing: str = "refuse", require_labels: bool = True) -> LabeledSeries:
    """``parse_ts`` of a file (strict UTF-8; a missing, empty or undecodable file is a DataError too)."""
    text = read_text(path, ".ts file", "a .ts file needs a header, '@data' and one case per line")
    return parse_ts(text, str(path), missing=missing, require_labels=require_labels)


# -- the NPZ layout ------------------------------------------------------------------------------------------------
def _label_text(v) -> str:
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return str(int(v))
    return str(v)


def _sort_labels(labels) -> list[str]:
    try:
        return sorted(labels, key=lambda s: (0, int(s), s))
    except ValueError:
        return sorted(labels)


def read_npz(path: str | Path, *, missing: str = "refuse", require_labels: bool = True) -> LabeledSeries:
    """The cases of an NPZ file in the layout of the module docstring; a DataError naming the file, the array and
    the case for anything else."""
    _check_missing(missing)
    p = check_file(path, ".npz file")
    name = str(path)
    raw = p.read_bytes()
    if not raw.startswith(b"PK\x03\x04"):
        raise DataError(f"{name}: not an .npz file (numpy.savez writes a zip of .npy arrays; this file does not "
                        "start like a zip); save X, y (and lengths, classes) with numpy.savez, or give a .ts file")
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as z:  # from memory: a failed load leaves no file open
            arrays = {k: z[k] for k in z.files}
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise DataError(f"{name}: holds an object array (a pickle), which rnnlab does not load; save X, lengths, "
                            "y and classes as plain numeric or string arrays (numpy.savez)") from None
        raise DataError(f"{name}: not a readable .npz file ({' '.join(str(exc).split())[:80]}); write it with "
                        "numpy.savez(X=..., y=...)") from None
    except Exception as exc:  # noqa: BLE001 - a damaged zip fails in many ways (BadZipFile, EOFError, zlib.error ...)
        raise DataError(f"{name}: not a readable .npz file ({type(exc).__name__}: "
                        f"{' '.join(str(exc).split())[:60]}); write it with numpy.savez(X=..., y=...)") from None
    if "X" not in arrays:
        got = ", ".join(sorted(arrays)) or "none"
        raise DataError(f"{name}: no array 'X' (arrays: {got}); an .npz of series holds X (N, T, F), and y, lengths, "
                        "classes as needed")
    X = arrays["X"]
    if X.dtype.kind not in "fiu" or X.ndim not in (2, 3) or X.shape[0] < 1 or X.shape[1] < 1 or \
            (X.ndim == 3 and X.shape[2] < 1):
        raise DataError(f"{name}: X is {X.dtype} of shape {X.shape}; it must be numbers of shape (N, T, F), or (N, T) "
                        "for one feature, with N, T, F >= 1")
    X = X.astype(np.float64)
    if X.ndim == 2:
        X = X[:, :, None]
    N, T, F = X.shape
    lengths = arrays.get("lengths")
    if lengths is None:
        lengths = np.full(N, T)
    elif lengths.shape != (N,) or lengths.dtype.kind not in "iu" or (lengths < 1).any() or (lengths > T).any():
        raise DataError(f"{name}: lengths is {lengths.dtype} of shape {lengths.shape}; it must be ({N},) whole "
                        f"numbers from 1 to T = {T}, one per case of X")
    label_set = None
    if "classes" in arrays:
        c = arrays["classes"]
        if c.ndim != 1 or c.dtype.kind not in "iuUf" or len(c) < 1:
            raise DataError(f"{name}: classes is {c.dtype} of shape {c.shape}; it must be a list of labels (K,) of "
                            "text or whole numbers")
        label_set = [_label_text(v) for v in c.tolist()]
        dup = next((lab for k, lab in enumerate(label_set) if lab in label_set[:k]), None)
        if dup is not None:
            raise DataError(f"{name}: classes lists {dup!r} twice; list each class once")
    labels: list[str | None] = [None] * N
    if "y" in arrays:
        y = arrays["y"]
        if y.shape != (N,) or y.dtype.kind not in "iuUf":
            raise DataError(f"{name}: y is {y.dtype} of shape {y.shape}; it must be ({N},) labels (text or whole "
                            "numbers), one per case of X")
        labels = [_label_text(v) for v in y.tolist()]
        empty = next((k for k, lab in enumerate(labels) if not lab.strip()), None)
        if empty is not None:
            raise DataError(f"{name}: case {empty + 1}: an empty label in y; give every case its class")
        if label_set is None:
            label_set = _sort_labels(set(labels))
        else:
            bad = next((k for k, lab in enumerate(labels) if lab not in label_set), None)
            if bad is not None:
                raise DataError(f"{name}: case {bad + 1}: the label {_short(labels[bad])} is not in classes "
                                f"({', '.join(label_set[:12])}); fix y or add it to classes")
    elif require_labels:
        raise DataError(f"{name}: no array 'y': the cases have no class labels; a classifier trains on labelled "
                        "cases: save y (N,) with the class of each")
    values, where, filled = [], [], 0
    for k in range(N):
        case, at = X[k, :int(lengths[k])], f"case {k + 1}"
        if not np.isfinite(case).all():
            if np.isinf(case).any():
                t, d = np.argwhere(np.isinf(case))[0]
                raise DataError(f"{name}: {at}, dimension {d + 1}, value {t + 1}: {case[t, d]} is not a finite "
                                "number; fix the value")
            if missing == "refuse":
                t, d = np.argwhere(np.isnan(case))[0]
                raise _missing_error(name, at, int(d) + 1, int(t) + 1, "nan")
            case, n_filled = _fill(case, name, at)
            filled += n_filled
        values.append(np.ascontiguousarray(case))
        where.append(at)
    return LabeledSeries(name, values, labels, label_set, where, "npz", None, filled)


def detect_series_format(path: str | Path) -> str:
    """``npz`` for a *.npz name or a zip file, else ``ts``."""
    p = Path(path)
    if p.suffix.lower() == ".npz":
        return "npz"
    try:
        with open(p, "rb") as f:
            return "npz" if f.read(4) == b"PK\x03\x04" else "ts"
    except OSError:
        return "ts"  # the reader names the problem


def read_labeled_series(path: str | Path, fmt: str = "auto", *, missing: str = "refuse",
                        require_labels: bool = True) -> LabeledSeries:
    """``read_ts`` or ``read_npz`` (``fmt``: ts, npz, or auto: ``detect_series_format``)."""
    if fmt not in SERIES_FORMATS:
        raise ValueError(f"fmt must be one of {', '.join(SERIES_FORMATS)}; got {fmt!r}")
    fmt = detect_series_format(path) if fmt == "auto" else fmt
    read = read_npz if fmt == "npz" else read_ts
    return read(path, missing=missing, require_labels=require_labels)


# -- splitting, normalising, batching ------------------------------------------------------------------------------
def stratified_split(label_ids: Sequence[int], fraction: float, seed: int = 0) -> tuple[list[int], list[int]]:
    """(training indices, validation indices), both sorted: about ``fraction`` of each class's cases, drawn by a
    generator of (seed) alone, go to validation — at least one of a class with two or more cases, never its last
    one, so every class keeps a training case."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction < 1:
        raise ValueError(f"fraction must be a number in [0, 1); got {fraction!r}")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 7919]))
    valid: list[int] = []
    for c in sorted(set(label_ids)):
        idx = [i for i, y in enumerate(label_ids) if y == c]
        if fraction == 0 or len(idx) < 2:
            continue
        k = min(max(1, round(len(idx) * fraction)), len(idx) - 1)
        valid += [idx[j] for j in rng.permutation(len(idx))[:k]]
    held = set(valid)
    return [i for i in range(len(label_ids)) if i not in held], sorted(valid)


def feature_names(n: int) -> list[str]:
    """The names the normaliser stores the features under: dim1 ... dimF (the .ts dimensions, in order)."""
    return [f"dim{d + 1}" for d in range(n)]


def fit_normalizer(cases: Sequence[np.ndarray]) -> Normalizer:
    """Each feature's mean and std over every step of ``cases`` (the training cases only; a constant feature is
    only shifted)."""
    return Normalizer.fit(np.concatenate(list(cases), 0), feature_names(cases[0].shape[1]))


def label_ids(data: LabeledSeries, labels: list[str], role: str = "training") -> list[int]:
    """The class id of each case of ``data`` (its index in ``labels``, the model's label list); a DataError at the
    first case whose label is not one of them."""
    index = {lab: k for k, lab in enumerate(labels)}
    out = []
    for lab, at in zip(data.labels, data.where):
        if lab not in index:
            raise DataError(f"{data.path}: {at}: the class label {_short(str(lab))} is not one of the {role} labels "
                            f"({', '.join(labels[:12])}{', ...' if len(labels) > 12 else ''}); the model cannot "
                            "predict it: remove the case, or retrain with examples of it")
        out.append(index[lab])
    return out


@dataclass
class Case:
    x: torch.Tensor  # (T, F) float32, normalised
    label: int  # the class id; -1 when unknown


def make_cases(data: LabeledSeries, normalizer: Normalizer, ids: Sequence[int] | None,
               index: Sequence[int] | None = None) -> list[Case]:
    """The cases ``index`` (all by default) of ``data``, normalised with ``normalizer``, with class ``ids``."""
    names = feature_names(data.n_features)
    index = range(len(data)) if index is None else index
    return [Case(torch.from_numpy(normalizer.apply(data.values[i], names)).float(),
                 -1 if ids is None else int(ids[i])) for i in index]


def collate_cases(cases: Sequence[Case]):
    """``(x (B, T, F) float32 zero-padded, lengths (B,) int64, y (B,) int64)``."""
    T = max(len(c.x) for c in cases)
    x = torch.zeros(len(cases), T, cases[0].x.shape[1])  # (B, T, F)
    for b, c in enumerate(cases):
        x[b, :len(c.x)] = c.x
    lengths = torch.tensor([len(c.x) for c in cases], dtype=torch.long)  # (B,)
    y = torch.tensor([c.label for c in cases], dtype=torch.long)  # (B,)
    return x, lengths, y


class CaseBatches:
    """Batches of ``batch_size`` cases. With ``shuffle`` every epoch has its own order, the same for the same
    (seed, epoch), so ``batches(epoch, start)`` resumes exactly with no RNG state to store; without it the cases
    come in the file's order (evaluation, prediction). The trainer's data protocol."""

    def __init__(self, cases: list[Case], batch_size: int, *, shuffle: bool = False, seed: int = 0,
                 name: str = "data") -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1 (cases per batch); got {batch_size!r}")
        if not cases:
            raise ValueError(f"{name}: no cases to batch")
        self.cases, self.batch_size, self.shuffle, self.seed, self.name = list(cases), batch_size, shuffle, seed, name

    def __len__(self) -> int:
        return self.num_batches(0)

    def num_batches(self, epoch: int = 0) -> int:
        return -(-len(self.cases) // self.batch_size)

    def order(self, epoch: int = 0) -> list[list[int]]:
        """The case indices of each batch of ``epoch``."""
        idx = np.arange(len(self.cases))
        if self.shuffle:
            idx = np.random.default_rng(np.random.SeedSequence([self.seed, epoch])).permutation(len(self.cases))
        return [idx[k:k + self.batch_size].tolist() for k in range(0, len(idx), self.batch_size)]

    def batches(self, epoch: int = 0, start: int = 0) -> Iterator:
        for index in self.order(epoch)[start:]:
            yield collate_cases([self.cases[i] for i in index])

    def __iter__(self):
        return self.batches(0)


class SeriesClassData:
    """A training file (and optional validation and test files) ready to train on.

    ``labels``: the training file's label set in its order (@classLabel; the class ids). Validation: the ``valid``
    file when given, else a stratified ``valid_fraction`` of the training cases (``stratified_split`` with
    ``seed``; 0 = none). Normalisation: each feature's mean and std over every step of the cases trained on — not
    the held-out validation cases, not the validation or test files (``normalizer``: pass a stored one to reuse
    it). The test file is only read for the final report."""

    def __init__(self, train: LabeledSeries, valid: LabeledSeries | None = None, test: LabeledSeries | None = None,
                 *, valid_fraction: float = 0.2, seed: int = 0, normalizer: Normalizer | None = None) -> None:
        self.labels = list(train.label_set) if train.label_set else _sort_labels(set(train.labels))
        ids = label_ids(train, self.labels)
        counts = train.label_counts()
        if len(counts) < 2:
            raise DataError(f"{train.path}: only 1 distinct label among the cases ({next(iter(counts))!r}); a "
                            "classifier needs cases of at least two classes")
        F = train.n_features
        for other in (valid, test):
            if other is not None and other.n_features != F:
                raise DataError(f"{other.path}: {_plural(other.n_features, 'dimension')} per case where the training "
                                f"file {train.path} has {F}; give files of the same data set")
        self.files = {"train": train, "valid": valid, "test": test}
        if valid is None and valid_fraction:
            self.train_index, self.valid_index = stratified_split(ids, valid_fraction, seed)
        else:
            self.train_index, self.valid_index = list(range(len(train))), []
        self.valid_fraction = 0.0 if valid is not None else float(valid_fraction)
        self.ids = {"train": ids}
        for split, other in (("valid", valid), ("test", test)):
            if other is not None:
                self.ids[split] = label_ids(other, self.labels)
        if normalizer is None:
            normalizer = fit_normalizer([train.values[i] for i in self.train_index])
        elif normalizer.names != feature_names(F):
            raise ValueError(f"the normalizer has features {normalizer.names}; the data has {F}")
        self.normalizer = normalizer
        self.n_features = F

    def cases(self, split: str) -> list[Case] | None:
        """The normalised cases of ``split`` (None when there are none)."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
        if split == "valid" and self.files["valid"] is None:
            if not self.valid_index:
                return None
            return make_cases(self.files["train"], self.normalizer, self.ids["train"], self.valid_index)
        if split == "train":
            return make_cases(self.files["train"], self.normalizer, self.ids["train"], self.train_index)
        data = self.files[split]
        return None if data is None else make_cases(data, self.normalizer, self.ids[split])

    def batches(self, split: str, batch_size: int, *, shuffle: bool = False, seed: int = 0) -> CaseBatches | None:
        cases = self.cases(split)
        if cases is None:
            return None
        return CaseBatches(cases, batch_size, shuffle=shuffle, seed=seed, name=f"{self.files['train'].path} ({split})")

    def split_counts(self) -> dict[str, int]:
        n = {"train": len(self.train_index)}
        if self.files["valid"] is not None:
            n["valid"] = len(self.files["valid"])
        elif self.valid_index:
            n["valid"] = len(self.valid_index)
        if self.files["test"] is not None:
            n["test"] = len(self.files["test"])
        return n

    def to_json(self) -> dict:
        """What a checkpoint stores to read new files the same way: the labels, the feature count, the
        normaliser, the held-out validation cases of the training file."""
        return {"labels": self.labels, "features": self.n_features, "normalizer": self.normalizer.to_json(),
                "valid_fraction": self.valid_fraction, "valid_cases": [i + 1 for i in self.valid_index],
                "max_length": max(self.files["train"].lengths)}


__all__ = ["MISSING_POLICIES", "SERIES_FORMATS", "Case", "CaseBatches", "LabeledSeries", "SeriesClassData",
           "collate_cases", "detect_series_format", "feature_names", "fit_normalizer", "label_ids", "make_cases",
           "parse_ts", "read_labeled_series", "read_npz", "read_ts", "stratified_split"]
