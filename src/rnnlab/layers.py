"""RNN, LSTM and GRU layers with torch.nn's constructor, call, parameter names and shapes — so existing code swaps
``torch.nn.LSTM`` for ``rnnlab.LSTM`` and a state_dict loads both ways — running rnnlab's own cells and BPTT.

Stacking, directions, PackedSequence and dropout between layers live here; time lives in ``engine/``.

Recurrent regularisation (keyword arguments beyond torch.nn's; every one 0 by default, which is exactly the plain
layer, and none adds a parameter or buffer, so the state_dict still loads into torch.nn). In training mode, with
fresh random masks at every forward call (and independent ones per layer and direction):

- ``weight_drop`` p — DropConnect on the recurrent weights (Wan et al. 2013), AWD-LSTM's weight drop (Merity et al.
  2017, "Regularizing and Optimizing LSTM Language Models"): each direction runs with
  ``W_hh ⊙ M / (1 - p)``, M ~ Bernoulli(1 - p) per weight, the same at every step. Autograd carries the gradient
  through the product back to ``weight_hh``; the engine sees an ordinary W_hh, so the fast loop runs unchanged.
- ``input_dropout``, ``locked_dropout``, ``output_dropout`` p — variational ("locked") dropout (Gal & Ghahramani
  2016, "A Theoretically Grounded Application of Dropout in Recurrent Neural Networks"; AWD-LSTM's dropouti,
  dropouth, dropout): ``x_t ⊙ m / (1 - p)`` with ONE mask m ~ Bernoulli(1 - p) per sequence and feature, the same at
  every step — on the first layer's input, on the input of every later layer (between stacked layers), and on the
  last layer's output. With a PackedSequence each row takes the mask row of its own sequence.
- ``recurrent_dropout`` p — variational dropout on the recurrent state (Gal & Ghahramani 2016): the h_{t-1} that
  enters W_hh is ``h_{t-1} ⊙ m / (1 - p)``, one m ~ Bernoulli(1 - p) per sequence, the same at every step. Done
  inside the time loop (both engines), so no slow path.
- ``zoneout`` p, or (p_h, p_c) for an LSTM — zoneout (Krueger et al. 2016, "Zoneout: Regularizing RNNs by
  Randomly Preserving Hidden Activations"): ``h_t = d_t ⊙ h_{t-1} + (1 - d_t) ⊙ h̃_t`` with d_t ~ Bernoulli(p)
  fresh at every step and unit, h̃_t the cell's ordinary new state; for an LSTM the same for c with its own
  draws, ``c_t = d^c_t ⊙ c_{t-1} + (1 - d^c_t) ⊙ c̃_t``, where h̃_t = o_t ⊙ tanh(c̃_t). One number for an LSTM
  zones out h and c with the same p. Inside the time loop (both engines).

In eval mode the dropouts are off (the scaling by 1/(1-p) keeps the expectation) and zoneout uses its expectation,
``h_t = p h_{t-1} + (1 - p) h̃_t`` (and for c): the output is deterministic. ``dropout`` (torch.nn's: a fresh mask
per element between layers) and ``locked_dropout`` both drop between layers; give one of them.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from .engine import function
from .engine.probe import active_probe
from .engine.unroll import GRU as _GRU
from .engine.unroll import LSTM as _LSTM
from .engine.unroll import RNN_RELU as _RNN_RELU
from .engine.unroll import RNN_TANH as _RNN_TANH

_GATES = {_RNN_TANH: 1, _RNN_RELU: 1, _LSTM: 4, _GRU: 3}
# The regularisation options, each with what its probability means (for messages and extra_repr).
_REGULARISERS = {
    "weight_drop": "the probability of zeroing a recurrent weight, DropConnect on W_hh",
    "input_dropout": "the probability of zeroing an input feature for a whole sequence, locked dropout",
    "locked_dropout": "the probability of zeroing a feature between stacked layers for a whole sequence",
    "output_dropout": "the probability of zeroing an output feature for a whole sequence, locked dropout",
    "recurrent_dropout": "the probability of zeroing a unit of h_{t-1} on its way into W_hh for a whole sequence",
    "zoneout": "the probability that a unit keeps its previous value at a step",
}


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer; got {value!r}.")
    return value


def _probability(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"{name} must be a number in [0, 1) ({_REGULARISERS[name]}); got {value!r}. Use e.g. 0.25, "
                         "or 0 for none.")
    return float(value)


def check_rnn_options(options) -> dict:
    """The regularisation keywords a model passes to its recurrent layers (``rnn_options``), checked and made
    canonical for a JSON config: known names only, each a probability in [0, 1), zeroes dropped, zoneout a number or
    a [p_h, p_c] list. Which cell accepts what (a zoneout pair needs an LSTM) the layer itself checks."""
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise ValueError("rnn_options must be a dict of recurrent regularisation options (e.g. {'weight_drop': 0.5});"
                         f" got {type(options).__name__}.")
    unknown = sorted(set(options) - set(_REGULARISERS))
    if unknown:
        raise ValueError(f"rnn_options keys must be among {', '.join(_REGULARISERS)}; got {unknown[0]!r}. Check the "
                         "spelling.")
    out = {}
    for name in _REGULARISERS:  # a fixed order, so equal options give equal configs
        if name not in options:
            continue
        value = options[name]
        if name == "zoneout" and isinstance(value, (tuple, list)):
            if len(value) != 2:
                raise ValueError(f"zoneout as a pair is (p_h, p_c); got {value!r}. Give one number or two.")
            value = [_probability(name, v) for v in value]
            if value[0] == value[1]:  # the same p for h and c: one number says it
                value = value[0]
        else:
            value = _probability(name, value)
        if value != 0:
            out[name] = value
    return out


def _mask(kind: str, shape, p: float, like: Tensor, layer: int, direction: int | None) -> Tensor:
    """One random mask of a training forward, from torch's default generator (``engine.function.bernoulli``), dtype
    and device of ``like``.

    kind ``weight``, ``input``, ``locked``, ``output``, ``recurrent``: a dropout mask, Bernoulli(1 - p) / (1 - p);
    ``zone_h``, ``zone_c``: zoneout's choices d ~ Bernoulli(p) (1: keep the previous value). ``layer`` and
    ``direction`` (None for masks on a layer's whole input or output) say where it goes; tests wrap this function
    to see the masks and rebuild the layer from its equations."""
    if kind in ("zone_h", "zone_c"):
        return function.bernoulli(shape, p, 1.0, like)
    return function.bernoulli(shape, 1 - p, 1 / (1 - p), like)


class RNNBase(nn.Module):
    """Shared machinery of RNN, LSTM and GRU; use those classes."""

    def __init__(self, mode: int, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False, proj_size: int = 0,
                 device=None, dtype=None, *, weight_drop: float = 0.0, input_dropout: float = 0.0,
                 locked_dropout: float = 0.0, output_dropout: float = 0.0, recurrent_dropout: float = 0.0,
                 zoneout: float | tuple[float, float] = 0.0) -> None:
        super().__init__()
        self.mode = mode
        self.input_size = _positive_int("input_size", input_size)
        self.hidden_size = _positive_int("hidden_size", hidden_size)
        self.num_layers = _positive_int("num_layers", num_layers)
        self.bias = bool(bias)
        self.batch_first = bool(batch_first)
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout <= 1:
            raise ValueError(f"dropout must be a number in [0, 1] (the probability of zeroing an element between "
                             f"layers); got {dropout!r}.")
        self.dropout = float(dropout)
        self.bidirectional = bool(bidirectional)
        if proj_size != 0:
            raise ValueError(f"proj_size must be 0: rnnlab.LSTM has no projection layer yet; got {proj_size!r}. "
                             "Use torch.nn.LSTM for projected LSTMs.")
        self.proj_size = 0
        self._set_regularisation(weight_drop, input_dropout, locked_dropout, output_dropout, recurrent_dropout, zoneout)
        num_directions = 2 if bidirectional else 1
        gate_size = _GATES[mode] * hidden_size
        factory = {"device": device, "dtype": dtype}
        self._flat_weights_names: list[str] = []
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else hidden_size * num_directions
            for direction in range(num_directions):
                suffix = f"_l{layer}" + ("_reverse" if direction == 1 else "")
                params = [("weight_ih" + suffix, (gate_size, layer_input)), ("weight_hh" + suffix, (gate_size, hidden_size))]
                if bias:
                    params += [("bias_ih" + suffix, (gate_size,)), ("bias_hh" + suffix, (gate_size,))]
                for name, shape in params:
                    setattr(self, name, nn.Parameter(torch.empty(shape, **factory)))
                    self._flat_weights_names.append(name)
        self.reset_parameters()

    def _set_regularisation(self, weight_drop, input_dropout, locked_dropout, output_dropout, recurrent_dropout,
                            zoneout) -> None:
        self.weight_drop = _probability("weight_drop", weight_drop)
        self.input_dropout = _probability("input_dropout", input_dropout)
        self.locked_dropout = _probability("locked_dropout", locked_dropout)
        self.output_dropout = _probability("output_dropout", output_dropout)
        self.recurrent_dropout = _probability("recurrent_dropout", recurrent_dropout)
        kind = type(self).__name__
        if isinstance(zoneout, (tuple, list)):
            if self.mode != _LSTM or len(zoneout) != 2:
                raise ValueError(f"zoneout as a pair is (p_h, p_c) for an LSTM's h and c; got {zoneout!r} for a "
                                 f"{kind}. Give one number" + (" (a GRU or RNN has no cell state)."
                                                                if self.mode != _LSTM else ", or two."))
            self.zoneout_h, self.zoneout_c = (_probability("zoneout", v) for v in zoneout)
        else:
            self.zoneout_h = _probability("zoneout", zoneout)
            self.zoneout_c = self.zoneout_h if self.mode == _LSTM else 0.0
        self.zoneout = self.zoneout_h if self.zoneout_h == self.zoneout_c or self.mode != _LSTM \
            else (self.zoneout_h, self.zoneout_c)
        if self.dropout > 0 and self.locked_dropout > 0 and self.num_layers > 1:
            raise ValueError(f"dropout={self.dropout:g} and locked_dropout={self.locked_dropout:g} both drop between "
                             "stacked layers (dropout: a fresh mask per element and step; locked_dropout: one mask "
                             "per sequence); give one of them and set the other to 0.")

    @property
    def _regularised(self) -> bool:
        """Whether a training forward draws masks (or an eval forward zones out): False means the plain layer."""
        return any(getattr(self, name) > 0 for name in ("weight_drop", "input_dropout", "locked_dropout",
                                                        "output_dropout", "recurrent_dropout", "zoneout_h",
                                                        "zoneout_c"))

    def reset_parameters(self) -> None:
        """torch.nn's default: every weight and bias uniform in [-1/sqrt(H), 1/sqrt(H)]."""
        stdv = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -stdv, stdv)

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    def _weights(self, layer: int, direction: int):
        suffix = f"_l{layer}" + ("_reverse" if direction == 1 else "")
        w_ih, w_hh = getattr(self, "weight_ih" + suffix), getattr(self, "weight_hh" + suffix)
        if self.bias:
            return w_ih, w_hh, getattr(self, "bias_ih" + suffix), getattr(self, "bias_hh" + suffix)
        empty = w_ih.new_empty(0)
        return w_ih, w_hh, empty, empty

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if self.mode == _RNN_RELU:
            s += ", nonlinearity='relu'"
        for name, default in (("bias", True), ("batch_first", False), ("dropout", 0.0), ("bidirectional", False)):
            if getattr(self, name) != default:
                s += f", {name}={getattr(self, name)}"
        for name in _REGULARISERS:
            if getattr(self, name) not in (0, 0.0):
                s += f", {name}={getattr(self, name)}"
        return s

    # -- the call -----------------------------------------------------------------------------------------------
    def _shape_error(self, what: str, expected, got) -> ValueError:
        return ValueError(f"{type(self).__name__}: {what} must have shape {tuple(expected)}; got {tuple(got)}.")

    def forward(self, input, hx=None):
        has_c = self.mode == _LSTM
        D, L, H = self.num_directions, self.num_layers, self.hidden_size
        packed = isinstance(input, PackedSequence)
        x, batch_sizes, sorted_idx, unsorted_idx, T, B, unbatched = flat_input(self, input)  # x: (N, I)
        h0, c0 = self._initial_state(hx, B, x, unbatched, sorted_idx)

        slot_probe = active_probe()
        regular = self._regularised
        locked = _Locked(batch_sizes, B, packed) if regular and self.training else None
        h_n, c_n = [], []
        for layer in range(L):
            if locked is not None:  # variational dropout on this layer's input: one mask per sequence and feature
                kind, p = ("input", self.input_dropout) if layer == 0 else ("locked", self.locked_dropout)
                x = locked.apply(x, kind, p, layer)  # (N, I)
            outs = []
            for d in range(D):
                k = layer * D + d
                slot = slot_probe.slot(self, layer, d) if slot_probe is not None else None
                w_ih, w_hh, b_ih, b_hh = self._weights(layer, d)
                options = {}
                if regular:
                    w_hh, options = self._direction_options(layer, d, w_hh, B, x.shape[0], x)
                out, hn, cn = function.run(self.mode, d == 1, batch_sizes, x, h0[k], c0[k] if has_c else x.new_empty(0),
                                           w_ih, w_hh, b_ih, b_hh, slot=slot, **options)
                outs.append(out)  # (N, H)
                h_n.append(hn)
                c_n.append(cn)
            x = outs[0] if D == 1 else torch.cat(outs, dim=1)  # (N, D*H)
            if self.dropout > 0 and self.training and layer < L - 1:
                x = F.dropout(x, self.dropout, training=True)
        if locked is not None:
            x = locked.apply(x, "output", self.output_dropout, L - 1)  # (N, D*H)
        h_n = torch.stack(h_n)  # (L*D, B, H)
        c_n = torch.stack(c_n) if has_c else None
        if sorted_idx is not None:  # back to the caller's batch order
            h_n = h_n.index_select(1, unsorted_idx)
            c_n = c_n.index_select(1, unsorted_idx) if has_c else None
        if packed:
            output = PackedSequence(x, batch_sizes, sorted_idx, unsorted_idx)
        else:
            output = x.view(T, B, D * H)  # (T, B, D*H)
            if unbatched:
                output, h_n = output.squeeze(1), h_n.squeeze(1)
                c_n = c_n.squeeze(1) if has_c else None
            elif self.batch_first:
                output = output.transpose(0, 1)  # (B, T, D*H)
        return output, ((h_n, c_n) if has_c else h_n)

    def _direction_options(self, layer: int, d: int, w_hh: Tensor, B: int, N: int, x: Tensor):
        """The W_hh one direction runs with and its engine options (recurrent mask, zoneout), for this mode."""
        H = self.hidden_size
        options = {}
        if self.training:
            if self.weight_drop > 0:  # DropConnect: W_hh ⊙ M / (1 - p); autograd takes the gradient back through it
                w_hh = w_hh * _mask("weight", w_hh.shape, self.weight_drop, w_hh, layer, d)  # (G*H, H)
            if self.recurrent_dropout > 0:  # rows in the engine's order: row b of every step is sequence b
                options["rec_mask"] = _mask("recurrent", (B, H), self.recurrent_dropout, x, layer, d)  # (B, H)
            if self.zoneout_h > 0:  # fresh d_t at every step and unit: one row per row of x
                options["zone_h"] = _mask("zone_h", (N, H), self.zoneout_h, x, layer, d)  # (N, H)
            if self.zoneout_c > 0:
                options["zone_c"] = _mask("zone_c", (N, H), self.zoneout_c, x, layer, d)  # (N, H)
        else:  # eval: zoneout's expectation h_t = p h_{t-1} + (1 - p) h~_t
            if self.zoneout_h > 0:
                options["zone_h"] = x.new_full((N, H), self.zoneout_h)  # (N, H)
            if self.zoneout_c > 0:
                options["zone_c"] = x.new_full((N, H), self.zoneout_c)  # (N, H)
        return w_hh, options

    def _initial_state(self, hx, B, x, unbatched, sorted_idx):
        return initial_state(self, hx, B, x, unbatched, sorted_idx, has_c=self.mode == _LSTM)

    # -- one step at a time, for generation ----------------------------------------------------------------------
    def step(self, x_t: Tensor, hx=None):
        """Advance every layer by one time step: ``x_t`` (B, input_size) → (output (B, H), new state).

        The state has the same form as ``forward``'s (h or (h, c), each (num_layers, B, H)); pass it back in for the
        next step. Unidirectional layers only: a reverse direction needs the whole sequence.
        """
        if self.bidirectional:
            raise ValueError(f"{type(self).__name__}.step runs one step forwards; a bidirectional layer needs the "
                             "whole sequence. Call the module on the full sequence instead.")
        if x_t.dim() != 2:
            raise self._shape_error("x_t", ("B", self.input_size), x_t.shape)
        out, state = self.forward(x_t.unsqueeze(1 if self.batch_first else 0), hx)
        return out.squeeze(1 if self.batch_first else 0), state  # (B, H)


class _Locked:
    """Variational (locked) dropout on a layer's input or output rows: one mask row per sequence, the same at every
    step. Rows are the engine's: row b of each step is sequence b (of the sorted order for a PackedSequence)."""

    def __init__(self, batch_sizes: Tensor, B: int, packed: bool) -> None:
        self.batch_sizes, self.B, self.packed = batch_sizes, B, packed
        self._seq = None

    def apply(self, x: Tensor, kind: str, p: float, layer: int) -> Tensor:
        if p == 0:
            return x
        N, F_ = x.shape
        m = _mask(kind, (self.B, F_), p, x, layer, None)  # (B, F)
        if not self.packed:  # every step has all B sequences: rows t*B + b
            return (x.reshape(N // self.B, self.B, F_) * m).reshape(N, F_)  # (T, B, F) → (N, F)
        if self._seq is None:  # the sequence of each row: its index within its step
            sizes = self.batch_sizes.to(torch.long)
            starts = torch.cumsum(sizes, 0) - sizes  # (T,): first row of each step
            self._seq = (torch.arange(N) - torch.repeat_interleave(starts, sizes)).to(x.device)  # (N,)
        return x * m[self._seq]  # (N, F)



def initial_state(module: nn.Module, hx, B: int, x: Tensor, unbatched: bool, sorted_idx, has_c: bool):
    """(h0, c0) for the engine, each (L*D, B, H): zeros when ``hx`` is None, else ``hx`` checked against the module's
    sizes and ``x``'s dtype, given a batch dimension when ``unbatched`` and put in the engine's length-sorted order
    (``sorted_idx``). Without a cell state c0 is h0. Shared by the layers here and those in ``rnnlab.variants``."""
    name = type(module).__name__
    shape = (module.num_layers * module.num_directions, B, module.hidden_size)
    if hx is None:
        zeros = torch.zeros(shape, dtype=x.dtype, device=x.device)
        return zeros, zeros
    if has_c:
        if not (isinstance(hx, (tuple, list)) and len(hx) == 2):
            raise ValueError(f"{name}: hx must be a tuple (h0, c0); got {type(hx).__name__}.")
        states = list(hx)
    else:
        if not isinstance(hx, Tensor):
            raise ValueError(f"{name}: hx must be a Tensor h0; got {type(hx).__name__}.")
        states = [hx]
    for i, s in enumerate(states):
        what = ("h0", "c0")[i]
        expected = (shape[0], shape[2]) if unbatched else shape
        if s.shape != expected:
            raise ValueError(f"{name}: {what} must have shape {tuple(expected)}; got {tuple(s.shape)}.")
        if s.dtype != x.dtype:
            raise ValueError(f"{name}: {what} dtype must equal the input's ({x.dtype}); got {s.dtype}.")
        if unbatched:
            s = s.unsqueeze(1)
        if sorted_idx is not None:  # the engine sees sequences sorted by length
            s = s.index_select(1, sorted_idx)
        states[i] = s
    return states[0], (states[1] if has_c else states[0])

class RNN(RNNBase):
    """Elman RNN, ``h_t = f(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)`` with f = tanh or ReLU; torch.nn.RNN's API, plus
    the regularisation keywords of the module doc (``zoneout`` is one number: there is no cell state)."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, nonlinearity: str = "tanh",
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 device=None, dtype=None, *, weight_drop: float = 0.0, input_dropout: float = 0.0,
                 locked_dropout: float = 0.0, output_dropout: float = 0.0, recurrent_dropout: float = 0.0,
                 zoneout: float = 0.0) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu'; got {nonlinearity!r}.")
        self.nonlinearity = nonlinearity
        super().__init__(_RNN_TANH if nonlinearity == "tanh" else _RNN_RELU, input_size, hidden_size, num_layers,
                         bias, batch_first, dropout, bidirectional, 0, device, dtype, weight_drop=weight_drop,
                         input_dropout=input_dropout, locked_dropout=locked_dropout, output_dropout=output_dropout,
                         recurrent_dropout=recurrent_dropout, zoneout=zoneout)


class LSTM(RNNBase):
    """LSTM with torch.nn.LSTM's API (gates i, f, g, o); ``proj_size`` must be 0. Plus the regularisation keywords
    of the module doc; ``zoneout`` is p (h and c alike) or (p_h, p_c), each state with its own draws."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False, proj_size: int = 0,
                 device=None, dtype=None, *, weight_drop: float = 0.0, input_dropout: float = 0.0,
                 locked_dropout: float = 0.0, output_dropout: float = 0.0, recurrent_dropout: float = 0.0,
                 zoneout: float | tuple[float, float] = 0.0) -> None:
        super().__init__(_LSTM, input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         proj_size, device, dtype, weight_drop=weight_drop, input_dropout=input_dropout,
                         locked_dropout=locked_dropout, output_dropout=output_dropout,
                         recurrent_dropout=recurrent_dropout, zoneout=zoneout)


class GRU(RNNBase):
    """GRU with torch.nn.GRU's API (gates r, z, n; ``b_hn`` inside the reset product), plus the regularisation
    keywords of the module doc (``zoneout`` is one number; ``recurrent_dropout`` masks the h_{t-1} of W_hh's three
    products, not the ``z ⊙ h_{t-1}`` term)."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 device=None, dtype=None, *, weight_drop: float = 0.0, input_dropout: float = 0.0,
                 locked_dropout: float = 0.0, output_dropout: float = 0.0, recurrent_dropout: float = 0.0,
                 zoneout: float = 0.0) -> None:
        super().__init__(_GRU, input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, 0,
                         device, dtype, weight_drop=weight_drop, input_dropout=input_dropout,
                         locked_dropout=locked_dropout, output_dropout=output_dropout,
                         recurrent_dropout=recurrent_dropout, zoneout=zoneout)


def flat_input(module: nn.Module, input) -> tuple:
    """A recurrent layer's input as its time loop reads it: ``(x (N, I), batch_sizes (T,), sorted_idx, unsorted_idx,
    T, B, unbatched)`` — x holds step t's rows together (a padded (T, B, I) input becomes T*B rows; a PackedSequence
    is taken as it is, T None). Checks what torch.nn checks — a Tensor or PackedSequence, rank 2 or 3, the feature
    size, at least one step and one sequence — and that the dtype equals the parameters'. ``module`` has torch.nn's
    ``input_size`` and ``batch_first`` and a ``_shape_error``; shared by ``RNNBase`` and the variant layers."""
    name = type(module).__name__
    T = None
    if isinstance(input, PackedSequence):
        x, batch_sizes, sorted_idx, unsorted_idx = input
        B, unbatched = int(batch_sizes[0]), False
        if x.dim() != 2 or x.shape[1] != module.input_size:
            raise module._shape_error("PackedSequence.data", ("N", module.input_size), x.shape)
    else:
        if not isinstance(input, Tensor):
            raise TypeError(f"{name} expects a Tensor or a PackedSequence; got {type(input).__name__}.")
        if input.dim() not in (2, 3):
            layout = "(B, T, input_size)" if module.batch_first else "(T, B, input_size)"
            raise ValueError(f"{name}: input must be 3-D {layout} or 2-D (T, input_size); "
                             f"got {input.dim()}-D of shape {tuple(input.shape)}.")
        if input.shape[-1] != module.input_size:
            raise module._shape_error("input", list(input.shape[:-1]) + [module.input_size], input.shape)
        unbatched = input.dim() == 2
        seq = input.unsqueeze(1) if unbatched else (input.transpose(0, 1) if module.batch_first else input)  # (T, B, I)
        T, B = seq.shape[0], seq.shape[1]
        if T == 0 or B == 0:
            raise ValueError(f"{name}: input must have at least one step and one sequence; "
                             f"got shape {tuple(input.shape)}.")
        x = seq.reshape(T * B, module.input_size)  # (T*B, I): step t owns rows [t*B, (t+1)*B)
        batch_sizes = torch.full((T,), B, dtype=torch.int64)
        sorted_idx = unsorted_idx = None
    w0 = next(module.parameters())
    if x.dtype != w0.dtype:
        raise ValueError(f"{name}: input dtype must equal the parameters' ({w0.dtype}); got {x.dtype}. "
                         f"Convert one of them, e.g. module.to({x.dtype}).")
    return x, batch_sizes, sorted_idx, unsorted_idx, T, B, unbatched
