"""Truncated BPTT: detach_state between chunks, and TBPTT(k1, k2) against a brute-force autograd version."""
import pytest
import torch

import rnnlab

T, B, I, H = 11, 2, 3, 4


def brute_force_tbptt_grads(ref, x, y, k1, k2):
    """Per update: unroll torch.nn step by step from the constant state h_{s_u}; gradient of the newest k1 losses."""
    grads = []
    ends = list(range(k1, T, k1)) + [T]
    prev = 0
    for t_end in ends:
        s = max(0, t_end - k2)
        with torch.no_grad():
            _, state = ref(x[:s], None) if s > 0 else (None, None)
        outs, h = [], state
        for t in range(s, t_end):
            o, h = ref(x[t:t + 1], h)
            outs.append(o)
        out = torch.cat(outs)
        loss = ((out[prev - s:] - y[prev:t_end]) ** 2).sum()
        grads.append(torch.autograd.grad(loss, list(ref.parameters())))
        prev = t_end
    return grads


@pytest.mark.parametrize("k1, k2", [(1, 1), (2, 5), (3, 3), (4, 7), (5, 20), (11, 11)])
@pytest.mark.parametrize("cls", [rnnlab.LSTM, rnnlab.GRU])
def test_tbptt_matches_brute_force(cls, k1, k2, backend):
    torch.manual_seed(0)
    m = cls(I, H).double()
    ref = getattr(torch.nn, cls.__name__)(I, H).double()
    ref.load_state_dict(m.state_dict())
    x = torch.randn(T, B, I, dtype=torch.float64)
    y = torch.randn(T, B, H, dtype=torch.float64)
    got = []

    def on_update():  # collect this update's gradient; weights stay fixed so the oracle is unambiguous
        got.append([p.grad.clone() for p in m.parameters()])
        m.zero_grad()

    losses, final = rnnlab.tbptt(m, x, y, lambda o, t: ((o - t) ** 2).sum(), k1, k2, on_update=on_update)
    expected = brute_force_tbptt_grads(ref, x, y, k1, k2)
    assert len(got) == len(expected) == len(losses) == -(-T // k1)
    for g_ours, g_ref in zip(got, expected):
        for a, b in zip(g_ours, g_ref):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    with torch.no_grad():  # the carried state is the state after all T steps
        _, full_state = m(x)
    for a, b in zip(final if isinstance(final, tuple) else (final,), full_state if isinstance(full_state, tuple) else (full_state,)):
        torch.testing.assert_close(a, b)


def test_tbptt_rejects_k2_below_k1():
    m = rnnlab.GRU(I, H)
    with pytest.raises(ValueError, match="k2 must be >= k1.*k1=5, k2=2"):
        rnnlab.tbptt(m, torch.randn(T, B, I), torch.randn(T, B, H), torch.nn.functional.mse_loss, 5, 2)
    with pytest.raises(ValueError, match="k1 must be a positive integer; got 0"):
        rnnlab.tbptt(m, torch.randn(T, B, I), torch.randn(T, B, H), torch.nn.functional.mse_loss, 0, 2)


def test_detached_chunks_equal_tbptt_k_k(backend):
    """The common case: carrying a detached state across chunks of length k is TBPTT(k, k) when k divides T.
    (Otherwise TBPTT's last window still reaches k steps back, across the last chunk boundary.)"""
    torch.manual_seed(1)
    m = rnnlab.LSTM(I, H).double()
    x = torch.randn(12, B, I, dtype=torch.float64)
    y = torch.randn(12, B, H, dtype=torch.float64)
    chunked, state = [], None
    for xc, yc in zip(x.split(4), y.split(4)):
        state = rnnlab.detach_state(state)  # keep the value, cut the graph: backward stops at the chunk boundary
        out, state = m(xc, state)
        ((out - yc) ** 2).sum().backward()
        chunked.append([p.grad.clone() for p in m.parameters()])
        m.zero_grad()
    via_tbptt = []
    rnnlab.tbptt(m, x, y, lambda o, t: ((o - t) ** 2).sum(), 4, 4,
                 on_update=lambda: (via_tbptt.append([p.grad.clone() for p in m.parameters()]), m.zero_grad()))
    assert len(chunked) == len(via_tbptt) == 3
    for a_list, b_list in zip(chunked, via_tbptt):
        for a, b in zip(a_list, b_list):
            torch.testing.assert_close(a, b)


def test_detach_state_cuts_history():
    h = torch.randn(2, 3, requires_grad=True) * 2
    c = torch.randn(2, 3, requires_grad=True) * 2
    out = rnnlab.detach_state((h, [c]))
    assert isinstance(out, tuple) and isinstance(out[1], list)
    assert out[0].grad_fn is None and not out[1][0].requires_grad
    torch.testing.assert_close(out[0], h)
    with pytest.raises(TypeError, match="got int"):
        rnnlab.detach_state(3)
