"""Measure how the gradient flows back through time in a model's rnnlab layers, on one batch.

Why it vanishes or explodes: the gradient that reaches step t-k from the loss at step t is a product of k per-step
Jacobians, ``dh_t/dh_{t-k} = J_t J_{t-1} ... J_{t-k+1}`` with ``J_s = diag(f'(z_s)) W_hh`` for an Elman RNN, so its
norm shrinks geometrically when the factors are contractive and grows geometrically when they expand (Bengio et al.
1994; Pascanu et al. 2013). ``measure(model, batch, loss)`` reads off, for every layer and direction:

- ``grad_norms``: ||dL/dh_t|| for every step t (``rnnlab.probe``, from the same backward pass as the weights');
- ``decay``: ||dL/dh_{T-k}|| / ||dL/dh_T|| against the distance k, T being the last step the direction processes
  (t = T-1 forwards, t = 0 for the reverse direction), and the *effective memory horizon*: the first k at which
  that ratio falls below ``horizon_fraction`` (default 1e-3: a gradient a thousand times weaker than where the loss
  entered no longer moves the weights against the other terms of the sum). None: it never does within the sequence.
  The ratio is meaningful when the loss enters at the last step (many-to-one with pooling "last"); when it enters at
  every step, every step has its own source and the ratio stays near 1;
- ``jacobian_norms``: the spectral norm ||ds_T/ds_{T-k}||_2 of the exact product of the cell's per-step Jacobians
  at the distances ``jacobian_distances`` (every k = 0 (the identity) .. T-1 for up to 40 of them, else k = 0..9 and
  30 more spread evenly up to T-1: the product is formed at every k, an SVD is taken at these), the median over up
  to ``jacobian_sequences`` sequences of the batch (each has its own f'(z)); ``jacobian_per_sequence`` keeps them
  all. The state s is h for an Elman RNN and a GRU and (h, c) for
  an LSTM (its gradient flows through both; dh_T/dh_{T-k} alone is not a product of per-step factors). It does not
  depend on the loss: it is the largest gain any gradient at step T can have at step T-k;
- ``spectral_norm`` / ``spectral_radius`` of W_hh (largest singular value / largest |eigenvalue|) for each gate's
  H x H block (Elman: the one block "W_hh"; LSTM: i, f, g, o; GRU: r, z, n), and the norm of the whole W_hh ("all");
- ``saturation``: the fraction of saturated gate values per gate type over the valid steps of the batch. Thresholds:
  a sigmoid gate is saturated below ``SIGMOID_LOW`` = 0.05 or above ``SIGMOID_HIGH`` = 0.95 (σ' = σ(1-σ) < 0.048
  there, under a fifth of its maximum 0.25); a tanh value is saturated when |g| > ``TANH_HIGH`` = 0.95 (tanh' =
  1 - g² < 0.098, under a tenth of its maximum 1). Gates: LSTM i, f, o (sigmoid) and g (tanh); GRU r, z (sigmoid) and
  n (tanh); Elman tanh: its output h (tanh); Elman ReLU: "relu", the fraction of dead units (z <= 0: ReLU' = 0);

and for the whole model the loss and ``grad_norm``, the global gradient norm over all parameters before any
clipping (what ``clip_grad_norm_`` would compare with its threshold).

How: forward hooks record each rnnlab layer's input and initial state while the model computes the loss under a
probe; ``torch.autograd.grad`` gives the gradient (the parameters' ``.grad`` are left untouched); then each layer is
replayed step by step in float64 with the cell functions of ``rnnlab.cells`` (the same math the engine runs) to get
the gates and, with ``torch.func``, the exact per-step Jacobians ds_t/ds_{t-1}. The model runs in eval mode (no
dropout) and is put back in its mode afterwards.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence

from ..cells import elman, gru, lstm
from ..engine.probe import probe
from ..layers import GRU, LSTM, RNN, RNNBase

SIGMOID_LOW = 0.05  # a sigmoid gate below this is (nearly) closed: σ' < 0.048
SIGMOID_HIGH = 0.95  # above this (nearly) open: σ' < 0.048
TANH_HIGH = 0.95  # |tanh| above this: tanh' < 0.098
HORIZON_FRACTION = 1e-3  # the ratio ||dL/dh_{T-k}|| / ||dL/dh_T|| at which the gradient counts as gone
JACOBIAN_SEQUENCES = 8  # sequences whose exact Jacobian products are computed (each costs T (S x S) products)
JACOBIAN_POINTS = 40  # distances at which the product's spectral norm (an SVD each) is computed
HIST_SAMPLES = 20_000  # gate values kept per gate type for histograms

GATE_NAMES = {"rnn_tanh": ("W_hh",), "rnn_relu": ("W_hh",), "lstm": ("i", "f", "g", "o"), "gru": ("r", "z", "n")}
SATURATION_GATES = {"rnn_tanh": {"h": "tanh"}, "rnn_relu": {"relu": "relu"},
                    "lstm": {"i": "sigmoid", "f": "sigmoid", "g": "tanh", "o": "sigmoid"},
                    "gru": {"r": "sigmoid", "z": "sigmoid", "n": "tanh"}}


def cell_kind(module: nn.Module) -> str:
    """'rnn_tanh', 'rnn_relu', 'lstm' or 'gru' for an rnnlab layer."""
    if isinstance(module, LSTM):
        return "lstm"
    if isinstance(module, GRU):
        return "gru"
    if isinstance(module, RNN):
        return "rnn_" + module.nonlinearity
    raise TypeError(f"not an rnnlab recurrent layer: {type(module).__name__}")


def _cell(kind: str):
    return {"rnn_tanh": elman, "rnn_relu": elman, "lstm": lstm, "gru": gru}[kind]


def _opts(kind: str) -> dict:
    return {"nonlinearity": kind[4:]} if kind.startswith("rnn_") else {}


# -- weight matrices -----------------------------------------------------------------------------------------------
def weight_spectra(w_hh: Tensor, kind: str) -> tuple[dict, dict]:
    """({block: spectral norm}, {block: spectral radius}) of a W_hh (G*H, H); blocks per gate, plus the spectral
    norm of the whole matrix as "all" (the same as the one block for an Elman RNN)."""
    w = w_hh.detach().double().cpu()
    names = GATE_NAMES[kind]
    blocks = w.chunk(len(names), dim=0)
    norms = {n: float(torch.linalg.matrix_norm(b, ord=2)) for n, b in zip(names, blocks)}
    radii = {n: float(torch.linalg.eigvals(b).abs().max()) for n, b in zip(names, blocks)}
    norms["all"] = float(torch.linalg.matrix_norm(w, ord=2))
    return norms, radii


# -- gate saturation -------------------------------------------------------------------------------------------------
def saturation_fraction(values: Tensor, kind: str) -> float:
    """The fraction of saturated entries of ``values`` for a gate of kind 'sigmoid', 'tanh' or 'relu' (the latter:
    pre-activations z; dead when z <= 0). Thresholds: SIGMOID_LOW, SIGMOID_HIGH, TANH_HIGH (module docstring)."""
    v = values.detach().reshape(-1)
    if v.numel() == 0:
        return float("nan")
    if kind == "sigmoid":
        sat = (v < SIGMOID_LOW) | (v > SIGMOID_HIGH)
    elif kind == "tanh":
        sat = v.abs() > TANH_HIGH
    elif kind == "relu":
        sat = v <= 0
    else:
        raise ValueError(f"gate kind must be 'sigmoid', 'tanh' or 'relu'; got {kind!r}")
    return float(sat.double().mean())


def gate_saturation(gates: dict[str, Tensor], kinds: dict[str, str]) -> dict[str, float]:
    """{gate: saturated fraction} for gate values ``gates`` (any shape) whose types ``kinds`` gives."""
    return {name: saturation_fraction(v, kinds[name]) for name, v in gates.items()}


# -- replaying a layer -----------------------------------------------------------------------------------------------
@dataclass
class _Run:
    """One direction of one layer replayed: per step t (real time) and sequence b."""

    kind: str
    reverse: bool
    lengths: Tensor  # (B,) int64
    mask: Tensor  # (T, B) bool: step t is a valid step of sequence b
    prev: Tensor  # (T, B, S): the state s_{t-1} each step starts from (s = h, or [h, c] for an LSTM)
    gi: Tensor  # (T, B, G*H): the input half of the pre-activations
    gates: dict  # gate name -> (T, B, H) values (Elman ReLU: the pre-activation z)
    out: Tensor  # (T, B, H): h_t at the valid steps, zeros elsewhere (what the layer outputs)
    w_hh: Tensor  # float64
    b_hh: Tensor | None


def _as_padded(inp, batch_first: bool):
    """(x (T, B, I), lengths (B,), unbatched) from what the layer was called with."""
    if isinstance(inp, PackedSequence):
        x, lengths = pad_packed_sequence(inp)  # (T, B, I) in the caller's batch order
        return x, lengths.to(torch.long), False
    if inp.dim() == 2:
        x = inp.unsqueeze(1)
        return x, torch.full((1,), x.shape[0], dtype=torch.long), True
    x = inp.transpose(0, 1) if batch_first else inp
    return x, torch.full((x.shape[1],), x.shape[0], dtype=torch.long), False


def _initial(module: RNNBase, hx, B: int, unbatched: bool, dtype, device):
    """(h0, c0 | None), each (L*D, B, H) float64."""
    shape = (module.num_layers * module.num_directions, B, module.hidden_size)
    if hx is None:
        z = torch.zeros(shape, dtype=dtype, device=device)
        return z, (z if isinstance(module, LSTM) else None)
    states = list(hx) if isinstance(module, LSTM) else [hx]
    states = [s.detach().to(dtype).unsqueeze(1) if unbatched else s.detach().to(dtype) for s in states]
    return states[0], (states[1] if isinstance(module, LSTM) else None)


@torch.no_grad()
def replay(module: RNNBase, inp, hx=None) -> dict[tuple[int, int], _Run]:
    """Re-run ``module`` on ``inp`` (what it was called with: a tensor or a PackedSequence) and initial state ``hx``
    in float64, step by step with the cell functions of ``rnnlab.cells``, keeping for every layer and direction the
    state each step starts from, the input half of its pre-activations and its gate values. Dropout between layers
    is not applied (the model is measured in eval mode)."""
    kind = cell_kind(module)
    cell, opts = _cell(kind), _opts(kind)
    x, lengths, unbatched = _as_padded(inp, module.batch_first)
    dtype = torch.float64
    x = x.detach().to(dtype)
    T, B = x.shape[:2]
    device = x.device
    mask = torch.arange(T, device=device)[:, None] < lengths.to(device)[None, :]  # (T, B)
    h0, c0 = _initial(module, hx, B, unbatched, dtype, device)
    H, D = module.hidden_size, module.num_directions
    runs = {}
    for layer in range(module.num_layers):
        outs = []
        for d in range(D):
            k = layer * D + d
            w_ih, w_hh, b_ih, b_hh = (w.detach().to(dtype) for w in module._weights(layer, d))
            b_ih = b_ih if b_ih.numel() else None
            b_hh = b_hh if b_hh.numel() else None
            gi = x @ w_ih.t() + (b_ih if b_ih is not None else 0.0)  # (T, B, G*H)
            state = [h0[k]] + ([c0[k]] if kind == "lstm" else [])  # each (B, H)
            prev = x.new_zeros(T, B, H * len(state))
            out = x.new_zeros(T, B, H)
            gates = {name: x.new_zeros(T, B, H) for name in SATURATION_GATES[kind]}
            for t in (range(T - 1, -1, -1) if d else range(T)):
                prev[t] = torch.cat(state, dim=1)
                new, saved = cell.forward(gi[t], tuple(state), w_hh, b_hh, **opts)
                m = mask[t][:, None]  # (B, 1): finished (forwards) or not yet started (reverse) rows keep their state
                state = [torch.where(m, n, s) for n, s in zip(new, state)]
                out[t] = torch.where(m, new[0], 0.0)
                if kind == "lstm":
                    for name, v in zip("ifgo", saved[0].chunk(4, dim=1)):
                        gates[name][t] = v
                elif kind == "gru":
                    for name, v in zip("rzn", saved[0].chunk(4, dim=1)[:3]):
                        gates[name][t] = v
                elif kind == "rnn_tanh":
                    gates["h"][t] = new[0]
                else:  # ReLU: the pre-activation, whose sign says whether the unit passes gradient
                    gates["relu"][t] = gi[t] + (prev[t] @ w_hh.t()) + (b_hh if b_hh is not None else 0.0)
            runs[(layer, d)] = _Run(kind, bool(d), lengths, mask, prev, gi, gates, out, w_hh, b_hh)
            outs.append(out)
        x = outs[0] if D == 1 else torch.cat(outs, dim=2)  # (T, B, D*H): the next layer's input
    return runs


def _step_fn(run: _Run):
    """s_{t-1} (S,), gi_t (G*H,) -> s_t (S,): one step of the cell's own forward function on one sequence."""
    kind, cell, opts = run.kind, _cell(run.kind), _opts(run.kind)
    H = run.w_hh.shape[1]
    w_hh, b_hh = run.w_hh, run.b_hh

    def step(s: Tensor, gi: Tensor) -> Tensor:
        st = (s[:H][None], s[H:][None]) if kind == "lstm" else (s[None],)
        new, _ = cell.forward(gi[None], st, w_hh, b_hh, **opts)
        return torch.cat([n[0] for n in new])

    return step


def step_jacobians(run: _Run, t_index: Tensor, b_index: Tensor) -> Tensor:
    """Exact ds_t/ds_{t-1} (N, S, S) at the (step, sequence) pairs given, from the cell's own forward function."""
    s = run.prev[t_index, b_index]  # (N, S)
    gi = run.gi[t_index, b_index]  # (N, G*H)
    return torch.func.vmap(torch.func.jacrev(_step_fn(run)))(s, gi)  # (N, S, S)


def _times_jacobian(run: _Run, P: Tensor, t_index: Tensor, b_index: Tensor) -> Tensor:
    """P[b] @ ds_t/ds_{t-1} for each sequence b at its step t, as one vector-Jacobian product per row of P[b]
    (exact, and cheaper than forming the Jacobian and multiplying)."""
    step = _step_fn(run)

    def rows_times_j(s, gi, p):
        _, vjp = torch.func.vjp(lambda s_: step(s_, gi), s)
        return torch.func.vmap(lambda v: vjp(v)[0])(p)  # (S, S)

    return torch.func.vmap(rows_times_j)(run.prev[t_index, b_index], run.gi[t_index, b_index], P)


def distances(K: int, points: int = JACOBIAN_POINTS) -> list[int]:
    """The distances k in [0, K] at which the Jacobian product's spectral norm is computed: all of them when there
    are at most ``points``, else k = 0..9 and the rest spread evenly up to K (a singular value decomposition per
    distance is what costs)."""
    if K + 1 <= points:
        return list(range(K + 1))
    head = list(range(10))
    rest = torch.linspace(10, K, points - 10).round().long().tolist()
    return sorted(set(head + rest))


def jacobian_products(run: _Run, sequences: int = JACOBIAN_SEQUENCES, max_distance: int | None = None,
                      points: int = JACOBIAN_POINTS) -> tuple[Tensor, Tensor]:
    """(ks (m,), norms (n, m)): the spectral norm of ds_T/ds_{T-k} = J_T ... J_{T-k+1} at the distances ks
    (``distances``; k = 0 is the identity) for the first ``sequences`` longest sequences of the batch (T: each one's
    last processed step; the largest k is the shortest of their lengths minus 1, capped at ``max_distance``). The
    running product is rescaled as it goes, so it neither overflows nor underflows before its norm is taken."""
    order = torch.argsort(run.lengths, descending=True, stable=True)[:max(1, sequences)]
    lengths = run.lengths[order]
    K = int(lengths.min()) - 1
    if max_distance is not None:
        K = min(K, max_distance)
    ks = distances(K, points)
    want = set(ks)
    n = len(order)
    dev = run.prev.device
    b_idx = order.to(dev)
    S = run.prev.shape[2]
    P = torch.eye(S, dtype=torch.float64, device=dev).repeat(n, 1, 1)  # (n, S, S)
    log_scale = torch.zeros(n, dtype=torch.float64, device=dev)
    norms = [torch.ones(n, dtype=torch.float64)]
    for k in range(K):  # P_{k+1} = P_k J_{T-k}: one more step back
        t_idx = torch.full((n,), k, dtype=torch.long) if run.reverse else lengths - 1 - k
        P = _times_jacobian(run, P, t_idx.to(dev), b_idx)  # ds_T/ds_{T-k-1} / exp(log_scale), (n, S, S)
        peak = P.abs().amax(dim=(1, 2))
        ok = (peak > 0) & peak.isfinite()
        scale = torch.where(ok, peak, torch.ones_like(peak))
        P = P / scale[:, None, None]
        log_scale = log_scale + torch.log(scale)
        if k + 1 in want:
            top = torch.linalg.svdvals(P)[:, 0]
            norms.append((torch.exp(log_scale) * top).cpu())
    return torch.tensor(ks, dtype=torch.long), torch.stack(norms, dim=1)  # (m,), (n, m)


# -- gradient decay --------------------------------------------------------------------------------------------------
def decay_ratios(grad_norms: Tensor, reverse: bool = False) -> Tensor:
    """||dL/dh_{T-k}|| / ||dL/dh_T|| for k = 0..T-1 (float64), T the last step processed (forwards t = T-1, reverse
    t = 0). The reference is the norm at that step, or, if no gradient reaches it, at the nearest step that has one.
    All zeros when no step has a gradient."""
    g = grad_norms.detach().double().cpu()
    seq = g if reverse else g.flip(0)  # seq[k]: the step k back from the last processed one
    nz = torch.nonzero(seq > 0)
    if len(nz) == 0:
        return torch.zeros_like(seq)
    return seq / seq[int(nz[0])]


def memory_horizon(ratios: Tensor, fraction: float = HORIZON_FRACTION) -> int | None:
    """The first distance k at which ``ratios[k]`` falls below ``fraction``; None when it never does."""
    below = torch.nonzero(ratios < fraction)
    return int(below[0]) if len(below) else None


def per_step_factor(curve: Tensor, ks: Tensor | None = None) -> float | None:
    """The geometric mean factor per step of a decay curve c_k (c_0 = 1) given at distances ``ks`` (default
    0..len-1): exp of the least-squares slope of log c_k against k over the finite positive values; None with fewer
    than two of them."""
    c = curve.double()
    k = torch.arange(len(c), dtype=torch.float64) if ks is None else ks.double()
    ok = (c > 0) & torch.isfinite(c)
    if int(ok.sum()) < 2:
        return None
    kk, y = k[ok], torch.log(c[ok])
    kc = kk - kk.mean()
    slope = float((kc * (y - y.mean())).sum() / (kc * kc).sum())
    return math.exp(slope)


# -- the whole measurement -------------------------------------------------------------------------------------------
@dataclass
class LayerDiagnostics:
    """Everything measured for one direction of one layer; ``key`` is the probe's (module name, layer, direction)."""

    key: tuple[str, int, int]
    cell: str
    hidden: int
    grad_norms: Tensor  # (T,) ||dL/dh_t||, real time
    decay: Tensor  # (T,) ||dL/dh_{T-k}|| / ||dL/dh_T||, k = 0..T-1
    horizon: int | None
    grad_factor: float | None  # geometric mean per-step factor of ``decay``
    jacobian_distances: Tensor  # (m,) the distances k at which the product's norm was taken (0 first)
    jacobian_norms: Tensor  # (m,) median over sequences of ||ds_T/ds_{T-k}||_2 at those k
    jacobian_per_sequence: Tensor  # (n, m)
    jacobian_factor: float | None  # geometric mean per-step factor of ``jacobian_norms``
    spectral_norm: dict
    spectral_radius: dict
    saturation: dict  # gate -> fraction saturated
    gate_kinds: dict  # gate -> 'sigmoid' | 'tanh' | 'relu'
    gate_samples: dict = field(repr=False, default_factory=dict)  # gate -> 1-D sample of values for histograms

    @property
    def label(self) -> str:
        name, layer, d = self.key
        return f"{name} layer {layer}" + (" reverse" if d else "")

    def to_dict(self) -> dict:
        def fl(t):
            return [_num(v) for v in t.tolist()]

        return {"module": self.key[0], "layer": self.key[1], "direction": self.key[2], "cell": self.cell,
                "hidden": self.hidden, "grad_norms": fl(self.grad_norms), "decay": fl(self.decay),
                "horizon": self.horizon, "grad_factor": _num(self.grad_factor),
                "jacobian_distances": self.jacobian_distances.tolist(), "jacobian_norms": fl(self.jacobian_norms), "jacobian_factor": _num(self.jacobian_factor),
                "spectral_norm": self.spectral_norm, "spectral_radius": self.spectral_radius,
                "saturation": {k: _num(v) for k, v in self.saturation.items()}}


@dataclass
class Diagnostics:
    """The result of ``measure``: the loss, the pre-clip global gradient norm and one ``LayerDiagnostics`` per
    direction of each rnnlab layer, in module order, then layer, then direction."""

    loss: float
    grad_norm: float
    layers: list
    length: int  # T of the batch (the longest sequence)
    horizon_fraction: float = HORIZON_FRACTION

    def to_dict(self) -> dict:
        return {"loss": _num(self.loss), "grad_norm": _num(self.grad_norm), "length": self.length,
                "horizon_fraction": self.horizon_fraction,
                "thresholds": {"sigmoid_low": SIGMOID_LOW, "sigmoid_high": SIGMOID_HIGH, "tanh_high": TANH_HIGH},
                "layers": [layer.to_dict() for layer in self.layers]}


def _num(v):
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def _loss_of(loss_fn, batch) -> Tensor:
    if hasattr(loss_fn, "step"):  # a trainer task: step(batch, state) -> (loss, n, state)
        return loss_fn.step(batch, None)[0]
    out = loss_fn(batch)
    return out[0] if isinstance(out, tuple) else out


def rnn_modules(model: nn.Module) -> list[tuple[str, RNNBase]]:
    """(name, module) of every rnnlab recurrent layer in ``model`` (``model`` itself included)."""
    return [(n or type(m).__name__, m) for n, m in model.named_modules() if isinstance(m, RNNBase)]


def measure(model: nn.Module, batch, loss_fn, *, horizon_fraction: float = HORIZON_FRACTION,
            jacobian_sequences: int = JACOBIAN_SEQUENCES, max_distance: int | None = None,
            hist_samples: int = HIST_SAMPLES, seed: int = 0) -> Diagnostics:
    """Measure the gradient flow of ``model`` on ``batch``.

    ``loss_fn``: a trainer task (``step(batch, state) -> (loss, n, state)``, e.g. ``RegressionTask(model)``) or a
    callable ``loss_fn(batch) -> loss`` (or ``(loss, n)``) that runs the model. See the module docstring for what
    is measured and the thresholds."""
    if not (isinstance(horizon_fraction, float | int) and 0 < horizon_fraction < 1):
        raise ValueError(f"horizon_fraction must be a number in (0, 1); got {horizon_fraction!r}")
    if isinstance(jacobian_sequences, bool) or not isinstance(jacobian_sequences, int) or jacobian_sequences < 1:
        raise ValueError(f"jacobian_sequences must be an integer >= 1; got {jacobian_sequences!r}")
    modules = rnn_modules(model)
    if not modules:
        raise ValueError(f"{type(model).__name__} contains no rnnlab recurrent layer (rnnlab.RNN, LSTM or GRU); "
                         "there is no gradient through time to measure")
    calls: dict[int, tuple] = {}

    def hook(module, args, kwargs, output):
        inp = args[0] if args else kwargs.get("input")
        hx = args[1] if len(args) > 1 else kwargs.get("hx")
        calls[id(module)] = (inp, hx)

    handles = [m.register_forward_hook(hook, with_kwargs=True) for _, m in modules]
    was_training = model.training
    model.eval()
    try:
        with probe(model) as p:
            loss = _loss_of(loss_fn, batch)
            params = [q for q in model.parameters() if q.requires_grad]
            grads = torch.autograd.grad(loss, params, allow_unused=True)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    present = [g for g in grads if g is not None]
    grad_norm = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.double()) for g in present]))) \
        if present else 0.0
    gen = torch.Generator().manual_seed(seed)
    layers, length = [], 0
    for name, module in modules:
        if id(module) not in calls:
            continue  # not used by this loss
        runs = replay(module, *calls[id(module)])
        kind = cell_kind(module)
        for (layer, d), run in runs.items():
            key = (name, layer, d)
            norms = p.grad_norms.get(key)
            T = run.mask.shape[0]
            length = max(length, T)
            norms = torch.zeros(T, dtype=torch.float64) if norms is None else norms.detach().double().cpu()
            decay = decay_ratios(norms, reverse=bool(d))
            ks, jac = jacobian_products(run, jacobian_sequences, max_distance)
            jac_median = jac.median(dim=0).values
            w_hh = module._weights(layer, d)[1]
            s_norm, s_radius = weight_spectra(w_hh, kind)
            kinds = SATURATION_GATES[kind]
            valid = {g: v[run.mask].reshape(-1).cpu() for g, v in run.gates.items()}  # valid steps only
            samples = {}
            for g, v in valid.items():
                if v.numel() > hist_samples:
                    v = v[torch.randperm(v.numel(), generator=gen)[:hist_samples]]
                samples[g] = v.float()
            layers.append(LayerDiagnostics(
                key=key, cell=kind, hidden=module.hidden_size, grad_norms=norms, decay=decay,
                horizon=memory_horizon(decay, horizon_fraction), grad_factor=per_step_factor(decay),
                jacobian_distances=ks, jacobian_norms=jac_median, jacobian_per_sequence=jac,
                jacobian_factor=per_step_factor(jac_median, ks),
                spectral_norm=s_norm, spectral_radius=s_radius, saturation=gate_saturation(valid, kinds),
                gate_kinds=dict(kinds), gate_samples=samples))
    return Diagnostics(loss=float(loss.detach()), grad_norm=grad_norm, layers=layers, length=length,
                       horizon_fraction=float(horizon_fraction))
