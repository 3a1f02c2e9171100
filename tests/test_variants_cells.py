"""The cell variants — LayerNormLSTM / LayerNormGRU, SkipRNN, DilatedRNN — against autograd references written
directly from the papers' equations (torch's own cells and F.layer_norm, one step at a time, one sequence at a time),
and their hand-written BPTT against gradcheck in float64, under both engine backends."""
import itertools

import pytest
import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import rnnlab
from rnnlab.engine import function_variants

EPS = 1e-5


# -- references from the equations --------------------------------------------------------------------------------
def ln(y, blocks, g, b):
    """LN of each gate block of y (1, blocks*H), then the gain and shift (Ba et al. 2016)."""
    H = y.shape[-1] // blocks
    return F.layer_norm(y.view(-1, blocks, H), (H,), eps=EPS).reshape(y.shape) * g + b


def ln_lstm_step(p, x, state):
    h, c = state
    a = ln(x @ p["weight_ih"].t(), 4, p["ln_ih_weight"], p["ln_ih_bias"]) + \
        ln(h @ p["weight_hh"].t(), 4, p["ln_hh_weight"], p["ln_hh_bias"])
    a_i, a_f, a_g, a_o = a.chunk(4, 1)
    c = torch.sigmoid(a_f) * c + torch.sigmoid(a_i) * torch.tanh(a_g)
    h = torch.sigmoid(a_o) * torch.tanh(ln(c, 1, p["ln_c_weight"], p["ln_c_bias"]))
    return h, (h, c)


def ln_gru_step(p, x, state):
    (h,) = state
    i_r, i_z, i_n = ln(x @ p["weight_ih"].t(), 3, p["ln_ih_weight"], p["ln_ih_bias"]).chunk(3, 1)
    h_r, h_z, h_n = ln(h @ p["weight_hh"].t(), 3, p["ln_hh_weight"], p["ln_hh_bias"]).chunk(3, 1)
    r, z = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
    n = torch.tanh(i_n + r * h_n)
    h = (1 - z) * n + z * h
    return h, (h,)


def plain_step(cell):
    """torch's own cell (the oracle for the cell S inside Skip RNN and the dilated RNN)."""
    def step(p, x, state):
        args = (p["weight_ih"], p["weight_hh"], p.get("bias_ih"), p.get("bias_hh"))
        if cell == "lstm":
            h, c = torch.lstm_cell(x, state, *args)
            return h, (h, c)
        fn = {"gru": torch.gru_cell, "rnn_tanh": torch.rnn_tanh_cell, "rnn_relu": torch.rnn_relu_cell}[cell]
        h = fn(x, state[0], *args)
        return h, (h,)
    return step


def skip_step(cell):
    """Campos et al. 2018, eqs. 2-5, with the straight-through trick for round()."""
    inner = plain_step(cell)

    def step(p, x, state):
        *s_prev, ut = state
        u = ut + (torch.round(ut) - ut).detach()  # round forwards, identity backwards
        _, cand = inner(p, x, tuple(s_prev))
        s = tuple(u * a + (1 - u) * b for a, b in zip(cand, s_prev))
        head = s[1] if cell == "lstm" else s[0]
        delta = torch.sigmoid(head @ p["update_weight"].t() + p["update_bias"])  # (1, 1)
        ut_next = u * delta + (1 - u) * (ut + torch.minimum(delta, 1 - ut))
        return (s[0], u), (*s, ut_next)
    return step


def params_of(module, layer, direction):
    suffix = f"_l{layer}" + ("_reverse" if direction else "")
    return {n[: -len(suffix)]: p for n, p in module.named_parameters() if n.endswith(suffix)}


def reference(module, step, x, lengths, hx, has_c, layer_params, skip=False, dilations=None):
    """Run the stack one sequence at a time: output (T, B, D*H) (0 past a sequence's end), h_n, c_n, and for Skip
    RNN the u_t of every layer and direction (L*D, T, B) (0 past the end)."""
    T, B, _ = x.shape
    L = len(dilations) if dilations else module.num_layers
    D, H = (2 if module.bidirectional else 1), module.hidden_size
    outs, h_n, c_n, us = [], [], [], []
    for b in range(B):
        n = T if lengths is None else int(lengths[b])
        inp = [x[t, b:b + 1] for t in range(n)]  # each (1, I)
        hb, cb, ub = [], [], []
        for layer in range(L):
            d_step = dilations[layer] if dilations else 1
            dir_outs = []
            for direction in range(D):
                k = layer * D + direction
                p = layer_params(layer, direction)
                zero = x.new_zeros(1, H)
                init = (hx[0][k, b:b + 1] if hx is not None else zero,)
                if has_c:
                    init += (hx[1][k, b:b + 1] if hx is not None else zero,)
                if skip:
                    init += (x.new_ones(1, 1),)
                order = range(n - 1, -1, -1) if direction else range(n)
                states, seq_out, seq_u = {}, [None] * n, [None] * n
                for t in order:
                    src = t + d_step if direction else t - d_step
                    prev = states.get(src, init)  # h_{t-d} (reverse: h_{t+d}); the initial state before the start
                    out, states[t] = step(p, inp[t], prev)
                    if skip:
                        out, seq_u[t] = out
                    seq_out[t] = out
                dir_outs.append(seq_out)
                last = states[0 if direction else n - 1]
                hb.append(last[0])
                if has_c:
                    cb.append(last[1])
                if skip:
                    ub.append(torch.cat([torch.cat(seq_u), x.new_zeros(T - n, 1)]))  # (T, 1)
            inp = [torch.cat([o[t] for o in dir_outs], 1) for t in range(n)]
        outs.append(torch.cat([torch.cat(inp), x.new_zeros(T - n, D * H)]))  # (T, D*H)
        h_n.append(torch.cat(hb))  # (L*D, H)
        if has_c:
            c_n.append(torch.cat(cb))
        if skip:
            us.append(torch.cat(ub, 1))  # (T, L*D)
    u = torch.stack(us, 2).permute(1, 0, 2) if skip else None  # (L*D, T, B)
    return torch.stack(outs, 1), torch.stack(h_n, 1), (torch.stack(c_n, 1) if has_c else None), u


def run_module(module, x, lengths, hx, batch_first):
    """module on x (T, B, I) as padded (maybe batch_first) or packed input: (output (T, B, D*H), h_n, c_n | None)."""
    inp = x.transpose(0, 1) if batch_first else x
    if lengths is not None:
        inp = pack_padded_sequence(inp, lengths, batch_first=batch_first, enforce_sorted=False)
    out, state = module(inp, hx)
    if lengths is not None:
        out, _ = pad_packed_sequence(out, total_length=x.shape[0])
    elif batch_first:
        out = out.transpose(0, 1)
    h_n, c_n = state if isinstance(state, tuple) else (state, None)
    return out, h_n, c_n


def loss_of(out, h_n, c_n, u=None, seed=1):
    g = torch.Generator().manual_seed(seed)
    loss = (out * torch.randn(out.shape, generator=g, dtype=out.dtype)).sum()
    for s in (h_n, c_n):
        if s is not None:
            loss = loss + (s * torch.randn(s.shape, generator=g, dtype=s.dtype)).sum()
    if u is not None:
        loss = loss + 0.3 * u.sum()  # a budget loss: reaches ũ through the straight-through estimator
    return loss


def compare(module, step, has_c, x, lengths, hx, batch_first, skip=False, dilations=None, tol=1e-10,
            layer_params=None):
    """Outputs, final states, u_t (Skip RNN, padded input) and every gradient of a random loss (with a budget term
    for Skip RNN) of ``module`` against ``reference``. hx: a tuple (h0,) or (h0, c0), or None."""
    layer_params = layer_params or (lambda layer, d: params_of(module, layer, d))
    wrt = [x] + list(hx or ()) + list(module.parameters())
    state = None if hx is None else (hx if has_c else hx[0])
    out, h_n, c_n = run_module(module, x, lengths, state, batch_first)
    u = module.updates if skip else None  # any layout: the loss only sums it
    ours = [out, h_n] + ([c_n] if has_c else [])
    if skip and lengths is None:
        ours.append(u.transpose(1, 2) if batch_first else u)  # (L*D, T, B)
    ours_grads = torch.autograd.grad(loss_of(out, h_n, c_n, u), wrt, allow_unused=True)
    r_out, r_h, r_c, r_u = reference(module, step, x, lengths, hx, has_c, layer_params, skip, dilations)
    refs = [r_out, r_h] + ([r_c] if has_c else []) + ([r_u] if skip and lengths is None else [])
    ref_grads = torch.autograd.grad(loss_of(r_out, r_h, r_c, r_u), wrt, allow_unused=True)
    for i, (a, b) in enumerate(zip(ours, refs)):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol, msg=lambda m: f"value {i}: {m}")
    names = ["x"] + [f"hx[{i}]" for i in range(len(hx or ()))] + [n for n, _ in module.named_parameters()]
    for name, a, b in zip(names, ours_grads, ref_grads):
        a = torch.zeros_like(b) if a is None else a
        b = torch.zeros_like(a) if b is None else b
        torch.testing.assert_close(a, b, rtol=tol, atol=tol, msg=lambda m: f"d/d{name}: {m}")
    return u


# Configurations: (num_layers, bidirectional, batch_first, lengths, give hx).
CONFIGS = {
    "1layer": (1, False, False, None, False),
    "2layers-bidir-hx": (2, True, False, None, True),
    "packed-bidir-batchfirst": (2, True, True, [4, 1, 3], True),
}


def make_input(dtype, T=4, B=3, I=3, seed=0):
    torch.manual_seed(seed)
    return torch.randn(T, B, I, dtype=dtype, requires_grad=True)


def make_hx(num, L, D, B, H, dtype):
    return tuple(torch.randn(L * D, B, H, dtype=dtype, requires_grad=True) for _ in range(num))


# -- layer-normalised LSTM and GRU --------------------------------------------------------------------------------
LN_CELLS = {"lstm": (rnnlab.LayerNormLSTM, ln_lstm_step, True), "gru": (rnnlab.LayerNormGRU, ln_gru_step, False)}


def randomise(module, scale=0.5):
    """Move the LN gains and shifts off their (1, 0) initial values, so their gradients are tested in general."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.startswith("ln_"):
                p.add_(scale * torch.randn_like(p))


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("cell", LN_CELLS)
def test_layernorm_matches_reference(cell, config, backend):
    cls, step, has_c = LN_CELLS[cell]
    L, bidir, batch_first, lengths, give_hx = CONFIGS[config]
    x = make_input(torch.float64)
    m = cls(3, 5, num_layers=L, bidirectional=bidir, batch_first=batch_first).double()
    randomise(m)
    hx = make_hx(2 if has_c else 1, L, 2 if bidir else 1, 3, 5, torch.float64) if give_hx else None
    compare(m, step, has_c, x, lengths, hx, batch_first)


@pytest.mark.parametrize("cell", LN_CELLS)
def test_layernorm_float32_matches_reference(cell, backend):
    """float32, H = 20: the C++ vector paths' partial last chunk (16 or 8 lanes) is exercised."""
    cls, step, has_c = LN_CELLS[cell]
    m = cls(3, 20, num_layers=2, bidirectional=True)
    randomise(m)
    x = make_input(torch.float32, T=5)
    compare(m, step, has_c, x, [5, 2, 4], None, False, tol=2e-4)


@pytest.mark.parametrize("cell", LN_CELLS)
def test_layernorm_gradcheck(cell, backend):
    cls, _, has_c = LN_CELLS[cell]
    m = cls(3, 4, bidirectional=True).double()  # stacking is held to the reference above; one layer keeps it fast
    randomise(m)
    names = [n for n, _ in m.named_parameters()]
    x = torch.randn(3, 2, 3, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(2, 2, 4, dtype=torch.float64, requires_grad=True)
    params = [p.detach().clone().requires_grad_() for p in m.parameters()]

    def f(x, h0, *ps):
        state = (h0, torch.tanh(h0)) if has_c else h0
        out, hn = torch.func.functional_call(m, dict(zip(names, ps)), (x, state))
        return out, hn[1] if has_c else hn

    assert torch.autograd.gradcheck(f, (x, h0, *params))


# -- Skip RNN -------------------------------------------------------------------------------------------------------
SKIP_CELLS = ("lstm", "gru", "rnn_tanh", "rnn_relu")


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("cell", SKIP_CELLS)
def test_skip_matches_straight_through_reference(cell, config, backend):
    L, bidir, batch_first, lengths, give_hx = CONFIGS[config]
    x = make_input(torch.float64, T=6)
    # update_bias -1: Δũ ≈ σ(-1) ≈ 0.27, so the gates skip a step or two between updates
    m = rnnlab.SkipRNN(cell, 3, 5, num_layers=L, bidirectional=bidir, batch_first=batch_first,
                       update_bias=-1.0).double()
    has_c = cell == "lstm"
    hx = make_hx(2 if has_c else 1, L, 2 if bidir else 1, 3, 5, torch.float64) if give_hx else None
    u = compare(m, skip_step(cell), has_c, x, lengths, hx, batch_first, skip=True)
    assert (u == 0).any() and (u == 1).any(), "the test must see both skipped and updated steps"


@pytest.mark.parametrize("cell", SKIP_CELLS)
def test_skip_float32_matches_reference(cell, backend):
    m = rnnlab.SkipRNN(cell, 3, 20, num_layers=2, bidirectional=True, update_bias=0.0)
    compare(m, skip_step(cell), cell == "lstm", make_input(torch.float32, T=6), None, None, False, skip=True,
            tol=2e-4)


@pytest.mark.parametrize("reverse", (False, True))
@pytest.mark.parametrize("cell", SKIP_CELLS)
def test_skip_gradcheck(cell, reverse, backend):
    """The hand-written BPTT with u_t = ũ_t (hard=False): there the straight-through backward is the exact derivative,
    so finite differences check it. (With round(), finite differences see a piecewise-constant u_t and the
    straight-through gradient is by design not the derivative; that case is held to the autograd reference above.)"""
    mode = {"rnn_tanh": 0, "rnn_relu": 1, "lstm": 2, "gru": 3}[cell]
    G, H, I = {0: 1, 1: 1, 2: 4, 3: 3}[mode], 4, 3
    batch_sizes = torch.tensor([3, 3, 2, 1])  # packed: sequences of length 4, 3, 2
    N = int(batch_sizes.sum())
    dt = torch.float64
    g = torch.Generator().manual_seed(5)
    rnd = lambda *s: torch.randn(*s, generator=g, dtype=dt).requires_grad_()  # noqa: E731
    x, h0 = rnd(N, I), rnd(3, H)
    c0 = rnd(3, H) if mode == 2 else torch.empty(0, dtype=dt)
    w_ih, w_hh, b_ih, b_hh = rnd(G * H, I), rnd(G * H, H), rnd(G * H), rnd(G * H)
    if mode == 1:  # keep ReLU's pre-activations away from its kink
        with torch.no_grad():
            b_ih.add_(2.0)
            w_hh.mul_(0.1)
    w_p, b_p = rnd(1, H), rnd(1)
    inputs = (x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_p, b_p)
    out = function_variants.run_skip(mode, False, reverse, batch_sizes, *inputs)
    assert out[1].requires_grad and not torch.all(out[1] == 1), "u must vary and carry a gradient"
    assert torch.autograd.gradcheck(
        lambda *t: function_variants.run_skip(mode, False, reverse, batch_sizes, *t), inputs)


def test_skip_budget_loss_is_lambda_times_updates_per_sequence():
    m = rnnlab.SkipRNN("gru", 3, 5, num_layers=2, budget=0.25, update_bias=0.0, batch_first=True)
    x = torch.randn(4, 7, 3)  # (B, T, I)
    m(x)
    assert m.updates.shape == (2, 4, 7)  # (L*D, B, T) with batch_first
    assert set(m.updates.unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(m.budget_loss(), 0.25 * m.updates.sum() / 4)
    assert torch.all(m.updates[:, :, 0] == 1), "ũ_1 = 1: every sequence updates at its first step"


def test_skip_copies_the_state_when_it_skips():
    m = rnnlab.SkipRNN("lstm", 3, 5, update_bias=-4.0)  # Δũ ≈ 0.02: after the first step, skips for a while
    out, _ = m(torch.randn(6, 2, 3))
    u = m.updates[0]  # (T, B)
    assert torch.all(u[0] == 1) and torch.all(u[1] == 0)
    for t in range(1, 6):
        skipped = u[t] == 0
        torch.testing.assert_close(out[t][skipped], out[t - 1][skipped], rtol=0, atol=0)


# -- dilated RNN ------------------------------------------------------------------------------------------------------
DILATED_CASES = {
    # cell, dilations, T, bidirectional, batch_first, lengths, give hx
    "lstm-124-T7": ("lstm", (1, 2, 4), 7, False, False, None, True),
    "gru-3-2-T8-bidir": ("gru", (3, 2), 8, True, False, None, False),
    "tanh-2-4-packed-bidir": ("rnn_tanh", (2, 4), 7, True, True, [7, 2, 5], True),
    "relu-1-3-T6": ("rnn_relu", (1, 3), 6, False, True, None, False),
    "lnlstm-2-3-packed": ("layernorm_lstm", (2, 3), 7, False, False, [3, 7, 6], False),
}


@pytest.mark.parametrize("case", DILATED_CASES)
def test_dilated_matches_stepwise_reference(case, backend):
    """h_t = cell(x_t, h_{t-d}) one step at a time (torch's cells), against the re-batched layers."""
    cell, dilations, T, bidir, batch_first, lengths, give_hx = DILATED_CASES[case]
    m = rnnlab.DilatedRNN(cell, 3, 4, dilations=dilations, bidirectional=bidir, batch_first=batch_first).double()
    if cell == "rnn_relu":  # ReLU kinks are harmless here (no finite differences), but keep values moderate
        with torch.no_grad():
            for p in m.parameters():
                p.mul_(0.5)
    has_c = cell.endswith("lstm")
    D = 2 if bidir else 1
    hx = make_hx(2 if has_c else 1, len(dilations), D, 3, 4, torch.float64) if give_hx else None
    step = ln_lstm_step if cell == "layernorm_lstm" else plain_step(cell)
    x = make_input(torch.float64, T=T)
    compare(m, step, has_c, x, lengths, hx, batch_first, dilations=dilations,
            layer_params=lambda layer, d: params_of(m.layers[layer], 0, d))


def test_dilated_packed_output_keeps_the_input_layout():
    m = rnnlab.DilatedRNN("gru", 2, 3, dilations=(2,))
    x = torch.randn(5, 3, 2)
    packed = pack_padded_sequence(x, [5, 2, 4], enforce_sorted=False)
    out, _ = m(packed)
    assert torch.equal(out.batch_sizes, packed.batch_sizes)
    assert torch.equal(out.sorted_indices, packed.sorted_indices)
    padded, lens = pad_packed_sequence(out)
    ref, _ = m(x[:2, 1:2])  # sequence 1 alone, its own 2 steps
    torch.testing.assert_close(padded[:2, 1:2], ref)


# -- common behaviour -------------------------------------------------------------------------------------------------
LAYERS = {
    "layernorm_lstm": lambda **kw: rnnlab.LayerNormLSTM(3, 6, **kw),
    "layernorm_gru": lambda **kw: rnnlab.LayerNormGRU(3, 6, **kw),
    "skip_lstm": lambda **kw: rnnlab.SkipRNN("lstm", 3, 6, **kw),
    "dilated_gru": lambda **kw: rnnlab.DilatedRNN("gru", 3, 6, dilations=(1, 2), **kw),
}


@pytest.mark.parametrize("name", LAYERS)
def test_eval_mode_is_deterministic_and_dropout_only_in_training(name, backend):
    kw = {"dropout": 0.5} if name.startswith("dilated") else {"dropout": 0.5, "num_layers": 2}
    m = LAYERS[name](**kw)
    x = torch.randn(5, 4, 3)
    m.eval()
    torch.testing.assert_close(m(x)[0], m(x)[0], rtol=0, atol=0)
    m.train()
    assert not torch.equal(m(x)[0], m(x)[0]), "dropout between layers must act in training"


@pytest.mark.parametrize("name", LAYERS)
def test_unbatched_input_is_a_batch_of_one(name, backend):
    m = LAYERS[name]()
    x = torch.randn(5, 3)
    out, state = m(x)
    out_b, state_b = m(x.unsqueeze(1))
    torch.testing.assert_close(out, out_b.squeeze(1))
    as_tuple = lambda s: s if isinstance(s, tuple) else (s,)  # noqa: E731
    for a, b in zip(as_tuple(state), as_tuple(state_b)):
        torch.testing.assert_close(a, b.squeeze(1))


@pytest.mark.parametrize("name", ["layernorm_lstm", "layernorm_gru", "skip_lstm"])
def test_stepping_equals_full_sequence(name, backend):
    # Skip RNN's ũ restarts at 1 on every call, so stepping updates at every step: give it a head that always does
    # (Δũ = σ(W_p c + 20) ≈ 1) for the two to agree.
    m = LAYERS[name](num_layers=2, **({"update_bias": 20.0} if name.startswith("skip") else {}))
    x = torch.randn(4, 2, 3)
    full, _ = m(x)
    state, outs = None, []
    for t in range(4):
        o, state = m.step(x[t], state)
        outs.append(o)
    torch.testing.assert_close(torch.stack(outs), full)


def test_the_cpp_loop_with_two_threads_matches_the_python_one(monkeypatch):
    """H = 128: enough recurrent work per step that the C++ loop splits it over 2 threads (column GEMMs, row math)."""
    from rnnlab.engine import _cpp

    if _cpp.load() is None:
        pytest.skip("no C++ engine here")
    torch.set_num_threads(2)  # the conftest fixture restores the count
    if _cpp.load().num_threads_for(4, 128, 4 * 6, 6) < 2:
        pytest.skip("one thread on this machine")
    makers = {"ln": lambda: rnnlab.LayerNormLSTM(8, 128), "lngru": lambda: rnnlab.LayerNormGRU(8, 128),
              "skip": lambda: rnnlab.SkipRNN("gru", 8, 128, update_bias=0.0)}
    results = {}
    for be in ("cpp", "python"):
        monkeypatch.setenv("RNNLAB_BACKEND", be)  # restored after the test, whatever the user had set
        for (name, make), dtype in itertools.product(makers.items(), (torch.float64, torch.float32)):
            torch.manual_seed(0)
            m = make().to(dtype)
            x = torch.randn(6, 4, 8, dtype=dtype, requires_grad=True)
            out, _ = m(x)
            grads = torch.autograd.grad(loss_of(out, None, None), [x, *m.parameters()])
            results[be, name, dtype] = [out, *grads]
    for name, dtype in itertools.product(makers, (torch.float64, torch.float32)):
        tol = 1e-10 if dtype == torch.float64 else 2e-4
        for a, b in zip(results["cpp", name, dtype], results["python", name, dtype]):
            torch.testing.assert_close(a, b, rtol=tol, atol=tol)


@pytest.mark.parametrize("make, match", [
    (lambda: rnnlab.SkipRNN("lstmx", 3, 4), "cell must be one of"),
    (lambda: rnnlab.SkipRNN("lstm", 3, 4, budget=-1), "budget must be a number >= 0"),
    (lambda: rnnlab.DilatedRNN("lstm", 3, 4, dilations=(1, 0)), "dilations must be a non-empty sequence"),
    (lambda: rnnlab.DilatedRNN("lstm", 3, 4, dilations=4), "dilations must be a non-empty sequence"),
    (lambda: rnnlab.DilatedRNN("tcn", 3, 4), "cell must be one of"),
    (lambda: rnnlab.LayerNormLSTM(3, 4, eps=0), "eps must be a positive number"),
    (lambda: rnnlab.LayerNormGRU(3, 4, dropout=2), "dropout must be a number in"),
    (lambda: rnnlab.LayerNormGRU(0, 4), "input_size must be a positive integer"),
])
def test_bad_constructor_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_input_names_the_shape():
    with pytest.raises(ValueError, match=r"input must have shape \(5, 2, 3\); got \(5, 2, 4\)"):
        rnnlab.LayerNormLSTM(3, 4)(torch.randn(5, 2, 4))
    with pytest.raises(ValueError, match=r"h0 must have shape \(1, 2, 4\)"):
        rnnlab.SkipRNN("gru", 3, 4)(torch.randn(5, 2, 3), torch.randn(2, 2, 4))
    with pytest.raises(ValueError, match="input_size=3"):
        rnnlab.DilatedRNN("gru", 3, 4)(torch.randn(5, 2, 4))
