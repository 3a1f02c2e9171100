"""Language models: the recurrent LM against a torch.nn twin, state carried across chunks, weight tying, config
round trip; the n-gram LM against its formula, across chunk boundaries; evaluate() against a hand-computed loss."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rnnlab.data import LMStream
from rnnlab.models import NGramLM, RecurrentLM, build_model
from rnnlab.train import evaluate

V = 7


def tokens(T=9, B=3):
    return torch.randint(0, V, (T, B))


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh", "rnn_relu"])
def test_recurrent_lm_matches_torch_nn_twin(cell):
    m = RecurrentLM(V, cell=cell, layers=2, hidden=5, emb=4).double().eval()
    rnn_cls = {"lstm": nn.LSTM, "gru": nn.GRU}.get(cell)
    twin_rnn = rnn_cls(4, 5, 2) if rnn_cls else nn.RNN(4, 5, 2, nonlinearity=cell[4:])
    twin_rnn.load_state_dict(m.rnn.state_dict())
    twin_rnn.double()
    x = tokens()
    logits, state = m(x)
    out, ref_state = twin_rnn(m.encoder(x))
    assert logits.shape == (9, 3, V)
    torch.testing.assert_close(logits, m.decoder(out))
    if cell == "lstm":
        torch.testing.assert_close(state[0], ref_state[0])
        torch.testing.assert_close(state[1], ref_state[1])
    else:
        torch.testing.assert_close(state, ref_state)


@pytest.mark.parametrize("model", [RecurrentLM(V, hidden=6, layers=2), RecurrentLM(V, cell="gru", hidden=6),
                                   NGramLM(V, order=4, emb=3, hidden=5, direct=True), NGramLM(V, order=2, hidden=5)])
def test_chunks_with_carried_state_equal_one_pass(model):
    model = model.double().eval()
    x = tokens(10, 2)
    whole, _ = model(x, model.init_state(2))
    a, state = model(x[:3], model.init_state(2))
    b, state = model(x[3:4], state)
    c, _ = model(x[4:], state)
    torch.testing.assert_close(torch.cat([a, b, c]), whole)


def test_init_state_shapes_and_reorder():
    m = RecurrentLM(V, hidden=6, layers=3)
    h, c = m.init_state(4)
    assert h.shape == c.shape == (3, 4, 6) and not h.any()
    state = (torch.arange(3 * 4 * 6.0).view(3, 4, 6),) * 2
    picked = m.reorder_state(state, torch.tensor([2, 2, 0]))
    assert torch.equal(picked[0][:, 0], state[0][:, 2]) and picked[0].shape == (3, 3, 6)
    assert RecurrentLM(V, cell="gru", hidden=6).init_state(2).shape == (1, 2, 6)


def test_tied_weights_share_one_matrix():
    m = RecurrentLM(V, hidden=6, emb=6, tie=True)
    assert m.decoder.weight is m.encoder.weight
    n_untied = sum(p.numel() for p in RecurrentLM(V, hidden=6, emb=6).parameters())
    assert sum(p.numel() for p in m.parameters()) == n_untied - V * 6
    with pytest.raises(ValueError, match="emb must equal hidden; got emb=4, hidden=6"):
        RecurrentLM(V, hidden=6, emb=4, tie=True)


def test_one_hot_input():
    m = RecurrentLM(V, hidden=6, one_hot=True).double().eval()
    assert m.encoder is None and m.rnn.input_size == V
    x = tokens()
    out, _ = m.rnn(F.one_hot(x, V).double())
    torch.testing.assert_close(m(x)[0], m.decoder(out))
    with pytest.raises(ValueError, match="one-hot input has no embedding"):
        RecurrentLM(V, hidden=V, one_hot=True, tie=True)


def test_dropout_only_in_training_mode():
    m = RecurrentLM(V, hidden=8, layers=2, dropout=0.5)
    x = tokens()
    m.eval()
    torch.testing.assert_close(m(x)[0], m(x)[0])
    m.train()
    assert not torch.equal(m(x)[0], m(x)[0])


def test_bad_options_fail_with_rule_and_value():
    with pytest.raises(ValueError, match="cell must be one of lstm, gru, rnn_tanh, rnn_relu, layernorm_lstm, "
                                         "layernorm_gru; got 'tcn'"):
        RecurrentLM(V, cell="tcn")
    with pytest.raises(ValueError, match="hidden must be an integer >= 1; got -3"):
        RecurrentLM(V, hidden=-3)
    with pytest.raises(ValueError, match=r"dropout must be a number in \[0, 1\)"):
        RecurrentLM(V, dropout=1.0)
    with pytest.raises(ValueError, match="order must be an integer >= 2; got 1"):
        NGramLM(V, order=1)
    with pytest.raises(ValueError, match="'kind' must be one of rnn, ngram; got 'cnn'"):
        build_model({"kind": "cnn"})
    with pytest.raises(ValueError, match="bad rnn model config"):
        build_model({"kind": "rnn", "vocab_size": 5, "colour": "red"})


@pytest.mark.parametrize("model", [RecurrentLM(V, cell="gru", hidden=6, emb=6, tie=True, dropout=0.1),
                                   NGramLM(V, order=3, emb=2, hidden=4, direct=True)])
def test_config_rebuilds_the_model(model):
    twin = build_model(model.config)
    twin.load_state_dict(model.state_dict())
    assert twin.config == model.config
    x = tokens()
    torch.testing.assert_close(twin.eval()(x)[0], model.eval()(x)[0])


def test_ngram_matches_bengio_formula_and_pads_stream_start():
    m = NGramLM(V, order=3, emb=2, hidden=4, direct=True).double()
    x = torch.tensor([[3], [1], [5], [2]])  # (T=4, B=1)
    logits, state = m(x)
    assert state.tolist() == [[2]]  # the last order-2 inputs

    def by_formula(context):  # y = b + W x + U tanh(d + H x), x = concatenated embeddings
        e = m.embed.weight[torch.tensor(context)].flatten()
        return m.out(torch.tanh(m.proj(e))) + m.skip(e)

    pad = V  # before the stream's first token
    torch.testing.assert_close(logits[0, 0], by_formula([pad, 3]))
    torch.testing.assert_close(logits[1, 0], by_formula([3, 1]))
    torch.testing.assert_close(logits[3, 0], by_formula([5, 2]))


def test_evaluate_equals_mean_cross_entropy_over_the_stream():
    m = RecurrentLM(V, hidden=5).double()
    data = torch.randint(0, V, (41,))
    stream = LMStream(data, 2, bptt=3)
    got = evaluate(m, stream, level="char")
    cols = stream.data  # (20, 2)
    logits, _ = m.eval()(cols[:-1])  # one pass over the whole stream
    expect = F.cross_entropy(logits.reshape(-1, V), cols[1:].reshape(-1)).item()
    assert got["loss"] == pytest.approx(expect, rel=1e-9)
    assert got["ppl"] == pytest.approx(math.exp(expect)) and got["bpc"] == pytest.approx(expect / math.log(2))
    assert "bpc" not in evaluate(m, stream, level="word")
