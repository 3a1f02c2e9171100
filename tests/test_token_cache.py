"""The token cache (rnnlab.data.token_cache): a file tokenised once in chunks, then memory-mapped.

The oracle is the in-memory path, ``build_corpus`` on ``read_text``: on every file below, at every level and split,
the cache gives exactly its vocabulary, ids and sources — with a tiny read size, so that chunks cut lines, words and
multi-byte characters. Then: the batches an ``LMStream`` reads from the cache's file are ``batchify``'s; an entry is
rebuilt when its source or its settings change or it is damaged (with a note), and reused otherwise; bad files are
the same errors as ``read_text``'s; and through the CLI, runs with the cache train, resume and evaluate exactly as
runs without it (also under torchrun, two processes sharing one cache directory)."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rnnlab.data import token_cache as tc
from rnnlab.data.text import DataError, LMStream, batchify, build_corpus, load_corpus, read_text
from rnnlab.train import load_checkpoint

from cli_helpers import cli, one_line_error

SRC = Path(__file__).resolve().parents[1] / "src"
TINY = ["--hidden", "12", "--bptt", "8", "--batch-size", "4", "--eval-batch-size", "2", "--quiet"]
LINES = "the quick brown fox jumps over the lazy dog\npack my box with five dozen liquor jugs\n"
TEXTS = {
    "plain": LINES * 6,
    "no-final-newline": LINES * 5 + "and a last line without its end",
    "crlf": "line one\r\nline two\r\n\r\nthree\r\n" * 8,
    "empty-lines": "\n\nfirst\n\n\nsecond line here\n\n" * 6,
    "unicode": "naïve café 日本語 🙂\nzweite Zeile — ok\n\ufeff…\u2028x\x85y\n" * 6,
    "bom-first": "\ufeffhello world\nbye now\n" * 8,
    "whitespace-kinds": "a\tb\x0bc\x0cd\x1ce\u00a0f\n  indented line\n\tx y\n" * 6,
    "literal-specials": "<unk> a <eos> b\nc <unk>\n" * 8,
}
OTHER = "a different text with Qz and ü\nsecond\n"  # characters the training texts lack: a char vocabulary <unk>
SPLITS = {"fraction 0.1": (0.1, False), "fraction 0.5": (0.5, False), "no validation": (0, False),
          "valid and test files": (0.1, True)}
HAS_BPE = importlib.util.find_spec("tokenizers") is not None


@pytest.fixture
def small_chunks(monkeypatch):
    """Read 5 bytes / characters at a time: chunks cut lines, words and multi-byte characters."""
    monkeypatch.setattr(tc, "CHUNK", 5)


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8", newline="")  # byte for byte: no newline translation
    return path


def _old(path: Path) -> None:
    """Date the file back a minute, so the cache trusts its size and mtime (see tc.TRUST_NS)."""
    t = path.stat().st_mtime - 60
    os.utime(path, (t, t))


def _both(tmp_path, text: str, level: str, fraction: float, files: bool, **kw):
    """(in-memory corpus or its DataError message, cached corpus or its DataError message)."""
    train = _write(tmp_path / "train.txt", text)
    valid = _write(tmp_path / "valid.txt", OTHER) if files else None
    test = _write(tmp_path / "test.txt", OTHER[::-1]) if files else None
    names = tuple(str(p) if p else "" for p in (train, valid, test))
    try:
        ref = build_corpus(*[None if p is None else read_text(p) for p in (train, valid, test)], level=level,
                           valid_fraction=fraction, names=names, **kw)
    except DataError as exc:
        ref = str(exc)
    try:
        got, _ = tc.cached_corpus(train, valid, test, cache_dir=tmp_path / "cache", level=level,
                                  valid_fraction=fraction, names=names, note=pytest.fail, **kw)
    except DataError as exc:
        got = str(exc)
    return ref, got


def _assert_same(ref, got) -> None:
    if isinstance(ref, str) or isinstance(got, str):
        assert ref == got
        return
    assert got.vocab.to_json() == ref.vocab.to_json()
    assert got.sources == ref.sources
    for split in ("train", "valid", "test"):
        a, b = getattr(ref, split), getattr(got, split)
        assert (a is None) == (b is None), split
        if a is not None:
            assert b.dim() == 1 and b.tolist() == a.tolist(), split


# -- the same corpus as in memory ------------------------------------------------------------------------------------
@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("name", TEXTS)
@pytest.mark.parametrize("level", ["char", "word"])
def test_cache_gives_exactly_the_in_memory_corpus(level, name, split, tmp_path, small_chunks):
    fraction, files = SPLITS[split]
    _assert_same(*_both(tmp_path, TEXTS[name], level, fraction, files))


@pytest.mark.parametrize("text", ["one line, no newline", "one line\n", "   \n\t\nx\n", "x\n\n \n"])
@pytest.mark.parametrize("level", ["char", "word"])
def test_a_split_that_leaves_no_validation_text_is_the_same_error(text, level, tmp_path, small_chunks):
    _assert_same(*_both(tmp_path, text, level, 0.3, False))


def test_load_corpus_takes_a_cache_dir(tmp_path):
    f = _write(tmp_path / "t.txt", TEXTS["unicode"])
    ref = load_corpus(f, level="word")
    got = load_corpus(f, level="word", cache_dir=tmp_path / "cache")
    _assert_same(ref, got)
    assert list((tmp_path / "cache").glob("t.txt-word-*.json"))


def test_word_options_give_the_same_vocabulary(tmp_path, small_chunks):
    text = "a a a b b c\nd d e\n" * 4 + "f\n"
    for kw in ({"min_count": 5}, {"max_vocab": 4}, {"min_count": 2, "max_vocab": 3}):
        ref, got = _both(tmp_path, text, "word", 0.1, False, **kw)
        _assert_same(ref, got)
        (tmp_path / "cache").rename(tmp_path / f"cache-{len(list(tmp_path.iterdir()))}")


@pytest.mark.skipif(not HAS_BPE, reason="the BPE level needs 'tokenizers' (rnnlab[text])")
@pytest.mark.parametrize("name", ["plain", "unicode", "whitespace-kinds", "crlf"])
def test_bpe_encodes_in_pieces_that_give_the_whole_texts_ids(name, tmp_path, monkeypatch):
    """Pieces of >= 16 characters are cut only where the BPE's pre-tokenizer cannot join across the cut."""
    monkeypatch.setattr(tc, "CHUNK", 16)
    cuts = []
    real = tc._safe_cut
    monkeypatch.setattr(tc, "_safe_cut", lambda t, m=None: cuts.append(real(t, m)) or cuts[-1])
    text = TEXTS[name] + "  indented\n\nend  \n x\nlast" * 3
    for fraction in (0.0, 0.3):
        (tmp_path / str(fraction)).mkdir()
        _assert_same(*_both(tmp_path / str(fraction), text, "bpe", fraction, False, bpe_vocab=300))
    assert any(c > 0 for c in cuts)


def test_safe_cut_needs_non_space_on_both_sides_of_a_line_end(monkeypatch):
    monkeypatch.setattr(tc, "CHUNK", 1)
    assert tc._safe_cut("ab\ncd\n") == 3
    assert tc._safe_cut("ab \ncd\n") == 0  # " \n" then "c": GPT-2's pattern keeps " " apart only when "c" follows
    assert tc._safe_cut("ab\n cd\n") == 0  # "\n " then "c": " c" is a word with its leading space
    assert tc._safe_cut("ab\n\ncd\n") == 0
    assert tc._safe_cut("x\nab \ncd\n") == 2  # the last safe line end


# -- batches from the cache ------------------------------------------------------------------------------------------
def test_stream_batches_read_from_the_file_are_batchify_s(tmp_path):
    text = "".join(chr(32 + (i * 7919) % 90) for i in range(5000))
    f = _write(tmp_path / "t.txt", text)
    corpus, _ = tc.cached_corpus(f, cache_dir=tmp_path / "cache", valid_fraction=0.2)
    ref = build_corpus(text, valid_fraction=0.2)
    assert corpus.train.dtype == torch.uint8 and corpus.train._rnnlab_file[0].path.endswith(".bin")
    for tokens, want, B, kw in ((corpus.train, ref.train, 7, {}), (corpus.valid, ref.valid, 3, {}),
                                (corpus.train, ref.train, 4, {"random_bptt": True, "seed": 5})):
        got, exp = LMStream(tokens, B, 13, **kw), LMStream(want, B, 13, **kw)
        assert torch.equal(got.data, batchify(want, B)) and got.tokens_per_epoch == exp.tokens_per_epoch
        for epoch in (0, 1):
            assert got.chunk_lengths(epoch) == exp.chunk_lengths(epoch)
            for start in (0, 5):
                pairs = list(zip(got.batches(epoch, start), exp.batches(epoch, start)))
                assert len(pairs) == exp.num_batches(epoch) - start
                for (x, y), (x2, y2) in pairs:
                    assert x.dtype == torch.long and torch.equal(x, x2) and torch.equal(y, y2)


@pytest.mark.parametrize("n", [26, 27, 33, 64, 65, 1001])
def test_the_count_of_chunks_is_the_length_of_their_list(n):
    """num_batches is arithmetic for a fixed bptt (the trainer asks at every log line; a large corpus has millions of
    chunks), and the random lengths are drawn once per epoch."""
    for kw in ({}, {"random_bptt": True, "seed": 2}):
        s = LMStream(torch.arange(n), 2, bptt=4, **kw)
        for epoch in (0, 1, 0):
            assert s.num_batches(epoch) == len(s.chunk_lengths(epoch)) == len(list(s.batches(epoch)))
            assert len(list(s.batches(epoch, start=3))) == max(0, s.num_batches(epoch) - 3)


def test_a_stream_of_narrow_ids_gives_int64_batches():
    s = LMStream(torch.arange(26, dtype=torch.uint8), 4, bptt=2)
    x, y = next(iter(s))
    assert x.dtype == y.dtype == torch.long and x[:, 1].tolist() == [6, 7] and y[:, 1].tolist() == [7, 8]


def test_ids_take_the_smallest_type_torch_has():
    assert [tc._dtype(n).name for n in (65, 256, 257, 32768, 32769)] == ["uint8", "uint8", "int16", "int16",
                                                                          "int32"]


# -- when an entry is used, rebuilt or refused -----------------------------------------------------------------------
def _entry_files(cache: Path) -> tuple[list[Path], list[Path]]:
    return sorted(cache.glob("*.json")), sorted(cache.glob("*.bin"))


def test_a_later_call_reuses_the_entry_and_a_touch_only_rehashes(tmp_path):
    f = _write(tmp_path / "t.txt", LINES * 20)
    _old(f)
    cache, notes = tmp_path / "cache", []
    c1, info = tc.cached_corpus(f, cache_dir=cache, note=notes.append)
    assert info.built and info.path.parent == cache
    (meta,), (bin_,) = _entry_files(cache)
    mtime = bin_.stat().st_mtime_ns
    c2, info = tc.cached_corpus(f, cache_dir=cache, note=notes.append)
    assert not info.built and c2.train.tolist() == c1.train.tolist()
    os.utime(f)  # touched: the same content, a new mtime
    _, info = tc.cached_corpus(f, cache_dir=cache, note=notes.append)
    assert not info.built and bin_.stat().st_mtime_ns == mtime and notes == []
    assert json.loads(meta.read_text())["sources"]["train"]["mtime_ns"] == f.stat().st_mtime_ns  # trusted next time


def test_an_edited_source_is_tokenised_again(tmp_path):
    f = _write(tmp_path / "t.txt", LINES * 20)
    _old(f)
    st = f.stat()
    cache, notes = tmp_path / "cache", []
    tc.cached_corpus(f, cache_dir=cache, level="word", note=notes.append)
    # the same size and the same mtime: only the ctime (and the hash) can tell
    _write(f, (LINES * 20).replace("lazy", "busy"))
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    c, info = tc.cached_corpus(f, cache_dir=cache, level="word", note=notes.append)
    assert info.built and "busy" in c.vocab.stoi and "lazy" not in c.vocab.stoi
    assert len(notes) == 1 and "changed since its tokens were cached" in notes[0] and str(f) in notes[0]
    assert len(_entry_files(cache)[1]) == 1  # the old array is gone


def test_another_level_or_option_is_another_entry(tmp_path):
    f = _write(tmp_path / "t.txt", LINES * 20)
    cache = tmp_path / "cache"
    for kw in ({}, {"level": "word"}, {"level": "word", "min_count": 2}, {"valid_fraction": 0.2}):
        _, info = tc.cached_corpus(f, cache_dir=cache, note=pytest.fail, **kw)
        assert info.built, kw
    assert len(_entry_files(cache)[0]) == 4
    _, info = tc.cached_corpus(f, cache_dir=cache, level="word", min_count=2, note=pytest.fail)
    assert not info.built


@pytest.mark.parametrize("damage", ["truncated bin", "missing bin", "garbage json", "json of another key",
                                    "split outside"])
def test_a_damaged_entry_is_rebuilt_with_a_note(damage, tmp_path):
    f = _write(tmp_path / "t.txt", LINES * 20)
    cache, notes = tmp_path / "cache", []
    ref, _ = tc.cached_corpus(f, cache_dir=cache)
    want = ref.train.tolist(), ref.valid.tolist()  # read now: ref maps the array that is damaged next
    (meta,), (bin_,) = _entry_files(cache)
    m = json.loads(meta.read_text())
    if damage == "truncated bin":
        bin_.write_bytes(bin_.read_bytes()[:-3])
    elif damage == "missing bin":
        bin_.unlink()
    elif damage == "garbage json":
        meta.write_bytes(b'{"format": 1, "key": \x00')
    elif damage == "json of another key":
        meta.write_text(json.dumps({**m, "key": {**m["key"], "level": "word"}}))
    else:
        m["splits"]["valid"][2] += 10
        meta.write_text(json.dumps(m))
    c, info = tc.cached_corpus(f, cache_dir=cache, note=notes.append)
    assert info.built and (c.train.tolist(), c.valid.tolist()) == want
    assert len(notes) == 1 and notes[0].startswith(f"the token cache {meta} is damaged (") and "rebuilding" in notes[0]
    assert len(_entry_files(cache)[1]) == 1 and not list(cache.glob("*.tmp"))


def test_an_unwritable_cache_directory_is_refused_not_fatal(tmp_path):
    f = _write(tmp_path / "t.txt", LINES * 20)
    blocker = _write(tmp_path / "a_file", "in the way\n")
    for where in (blocker, blocker / "sub"):
        with pytest.raises(tc.CacheUnavailable):
            tc.cached_corpus(f, cache_dir=where)


def test_a_valid_entry_is_used_without_writing(tmp_path, monkeypatch):
    """A later run takes neither the lock nor writes anything: a read-only cache directory serves it."""
    f = _write(tmp_path / "t.txt", LINES * 20)
    _old(f)
    cache = tmp_path / "cache"
    ref, _ = tc.cached_corpus(f, cache_dir=cache)

    def read_only(self):
        raise tc.CacheUnavailable(f"{self.dir}: Read-only file system")

    monkeypatch.setattr(tc._Entry, "locked", read_only)
    c, info = tc.cached_corpus(f, cache_dir=cache)
    assert not info.built and c.train.tolist() == ref.train.tolist()


# -- bad files: read_text's errors -----------------------------------------------------------------------------------
@pytest.mark.parametrize("raw", [b"", b"  \n\t\n", "héllo\n".encode() + b"ab\xff\xfecd", "日本".encode()[:-1],
                                 b"ok\n" * 3 + "é".encode()[:1] + b"x"])
def test_bad_files_are_read_text_s_errors(raw, tmp_path, small_chunks):
    f = tmp_path / "bad.txt"
    f.write_bytes(raw)
    with pytest.raises(DataError) as want:
        read_text(f)
    with pytest.raises(tc.SourceError) as got:
        tc.cached_corpus(f, cache_dir=tmp_path / "cache")
    assert str(got.value) == str(want.value) and got.value.split == "train"
    with pytest.raises(tc.SourceError, match="is a directory"):
        tc.cached_corpus(tmp_path, cache_dir=tmp_path / "cache")
    with pytest.raises(tc.SourceError, match="no such file") as e:
        tc.cached_corpus(f, tmp_path / "nope.txt", cache_dir=tmp_path / "cache")
    assert e.value.split == "valid"


def test_the_default_directory_and_when_it_is_used(tmp_path, monkeypatch):
    monkeypatch.setenv("RNNLAB_CACHE", str(tmp_path / "root"))
    assert tc.default_cache_dir() == tmp_path / "root" / "tokens"
    monkeypatch.delenv("RNNLAB_CACHE")
    assert tc.default_cache_dir() == Path(os.path.expanduser("~")) / ".cache" / "rnnlab" / "tokens"
    small, big = _write(tmp_path / "s.txt", "x\n"), tmp_path / "b.txt"
    big.write_bytes(b"y\n" * (tc.MIN_BYTES // 2))
    assert tc.choose_cache_dir(None, False, [small]) is None
    assert tc.choose_cache_dir(None, False, [big, None]) == tc.default_cache_dir()
    assert tc.choose_cache_dir(tmp_path / "c", False, [small]) == tmp_path / "c"
    assert tc.choose_cache_dir(tmp_path / "c", True, [big]) is None


# -- through the command line ----------------------------------------------------------------------------------------
@pytest.fixture
def corpus(tmp_path):
    f = _write(tmp_path / "text.txt", LINES * 6)
    _old(f)
    return f


def _state(run: Path) -> dict:
    return load_checkpoint(run / "last").model_state()


def test_train_twice_then_resume_and_eval_through_the_cache(tmp_path, corpus, capsys):
    cache = tmp_path / "cache"
    common = ["train", "lm", "--train", corpus, "--epochs", "2", "--random-bptt", "--dropout", "0.2", *TINY]
    rc, out, err = cli(capsys, *common, "--out", tmp_path / "plain", "--no-cache")
    assert rc == 0, err
    assert "token" not in out.split("\n")[0].split(";")[-1]  # no cache: the data line as before
    rc, out, err = cli(capsys, *common, "--out", tmp_path / "a", "--cache-dir", cache)
    assert rc == 0 and err == "", err
    assert f"tokens cached in {cache}" in out
    (bin_,) = _entry_files(cache)[1]
    mtime = bin_.stat().st_mtime_ns
    rc, out, err = cli(capsys, *common, "--out", tmp_path / "b", "--cache-dir", cache, "--max-steps", "9")
    assert rc == 0 and err == "" and f"tokens from the cache in {cache}" in out, err
    assert bin_.stat().st_mtime_ns == mtime
    rc, out, err = cli(capsys, "train", "lm", "--resume", tmp_path / "b", "--quiet", "--cache-dir", cache)
    assert rc == 0 and "tokens from the cache" in out, err
    want = _state(tmp_path / "plain")
    for run in ("a", "b"):  # cached, and cached + stopped + resumed: the weights of the in-memory run
        got = _state(tmp_path / run)
        assert all(torch.equal(got[k], want[k]) for k in want), run
    assert _entry_files(cache)[1] == [bin_]

    rc, ref, err = cli(capsys, "eval", tmp_path / "a", "--file", corpus, "--no-cache")
    assert rc == 0, err
    rc, got, err = cli(capsys, "eval", tmp_path / "a", "--file", corpus, "--cache-dir", cache)
    assert rc == 0 and err == "" and got == ref, err
    assert len(_entry_files(cache)[0]) == 2  # the eval's own entry: the whole file under this vocabulary
    rc, again, err = cli(capsys, "eval", tmp_path / "a", "--file", corpus, "--cache-dir", cache)
    assert rc == 0 and again == ref and len(_entry_files(cache)[0]) == 2


def test_eval_notes_and_refusals_are_the_in_memory_ones(tmp_path, corpus, capsys):
    cache = tmp_path / "cache"
    for level in ("char", "word"):
        run = tmp_path / level
        assert cli(capsys, "train", "lm", "--train", corpus, "--level", level, "--epochs", "1", "--out", run,
                   *TINY)[0] == 0
        other = _write(tmp_path / "other.txt", "the quick zebra\nQuux dog\n" * 3)
        a = cli(capsys, "eval", run, "--file", other, "--batch-size", "2", "--no-cache")
        b = cli(capsys, "eval", run, "--file", other, "--batch-size", "2", "--cache-dir", cache)
        assert a == b, level
        assert (a[0] == 2) == (level == "char") and ("not in the model's vocabulary" in a[2])
    assert not list(cache.glob("other.txt-char-*.json"))  # a refused file is not kept


def test_ngram_and_word_level_through_the_cache(tmp_path, corpus, capsys):
    common = ["train", "ngram", "--train", corpus, "--level", "word", "--order", "3", "--epochs", "1", "--hidden",
              "8", "--emb", "4", "--bptt", "5", "--batch-size", "2", "--eval-batch-size", "1", "--quiet"]
    assert cli(capsys, *common, "--out", tmp_path / "a", "--no-cache")[0] == 0
    rc, out, err = cli(capsys, *common, "--out", tmp_path / "b", "--cache-dir", tmp_path / "cache")
    assert rc == 0 and "tokens cached" in out, err
    a, b = _state(tmp_path / "a"), _state(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_the_default_directory_caches_large_files_only(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(tc, "default_cache_dir", lambda: tmp_path / "default")
    small = _write(tmp_path / "small.txt", LINES * 6)
    big = _write(tmp_path / "big.txt", LINES * (tc.MIN_BYTES // len(LINES) + 1))
    assert cli(capsys, "train", "lm", "--train", small, "--max-steps", "1", "--out", tmp_path / "s", *TINY)[0] == 0
    assert not (tmp_path / "default").exists()
    assert cli(capsys, "train", "lm", "--train", big, "--max-steps", "1", "--out", tmp_path / "n", "--no-cache",
               *TINY)[0] == 0
    assert not (tmp_path / "default").exists()
    rc, out, err = cli(capsys, "train", "lm", "--train", big, "--max-steps", "1", "--out", tmp_path / "b", *TINY)
    assert rc == 0 and f"tokens cached in {tmp_path / 'default'}" in out, err


def test_an_unusable_cache_directory_is_one_note_then_memory(tmp_path, corpus, capsys):
    blocker = _write(tmp_path / "a_file", "in the way\n")
    rc, out, err = cli(capsys, "train", "lm", "--train", corpus, "--epochs", "1", "--out", tmp_path / "r",
                       "--cache-dir", blocker / "sub", *TINY)
    assert rc == 0, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rnnlab: note: the token cache cannot be used (") \
        and "tokenising in memory" in lines[0] and str(blocker) in lines[0]
    assert "token" not in out.split("\n")[0].split(";")[-1]
    rc, out, err = cli(capsys, "eval", tmp_path / "r", "--file", corpus, "--cache-dir", blocker)
    assert rc == 0 and "ppl" in out and err.count("\n") == 1 and "cannot be used" in err


def test_bad_inputs_through_the_cache_are_one_line_errors(tmp_path, corpus, capsys):
    cache = ["--cache-dir", tmp_path / "cache", "--out", tmp_path / "o"]
    t = ["train", "lm", "--train"]
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    one_line_error(capsys, *t, tmp_path / "latin1.txt", *cache, must=["--train", "latin1.txt", "invalid UTF-8",
                                                                     "byte offset 3", "iconv"])
    _write(tmp_path / "empty.txt", "")
    one_line_error(capsys, *t, corpus, "--valid", tmp_path / "empty.txt", *cache,
                   must=["--valid", "empty.txt", "the file is empty"])
    one_line_error(capsys, *t, tmp_path, *cache, must=["--train", "is a directory"])
    one_line_error(capsys, *t, corpus, "--test", tmp_path / "nope.txt", *cache, must=["--test", "no such file"])
    assert not (tmp_path / "cache").exists()  # a bad file is found before anything is written
    one_line_error(capsys, *t, corpus, "--no-cache", *cache, must=["--no-cache", "--cache-dir", "drop one"])
    one_line_error(capsys, "train", "lm", "--stdlib-demo", *cache, must=["--cache-dir", "--stdlib-demo", "Drop"])
    one_line_error(capsys, *t, _write(tmp_path / "one.txt", "one line"), "--level", "word", *cache,
                   must=["one.txt", "too short to split off a validation part"])
    one_line_error(capsys, "eval", tmp_path / "missing", "--file", corpus, "--cache-dir", tmp_path / "cache",
                   must=["no such checkpoint"])
    assert cli(capsys, *t, corpus, "--epochs", "1", "--out", tmp_path / "run", *TINY)[0] == 0
    one_line_error(capsys, "eval", tmp_path / "run", "--file", tmp_path / "latin1.txt", "--cache-dir",
                   tmp_path / "cache", must=["--file", "latin1.txt", "invalid UTF-8"])
    one_line_error(capsys, "eval", tmp_path / "run", "--file", tmp_path / "empty.txt", "--cache-dir",
                   tmp_path / "cache", must=["--file", "empty.txt", "empty"])


def test_resume_refuses_changed_data_before_tokenising_it(tmp_path, corpus, capsys):
    cache = tmp_path / "cache"
    assert cli(capsys, "train", "lm", "--train", corpus, "--epochs", "2", "--max-steps", "3", "--out",
               tmp_path / "r", "--cache-dir", cache, *TINY)[0] == 0
    _write(corpus, LINES * 6 + "more\n")
    one_line_error(capsys, "train", "lm", "--resume", tmp_path / "r", "--cache-dir", cache,
                   must=["changed since the checkpoint"])
    assert len(_entry_files(cache)[1]) == 1  # nothing was built for the changed file


def test_two_processes_share_one_cache_directory(tmp_path):
    """torchrun: both ranks find no entry; one builds it under the lock, the other waits and maps it. The result is
    the one-process run without a cache."""
    text = _write(tmp_path / "text.txt", LINES * 6)
    lm = ["--hidden", "12", "--bptt", "8", "--batch-size", "4", "--eval-batch-size", "3", "--epochs", "1", "--quiet"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONIOENCODING="utf-8",
               PYTHONPATH=os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")])))
    for r in (0, 1):
        (tmp_path / f"rank{r}").mkdir()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "--no-python",
           "sh", "-c", 'cd "rank$RANK" && exec "$0" -m rnnlab "$@"', sys.executable, "train", "lm", "--train",
           str(text), "--out", "run", "--cache-dir", str(tmp_path / "cache"), *lm]
    r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, encoding="utf-8", timeout=300,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 0 and "Traceback" not in r.stderr, f"{r.stdout[-2000:]}\n{r.stderr[-4000:]}"
    assert "tokens cached in" in r.stdout or "tokens from the cache" in r.stdout
    env.pop("WORLD_SIZE", None)
    one = subprocess.run([sys.executable, "-m", "rnnlab", "train", "lm", "--train", str(text), "--out",
                          str(tmp_path / "one"), "--no-cache", *lm], env=env, capture_output=True, encoding="utf-8",
                         timeout=300, stdin=subprocess.DEVNULL)
    assert one.returncode == 0, one.stderr
    got, want = _state(tmp_path / "rank0" / "run"), _state(tmp_path / "one")
    for k in want:
        assert torch.allclose(got[k], want[k], atol=1e-5, rtol=0), k
    jsons, bins = _entry_files(tmp_path / "cache")
    assert len(jsons) == 1 and len(bins) == 1 and not list((tmp_path / "cache").glob("*.tmp"))
    assert np.fromfile(bins[0], dtype=np.uint8).size == len(LINES * 6)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="the benchmark samples /proc/PID/status (Linux)")
def test_the_benchmark_runs_on_a_small_corpus(tmp_path):
    """benchmarks/corpus_cache.py on a tiny point: exits 0 and prints its tables (it measures; nothing is timed
    here)."""
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "corpus_cache.py"
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "mine.txt").write_text("not the benchmark's\n", encoding="utf-8")
    r = subprocess.run([sys.executable, str(script), "--size-mb", "0.3", "--levels", "char", "--steps", "1",
                        "--eval-batches", "1", "--rate-steps", "0", "--dir", str(tmp_path / "b")],
                       capture_output=True, encoding="utf-8", timeout=600,
                       env=dict(os.environ, PYTHONIOENCODING="utf-8"))
    assert r.returncode == 0, r.stderr[-3000:]
    for row in ("| in memory (--no-cache) |", "| first start: tokenise + cache |", "| later start: cache |",
                "| --resume: cache |", "| cache, later start |"):
        assert row in r.stdout, row
    # the corpora, the cache and the runs are removed; nothing else in --dir
    assert [f.name for f in (tmp_path / "b").iterdir()] == ["mine.txt"]
