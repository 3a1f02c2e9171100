"""rnnlab.data.seq2seq: reading source<TAB>target files (char and word tokens, separate vocabularies), their errors
(file, line and fix), batches, and the built-in tasks: correct targets, held-out dates and formats, bucketing and
determinism per (seed, split, epoch, index)."""
from __future__ import annotations

import datetime

import pytest
import torch

from rnnlab.data.seq2seq import DATE_FORMATS, HELD_OUT_FORMAT, SPECIALS, DateTask, Seq2SeqVocab, SymbolTask, \
    collate_pairs, date_split, encode_pairs, make_batch, parse_pairs, read_pairs, render_date
from rnnlab.data.text import DataError


def test_read_pairs_and_vocabularies(tmp_path):
    f = tmp_path / "p.tsv"
    f.write_text("the cat\tle chat\n\nthe dog\tle chien\r\n", encoding="utf-8")
    pairs = read_pairs(f, "word")
    assert [(p.source, p.target, p.line) for p in pairs] == [("the cat", "le chat", 1), ("the dog", "le chien", 3)]
    vocab = Seq2SeqVocab.build(pairs, "word")
    assert vocab.src.itos[:4] == list(SPECIALS) and vocab.src.itos[4] == "the"  # most frequent first
    assert "le" in vocab.tgt and "le" not in vocab.src  # separate vocabularies
    assert vocab.encode_source("the bird") == [vocab.src.stoi["the"], 1]  # <unk> = 1
    assert vocab.decode_target(vocab.encode_target("le chat") + [3, 5]) == "le chat"  # stops at <eos>
    assert Seq2SeqVocab.from_json(vocab.to_json()) == vocab
    chars = Seq2SeqVocab.build(pairs, "char")
    assert " " in chars.src and chars.decode_target(chars.encode_target("le chat")) == "le chat"


@pytest.mark.parametrize("text,message", [
    ("abc\n", "p.tsv: line 1: no tab; every line must be 'source<TAB>target' with exactly one tab"),
    ("a\tb\nx\ty\tz\n", "p.tsv: line 2: 2 tabs"),
    ("\tb\n", "p.tsv: line 1: the source (before the tab) is empty"),
    ("a\t  \n", "p.tsv: line 1: the target (after the tab) is empty; give every line a target"),
    ("\n\n", "p.tsv: the file has no pairs"),
])
def test_file_errors_name_the_file_line_and_fix(tmp_path, text, message):
    f = tmp_path / "p.tsv"
    f.write_text(text, encoding="utf-8")
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_pairs(f)


def test_missing_and_non_utf8_files(tmp_path):
    with pytest.raises(DataError, match="nope.tsv: no such file"):
        read_pairs(tmp_path / "nope.tsv")
    f = tmp_path / "latin.tsv"
    f.write_bytes("a\tb\ncaf\xe9\tx\n".encode("latin-1"))
    with pytest.raises(DataError, match="latin.tsv: line 2: invalid UTF-8.*iconv"):
        read_pairs(f)


def test_sources_without_targets_for_decoding():
    pairs = parse_pairs("abc\nde\tfg\n", "in", require_target=False)
    assert [(p.source, p.target) for p in pairs] == [("abc", None), ("de", "fg")]


def test_batches_pad_and_shift_the_targets():
    vocab = Seq2SeqVocab.from_symbols("ab", "ab")
    a, b = vocab.src.stoi["a"], vocab.src.stoi["b"]
    batch = collate_pairs(encode_pairs(parse_pairs("ab\tba\nb\tb\n"), vocab), [0, 1])
    assert batch.src.tolist() == [[a, b], [b, 0]] and batch.src_lengths.tolist() == [2, 1]
    assert batch.tgt_in.tolist() == [[2, b, a], [2, b, 0]]  # <bos> y_1 ... then <pad>
    assert batch.tgt_out.tolist() == [[b, a, 3], [b, 3, -100]]  # y_1 ... <eos>, then IGNORE
    assert batch.tgt_lengths.tolist() == [3, 2]
    assert make_batch([[4]], [None]).tgt_out.tolist() == [[3]]


@pytest.mark.parametrize("task,fn", [("reverse", lambda s: s[::-1]), ("sort", lambda s: "".join(sorted(s))),
                                     ("copy", lambda s: s)])
def test_symbol_tasks_have_correct_targets(task, fn):
    data = SymbolTask(task, 16, 5, min_len=3, max_len=9, alphabet=4, seed=1)
    for i in range(5):
        for src, tgt in data.examples(0, i):
            assert tgt == fn(src) and 3 <= len(src) <= 9 and set(src) <= set("abcd")
        batch = data.batch(0, i)
        for b, (src, tgt) in enumerate(data.examples(0, i)):
            assert data.vocab.decode_target(batch.tgt_out[b]) == tgt
            assert int(batch.src_lengths[b]) == len(src)


def test_symbol_tasks_bucket_lengths_and_cover_the_range():
    data = SymbolTask("reverse", 32, 200, min_len=5, max_len=50, bucket_width=5, seed=0)
    seen = set()
    for i in range(200):
        lengths = data.batch(0, i).src_lengths
        assert int(lengths.max()) - int(lengths.min()) < 5  # one bucket per batch: little padding
        seen.update(lengths.tolist())
    assert seen == set(range(5, 51))


def test_generated_data_is_deterministic_per_seed_split_epoch_and_index():
    a = SymbolTask("sort", 8, 3, seed=5)
    b = SymbolTask("sort", 8, 3, seed=5)
    for x, y in zip(a.batch(2, 1), b.batch(2, 1)):
        assert torch.equal(x, y)
    assert [list(t) for t in a.batches(0)][1][0].tolist() == a.batch(0, 1).src.tolist()  # batches() == batch()
    assert a.examples(0, 1) != a.examples(1, 1)  # every epoch is fresh data
    assert a.examples(0, 1) != SymbolTask("sort", 8, 3, seed=5, split="valid").examples(0, 1)
    assert a.examples(0, 1) != SymbolTask("sort", 8, 3, seed=6).examples(0, 1)
    assert DateTask(8, 2, seed=3).examples(1, 1) == DateTask(8, 2, seed=3).examples(1, 1)


def test_dates_are_rendered_and_normalised_correctly():
    day = datetime.date(2019, 3, 5)
    assert render_date(day, "long") == "March 5, 2019"
    assert render_date(day, "weekday_short") == "Tue 5 Mar 19"
    assert render_date(day, "dotted") == "05.03.2019" and render_date(day, "us_slashes") == "3/5/2019"
    data = DateTask(64, 3, seed=0)
    for src, tgt in data.examples(0, 0):
        date = datetime.date.fromisoformat(tgt)
        assert any(render_date(date, f) == src for f in DATE_FORMATS)
        assert date_split(date) == "train"


def test_dates_hold_out_dates_and_formats():
    for split in ("valid", "test"):
        for _, tgt in DateTask(64, 2, seed=0, split=split).examples(0, 1):
            assert date_split(datetime.date.fromisoformat(tgt)) == split  # never a training date
    test = DateTask(64, 2, holdout="formats", seed=0, split="test")
    train = DateTask(64, 2, holdout="formats", seed=0)
    for src, tgt in test.examples(0, 0):
        assert src == render_date(datetime.date.fromisoformat(tgt), HELD_OUT_FORMAT)
    for src, tgt in train.examples(0, 0):
        assert src != render_date(datetime.date.fromisoformat(tgt), HELD_OUT_FORMAT)
    assert all(c in test.vocab.src for src, _ in test.examples(0, 0) for c in src)  # no <unk> in any format


def test_task_argument_errors():
    with pytest.raises(ValueError, match="task must be one of reverse, sort, copy; got 'shuffle'"):
        SymbolTask("shuffle")
    with pytest.raises(ValueError, match="min_len must be <= max_len; got min_len=9, max_len=3. Swap them"):
        SymbolTask(min_len=9, max_len=3)
    with pytest.raises(ValueError, match="alphabet must be at most 26"):
        SymbolTask(alphabet=27)
    with pytest.raises(ValueError, match="holdout must be one of dates, formats; got 'years'"):
        DateTask(holdout="years")
