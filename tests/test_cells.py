"""Each cell's one-step forward against torch.nn's cell, and its hand-written backward against autograd and
gradcheck, in float64."""
import pytest
import torch

from rnnlab.cells import elman, gru, lstm

H, I, B = 5, 3, 4
CASES = {
    "tanh": (elman, torch.nn.RNNCell, {"nonlinearity": "tanh"}),
    "relu": (elman, torch.nn.RNNCell, {"nonlinearity": "relu"}),
    "lstm": (lstm, torch.nn.LSTMCell, {}),
    "gru": (gru, torch.nn.GRUCell, {}),
}


def setup(name, seed=0):
    cell, torch_cell, opts = CASES[name]
    torch.manual_seed(seed)
    ref = torch_cell(I, H, **opts).double()
    x = torch.randn(B, I, dtype=torch.float64)
    state = tuple(torch.randn(B, H, dtype=torch.float64) for _ in range(2 if cell.HAS_CELL_STATE else 1))
    return cell, ref, opts, x, state


@pytest.mark.parametrize("name", CASES)
def test_step_matches_torch_cell(name):
    cell, ref, opts, x, state = setup(name)
    gi = torch.addmm(ref.bias_ih, x, ref.weight_ih.t())
    new, _ = cell.forward(gi, state, ref.weight_hh, ref.bias_hh, **opts)
    expected = ref(x, state if len(state) == 2 else state[0])
    expected = expected if isinstance(expected, tuple) else (expected,)
    for a, b in zip(new, expected):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", CASES)
def test_backward_matches_autograd(name):
    cell, ref, opts, x, state = setup(name, seed=1)
    w_hh, b_hh = ref.weight_hh.detach().clone().requires_grad_(), ref.bias_hh.detach().clone()
    gi = torch.addmm(ref.bias_ih, x, ref.weight_ih.t()).detach().requires_grad_()
    state = tuple(s.requires_grad_() for s in state)
    new, saved = cell.forward(gi, state, w_hh, b_hh.requires_grad_(), **opts)
    upstream = tuple(torch.randn_like(s) for s in new)
    auto = torch.autograd.grad(new, (gi, b_hh, *state), upstream)
    dgi, dgh, dprev = cell.backward(upstream, tuple(s.detach() for s in saved), w_hh.detach(), **opts)
    torch.testing.assert_close(dgi, auto[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(dgh.sum(0), auto[1], rtol=1e-12, atol=1e-12)  # b_hh sees the recurrent half
    for a, b in zip(dprev, auto[2:]):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


class _Step(torch.autograd.Function):
    """A cell step whose backward is the cell's own, so gradcheck tests the hand-written derivative."""

    @staticmethod
    def forward(ctx, cell, opts, gi, w_hh, *state):
        new, saved = cell.forward(gi, state, w_hh, None, **opts)
        ctx.cell, ctx.opts = cell, opts
        ctx.save_for_backward(w_hh, state[0], *saved)
        return new

    @staticmethod
    def backward(ctx, *dnew):
        w_hh, h_prev, *saved = ctx.saved_tensors
        dgi, dgh, dprev = ctx.cell.backward(dnew, tuple(saved), w_hh, **ctx.opts)
        return (None, None, dgi, dgh.t() @ h_prev, *dprev)


@pytest.mark.parametrize("name", CASES)
def test_gradcheck(name):
    cell, ref, opts, x, state = setup(name, seed=2)
    gi = torch.randn(B, cell.GATES * H, dtype=torch.float64, requires_grad=True)
    w_hh = ref.weight_hh.detach().clone().requires_grad_()
    state = tuple(s.requires_grad_() for s in state)
    if name == "relu":  # keep pre-activations away from ReLU's kink, where finite differences are meaningless
        gi = (gi.detach() + 3.0 * gi.detach().sign()).requires_grad_()
        w_hh = (0.01 * w_hh.detach()).requires_grad_()
    assert torch.autograd.gradcheck(lambda g, w, *s: _Step.apply(cell, opts, g, w, *s), (gi, w_hh, *state))
