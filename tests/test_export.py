"""ONNX export (``rnnlab.export``, ``rnnlab export``): each exportable model is written once, run in onnxruntime at
two sequence lengths and batch sizes other than the traced ones (padded batches, with garbage in the padding), and
must give PyTorch's outputs (its own forward: the engine, PackedSequence). The command ``rnnlab export`` is tested in
test_cli_export.py. Skipped without onnx / onnxscript / onnxruntime (``pip install rnnlab[onnx]``)."""
from __future__ import annotations

import sys

import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
ort = pytest.importorskip("onnxruntime")

from rnnlab.export import ExportError, export_onnx  # noqa: E402
from rnnlab.models import BiRNNTagger, NGramLM, RecurrentLM, SequenceClassifier  # noqa: E402

ATOL = 1e-5


def run_onnx(path, *inputs) -> list[torch.Tensor]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    assert len(names) == len(inputs)
    return [torch.from_numpy(a) for a in session.run(None, {n: t.numpy() for n, t in zip(names, inputs)})]


def assert_close(got: list[torch.Tensor], expected: list[torch.Tensor]) -> None:
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g.shape == e.shape
        torch.testing.assert_close(g, e, atol=ATOL, rtol=0)


def padded(lengths: list[int], T: int) -> torch.Tensor:
    """(B, T) bool: True at the padding."""
    return torch.arange(T)[None, :] >= torch.tensor(lengths)[:, None]


@pytest.mark.parametrize("cell,layers,kw", [("lstm", 2, {"emb": 6}), ("gru", 1, {"one_hot": True}),
                                            ("rnn_tanh", 1, {"tie": True})])
def test_language_model(tmp_path, cell, layers, kw):
    V, H = 17, 8
    model = RecurrentLM(V, cell=cell, layers=layers, hidden=H, dropout=0.3, **kw).eval()
    path = tmp_path / "lm.onnx"
    inputs, outputs = export_onnx(model, path)
    assert inputs[:2] == ["tokens", "h0"] and outputs[:2] == ["logits", "hn"]
    assert len(inputs) == (3 if cell == "lstm" else 2)
    for T, B in ((6, 3), (1, 5)):  # T steps, and one step of generation
        tokens = torch.randint(V, (T, B))
        state = tuple(0.5 * torch.randn(layers, B, H) for _ in range(2 if cell == "lstm" else 1))
        with torch.no_grad():
            logits, new = model(tokens, state if cell == "lstm" else state[0])
        expected = [logits, *(new if cell == "lstm" else (new,))]
        assert_close(run_onnx(path, tokens, *state), expected)


def test_bidirectional_classifier_with_padding(tmp_path):
    model = SequenceClassifier(3, vocab_size=20, emb=6, cell="lstm", hidden=8, bidirectional=True,
                               pooling="last").eval()
    path = tmp_path / "cls.onnx"
    assert export_onnx(model, path) == (["x", "lengths"], ["logits"])
    for lengths, T in (([7, 3, 1], 7), ([2, 4, 4, 1], 5)):  # the second: no sequence fills T
        x = torch.randint(1, 20, (len(lengths), T))  # garbage ids in the padding: the mask must hide them
        lengths = torch.tensor(lengths)
        with torch.no_grad():
            expected = model(x, lengths)
        got = run_onnx(path, x, lengths)
        assert_close(got, [expected])
    # A sequence alone gives what it gives in the padded batch.
    alone = run_onnx(path, x[1:2, :4], lengths[1:2])[0]
    torch.testing.assert_close(alone[0], got[0][1], atol=ATOL, rtol=0)


def test_tagger(tmp_path):
    model = BiRNNTagger(30, 12, 5, emb=6, char_emb=4, char_hidden=3, hidden=5, layers=1).eval()
    path = tmp_path / "tagger.onnx"
    assert export_onnx(model, path) == (["words", "chars", "lengths"], ["logits"])
    for lengths, T, C in (([6, 2, 4], 6, 5), ([1, 3], 3, 2)):
        B = len(lengths)
        pad = padded(lengths, T)
        words = torch.randint(2, 30, (B, T)).masked_fill(pad, 0)
        n_chars = torch.randint(1, C + 1, (B, T, 1))
        chars = torch.randint(1, 12, (B, T, C)).masked_fill(torch.arange(C) >= n_chars, 0)
        lengths = torch.tensor(lengths)
        with torch.no_grad():
            expected = model(words, chars, lengths)
        assert_close(run_onnx(path, words, chars, lengths), [expected])


def test_export_errors(tmp_path, monkeypatch):
    with pytest.raises(ExportError, match="RecurrentLM, SequenceClassifier"):
        export_onnx(NGramLM(10, emb=4, hidden=8), tmp_path / "ngram.onnx")
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if not installed
    with pytest.raises(ExportError, match=r"onnxscript: pip install rnnlab\[onnx\]"):
        export_onnx(RecurrentLM(10, hidden=4), tmp_path / "lm.onnx")
