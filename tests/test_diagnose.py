"""rnnlab.diagnose: known answers for the gradient-flow measurements, the verdicts, and the figures/HTML report.

The exactly linear RNN: rnnlab.RNN with ReLU, W_hh = a·I, W_ih = 1, b_ih = 1, b_hh = 0, inputs > 0 and h_0 = 0. Then
every pre-activation z_t = a·h_{t-1} + x_t + 1 is > 0 (h_{t-1} >= 0 by induction), where ReLU is the identity
*exactly* — not approximately, as tanh with small pre-activations would be. So h_t = a·h_{t-1} + x_t + 1, every
per-step Jacobian is a·I, ds_T/ds_{T-k} = a^k·I with spectral norm a^k, and with the loss on h_T alone
dL/dh_{T-k} = (a·I)^k dL/dh_T, so the gradient ratio is a^k too.
"""
import struct

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import rnnlab
from rnnlab.diagnose import report
from rnnlab.diagnose.measure import (SIGMOID_HIGH, SIGMOID_LOW, TANH_HIGH, decay_ratios, gate_saturation, measure,
                                     memory_horizon, replay, saturation_fraction, weight_spectra)
from rnnlab.diagnose.verdict import verdict


class LastStep(nn.Module):
    """rnn → the last step's output · c: the loss enters at h_T only (many-to-one, pooling 'last')."""

    def __init__(self, rnn, c=None):
        super().__init__()
        self.rnn = rnn
        H = rnn.hidden_size * rnn.num_directions
        self.register_buffer("c", torch.ones(H, dtype=rnn.weight_hh_l0.dtype) if c is None else c)

    def forward(self, x):
        out, _ = self.rnn(x)  # (T, B, D*H)
        return (out[-1] * self.c).sum()


def loss_of(model):
    return lambda x: model(x)


def linear_rnn(a: float, H: int = 4):
    rnn = rnnlab.RNN(1, H, nonlinearity="relu").double()
    with torch.no_grad():
        rnn.weight_hh_l0.copy_(a * torch.eye(H, dtype=torch.float64))
        rnn.weight_ih_l0.fill_(1.0)
        rnn.bias_ih_l0.fill_(1.0)
        rnn.bias_hh_l0.zero_()
    return rnn


@pytest.mark.parametrize("a", [0.5, 0.9, 1.1])
def test_linear_rnn_jacobian_product_and_gradient_ratio_are_a_to_the_k(a):
    T = 30
    model = LastStep(linear_rnn(a), c=torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64))
    x = 0.5 + torch.rand(T, 3, 1, dtype=torch.float64)  # inputs > 0: every z_t > 0, ReLU is the identity
    d = measure(model, x, loss_of(model), jacobian_sequences=3)
    (layer,) = d.layers
    assert layer.saturation["relu"] == 0.0  # no pre-activation <= 0: the model is exactly linear on this batch
    k = torch.arange(T, dtype=torch.float64)
    assert layer.jacobian_distances.tolist() == list(range(T))
    torch.testing.assert_close(layer.jacobian_norms, a ** k, rtol=1e-6, atol=0)
    for per_sequence in layer.jacobian_per_sequence:  # the same for every sequence: the Jacobian is input-free
        torch.testing.assert_close(per_sequence, a ** k, rtol=1e-6, atol=0)
    torch.testing.assert_close(layer.decay, a ** k, rtol=1e-6, atol=0)
    assert layer.jacobian_factor == pytest.approx(a, rel=1e-6)
    assert layer.grad_factor == pytest.approx(a, rel=1e-6)
    # The horizon is where a^k first drops below 1e-3 (none for a >= 1 within T).
    expected = next((int(i) for i in k if a ** i < 1e-3), None)
    assert layer.horizon == expected


def test_decay_ratio_and_horizon_by_hand():
    norms = torch.tensor([1e-5, 1e-4, 1e-2, 2.0])  # forward direction: the last step (t = 3) is the reference
    ratios = decay_ratios(norms)
    torch.testing.assert_close(ratios, torch.tensor([1.0, 5e-3, 5e-5, 5e-6], dtype=torch.float64))
    assert memory_horizon(ratios, 1e-3) == 2
    assert memory_horizon(ratios, 1e-6) is None
    # reverse direction: processed t = 3..0, so t = 0 is its last step
    torch.testing.assert_close(decay_ratios(norms.flip(0), reverse=True), ratios)


def tanh_rnn(scale_or_w, H=16, I=2):
    rnn = rnnlab.RNN(I, H).double()
    with torch.no_grad():
        if isinstance(scale_or_w, torch.Tensor):
            rnn.weight_hh_l0.copy_(scale_or_w)
        else:
            rnn.weight_hh_l0.uniform_(-scale_or_w, scale_or_w)
    return rnn


def test_tanh_rnn_with_small_weights_is_vanishing():
    model = LastStep(tanh_rnn(0.05))
    x = torch.randn(40, 4, 2, dtype=torch.float64)
    d = measure(model, x, loss_of(model))
    v = verdict(d)
    assert v.status == "vanishing"
    assert d.layers[0].horizon is not None and d.layers[0].horizon < 10
    text = v.text()
    assert text.startswith("verdict: VANISHING")
    assert "--cell lstm" in text and "--init identity" in text  # the remedies for a tanh RNN


def test_tanh_rnn_with_w_near_3i_is_exploding():
    """Zero input and zero biases keep the state at the fixed point h = 0, where tanh' = 1: the linear regime, in
    which W_hh ≈ 3·I multiplies the gradient by ~3 per step (away from it tanh would saturate and the product could
    vanish instead: a spectral radius above 1 is necessary for exploding, not sufficient)."""
    H = 16
    W = 3 * torch.eye(H, dtype=torch.float64) + 0.01 * torch.randn(H, H, dtype=torch.float64)
    rnn = tanh_rnn(W, H=H)
    with torch.no_grad():
        rnn.bias_ih_l0.zero_()
        rnn.bias_hh_l0.zero_()
    model = LastStep(rnn)
    x = torch.zeros(20, 4, 2, dtype=torch.float64)
    d = measure(model, x, loss_of(model))
    v = verdict(d)
    assert v.status == "exploding", v.text()
    layer = d.layers[0]
    assert layer.spectral_radius["W_hh"] == pytest.approx(3.0, abs=0.1)
    assert layer.jacobian_factor == pytest.approx(3.0, rel=0.05)
    assert float(layer.decay.max()) > 1e3
    text = v.text()
    assert "--clip-norm" in text and "Pascanu" in text  # a clipping threshold derived from the measured norm
    assert "truncat" in text


def test_well_initialised_lstm_on_a_short_sequence_is_not_exploding():
    lstm = rnnlab.init.forget_bias_(rnnlab.init.orthogonal_(rnnlab.LSTM(3, 16).double()), 1.0)
    model = LastStep(lstm)
    x = torch.randn(8, 4, 3, dtype=torch.float64)
    d = measure(model, x, loss_of(model))
    v = verdict(d)
    assert v.status != "exploding", v.text()
    assert max(d.layers[0].jacobian_norms.tolist()) < 10


class Head(nn.Module):
    """A 2-layer rnnlab.RNN → linear head on the last step; the loss is the MSE against a target."""

    def __init__(self):
        super().__init__()
        self.rnn = rnnlab.RNN(3, 5, num_layers=2).double()
        self.head = nn.Linear(5, 1).double()

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.head(out[-1])


def test_probe_norms_equal_autograd_through_torch_nn():
    torch.manual_seed(1)
    model = Head()
    T, B = 9, 3
    x = torch.randn(T, B, 3, dtype=torch.float64)
    y = torch.randn(B, 1, dtype=torch.float64)
    d = measure(model, (x, y), lambda batch: ((model(batch[0]) - batch[1]) ** 2).mean())

    # The oracle: torch.nn.RNN with the same weights, one step at a time, every h_t retained.
    layer_in, retained = x, {}
    for layer in range(2):
        ref = nn.RNN(layer_in.shape[-1], 5).double()
        w = model.rnn._weights(layer, 0)
        ref.load_state_dict(dict(zip(["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"], w)))
        h = torch.zeros(1, B, 5, dtype=torch.float64)
        steps = []
        for t in range(T):
            h, _ = ref(layer_in[t:t + 1], h)  # (1, B, H): h_t, fed forward itself so .grad is the total dL/dh_t
            h.retain_grad()
            retained[(layer, t)] = h
            steps.append(h)
        layer_in = torch.cat(steps)
    loss = ((model.head(layer_in[-1]) - y) ** 2).mean()
    loss.backward()
    assert d.loss == pytest.approx(float(loss.detach()), rel=1e-12)
    assert [layer.key for layer in d.layers] == [("rnn", 0, 0), ("rnn", 1, 0)]
    for layer in d.layers:
        expected = torch.stack([retained[(layer.key[1], t)].grad.norm() for t in range(T)])
        torch.testing.assert_close(layer.grad_norms, expected, rtol=1e-10, atol=1e-14)
    # The pre-clip global norm: the same as over the gradients autograd gives rnnlab's own parameters.
    model.zero_grad()
    ((model(x) - y) ** 2).mean().backward()
    total = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()]))
    assert d.grad_norm == pytest.approx(float(total), rel=1e-10)
    assert all(p.grad is not None for p in model.parameters())  # measure left .grad alone (no zeroing, no adding)


@pytest.mark.parametrize("cls, gates", [(rnnlab.LSTM, "ifgo"), (rnnlab.GRU, "rzn"), (rnnlab.RNN, None)])
def test_spectral_norm_and_radius_equal_torch_linalg(cls, gates):
    m = cls(2, 6)
    names = list(gates) if gates else ["W_hh"]
    kind = {rnnlab.LSTM: "lstm", rnnlab.GRU: "gru", rnnlab.RNN: "rnn_tanh"}[cls]
    norms, radii = weight_spectra(m.weight_hh_l0, kind)
    W = m.weight_hh_l0.detach().double()
    for name, block in zip(names, W.chunk(len(names))):
        assert norms[name] == pytest.approx(float(torch.linalg.svdvals(block)[0]), rel=1e-10)
        assert radii[name] == pytest.approx(float(torch.linalg.eigvals(block).abs().max()), rel=1e-10)
    assert norms["all"] == pytest.approx(float(torch.linalg.matrix_norm(W, ord=2)), rel=1e-10)
    # and what measure reports is the same
    model = LastStep(m.double())
    d = measure(model, torch.randn(4, 2, 2, dtype=torch.float64), loss_of(model), jacobian_sequences=1)
    assert d.layers[0].spectral_norm == pytest.approx(norms)
    assert d.layers[0].spectral_radius == pytest.approx(radii)


def test_saturation_fraction_on_hand_built_values():
    assert (SIGMOID_LOW, SIGMOID_HIGH, TANH_HIGH) == (0.05, 0.95, 0.95)
    sig = torch.tensor([0.01, 0.05, 0.5, 0.95, 0.96, 0.999, 0.3, 0.7])  # the thresholds themselves do not count
    assert saturation_fraction(sig, "sigmoid") == pytest.approx(3 / 8)
    tanh = torch.tensor([-0.99, -0.95, 0.0, 0.5, 0.951])
    assert saturation_fraction(tanh, "tanh") == pytest.approx(2 / 5)
    assert saturation_fraction(torch.tensor([-1.0, 0.0, 2.0, 3.0]), "relu") == pytest.approx(2 / 4)
    assert gate_saturation({"f": sig, "g": tanh}, {"f": "sigmoid", "g": "tanh"}) == pytest.approx(
        {"f": 3 / 8, "g": 2 / 5})
    with pytest.raises(ValueError, match="gate kind"):
        saturation_fraction(sig, "softmax")


def test_gate_saturation_of_hand_built_lstm_and_gru_gates():
    """W = 0, so each gate is sigma or tanh of its bias alone: the saturated fractions are known exactly."""
    H = 3
    lstm = rnnlab.LSTM(2, H).double()
    with torch.no_grad():
        for p in lstm.parameters():
            p.zero_()
        lstm.bias_ih_l0.copy_(torch.tensor([10.0] * H + [0.0] * H + [3.0] * H + [-10.0] * H))  # i, f, g, o
    model = LastStep(lstm)
    d = measure(model, torch.randn(5, 2, 2, dtype=torch.float64), loss_of(model), jacobian_sequences=1)
    assert d.layers[0].saturation == {"i": 1.0, "f": 0.0, "g": 1.0, "o": 1.0}

    gru = rnnlab.GRU(2, H).double()
    with torch.no_grad():
        for p in gru.parameters():
            p.zero_()
        gru.bias_ih_l0.copy_(torch.tensor([10.0] * H + [0.0] * H + [-5.0] * H))  # r, z, n
    model = LastStep(gru)
    d = measure(model, torch.randn(5, 2, 2, dtype=torch.float64), loss_of(model), jacobian_sequences=1)
    assert d.layers[0].saturation == {"r": 1.0, "z": 0.0, "n": 1.0}


def test_replay_matches_the_layer_on_a_packed_bidirectional_batch():
    """The gates and Jacobians come from replaying each layer with the cell functions: the replayed outputs must be
    the layer's own, including variable lengths (packing) and the reverse direction."""
    m = rnnlab.LSTM(3, 4, num_layers=2, bidirectional=True, batch_first=True).double()
    x = torch.randn(3, 6, 3, dtype=torch.float64)
    lengths = torch.tensor([4, 6, 2])
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    out, _ = m(packed)
    out, _ = pad_packed_sequence(out, batch_first=True)  # (B, T, 2H)
    runs = replay(m, packed)
    mine = torch.cat([runs[(1, 0)].out, runs[(1, 1)].out], dim=2).transpose(0, 1)  # (B, T, 2H)
    torch.testing.assert_close(mine, out, rtol=1e-12, atol=1e-12)


def _png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_figures_are_valid_pngs_and_the_html_embeds_them(tmp_path):
    lstm = rnnlab.LSTM(2, 8).double()
    model = LastStep(lstm)
    d = measure(model, torch.randn(12, 4, 2, dtype=torch.float64), loss_of(model), jacobian_sequences=2)
    tanh = LastStep(tanh_rnn(0.3, H=8))
    d2 = measure(tanh, torch.randn(12, 4, 2, dtype=torch.float64), loss_of(tanh), jacobian_sequences=2)
    history = [(step, d.layers[0].grad_norms * (1 + step)) for step in (0, 5, 10, 20)]
    figs = [report.plot_decay({"LSTM": d, "tanh RNN": d2}, tmp_path / "decay.png", title="decay"),
            report.plot_saturation(d, tmp_path / "sat.png"),
            report.plot_history(history, tmp_path / "hist.png"),
            report.plot_losses({"LSTM": ([1, 2, 3], [1.0, 0.5, 0.1])}, tmp_path / "loss.png", baseline=1 / 6)]
    for path in figs:
        w, h = _png_size(path)
        assert 400 <= w <= 2000 and 250 <= h <= 2000, (path.name, w, h)
    v = verdict(d)
    page = report.write_html(tmp_path / "report.html", "a <test> report", [("verdict", v.text(), [
        (p, p.stem) for p in figs])])
    text = page.read_text(encoding="utf-8")
    import base64
    for p in figs:
        assert base64.b64encode(p.read_bytes()).decode("ascii") in text
    assert text.count("data:image/png;base64,") == len(figs)
    assert "a &lt;test&gt; report" in text and f"verdict: {v.status.upper()}" in text
    assert "src=\"http" not in text  # self-contained


def test_measure_rejects_a_model_without_rnnlab_layers():
    with pytest.raises(ValueError, match="no rnnlab recurrent layer"):
        measure(nn.Linear(2, 2), torch.randn(3, 2), lambda x: x.sum())
