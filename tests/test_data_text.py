"""Text data: reading (UTF-8 errors name the byte), tokenising at three levels, Vocab JSON, splits, and the
batchify/bptt streams against hand-computed layouts."""
import pytest
import torch

from rnnlab.data import DataError, LMStream, Vocab, batchify, build_corpus, load_corpus, read_text, stdlib_corpus
from rnnlab.data.text import EOS, UNK, split_text, words_of


def test_read_text_errors_name_file_and_fix(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_text(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("  \n", encoding="utf-8")
    with pytest.raises(DataError, match="empty.txt: the file is empty"):
        read_text(tmp_path / "empty.txt")
    (tmp_path / "bad.txt").write_bytes("héllo\n".encode() + b"ab\xff\xfecd")
    with pytest.raises(DataError) as e:
        read_text(tmp_path / "bad.txt")
    msg = str(e.value)
    assert "bad.txt" in msg and "byte offset 9" in msg and "line 2" in msg and "iconv" in msg
    assert "\n" not in msg


def test_read_text_unicode(tmp_path):
    text = "naïve 日本語 🙂\nzweite Zeile\n"
    (tmp_path / "u.txt").write_text(text, encoding="utf-8")
    assert read_text(tmp_path / "u.txt") == text


def test_words_follow_ptb_convention():
    assert words_of(" a b \n\nc\n") == ["a", "b", EOS, EOS, "c", EOS]
    assert words_of("a b") == ["a", "b", EOS]
    assert words_of("a b", final_eos=False) == ["a", "b"]


def test_char_vocab_roundtrip_and_unk_only_when_needed():
    v = Vocab.build("abba\n", "char")
    assert v.itos == ["\n", "a", "b"] and v.unk_id is None
    assert v.decode(v.encode("ab\nba")) == "ab\nba"
    with pytest.raises(DataError, match=r"'z' \(U\+007A\) at character offset 2"):
        v.encode("abz", name="prompt")
    v2 = Vocab.build("abba", "char", extra_texts=("abc",))  # the validation text has a 'c'
    assert v2.itos[0] == UNK and v2.encode("c") == [v2.unk_id]


def test_word_vocab_min_count_and_max_size():
    text = "a a a b b c\nd\n"
    v = Vocab.build(text, "word", min_count=2)
    assert v.itos == [UNK, EOS, "a", "b"]
    assert v.encode("a c b\n") == [2, 0, 3, 1]
    assert v.decode([2, 3, 1, 2]) == "a b\na"
    v = Vocab.build(text, "word", max_size=3)
    assert v.itos == [UNK, EOS, "a"]
    with pytest.raises(ValueError, match="min_count must be an integer >= 1; got 0"):
        Vocab.build(text, "word", min_count=0)


def test_vocab_json_roundtrip(tmp_path):
    for level in ("char", "word"):
        v = Vocab.build("the cat sat\non the mat\n", level)
        v.save(tmp_path / f"{level}.json")
        w = Vocab.load(tmp_path / f"{level}.json")
        assert w.itos == v.itos and w.specials == v.specials and w.level == level
    with pytest.raises(ValueError, match="level must be one of char, word, bpe; got 'byte'"):
        Vocab("byte", ["a"])


def test_bpe_vocab_is_unicode_safe_and_roundtrips():
    pytest.importorskip("tokenizers")
    text = "the cat sat on the mat. " * 30 + "naïve café\n"
    v = Vocab.build(text, "bpe", bpe_vocab=300)
    assert 256 < len(v) <= 300
    other = "cats and 日本語 🙂\n"  # never seen in training: byte-level BPE still encodes it
    assert v.decode(v.encode(other)) == other
    assert len(v.encode("the cat sat")) < len("the cat sat")  # merges were learned
    w = Vocab.from_json(v.to_json())
    assert w.encode(other) == v.encode(other)


def test_split_last_tenth_like_nanogpt():
    text = "".join(chr(ord("a") + i % 26) for i in range(100))
    train, valid = split_text(text, 0.1, "char")
    assert train == text[:90] and valid == text[90:]
    train, valid = split_text("l1 w\nl2 w\nl3 w\n", 0.2, "word")  # cut moved to the next line start
    assert (train, valid) == ("l1 w\nl2 w\n", "l3 w\n")


def test_corpus_from_files(tmp_path):
    (tmp_path / "train.txt").write_text("hello world\n" * 20, encoding="utf-8")
    (tmp_path / "valid.txt").write_text("hello\n", encoding="utf-8")
    c = load_corpus(tmp_path / "train.txt", tmp_path / "valid.txt", level="word")
    assert c.vocab.itos == [UNK, EOS, "hello", "world"]
    assert c.train.tolist() == [2, 3, 1] * 20 and c.valid.tolist() == [2, 1] and c.test is None
    c = build_corpus("abcdefghij" * 10, level="char")  # one text: last 10% is validation
    assert c.train.numel() == 90 and c.valid.numel() == 10
    c = build_corpus("abcdefghij" * 10, level="char", valid_fraction=0)
    assert c.valid is None and c.train.numel() == 100
    with pytest.raises(DataError, match=r"valid fraction must be a number in \[0, 1\); got 1.5"):
        build_corpus("abc", valid_fraction=1.5)


def test_batchify_columns():
    data = batchify(torch.arange(26), 4)
    assert data.shape == (6, 4)  # 2 tokens dropped
    assert data[:, 0].tolist() == [0, 1, 2, 3, 4, 5] and data[:, 1].tolist() == [6, 7, 8, 9, 10, 11]
    with pytest.raises(DataError, match="5 tokens are too few for batch size 4"):
        batchify(torch.arange(5), 4, "tiny")


def test_stream_chunks_inputs_and_shifted_targets():
    s = LMStream(torch.arange(26), 4, bptt=2)
    chunks = list(s.batches(0))
    assert [x.shape[0] for x, _ in chunks] == [2, 2, 1]  # 5 input rows: the 6th row is only a target
    x, y = chunks[0]
    assert x[:, 1].tolist() == [6, 7] and y[:, 1].tolist() == [7, 8]
    # Consecutive chunks continue each column: the carried state sees the stream in order.
    assert torch.cat([x for x, _ in chunks])[:, 2].tolist() == list(range(12, 17))
    assert torch.equal(torch.cat([y for _, y in chunks]), s.data[1:])
    assert s.tokens_per_epoch == 20
    with pytest.raises(DataError, match="bptt must be an integer >= 1"):
        LMStream(torch.arange(26), 4, bptt=0)


def test_random_bptt_resumable_and_varied():
    s = LMStream(torch.arange(4000), 2, bptt=20, random_bptt=True, seed=3)
    a, b = s.chunk_lengths(0), s.chunk_lengths(1)
    assert sum(a) == sum(b) == 1999 and a != b  # every position covered once; boundaries move between epochs
    assert a == LMStream(torch.arange(4000), 2, bptt=20, random_bptt=True, seed=3).chunk_lengths(0)
    assert min(a[:-1]) >= 1 and any(n < 15 for n in a) and any(n > 22 for n in a)
    full = list(s.batches(1))
    tail = list(s.batches(1, start=7))  # resuming at batch 7 gives the same chunks
    assert len(tail) == len(full) - 7 and all(torch.equal(p[0], q[0]) for p, q in zip(full[7:], tail))


def test_stdlib_corpus_is_python_and_bounded():
    text = stdlib_corpus(50_000)
    assert 40_000 < len(text.encode()) <= 50_000 and text.endswith("\n")
    assert "def " in text and "import " in text
    assert stdlib_corpus(50_000) == text
