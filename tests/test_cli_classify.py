"""``rnnlab train classify`` and ``rnnlab predict`` with a classifier on tiny labelled files: a run that learns a toy
rule (positive exactly when the word "good" appears) far above chance, its checkpoint, the final report, predicting
new lines and a labelled file, an exact resume, bad input as one line ``rnnlab: error: ...`` with exit code 2, and
the examples in ``--help``."""
from __future__ import annotations

import json
import random

import pytest
import safetensors.torch

from rnnlab.cli.main import build_parser, main
from rnnlab.cli.options import UsageError
from rnnlab.data.labeled import TextVocab
from rnnlab.train.supervised import load_sequence_model

from cli_helpers import check_checkpoint_every, cli, one_line_error

WORDS = "the a movie film plot actor scene was is very quite not really story music".split()
TINY = ["--emb", "16", "--hidden", "16", "--dropout", "0", "--batch-size", "16", "--lr", "0.01", "--min-count", "1",
        "--quiet"]


def examples(n: int, seed: int) -> list[tuple[str, str]]:
    """(label, text): 'pos' exactly when the text has the word 'good' somewhere."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(2, 9))]
        positive = rng.random() < 0.5
        if positive:
            words.insert(rng.randrange(len(words) + 1), "good")
        out.append(("pos" if positive else "neg", " ".join(words)))
    return out


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("classify")
    (d / "train.tsv").write_text("".join(f"{t}\t{y}\n" for y, t in examples(320, 0)), encoding="utf-8")
    (d / "dev.tsv").write_text("".join(f"{t}\t{y}\n" for y, t in examples(80, 1)), encoding="utf-8")
    (d / "test.txt").write_text("".join(f"{y} {t}\n" for y, t in examples(100, 2)), encoding="utf-8")
    return d


def run_predict(*args):
    ns = build_parser().parse_args(["predict", *map(str, args)])
    return ns.run(ns)


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "run"
    rc = main(["train", "classify", "--train", str(data / "train.tsv"), "--valid", str(data / "dev.tsv"),
               "--test", str(data / "dev.tsv"), "--epochs", "4", "--out", str(out), *TINY])
    assert rc == 0
    return out


def test_learns_the_rule_and_writes_a_checkpoint(trained, data):
    out = trained
    assert (out / "best" / "model.safetensors").exists() and (out / "last" / "checkpoint.json").exists()
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["epoch"] for r in records if r["kind"] == "epoch"] == [1, 2, 3, 4]
    test = [r for r in records if r["kind"] == "test"][0]
    assert test["n"] == 80 and test["labels"] == ["neg", "pos"] and test["accuracy"] > 0.9  # chance: ~0.5
    model, ckpt = load_sequence_model(out)
    vocab = TextVocab.from_json(ckpt.meta["vocab"])
    assert ckpt.path.name == "best" and vocab.labels == ["neg", "pos"] and "good" in vocab.words
    assert model.config["bidirectional"] and model.config["pooling"] == "max" and model.n_outputs == 2
    assert ckpt.meta["input_format"]["label_column"] == 1 and ckpt.meta["run"]["kind"] == "classify"


def test_prints_data_model_and_the_final_report(data, tmp_path, capsys):
    rc, out, err = cli(capsys, "train", "classify", "--train", data / "train.tsv", "--valid", data / "dev.tsv",
                       "--test", data / "test.txt", "--epochs", "1", "--out", tmp_path / "r", *TINY[:-1])
    assert rc == 0, err
    assert "data: " in out and "320 examples (tab-separated, label column 1, text column 0)" in out
    assert "2 classes" in out and "BiLSTM(16)" in out and "epoch   1/1  train loss" in out
    assert "valid (best weights): accuracy" in out and "test (best weights): accuracy " in out
    assert "class      precision  recall     F1  support" in out and "confusion matrix" in out


def test_predict_new_lines_and_a_labelled_file(trained, data, tmp_path, capsys):
    (tmp_path / "new.txt").write_text("the film was good\n\nnot really a movie\ngood good plot\n", encoding="utf-8")
    assert run_predict(trained, "--file", tmp_path / "new.txt", "--output", tmp_path / "o.tsv") == 0
    assert (tmp_path / "o.tsv").read_text(encoding="utf-8").splitlines() == [
        "pos\tthe film was good", "neg\tnot really a movie", "pos\tgood good plot"]
    assert "classified 3 texts" in capsys.readouterr().err
    assert run_predict(trained, "--file", data / "dev.tsv") == 0  # the training format: labels known → accuracy
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 80 and all(line.split("\t")[0] in ("pos", "neg") for line in out.splitlines())
    assert "accuracy against the file's labels" in err and float(err.rsplit(" ", 1)[1].rstrip("%\n")) > 90
    with pytest.raises(UsageError, match="--format slash is a tagger's output"):
        run_predict(trained, "--file", tmp_path / "new.txt", "--format", "slash")
    with pytest.raises(UsageError, match=r"--file .*new.txt: line 1: .*has no tab"):
        run_predict(trained, "--file", tmp_path / "new.txt", "--input-format", "labeled")


def test_resume_continues_exactly(data, tmp_path, capsys):
    args = ["train", "classify", "--train", data / "train.tsv", "--valid", data / "dev.tsv", "--epochs", "2", *TINY]
    assert cli(capsys, *args, "--out", tmp_path / "a")[0] == 0
    rc, out, _ = cli(capsys, *args, "--out", tmp_path / "b", "--max-steps", "7")
    assert rc == 0 and "stopped: reached max_steps=7 at epoch 1, batch 7/20" in out
    rc, out, err = cli(capsys, "train", "classify", "--resume", tmp_path / "b", "--quiet")
    assert rc == 0 and "resuming" in out, err
    a = safetensors.torch.load_file(str(tmp_path / "a" / "last" / "model.safetensors"))
    b = safetensors.torch.load_file(str(tmp_path / "b" / "last" / "model.safetensors"))
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    one_line_error(capsys, "train", "classify", "--resume", tmp_path / "b", "--pooling", "mean",
                   must=["--pooling cannot change when resuming"])


def test_bad_input_is_one_line_with_exit_code_2(data, tmp_path, capsys):
    bad = tmp_path / "bad.tsv"
    bad.write_text("good film\tpos\nbad film\tneg\nno tab here\n", encoding="utf-8")
    one_line_error(capsys, "train", "classify", "--train", bad, "--out", tmp_path / "r",
                   must=["--train ", "bad.tsv: line 3: ", "has no tab", "--format space"])
    bad.write_text("good film\tpos\n\tneg\nfine\tpos\nmeh\tneg\n", encoding="utf-8")
    one_line_error(capsys, "train", "classify", "--train", bad, "--label-column", "last", "--out", tmp_path / "r",
                   must=["bad.tsv: line 2: the text is empty"])
    one_line_error(capsys, "train", "classify", "--train", data / "train.tsv", "--valid", data / "test.txt",
                   "--format", "tsv", "--out", tmp_path / "r", must=["--valid ", "test.txt: line 1: ", "has no tab"])
    (tmp_path / "latin1.tsv").write_bytes("cr\xe8me br\xfbl\xe9e\tpos\n".encode("latin-1"))
    one_line_error(capsys, "train", "classify", "--train", tmp_path / "latin1.tsv",
                   must=["latin1.tsv: line 1: invalid UTF-8"])
    one_line_error(capsys, "train", "classify", "--train", tmp_path / "missing.tsv", must=["no such file"])
    one_line_error(capsys, "train", "classify", "--valid", data / "dev.tsv", must=["--train FILE is required"])
    one_line_error(capsys, "train", "classify", "--train", data / "train.tsv", "--patience", "2",
                   must=["--patience 2 watches the validation loss"])
    one_line_error(capsys, "train", "classify", "--train", data / "train.tsv", "--pooling", "sum",
                   must=["--pooling: invalid choice"])
    (tmp_path / "dev.tsv").write_text("good\tmaybe\nbad film\tneg\n", encoding="utf-8")
    one_line_error(capsys, "train", "classify", "--train", data / "train.tsv", "--valid", tmp_path / "dev.tsv",
                   "--out", tmp_path / "r", must=["dev.tsv: line 1: label 'maybe' does not occur in the training"])


def test_help_has_examples(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "classify", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and "stsa.binary.train" in out and "--label-column" in out and "--pooling" in out
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "classify" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        run_predict("--help")
    assert "rnnlab train classify" in capsys.readouterr().out


def test_checkpoint_every_saves_last_within_an_epoch(data, tmp_path, capsys, monkeypatch):
    # 320 lines in batches of 16: 20 batches per epoch
    check_checkpoint_every(capsys, monkeypatch, ("train", "classify"), ["--train", data / "train.tsv", "--valid",
                           data / "dev.tsv", *TINY], tmp_path / "run")
