"""Input outside a model's vocabulary is said, not swallowed: ``translate``, ``predict`` (tagger, classifier,
--ensemble), ``eval`` and ``generate --prompt`` print one ``rnnlab: note: ...`` line on stderr naming how many
tokens were read as <unk> and which; refuse (one line ``rnnlab: error: ...``, exit code 2, nothing written) when
the vocabulary has no <unk>; and print nothing extra when every token is known. Tiny models trained in a few steps
(the data and sizes of tests/test_cli_*.py)."""
from __future__ import annotations

import io
import json
import shutil
from collections import Counter

import pytest

from rnnlab.cli import unknown
from rnnlab.cli.main import main
from rnnlab.cli.options import UsageError
from rnnlab.data.conllu import SymbolVocab
from rnnlab.train.seq2seq import load_seq2seq
from rnnlab.train.tagging import load_tagger

from cli_helpers import cli, one_line_error
from test_cli_classify import TINY as CLASSIFY_TINY
from test_cli_classify import examples
from test_cli_lm import TEXT
from test_cli_lm import TINY as LM_TINY
from test_cli_seq2seq import TINY as SEQ2SEQ_TINY
from test_cli_tag import TINY as TAG_TINY
from test_cli_tag import conllu_text

NOTE, ERROR = "rnnlab: note: ", "rnnlab: error: "


def notes(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith(NOTE)]


def train(*argv) -> None:
    rc = main([str(a) for a in argv])
    assert rc == 0


def without_unk(run, tmp_path):
    """A copy of ``run`` whose word vocabulary lists no <unk> among its specials (best/ and last/)."""
    copy = tmp_path / f"{run.name}-no-unk"
    shutil.copytree(run, copy)
    for sub in ("best", "last"):
        f = copy / sub / "checkpoint.json"
        if f.exists():
            meta = json.loads(f.read_text(encoding="utf-8"))
            meta["vocab"]["words"]["specials"] = ["<pad>"]
            f.write_text(json.dumps(meta), encoding="utf-8")
    return copy


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One tiny run of each kind: seq2seq (reverse over a-j), tagger, two classifiers (the second never saw 'plot'),
    char LMs without and with <unk>, a word LM."""
    d = tmp_path_factory.mktemp("unknown")
    out = {}
    out["seq2seq"] = d / "rev"
    train("train", "seq2seq", "--task", "reverse", "--out", out["seq2seq"], *SEQ2SEQ_TINY)

    (d / "train.conllu").write_text(conllu_text(40, 0), encoding="utf-8")
    out["tag"] = d / "tag"
    train("train", "tag", "--train", d / "train.conllu", "--valid", d / "train.conllu", "--epochs", "1",
          "--out", out["tag"], *TAG_TINY)

    data = examples(120, 0)
    (d / "train.tsv").write_text("".join(f"{t}\t{y}\n" for y, t in data), encoding="utf-8")
    (d / "noplot.tsv").write_text("".join(f"{t}\t{y}\n" for y, t in data if "plot" not in t.split()),
                                  encoding="utf-8")
    for name, f in (("classify", "train.tsv"), ("classify_noplot", "noplot.tsv")):
        out[name] = d / name
        train("train", "classify", "--train", d / f, "--valid", d / f, "--epochs", "1", "--out", out[name],
              *CLASSIFY_TINY)

    (d / "text.txt").write_text(TEXT, encoding="utf-8")
    (d / "valid_Z.txt").write_text("the lazy Zebra\n" * 4, encoding="utf-8")
    out["char"] = d / "char"  # the last 10% of TEXT is its validation text: no new characters, so no <unk>
    train("train", "lm", "--train", d / "text.txt", "--epochs", "1", "--out", out["char"], *LM_TINY)
    out["char_unk"] = d / "char_unk"  # a validation text with 'Z' (not in TEXT): the vocabulary gets <unk>
    train("train", "lm", "--train", d / "text.txt", "--valid", d / "valid_Z.txt", "--epochs", "1",
          "--out", out["char_unk"], *LM_TINY)
    out["word"] = d / "word"
    train("train", "lm", "--train", d / "text.txt", "--level", "word", "--epochs", "1", "--out", out["word"],
          *LM_TINY)
    return out


# -- the shared helper -------------------------------------------------------------------------------------------
def test_count_and_word_the_unknown_tokens(capsys):
    known = SymbolVocab(["<pad>", "<unk>", "a", "b"])
    counts, total = unknown.count_unknown(known, ["ab a", "zz", "<unk>"])
    assert counts == Counter({" ": 1, "z": 2, "<": 1, "u": 1, "n": 1, "k": 1, ">": 1}) and total == 11
    counts, total = unknown.count_unknown(known, [["a", "<unk>", "zebra"], ["zebra"]])  # a literal <unk> is known
    assert counts == Counter({"zebra": 2}) and total == 4
    assert unknown.describe_tokens(Counter({" ": 3, "z": 1})) == "' ' ×3, 'z' ×1"
    assert unknown.describe_tokens(Counter("abcdefgg")) == "'g' ×2, 'a' ×1, 'b' ×1, 'c' ×1, 'd' ×1 and 2 others"
    assert unknown.describe_tokens(Counter({"é": 1, "x" * 40: 1})) == "'é' U+00E9 ×1, '" + "x" * 23 + "…' ×1"
    note = unknown.unknown_note(Counter({" ": 3, "z": 1}), 11, unit="characters", where="--file in.txt",
                                has_unk=True, fix="")
    assert note == ("4 of 11 characters in --file in.txt are not in the model's vocabulary (' ' ×3, 'z' ×1); they "
                    "were read as <unk>")
    assert unknown.unknown_note(Counter(), 11, unit="characters", where="x", has_unk=False, fix="") == ""
    with pytest.raises(UsageError, match=r"^1 of 1 word in --prompt is not in the model's vocabulary \('zebra' ×1\), "
                                         r"which has no <unk> token to read it as; drop it$"):
        unknown.unknown_note(Counter({"zebra": 1}), 1, unit="words", where="--prompt", has_unk=False, fix="drop it")
    unknown.say("")
    assert capsys.readouterr().err == ""


# -- translate -----------------------------------------------------------------------------------------------------
def test_translate_says_the_unknown_characters(runs, tmp_path, capsys, monkeypatch):
    f = tmp_path / "in.txt"
    f.write_text("abcd\na b c d\nzz\n", encoding="utf-8")
    rc, out, err = cli(capsys, "translate", runs["seq2seq"], "--file", f)
    assert rc == 0 and len(out.splitlines()) == 3
    assert notes(err) == [f"{NOTE}5 of 13 characters in --file {f} are not in the model's vocabulary (' ' ×3, "
                          "'z' ×2); they were read as <unk>"]
    monkeypatch.setattr("sys.stdin", io.StringIO("a b\n"))
    rc, out, err = cli(capsys, "translate", runs["seq2seq"])
    assert rc == 0 and notes(err) == [f"{NOTE}1 of 3 characters in stdin is not in the model's vocabulary "
                                      "(' ' ×1); it was read as <unk>"]
    f.write_text("abcd\nhgfe\tefgh\n", encoding="utf-8")  # every source character known (targets are not read)
    rc, out, err = cli(capsys, "translate", runs["seq2seq"], "--file", f)
    assert rc == 0 and not notes(err) and len(err.splitlines()) == 1 and err.startswith("decoded 2 lines")


def test_translate_refuses_without_unk(runs, tmp_path, capsys, monkeypatch):
    def no_unk(*args, **kwargs):  # a source vocabulary without <unk> (every seq2seq vocabulary has one today)
        model, vocab, ckpt = load_seq2seq(*args, **kwargs)
        vocab.src.specials = ("<pad>",)
        return model, vocab, ckpt

    monkeypatch.setattr("rnnlab.cli.translate.load_seq2seq", no_unk)
    f, o = tmp_path / "in.txt", tmp_path / "out.txt"
    f.write_text("a b\n", encoding="utf-8")
    one_line_error(capsys, "translate", runs["seq2seq"], "--file", f, "--output", o,
                   must=[f"1 of 3 characters in --file {f} is not in the model's vocabulary (' ' ×1)",
                         "has no <unk>", "remove these characters from the sources, or retrain"])
    assert not o.exists()


# -- predict -------------------------------------------------------------------------------------------------------
def test_predict_tagger_says_the_unknown_words(runs, tmp_path, capsys):
    _, vocab, _ = load_tagger(runs["tag"])
    a, b = vocab.words.itos[2:4]
    f = tmp_path / "in.txt"
    f.write_text(f"{a} zzzing {b}\nqux zzzing\n", encoding="utf-8")
    rc, out, err = cli(capsys, "predict", runs["tag"], "--file", f)
    assert rc == 0 and len(out.splitlines()) == 2
    assert notes(err) == [f"{NOTE}3 of 5 words in --file {f} are not in the model's vocabulary ('zzzing' ×2, "
                          "'qux' ×1); they were read as <unk>"]
    assert "(3 unknown to the model)" in err  # the summary line still counts them
    f.write_text(f"{a} {b}\n{b}\n", encoding="utf-8")
    rc, out, err = cli(capsys, "predict", runs["tag"], "--file", f)
    assert rc == 0 and not notes(err) and len(err.splitlines()) == 1
    f.write_text(f"{a} qux\n", encoding="utf-8")
    o = tmp_path / "o.txt"
    one_line_error(capsys, "predict", without_unk(runs["tag"], tmp_path), "--file", f, "--output", o,
                   must=[f"1 of 2 words in --file {f} is not in the model's vocabulary ('qux' ×1)",
                         "has no <unk>", "remove these words, or retrain"])
    assert not o.exists()


def test_predict_classifier_says_the_unknown_words(runs, tmp_path, capsys):
    f = tmp_path / "in.txt"
    f.write_text("the plot was zorgle good\nzorgle movie\n", encoding="utf-8")
    rc, out, err = cli(capsys, "predict", runs["classify"], "--file", f)
    assert rc == 0 and len(out.splitlines()) == 2
    assert notes(err) == [f"{NOTE}2 of 7 words in --file {f} are not in the model's vocabulary ('zorgle' ×2); they "
                          "were read as <unk>"]
    # --ensemble: each model reads the text with its own vocabulary, so each says what it lacks
    rc, out, err = cli(capsys, "predict", runs["classify"], "--ensemble", runs["classify_noplot"], "--file", f)
    assert rc == 0 and notes(err) == [
        f"{NOTE}2 of 7 words in --file {f} are not in the vocabulary of {runs['classify'] / 'best'} ('zorgle' ×2); "
        "they were read as <unk>",
        f"{NOTE}3 of 7 words in --file {f} are not in the vocabulary of {runs['classify_noplot'] / 'best'} "
        "('zorgle' ×2, 'plot' ×1); they were read as <unk>"]
    f.write_text("the plot was good\n", encoding="utf-8")
    rc, out, err = cli(capsys, "predict", runs["classify"], "--ensemble", runs["classify"], "--file", f)
    assert rc == 0 and not notes(err) and len(err.splitlines()) == 1
    o = tmp_path / "o.tsv"
    f.write_text("the plot was zorgle good\n", encoding="utf-8")
    one_line_error(capsys, "predict", without_unk(runs["classify"], tmp_path), "--file", f, "--output", o,
                   must=[f"1 of 5 words in --file {f} is not in the model's vocabulary ('zorgle' ×1)",
                         "has no <unk>", "remove these words, or retrain"])
    assert not o.exists()


# -- eval and generate -------------------------------------------------------------------------------------------
def test_char_lm_without_unk_refuses_unknown_characters(runs, tmp_path, capsys):
    f = tmp_path / "q.txt"
    f.write_text("The Quick Zebra\tjumps\n" * 3, encoding="utf-8")
    one_line_error(capsys, "eval", runs["char"], "--file", f, "--batch-size", "2",
                   must=[f"12 of 66 characters in --file {f} are not in the model's vocabulary ('T' ×3, 'Q' ×3, "
                         "'Z' ×3, '\\t' ×3)", "which has no <unk> token to read them as",
                         "remove or replace these characters, or retrain", "--valid"])
    one_line_error(capsys, "generate", runs["char"], "--prompt", "Zebra É",
                   must=["2 of 7 characters in --prompt are not in the model's vocabulary ('Z' ×1, 'É' U+00C9 ×1)",
                         "has no <unk>"])
    f.write_text(TEXT[:200], encoding="utf-8")
    rc, out, err = cli(capsys, "eval", runs["char"], "--file", f, "--batch-size", "2")
    assert rc == 0 and err == "" and "ppl" in out
    rc, out, err = cli(capsys, "generate", runs["char"], "--prompt", "the ", "--max-tokens", "5")
    assert rc == 0 and err == "" and out.startswith("the ")


def test_char_lm_with_unk_notes_unknown_characters(runs, tmp_path, capsys):
    f = tmp_path / "q.txt"
    f.write_text("the Quick\n" * 4, encoding="utf-8")
    rc, out, err = cli(capsys, "eval", runs["char_unk"], "--file", f, "--batch-size", "2")
    assert rc == 0 and "ppl" in out and "4 of them <unk>" in out
    assert err.splitlines() == [f"{NOTE}4 of 40 characters in --file {f} are not in the model's vocabulary "
                                "('Q' ×4); they were read as <unk>"]
    rc, out, err = cli(capsys, "generate", runs["char_unk"], "--prompt", "QQ the", "--max-tokens", "5", "--samples",
                       "2")
    assert rc == 0 and out.count("--- sample") == 2
    assert err.splitlines() == [f"{NOTE}2 of 6 characters in --prompt are not in the model's vocabulary ('Q' ×2); "
                                "they were read as <unk>"]  # once, not once per sample


def test_word_lm_notes_unknown_words(runs, tmp_path, capsys):
    f = tmp_path / "w.txt"
    f.write_text("the zebra jumps <unk> over the zebra\nthe lazy dog\n", encoding="utf-8")
    rc, out, err = cli(capsys, "eval", runs["word"], "--file", f, "--batch-size", "1")
    assert rc == 0 and "3 of them <unk>" in out  # the literal <unk> is read as itself, and not counted as unknown
    assert err.splitlines() == [f"{NOTE}2 of 10 words in --file {f} are not in the model's vocabulary "
                                "('zebra' ×2); they were read as <unk>"]
    rc, out, err = cli(capsys, "generate", runs["word"], "--prompt", "the zebra", "--max-tokens", "3")
    assert rc == 0 and err.splitlines() == [f"{NOTE}1 of 2 words in --prompt is not in the model's vocabulary "
                                            "('zebra' ×1); it was read as <unk>"]
    rc, out, err = cli(capsys, "generate", runs["word"], "--prompt", "the <unk> dog", "--max-tokens", "3")
    assert rc == 0 and err == ""
    # a bad --stop stays the one error line (no note before it)
    one_line_error(capsys, "generate", runs["word"], "--prompt", "the zebra", "--stop", "nope",
                   must=["stop token 'nope'"])


def test_bpe_lm_reads_any_text(tmp_path, capsys):
    pytest.importorskip("tokenizers")
    (tmp_path / "text.txt").write_text(TEXT, encoding="utf-8")
    train("train", "lm", "--train", tmp_path / "text.txt", "--level", "bpe", "--bpe-vocab", "300", "--epochs", "1",
          "--out", tmp_path / "bpe", *LM_TINY)
    capsys.readouterr()
    rc, out, err = cli(capsys, "generate", tmp_path / "bpe", "--prompt", "Zebra É\t", "--max-tokens", "3")
    assert rc == 0 and err == ""
