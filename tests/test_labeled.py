"""Reading labelled text (rnnlab.data.labeled): each format, header and label-column detection, the explicit
options, one clear DataError per kind of bad input, the vocabulary, the (x, lengths, y) batches, and the two real
SST-2 copies when the shared data directory is present."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from rnnlab.data.labeled import IGNORE, TextVocab, collate_labeled, encode_labeled, parse_labeled, parse_lines, \
    read_labeled, sort_labels, tokenize
from rnnlab.data.text import DataError
from rnnlab.train.tagging import SentenceBatches

DATA = Path(os.environ.get("RNNLAB_DATA") or Path(__file__).parents[2] / "shared" / "data")
SST2 = DATA / "sst2"

ROWS = [("1", "a fine film"), ("0", "dull and long"), ("1", "good fun"), ("0", "a mess"), ("1", "loved it"),
        ("0", "not good at all")]


def write(tmp_path, name: str, text: str | bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return p


def pairs(data):
    return [(e.label, e.text) for e in data.examples]


# -- formats -------------------------------------------------------------------------------------------------------
def test_tsv_label_first_and_text_first_are_detected(tmp_path):
    a = read_labeled(write(tmp_path, "a.txt", "".join(f"{y}\t{t}\n" for y, t in ROWS)))
    assert pairs(a) == ROWS and a.spec["format"] == "tsv" and a.spec["label_column"] == 0
    # SentEval's SST-2 layout: 'sentence \tlabel' with a space before the tab, a blank line and CRLF endings
    b = read_labeled(write(tmp_path, "b", "".join(f"{t} \t{y}\r\n" for y, t in ROWS) + "\n"))
    assert pairs(b) == ROWS and b.spec["label_column"] == 1 and b.spec["text_column"] == 0
    assert [e.line for e in b.examples] == [1, 2, 3, 4, 5, 6]


def test_space_format_label_first_and_last(tmp_path):
    a = read_labeled(write(tmp_path, "a", "".join(f"{y} {t}\n" for y, t in ROWS)))
    assert a.spec["format"] == "space" and pairs(a) == ROWS
    b = read_labeled(write(tmp_path, "b", "".join(f"{t} {y}\n" for y, t in ROWS)))
    assert b.spec["label_column"] == 1 and pairs(b) == ROWS
    c = read_labeled(write(tmp_path, "c", "".join(f"{t} {y}\n" for y, t in ROWS)), label_column="last",
                     format="space")
    assert pairs(c) == ROWS


def test_csv_with_quoting_header_names_and_indices(tmp_path):
    text = 'id,review,sentiment\n1,"good, really good",pos\n2,"a ""so-so"" film",neg\n3,bad,neg\n4,fine,pos\n'
    p = write(tmp_path, "r.csv", text)
    d = read_labeled(p)  # *.csv → csv; the header names review / sentiment pick the columns
    assert d.spec["header"] and d.spec["names"] == ["id", "review", "sentiment"]
    assert pairs(d) == [("pos", "good, really good"), ("neg", 'a "so-so" film'), ("neg", "bad"), ("pos", "fine")]
    assert [e.line for e in d.examples] == [2, 3, 4, 5]
    assert pairs(read_labeled(p, text_column="review", label_column="sentiment")) == pairs(d)
    e = read_labeled(p, format="csv", label_column="2", text_column="1", header=True)
    assert pairs(e) == pairs(d)
    multiline = write(tmp_path, "m.csv", 'text,label\n"two\nlines",a\nthree,b\n')
    assert [(x.line, x.text) for x in read_labeled(multiline).examples] == [(2, "two\nlines"), (4, "three")]


def test_header_detection(tmp_path):
    body = "".join(f"{t}\t{y}\n" for y, t in ROWS)
    named = read_labeled(write(tmp_path, "n", "sentence\tlabel\n" + body))  # GLUE's SST-2 train.tsv header
    assert named.spec["header"] and pairs(named) == ROWS
    word_over_numbers = read_labeled(write(tmp_path, "w", "phrase\tpolarity_score\n" + body))
    assert word_over_numbers.spec["header"] and len(word_over_numbers) == 6
    assert not read_labeled(write(tmp_path, "none", body)).spec["header"]
    space = read_labeled(write(tmp_path, "s", "label text\n" + "".join(f"{y} {t}\n" for y, t in ROWS)))
    assert space.spec["header"] and pairs(space) == ROWS
    forced = read_labeled(write(tmp_path, "f", "x\ty\n" + body), header=False, label_column="last")
    assert len(forced) == 7 and forced.examples[0].text == "x"


def test_plain_lines_and_tokens():
    d = parse_lines("one text\n\n  another   one \n", "in.txt")
    assert [(e.text, e.label, e.line) for e in d.examples] == [("one text", None, 1), ("another   one", None, 3)]
    assert tokenize("Good  Film\t!", lowercase=True) == ["good", "film", "!"]
    assert tokenize("Good Film") == ["Good", "Film"]


# -- bad input -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, options, must", [
    ("1\ta b\n0 c d\n", {"format": "tsv"}, ["bad: line 2", "has no tab", "--format space"]),
    ("1\ta b\n0\t  \n1\tc d\n0\te f\n", {}, ["bad: line 2", "the text is empty"]),
    ("1\ta b\n\tc d\n1\te f\n0\tg h\n", {"label_column": "first"}, ["bad: line 2", "the label is missing"]),
    ("1 a b\nlonely\n0 c d\n1 e f\n0 g h\n1 i j\n", {"format": "space"}, ["bad: line 2", "is one word"]),
    ("a\tb\tc\nd\te\n", {}, ["bad: line 2", "2 tab-separated fields where line 1 has 3"]),
    ("x y\tp q\nr s\tt u\n", {}, ["cannot tell which of the 2 columns holds the label", "--label-column"]),
    ("great film\nawful film\n", {}, ["first or the last word", "--label-column first or last"]),
    ("label,text\n1,a\n", {"format": "csv", "label_column": "stars"}, ["'stars' is not a column of the header",
                                                                       "label, text"]),
    ("1\ta\n0\tb\n", {"label_column": "label", "header": False}, ["needs the header line"]),
    ("1\ta\n0\tb\n", {"label_column": "5"}, ["out of range", "2 columns"]),
])
def test_bad_input_is_one_clear_data_error(tmp_path, text, options, must):
    p = write(tmp_path, "bad", text)
    with pytest.raises(DataError) as info:
        read_labeled(p, **options)
    msg = str(info.value)
    assert "\n" not in msg and str(p) in msg
    for m in must:
        assert m in msg, (m, msg)


def test_bad_files(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_labeled(tmp_path / "missing.tsv")
    with pytest.raises(DataError, match="the file is empty"):
        read_labeled(write(tmp_path, "empty", " \n"))
    bad = write(tmp_path, "latin1", "1\tfine\n0\tcr\xe8me br\xfbl\xe9e\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1: line 2: invalid UTF-8 .*iconv"):
        read_labeled(bad)
    with pytest.raises(DataError, match=r"x.csv: line 2: not valid CSV"):
        read_labeled(write(tmp_path, "x.csv", 'label,text\n1,"quoted"then more\n'))


# -- vocabulary, ids, batches --------------------------------------------------------------------------------------
def test_vocab_min_count_labels_and_round_trip():
    d = parse_labeled("10\tGood good film\n2\tbad film\n2\tbad\n", "t", label_column="first")
    v = TextVocab.build(d, min_count=2, lowercase=True)
    assert v.labels == ["2", "10"] and v.words.itos == ["<pad>", "<unk>", "bad", "film", "good"]
    assert v.encode_text("GOOD unseen") == [4, 1] and v.pad_id == 0 and v.is_unknown("unseen")
    again = TextVocab.from_json(v.to_json())
    assert again.labels == v.labels and again.words.itos == v.words.itos and again.lowercase
    assert [(e.words, e.label) for e in encode_labeled(d, v)] == [([4, 4, 3], 1), ([2, 3], 0), ([2], 0)]
    assert sort_labels(["neg", "pos", "neg"]) == ["neg", "pos"] and sort_labels(["-1", "1", "0"]) == ["-1", "0", "1"]
    with pytest.raises(DataError, match=r"dev: line 2: label '7' does not occur in the training data"):
        encode_labeled(parse_labeled("2\ta\n7\tb\n", "dev", label_column="first"), v)
    with pytest.raises(DataError, match="only 1 distinct label .*at least two classes"):
        TextVocab.build(parse_labeled("1\ta\n1\tb\n", "one", label_column="first"))
    unlabelled = encode_labeled(parse_lines("bad film\n"), v)
    assert unlabelled[0].label == IGNORE


def test_batches_are_x_lengths_y_bucketed_and_reproducible():
    text = "".join(f"{k % 3}\t{' '.join(['w'] * (1 + k % 7))}\n" for k in range(50))
    d = parse_labeled(text, "t")
    v = TextVocab.build(d)
    enc = encode_labeled(d, v)
    data = SentenceBatches(enc, 8, shuffle=True, seed=3, pad_id=v.pad_id, collate_fn=collate_labeled)
    batches = list(data.batches(1))
    assert len(batches) == data.num_batches(1) == 7
    x, lengths, y = batches[0]
    assert x.dtype == lengths.dtype == y.dtype == torch.long and x.shape == (len(y), int(lengths.max()))
    assert all((x[b, int(n):] == v.pad_id).all() for b, n in enumerate(lengths))
    assert sorted(i for index in data.order(1) for i in index) == list(range(50))
    assert data.order(1) == SentenceBatches(enc, 8, shuffle=True, seed=3).order(1) != data.order(2)
    resumed = list(data.batches(1, start=4))
    assert all((a[0] == b[0]).all() and (a[2] == b[2]).all() for a, b in zip(resumed, batches[4:]))
    fixed = SentenceBatches(enc, 8, collate_fn=collate_labeled)  # evaluation: sorted by length, same every time
    assert [len(b[2]) for b in fixed.batches(0)] == [8] * 6 + [2]
    assert fixed.order(0) == fixed.order(5)


# -- the real SST-2 copies -----------------------------------------------------------------------------------------
@pytest.mark.skipif(not SST2.is_dir(), reason=f"shared data not present at {SST2} (set RNNLAB_DATA)")
@pytest.mark.parametrize("path, n, neg, fmt, label_column", [
    ("harvardnlp_stsa_binary/stsa.binary.train", 6920, 3310, "space", 0),
    ("harvardnlp_stsa_binary/stsa.binary.dev", 872, 428, "space", 0),
    ("harvardnlp_stsa_binary/stsa.binary.test", 1821, 912, "space", 0),
    ("sif_sentiment/sentiment-dev", 872, 428, "tsv", 1),
    ("sif_sentiment/sentiment-test", 1821, 912, "tsv", 1),
])
def test_sst2_copies_load(path, n, neg, fmt, label_column):
    d = read_labeled(SST2 / path)
    assert len(d) == n and d.spec["format"] == fmt and d.spec["label_column"] == label_column
    assert not d.spec["header"] and d.label_counts() == {"0": neg, "1": n - neg}
    assert all(e.text == e.text.strip() and e.text for e in d.examples)
    if path.endswith("train"):
        v = TextVocab.build(d, min_count=2)
        assert v.labels == ["0", "1"] and 5000 < len(v) < 20000
