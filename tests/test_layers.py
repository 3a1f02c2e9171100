"""rnnlab.RNN / LSTM / GRU against torch.nn with copied weights: outputs, final states and every gradient, for both
engine backends, over the full grid of layer options (4 cells x 3 depths x 2^5 flags = 384 configurations)."""
import itertools
import random
import zlib

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import rnnlab

CELLS = {
    "rnn_tanh": (rnnlab.RNN, torch.nn.RNN, {"nonlinearity": "tanh"}),
    "rnn_relu": (rnnlab.RNN, torch.nn.RNN, {"nonlinearity": "relu"}),
    "lstm": (rnnlab.LSTM, torch.nn.LSTM, {}),
    "gru": (rnnlab.GRU, torch.nn.GRU, {}),
}
TOL = {torch.float64: 1e-10, torch.float32: 1e-4}
GRID = list(itertools.product(CELLS, (1, 2, 3), (False, True), (False, True), (False, True), (False, True), (False, True)))


def rel_err(a, b):
    return float((a - b).norm() / b.norm().clamp_min(1e-30)) if b.norm() > 0 else float(a.norm())


def make_pair(cell, dtype, seed, **kw):
    ours, theirs, extra = CELLS[cell]
    torch.manual_seed(seed)
    m = ours(**kw, **extra).to(dtype)
    t = theirs(**kw, **extra).to(dtype)
    t.load_state_dict(m.state_dict())  # same names and shapes: the state_dict moves across unchanged
    return m, t


def run_case(cell, num_layers, bidirectional, batch_first, bias, give_h0, packed, dtype, seed):
    rng = random.Random(seed)
    I, H, T, B = rng.randint(1, 5), rng.randint(1, 6), rng.randint(1, 6), rng.randint(1, 4)
    m, t = make_pair(cell, dtype, seed, input_size=I, hidden_size=H, num_layers=num_layers, bias=bias,
                     batch_first=batch_first, bidirectional=bidirectional)
    D = 2 if bidirectional else 1
    shape = (B, T, I) if batch_first else (T, B, I)
    x = torch.randn(shape, dtype=dtype, requires_grad=True)
    hx = None
    if give_h0:
        hx = [torch.randn(num_layers * D, B, H, dtype=dtype, requires_grad=True) for _ in range(2 if cell == "lstm" else 1)]
    lengths = None
    if packed:  # unsorted lengths, always including a length-1 sequence
        lengths = torch.tensor([rng.randint(1, T) for _ in range(B)])
        lengths[rng.randrange(B)] = 1
    results = []
    for module in (m, t):
        inp = pack_padded_sequence(x, lengths, batch_first=batch_first, enforce_sorted=False) if packed else x
        state = None if hx is None else (tuple(hx) if cell == "lstm" else hx[0])
        out, hn = module(inp, state)
        states = list(hn) if cell == "lstm" else [hn]
        out_t = out.data if packed else out
        g = torch.Generator().manual_seed(seed + 1)  # same random loss weights for both modules
        loss = (out_t * torch.randn(out_t.shape, generator=g, dtype=dtype)).sum()
        for s in states:
            loss = loss + (s * torch.randn(s.shape, generator=g, dtype=dtype)).sum()
        wrt = [x] + (hx or []) + list(module.parameters())
        grads = torch.autograd.grad(loss, wrt)
        results.append([out_t.detach()] + [s.detach() for s in states] + list(grads))
    names = ["output"] + (["h_n", "c_n"] if cell == "lstm" else ["h_n"]) + ["d_input"] + \
        [f"d_{n}" for n in (["h0", "c0"] if cell == "lstm" else ["h0"])][: len(hx or [])] + \
        [f"d_{n}" for n, _ in m.named_parameters()]
    assert len(names) == len(results[0])
    for name, a, b in zip(names, results[0], results[1]):
        assert a.shape == b.shape, name
        assert rel_err(a, b) <= TOL[dtype], f"{name}: relative error {rel_err(a, b):.3g}"


@pytest.mark.parametrize("case", GRID, ids=lambda c: "-".join(str(int(v)) if isinstance(v, bool) else str(v) for v in c))
def test_matches_torch_float64(case, backend):
    run_case(*case, dtype=torch.float64, seed=zlib.crc32(repr(case).encode()) % 10_000)


@pytest.mark.parametrize("case", GRID[::3], ids=lambda c: "-".join(str(int(v)) if isinstance(v, bool) else str(v) for v in c))
def test_matches_torch_float32(case, backend):
    run_case(*case, dtype=torch.float32, seed=zlib.crc32(repr(case).encode()) % 10_000 + 7)


@pytest.mark.parametrize("cell", CELLS)
def test_gradcheck(cell, backend):
    m, _ = make_pair(cell, torch.float64, 0, input_size=3, hidden_size=4, num_layers=2, bidirectional=True)
    names = [n for n, _ in m.named_parameters()]
    x = torch.randn(4, 2, 3, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(4, 2, 4, dtype=torch.float64, requires_grad=True)
    params = [p.detach().clone().requires_grad_() for p in m.parameters()]

    def f(x, h0, *ps):
        state = (h0, torch.tanh(h0)) if cell == "lstm" else h0
        out, hn = torch.func.functional_call(m, dict(zip(names, ps)), (x, state))
        return out, hn[0] if cell == "lstm" else hn

    assert torch.autograd.gradcheck(f, (x, h0, *params))


@pytest.mark.parametrize("cell", CELLS)
def test_stepping_equals_full_sequence(cell, backend):
    m, _ = make_pair(cell, torch.float64, 1, input_size=3, hidden_size=5, num_layers=2, batch_first=True)
    x = torch.randn(2, 6, 3, dtype=torch.float64)
    full, state_full = m(x)
    state, outs = None, []
    for t in range(6):
        out_t, state = m.step(x[:, t], state)  # (B, H)
        outs.append(out_t)
    torch.testing.assert_close(torch.stack(outs, 1), full)
    for a, b in zip(state if cell == "lstm" else [state], state_full if cell == "lstm" else [state_full]):
        torch.testing.assert_close(a, b)


def test_unbatched_input_matches_torch(backend):
    m, t = make_pair("gru", torch.float64, 2, input_size=3, hidden_size=4, num_layers=2, bidirectional=True)
    x = torch.randn(5, 3, dtype=torch.float64)
    h0 = torch.randn(4, 4, dtype=torch.float64)
    (o1, h1), (o2, h2) = m(x, h0), t(x, h0)
    torch.testing.assert_close(o1, o2)
    torch.testing.assert_close(h1, h2)


def test_no_grad_keeps_nothing_for_backward(backend, monkeypatch):
    from rnnlab.engine import function

    calls = []
    real = function.get_backend

    class Spy:
        def __init__(self, inner):
            self.inner = inner

        def forward(self, *args):
            calls.append(args[-1])  # the `save` flag
            return self.inner.forward(*args)

        def backward(self, *args):
            return self.inner.backward(*args)

    monkeypatch.setattr(function, "get_backend", lambda device=None: Spy(real(device)))
    m = rnnlab.LSTM(3, 4, num_layers=2)
    x = torch.randn(5, 2, 3)
    with torch.no_grad():
        out, _ = m(x)
    assert out.grad_fn is None and calls == [False, False]
    calls.clear()
    out, _ = m(x)
    assert out.grad_fn is not None and calls == [True, True]


def test_state_dict_loads_both_ways():
    t = torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True)
    m = rnnlab.LSTM(3, 4, num_layers=2, bidirectional=True)
    m.load_state_dict(t.state_dict())
    t.load_state_dict(m.state_dict())
    assert list(m.state_dict()) == list(t.state_dict())


def test_dropout_between_layers_only_in_training(backend):
    m = rnnlab.LSTM(3, 8, num_layers=2, dropout=0.5)
    x = torch.randn(4, 2, 3)
    m.eval()
    torch.testing.assert_close(m(x)[0], m(x)[0])
    m.train()
    torch.manual_seed(0)
    a = m(x)[0]
    torch.manual_seed(1)
    b = m(x)[0]
    assert not torch.allclose(a, b)
    single = rnnlab.LSTM(3, 8, dropout=0.0)
    assert torch.allclose(single(x)[0], single(x)[0])


@pytest.mark.parametrize("make, x, hx, match", [
    (lambda: rnnlab.LSTM(3, 4), torch.randn(5, 2, 7), None, r"input must have shape \(5, 2, 3\); got \(5, 2, 7\)"),
    (lambda: rnnlab.GRU(3, 4), torch.randn(5), None, r"3-D \(T, B, input_size\).*got 1-D"),
    (lambda: rnnlab.RNN(3, 4, batch_first=True), torch.randn(1, 2, 5, 3), None, r"3-D \(B, T, input_size\).*got 4-D"),
    (lambda: rnnlab.GRU(3, 4, num_layers=2), torch.randn(5, 2, 3), torch.zeros(1, 2, 4), r"h0 must have shape \(2, 2, 4\); got \(1, 2, 4\)"),
    (lambda: rnnlab.LSTM(3, 4), torch.randn(5, 2, 3), (torch.zeros(1, 2, 4), torch.zeros(1, 3, 4)), r"c0 must have shape \(1, 2, 4\); got \(1, 3, 4\)"),
    (lambda: rnnlab.LSTM(3, 4), torch.randn(5, 2, 3), torch.zeros(1, 2, 4), r"hx must be a tuple \(h0, c0\)"),
    (lambda: rnnlab.LSTM(3, 4), torch.randn(5, 2, 3, dtype=torch.float64), None, r"dtype must equal"),
])
def test_bad_input_raises_value_error_naming_shapes(make, x, hx, match):
    with pytest.raises(ValueError, match=match):
        make()(x, hx)


@pytest.mark.parametrize("kwargs, match", [
    ({"hidden_size": 0}, "hidden_size must be a positive integer; got 0"),
    ({"num_layers": -1}, "num_layers must be a positive integer; got -1"),
    ({"dropout": 1.5}, r"dropout must be a number in \[0, 1\]"),
    ({"proj_size": 2}, "proj_size must be 0"),
])
def test_bad_constructor_arguments(kwargs, match):
    args = {"input_size": 3, "hidden_size": 4, **kwargs}
    with pytest.raises(ValueError, match=match):
        rnnlab.LSTM(**args)


def test_bad_nonlinearity():
    with pytest.raises(ValueError, match="nonlinearity must be 'tanh' or 'relu'; got 'sigmoid'"):
        rnnlab.RNN(3, 4, nonlinearity="sigmoid")
