"""The gradient-through-time probe reads ||dL/dh_t|| off our backward; autograd through torch.nn, run one step at
a time with every h_t retained, is the oracle."""
import pytest
import torch

import rnnlab

TORCH = {rnnlab.LSTM: torch.nn.LSTM, rnnlab.GRU: torch.nn.GRU, rnnlab.RNN: torch.nn.RNN}


def autograd_norms(m, x, weights):
    """||dL/dh_t|| per (layer, direction) for L = sum(output * weights), by autograd through torch.nn steps."""
    T, B, _ = x.shape
    lstm = isinstance(m, rnnlab.LSTM)
    layer_in, retained = x, {}
    for layer in range(m.num_layers):
        outs = []
        for d in range(m.num_directions):
            ref = TORCH[type(m)](layer_in.shape[-1], m.hidden_size).double()
            w = m._weights(layer, d)
            ref.load_state_dict(dict(zip(["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"], w)))
            h = torch.zeros(1, B, m.hidden_size, dtype=x.dtype)
            state = (h, h) if lstm else h
            steps = [None] * T
            for t in (reversed(range(T)) if d else range(T)):
                o, new = ref(layer_in[t:t + 1], state)  # o: (1, B, H) is h_t
                o.retain_grad()
                retained[(layer, d, t)] = o
                state = (o, new[1]) if lstm else o  # feed h_t itself forward so its .grad is the total gradient
                steps[t] = o
            outs.append(torch.cat(steps))  # (T, B, H)
        layer_in = torch.cat(outs, dim=2)
    (layer_in * weights).sum().backward()
    return {(l, d): torch.stack([retained[(l, d, t)].grad.norm() for t in range(T)])
            for l in range(m.num_layers) for d in range(m.num_directions)}


@pytest.mark.parametrize("cls", [rnnlab.LSTM, rnnlab.GRU, rnnlab.RNN])
@pytest.mark.parametrize("layers, bidirectional", [(1, False), (2, False), (2, True)])
def test_probe_equals_autograd(cls, layers, bidirectional, backend):
    torch.manual_seed(0)
    m = cls(3, 5, num_layers=layers, bidirectional=bidirectional).double()
    x = torch.randn(7, 2, 3, dtype=torch.float64)
    weights = torch.randn(7, 2, 5 * m.num_directions, dtype=torch.float64)
    with rnnlab.probe(m) as p:
        out, _ = m(x)
        (out * weights).sum().backward()
    expected = autograd_norms(m, x, weights)
    name = type(m).__name__
    assert set(p.grad_norms) == {(name, l, d) for l, d in expected}
    for (l, d), norms in expected.items():
        torch.testing.assert_close(p.grad_norms[(name, l, d)], norms, rtol=1e-10, atol=1e-12)


def test_probe_records_nothing_outside_its_block(backend):
    m = rnnlab.GRU(3, 4)
    x = torch.randn(5, 2, 3)
    with rnnlab.probe() as p:
        pass
    m(x)[0].sum().backward()
    assert p.grad_norms == {}


def test_probe_labels_submodules_and_repeated_calls(backend):
    model = torch.nn.ModuleDict({"encoder": rnnlab.LSTM(3, 4), "decoder": rnnlab.GRU(4, 4)})
    x = torch.randn(6, 2, 3)
    with rnnlab.probe(model) as p:
        for chunk in x.split(3):
            h, _ = model["encoder"](chunk)
            y, _ = model["decoder"](h)
            y.sum().backward()
    assert [k for k, _ in p.calls] == [("encoder", 0, 0), ("decoder", 0, 0)] * 2
    assert all(v.shape == (3,) and torch.all(v > 0) for _, v in p.calls)
