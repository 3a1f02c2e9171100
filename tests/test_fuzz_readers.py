"""Property tests (hypothesis) of every reader in ``rnnlab.data``: on arbitrary bytes or text — bounded in size,
biased towards each format's own separators so that the parsers get past their first line — a reader either
returns a well-formed result or raises ``DataError``; never another exception. Where a writer exists, what it
writes reads back the same (CoNLL-U tags, labelled lines, source<TAB>target pairs, IDX arrays).

Deterministic for CI: ``derandomize=True`` draws the same examples on every run; no deadline (a slow CI machine
must not fail a test for its speed)."""
from __future__ import annotations

import gzip
import math
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from rnnlab.data.conllu import (ConlluSentence, TaggingVocab, format_conllu, parse_conllu, parse_plain,
                                read_conllu_sentences, read_plain)
from rnnlab.data.labeled import (FORMATS, TextVocab, encode_labeled, parse_labeled, parse_lines, read_labeled,
                                 read_lines)
from rnnlab.data.mnist import IMAGE_MAGIC, LABEL_MAGIC, read_idx
from rnnlab.data.seq2seq import Seq2SeqVocab, encode_pairs, parse_pairs, read_pairs
from rnnlab.data.series import SeriesDataset, read_series
from rnnlab.data.text import DataError, Vocab, build_corpus, load_corpus, read_text
from rnnlab.data.uea import SeriesClassData, parse_ts, read_npz, read_ts

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

# Text that looks like the formats: their separators and specials are drawn often, plus any Unicode.
SEPARATORS = st.sampled_from(["\t", "\n", "\r\n", " ", ",", ";", '"', "_", "#", "-", ".", "0", "1", "12", "1-2",
                              "2.1", "\x00", "\ufeff", "é", "a", "label", "NA", "nan", "inf", "2024-01-02", ""])
FORMATISH = st.lists(st.one_of(SEPARATORS, st.text(max_size=6)), max_size=60).map("".join)
TEXT = st.one_of(st.text(max_size=300), FORMATISH)
RAW = st.one_of(st.binary(max_size=300), TEXT.map(lambda s: s.encode("utf-8")),
                st.binary(max_size=40).map(lambda b: b"\xef\xbb\xbf" + b))  # a BOM then anything


@pytest.fixture(scope="module")
def folder():
    with tempfile.TemporaryDirectory(prefix="rnnlab-fuzz-") as d:
        yield Path(d)


def _write(folder: Path, name: str, raw: bytes) -> Path:
    f = folder / name
    f.write_bytes(raw)
    return f


# -- text (language-model corpora) --------------------------------------------------------------------------------
@SETTINGS
@given(raw=RAW)
def test_read_text_returns_text_or_data_error(folder, raw):
    f = _write(folder, "corpus.txt", raw)
    try:
        text = read_text(f)
    except DataError as exc:
        assert str(f) in str(exc)
        return
    assert isinstance(text, str) and text.strip() and text.encode("utf-8") == raw


@SETTINGS
@given(train=TEXT, other=st.one_of(st.none(), TEXT), level=st.sampled_from(["char", "word"]),
       fraction=st.sampled_from([0.0, 0.1, 0.5]))
def test_build_corpus_returns_id_streams_or_data_error(train, other, level, fraction):
    try:
        corpus = build_corpus(train, other, other, level=level, valid_fraction=fraction)
    except DataError:
        return
    n = len(corpus.vocab)
    for split in (corpus.train, corpus.valid, corpus.test):
        if split is not None:
            assert split.dim() == 1 and (split.numel() == 0 or 0 <= int(split.min()) <= int(split.max()) < n)
    if level == "char":  # every character of the training part is a token of its own, in order
        assert corpus.vocab.decode(corpus.train.tolist()) in train


@SETTINGS
@given(raw=RAW, level=st.sampled_from(["char", "word"]))
def test_load_corpus_on_any_file(folder, raw, level):
    f = _write(folder, "train.txt", raw)
    try:
        corpus = load_corpus(f, level=level)
    except DataError as exc:
        assert str(f) in str(exc)
        return
    assert corpus.train.numel() >= 0 and len(corpus.vocab) >= 1


@SETTINGS
@given(raw=RAW, level=st.sampled_from(["char", "word"]), fraction=st.sampled_from([0.0, 0.1, 0.5]),
       chunk=st.sampled_from([1, 3, 7, 64]))
def test_token_cache_reads_any_file_as_load_corpus_does(folder, raw, level, fraction, chunk):
    """The cache tokenises the file in chunks of ``chunk`` bytes / characters: the same corpus, or the same error."""
    from rnnlab.data import token_cache

    f = _write(folder, "cached.txt", raw)
    try:
        want = load_corpus(f, level=level, valid_fraction=fraction)
    except DataError as exc:
        want = str(exc)
    saved, token_cache.CHUNK = token_cache.CHUNK, chunk
    try:
        got, _ = token_cache.cached_corpus(f, cache_dir=folder / "cache", level=level, valid_fraction=fraction,
                                           note=lambda note: None)
    except DataError as exc:
        got = str(exc)
    finally:
        token_cache.CHUNK = saved
    if isinstance(want, str) or isinstance(got, str):
        assert got == want
        return
    assert got.vocab.to_json() == want.vocab.to_json()
    for split in ("train", "valid", "test"):
        a, b = getattr(want, split), getattr(got, split)
        assert (a is None and b is None) or a.tolist() == b.tolist()


@SETTINGS
@given(text=TEXT)
def test_word_vocab_round_trips_its_own_text(text):
    vocab = Vocab.build(text, "word")
    ids = vocab.encode(text)
    assert vocab.encode(vocab.decode(ids)) == ids


# -- CoNLL-U ------------------------------------------------------------------------------------------------------
def _conllu_ok(sentences, require_tags: bool) -> None:
    assert sentences and all(isinstance(s, ConlluSentence) for s in sentences)
    for s in sentences:
        assert s.words and len(s.word_lines) == len(s.words)
        if require_tags:
            assert s.tags is not None and len(s.tags) == len(s.words) and all(t and t != "_" for t in s.tags)
        else:
            assert s.tags is None or len(s.tags) == len(s.words)


CONLLU_ROW = st.tuples(st.sampled_from(["1", "2", "3", "1-2", "2.1", "x", "0", ""]),
                       st.text(alphabet=st.characters(blacklist_characters="\t\n\r"), max_size=5),
                       st.sampled_from(["NOUN", "VERB", "_", "", "DET"]),
                       st.integers(7, 11)).map(
    lambda r: "\t".join([r[0], r[1] or "w", "_", r[2], "_"] + ["_"] * (r[3] - 5)))
CONLLU_TEXT = st.one_of(TEXT, st.lists(st.one_of(CONLLU_ROW, st.sampled_from(["", "# c", "\t", " "])),
                                       max_size=12).map("\n".join))


@SETTINGS
@given(text=CONLLU_TEXT, column=st.sampled_from(["upos", "xpos"]), require=st.booleans())
def test_parse_conllu_returns_sentences_or_data_error(text, column, require):
    try:
        sentences = parse_conllu(text, "in.conllu", column, require_tags=require)
    except DataError as exc:
        assert str(exc).startswith("in.conllu: ")
        return
    _conllu_ok(sentences, require)


@SETTINGS
@given(raw=st.one_of(RAW, CONLLU_TEXT.map(lambda s: s.encode("utf-8"))))
def test_read_conllu_and_plain_files(folder, raw):
    f = _write(folder, "in.conllu", raw)
    for read in (lambda: read_conllu_sentences(f), lambda: read_plain(f)):
        try:
            sentences = read()
        except DataError as exc:
            assert str(f) in str(exc)
            continue
        _conllu_ok(sentences, require_tags=False)


WORD = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Zs", "Zl", "Zp", "Cc")), min_size=1, max_size=8)
TAG = st.text(alphabet=st.characters(whitelist_categories=("Lu", "Ll", "Nd")), min_size=1, max_size=5).filter(
    lambda t: t != "_")


@SETTINGS
@given(sentences=st.lists(st.lists(st.tuples(WORD, TAG), min_size=1, max_size=6), min_size=1, max_size=5),
       column=st.sampled_from(["upos", "xpos"]))
def test_conllu_format_then_parse_gives_the_same_tags(sentences, column):
    plain = parse_plain("\n".join(" ".join(w for w, _ in s) for s in sentences))
    assert [s.words for s in plain] == [[w for w, _ in s] for s in sentences]
    tags = [[t for _, t in s] for s in sentences]
    back = parse_conllu(format_conllu(plain, tags, column), "round.conllu", column)
    assert [s.words for s in back] == [s.words for s in plain]
    assert [s.tags for s in back] == tags
    vocab = TaggingVocab.build(back, column)
    assert vocab.decode_tags(vocab.encode_tags(tags[0])) == tags[0]


# -- labelled text -------------------------------------------------------------------------------------------------
def _labeled_ok(data, require_labels: bool) -> None:
    assert len(data) >= 1
    for e in data.examples:
        assert e.text and e.text == e.text.strip() and e.line >= 1
        assert (e.label is not None) or not require_labels
        assert e.label is None or (e.label and e.label == e.label.strip())


@SETTINGS
@given(text=TEXT, fmt=st.sampled_from(FORMATS), label=st.sampled_from([None, "first", "last", "0", "1", "2", "label"]),
       header=st.sampled_from([None, True, False]), require=st.booleans(),
       name=st.sampled_from(["in.tsv", "in.csv", "in.txt"]))
def test_parse_labeled_returns_examples_or_data_error(text, fmt, label, header, require, name):
    try:
        data = parse_labeled(text, name, format=fmt, label_column=label, header=header, require_labels=require)
    except DataError as exc:
        assert str(exc).startswith(f"{name}: ")
        return
    _labeled_ok(data, require)
    assert data.spec["format"] in ("tsv", "space", "csv")
    try:
        vocab = TextVocab.build(data)
    except DataError:
        return
    encoded = encode_labeled(data, vocab)  # every label of the file is known to its own vocabulary
    assert len(encoded) == len(data)


@SETTINGS
@given(raw=RAW, name=st.sampled_from(["in.tsv", "in.csv", "in.txt"]))
def test_read_labeled_and_lines_files(folder, raw, name):
    f = _write(folder, name, raw)
    for read, require in ((lambda: read_labeled(f), True), (lambda: read_lines(f), False)):
        try:
            data = read()
        except DataError as exc:
            assert str(f) in str(exc)
            continue
        _labeled_ok(data, require)


LABEL = st.text(alphabet=st.characters(whitelist_categories=("Lu", "Ll", "Nd")), min_size=1, max_size=6)
SENTENCE = st.lists(WORD, min_size=1, max_size=6).map(" ".join)


@SETTINGS
@given(examples=st.lists(st.tuples(LABEL, SENTENCE), min_size=1, max_size=12),
       layout=st.sampled_from(["label_tab_text", "text_tab_label", "label_space_text", "csv"]))
def test_labeled_write_then_read_gives_the_same_examples(examples, layout):
    if layout == "label_tab_text":
        text, opts = "".join(f"{lab}\t{t}\n" for lab, t in examples), {"format": "tsv", "label_column": "first"}
    elif layout == "text_tab_label":
        text, opts = "".join(f"{t}\t{lab}\n" for lab, t in examples), {"format": "tsv", "label_column": "last"}
    elif layout == "label_space_text":
        text, opts = "".join(f"{lab} {t}\n" for lab, t in examples), {"format": "space", "label_column": "first"}
    else:
        def q(s):
            return '"' + s.replace('"', '""') + '"'
        text = "label,text\n" + "".join(f"{q(lab)},{q(t)}\n" for lab, t in examples)
        opts = {"format": "csv", "label_column": "label", "text_column": "text"}
    data = parse_labeled(text, "round", header=layout == "csv" or False, **opts)
    assert [(e.label, e.text) for e in data.examples] == [(lab, t.strip()) for lab, t in examples]
    assert parse_lines("".join(t + "\n" for _, t in examples)).labels == [None] * len(examples)


# -- numeric series ------------------------------------------------------------------------------------------------
CELL = st.one_of(st.sampled_from(["", "NA", "nan", "inf", "-", "x", "2024-01-02", "12:30", "1e3", "-0.5", '"1,5"']),
                 st.floats(allow_nan=True, allow_infinity=True).map(repr), st.integers(-99, 99).map(str))
CSV_TEXT = st.one_of(TEXT, st.lists(st.lists(CELL, min_size=1, max_size=4).map(",".join), max_size=15).map(
    lambda rows: "\n".join(rows)), st.lists(st.lists(CELL, min_size=1, max_size=3).map("\t".join), max_size=10).map(
    lambda rows: "date\tvalue\textra\n" + "\n".join(rows)))


@SETTINGS
@given(raw=st.one_of(RAW, CSV_TEXT.map(lambda s: s.encode("utf-8"))), header=st.sampled_from([None, True, False]),
       time_column=st.sampled_from([None, "1", "date", "9"]))
@example(raw=b",", header=None, time_column=None)  # found by this test: only delimiters was an IndexError
@example(raw=b";\n,,\n", header=True, time_column=None)
@example(raw=b"t,v\n1,2\x0c3\n", header=None, time_column=None)
def test_read_series_returns_a_table_or_data_error(folder, raw, header, time_column):
    f = _write(folder, "series.csv", raw)
    try:
        table = read_series(f, header=header, time_column=time_column)
    except DataError as exc:
        assert str(f) in str(exc)
        return
    assert len(table) >= 1 and table.names and all(len(r) == len(table.names) for r in table.rows)
    assert len(table.lines) == len(table.rows)
    cols = table.numeric_columns()
    try:
        values = table.numeric(cols) if cols else np.zeros((len(table), 0))
        data = SeriesDataset(table, [len(table.names)], window=1, valid_fraction=0.0, test_fraction=0.0)
    except DataError as exc:
        assert str(f) in str(exc)
        return
    assert values.shape == (len(table), len(cols)) and np.isfinite(values).all()
    assert data.x.shape[0] == len(table) and bool(np.isfinite(data.x.numpy()).all())


def test_a_field_over_the_csv_size_limit_is_a_data_error(folder):
    # An unclosed quote swallows the rest of the file into one field; past csv.field_size_limit() (128 KiB) the
    # csv module raised its own csv.Error.
    raw = b't,value\n1,"' + b"x" * 140_000 + b"\n2,3\n"
    f = _write(folder, "quote.csv", raw)
    with pytest.raises(DataError, match=r"quote\.csv: line \d+: not readable as CSV .*unclosed quote"):
        read_series(f)
    g = _write(folder, "quote-labels.csv", b'label,text\npos,"' + b"x" * 140_000 + b"\n")
    with pytest.raises(DataError, match=r"quote-labels\.csv: line \d+: not valid CSV"):
        read_labeled(g)


# -- source<TAB>target pairs ---------------------------------------------------------------------------------------
@SETTINGS
@given(text=TEXT, level=st.sampled_from(["char", "word"]), require=st.booleans())
def test_parse_pairs_returns_pairs_or_data_error(text, level, require):
    try:
        pairs = parse_pairs(text, "pairs.tsv", level, require_target=require)
    except DataError as exc:
        assert str(exc).startswith("pairs.tsv: line ")
        return
    for p in pairs:
        assert p.source.strip() and "\t" not in p.source and p.line >= 1
        assert (p.target is None and not require) or (p.target is not None and p.target.strip())
    if pairs and all(p.target is not None for p in pairs):
        vocab = Seq2SeqVocab.build(pairs, level)
        assert len(encode_pairs(pairs, vocab)) == len(pairs)


@SETTINGS
@given(raw=RAW, require=st.booleans())
def test_read_pairs_on_any_file(folder, raw, require):
    f = _write(folder, "pairs.tsv", raw)
    try:
        pairs = read_pairs(f, "char", require_target=require)
    except DataError as exc:
        assert str(f) in str(exc)
        return
    assert pairs


PAIR_SIDE = st.text(alphabet=st.characters(blacklist_characters="\t\n\r", blacklist_categories=("Cs",)), min_size=1,
                    max_size=10).filter(lambda s: s.strip())


@SETTINGS
@given(pairs=st.lists(st.tuples(PAIR_SIDE, PAIR_SIDE), min_size=1, max_size=8))
def test_pairs_write_then_read_gives_the_same_pairs(pairs):
    text = "".join(f"{s}\t{t}\n" for s, t in pairs)
    back = parse_pairs(text, "round.tsv", "char")
    assert [(p.source, p.target) for p in back] == pairs


# -- numeric series to classify: UEA .ts, NPZ -------------------------------------------------------------------------
TS_LINE = st.one_of(
    st.sampled_from(["@problemName P", "@univariate true", "@univariate false", "@dimensions 2", "@dimension 0",
                     "@equalLength true", "@equalLength false", "@seriesLength 3", "@classLabel true a b",
                     "@classLabel false", "@classLabel true a a", "@missing true", "@timeStamps true", "@data",
                     "@data x", "@targetLabel true", "@bogus", "@", "# c", "", " "]),
    st.lists(st.lists(st.one_of(st.sampled_from(["?", "NaN", "inf", "", "x", "(1,2)", "1e3", "-0.5"]),
                                st.floats(allow_nan=True, allow_infinity=True).map(repr),
                                st.integers(-9, 9).map(str)), min_size=0, max_size=4).map(",".join),
             min_size=1, max_size=3).map(":".join).flatmap(lambda case: st.sampled_from([case, case + ":a", case + ":b",
                                                                                    case + ":c", case + ":"])))
TS_TEXT = st.one_of(TEXT, st.lists(TS_LINE, max_size=14).map("\n".join),
                    st.lists(TS_LINE, max_size=10).map(lambda lines: "@classLabel true a b\n@data\n"
                                                       + "\n".join(lines)))


def _series_ok(data, require: bool) -> None:
    assert len(data) >= 1 and len(data.labels) == len(data.values) == len(data.where)
    F = data.n_features
    for v, label in zip(data.values, data.labels):
        assert v.ndim == 2 and v.shape[0] >= 1 and v.shape[1] == F and np.isfinite(v).all()
        assert (label is None and not require) or (label in data.label_set)


@SETTINGS
@given(text=TS_TEXT, missing=st.sampled_from(["refuse", "fill"]), require=st.booleans())
@example(text="@classLabel true a b\n@data\n1,2:a\n1:?:b", missing="fill", require=True)
def test_parse_ts_returns_cases_or_data_error(text, missing, require):
    try:
        data = parse_ts(text, "in.ts", missing=missing, require_labels=require)
    except DataError as exc:
        assert str(exc).startswith("in.ts: ")
        return
    _series_ok(data, require)
    if require and len(set(data.labels)) > 1:  # trains: normalised cases, finite
        cases = SeriesClassData(data, valid_fraction=0.2).cases("train")
        assert all(bool(np.isfinite(c.x.numpy()).all()) for c in cases)


@SETTINGS
@given(raw=st.one_of(RAW, TS_TEXT.map(lambda s: s.encode("utf-8"))))
def test_read_ts_on_any_file(folder, raw):
    f = _write(folder, "in.ts", raw)
    try:
        data = read_ts(f, require_labels=False)
    except DataError as exc:
        assert str(f) in str(exc)
        return
    _series_ok(data, False)


def _npz(arrays: dict) -> bytes:
    import io

    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


NPZ_ARRAYS = st.fixed_dictionaries(
    {"X": st.sampled_from([np.zeros((2, 3, 1)), np.array([[1.0, np.nan], [np.inf, 2.0]]), np.zeros((0, 2, 2)),
                           np.array(["a", "b"]), np.ones((2, 2, 0)), np.arange(6.0).reshape(2, 3)])},
    optional={"y": st.sampled_from([np.array(["a", "b"]), np.array([1, 2, 3]), np.array([[1, 2]]),
                                    np.array(["", "a"])]),
              "lengths": st.sampled_from([np.array([1, 2]), np.array([0, 9]), np.array([1.5, 2.0])]),
              "classes": st.sampled_from([np.array(["a", "b"]), np.array(["a", "a"]), np.array([])])})


@SETTINGS
@given(raw=st.one_of(RAW, NPZ_ARRAYS.map(_npz), NPZ_ARRAYS.map(lambda a: _npz(a)[:-7]),
                     st.binary(max_size=60).map(lambda b: b"PK\x03\x04" + b)), require=st.booleans())
def test_read_npz_on_any_file(folder, raw, require):
    f = _write(folder, "in.npz", raw)
    try:
        data = read_npz(f, require_labels=require)
    except DataError as exc:
        assert str(f) in str(exc)
        return
    _series_ok(data, require)


SERIES_CASE = st.tuples(st.integers(1, 4), st.integers(1, 5)).flatmap(
    lambda s: st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=s[0] * s[1], max_size=s[0] * s[1]).map(
        lambda v: np.array(v).reshape(s[1], s[0])))


@SETTINGS
@given(cases=st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), SERIES_CASE), min_size=1, max_size=6).filter(
    lambda cs: len({c.shape[1] for _, c in cs}) == 1))
def test_ts_write_then_read_gives_the_same_cases(cases):
    text = "@classLabel true a b c\n@data\n" + "".join(
        ":".join(",".join(repr(float(v)) for v in case[:, d]) for d in range(case.shape[1])) + f":{label}\n"
        for label, case in cases)
    back = parse_ts(text, "round.ts")
    assert back.labels == [label for label, _ in cases]
    assert all(np.array_equal(a, c) for a, (_, c) in zip(back.values, cases))


# -- IDX (MNIST) ---------------------------------------------------------------------------------------------------
def _idx(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    return header + array.astype(np.uint8).tobytes()


IDX_ARRAY = st.one_of(
    st.integers(0, 20).flatmap(lambda n: st.binary(min_size=n, max_size=n)).map(
        lambda b: np.frombuffer(b, np.uint8)),
    st.tuples(st.integers(0, 4), st.integers(1, 5), st.integers(1, 5)).flatmap(
        lambda s: st.binary(min_size=math.prod(s), max_size=math.prod(s)).map(
            lambda b: np.frombuffer(b, np.uint8).reshape(s))))


@SETTINGS
@given(raw=st.one_of(RAW, IDX_ARRAY.map(_idx), IDX_ARRAY.map(lambda a: _idx(a)[:-1] if a.size else _idx(a) + b"x")),
       gz=st.booleans(), magic=st.sampled_from([None, IMAGE_MAGIC, LABEL_MAGIC]))
def test_read_idx_returns_an_array_or_data_error(folder, raw, gz, magic):
    f = _write(folder, "data-idx-ubyte", gzip.compress(raw, mtime=0) if gz else raw)
    try:
        array = read_idx(f, magic)
    except DataError as exc:
        assert str(f) in str(exc)
        return
    assert array.dtype == np.uint8 and array.ndim >= 1
    assert magic is None or int.from_bytes(raw[:4], "big") == magic


@SETTINGS
@given(array=IDX_ARRAY, gz=st.booleans())
def test_idx_write_then_read_gives_the_same_array(folder, array, gz):
    raw = _idx(array)
    f = _write(folder, "round-idx-ubyte", gzip.compress(raw, mtime=0) if gz else raw)
    back = read_idx(f)
    assert back.shape == array.shape and np.array_equal(back, array)


@SETTINGS
@given(raw=st.binary(min_size=2, max_size=60))
def test_read_idx_of_a_corrupt_gzip(folder, raw):
    f = _write(folder, "broken-idx-ubyte.gz", b"\x1f\x8b" + raw)
    try:
        read_idx(f)
    except DataError as exc:
        assert str(f) in str(exc)
