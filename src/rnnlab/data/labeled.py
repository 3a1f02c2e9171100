"""Labelled text for many-to-one classification: reading ``label / text`` files, tokenising, the word and label
vocabularies, and turning examples into ``(x, lengths, y)`` batches.

Formats (``format``), one example per line (CSV: per record):

    tsv     tab-separated fields: ``label<TAB>text`` or ``text<TAB>label`` (SentEval's SST-2 ``sentiment-*``:
            ``sentence \\t0``), or more columns picked by ``label_column`` / ``text_column``
    space   ``label text``, split at the first space (Kim 2014's ``stsa.binary.*``, fastText-like files); or
            ``text label``, split at the last space (``label_column="last"``)
    csv     comma-separated values with quoting, read with the ``csv`` module
    auto    csv for ``*.csv``, tsv for ``*.tsv`` or when the first line has a tab, else space

Columns: ``label_column`` / ``text_column`` are None (detect), ``"first"``, ``"last"``, a 0-based index, or a
header name (then the file must have a header line). Detection: the label column is the one whose values have no
spaces and repeat (few distinct values); the text column is the other one. When that is not clear-cut the
DataError says which option to give. ``header``: True, False or None (detect: the first line's cells are names
such as ``label`` / ``sentence``, or its label cell is a word where every other line has a number, or a value seen
nowhere else in a column of few values).

Tokens: whitespace-separated words (the SST files are already tokenised), lowercased with ``lowercase=True``.
Labels map to class ids in a stable order: numerically when every label is an integer (``0, 1, 2 ...``), else
alphabetically; the vocabulary (``TextVocab``) is saved in the checkpoint.

Data flows: file → ``read_labeled`` (a ``LabeledData``: examples with their line numbers, and the resolved
format) → ``TextVocab.build`` (training examples) → ``encode_labeled`` (ids) → ``rnnlab.train.tagging.
SentenceBatches(..., collate=collate_labeled)`` (length-bucketed batches ``(x, lengths, y)``, the batches
``ClassificationTask`` and ``evaluate_classification`` read).
"""
from __future__ import annotations

import csv
import io
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .conllu import PAD, UNK, SymbolVocab
from .text import DataError, read_text

FORMATS = ("auto", "tsv", "space", "csv")
IGNORE = -100  # the label id of an example without a label (text to classify)
# Header cells recognised by name (lowercased): the label column's, then the text column's.
LABEL_NAMES = ("label", "labels", "class", "category", "sentiment", "polarity", "target", "y", "gold_label")
TEXT_NAMES = ("text", "sentence", "sentence1", "review", "content", "document", "comment", "tweet", "body", "title",
              "question", "utterance", "x")
_INT = re.compile(r"[+-]?\d+$")
_FORMAT_HINT = {
    "tsv": "each line needs 'label<TAB>text' (or 'text<TAB>label')",
    "space": "each line needs 'label text' (the label, a space, the text; --label-column last for 'text label')",
    "csv": "each record needs a label field and a text field",
}


@dataclass
class LabeledExample:
    """One example as read: the text as in the file (stripped), its label (None: text to classify) and the
    1-based line number it came from."""

    text: str
    label: str | None
    line: int


@dataclass
class LabeledData:
    """The examples of one file, its name and how it was read: ``spec`` holds the resolved ``format``,
    ``header`` (bool), ``label_column`` and ``text_column`` (0-based; for ``space`` 0 = the first word, 1 = the
    last) and the header's column ``names`` (or None)."""

    name: str
    examples: list[LabeledExample]
    spec: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def labels(self) -> list[str | None]:
        return [e.label for e in self.examples]

    def label_counts(self) -> Counter:
        return Counter(e.label for e in self.examples if e.label is not None)


# -- reading -------------------------------------------------------------------------------------------------------
def read_file_text(path: str | Path, what: str = "labelled text file") -> str:
    """The file's text as strict UTF-8; a DataError naming the file (and the line of bad UTF-8) otherwise."""
    return read_text(path, what, "a classifier needs examples, one per line")


def _short(s: str, n: int = 40) -> str:
    return repr(s if len(s) <= n else s[:n] + "...")


def detect_format(text: str, name: str) -> str:
    """The format ``auto`` picks for ``text`` read from a file called ``name``."""
    suffix = Path(name).suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix == ".tsv":
        return "tsv"
    first = next((line for line in text.split("\n") if line.strip()), "")
    return "tsv" if "\t" in first else "space"


def _rows(text: str, name: str, fmt: str) -> list[tuple[int, list[str]]]:
    """(line number, fields) of each non-blank line (record); ``space`` lines stay one field here."""
    rows = []
    if fmt == "csv":
        reader = csv.reader(io.StringIO(text, newline=""), strict=True)
        start = 1
        try:
            for record in reader:
                if any(cell.strip() for cell in record):
                    rows.append((start, record))
                start = reader.line_num + 1
        except csv.Error as exc:
            raise DataError(f"{name}: line {reader.line_num}: not valid CSV ({exc}); quote fields that hold commas "
                            "or quotes, or pass --format tsv for tab-separated lines") from None
        return rows
    for i, raw in enumerate(text.split("\n"), start=1):
        line = raw.rstrip("\r")
        if not line.strip():
            continue
        if fmt == "tsv":
            if "\t" not in line:
                raise DataError(f"{name}: line {i}: {_short(line)} has no tab; {_FORMAT_HINT['tsv']}. For 'label "
                                "text' lines (label, space, text) pass --format space")
            rows.append((i, line.split("\t")))
        else:
            rows.append((i, [line]))
    return rows


def _split_space(rows, label_last: bool, name: str) -> list[tuple[int, list[str]]]:
    out = []
    for i, (line, cells) in enumerate(rows):
        parts = cells[0].strip().rsplit(None, 1) if label_last else cells[0].strip().split(None, 1)
        if len(parts) < 2:
            raise DataError(f"{name}: line {line}: {_short(cells[0].strip())} is one word: a label or a text is "
                            f"missing; {_FORMAT_HINT['space']}")
        out.append((line, parts))
    return out


def _column_index(value, n_cols: int, names: list[str] | None, what: str, name: str) -> int:
    """A column given as first/last, a 0-based index, or a header name → its index."""
    if isinstance(value, int) and not isinstance(value, bool):
        idx = value
    elif value == "first":
        idx = 0
    elif value == "last":
        idx = n_cols - 1
    elif isinstance(value, str) and _INT.match(value.strip()):
        idx = int(value)
    else:
        if names is None:
            raise DataError(f"{name}: {what} {value!r} is a column name but the file has no header line; give a "
                            "0-based column index, first or last")
        low = [n.strip().lower() for n in names]
        if value.strip().lower() not in low:
            raise DataError(f"{name}: {what} {value!r} is not a column of the header (columns: "
                            f"{', '.join(n.strip() for n in names)}); give one of them or a 0-based index")
        idx = low.index(value.strip().lower())
    if not -n_cols <= idx < n_cols:
        raise DataError(f"{name}: {what} {value!r} is out of range: the file has {n_cols} columns (0-based "
                        f"indices 0 to {n_cols - 1})")
    return idx % n_cols


def _is_name(value) -> bool:
    return isinstance(value, str) and value not in ("first", "last") and not _INT.match(value.strip())


def _label_like(values: list[str]) -> tuple[bool, int]:
    """(no value has a space and the values repeat, number of distinct values)."""
    distinct = len(set(values))
    return (not any(any(c.isspace() for c in v) for v in values) and distinct <= max(2, len(values) // 2)), distinct


def _detect_label(columns: list[list[str]]) -> int | None:
    """The label column among ``columns`` (each a list of stripped values), or None when not clear-cut."""
    stats = [_label_like(col) for col in columns]
    cands = sorted((distinct, c) for c, (like, distinct) in enumerate(stats) if like)
    if len(cands) == 1:
        return cands[0][1]
    if len(cands) > 1 and cands[0][0] * 2 <= cands[1][0]:
        return cands[0][1]  # clearly fewer distinct values than any other candidate
    return None


def _header_by_names(cells: list[str]) -> bool:
    low = [c.strip().lower() for c in cells]
    return any(c in LABEL_NAMES for c in low) and (len(cells) == 1 or any(c in TEXT_NAMES for c in low)) \
        or sum(c in LABEL_NAMES + TEXT_NAMES for c in low) >= 2


def _header_by_values(first_label: str, first_text: str, labels: list[str]) -> bool:
    """Is the first row a header, judged by its label cell against the other rows' labels?"""
    if not labels:
        return False
    if all(_INT.match(v) for v in labels):
        return not _INT.match(first_label)  # 'label' over 0/1
    return (len(labels) >= 4 and first_label not in labels and len(set(labels)) <= len(labels) // 2
            and not any(c.isspace() for c in first_text))


def parse_labeled(text: str, name: str = "<string>", *, format: str = "auto", label_column=None,
                  text_column=None, header: bool | None = None, require_labels: bool = True) -> LabeledData:
    """The examples of labelled ``text`` (``name`` is used in error messages); see the module docstring for the
    options. Every example needs a non-empty text and (``require_labels``) a non-empty label."""
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}; got {format!r}")
    fmt = detect_format(text, name) if format == "auto" else format
    rows = _rows(text, name, fmt)
    if not rows:
        raise DataError(f"{name}: no examples in the file; {_FORMAT_HINT[fmt]}")
    names = None
    if fmt == "space":
        if _is_name(label_column) or _is_name(text_column):
            raise DataError(f"{name}: --format space has no named columns; give --label-column first or last")
        if text_column is not None and label_column is None:
            label_column = "last" if str(text_column) in ("first", "0") else "first"
        if label_column is None:
            body = [c[0].split() for _, c in (rows[1:] if len(rows) > 1 else rows)]
            body = [words for words in body if len(words) > 1] or [["?", "?"]]  # one-word lines are errors below
            firsts, lasts = [words[0] for words in body], [words[-1] for words in body]
            side = _detect_label([firsts, lasts])
            if side is None:
                raise DataError(f"{name}: cannot tell whether the label is the first or the last word of each line "
                                "(neither holds a few repeated values); pass --label-column first or last, or "
                                "--format tsv / csv for a file with separate columns")
        else:
            side = _column_index(label_column, 2, None, "--label-column", name)
        rows = _split_space(rows, side == 1, name)
        label_idx, text_idx, n_cols = side, 1 - side, 2
    else:
        n_cols = len(rows[0][1])
        sep = "tab-separated" if fmt == "tsv" else "comma-separated"
        if n_cols < 2:
            raise DataError(f"{name}: line {rows[0][0]}: one {sep} field; {_FORMAT_HINT[fmt]}")
        for line, cells in rows:
            if len(cells) != n_cols:
                raise DataError(f"{name}: line {line}: {len(cells)} {sep} fields where line {rows[0][0]} has "
                                f"{n_cols}; {_FORMAT_HINT[fmt]}" + (" (a text with a tab in it? use --format csv "
                                                                   "with quoting)" if fmt == "tsv" else ""))
        named = _is_name(label_column) or _is_name(text_column)
        if named and header is False:
            raise DataError(f"{name}: a column given by name needs the header line; drop --no-header or give "
                            "0-based column indices")
        if header is None and (named or _header_by_names(rows[0][1])):
            header = True
        if header:
            names = [c.strip() for c in rows[0][1]]
        body = rows[1:] if (header or (header is None and len(rows) > 1)) else rows
        columns = [[cells[c].strip() for _, cells in body] for c in range(n_cols)]
        label_idx = text_idx = None
        if label_column is not None:
            label_idx = _column_index(label_column, n_cols, names, "--label-column", name)
        if text_column is not None:
            text_idx = _column_index(text_column, n_cols, names, "--text-column", name)
        if names is not None:  # a header: its names decide the columns not given
            low = [n.lower() for n in names]
            if label_idx is None:
                label_idx = next((low.index(n) for n in LABEL_NAMES if n in low and low.index(n) != text_idx), None)
            if text_idx is None:
                text_idx = next((low.index(n) for n in TEXT_NAMES if n in low and low.index(n) != label_idx), None)
        if label_idx is None and text_idx is not None and n_cols == 2:
            label_idx = 1 - text_idx
        if label_idx is None:
            label_idx = _detect_label([col if c != text_idx else ["x y"] for c, col in enumerate(columns)])
            if label_idx is None:
                raise DataError(f"{name}: cannot tell which of the {n_cols} columns holds the label (it should have "
                                "a few repeated values without spaces); pass --label-column (first, last, a 0-based "
                                "index" + (", or a header name" if fmt == "csv" else "") + ")")
        if text_idx is None:
            others = [c for c in range(n_cols) if c != label_idx]
            if len(others) == 1:
                text_idx = others[0]
            else:
                spaced = [c for c in others if any(any(ch.isspace() for ch in v) for v in columns[c])]
                if len(spaced) != 1:
                    raise DataError(f"{name}: cannot tell which of the {n_cols} columns holds the text; pass "
                                    "--text-column (first, last or a 0-based index" +
                                    (", or a header name" if fmt == "csv" else "") + ")")
                text_idx = spaced[0]
        if label_idx == text_idx:
            raise DataError(f"{name}: --label-column and --text-column name the same column ({label_idx}); give "
                            "two different columns")
        if header is None and len(rows) > 1:
            header = _header_by_values(rows[0][1][label_idx].strip(), rows[0][1][text_idx].strip(),
                                       columns[label_idx])
            if header:
                names = [c.strip() for c in rows[0][1]]
    if fmt == "space" and header is None and len(rows) > 1:
        header = _header_by_values(rows[0][1][label_idx].strip(), rows[0][1][text_idx].strip(),
                                   [cells[label_idx].strip() for _, cells in rows[1:]])
    if header:
        names = names or [c.strip() for c in rows[0][1]]
        rows = rows[1:]
        if not rows:
            raise DataError(f"{name}: only a header line, no examples; {_FORMAT_HINT[fmt]}")
    examples = []
    for line, cells in rows:
        label, txt = cells[label_idx].strip(), cells[text_idx].strip()
        if not txt:
            raise DataError(f"{name}: line {line}: the text is empty; every example needs a text (delete the line "
                            "or fill it in)")
        if not label and require_labels:
            raise DataError(f"{name}: line {line}: the label is missing; every training or evaluation example needs "
                            f"one ({_FORMAT_HINT[fmt]})")
        examples.append(LabeledExample(txt, label or None, line))
    spec = {"format": fmt, "header": bool(header), "label_column": label_idx, "text_column": text_idx,
            "names": names}
    return LabeledData(name, examples, spec)


def read_labeled(path: str | Path, **options) -> LabeledData:
    """``parse_labeled`` of a file (same options); a DataError naming the file when it is missing, empty or not
    UTF-8."""
    return parse_labeled(read_file_text(path), str(path), **options)


def parse_lines(text: str, name: str = "<string>") -> LabeledData:
    """Unlabelled text to classify: one text per non-blank line."""
    examples = [LabeledExample(line.strip(), None, i) for i, line in enumerate(text.split("\n"), start=1)
                if line.strip()]
    if not examples:
        raise DataError(f"{name}: no text in the file; give one text per line")
    return LabeledData(name, examples, {"format": "lines"})


def read_lines(path: str | Path) -> LabeledData:
    """``parse_lines`` of a file."""
    return parse_lines(read_file_text(path, "text file"), str(path))


# -- tokens and vocabularies ---------------------------------------------------------------------------------------
def tokenize(text: str, lowercase: bool = False) -> list[str]:
    """Whitespace-separated words, lowercased with ``lowercase``."""
    return (text.lower() if lowercase else text).split()


def sort_labels(labels) -> list[str]:
    """The class order: numerically when every label is an integer, else alphabetically."""
    labels = sorted(set(labels))
    if all(_INT.match(v) for v in labels):
        return sorted(labels, key=lambda v: (int(v), v))
    return labels


@dataclass
class TextVocab:
    """What a text classifier needs besides its weights: the words (``<pad>`` = 0, ``<unk>`` = 1, then the training
    words seen at least ``min_count`` times), the labels in class-id order, and the tokenisation (``lowercase``)."""

    words: SymbolVocab
    labels: list[str]
    lowercase: bool = False

    def __post_init__(self) -> None:
        self.label_ids = {s: i for i, s in enumerate(self.labels)}
        if len(self.label_ids) != len(self.labels):
            raise ValueError("the label list names a label twice; every class needs one label")

    @classmethod
    def build(cls, data: LabeledData, min_count: int = 1, lowercase: bool = False, keep=frozenset()) -> TextVocab:
        """The vocabulary of the training examples (``keep``: words kept even when seen fewer than ``min_count``
        times); a DataError when they have fewer than two labels."""
        counts = Counter(w for e in data.examples for w in tokenize(e.text, lowercase))
        labels = sort_labels(e.label for e in data.examples if e.label is not None)
        if len(labels) < 2:
            raise DataError(f"{data.name}: only {len(labels)} distinct label{'s' if len(labels) != 1 else ''} "
                            f"({', '.join(labels) or 'none'}); a classifier needs at least two classes. Is the "
                            "label column right? (--label-column)")
        return cls(SymbolVocab.build(counts, min_count, keep=keep), labels, lowercase)

    def __len__(self) -> int:
        return len(self.words)

    @property
    def pad_id(self) -> int:
        return self.words.pad_id

    def is_unknown(self, word: str) -> bool:
        return word not in self.words

    def encode_text(self, text: str) -> list[int]:
        return [self.words.id(w) for w in tokenize(text, self.lowercase)]

    def to_json(self) -> dict:
        return {"words": self.words.to_json(), "labels": list(self.labels), "lowercase": self.lowercase}

    @classmethod
    def from_json(cls, obj: dict) -> TextVocab:
        try:
            return cls(SymbolVocab.from_json(obj["words"]), list(obj["labels"]), bool(obj["lowercase"]))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a text-classification vocabulary (missing or bad field {exc})") from None


# -- ids and batches -----------------------------------------------------------------------------------------------
@dataclass
class EncodedText:
    """One example as ids (``words``: what ``SentenceBatches`` measures the length of)."""

    words: list[int]
    label: int  # class id; IGNORE for text to classify


def encode_labeled(data: LabeledData, vocab: TextVocab) -> list[EncodedText]:
    """The examples as ids; a DataError (file, line) for a label the training data did not have."""
    out = []
    for e in data.examples:
        if e.label is None:
            label = IGNORE
        elif e.label in vocab.label_ids:
            label = vocab.label_ids[e.label]
        else:
            raise DataError(f"{data.name}: line {e.line}: label {e.label!r} does not occur in the training data "
                            f"(its labels: {', '.join(vocab.labels)}); fix the label or the label column, or add "
                            "examples of it to the training file")
        out.append(EncodedText(vocab.encode_text(e.text), label))
    return out


def collate_labeled(examples: list[EncodedText], index: list[int], pad_id: int = 0):
    """``(x (B, T) int64 ids padded with pad_id, lengths (B,) int64, y (B,) int64 class ids)`` — the batch
    ``ClassificationTask`` reads. ``index`` (which examples these are) is not part of the batch."""
    T = max(len(e.words) for e in examples)
    x = torch.full((len(examples), T), pad_id, dtype=torch.long)  # (B, T)
    for b, e in enumerate(examples):
        x[b, :len(e.words)] = torch.tensor(e.words, dtype=torch.long)
    lengths = torch.tensor([len(e.words) for e in examples], dtype=torch.long)  # (B,)
    y = torch.tensor([e.label for e in examples], dtype=torch.long)  # (B,)
    return x, lengths, y


__all__ = ["FORMATS", "IGNORE", "EncodedText", "LabeledData", "LabeledExample", "TextVocab", "collate_labeled",
           "detect_format", "encode_labeled", "parse_labeled", "parse_lines", "read_file_text", "read_labeled",
           "read_lines", "sort_labels", "tokenize"]
