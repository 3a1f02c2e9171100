"""ONNX export (``rnnlab.export``, ``rnnlab export``): each exportable model is written once, run in onnxruntime at
two sequence lengths and batch sizes other than the traced ones (padded batches, with garbage in the padding), and
must give PyTorch's outputs (its own forward: the engine, PackedSequence). An encoder-decoder is two graphs (encoder,
one decoder step): greedy decoding driven from onnxruntime must give the PyTorch model's tokens. The command
``rnnlab export`` is tested in test_cli_export.py. Skipped without onnx / onnxscript / onnxruntime
(``pip install rnnlab[onnx]``)."""
from __future__ import annotations

import sys

import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
ort = pytest.importorskip("onnxruntime")

from rnnlab.export import ExportError, export_onnx, export_seq2seq, onnx_greedy, seq2seq_paths  # noqa: E402
from rnnlab.models import BiRNNTagger, NGramLM, RecurrentLM, SequenceClassifier  # noqa: E402
from rnnlab.models.seq2seq import ConditionalDecoder, Seq2Seq  # noqa: E402

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
    with pytest.raises(ExportError, match=r"'onnxscript' package: pip install 'rnnlab\[onnx\]'"):
        export_onnx(RecurrentLM(10, hidden=4), tmp_path / "lm.onnx")


# Three encoder-decoders that between them cover the graphs' variants: attention none / additive / multiplicative,
# LSTM (c) and GRU, input feeding (feed), a bridge that passes states through and one that maps them (linear),
# two decoder layers from one encoder layer (the top one for each) and from two (layer by layer), a unidirectional
# encoder.
SEQ2SEQ = {
    "none": {"cell": "lstm", "hidden": 5, "dec_hidden": 10},  # BiLSTM 2 x 5 = 10: states pass through
    "additive": {"cell": "lstm", "hidden": 5, "input_feeding": True, "dec_layers": 2, "dec_hidden": 8},
    "multiplicative": {"cell": "gru", "hidden": 7, "bidirectional": False, "layers": 2},
}


@pytest.mark.parametrize("attention", list(SEQ2SEQ))
def test_seq2seq_greedy_decoding_in_onnxruntime_matches_pytorch(tmp_path, attention):
    torch.manual_seed(0)
    model = Seq2Seq(13, 11, emb=6, attention=attention, **SEQ2SEQ[attention]).eval()
    written = export_seq2seq(model, tmp_path / "s2s.onnx")
    enc_path, step_path = seq2seq_paths(tmp_path / "s2s.onnx")
    assert written["encoder"][0] == enc_path and enc_path.name == "s2s.encoder.onnx" and enc_path.exists()
    assert written["decoder_step"][0] == step_path and step_path.name == "s2s.decoder_step.onnx"
    assert not (tmp_path / "s2s.onnx").exists()
    lstm, att = model.cell == "lstm", attention != "none"
    assert written["encoder"][2] == ["memory", *(["keys"] if att else []), "mask", "h0", *(["c0"] if lstm else [])]
    assert written["decoder_step"][1][:2] == ["y_prev", "h"]
    assert ("feed" in written["decoder_step"][1]) == model.input_feeding
    assert ("attention" in written["decoder_step"][2]) == att

    for lengths, S in (([6, 2, 4], 6), ([3, 1, 2, 3, 1], 4)):  # the second: no source fills S
        B = len(lengths)
        src = torch.randint(4, 13, (B, S))  # garbage ids in the padding: the mask must hide them
        lengths = torch.tensor(lengths)
        # The encoder graph against Seq2Seq.encode (packing, the engine).
        got = dict(zip(written["encoder"][2], run_onnx(enc_path, src, lengths)))
        with torch.no_grad():
            mem = model.encode(src, lengths)
        torch.testing.assert_close(got["memory"], mem.memory, atol=ATOL, rtol=0)
        assert torch.equal(got["mask"], mem.mask)
        h0 = mem.state[0] if lstm else mem.state
        torch.testing.assert_close(got["h0"], h0, atol=ATOL, rtol=0)
        if lstm:
            torch.testing.assert_close(got["c0"], mem.state[1], atol=ATOL, rtol=0)
        # Greedy decoding, a Python loop over the decoder-step graph, against Seq2Seq.greedy.
        expected = model.greedy(src, lengths)
        decoded = onnx_greedy(enc_path, step_path, src, lengths)
        assert len(decoded) == B
        for g, e in zip(decoded, expected):
            assert g.ids == e.ids and g.finished == e.finished
            assert g.score == pytest.approx(e.score, abs=1e-4)
            assert g.attention.shape == e.attention.shape  # (steps, length) or (steps, 0)
            torch.testing.assert_close(g.attention, e.attention, atol=ATOL, rtol=0)
        assert max(len(d.ids) for d in decoded) >= 3  # several steps were compared, not just one
        # One step from arbitrary tokens: every output of the step graph against Seq2Seq._step.
        y = torch.randint(11, (B,))
        feed = 0.5 * torch.randn(B, model.dec_hidden) if model.input_feeding else None
        with torch.no_grad():
            logits, state, feed_next, weights = model._step(y, mem.state, feed, mem)
        given = {"y_prev": y, "h": got["h0"], "c": got.get("c0"), "feed": feed, "memory": got["memory"],
                 "keys": got.get("keys"), "mask": got["mask"]}
        step_names = written["decoder_step"]
        out = dict(zip(step_names[2], run_onnx(step_path, *(given[n] for n in step_names[1]))))
        want = {"logits": logits, "h_next": state[0] if lstm else state, "c_next": state[1] if lstm else None,
                "feed_next": feed_next, "attention": weights}
        assert set(out) <= set(want)
        for name, value in out.items():
            torch.testing.assert_close(value, want[name], atol=ATOL, rtol=0)


def test_seq2seq_export_errors(tmp_path):
    model = Seq2Seq(9, 8, emb=4, hidden=4)
    with pytest.raises(ExportError, match="export_seq2seq"):
        export_onnx(model, tmp_path / "s2s.onnx")
    with pytest.raises(ExportError, match="Seq2Seq.*ConditionalDecoder"):
        export_seq2seq(ConditionalDecoder(8, n_conditions=3, dec_hidden=4), tmp_path / "cond.onnx")
    assert [p.name for p in seq2seq_paths(tmp_path / "a.b.ONNX")] == ["a.b.encoder.onnx", "a.b.decoder_step.onnx"]
