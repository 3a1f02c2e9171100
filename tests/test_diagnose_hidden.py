"""Hidden states over a text (rnnlab.diagnose.hidden, 'rnnlab diagnose RUN_DIR --text'): the .npz holds what
torch.nn.LSTM / torch.nn.GRU with the same weights compute, token by token; the gates are the cell equations
written out on torch.nn's h_(t-1)."""
import numpy as np
import pytest
import torch
from cli_helpers import cli, one_line_error

from rnnlab.data.text import Vocab
from rnnlab.diagnose.hidden import colour, hidden_states, interesting_units, token_html, units_html
from rnnlab.models.lm import RecurrentLM

TEXT = "a <b> & c\tdd\nab\n"


def model_for(cell, vocab, layers=2, hidden=5):
    torch.manual_seed(0)
    m = RecurrentLM(len(vocab), cell=cell, layers=layers, hidden=hidden, emb=3)
    with torch.no_grad():  # larger than the default init, so the values spread over their range
        for p in m.rnn.parameters():
            p.mul_(4.0)
    return m


def torch_nn_steps(cls, m, x):
    """Per layer: the torch.nn module of that layer with m's weights, its h_t and (LSTM) c_t for every t, and the
    h_(t-1) each step started from; x (T, 1, I)."""
    out, layer_in = [], x
    for layer in range(m.rnn.num_layers):
        ref = cls(layer_in.shape[-1], m.rnn.hidden_size)
        ref.load_state_dict(dict(zip(["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"],
                                     m.rnn._weights(layer, 0))))
        whole, _ = ref(layer_in)  # (T, 1, H): the module run over the whole text at once
        state, hs, cs, prev = None, [], [], []
        for t in range(x.shape[0]):
            prev.append(torch.zeros(1, m.rnn.hidden_size) if state is None else
                        (state[0] if cls is torch.nn.LSTM else state)[0])
            o, state = ref(layer_in[t:t + 1], state)
            hs.append(o[0])
            if cls is torch.nn.LSTM:
                cs.append(state[1][0])
        h = torch.cat(hs)  # (T, H)
        torch.testing.assert_close(h, whole[:, 0])
        out.append({"ref": ref, "h": h, "c": torch.cat(cs) if cs else None, "prev": torch.cat(prev),
                    "x": layer_in[:, 0]})
        layer_in = h[:, None]
    return out


@torch.no_grad()
def test_lstm_npz_equals_torch_nn_lstm(tmp_path):
    vocab = Vocab.build(TEXT, "char")
    m = model_for("lstm", vocab)
    states = hidden_states(m, vocab, TEXT)
    path = states.save_npz(tmp_path / "s.npz")
    npz = np.load(path)
    assert list(npz["tokens"]) == list(TEXT)
    assert npz["ids"].tolist() == vocab.encode(TEXT, final_eos=False)
    ids = torch.tensor(npz["ids"])[:, None]
    H = 5
    for layer, ref in enumerate(torch_nn_steps(torch.nn.LSTM, m, m.encoder(ids))):
        assert npz[f"h_l{layer}"].shape == (len(TEXT), H) and npz[f"h_l{layer}"].dtype == np.float32
        torch.testing.assert_close(torch.from_numpy(npz[f"h_l{layer}"]), ref["h"], atol=2e-6, rtol=1e-5)
        torch.testing.assert_close(torch.from_numpy(npz[f"c_l{layer}"]), ref["c"], atol=2e-6, rtol=1e-5)
        r = ref["ref"]
        a = ref["x"] @ r.weight_ih_l0.T + r.bias_ih_l0 + ref["prev"] @ r.weight_hh_l0.T + r.bias_hh_l0  # (T, 4H)
        for k, name in enumerate("ifgo"):
            want = torch.tanh(a[:, k * H:(k + 1) * H]) if name == "g" else torch.sigmoid(a[:, k * H:(k + 1) * H])
            torch.testing.assert_close(torch.from_numpy(npz[f"gate_{name}_l{layer}"]), want, atol=2e-6, rtol=1e-5)
    assert np.abs(npz["h_l1"]).max() > 0.3  # the values spread: the comparison is not of near-zeros


@torch.no_grad()
def test_gru_gates_equal_the_gru_equations_on_torch_nn_states():
    vocab = Vocab.build(TEXT, "char")
    m = model_for("gru", vocab, layers=1)
    states = hidden_states(m, vocab, TEXT)
    assert set(states.arrays) == {"h_l0", "gate_r_l0", "gate_z_l0", "gate_n_l0"}
    (ref,) = torch_nn_steps(torch.nn.GRU, m, m.encoder(torch.tensor(states.ids)[:, None]))
    torch.testing.assert_close(torch.from_numpy(states.arrays["h_l0"]), ref["h"], atol=2e-6, rtol=1e-5)
    r, H = ref["ref"], 5
    gi = ref["x"] @ r.weight_ih_l0.T + r.bias_ih_l0  # (T, 3H)
    gh = ref["prev"] @ r.weight_hh_l0.T + r.bias_hh_l0  # (T, 3H)
    rr = torch.sigmoid(gi[:, :H] + gh[:, :H])
    z = torch.sigmoid(gi[:, H:2 * H] + gh[:, H:2 * H])
    n = torch.tanh(gi[:, 2 * H:] + rr * gh[:, 2 * H:])
    for name, want in (("r", rr), ("z", z), ("n", n)):
        torch.testing.assert_close(torch.from_numpy(states.arrays[f"gate_{name}_l0"]), want, atol=2e-6, rtol=1e-5)


def test_word_level_tokens_and_interesting_units():
    text = "the cat sat\non the mat\n"
    vocab = Vocab.build(text, "word")
    m = model_for("rnn_tanh", vocab, layers=1, hidden=6)
    states = hidden_states(m, vocab, text)
    assert states.tokens == ["the", "cat", "sat", "<eos>", "on", "the", "mat", "<eos>"]
    h = states.arrays["h_l0"].astype(np.float64)
    var = h.var(axis=0)
    units = interesting_units(states, "h", 0, k=3)
    assert units == sorted(range(6), key=lambda u: -var[u])[:3]
    page = units_html(states, "h", 0, [units[0]])
    assert f"unit {units[0]}" in page and "cat</span>" in page and "↵" in page


def test_html_colours_and_escapes_the_tokens():
    assert colour(1.0) == "rgb(51,51,255)" and colour(-1.0) == "rgb(255,51,51)" and colour(0.0) == "rgb(255,255,255)"
    tokens = list(TEXT)
    values = np.linspace(-1, 1, len(tokens))
    page = token_html(tokens, values, what="h")
    assert "&lt;" in page and "&amp;" in page and "<b>" not in page  # the text's '<b>' is text, not markup
    assert page.count("<span ") == len(tokens)
    assert "rgb(255,51,51)" in page and "rgb(51,51,255)" in page  # the ends of the scale
    gate = token_html(tokens, np.ones(len(tokens)), what="f")
    assert gate.count("rgb(51,51,255)") == len(tokens)  # a gate at 1: fully open, blue
    with pytest.raises(ValueError, match="one entry per token"):
        token_html(tokens, values[:-1])


def test_bad_inputs_fail_loudly():
    vocab = Vocab.build(TEXT, "char")
    m = model_for("lstm", vocab, layers=1)
    with pytest.raises(ValueError, match="not in the model's vocabulary"):
        hidden_states(m, vocab, "xyz")
    states = hidden_states(m, vocab, "ab")
    with pytest.raises(ValueError, match="a lstm layer has h, c, i, f, g, o; got 'z'"):
        states.values("z", 0)
    with pytest.raises(ValueError, match="layer must be from 0 to 0"):
        states.values("h", 1)
    with pytest.raises(ValueError, match="units must be from 0 to 4"):
        units_html(states, "h", 0, [5])


# -- the command line ----------------------------------------------------------------------------------------------
CORPUS = "the quick brown fox jumps over the lazy dog.\n" * 15


def test_cli_text_units_npz(capsys, tmp_path):
    (tmp_path / "t.txt").write_text(CORPUS, encoding="utf-8")
    run = tmp_path / "lm"
    rc, out, err = cli(capsys, "train", "lm", "--train", tmp_path / "t.txt", "--hidden", "8", "--layers", "2",
                       "--bptt", "10", "--batch-size", "4", "--max-steps", "2", "--threads", "1", "--quiet",
                       "--out", run)
    assert rc == 0, err
    rc, out, err = cli(capsys, "diagnose", run, "--text", "the lazy fox", "--units", "0,7", "--show", "c",
                       "--npz", tmp_path / "states.npz", "--out", tmp_path / "d")
    assert rc == 0, err
    assert "12 char tokens" in out and "unit     7" in out
    npz = np.load(tmp_path / "states.npz")
    assert "".join(npz["tokens"]) == "the lazy fox" and npz["c_l1"].shape == (12, 8)
    page = (tmp_path / "d" / "report.html").read_text(encoding="utf-8")
    assert "hidden states over a text" in page and "layer 1, unit 7: c" in page and ">z</span>" in page
    # a file, the default units (the most variable), the default .npz in --out
    (tmp_path / "probe.txt").write_text("over the dog", encoding="utf-8")
    rc, out, err = cli(capsys, "diagnose", run, "--text", tmp_path / "probe.txt", "--layer", "0",
                       "--out", tmp_path / "d2")
    assert rc == 0, err
    assert "with the largest variance" in out and (tmp_path / "d2" / "states.npz").exists()
    # errors: one line each
    one_line_error(capsys, "diagnose", run, "--text", "the", "--units", "8", "--out", tmp_path / "e",
                   must=["--units 8", "0 to 7"])
    one_line_error(capsys, "diagnose", run, "--text", "the", "--show", "z", "--out", tmp_path / "e",
                   must=["--show z"])
    one_line_error(capsys, "diagnose", run, "--text", "the", "--layer", "2", "--out", tmp_path / "e",
                   must=["--layer 2"])
    one_line_error(capsys, "diagnose", run, "--text", "QQ", "--out", tmp_path / "e", must=["--text", "'Q'"])
    one_line_error(capsys, "diagnose", "--text", "the", "--out", tmp_path / "e", must=["RUN_DIR"])
    one_line_error(capsys, "diagnose", run, "--units", "1", "--out", tmp_path / "e", must=["--units", "--text"])
    one_line_error(capsys, "diagnose", run, "--out", tmp_path / "e", must=["not a run of 'rnnlab task'",
                                                                            "--diagnose-every"])
