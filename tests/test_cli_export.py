"""``rnnlab export RUN_DIR --onnx OUT.onnx`` on a tiny LM and a tiny encoder-decoder (two files) trained by the CLI:
the files, their inputs, the onnxruntime check, ``--help`` and bad input as one line ``rnnlab: error: ...`` with exit
code 2. The exported graphs themselves are held to PyTorch in test_export.py. Skipped without onnx / onnxscript /
onnxruntime."""
from __future__ import annotations

import sys

import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
ort = pytest.importorskip("onnxruntime")

from cli_helpers import cli, one_line_error  # noqa: E402


def test_cli_export_of_a_trained_lm(tmp_path, capsys, monkeypatch):
    corpus = tmp_path / "text.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog\n" * 8, encoding="utf-8")
    run = tmp_path / "run"
    rc, _, err = cli(capsys, "train", "lm", "--train", corpus, "--epochs", "1", "--hidden", "8", "--bptt", "8",
                     "--batch-size", "4", "--quiet", "--out", run)
    assert rc == 0, err
    out = tmp_path / "lm.onnx"
    rc, stdout, err = cli(capsys, "export", run, "--onnx", out)
    assert rc == 0, err
    assert f"wrote {out}" in stdout and "inputs tokens, h0, c0" in stdout and "onnxruntime matches PyTorch" in stdout
    assert out.exists() and not list(tmp_path.glob("*.data"))  # the weights are inside the .onnx file
    assert [i.name for i in ort.InferenceSession(str(out)).get_inputs()] == ["tokens", "h0", "c0"]

    with pytest.raises(SystemExit) as exc:
        cli(capsys, "export", "--help")
    assert exc.value.code == 0 and "examples:" in capsys.readouterr().out
    one_line_error(capsys, "export", run, "--onnx", tmp_path / "lm.txt", must=["--onnx", "*.onnx"])
    one_line_error(capsys, "export", run, "--onnx", tmp_path / "nowhere" / "lm.onnx", must=["does not exist"])
    one_line_error(capsys, "export", tmp_path / "none", "--onnx", out, must=["RUN_DIR"])
    one_line_error(capsys, "export", run, must=["--onnx"])
    ngram = tmp_path / "ngram"
    rc, _, err = cli(capsys, "train", "ngram", "--train", corpus, "--epochs", "1", "--hidden", "8", "--emb", "4",
                     "--bptt", "8", "--batch-size", "4", "--quiet", "--out", ngram)
    assert rc == 0, err
    one_line_error(capsys, "export", ngram, "--onnx", out, must=["n-gram language model", "rnnlab train lm"])
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if not installed
    one_line_error(capsys, "export", run, "--onnx", out, "--no-check", must=["pip install 'rnnlab[onnx]'"])


def test_cli_export_of_a_trained_seq2seq_model(tmp_path, capsys):
    run = tmp_path / "rev"
    rc, _, err = cli(capsys, "train", "seq2seq", "--task", "reverse", "--max-len", "6", "--batches", "5",
                     "--epochs", "1", "--valid-size", "8", "--emb", "4", "--hidden", "6", "--batch-size", "8",
                     "--attention", "additive", "--quiet", "--out", run)
    assert rc == 0, err
    out = tmp_path / "rev.onnx"
    rc, stdout, err = cli(capsys, "export", run, "--onnx", out)
    assert rc == 0, err
    encoder, step = tmp_path / "rev.encoder.onnx", tmp_path / "rev.decoder_step.onnx"
    assert f"wrote {encoder}" in stdout and f"and {step} (one decoder step" in stdout
    assert "greedy decoding in onnxruntime gives PyTorch's tokens (5 sources)" in stdout
    assert encoder.exists() and step.exists() and not out.exists()
    assert [i.name for i in ort.InferenceSession(str(encoder)).get_inputs()] == ["src", "src_lengths"]
    assert [i.name for i in ort.InferenceSession(str(step)).get_inputs()] == ["y_prev", "h", "c", "memory", "keys",
                                                                           "mask"]
    with pytest.raises(SystemExit):
        cli(capsys, "export", "--help")
    help_text = capsys.readouterr().out
    assert "OUT.encoder.onnx" in help_text and "OUT.decoder_step.onnx" in help_text
