"""``rnnlab train lm|ngram``, ``rnnlab eval`` and ``rnnlab generate`` on tiny data: a smoke run of each (one in a real
subprocess, the rest through ``main()`` in-process for speed), an exact CLI resume, and every bad input as one line
``rnnlab: error: ...`` with exit code 2."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rnnlab.cli.main import main
from rnnlab.train import load_checkpoint

from cli_helpers import check_checkpoint_every, cli, one_line_error

SRC = Path(__file__).resolve().parents[1] / "src"
TEXT = ("the quick brown fox jumps over the lazy dog\n"
        "pack my box with five dozen liquor jugs\n") * 6  # ~500 characters
TINY = ["--hidden", "12", "--bptt", "8", "--batch-size", "4", "--eval-batch-size", "2", "--quiet"]


@pytest.fixture
def corpus(tmp_path):
    f = tmp_path / "text.txt"
    f.write_text(TEXT, encoding="utf-8")
    return f


def test_train_in_a_subprocess_then_eval_and_generate(tmp_path, corpus, capsys):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")])),
               PYTHONIOENCODING="utf-8")  # its output is read as UTF-8 whatever the locale

    def rnnlab(*args):
        return subprocess.run([sys.executable, "-m", "rnnlab", *map(str, args)], capture_output=True,
                              encoding="utf-8", env=env, timeout=300, stdin=subprocess.DEVNULL)

    out = tmp_path / "run"
    r = rnnlab("train", "lm", "--train", corpus, "--test", corpus, "--epochs", "2", "--samples", "1",
               "--sample-tokens", "20", "--out", out, *TINY)
    assert r.returncode == 0, r.stderr
    assert "epoch   2/2  train loss" in r.stdout and "test (best weights): loss" in r.stdout
    assert "--- sample 1" in r.stdout and "Traceback" not in r.stderr
    assert (out / "best" / "model.safetensors").exists() and (out / "metrics.jsonl").exists()
    rc, stdout, err = cli(capsys, "eval", out, "--file", corpus)
    assert rc == 0, err
    assert "ppl" in stdout and "bpc" in stdout and f"model {out / 'best'}" in stdout
    rc, stdout, err = cli(capsys, "generate", out, "--prompt", "the ", "--max-tokens", "15", "--top-k", "5",
                          "--samples", "2")
    assert rc == 0, err
    assert stdout.count("--- sample") == 2 and "\nthe " in stdout


@pytest.mark.parametrize("cmd", [["train", "lm"], ["train", "ngram"], ["eval"], ["generate"]])
def test_help_lists_examples(cmd, capsys):
    with pytest.raises(SystemExit) as exc:
        main([*cmd, "--help"])
    out = capsys.readouterr().out
    assert exc.value.code == 0 and "examples:" in out and f"rnnlab {cmd[0]} " in out


def test_word_ngram_and_eval(tmp_path, corpus, capsys):
    out = tmp_path / "ng"
    rc, stdout, err = cli(capsys, "train", "ngram", "--train", corpus, "--level", "word", "--order", "3", "--direct",
                          "--epochs", "2", "--out", out, "--hidden", "8", "--emb", "4", "--bptt", "5",
                          "--batch-size", "2", "--eval-batch-size", "1", "--quiet")
    assert rc == 0, err
    assert "3-gram feed-forward LM" in stdout and "epoch   2/2" in stdout and "bpc" not in stdout
    rc, stdout, err = cli(capsys, "eval", out / "last", "--file", corpus, "--batch-size", "2")
    assert rc == 0, err
    assert "ppl" in stdout and "word tokens" in stdout
    rc, stdout, err = cli(capsys, "generate", out, "--prompt", "the quick", "--beam", "3", "--max-tokens", "4")
    assert rc == 0, err
    assert stdout.startswith("the quick ")


def test_bpe_level(tmp_path, corpus, capsys):
    pytest.importorskip("tokenizers")
    rc, stdout, err = cli(capsys, "train", "lm", "--train", corpus, "--level", "bpe", "--bpe-vocab", "300",
                          "--cell", "gru", "--tie", "--epochs", "1", "--out", tmp_path / "bpe", *TINY)
    assert rc == 0, err
    assert "bpe vocabulary of 300" in stdout or "bpe vocabulary of" in stdout
    rc, stdout, err = cli(capsys, "generate", tmp_path / "bpe", "--greedy", "--max-tokens", "5", "--prompt", "pack")
    assert rc == 0 and stdout.startswith("pack"), err


def test_stdlib_demo_path(tmp_path, capsys):
    rc, stdout, err = cli(capsys, "train", "lm", "--stdlib-demo", "--stdlib-bytes", "6000", "--max-steps", "3",
                          "--sample-tokens", "10", "--out", tmp_path / "demo", *TINY)
    assert rc == 0, err
    assert "Python standard library" in stdout and "stopped: reached max_steps=3" in stdout
    assert stdout.count("--- sample") == 3 and "\ndef " in stdout


def test_cli_resume_matches_an_uninterrupted_run(tmp_path, corpus, capsys):
    common = ["train", "lm", "--train", corpus, "--epochs", "2", "--dropout", "0.2", "--random-bptt", *TINY]
    assert cli(capsys, *common, "--out", tmp_path / "a")[0] == 0
    rc, stdout, _ = cli(capsys, *common, "--out", tmp_path / "b", "--max-steps", "9")
    assert rc == 0 and "stopped: reached max_steps=9" in stdout
    rc, stdout, err = cli(capsys, "train", "lm", "--resume", tmp_path / "b", "--quiet")
    assert rc == 0, err
    assert "resuming" in stdout and "epoch   2/2" in stdout
    a = load_checkpoint(tmp_path / "a" / "last").model_state()
    b = load_checkpoint(tmp_path / "b" / "last").model_state()
    assert all(torch.equal(a[k], b[k]) for k in a)
    one_line_error(capsys, "train", "lm", "--resume", tmp_path / "b", "--lr", "0.1",
                   must=["--lr cannot change when resuming"])


def test_bad_inputs_are_one_line_errors(tmp_path, corpus, capsys):
    t = ["train", "lm", "--train"]
    one_line_error(capsys, *t, tmp_path / "nope.txt", must=["--train", "nope.txt", "no such file"])
    (tmp_path / "empty.txt").write_text("", encoding="utf-8")
    one_line_error(capsys, *t, tmp_path / "empty.txt", must=["empty.txt", "empty"])
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    one_line_error(capsys, *t, tmp_path / "latin1.txt", must=["latin1.txt", "invalid UTF-8", "byte offset 3"])
    one_line_error(capsys, *t, corpus, "--bptt", "0", must=["--bptt", "got 0"])
    one_line_error(capsys, *t, corpus, "--hidden", "-4", must=["--hidden", "-4"])
    one_line_error(capsys, *t, corpus, "--tie", "--emb", "8", "--hidden", "12",
                   must=["--tie", "--emb 8", "--hidden 12"])
    one_line_error(capsys, *t, corpus, "--clip-norm", "1", "--clip-value", "1", must=["not both"])
    one_line_error(capsys, *t, corpus, "--batch-size", "400", must=["--batch-size 400", "too few"])
    one_line_error(capsys, *t, corpus, "--cell", "tcn", must=["--cell", "tcn"])
    one_line_error(capsys, *t, corpus, "--min-count", "2", must=["--min-count applies to --level word"])
    one_line_error(capsys, *t, corpus, "--valid", corpus, "--valid-fraction", "0.2", must=["drop one"])
    one_line_error(capsys, *t, corpus, "--momentum", "0.9", must=["momentum is an SGD option"])
    one_line_error(capsys, "train", "lm", must=["--train FILE is required"])
    one_line_error(capsys, "train", must=["choose a model"])
    one_line_error(capsys, "eval", tmp_path / "missing", "--file", corpus, must=["missing", "no such checkpoint"])
    one_line_error(capsys, "eval", tmp_path, "--file", corpus, must=["not a checkpoint"])
    one_line_error(capsys, "generate", tmp_path / "missing", must=["no such checkpoint"])
    one_line_error(capsys, "train", "lm", "--resume", tmp_path, must=["--resume", "not a checkpoint"])


def test_errors_after_a_run(tmp_path, corpus, capsys):
    out = tmp_path / "run"
    assert cli(capsys, "train", "lm", "--train", corpus, "--epochs", "1", "--out", out, *TINY)[0] == 0
    one_line_error(capsys, "train", "lm", "--train", corpus, "--out", out, *TINY,
                   must=["already holds a run", "--resume"])
    one_line_error(capsys, "generate", out, "--prompt", "Zebra", must=["'Z'", "not in the model's vocabulary"])
    one_line_error(capsys, "generate", out, "--greedy", "--top-k", "3", must=["--top-k", "--greedy"])
    one_line_error(capsys, "eval", out, "--file", tmp_path / "none.txt", must=["--file", "no such file"])
    rc, stdout, _ = cli(capsys, "train", "lm", "--resume", out)
    assert rc == 0 and "nothing to do" in stdout
    corpus.write_text(TEXT + "more\n", encoding="utf-8")
    one_line_error(capsys, "train", "lm", "--resume", out, must=["changed since the checkpoint"])


@pytest.mark.parametrize("kind", ["lm", "ngram"])
def test_checkpoint_every_saves_last_within_an_epoch(kind, corpus, tmp_path, capsys, monkeypatch):
    # ~450 training characters in 4 columns of 8 steps: about 14 batches per epoch
    check_checkpoint_every(capsys, monkeypatch, ("train", kind), ["--train", corpus, *TINY], tmp_path / "run")
