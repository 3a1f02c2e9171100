"""Recurrent cell variants as layers with torch.nn's constructor and call: layer-normalised LSTM and GRU, the dilated
RNN and the Skip RNN. Each runs on rnnlab's own engines (C++ or pure PyTorch, chosen like the plain layers').

- ``LayerNormLSTM`` / ``LayerNormGRU`` (Ba, Kiros & Hinton 2016): LN of the input-side and hidden-side gate
  pre-activations (per gate block) and, for the LSTM, of c_t before its tanh. Equations: ``rnnlab.cells.layernorm_lstm``
  and ``layernorm_gru``.
- ``DilatedRNN`` (Chang et al. 2017, "Dilated Recurrent Neural Networks", NeurIPS): layer l has dilation d_l and runs
  ``h_t = cell(x_t, h_{t-d_l})``. Implemented by re-batching time — a (T, B, F) sequence with dilation d is d
  interleaved subsequences (⌈T/d⌉, d·B, F) — so each layer is an ordinary rnnlab layer on the fast engine.
- ``SkipRNN`` (Campos et al. 2018, "Skip RNN: Learning to Skip State Updates in Recurrent Neural Networks", ICLR): a
  learned binary gate u_t per step decides whether the state is updated or copied, trained with the straight-through
  estimator and an optional budget loss λ Σ_t u_t. Equations: ``rnnlab.cells.skip``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from . import layers
from .cells.layernorm_lstm import EPS
from .engine import function_variants
from .engine.unroll import GRU as _GRU
from .engine.unroll import LSTM as _LSTM
from .engine.unroll import RNN_RELU as _RNN_RELU
from .engine.unroll import RNN_TANH as _RNN_TANH

_MODES = {"rnn_tanh": _RNN_TANH, "rnn_relu": _RNN_RELU, "lstm": _LSTM, "gru": _GRU}
_GATES = {_RNN_TANH: 1, _RNN_RELU: 1, _LSTM: 4, _GRU: 3}


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer; got {value!r}.")
    return value


def _probability(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"{name} must be a number in [0, 1] (the probability of zeroing an element between layers); "
                         f"got {value!r}.")
    return float(value)


def _cell_mode(cell) -> int:
    if cell not in _MODES:
        raise ValueError(f"cell must be one of {', '.join(repr(c) for c in _MODES)}; got {cell!r}.")
    return _MODES[cell]


class _StackedBase(nn.Module):
    """Input handling shared by the LN and Skip layers — padded or PackedSequence, batch_first, unbatched, stacking,
    directions, dropout between layers, the initial state — as ``layers.RNNBase`` does for the plain cells. A subclass
    registers its parameters and runs one direction of one layer in ``_direction``."""

    has_c = False  # whether the state is (h, c)

    def __init__(self, input_size: int, hidden_size: int, num_layers: int, batch_first: bool, dropout: float,
                 bidirectional: bool) -> None:
        super().__init__()
        self.input_size = _positive_int("input_size", input_size)
        self.hidden_size = _positive_int("hidden_size", hidden_size)
        self.num_layers = _positive_int("num_layers", num_layers)
        self.batch_first = bool(batch_first)
        self.dropout = _probability("dropout", dropout)
        self.bidirectional = bool(bidirectional)

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    def _suffixes(self):
        """(layer, direction, parameter-name suffix, layer input size) of every direction of every layer."""
        for layer in range(self.num_layers):
            layer_input = self.input_size if layer == 0 else self.hidden_size * self.num_directions
            for direction in range(self.num_directions):
                yield layer, direction, f"_l{layer}" + ("_reverse" if direction == 1 else ""), layer_input

    def _param(self, name: str, suffix: str) -> Tensor:
        return getattr(self, name + suffix)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        for name, default in (("batch_first", False), ("dropout", 0.0), ("bidirectional", False)):
            if getattr(self, name) != default:
                s += f", {name}={getattr(self, name)}"
        return s

    def _direction(self, layer: int, direction: int, x: Tensor, batch_sizes: Tensor, h0: Tensor, c0: Tensor):
        """Run one direction of one layer: (out (N, H), h_n (B, H), c_n (B, H) | empty)."""
        raise NotImplementedError

    def _shape_error(self, what: str, expected, got) -> ValueError:
        return ValueError(f"{type(self).__name__}: {what} must have shape {tuple(expected)}; got {tuple(got)}.")

    def _run(self, input, hx):
        """(output, state, extra): extra is each direction's second output of ``_direction`` when it returns four."""
        D, L, H = self.num_directions, self.num_layers, self.hidden_size
        packed = isinstance(input, PackedSequence)
        x, batch_sizes, sorted_idx, unsorted_idx, T, B, unbatched = layers.flat_input(self, input)  # x: (N, I)
        h0, c0 = self._initial_state(hx, B, x, unbatched, sorted_idx)
        h_n, c_n, extras = [], [], []
        for layer in range(L):
            outs = []
            for d in range(D):
                k = layer * D + d
                res = self._direction(layer, d, x, batch_sizes, h0[k], c0[k] if self.has_c else x.new_empty(0))
                out, hn, cn = res[0], res[-2], res[-1]
                if len(res) == 4:
                    extras.append(res[1])
                outs.append(out)  # (N, H)
                h_n.append(hn)
                c_n.append(cn)
            x = outs[0] if D == 1 else torch.cat(outs, dim=1)  # (N, D*H)
            if self.dropout > 0 and self.training and layer < L - 1:
                x = F.dropout(x, self.dropout, training=True)
        h_n = torch.stack(h_n)  # (L*D, B, H)
        c_n = torch.stack(c_n) if self.has_c else None
        if sorted_idx is not None:  # back to the caller's batch order
            h_n = h_n.index_select(1, unsorted_idx)
            c_n = c_n.index_select(1, unsorted_idx) if self.has_c else None
        extra = torch.stack(extras) if extras else None  # (L*D, N)
        if packed:
            output = PackedSequence(x, batch_sizes, sorted_idx, unsorted_idx)
        else:
            output = x.view(T, B, D * H)  # (T, B, D*H)
            extra = extra.view(-1, T, B) if extra is not None else None  # (L*D, T, B)
            if unbatched:
                output, h_n = output.squeeze(1), h_n.squeeze(1)
                c_n = c_n.squeeze(1) if self.has_c else None
                extra = extra.squeeze(2) if extra is not None else None  # (L*D, T)
            elif self.batch_first:
                output = output.transpose(0, 1)  # (B, T, D*H)
                extra = extra.transpose(1, 2) if extra is not None else None  # (L*D, B, T)
        return output, ((h_n, c_n) if self.has_c else h_n), extra

    def forward(self, input, hx=None):
        output, state, _ = self._run(input, hx)
        return output, state

    def _initial_state(self, hx, B, x, unbatched, sorted_idx):
        return layers.initial_state(self, hx, B, x, unbatched, sorted_idx, has_c=self.has_c)

    def step(self, x_t: Tensor, hx=None):
        """Advance every layer by one time step: ``x_t`` (B, input_size) → (output (B, H), new state); unidirectional
        layers only (a reverse direction needs the whole sequence)."""
        if self.bidirectional:
            raise ValueError(f"{type(self).__name__}.step runs one step forwards; a bidirectional layer needs the "
                             "whole sequence. Call the module on the full sequence instead.")
        if x_t.dim() != 2:
            raise self._shape_error("x_t", ("B", self.input_size), x_t.shape)
        out, state = self.forward(x_t.unsqueeze(1 if self.batch_first else 0), hx)
        return out.squeeze(1 if self.batch_first else 0), state  # (B, H)


# -- layer-normalised LSTM and GRU ----------------------------------------------------------------------------------
class _LayerNormBase(_StackedBase):
    """Parameters per direction of each layer (suffix ``_l{k}`` or ``_l{k}_reverse``, G = 4 LSTM, 3 GRU):
    ``weight_ih`` (G*H, I_k), ``weight_hh`` (G*H, H), the LN gains/shifts ``ln_ih_weight``, ``ln_ih_bias``,
    ``ln_hh_weight``, ``ln_hh_bias`` (G*H,) and, LSTM only, ``ln_c_weight``, ``ln_c_bias`` (H,). The shifts play the
    part of torch's b_ih and b_hh."""

    mode = _LSTM

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, batch_first: bool = False,
                 dropout: float = 0.0, bidirectional: bool = False, eps: float = EPS, device=None, dtype=None) -> None:
        super().__init__(input_size, hidden_size, num_layers, batch_first, dropout, bidirectional)
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
            raise ValueError(f"eps must be a positive number (added to the variance inside LN's square root); "
                             f"got {eps!r}.")
        self.eps = float(eps)
        G, H = _GATES[self.mode], hidden_size
        factory = {"device": device, "dtype": dtype}
        for _layer, _d, suffix, layer_input in self._suffixes():
            shapes = [("weight_ih", (G * H, layer_input)), ("weight_hh", (G * H, H)), ("ln_ih_weight", (G * H,)),
                      ("ln_ih_bias", (G * H,)), ("ln_hh_weight", (G * H,)), ("ln_hh_bias", (G * H,))]
            if self.has_c:
                shapes += [("ln_c_weight", (H,)), ("ln_c_bias", (H,))]
            for name, shape in shapes:
                setattr(self, name + suffix, nn.Parameter(torch.empty(shape, **factory)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Weights uniform in [-1/sqrt(H), 1/sqrt(H)] (torch.nn's default); LN gains 1 and shifts 0 (the identity
        affine map, torch.nn.LayerNorm's default)."""
        stdv = 1.0 / math.sqrt(self.hidden_size)
        for name, p in self.named_parameters():
            if name.startswith("weight_"):
                nn.init.uniform_(p, -stdv, stdv)
            elif "_weight" in name:
                nn.init.ones_(p)
            else:
                nn.init.zeros_(p)

    def _direction(self, layer, direction, x, batch_sizes, h0, c0):
        suffix = f"_l{layer}" + ("_reverse" if direction == 1 else "")
        p = lambda name: self._param(name, suffix)  # noqa: E731
        empty = x.new_empty(0)
        ln_c = (p("ln_c_weight"), p("ln_c_bias")) if self.has_c else (empty, empty)
        return function_variants.run_layer_norm(self.mode, direction == 1, batch_sizes, self.eps, x, h0, c0,
                                                p("weight_ih"), p("weight_hh"), p("ln_ih_weight"), p("ln_ih_bias"),
                                                p("ln_hh_weight"), p("ln_hh_bias"), *ln_c)


class LayerNormLSTM(_LayerNormBase):
    """Layer-normalised LSTM (Ba et al. 2016), torch.nn.LSTM's call: ``out, (h_n, c_n) = m(x, (h0, c0))``.

    ``a_t = LN(W_ih x_t) + LN(W_hh h_{t-1})`` (per gate block i, f, g, o), ``c_t = σ(a_f) c_{t-1} + σ(a_i) tanh(a_g)``,
    ``h_t = σ(a_o) tanh(LN(c_t))``; see ``rnnlab.cells.layernorm_lstm`` for the equations and why per block.
    ``eps`` (1e-5, torch.nn.LayerNorm's default) is added to each variance.
    """

    mode = _LSTM
    has_c = True


class LayerNormGRU(_LayerNormBase):
    """Layer-normalised GRU (Ba et al. 2016's LN on torch.nn.GRU's gates), torch.nn.GRU's call: ``out, h_n = m(x, h0)``.

    ``[i_r, i_z, i_n] = LN(W_ih x_t)``, ``[h_r, h_z, h_n] = LN(W_hh h_{t-1})`` (per gate block), then torch's GRU:
    ``r = σ(i_r + h_r)``, ``z = σ(i_z + h_z)``, ``n = tanh(i_n + r h_n)``, ``h_t = (1 - z) n + z h_{t-1}``.
    """

    mode = _GRU
    has_c = False


# -- Skip RNN -------------------------------------------------------------------------------------------------------
class SkipRNN(_StackedBase):
    """Skip RNN (Campos et al. 2018) over an LSTM, GRU or Elman cell: ``out, state = m(x, hx)`` as torch.nn's layer
    of that cell; the update gates of the last call are in ``m.updates`` and the budget loss in ``m.budget_loss()``.

    Per step (equations and backward: ``rnnlab.cells.skip``): ``u_t = round(ũ_t)`` (ũ_1 = 1),
    ``s_t = u_t S(s_{t-1}, x_t) + (1 - u_t) s_{t-1}``, ``Δũ_t = σ(W_p s_t + b_p)``,
    ``ũ_{t+1} = u_t Δũ_t + (1 - u_t)(ũ_t + min(Δũ_t, 1 - ũ_t))``; round's gradient is the straight-through
    estimator.

    Every direction of every layer has its own gate (the authors' stacked cell shares the top layer's; not done here).
    ũ restarts at 1 on every call, so each call's first step always updates — with TBPTT, each chunk's first step.
    Every step still computes the candidate S (the batch rows skip at different steps): the saving the paper measures
    is in the number of sequential state updates, not in this implementation's time.

    Parameters: those of the plain layer (``weight_ih_l{k}``, ``weight_hh_l{k}``, ``bias_ih_l{k}``, ``bias_hh_l{k}``,
    so a torch.nn / rnnlab state_dict of the cell loads with ``strict=False``) and the update head
    ``update_weight_l{k}`` (1, H), ``update_bias_l{k}`` (1,).

    Args beyond torch.nn's: ``cell`` ('lstm', 'gru', 'rnn_tanh' or 'rnn_relu'); ``budget`` λ ≥ 0 of the budget loss
    λ Σ_t u_t (default 0: no budget, the paper's baseline); ``update_bias`` the initial b_p (default 1.0, the
    authors' code: σ(1) ≈ 0.73, so training starts by updating at most steps).
    """

    def __init__(self, cell: str, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False, budget: float = 0.0,
                 update_bias: float = 1.0, device=None, dtype=None) -> None:
        super().__init__(input_size, hidden_size, num_layers, batch_first, dropout, bidirectional)
        self.cell = cell
        self.mode = _cell_mode(cell)
        self.has_c = self.mode == _LSTM
        self.bias = bool(bias)
        if isinstance(budget, bool) or not isinstance(budget, (int, float)) or budget < 0:
            raise ValueError(f"budget must be a number >= 0 (λ of the budget loss λ Σ_t u_t; 0 turns it off); "
                             f"got {budget!r}.")
        self.budget = float(budget)
        if isinstance(update_bias, bool) or not isinstance(update_bias, (int, float)):
            raise ValueError(f"update_bias must be a number (the initial b_p of Δũ = σ(W_p s + b_p)); "
                             f"got {update_bias!r}.")
        self.update_bias = float(update_bias)
        self.updates: Tensor | None = None
        self._sequences = 1
        G, H = _GATES[self.mode], hidden_size
        factory = {"device": device, "dtype": dtype}
        for _layer, _d, suffix, layer_input in self._suffixes():
            shapes = [("weight_ih", (G * H, layer_input)), ("weight_hh", (G * H, H))]
            if self.bias:
                shapes += [("bias_ih", (G * H,)), ("bias_hh", (G * H,))]
            shapes += [("update_weight", (1, H)), ("update_bias", (1,))]
            for name, shape in shapes:
                setattr(self, name + suffix, nn.Parameter(torch.empty(shape, **factory)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """torch.nn's default (uniform in [-1/sqrt(H), 1/sqrt(H)]) for every weight and bias; b_p = update_bias."""
        stdv = 1.0 / math.sqrt(self.hidden_size)
        for name, p in self.named_parameters():
            if name.startswith("update_bias"):
                nn.init.constant_(p, self.update_bias)
            else:
                nn.init.uniform_(p, -stdv, stdv)

    def extra_repr(self) -> str:
        s = f"{self.cell!r}, " + super().extra_repr()
        if not self.bias:
            s += ", bias=False"
        if self.budget:
            s += f", budget={self.budget}"
        return s

    def _direction(self, layer, direction, x, batch_sizes, h0, c0):
        suffix = f"_l{layer}" + ("_reverse" if direction == 1 else "")
        p = lambda name: self._param(name, suffix)  # noqa: E731
        empty = x.new_empty(0)
        biases = (p("bias_ih"), p("bias_hh")) if self.bias else (empty, empty)
        return function_variants.run_skip(self.mode, True, direction == 1, batch_sizes, x, h0, c0, p("weight_ih"),
                                          p("weight_hh"), *biases, p("update_weight"), p("update_bias"))

    def forward(self, input, hx=None):
        """torch.nn's call; also sets ``self.updates``: the u_t of every direction of every layer, (L*D, T, B)
        ((L*D, B, T) with batch_first, (L*D, T) unbatched, (L*D, N) rows of the PackedSequence's data), carrying the
        straight-through gradient (and so the call's graph, until the next call)."""
        output, state, self.updates = self._run(input, hx)
        if isinstance(input, PackedSequence):  # B, for the budget loss per sequence
            self._sequences = int(input.batch_sizes[0])
        else:
            self._sequences = 1 if input.dim() == 2 else input.shape[0 if self.batch_first else 1]
        return output, state

    def budget_loss(self, budget: float | None = None) -> Tensor:
        """λ Σ_t u_t of the last call, summed over layers and directions and averaged over the batch
        (λ = ``budget`` if given, else the constructor's)."""
        if self.updates is None:
            raise RuntimeError("SkipRNN.budget_loss reads the update gates of the last call; call the module first.")
        lam = self.budget if budget is None else float(budget)
        return lam * self.updates.sum() / self._sequences


# -- dilated RNN ----------------------------------------------------------------------------------------------------
class DilatedRNN(nn.Module):
    """Dilated RNN (Chang et al. 2017, "Dilated Recurrent Neural Networks", NeurIPS): a stack of single recurrent
    layers, layer l with dilation d_l, ``h^l_t = cell(x^l_t, h^l_{t-d_l})`` (reverse direction: h^l_{t+d_l}).

    A layer with dilation d is the ordinary layer run on d interleaved subsequences: time step t = k*d + j of
    sequence b is step k of subsequence (j, b), so a (T, B, F) input becomes (⌈T/d⌉, d*B, F) — a view when d divides
    T — and the output comes back by the inverse view. Each layer therefore runs on rnnlab's fast engine (C++ or
    PyTorch, the plain layer's) with the batch d times larger and the loop d times shorter: the dilation costs no
    time of its own. Sequences that do not fill the last subsequence step run packed (PackedSequence lengths).

    Call: ``out, h_n = m(x, hx)`` (LSTM: ``(h_n, c_n)``), input padded (T, B, F), batch_first, unbatched or a
    PackedSequence, like torch.nn's layers. h_n[l*D + dir] is layer l's state at the sequence's last step (the
    reverse direction's: at step 0). hx, if given, is the state "before the start" of every subsequence:
    h^l_{t-d} = hx[l] for t < d.

    Args: ``cell`` 'lstm', 'gru', 'rnn_tanh', 'rnn_relu', 'layernorm_lstm' or 'layernorm_gru'; ``dilations`` one
    positive int per layer (default (1, 2, 4, 8), the paper's exponentially growing dilations); ``bias``,
    ``batch_first``, ``dropout`` (between layers), ``bidirectional`` as torch.nn's. The layers are ``m.layers[l]``.
    """

    _CELLS = ("lstm", "gru", "rnn_tanh", "rnn_relu", "layernorm_lstm", "layernorm_gru")

    def __init__(self, cell: str, input_size: int, hidden_size: int, dilations=(1, 2, 4, 8), bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False, device=None,
                 dtype=None) -> None:
        super().__init__()
        if cell not in self._CELLS:
            raise ValueError(f"cell must be one of {', '.join(repr(c) for c in self._CELLS)}; got {cell!r}.")
        if isinstance(dilations, int) or not dilations or not all(
                isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in dilations):
            raise ValueError(f"dilations must be a non-empty sequence of positive integers, one per layer "
                             f"(e.g. (1, 2, 4, 8)); got {dilations!r}.")
        if not bias and cell.startswith("layernorm"):
            raise ValueError(f"bias=False is not available with cell={cell!r}: the LN shifts are its biases. "
                             "Use bias=True.")
        self.cell = cell
        self.input_size = _positive_int("input_size", input_size)
        self.hidden_size = _positive_int("hidden_size", hidden_size)
        self.dilations = tuple(dilations)
        self.num_layers = len(self.dilations)
        self.bias = bool(bias)
        self.batch_first = bool(batch_first)
        self.dropout = _probability("dropout", dropout)
        self.bidirectional = bool(bidirectional)
        D = 2 if bidirectional else 1
        factory = {"device": device, "dtype": dtype}
        mods = []
        for layer in range(self.num_layers):
            size = input_size if layer == 0 else hidden_size * D
            if cell in ("lstm", "gru"):
                make = layers.LSTM if cell == "lstm" else layers.GRU
                mods.append(make(size, hidden_size, bias=bias, bidirectional=bidirectional, **factory))
            elif cell.startswith("rnn_"):
                mods.append(layers.RNN(size, hidden_size, nonlinearity=cell[4:], bias=bias,
                                       bidirectional=bidirectional, **factory))
            else:
                make = LayerNormLSTM if cell == "layernorm_lstm" else LayerNormGRU
                mods.append(make(size, hidden_size, bidirectional=bidirectional, **factory))
        self.layers = nn.ModuleList(mods)

    @property
    def has_c(self) -> bool:
        return self.cell.endswith("lstm")

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    def extra_repr(self) -> str:
        s = f"{self.cell!r}, {self.input_size}, {self.hidden_size}, dilations={self.dilations}"
        for name, default in (("bias", True), ("batch_first", False), ("dropout", 0.0), ("bidirectional", False)):
            if getattr(self, name) != default:
                s += f", {name}={getattr(self, name)}"
        return s

    def forward(self, input, hx=None):
        D, H = self.num_directions, self.hidden_size
        packed = isinstance(input, PackedSequence)
        lengths = None
        if packed:
            if input.data.dim() != 2 or input.data.shape[1] != self.input_size:
                raise ValueError(f"DilatedRNN: PackedSequence.data must have shape (N, {self.input_size}); "
                                 f"got {tuple(input.data.shape)}.")
            x, lengths = pad_packed_sequence(input)  # (T, B, I), (B,) in the caller's order
            unbatched = False
        else:
            if not isinstance(input, Tensor):
                raise TypeError(f"DilatedRNN expects a Tensor or a PackedSequence; got {type(input).__name__}.")
            if input.dim() not in (2, 3) or input.shape[-1] != self.input_size:
                layout = "(B, T, input_size)" if self.batch_first else "(T, B, input_size)"
                raise ValueError(f"DilatedRNN: input must be 3-D {layout} or 2-D (T, input_size) with "
                                 f"input_size={self.input_size}; got shape {tuple(input.shape)}.")
            unbatched = input.dim() == 2
            x = input.unsqueeze(1) if unbatched else (input.transpose(0, 1) if self.batch_first else input)  # (T, B, I)
            if x.shape[0] == 0 or x.shape[1] == 0:
                raise ValueError(f"DilatedRNN: input must have at least one step and one sequence; "
                                 f"got shape {tuple(input.shape)}.")
        T, B = x.shape[0], x.shape[1]
        h0, c0 = self._initial_state(hx, B, x, unbatched)
        h_n, c_n = [], []
        for layer, (module, d) in enumerate(zip(self.layers, self.dilations)):
            state = None
            if h0 is not None:
                k = slice(layer * D, (layer + 1) * D)
                state = (h0[k], c0[k]) if self.has_c else h0[k]
            x, hn, cn = self._dilated(module, x, lengths, d, state)  # (T, B, D*H), (D, B, H), (D, B, H) | None
            h_n.append(hn)
            c_n.append(cn)
            if self.dropout > 0 and self.training and layer < self.num_layers - 1:
                x = F.dropout(x, self.dropout, training=True)
        h_n = torch.cat(h_n)  # (L*D, B, H)
        c_n = torch.cat(c_n) if self.has_c else None
        if packed:
            output = self._repack(x, input)
        elif unbatched:
            output, h_n = x.squeeze(1), h_n.squeeze(1)  # (T, D*H), (L*D, H)
            c_n = c_n.squeeze(1) if self.has_c else None
        else:
            output = x.transpose(0, 1) if self.batch_first else x  # (B, T, D*H) or (T, B, D*H)
        return output, ((h_n, c_n) if self.has_c else h_n)

    def _initial_state(self, hx, B, x, unbatched):
        if hx is None:
            return None, None
        states = list(hx) if self.has_c and isinstance(hx, (tuple, list)) and len(hx) == 2 else None
        if self.has_c and states is None:
            raise ValueError(f"DilatedRNN: hx must be a tuple (h0, c0) for cell={self.cell!r}; got {type(hx).__name__}.")
        if not self.has_c:
            if not isinstance(hx, Tensor):
                raise ValueError(f"DilatedRNN: hx must be a Tensor h0; got {type(hx).__name__}.")
            states = [hx]
        shape = (self.num_layers * self.num_directions, B, self.hidden_size)
        for i, s in enumerate(states):
            expected = (shape[0], shape[2]) if unbatched else shape
            if s.shape != expected:
                raise ValueError(f"DilatedRNN: {('h0', 'c0')[i]} must have shape {expected}; got {tuple(s.shape)}.")
            states[i] = s.unsqueeze(1) if unbatched else s  # (L*D, B, H)
        return states[0], (states[1] if self.has_c else None)

    def _dilated(self, module, x, lengths, d, state):
        """One layer with dilation d on x (T, B, F): (out (T, B, D*H), h_n (D, B, H), c_n (D, B, H) | None)."""
        T, B, Fdim = x.shape
        D = self.num_directions
        m = -(-T // d)  # ⌈T/d⌉ steps per subsequence
        if m * d != T:
            x = torch.cat([x, x.new_zeros(m * d - T, B, Fdim)])  # (m*d, B, F): pad the last subsequence step
        xs = x.reshape(m, d * B, Fdim)  # (m, d*B, F): column j*B + b is subsequence (j, b) = steps j, j+d, ...
        if state is not None:  # every subsequence starts from the given state
            state = tuple(s.repeat(1, d, 1) for s in state) if self.has_c else state.repeat(1, d, 1)  # (D, d*B, H)
        if lengths is None and (D == 1 or m * d == T):
            # Every subsequence whose last step is real is full length: padding at the end changes no real output
            # and, forwards, no state we return (the last real step T-1 lies in subsequence (T-1) mod d, full length).
            ys, st = module(xs, state)  # (m, d*B, D*H)
            last = torch.full((B,), T - 1, dtype=torch.long, device=x.device)
        else:
            steps = torch.arange(d, device=x.device).unsqueeze(1)  # (d, 1): subsequence j
            lens = torch.full((B,), T, dtype=torch.long, device=x.device) if lengths is None else lengths.to(x.device)
            sub = ((lens.unsqueeze(0) - steps + d - 1) // d).clamp_min(1)  # (d, B) real steps; ≥ 1 as packing asks
            packed = pack_padded_sequence(xs, sub.reshape(-1).cpu(), enforce_sorted=False)
            ys, st = module(packed, state)
            ys, _ = pad_packed_sequence(ys, total_length=m)  # (m, d*B, D*H)
            last = lens - 1
        out = ys.reshape(m * d, B, -1)[:T]  # (T, B, D*H)
        if lengths is not None:  # past a sequence's end the output is 0, as pad_packed_sequence gives
            valid = torch.arange(T, device=x.device).unsqueeze(1) < lengths.to(x.device).unsqueeze(0)  # (T, B)
            out = out * valid.unsqueeze(2).to(out.dtype)
        # Forward direction: the state at the last real step, in subsequence (last mod d); reverse: at step 0, j = 0.
        cols = [(last % d) * B + torch.arange(B, device=x.device)]
        if D == 2:
            cols.append(torch.arange(B, device=x.device))
        pick = lambda s: torch.stack([s[k].index_select(0, c) for k, c in enumerate(cols)])  # noqa: E731  (D, B, H)
        if self.has_c:
            return out, pick(st[0]), pick(st[1])
        return out, pick(st), None

    @staticmethod
    def _repack(out: Tensor, like: PackedSequence) -> PackedSequence:
        """out (T, B, D*H) in the caller's batch order → a PackedSequence laid out as ``like``."""
        batch_sizes = like.batch_sizes
        order = like.sorted_indices if like.sorted_indices is not None else torch.arange(out.shape[1])
        srt = out.index_select(1, order.to(out.device))  # (T, B, D*H) sorted by decreasing length
        rows = torch.cat([torch.arange(int(bs)) + t * out.shape[1] for t, bs in enumerate(batch_sizes.tolist())])
        data = srt.reshape(-1, out.shape[2]).index_select(0, rows.to(out.device))  # (N, D*H)
        return PackedSequence(data, batch_sizes, like.sorted_indices, like.unsorted_indices)


# -- one factory: a configuration → its recurrent layer ------------------------------------------------------------
PLAIN_CELLS = ("lstm", "gru", "rnn_tanh", "rnn_relu")  # rnnlab.layers: LSTM, GRU, RNN (tanh or ReLU)
LAYERNORM_CELLS = ("layernorm_lstm", "layernorm_gru")  # LayerNormLSTM, LayerNormGRU
ALL_CELLS = PLAIN_CELLS + LAYERNORM_CELLS


def has_cell_state(cell: str) -> bool:
    """Whether ``cell``'s state is (h, c) rather than h: the LSTMs, plain or layer-normalised."""
    return cell in ("lstm", "layernorm_lstm")


def check_dilations(dilations) -> tuple[int, ...] | None:
    """``dilations`` as a tuple of positive ints (one per layer), or None for no dilated stack."""
    if dilations is None:
        return None
    if isinstance(dilations, (str, bytes)) or not isinstance(dilations, (tuple, list)) or not dilations or not all(
            isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in dilations):
        raise ValueError(f"dilations must be a non-empty list of positive integers, one per layer (e.g. [1, 2, 4, 8]);"
                         f" got {dilations!r}. Give None for plain stacking.")
    return tuple(dilations)


def recurrent_layer(cell: str, input_size: int, hidden_size: int, num_layers: int = 1, *, batch_first: bool = False,
                    dropout: float = 0.0, bidirectional: bool = False, dilations=None, skip: bool = False,
                    skip_budget: float = 0.0, rnn_options: dict | None = None) -> nn.Module:
    """The recurrent layer a model configuration describes — the one place that maps (cell, structure) to a class.
    Every layer it returns has torch.nn's call ``out, state = m(x, hx)`` (padded or PackedSequence), ``num_layers``,
    ``hidden_size``, ``num_directions`` and ``bidirectional``; the state is (h, c) iff ``has_cell_state(cell)``.

    - cell: one of ``ALL_CELLS``: 'lstm', 'gru', 'rnn_tanh', 'rnn_relu' (``rnnlab.layers``), 'layernorm_lstm',
      'layernorm_gru' (``LayerNormLSTM`` / ``LayerNormGRU``);
    - structure: plain stacking of ``num_layers``; or ``dilations`` (one per layer, ``DilatedRNN``; it sets the
      number of layers, so ``num_layers`` must be 1 or equal its length); or ``skip=True`` (``SkipRNN`` over a plain
      cell, with the budget loss weight ``skip_budget`` λ ≥ 0, see ``budget_loss``);
    - ``rnn_options``: the regularisation keywords of ``rnnlab.layers`` (weight_drop, input_dropout, locked_dropout,
      output_dropout, recurrent_dropout, zoneout), which only the plain stacked layers implement.
    """
    if cell not in ALL_CELLS:
        raise ValueError(f"cell must be one of {', '.join(ALL_CELLS)}; got {cell!r}.")
    dilations = check_dilations(dilations)
    num_layers = _positive_int("num_layers", num_layers)
    if isinstance(skip_budget, bool) or not isinstance(skip_budget, (int, float)) or not skip_budget >= 0:
        raise ValueError(f"skip_budget must be a number >= 0 (λ of the Skip RNN's budget loss λ Σ_t u_t; 0: none); "
                         f"got {skip_budget!r}.")
    if skip_budget and not skip:
        raise ValueError(f"skip_budget={skip_budget:g} weighs the Skip RNN's update gates, and skip is off; set "
                         "skip=True or skip_budget=0.")
    if skip and dilations is not None:
        raise ValueError(f"skip and dilations={list(dilations)} are two structures of the recurrent stack (SkipRNN, "
                         "DilatedRNN) and do not combine; choose one.")
    if skip and cell not in PLAIN_CELLS:
        raise ValueError(f"skip runs SkipRNN over a plain cell ({', '.join(PLAIN_CELLS)}); got cell={cell!r}. Use a "
                         "plain cell with skip, or drop skip.")
    if dilations is not None and num_layers not in (1, len(dilations)):
        raise ValueError(f"dilations={list(dilations)} gives one dilation per layer, so {len(dilations)} layers; got "
                         f"num_layers={num_layers}. Leave num_layers at 1 or set it to {len(dilations)}.")
    options = layers.check_rnn_options(rnn_options)
    if options and (cell not in PLAIN_CELLS or dilations is not None or skip):
        what = f"cell={cell!r}" if cell not in PLAIN_CELLS else ("dilations" if dilations is not None else "skip")
        raise ValueError(f"the regularisation options ({', '.join(options)}) are implemented by the plain stacked "
                         f"layers only; got them with {what}. Drop them, or use a plain cell without dilations or "
                         "skip.")
    common = {"batch_first": batch_first, "dropout": dropout, "bidirectional": bidirectional}
    if dilations is not None:
        return DilatedRNN(cell, input_size, hidden_size, dilations, **common)
    if skip:
        return SkipRNN(cell, input_size, hidden_size, num_layers, budget=skip_budget, **common)
    if cell == "layernorm_lstm":
        return LayerNormLSTM(input_size, hidden_size, num_layers, **common)
    if cell == "layernorm_gru":
        return LayerNormGRU(input_size, hidden_size, num_layers, **common)
    if cell == "lstm":
        return layers.LSTM(input_size, hidden_size, num_layers, **common, **options)
    if cell == "gru":
        return layers.GRU(input_size, hidden_size, num_layers, **common, **options)
    return layers.RNN(input_size, hidden_size, num_layers, nonlinearity=cell[4:], **common, **options)


def structure_config(layer: nn.Module) -> dict:
    """The structure fields a model's ``config`` records for its recurrent ``layer``: ``dilations`` (a list),
    ``skip`` and ``skip_budget`` — only those that differ from plain stacking, so a plain model's config has none
    of these fields (and its checkpoints load unchanged)."""
    if isinstance(layer, DilatedRNN):
        return {"dilations": list(layer.dilations)}
    if isinstance(layer, SkipRNN):
        return {"skip": True, **({"skip_budget": layer.budget} if layer.budget else {})}
    return {}


def recurrent_modules(model: nn.Module) -> list[nn.Module]:
    """The recurrent layers of ``model`` that ``recurrent_layer`` can build, outermost only (a DilatedRNN's own
    layers are not listed apart from it)."""
    kinds = (layers.RNNBase, _StackedBase, DilatedRNN)
    found, inside = [], set()
    for m in model.modules():
        if id(m) in inside:
            continue
        if isinstance(m, kinds):
            found.append(m)
            inside.update(id(s) for s in m.modules())
    return found


def is_plain(layer: nn.Module) -> bool:
    """Whether ``layer`` is a plain stacked rnnlab layer (RNN, LSTM, GRU), the kind the exporter and the gradient
    diagnostics read."""
    return isinstance(layer, layers.RNNBase)


def budget_loss(model: nn.Module) -> Tensor | None:
    """λ Σ_t u_t of every SkipRNN in ``model`` with a budget λ > 0, from its last call (``SkipRNN.budget_loss``); None
    when there is none. A training loss adds it: ``loss = task_loss + budget_loss(model)``."""
    terms = [m.budget_loss() for m in model.modules() if isinstance(m, SkipRNN) and m.budget > 0
             and m.updates is not None]
    return sum(terms[1:], terms[0]) if terms else None


def init_recurrent_(layer: nn.Module, init: str, init_length: int | None = None) -> nn.Module:
    """``rnnlab.init``'s initialisation ``init`` ('default', 'orthogonal', 'identity' or 'chrono' with
    ``init_length``) applied to a layer from ``recurrent_layer``: to a DilatedRNN's every layer, to a SkipRNN's cell
    weights (its update gate keeps its own init), to a layer-normalised cell's W_ih and W_hh (orthogonal only:
    identity and chrono set the biases of an Elman RNN or an LSTM, and an LN cell's biases are its LN shifts)."""
    from . import init as rnn_init  # rnnlab.init imports nothing of ours; imported here to keep this module light

    if init == "default":
        return layer  # every layer is built with torch.nn's default already
    if init not in ("orthogonal", "identity", "chrono"):
        raise ValueError(f"init must be one of default, orthogonal, identity, chrono; got {init!r}.")
    targets = list(layer.layers) if isinstance(layer, DilatedRNN) else [layer]
    for target in targets:
        if isinstance(target, _LayerNormBase) and init != "orthogonal":
            raise ValueError(f"init={init!r} sets the biases of {'an Elman RNN' if init == 'identity' else 'an LSTM'}"
                             f"; a layer-normalised cell ({type(target).__name__}) has LN shifts instead. Use "
                             "init='orthogonal' or 'default' with it.")
        if init == "orthogonal":
            rnn_init.orthogonal_(target)
        elif init == "identity":
            rnn_init.identity_(target)
        else:
            rnn_init.chrono_(target, init_length)
    return layer
