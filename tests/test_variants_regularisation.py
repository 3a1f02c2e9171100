"""Recurrent regularisation of rnnlab.RNN / LSTM / GRU — weight drop (DropConnect on W_hh), locked (variational)
dropout on inputs, between layers and on outputs, variational dropout on the recurrent state, zoneout on h and c —
held to an autograd reference written straight from the papers' equations with the same masks (the layer's draws
are recorded through ``rnnlab.layers._mask``), under both engine backends, stacked, bidirectional and packed with
unequal lengths; gradcheck in float64; eval mode deterministic and equal to zoneout's expectation; all options 0 the
plain layer bit for bit; the C++ loop's parallel, chunked and weight-gradient paths against the Python loop; the
models' ``rnn_options`` and the CLI flags."""
from __future__ import annotations

import pytest
import torch
from torch.func import functional_call
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import rnnlab
from rnnlab import layers
from rnnlab.engine import function, unroll

from cli_helpers import cli, one_line_error

CELLS = {"lstm": (rnnlab.LSTM, {}), "gru": (rnnlab.GRU, {}), "rnn_tanh": (rnnlab.RNN, {"nonlinearity": "tanh"})}
VARIANTS = {
    "weight_drop": {"weight_drop": 0.5},
    "locked": {"input_dropout": 0.3, "locked_dropout": 0.4, "output_dropout": 0.25},
    "recurrent": {"recurrent_dropout": 0.4},
    "zoneout": {"zoneout": 0.35},  # an LSTM gets (0.35, 0.5): h and c with their own p
    "all": {"weight_drop": 0.5, "input_dropout": 0.3, "locked_dropout": 0.4, "output_dropout": 0.25,
            "recurrent_dropout": 0.4, "zoneout": 0.35},
}
LENGTHS = [5, 2, 4, 1]  # unsorted and unequal: packing sorts them, and sequences end (or start, reversed) mid-batch
TOL = 1e-10


def options_for(cell: str, variant: str) -> dict:
    opts = dict(VARIANTS[variant])
    if cell == "lstm" and "zoneout" in opts:
        opts["zoneout"] = (opts["zoneout"], 0.5)
    return opts


@pytest.fixture
def masks(monkeypatch):
    """Every mask the layer draws, by (kind, layer, direction); replayed (not redrawn) once recorded, so a function
    of the inputs is deterministic (gradcheck)."""
    drawn = {}
    real = layers._mask

    def recording(kind, shape, p, like, layer, direction):
        key = (kind, layer, direction)
        if key not in drawn:
            drawn[key] = real(kind, shape, p, like, layer, direction)
        assert drawn[key].shape == tuple(shape)
        return drawn[key]

    monkeypatch.setattr(layers, "_mask", recording)
    return drawn


# -- the reference: the papers' equations, one step at a time, autograd for the gradients ----------------------------
def cell_step(mode: int, x_t, h, c, w_ih, w_hh, b_ih, b_hh, h_rec):
    """(h~_t, c~_t) of torch.nn's cells; ``h_rec`` is the h_{t-1} that meets W_hh (h_{t-1} ⊙ m under recurrent
    dropout, Gal & Ghahramani 2016)."""
    gi = x_t @ w_ih.t() + b_ih  # (B, G*H)
    gh = h_rec @ w_hh.t() + b_hh  # (B, G*H)
    if mode == unroll.LSTM:
        i, f, g, o = (gi + gh).chunk(4, 1)
        i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
        c_new = f * c + i * g
        return o * torch.tanh(c_new), c_new
    if mode == unroll.GRU:
        i_r, i_z, i_n = gi.chunk(3, 1)
        h_r, h_z, h_n = gh.chunk(3, 1)
        r, z = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
        n = torch.tanh(i_n + r * h_n)
        return (1 - z) * n + z * h, None  # z ⊙ h_{t-1}: the undropped state
    return torch.tanh(gi + gh), None


def reference(m, x, lengths, h0, c0, masks, training: bool, params=None):
    """The layer from its equations. x (T, B, I) padded, original batch order; masks in the engine's order (a
    PackedSequence sorts sequences by length). Returns out (T, B, D*H) with zeros at padding, h_n, c_n."""
    params = dict(m.named_parameters()) if params is None else params
    T, B = x.shape[:2]
    order = torch.sort(lengths, descending=True, stable=True).indices  # engine position b holds sequence order[b]
    by_seq = torch.argsort(order)  # mask[by_seq]: the engine-order rows of a (B, F) mask in the batch's order
    sizes = [(lengths > t).sum().item() for t in range(T)]

    def rows_to_steps(z):  # (N, H) engine rows → (T, B, H) in batch order
        out = z.new_zeros(T, B, z.shape[1])
        off = 0
        for t, bs in enumerate(sizes):
            out[t, order[:bs]] = z[off:off + bs]
            off += bs
        return out

    D, H, mode = m.num_directions, m.hidden_size, m._engine_mode
    inp, h_n, c_n = x, [], []
    for layer in range(m.num_layers):
        key = ("input", 0, None) if layer == 0 else ("locked", layer, None)
        if training and key in masks:
            inp = inp * masks[key][by_seq]  # locked: one mask per sequence and feature, every step
        outs = []
        for d in range(D):
            k = layer * D + d
            sfx = f"_l{layer}" + ("_reverse" if d else "")
            w_ih, w_hh = params["weight_ih" + sfx], params["weight_hh" + sfx]
            b_ih, b_hh = params["bias_ih" + sfx], params["bias_hh" + sfx]
            if training and ("weight", layer, d) in masks:
                w_hh = w_hh * masks[("weight", layer, d)]  # DropConnect: W_hh ⊙ M / (1 - p)
            rec = masks[("recurrent", layer, d)][by_seq] if training and ("recurrent", layer, d) in masks else None
            zones = []
            for kind, p in (("zone_h", m.zoneout_h), ("zone_c", m.zoneout_c)):
                if p == 0:
                    zones.append(None)
                elif training:
                    zones.append(rows_to_steps(masks[(kind, layer, d)]))
                else:
                    zones.append(torch.full((T, B, H), p, dtype=x.dtype))  # eval: the expectation
            h, c = h0[k], c0[k] if c0 is not None else None
            out = [None] * T
            for t in (range(T - 1, -1, -1) if d else range(T)):
                active = (lengths > t)[:, None]  # (B, 1)
                h_t, c_t = cell_step(mode, inp[t], h, c, w_ih, w_hh, b_ih, b_hh, h if rec is None else h * rec)
                if zones[0] is not None:  # zoneout (Krueger et al. 2016): h_t = d h_{t-1} + (1 - d) h~_t
                    h_t = zones[0][t] * h + (1 - zones[0][t]) * h_t
                if zones[1] is not None:
                    c_t = zones[1][t] * c + (1 - zones[1][t]) * c_t
                h = torch.where(active, h_t, h)
                c = torch.where(active, c_t, c) if c is not None else None
                out[t] = torch.where(active, h_t, torch.zeros_like(h_t))
            outs.append(torch.stack(out))  # (T, B, H)
            h_n.append(h)
            c_n.append(c)
        inp = torch.cat(outs, 2)  # (T, B, D*H)
    if training and ("output", m.num_layers - 1, None) in masks:
        inp = inp * masks[("output", m.num_layers - 1, None)][by_seq]
    return inp, torch.stack(h_n), torch.stack(c_n) if c0 is not None else None


def run_layer(m, x, lengths, h0, c0, packed=True, params=None):
    """The layer's out (T, B, D*H) padded with zeros, h_n, c_n."""
    state = (h0, c0) if c0 is not None else h0
    if packed:
        inp = pack_padded_sequence(x, lengths, enforce_sorted=False)
    else:
        inp = x
    if params is None:
        out, hn = m(inp, state)
    else:
        out, hn = functional_call(m, params, (inp, state))
    if packed:
        out, _ = pad_packed_sequence(out, total_length=x.shape[0])
    return (out, *hn) if c0 is not None else (out, hn, None)


def make(cell: str, I=3, H=5, L=2, seed=0, **opts):
    cls, extra = CELLS[cell]
    torch.manual_seed(seed)
    return cls(I, H, L, bidirectional=True, **extra, **opts).double()


def inputs(m, T, B, seed=1):
    g = torch.Generator().manual_seed(seed)
    D, H = m.num_directions, m.hidden_size
    x = torch.randn(T, B, m.input_size, generator=g, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(m.num_layers * D, B, H, generator=g, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(m.num_layers * D, B, H, generator=g, dtype=torch.float64, requires_grad=True) \
        if m._engine_mode == unroll.LSTM else None
    return x, h0, c0


def loss_and_grads(results, wrt):
    g = torch.Generator().manual_seed(7)  # the same random loss weights for the layer and the reference
    loss = sum((r * torch.randn(r.shape, generator=g, dtype=r.dtype)).sum() for r in results if r is not None)
    return torch.autograd.grad(loss, wrt, allow_unused=True)


def assert_close(a, b, what):
    assert a is not None and b is not None, what
    a, b = a.detach(), b.detach()
    err = float((a - b).norm() / b.norm().clamp_min(1e-30)) if b.norm() > 0 else float(a.norm())
    assert err < TOL, f"{what}: relative error {err:.2e}"


# -- each variant against the reference ----------------------------------------------------------------------------
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("cell", CELLS)
def test_variant_matches_equations(cell, variant, backend, masks):
    m = make(cell, **options_for(cell, variant))
    lengths = torch.tensor(LENGTHS)
    x, h0, c0 = inputs(m, max(LENGTHS), len(LENGTHS))
    ours = run_layer(m, x, lengths, h0, c0)
    expected_kinds = {"weight_drop": {"weight"}, "locked": {"input", "locked", "output"}, "recurrent": {"recurrent"},
                      "zoneout": {"zone_h"} | ({"zone_c"} if cell == "lstm" else set())}
    want = set().union(*expected_kinds.values()) - (set() if cell == "lstm" else {"zone_c"}) if variant == "all" \
        else expected_kinds[variant]
    assert {k[0] for k in masks} == want
    ref = reference(m, x, lengths, h0, c0, masks, training=True)
    for a, b, what in zip(ours, ref, ("output", "h_n", "c_n")):
        if b is not None:
            assert_close(a, b, what)
    params = list(m.parameters())
    wrt = [x, h0] + ([c0] if c0 is not None else []) + params
    names = ["x", "h0"] + (["c0"] if c0 is not None else []) + [n for n, _ in m.named_parameters()]
    for a, b, name in zip(loss_and_grads(ours, wrt), loss_and_grads(ref, wrt), names):
        assert_close(a, b, f"d{name}")


@pytest.mark.parametrize("cell", CELLS)
def test_padded_batch_first_input(cell, backend, masks):
    """Without packing: locked masks broadcast over (T, B, F), every sequence runs all T steps."""
    cls, extra = CELLS[cell]
    torch.manual_seed(3)
    m = cls(3, 4, 2, batch_first=True, bidirectional=True, **extra, **options_for(cell, "all")).double()
    T, B = 4, 3
    x, h0, c0 = inputs(m, T, B)
    state = (h0, c0) if c0 is not None else h0
    out, hn = m(x.transpose(0, 1), state)  # (B, T, D*H)
    ours = (out.transpose(0, 1), *(hn if c0 is not None else (hn, None)))
    ref = reference(m, x, torch.full((B,), T), h0, c0, masks, training=True)
    for a, b, what in zip(ours, ref, ("output", "h_n", "c_n")):
        if b is not None:
            assert_close(a, b, what)
    wrt = [x, h0, *m.parameters()]
    for a, b in zip(loss_and_grads(ours, wrt), loss_and_grads(ref, wrt)):
        assert_close(a, b, "gradient")


@pytest.mark.parametrize("cell", CELLS)
def test_gradcheck_float64(cell, backend, masks):
    """The hand-written BPTT with every option on, against finite differences (masks replayed, so the function is
    deterministic): inputs, initial states and every weight."""
    m = make(cell, I=2, H=2, **options_for(cell, "all"))
    lengths = torch.tensor([3, 1])
    x, h0, c0 = inputs(m, 3, 2, seed=2)
    names = [n for n, _ in m.named_parameters()]
    values = [p.detach().clone().requires_grad_() for p in m.parameters()]
    n_states = 2 if c0 is not None else 1

    def f(x, *rest):
        states, ws = rest[:n_states], rest[n_states:]
        out = run_layer(m, x, lengths, states[0], states[1] if n_states == 2 else None,
                        params=dict(zip(names, ws)))
        return tuple(r for r in out if r is not None)

    assert torch.autograd.gradcheck(f, (x, h0, *([c0] if c0 is not None else []), *values), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("cell", CELLS)
def test_eval_is_deterministic_and_zoneout_is_its_expectation(cell, backend, monkeypatch):
    m = make(cell, **options_for(cell, "all"))
    m.eval()

    def no_masks(*args):
        raise AssertionError("eval mode drew a random mask")

    monkeypatch.setattr(layers, "_mask", no_masks)
    lengths = torch.tensor(LENGTHS)
    x, h0, c0 = inputs(m, max(LENGTHS), len(LENGTHS))
    first, second = run_layer(m, x, lengths, h0, c0), run_layer(m, x, lengths, h0, c0)
    for a, b in zip(first, second):
        if a is not None:
            assert torch.equal(a, b)
    ref = reference(m, x, lengths, h0, c0, {}, training=False)  # h_t = p h_{t-1} + (1 - p) h~_t, no dropout
    for a, b, what in zip(first, ref, ("output", "h_n", "c_n")):
        if b is not None:
            assert_close(a, b, what)
    wrt = [x, h0, *m.parameters()]
    for a, b in zip(loss_and_grads(first, wrt), loss_and_grads(ref, wrt)):
        assert_close(a, b, "gradient")


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh", "rnn_relu"])
def test_all_options_zero_is_the_plain_layer_bit_for_bit(cell, backend, monkeypatch):
    """Zero options: no mask is drawn (torch's RNG untouched), the engine is called without options, and the output
    and gradients are bit-identical to the plain engine composed by hand."""
    cls, extra = CELLS.get(cell, (rnnlab.RNN, {"nonlinearity": "relu"}))
    torch.manual_seed(0)
    m = cls(3, 5, 2, bidirectional=True, **extra, weight_drop=0.0, input_dropout=0, locked_dropout=0,
            output_dropout=0, recurrent_dropout=0, zoneout=0.0)
    assert repr(m) == repr(cls(3, 5, 2, bidirectional=True, **extra))
    calls = []
    real_run = function.run

    def spy(*args, **kwargs):
        calls.append({k: v for k, v in kwargs.items() if k != "slot"})
        return real_run(*args, **kwargs)

    monkeypatch.setattr(function, "run", spy)
    x = torch.randn(6, 3, 3, requires_grad=True)
    rng = torch.get_rng_state()
    out, _ = m(pack_padded_sequence(x, torch.tensor([6, 2, 4]), enforce_sorted=False))
    assert torch.equal(torch.get_rng_state(), rng)
    assert calls and all(c == {} for c in calls)
    monkeypatch.setattr(function, "run", real_run)
    # the same layer by hand, through the engine's original call
    packed = pack_padded_sequence(x, torch.tensor([6, 2, 4]), enforce_sorted=False)
    h = packed.data
    zeros = torch.zeros(3, 5)
    for layer in range(2):
        outs = [real_run(m._engine_mode, d == 1, packed.batch_sizes, h, zeros,
                         zeros if m._engine_mode == unroll.LSTM else h.new_empty(0), *m._weights(layer, d))[0]
                for d in range(2)]
        h = torch.cat(outs, 1)
    assert torch.equal(out.data, h)
    g = torch.randn_like(h)
    assert torch.equal(torch.autograd.grad(out.data, x, g)[0], torch.autograd.grad(h, x, g)[0])


# -- the C++ loop's other paths, against the Python loop ------------------------------------------------------------
def engine_case(mode, dtype, batch_sizes, I, H, reverse, seed=0):
    """(C++ result, Python float64 result) of forward + backward with every option of the mode on."""
    from rnnlab.engine import _cpp

    ext = _cpp.load()
    if ext is None:
        pytest.skip("the C++ engine did not build")
    g = torch.Generator().manual_seed(seed)
    G = {unroll.LSTM: 4, unroll.GRU: 3}.get(mode, 1)
    bs = torch.tensor(batch_sizes)
    N, B = int(bs.sum()), batch_sizes[0]

    def r(*shape, scale=1.0):
        return torch.randn(*shape, generator=g, dtype=torch.float64) * scale

    lstm = mode == unroll.LSTM
    t = {"x": r(N, I), "h0": r(B, H), "c0": r(B, H) if lstm else torch.empty(0, dtype=torch.float64),
         "w_ih": r(G * H, I, scale=0.4), "w_hh": r(G * H, H, scale=0.4), "b_ih": r(G * H), "b_hh": r(G * H),
         "m": (torch.rand(B, H, generator=g) > 0.4).double() / 0.6,
         "zh": (torch.rand(N, H, generator=g) < 0.3).double(),
         "zc": (torch.rand(N, H, generator=g) < 0.3).double() if lstm else torch.empty(0, dtype=torch.float64),
         "go": r(N, H), "gh": r(B, H), "gc": r(B, H) if lstm else torch.empty(0, dtype=torch.float64)}
    results = []
    for backend, dt in ((ext, dtype), (unroll, torch.float64)):
        a = {k: v.to(dt) for k, v in t.items()}
        out, hn, cn, *saved = backend.forward(mode, a["x"], bs, a["h0"], a["c0"], a["w_ih"], a["w_hh"], a["b_ih"],
                                              a["b_hh"], reverse, True, a["m"], a["zh"], a["zc"])
        grads = backend.backward(mode, a["x"], bs, a["h0"], a["c0"], a["w_ih"], a["w_hh"], a["b_ih"], a["b_hh"],
                                 reverse, saved, a["go"], a["gh"], a["gc"], True, a["m"], a["zh"], a["zc"])
        results.append([out, hn, cn, *grads])
    return results


def assert_engines_agree(results, tol):
    names = ["out", "h_n", "c_n", "dx", "dh0", "dc0", "dw_ih", "dw_hh", "db_ih", "db_hh", "norms"]
    for a, b, name in zip(*results, names):
        if b.numel():
            err = float((a.double() - b).norm() / b.norm().clamp_min(1e-30))
            assert err < tol, f"{name}: relative error {err:.2e}"


@pytest.mark.parametrize("mode", [0, 1, 2, 3])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_cpp_parallel_loop_with_options(mode, dtype, reverse, monkeypatch):
    """Units split over threads (H = 37: a vector tail in the last slice), the alternating h_{t-1} ⊙ m buffers,
    the per-thread backward scratch; float32 runs the packed-panel GEMM into the scratch."""
    torch.set_num_threads(2)  # restored after the test by conftest's fixture
    monkeypatch.setenv("RNNLAB_PAR_FLOPS", "0")
    tol = 1e-10 if dtype == torch.float64 else 2e-4
    assert_engines_agree(engine_case(mode, dtype, [7, 6, 6, 3, 1, 1], 5, 37, reverse), tol)
    assert_engines_agree(engine_case(mode, dtype, [4] * 5, 6, 20, reverse, seed=1), tol)


@pytest.mark.parametrize("mode", [0, 2, 3])
@pytest.mark.parametrize("split", ["0", "1"], ids=["combined", "split"])
def test_cpp_chunked_backward_and_weight_gradient_paths_with_options(mode, split, monkeypatch):
    """dW_hh from h_{t-1} ⊙ m rows in both weight-gradient layouts, over many backward chunks."""
    monkeypatch.setenv("RNNLAB_DW_SPLIT", split)
    monkeypatch.setenv("RNNLAB_BWD_CHUNK_ROWS", "4")
    for reverse in (False, True):
        assert_engines_agree(engine_case(mode, torch.float64, [6, 4, 4, 2, 1], 3, 9, reverse), 1e-10)


def test_engine_option_shapes_are_checked():
    x, bs = torch.randn(6, 2), torch.tensor([3, 3])
    h0, w_ih, w_hh = torch.zeros(3, 4), torch.randn(4, 2), torch.randn(4, 4)
    e = torch.empty(0)
    with pytest.raises(ValueError, match=r"rec_mask must have h0's shape \(3, 4\)"):
        unroll.forward(0, x, bs, h0, e, w_ih, w_hh, e, e, False, False, torch.ones(2, 4))
    with pytest.raises(ValueError, match="zone_c zones out the LSTM's cell state"):
        unroll.forward(0, x, bs, h0, e, w_ih, w_hh, e, e, False, False, None, None, torch.ones(6, 4))
    from rnnlab.engine import _cpp

    ext = _cpp.load()
    if ext is not None:
        with pytest.raises(RuntimeError, match=r"zone_h must have shape \(6, 4\)"):
            ext.forward(0, x, bs, h0, e, w_ih, w_hh, e, e, False, False, None, torch.ones(5, 4))


# -- the layer's API -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, match", [
    ({"weight_drop": 1.0}, r"weight_drop must be a number in \[0, 1\) \(the probability of zeroing a recurrent "
                           r"weight.*got 1.0"),
    ({"recurrent_dropout": -0.1}, r"recurrent_dropout must be a number in \[0, 1\).*got -0.1"),
    ({"input_dropout": True}, r"input_dropout must be a number"),
    ({"zoneout": "0.1"}, r"zoneout must be a number"),
    ({"zoneout": (0.1, 0.2, 0.3)}, r"zoneout as a pair is \(p_h, p_c\)"),
    ({"dropout": 0.2, "locked_dropout": 0.3}, r"dropout=0.2 and locked_dropout=0.3 both drop between stacked layers"),
])
def test_bad_options_fail_loudly(kwargs, match):
    with pytest.raises(ValueError, match=match):
        rnnlab.LSTM(3, 4, 2, **kwargs)


def test_zoneout_pair_needs_an_lstm():
    with pytest.raises(ValueError, match=r"zoneout as a pair.*for a GRU.*no cell state"):
        rnnlab.GRU(3, 4, zoneout=(0.1, 0.2))
    assert rnnlab.LSTM(3, 4, dropout=0.2, locked_dropout=0.3).locked_dropout == 0.3  # one layer: nothing between


def test_repr_shows_options_and_state_dict_still_loads_into_torch_nn():
    m = rnnlab.LSTM(3, 4, 2, weight_drop=0.5, locked_dropout=0.25, zoneout=(0.1, 0.2))
    assert repr(m) == "LSTM(3, 4, num_layers=2, weight_drop=0.5, locked_dropout=0.25, zoneout=(0.1, 0.2))"
    assert "zoneout=0.1)" in repr(rnnlab.GRU(3, 4, zoneout=0.1))
    ref = torch.nn.LSTM(3, 4, 2)
    ref.load_state_dict(m.state_dict())  # strict: no extra parameter or buffer
    m.load_state_dict(ref.state_dict())


def test_training_masks_are_fresh_per_call_and_the_same_across_steps(masks):
    m = rnnlab.LSTM(2, 3, recurrent_dropout=0.5, input_dropout=0.5)
    x = torch.ones(4, 2, 2)
    m(x)
    first = {k: v.clone() for k, v in masks.items()}
    masks.clear()
    m(x)
    assert any(not torch.equal(first[k], masks[k]) for k in first)  # 2 x (2x3 + 2x2) Bernoulli(0.5) draws
    assert masks[("recurrent", 0, 0)].shape == (2, 3) and masks[("input", 0, None)].shape == (2, 2)


# -- models and the command line ------------------------------------------------------------------------------------
def test_models_keep_rnn_options_in_their_config():
    from rnnlab.models import BiRNNTagger, RecurrentLM, Seq2Seq, SequenceClassifier, build_model, build_seq2seq, \
        build_sequence_model, build_tagger

    opts = {"zoneout": [0.1, 0.2], "weight_drop": 0.5, "recurrent_dropout": 0.0}
    lm = RecurrentLM(10, hidden=6, rnn_options=opts)
    assert lm.config["rnn_options"] == {"weight_drop": 0.5, "zoneout": [0.1, 0.2]}  # canonical: zeroes dropped
    again = build_model(lm.config)
    assert again.rnn.weight_drop == 0.5 and again.rnn.zoneout == (0.1, 0.2) and again.config == lm.config
    assert "rnn_options" not in RecurrentLM(10, hidden=6).config  # a plain model's config has no such key
    clf = SequenceClassifier(2, vocab_size=5, hidden=4, rnn_options={"locked_dropout": 0.3}, layers=2)
    assert build_sequence_model(clf.config).rnn.locked_dropout == 0.3
    tagger = BiRNNTagger(6, 5, 3, hidden=4, emb=4, char_hidden=2, dropout=0.0, rnn_options={"output_dropout": 0.2})
    assert build_tagger(tagger.config).rnn.output_dropout == 0.2 and tagger.char_rnn.output_dropout == 0
    s2s = Seq2Seq(6, 7, emb=4, hidden=4, rnn_options={"recurrent_dropout": 0.3})
    twin = build_seq2seq(s2s.config)
    assert twin.encoder.recurrent_dropout == 0.3 and twin.decoder.recurrent_dropout == 0.3
    with pytest.raises(ValueError, match=r"rnn_options keys must be among .*; got 'wdrop'"):
        RecurrentLM(10, rnn_options={"wdrop": 0.5})


TEXT = "the quick brown fox jumps over the lazy dog\npack my box with five dozen liquor jugs\n" * 6
TINY = ["--hidden", "8", "--bptt", "6", "--batch-size", "4", "--eval-batch-size", "2", "--quiet", "--epochs", "1"]


def test_train_lm_flags_reach_the_checkpointed_model(tmp_path, capsys):
    from rnnlab.train import load_checkpoint

    corpus = tmp_path / "text.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    out = tmp_path / "run"
    rc, stdout, err = cli(capsys, "train", "lm", "--train", corpus, "--layers", "2", "--weight-drop", "0.5",
                          "--locked-dropout", "0.3", "--recurrent-dropout", "0.2", "--zoneout", "0.1,0.2",
                          "--out", out, *TINY)
    assert rc == 0, err
    assert "weight drop 0.5" in stdout and "zoneout [0.1, 0.2]" in stdout
    ckpt = load_checkpoint(out, prefer="best")
    assert ckpt.meta["model"]["rnn_options"] == {"weight_drop": 0.5, "locked_dropout": 0.3,
                                                 "recurrent_dropout": 0.2, "zoneout": [0.1, 0.2]}
    one_line_error(capsys, "train", "lm", "--train", corpus, "--cell", "gru", "--zoneout", "0.1,0.2",
                   "--out", tmp_path / "x", *TINY, must=["--zoneout 0.1,0.2", "--cell gru has no cell state"])
    one_line_error(capsys, "train", "lm", "--train", corpus, "--weight-drop", "1", *TINY,
                   must=["--weight-drop", "got 1; must be a number >= 0 and < 1"])
    one_line_error(capsys, "train", "lm", "--train", corpus, "--layers", "2", "--dropout", "0.2",
                   "--locked-dropout", "0.2", "--out", tmp_path / "y", *TINY, must=["use one of them"])


def test_train_classify_flags_reach_the_model(tmp_path, capsys):
    from rnnlab.train import load_checkpoint

    data = tmp_path / "train.txt"
    data.write_text("pos a good fine film\nneg a bad dull film\n" * 8, encoding="utf-8")
    out = tmp_path / "run"
    rc, stdout, err = cli(capsys, "train", "classify", "--train", data, "--valid", data, "--label-column", "first",
                          "--hidden", "4", "--emb", "4", "--epochs", "1", "--quiet", "--recurrent-dropout", "0.25",
                          "--zoneout", "0.1", "--weight-drop", "0.3", "--out", out)
    assert rc == 0, err
    assert "recurrent dropout 0.25" in stdout
    config = load_checkpoint(out, prefer="best").meta["model"]
    assert config["rnn_options"] == {"weight_drop": 0.3, "recurrent_dropout": 0.25, "zoneout": 0.1}


def test_masks_have_the_asked_rate_and_follow_torchs_seed(backend):
    """The masks' generator (the C++ extension's counter-based one, or bernoulli_): values {0, value}, rate p within
    4 standard deviations, the same draws after the same torch.manual_seed, odd sizes included."""
    like = torch.empty(0, dtype=torch.float64)
    for shape, p in (((300, 301), 0.3), ((7,), 0.5), ((1, 1001), 0.9)):
        torch.manual_seed(5)
        a = function.bernoulli(shape, p, 2.5, like)
        assert a.shape == shape and set(a.unique().tolist()) <= {0.0, 2.5}
        n = a.numel()
        assert abs(float((a > 0).double().mean()) - p) < 4 * (p * (1 - p) / n) ** 0.5 + 1 / n
        torch.manual_seed(5)
        assert torch.equal(a, function.bernoulli(shape, p, 2.5, like))


@pytest.mark.parametrize("mode", [2, 3], ids=["lstm", "gru"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_cpp_fused_input_side_with_options(mode, dtype, reverse, monkeypatch):
    """The fused input side (RNNLAB_FUSE=1: for the LSTM also dW_hh from the step's h_{t-1} ⊙ m rows; zoneout
    around the cell) against the pure-PyTorch engine, one thread and units split over threads."""
    monkeypatch.setenv("RNNLAB_FUSE", "1")
    tol = 1e-10 if dtype == torch.float64 else 2e-4
    assert_engines_agree(engine_case(mode, dtype, [6, 4, 4, 2, 1], 3, 9, reverse), tol)
    torch.set_num_threads(2)  # restored after the test by conftest's fixture
    monkeypatch.setenv("RNNLAB_PAR_FLOPS", "0")
    assert_engines_agree(engine_case(mode, dtype, [7, 6, 6, 3, 1, 1], 5, 37, reverse), tol)
