"""Tests of the C++ time-loop engine (rnnlab.engine._cpp) against torch.nn.

Forward and hand-written BPTT of one layer direction, for every mode (Elman
tanh / ReLU, LSTM, GRU), bias on/off, uniform and packed batches (incl.
length-1 sequences), forward and reverse direction, float64 and float32,
single-threaded and parallel time loops; probe norms against autograd's
h_t.grad of a step-by-step loop; gradcheck through a tiny autograd.Function.
"""

import importlib
import importlib.util
import os
import sys

import pytest
import torch
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

_SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")


def _import_cpp():
    try:
        return importlib.import_module("rnnlab.engine._cpp")
    except Exception:
        if _SRC not in sys.path:
            sys.path.insert(0, _SRC)
        try:
            return importlib.import_module("rnnlab.engine._cpp")
        except Exception:
            path = os.path.join(_SRC, "rnnlab", "engine", "_cpp.py")
            spec = importlib.util.spec_from_file_location("_rnnlab_cpp_loader", path)
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
            return mod


def _import_unroll():
    try:
        if _SRC not in sys.path:
            sys.path.append(_SRC)
        mod = importlib.import_module("rnnlab.engine.unroll")
    except Exception:
        return None
    if hasattr(mod, "forward") and hasattr(mod, "backward"):
        return mod
    return None


EXT = _import_cpp().load()
pytestmark = pytest.mark.skipif(EXT is None, reason="C++ extension could not be built")

MODES = {0: ("RNN", "tanh", 1), 1: ("RNN", "relu", 1), 2: ("LSTM", None, 4), 3: ("GRU", None, 3)}
TOL = {torch.float64: 1e-10, torch.float32: 1e-4}


def rel(a, b):
    a = a.detach().to(torch.float64)
    b = b.detach().to(torch.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    den = b.norm().item()
    return (a - b).norm().item() / max(den, 1e-30)


def make_module(mode, I, H, bias, reverse, dtype):
    kind, nl, _ = MODES[mode]
    kw = dict(bias=bias, bidirectional=reverse, batch_first=False)
    if kind == "RNN":
        m = torch.nn.RNN(I, H, nonlinearity=nl, **kw)
    else:
        m = getattr(torch.nn, kind)(I, H, **kw)
    m = m.to(dtype)
    with torch.no_grad():
        for p in m.parameters():
            p.uniform_(-0.6, 0.6)
    sfx = "_l0_reverse" if reverse else "_l0"
    names = ["weight_ih" + sfx, "weight_hh" + sfx]
    if bias:
        names += ["bias_ih" + sfx, "bias_hh" + sfx]
    return m, names


def make_batch(lengths, I, dtype, gen):
    T, B = max(lengths), len(lengths)
    xpad = torch.randn(T, B, I, dtype=dtype, generator=gen)
    packed = pack_padded_sequence(xpad, torch.tensor(lengths), enforce_sorted=True)
    return packed.data.clone(), packed.batch_sizes.clone()


def run_torch(mode, m, names, reverse, data, bs, h0, c0, gout, ghn, gcn):
    """torch.nn reference: outputs and grads of L = <out,gout> + <hn,ghn> (+ <cn,gcn>)."""
    H = h0.shape[1]
    x = data.clone().requires_grad_(True)
    h0 = h0.clone().requires_grad_(True)
    c0 = c0.clone().requires_grad_(True) if c0 is not None else None
    z = torch.zeros_like(h0)
    hx = torch.stack([z, h0]) if reverse else h0[None]
    if mode == 2:
        cx = torch.stack([z, c0]) if reverse else c0[None]
        hx = (hx, cx)
    out, hn = m(PackedSequence(x, bs), hx)
    d = 1 if reverse else 0
    out = out.data[:, H:] if reverse else out.data
    if mode == 2:
        hn, cn = hn[0][d], hn[1][d]
    else:
        hn, cn = hn[d], None
    loss = (out * gout).sum() + (hn * ghn).sum()
    if cn is not None:
        loss = loss + (cn * gcn).sum()
    params = [getattr(m, n) for n in names]
    leaves = [x, h0] + ([c0] if c0 is not None else []) + params
    grads = torch.autograd.grad(loss, leaves)
    g = dict(zip(["x", "h0"] + (["c0"] if c0 is not None else []) + names, grads))
    return out.detach(), hn.detach(), (cn.detach() if cn is not None else None), g


def run_ext(mod, mode, m, names, reverse, data, bs, h0, c0, gout, ghn, gcn, probe=True):
    params = [getattr(m, n).detach() for n in names]
    w_ih, w_hh = params[0], params[1]
    e = torch.empty(0, dtype=data.dtype)
    b_ih, b_hh = (params[2], params[3]) if len(params) == 4 else (e, e)
    c0_ = c0 if c0 is not None else e
    res = mod.forward(mode, data, bs, h0, c0_, w_ih, w_hh, b_ih, b_hh, reverse, True)
    out, hn, cn, saved = res[0], res[1], res[2], list(res[3:])
    gr = mod.backward(mode, data, bs, h0, c0_, w_ih, w_hh, b_ih, b_hh, reverse, saved,
                      gout, ghn, gcn if c0 is not None else e, probe)
    return out, hn, cn, gr


def probe_reference(mode, m, names, reverse, data, bs, h0, c0, gout, ghn, gcn):
    """Step-by-step autograd loop with retain_grad: norms of dL/dh_t."""
    kind, nl, _ = MODES[mode]
    I, H = data.shape[1], h0.shape[1]
    params = [getattr(m, n).detach() for n in names]
    bias = len(params) == 4
    if kind == "RNN":
        cell = torch.nn.RNNCell(I, H, bias=bias, nonlinearity=nl)
    else:
        cell = getattr(torch.nn, kind + "Cell")(I, H, bias=bias)
    cell = cell.to(data.dtype)
    with torch.no_grad():
        cell.weight_ih.copy_(params[0])
        cell.weight_hh.copy_(params[1])
        if bias:
            cell.bias_ih.copy_(params[2])
            cell.bias_hh.copy_(params[3])
    bsl = bs.tolist()
    T = len(bsl)
    off = [0]
    for b in bsl:
        off.append(off[-1] + b)
    h, c = h0.clone(), (c0.clone() if c0 is not None else None)
    hs = {}
    outs = [None] * T
    for t in (range(T - 1, -1, -1) if reverse else range(T)):
        n = bsl[t]
        xt = data[off[t]:off[t] + n]
        if mode == 2:
            hn_, cn_ = cell(xt, (h[:n], c[:n]))
            c = torch.cat([cn_, c[n:]])
        else:
            hn_ = cell(xt, h[:n])
        hn_.retain_grad()
        hs[t] = hn_
        outs[t] = hn_
        h = torch.cat([hn_, h[n:]])
    out = torch.cat(outs)
    loss = (out * gout).sum() + (h * ghn).sum()
    if c is not None:
        loss = loss + (c * gcn).sum()
    loss.backward()
    return torch.stack([hs[t].grad.norm() for t in range(T)]), out.detach()


CASES = [
    # (lengths, I, H)
    ([5, 5, 5], 3, 7),           # uniform
    ([6, 4, 4, 2, 1], 4, 9),     # packed, incl. a length-1 sequence
]


def _check_case(mode, dtype, bias, lengths, I, H, reverse, seed=0):
    gen = torch.Generator().manual_seed(seed + 17 * mode + 3 * H + int(reverse))
    torch.manual_seed(seed + 1000 * mode + H)
    m, names = make_module(mode, I, H, bias, reverse, dtype)
    data, bs = make_batch(lengths, I, dtype, gen)
    B, N = len(lengths), data.shape[0]
    h0 = torch.randn(B, H, dtype=dtype, generator=gen)
    c0 = torch.randn(B, H, dtype=dtype, generator=gen) if mode == 2 else None
    gout = torch.randn(N, H, dtype=dtype, generator=gen)
    ghn = torch.randn(B, H, dtype=dtype, generator=gen)
    gcn = torch.randn(B, H, dtype=dtype, generator=gen) if mode == 2 else None

    out_r, hn_r, cn_r, g_r = run_torch(mode, m, names, reverse, data, bs, h0, c0, gout, ghn, gcn)
    out, hn, cn, gr = run_ext(EXT, mode, m, names, reverse, data, bs, h0, c0, gout, ghn, gcn)
    tol = TOL[dtype]
    errs = {"out": rel(out, out_r), "h_n": rel(hn, hn_r)}
    if mode == 2:
        errs["c_n"] = rel(cn, cn_r)
    else:
        assert cn.numel() == 0
    dx, dh0, dc0, dwih, dwhh, dbih, dbhh, norms = gr
    errs["dx"] = rel(dx, g_r["x"])
    errs["dh0"] = rel(dh0, g_r["h0"])
    if mode == 2:
        errs["dc0"] = rel(dc0, g_r["c0"])
    else:
        assert dc0.numel() == 0
    errs["dw_ih"] = rel(dwih, g_r[names[0]])
    errs["dw_hh"] = rel(dwhh, g_r[names[1]])
    if bias:
        errs["db_ih"] = rel(dbih, g_r[names[2]])
        errs["db_hh"] = rel(dbhh, g_r[names[3]])
    else:
        assert dbih.numel() == 0 and dbhh.numel() == 0
    bad = {k: v for k, v in errs.items() if not v <= tol}
    assert not bad, f"rel. errors above {tol}: {bad}"
    for t in [out, hn, dx, dh0, dwih, dwhh, norms]:
        assert t.dtype == dtype

    # probe norms vs autograd h_t.grad of a step-by-step loop
    ref_norms, out_loop = probe_reference(mode, m, names, reverse, data, bs, h0, c0, gout, ghn, gcn)
    assert norms.shape == (len(bs),)
    assert rel(norms, ref_norms) <= tol
    assert rel(out, out_loop) <= tol

    # probe=False gives the same grads and no norms
    gr2 = run_ext(EXT, mode, m, names, reverse, data, bs, h0, c0, gout, ghn, gcn, probe=False)[3]
    assert gr2[7].numel() == 0
    for a, b in zip(gr[:7], gr2[:7]):
        assert torch.equal(a, b)

    # the pure-PyTorch reference engine, when present
    unroll = _import_unroll()
    if unroll is not None:
        out_u, hn_u, cn_u, gr_u = run_ext(unroll, mode, m, names, reverse, data, bs, h0, c0,
                                          gout, ghn, gcn)
        assert rel(out, out_u) <= tol and rel(hn, hn_u) <= tol
        for a, b in zip(gr, gr_u):
            if b.numel():
                assert rel(a, b) <= tol


@pytest.mark.parametrize("mode", [0, 1, 2, 3])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("case", range(len(CASES)), ids=["uniform", "packed"])
def test_matches_torch_nn(mode, dtype, bias, reverse, case):
    lengths, I, H = CASES[case]
    _check_case(mode, dtype, bias, lengths, I, H, reverse)


@pytest.mark.parametrize("mode", [0, 1, 2, 3])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_parallel_time_loop(mode, dtype, reverse, monkeypatch):
    """Forces the multi-threaded loop (units split over threads, H not a
    multiple of 8 so the last slice has a vector tail)."""
    if (os.cpu_count() or 1) < 2:
        pytest.skip("needs a machine with >= 2 CPUs")
    torch.set_num_threads(max(2, torch.get_num_threads()))  # restored after the test by conftest's fixture
    monkeypatch.setenv("RNNLAB_PAR_FLOPS", "0")
    _check_case(mode, dtype, True, [7, 6, 6, 3, 1, 1], 5, 37, reverse)
    _check_case(mode, dtype, True, [4] * 5, 6, 70, reverse, seed=1)


@pytest.mark.parametrize("mode", [0, 1, 2, 3])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_chunked_backward(mode, reverse, monkeypatch):
    """The backward runs the big GEMMs per chunk of steps; force many chunks
    (chunk boundaries inside packed batches, and in the parallel loop)."""
    monkeypatch.setenv("RNNLAB_BWD_CHUNK_ROWS", "4")
    _check_case(mode, torch.float64, True, [6, 4, 4, 2, 1], 3, 9, reverse)
    monkeypatch.setenv("RNNLAB_PAR_FLOPS", "0")
    _check_case(mode, torch.float32, True, [5, 5, 3], 4, 37, reverse)


@pytest.mark.parametrize("mode", [0, 1, 2])
@pytest.mark.parametrize("split", ["0", "1"], ids=["combined", "split"])
def test_weight_gradient_paths(mode, split, monkeypatch):
    """dW as one GEMM over [x | h_prev] rows, or straight into dW_ih / dW_hh
    (RNNLAB_DW_SPLIT forces either; GRU always combines), with and without
    bias (LSTM adds its bias in the gate math), one chunk or many."""
    monkeypatch.setenv("RNNLAB_DW_SPLIT", split)
    _check_case(mode, torch.float64, True, [5, 4, 4, 2], 3, 9, False)
    _check_case(mode, torch.float64, False, [3, 3, 1], 4, 6, True)
    monkeypatch.setenv("RNNLAB_BWD_CHUNK_ROWS", "4")
    _check_case(mode, torch.float64, True, [6, 4, 4, 2, 1], 3, 9, True)
    _check_case(mode, torch.float32, False, [5, 5, 3], 4, 37, False)


@pytest.mark.parametrize("mode", [0, 2, 3])
def test_vector_width_tails(mode):
    """H = 8k +- 1 / 16k +- 1 and B = 1 exercise full vectors (8 or 16 float
    lanes) plus tails."""
    for H in (15, 17, 31, 33):
        _check_case(mode, torch.float32, True, [3], 4, H, False)
        _check_case(mode, torch.float64, True, [3, 2], 4, H, True)


def test_noncontiguous_inputs():
    dtype = torch.float64
    gen = torch.Generator().manual_seed(5)
    m, names = make_module(2, 4, 6, True, False, dtype)
    data, bs = make_batch([3, 3], 4, dtype, gen)
    h0 = torch.randn(6, 2, dtype=dtype, generator=gen).t()
    c0 = torch.randn(6, 2, dtype=dtype, generator=gen).t()
    xw = torch.randn(4, data.shape[0], dtype=dtype, generator=gen).t()
    w_ih = getattr(m, names[0]).detach().t().contiguous().t()
    assert not w_ih.is_contiguous() and not xw.is_contiguous() and not h0.is_contiguous()
    e = torch.empty(0, dtype=dtype)
    args = (xw, bs, h0, c0, w_ih, getattr(m, names[1]).detach(),
            getattr(m, names[2]).detach(), getattr(m, names[3]).detach())
    r1 = EXT.forward(2, *args, False, False)
    r2 = EXT.forward(2, *[a.contiguous() for a in args], False, False)
    assert len(r1) == 3 and len(r2) == 3
    for a, b in zip(r1, r2):
        assert torch.equal(a, b)
    del e


class _Fn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, mode, bs, reverse, x, h0, c0, w_ih, w_hh, b_ih, b_hh):
        res = EXT.forward(mode, x, bs, h0, c0, w_ih, w_hh, b_ih, b_hh, reverse, True)
        ctx.mode, ctx.bs, ctx.reverse = mode, bs, reverse
        ctx.nsaved = len(res) - 3
        ctx.save_for_backward(x, h0, c0, w_ih, w_hh, b_ih, b_hh, *res[3:])
        return res[0], res[1], res[2]

    @staticmethod
    def backward(ctx, gout, ghn, gcn):
        x, h0, c0, w_ih, w_hh, b_ih, b_hh, *saved = ctx.saved_tensors
        z = lambda g, like: torch.zeros_like(like) if g is None else g  # noqa: E731
        gout, ghn = z(gout, saved[-1]), z(ghn, h0)
        gcn = z(gcn, c0)
        dx, dh0, dc0, dwih, dwhh, dbih, dbhh, _ = EXT.backward(
            ctx.mode, x, ctx.bs, h0, c0, w_ih, w_hh, b_ih, b_hh, ctx.reverse, saved,
            gout, ghn, gcn, False)
        nz = lambda g: g if g.numel() else None  # noqa: E731
        return None, None, None, dx, dh0, nz(dc0), dwih, dwhh, nz(dbih), nz(dbhh)


@pytest.mark.parametrize("mode", [0, 1, 2, 3])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_gradcheck(mode, reverse):
    dtype = torch.float64
    gen = torch.Generator().manual_seed(11 + mode)
    G = MODES[mode][2]
    I, H = 3, 4
    data, bs = make_batch([4, 3, 1], I, dtype, gen)
    B = 3

    def r(*s):
        return (torch.randn(*s, dtype=dtype, generator=gen) * 0.5).requires_grad_(True)

    x, h0 = r(data.shape[0], I), r(B, H)
    c0 = r(B, H) if mode == 2 else torch.empty(0, dtype=dtype)
    w_ih, w_hh, b_ih, b_hh = r(G * H, I), r(G * H, H), r(G * H), r(G * H)
    if mode == 1:  # keep ReLU pre-activations away from the kink
        with torch.no_grad():
            b_ih.add_(1.5)
    inputs = (x, h0, c0, w_ih, w_hh, b_ih, b_hh)
    assert torch.autograd.gradcheck(
        lambda *a: _Fn.apply(mode, bs, reverse, *a), inputs, eps=1e-6, atol=1e-7, rtol=1e-5)


def test_empty_sequence_batch():
    dtype = torch.float32
    H, I, B = 5, 3, 2
    e = torch.empty(0, dtype=dtype)
    x = torch.empty(0, I, dtype=dtype)
    bs = torch.empty(0, dtype=torch.int64)
    h0 = torch.randn(B, H, dtype=dtype)
    c0 = torch.randn(B, H, dtype=dtype)
    res = EXT.forward(2, x, bs, h0, c0, torch.randn(4 * H, I), torch.randn(4 * H, H), e, e,
                      False, True)
    assert res[0].shape == (0, H)
    assert torch.equal(res[1], h0) and torch.equal(res[2], c0)
    gr = EXT.backward(2, x, bs, h0, c0, torch.randn(4 * H, I), torch.randn(4 * H, H), e, e,
                      False, list(res[3:]), torch.empty(0, H), torch.ones(B, H),
                      torch.ones(B, H), True)
    assert torch.equal(gr[1], torch.ones(B, H)) and torch.equal(gr[2], torch.ones(B, H))
    assert gr[0].shape == (0, I) and gr[7].shape == (0,)
    assert not gr[3].any() and not gr[4].any()


def test_single_openmp_runtime():
    """The extension must share torch's libgomp, not load a second one."""
    if not os.path.exists("/proc/self/maps"):
        pytest.skip("no /proc/self/maps")
    with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
        maps = f.read()
    libs = {line.split()[-1] for line in maps.splitlines() if "libgomp" in line}
    assert len(libs) <= 1, libs


@pytest.mark.parametrize("mode", [2, 3], ids=["lstm", "gru"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_fused_input_side(mode, dtype, reverse, monkeypatch):
    """The fused input side (RNNLAB_FUSE=1): x_t @ W_ih^T computed in the forward loop (LSTM, GRU), dx_t and the
    dW update in the backward loop (LSTM), for one thread and for units split over threads (vector tails, packed
    batches with length-1 sequences, I not a multiple of the vector width, I > H and I < H)."""
    monkeypatch.setenv("RNNLAB_FUSE", "1")
    _check_case(mode, dtype, True, [5, 5, 5], 3, 7, reverse)
    _check_case(mode, dtype, False, [6, 4, 4, 2, 1], 4, 9, reverse)
    _check_case(mode, dtype, True, [3, 2], 4, 33, reverse)
    if (os.cpu_count() or 1) >= 2:
        torch.set_num_threads(max(2, torch.get_num_threads()))  # restored after the test by conftest's fixture
        monkeypatch.setenv("RNNLAB_PAR_FLOPS", "0")
        _check_case(mode, dtype, True, [7, 6, 6, 3, 1, 1], 5, 37, reverse)
        _check_case(mode, dtype, True, [4] * 5, 70, 20, reverse, seed=1)
        _check_case(mode, dtype, False, [3, 3, 2], 17, 40, reverse, seed=2)


def test_fused_input_side_is_the_default_at_large_batch_and_agrees_with_the_unfused_loop(monkeypatch):
    """B = 40 >= 32 sequences of H = 24: the automatic choice fuses the LSTM's both sides and the GRU's forward;
    its results equal torch.nn's and the unfused loop's (RNNLAB_FUSE=0)."""
    monkeypatch.delenv("RNNLAB_FUSE", raising=False)
    _check_case(2, torch.float64, True, [6] * 40, 10, 24, False)
    _check_case(3, torch.float64, True, [6] * 40, 10, 24, False)  # the GRU fuses its forward only
    gen = torch.Generator().manual_seed(5)
    m, names = make_module(2, 10, 24, True, False, torch.float32)
    data, bs = make_batch([6] * 40, 10, torch.float32, gen)
    h0, c0 = torch.randn(40, 24, generator=gen), torch.randn(40, 24, generator=gen)
    gout, ghn, gcn = torch.randn(240, 24, generator=gen), torch.randn(40, 24, generator=gen), torch.randn(40, 24, generator=gen)
    fused = run_ext(EXT, 2, m, names, False, data, bs, h0, c0, gout, ghn, gcn)
    monkeypatch.setenv("RNNLAB_FUSE", "0")
    plain = run_ext(EXT, 2, m, names, False, data, bs, h0, c0, gout, ghn, gcn)
    for a, b in zip(fused[:3] + tuple(fused[3]), plain[:3] + tuple(plain[3])):
        assert rel(a, b) <= 1e-5


@pytest.mark.parametrize("mode", [2, 3], ids=["lstm", "gru"])
def test_fused_forward_without_saving_matches_the_saving_one(mode, monkeypatch):
    """Fused and nothing saved (inference): the gates go to one (B, G*H) buffer reused every step; outputs and
    final states equal the saving forward's, one thread and two."""
    monkeypatch.setenv("RNNLAB_FUSE", "1")
    for threads in (1, 2):
        torch.set_num_threads(threads)  # restored after the test by conftest's fixture
        monkeypatch.setenv("RNNLAB_PAR_FLOPS", "0")
        gen = torch.Generator().manual_seed(11)
        m, names = make_module(mode, 6, 37, True, False, torch.float32)
        data, bs = make_batch([7, 6, 6, 3, 1, 1], 6, torch.float32, gen)
        h0 = torch.randn(6, 37, generator=gen)
        c0 = torch.randn(6, 37, generator=gen) if mode == 2 else torch.empty(0)
        w = [getattr(m, n).detach() for n in names]
        saving = EXT.forward(mode, data, bs, h0, c0, *w, False, True)
        plain = EXT.forward(mode, data, bs, h0, c0, *w, False, False)
        assert len(plain) == 3
        for a, b in zip(saving[:3], plain):
            assert torch.equal(a, b)


@pytest.mark.parametrize("side", ["forward", "backward"])
@pytest.mark.parametrize("mode", [2, 3], ids=["lstm", "gru"])
def test_one_side_fused(side, mode, monkeypatch):
    """RNNLAB_FUSE=forward / backward fuses one side only (the automatic choice also mixes them, e.g. a fused
    forward with an unfused backward at H = 256, B = 16): the saved gates are the same either way."""
    monkeypatch.setenv("RNNLAB_FUSE", side)
    _check_case(mode, torch.float64, True, [6, 4, 4, 2, 1], 4, 9, False)
    torch.set_num_threads(max(2, torch.get_num_threads()))  # restored after the test by conftest's fixture
    monkeypatch.setenv("RNNLAB_PAR_FLOPS", "0")
    _check_case(mode, torch.float32, True, [7, 6, 6, 3, 1, 1], 5, 37, True)


@pytest.mark.parametrize("fuse", ["0", "1"])
def test_phase_timers(fuse, monkeypatch):
    """rnnlab.engine.timing.phase_timers: every phase the loop ran (fused or not) reports time, on the threads that
    ran it; phases it did not run (the fused dx with RNNLAB_FUSE=0 runs outside the loop, on thread 0) report 0;
    nothing is recorded outside the block, and the results do not change with the timers on."""
    import rnnlab
    from rnnlab.engine.timing import phase_timers

    monkeypatch.setenv("RNNLAB_BACKEND", "cpp")
    monkeypatch.setenv("RNNLAB_FUSE", fuse)
    monkeypatch.setenv("RNNLAB_PAR_FLOPS", "0")
    torch.set_num_threads(2)  # restored after the test by conftest's fixture
    torch.manual_seed(0)
    lstm = rnnlab.LSTM(12, 40)
    x = torch.randn(9, 5, 12, requires_grad=True)
    out_plain = lstm(x)[0]
    (gx_plain,) = torch.autograd.grad(out_plain.sum(), x)
    with phase_timers() as timers:
        out = lstm(x)[0]
        (gx,) = torch.autograd.grad(out.sum(), x)
    assert torch.equal(out, out_plain) and torch.equal(gx, gx_plain)
    threads = EXT.num_threads_for(4, 40, 45, 9)
    sec = timers.seconds
    assert set(sec) == {"pack", "fwd_input", "fwd_recurrent", "fwd_gates", "fwd_wait", "bwd_gates", "bwd_wait",
                        "bwd_recurrent", "bwd_weights", "bwd_input"}
    for phase in ("pack", "fwd_recurrent", "fwd_gates", "bwd_gates", "bwd_recurrent"):
        assert all(v > 0 for v in sec[phase][:threads]), (phase, sec[phase])
    for phase in ("fwd_input", "bwd_weights", "bwd_input"):
        assert sec[phase][0] > 0, (phase, sec[phase])
    if fuse == "1" and threads > 1:  # fused: every thread projects its own columns and updates its own dW rows
        assert sec["fwd_input"][1] > 0 and sec["bwd_weights"][1] > 0 and sec["bwd_input"][1] > 0
    with phase_timers() as idle:
        pass
    assert all(v == 0.0 for vals in idle.seconds.values() for v in vals)
    assert timers.total("fwd_gates") == sum(sec["fwd_gates"]) and timers.slowest("pack") == max(sec["pack"])


def test_float32_activations_are_accurate_elementwise():
    """The float32 gate math's own tanh (a rational approximation, csrc/common.h) and sigmoid, seen through layers
    whose pre-activations are exactly x (identity W_ih, zero W_hh and bias, one step): tanh within 5e-7 and the
    LSTM's sigmoid-tanh products within 2e-6 relative of float64 torch, elementwise, from 0 and tiny values to
    saturation; NaN stays NaN.

    The bounds hold for the formulas in IEEE float32, not for one CPU: every lane runs the same operations whatever
    the vector width (8 lanes in the AVX2 build, 16 in the AVX-512 one: the two agree bit for bit), and the build for a
    CPU without FMA (each Horner step rounded twice) measures 4.2e-7 against the 3.6e-7 of the FMA builds, both within
    5e-7 = benchmarks/fit_tanh.py's F32_MAX_REL (tests/test_benchmark_scripts.py checks common.h's coefficients without
    FMA). The LSTM's 2e-6: sigmoid (Cephes exp ~2 ulp, then 1 + e and the division: ~4 ulp = 2.4e-7) times tanh
    (5e-7) and that product's rounding give c within ~8e-7; h = 0.5 * tanh(c) adds tanh's 5e-7 to c's error (tanh's
    relative condition number is <= 1): ~1.3e-6 at worst; measured ~3.5e-7."""
    n = 64
    x = torch.cat([torch.linspace(-12, 12, 4096 - 8 * n), torch.logspace(-30, 1, 8 * n) * torch.tensor([1.0, -1.0]).repeat(4 * n)])
    x = x.reshape(-1, n)  # (B, n): one step of B sequences
    bs = torch.tensor([x.shape[0]])
    eye = torch.eye(n)
    zeros_hh = torch.zeros(n, n)
    h0 = torch.zeros(x.shape[0], n)
    out = EXT.forward(0, x, bs, h0, torch.empty(0), eye, zeros_hh, torch.empty(0), torch.empty(0), False, False)[0]
    ref = torch.tanh(x.double())
    err = ((out.double() - ref).abs() / ref.abs().clamp_min(1e-300)).max().item()
    assert err <= 5e-7, err
    # the bound csrc/common.h states for the rational tanh: <= 5e-7 on a dense grid of [-10, 10] (2M points)
    dense = torch.linspace(-10, 10, 32768 * n).reshape(-1, n)
    zero_h = torch.zeros(dense.shape[0], n)
    out = EXT.forward(0, dense, torch.tensor([dense.shape[0]]), zero_h, torch.empty(0), eye, zeros_hh,
                      torch.empty(0), torch.empty(0), False, False)[0]
    ref = torch.tanh(dense.double())
    keep = ref != 0
    err = ((out.double() - ref).abs()[keep] / ref.abs()[keep]).max().item()
    assert err <= 5e-7, err
    # LSTM with only the input gate's block open: i = sigmoid(x), g = tanh(x), f = o = sigmoid(0);
    # c = i * g from c0 = 0, h = o * tanh(c)
    w_ih = torch.zeros(4 * n, n)
    w_ih[:n] = eye
    w_ih[2 * n:3 * n] = eye
    res = EXT.forward(2, x, bs, h0, torch.zeros_like(h0), w_ih, torch.zeros(4 * n, n), torch.empty(0),
                      torch.empty(0), False, False)
    xd = x.double()
    c_ref = torch.sigmoid(xd) * torch.tanh(xd)
    h_ref = 0.5 * torch.tanh(c_ref)
    for got, want in ((res[2], c_ref), (res[0], h_ref)):
        err = ((got.double() - want).abs() / want.abs().clamp_min(1e-300)).max().item()
        assert err <= 2e-6, err
    nan_in = x.clone()
    nan_in[0, 0] = float("nan")
    out = EXT.forward(0, nan_in, bs, h0, torch.empty(0), eye, zeros_hh, torch.empty(0), torch.empty(0), False, False)[0]
    assert torch.isnan(out[0, 0]) and not torch.isnan(out[1:]).any()


@pytest.mark.parametrize("value", ["yes", "2", "", "Forward"])
def test_bad_fuse_setting_fails_loudly(value, monkeypatch):
    """RNNLAB_FUSE takes 0, 1, forward or backward; anything else is refused in one message naming the variable,
    the value and the fix, instead of silently meaning "off"."""
    monkeypatch.setenv("RNNLAB_FUSE", value)
    gen = torch.Generator().manual_seed(0)
    m, names = make_module(2, 4, 8, True, False, torch.float32)
    data, bs = make_batch([3, 2], 4, torch.float32, gen)
    w = [getattr(m, n).detach() for n in names]
    with pytest.raises(RuntimeError, match=f"RNNLAB_FUSE must be 0, 1, forward or backward; got '{value}'"):
        EXT.forward(2, data, bs, torch.zeros(2, 8), torch.zeros(2, 8), *w, False, True)
