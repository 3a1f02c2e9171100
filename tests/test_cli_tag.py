"""``rnnlab train tag`` and ``rnnlab predict`` on a tiny CoNLL-U file: training end to end (checkpoints, metrics,
the final accuracy lines), an exact resume, tagging CoNLL-U and plain text, and bad input as one line
``rnnlab: error: ...`` with exit code 2.

``run_predict`` parses with the real ``rnnlab`` parser (``build_parser``) and calls the subcommand directly, so a
test can assert on the ``UsageError`` itself; ``main()`` turning it into one line is tested once below."""
from __future__ import annotations

import json
import random

import pytest
import safetensors.torch

from rnnlab.cli.main import build_parser, main
from rnnlab.cli.options import UsageError
from rnnlab.data.conllu import parse_conllu
from rnnlab.train.tagging import load_tagger

from cli_helpers import check_checkpoint_every, cli, one_line_error

SUFFIXES = {"ing": "VERB", "ly": "ADV", "tion": "NOUN", "ful": "ADJ"}
TINY = ["--emb", "8", "--char-emb", "6", "--char-hidden", "8", "--hidden", "12", "--layers", "1", "--dropout", "0",
        "--batch-size", "8", "--lr", "0.02", "--quiet"]


def conllu_text(n: int, seed: int) -> str:
    """n sentences of suffix-tagged words; the first has a multiword token (1-2) and an empty node (2.1)."""
    rng = random.Random(seed)
    stems = ["ba", "ko", "mi", "tu", "ze", "pa", "ro", "vi"]
    out = []
    for k in range(n):
        words = [rng.choice(stems) + rng.choice(list(SUFFIXES)) for _ in range(rng.randint(2, 6))]
        lines = [f"# sent_id = {k + 1}"]
        for i, w in enumerate(words, start=1):
            if k == 0 and i == 1:
                lines.append(f"1-2\t{words[0]}{words[1]}\t_\t_\t_\t_\t_\t_\t_\t_")
            lines.append(f"{i}\t{w}\t_\t{SUFFIXES[next(x for x in SUFFIXES if w.endswith(x))]}\tXX\t_\t_\t_\t_\t_")
            if k == 0 and i == 2:
                lines.append(f"2.1\t{w}\t_\tVERB\tXX\t_\t_\t_\t_\t_")
        out.append("\n".join(lines) + "\n\n")
    return "".join(out)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("tag")
    (d / "train.conllu").write_text(conllu_text(40, 0), encoding="utf-8")
    (d / "dev.conllu").write_text(conllu_text(12, 1), encoding="utf-8")
    return d


def run_predict(*args):
    ns = build_parser().parse_args(["predict", *map(str, args)])
    return ns.run(ns)


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "run"
    rc = main(["train", "tag", "--train", str(data / "train.conllu"), "--valid", str(data / "dev.conllu"), "--test",
               str(data / "dev.conllu"), "--epochs", "6", "--out", str(out), *TINY])
    assert rc == 0
    return out


def test_train_tag_end_to_end(trained, data, capsys):
    out = trained
    assert (out / "best" / "model.safetensors").exists() and (out / "last" / "checkpoint.json").exists()
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["epoch"] for r in records if r["kind"] == "epoch"] == [1, 2, 3, 4, 5, 6]
    test = [r for r in records if r["kind"] == "test"][0]
    assert test["tokens"] == sum(len(s.words) for s in parse_conllu((data / "dev.conllu").read_text(encoding="utf-8")))
    assert test["accuracy"] > 0.9 and set(test["per_tag"]) == {"VERB", "ADV", "NOUN", "ADJ"}
    model, vocab, ckpt = load_tagger(out)
    assert ckpt.path.name == "best" and vocab.column == "upos" and model.config["char_hidden"] == 8
    assert "2.1" not in vocab.words.itos and len(vocab.tags) == 4


def test_train_tag_prints_progress_and_the_final_accuracies(data, tmp_path, capsys):
    rc, out, err = cli(capsys, "train", "tag", "--train", data / "train.conllu", "--valid", data / "dev.conllu",
                       "--test", data / "dev.conllu", "--epochs", "1", "--out", tmp_path / "r", *TINY[:-1])
    assert rc == 0, err
    assert "data: " in out and "40 sentences" in out and "4 UPOS tags" in out and "epoch   1/1  train loss" in out
    assert "valid (best weights): accuracy" in out and "test (best weights): accuracy " in out
    assert "unknown words " in out and "tag        precision" in out


def test_lr_schedule_flags(data, tmp_path, capsys):
    rc, out, err = cli(capsys, "train", "tag", "--train", data / "train.conllu", "--valid", data / "dev.conllu",
                       "--epochs", "3", "--lr-decay", "0.5", "--decay-start", "1", "--out", tmp_path / "r", *TINY[:-1])
    assert rc == 0, err
    lrs = [json.loads(line)["lr"] for line in (tmp_path / "r" / "metrics.jsonl").read_text(encoding="utf-8")
           .splitlines() if json.loads(line)["kind"] == "epoch"]
    assert lrs == pytest.approx([lrs[0], lrs[0] / 2, lrs[0] / 4])  # the rate each epoch ran at: halved each epoch
    one_line_error(capsys, "train", "tag", "--train", data / "train.conllu", "--plateau", "--out", tmp_path / "x",
                   must=["--plateau", "--valid"])
    one_line_error(capsys, "train", "tag", "--train", data / "train.conllu", "--valid", data / "dev.conllu",
                   "--decay-start", "2", "--out", tmp_path / "y", must=["--decay-start", "--lr-decay"])


def test_resume_continues_exactly(data, tmp_path, capsys):
    args = ["train", "tag", "--train", data / "train.conllu", "--valid", data / "dev.conllu", "--epochs", "2", *TINY]
    assert cli(capsys, *args, "--out", tmp_path / "a")[0] == 0
    rc, out, _ = cli(capsys, *args, "--out", tmp_path / "b", "--max-steps", "3")
    assert rc == 0 and "stopped: reached max_steps=3 at epoch 1, batch 3/5" in out
    rc, out, err = cli(capsys, "train", "tag", "--resume", tmp_path / "b", "--quiet")
    assert rc == 0 and "resuming" in out, err
    a = safetensors.torch.load_file(str(tmp_path / "a" / "last" / "model.safetensors"))
    b = safetensors.torch.load_file(str(tmp_path / "b" / "last" / "model.safetensors"))
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    one_line_error(capsys, "train", "tag", "--resume", tmp_path / "b", "--hidden", "5",
                   must=["--hidden cannot change when resuming"])


def test_predict_conllu_and_plain_text(trained, data, tmp_path, capsys):
    assert run_predict(trained, "--file", data / "dev.conllu") == 0
    out, err = capsys.readouterr()
    gold, tagged = parse_conllu((data / "dev.conllu").read_text(encoding="utf-8")), parse_conllu(out)
    assert [s.words for s in tagged] == [s.words for s in gold]
    assert [s.lines[0] for s in tagged] == [s.lines[0] for s in gold]  # comments kept
    assert "tagged 12 sentences" in err and "accuracy against the file's UPOS column" in err
    acc = float(err.rsplit(" ", 1)[1].rstrip("%\n"))
    assert acc > 90

    (tmp_path / "in.txt").write_text("baing kotion\n\nzeful miing roly\n", encoding="utf-8")
    assert run_predict(trained, "--file", tmp_path / "in.txt", "--output", tmp_path / "o.txt") == 0
    lines = (tmp_path / "o.txt").read_text(encoding="utf-8").splitlines()
    assert lines == ["baing/VERB kotion/NOUN", "zeful/ADJ miing/VERB roly/ADV"]
    assert run_predict(trained, "--file", tmp_path / "in.txt", "--format", "conllu") == 0
    assert [s.tags for s in parse_conllu(capsys.readouterr()[0])] == [["VERB", "NOUN"], ["ADJ", "VERB", "ADV"]]


def test_predict_errors_are_usage_errors(trained, data, tmp_path):
    with pytest.raises(UsageError, match="RUN_DIR .*no such checkpoint directory"):
        run_predict(tmp_path / "nothing", "--file", data / "dev.conllu")
    (tmp_path / "x.conllu").write_text("just some words\n", encoding="utf-8")
    with pytest.raises(UsageError, match=r"--file .*x.conllu: line 1: .*not a CoNLL-U line.*--input-format text"):
        run_predict(trained, "--file", tmp_path / "x.conllu")
    with pytest.raises(UsageError, match="is the input file"):
        run_predict(trained, "--file", data / "dev.conllu", "--output", data / "dev.conllu")


def test_bad_input_is_one_line_with_exit_code_2(data, tmp_path, capsys):
    bad = tmp_path / "bad.conllu"
    bad.write_text("1\tdog\tdog\n\n", encoding="utf-8")
    one_line_error(capsys, "train", "tag", "--train", bad, "--out", tmp_path / "r",
                   must=["--train ", "bad.conllu: line 1: 3 tab-separated columns",
                         "UPOS column (column 4) is missing"])
    one_line_error(capsys, "train", "tag", "--train", tmp_path / "missing.conllu", must=["no such file"])
    one_line_error(capsys, "train", "tag", "--valid", data / "dev.conllu", must=["--train FILE is required"])
    one_line_error(capsys, "train", "tag", "--train", data / "train.conllu", "--patience", "2",
                   must=["--patience 2 watches the validation loss"])
    one_line_error(capsys, "predict", tmp_path / "nothing", "--file", data / "dev.conllu",
                   must=["no such checkpoint directory"])
    one_line_error(capsys, "train", "tag", "--train", data / "train.conllu", "--column", "lemma",
                   must=["--column: invalid choice"])
    bad.write_text(conllu_text(3, 0).replace("\tXX\t", "\t_\t", 1), encoding="utf-8")
    one_line_error(capsys, "train", "tag", "--train", bad, "--column", "xpos", "--out", tmp_path / "r",
                   must=["has no XPOS tag", "--column upos"])


def test_help_has_examples(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "tag", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and "rnnlab train tag --train en_ewt-ud-train.conllu" in out and "--char-hidden" in out
    with pytest.raises(SystemExit):
        run_predict("--help")
    assert "examples:" in capsys.readouterr().out


def test_checkpoint_every_saves_last_within_an_epoch(data, tmp_path, capsys, monkeypatch):
    # 40 sentences in batches of 8: 5 batches per epoch
    check_checkpoint_every(capsys, monkeypatch, ("train", "tag"), ["--train", data / "train.conllu", "--valid",
                           data / "dev.conllu", *TINY], tmp_path / "run")
