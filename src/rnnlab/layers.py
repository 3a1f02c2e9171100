"""RNN, LSTM and GRU layers with torch.nn's constructor, call, parameter names and shapes — so existing code swaps
``torch.nn.LSTM`` for ``rnnlab.LSTM`` and a state_dict loads both ways — running rnnlab's own cells and BPTT.

Stacking, directions, PackedSequence and dropout between layers live here; time lives in ``engine/``.
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


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer; got {value!r}.")
    return value


class RNNBase(nn.Module):
    """Shared machinery of RNN, LSTM and GRU; use those classes."""

    def __init__(self, mode: int, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False, proj_size: int = 0,
                 device=None, dtype=None) -> None:
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
        return s

    # -- the call -----------------------------------------------------------------------------------------------
    def _shape_error(self, what: str, expected, got) -> ValueError:
        return ValueError(f"{type(self).__name__}: {what} must have shape {tuple(expected)}; got {tuple(got)}.")

    def forward(self, input, hx=None):
        has_c = self.mode == _LSTM
        D, L, H = self.num_directions, self.num_layers, self.hidden_size
        packed = isinstance(input, PackedSequence)
        unbatched = False
        if packed:
            x, batch_sizes, sorted_idx, unsorted_idx = input
            B = int(batch_sizes[0])
            if x.dim() != 2 or x.shape[1] != self.input_size:
                raise self._shape_error("PackedSequence.data", ("N", self.input_size), x.shape)
        else:
            if not isinstance(input, Tensor):
                raise TypeError(f"{type(self).__name__} expects a Tensor or a PackedSequence; got {type(input).__name__}.")
            if input.dim() not in (2, 3):
                layout = "(B, T, input_size)" if self.batch_first else "(T, B, input_size)"
                raise ValueError(f"{type(self).__name__}: input must be 3-D {layout} or 2-D (T, input_size); "
                                 f"got {input.dim()}-D of shape {tuple(input.shape)}.")
            if input.shape[-1] != self.input_size:
                expected = list(input.shape[:-1]) + [self.input_size]
                raise self._shape_error("input", expected, input.shape)
            unbatched = input.dim() == 2
            seq = input.unsqueeze(1) if unbatched else (input.transpose(0, 1) if self.batch_first else input)  # (T, B, I)
            T, B = seq.shape[0], seq.shape[1]
            if T == 0 or B == 0:
                raise ValueError(f"{type(self).__name__}: input must have at least one step and one sequence; "
                                 f"got shape {tuple(input.shape)}.")
            x = seq.reshape(T * B, self.input_size)  # (T*B, I): step t owns rows [t*B, (t+1)*B)
            batch_sizes = torch.full((T,), B, dtype=torch.int64)
            sorted_idx = unsorted_idx = None
        w0 = self.weight_ih_l0
        if x.dtype != w0.dtype:
            raise ValueError(f"{type(self).__name__}: input dtype must equal the parameters' ({w0.dtype}); got {x.dtype}. "
                             f"Convert one of them, e.g. module.to({x.dtype}).")
        h0, c0 = self._initial_state(hx, B, x, unbatched, sorted_idx)

        slot_probe = active_probe()
        h_n, c_n = [], []
        for layer in range(L):
            outs = []
            for d in range(D):
                k = layer * D + d
                slot = slot_probe.slot(self, layer, d) if slot_probe is not None else None
                out, hn, cn = function.run(self.mode, d == 1, batch_sizes, x, h0[k], c0[k] if has_c else x.new_empty(0),
                                           *self._weights(layer, d), slot=slot)
                outs.append(out)  # (N, H)
                h_n.append(hn)
                c_n.append(cn)
            x = outs[0] if D == 1 else torch.cat(outs, dim=1)  # (N, D*H)
            if self.dropout > 0 and self.training and layer < L - 1:
                x = F.dropout(x, self.dropout, training=True)
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

    def _initial_state(self, hx, B, x, unbatched, sorted_idx):
        has_c = self.mode == _LSTM
        shape = (self.num_layers * self.num_directions, B, self.hidden_size)
        if hx is None:
            zeros = torch.zeros(shape, dtype=x.dtype, device=x.device)
            return zeros, zeros
        if has_c:
            if not (isinstance(hx, (tuple, list)) and len(hx) == 2):
                raise ValueError("LSTM: hx must be a tuple (h0, c0); got " + type(hx).__name__ + ".")
            states = list(hx)
        else:
            if not isinstance(hx, Tensor):
                raise ValueError(f"{type(self).__name__}: hx must be a Tensor h0; got {type(hx).__name__}.")
            states = [hx]
        for i, s in enumerate(states):
            name = ("h0", "c0")[i]
            expected = (shape[0], shape[2]) if unbatched else shape
            if s.shape != expected:
                raise self._shape_error(name, expected, s.shape)
            if s.dtype != x.dtype:
                raise ValueError(f"{type(self).__name__}: {name} dtype must equal the input's ({x.dtype}); got {s.dtype}.")
            if unbatched:
                s = s.unsqueeze(1)
            if sorted_idx is not None:  # the engine sees sequences sorted by length
                s = s.index_select(1, sorted_idx)
            states[i] = s
        return states[0], (states[1] if has_c else states[0])

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


class RNN(RNNBase):
    """Elman RNN, ``h_t = f(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)`` with f = tanh or ReLU; torch.nn.RNN's API."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, nonlinearity: str = "tanh",
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 device=None, dtype=None) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu'; got {nonlinearity!r}.")
        self.nonlinearity = nonlinearity
        super().__init__(_RNN_TANH if nonlinearity == "tanh" else _RNN_RELU, input_size, hidden_size, num_layers,
                         bias, batch_first, dropout, bidirectional, 0, device, dtype)


class LSTM(RNNBase):
    """LSTM with torch.nn.LSTM's API (gates i, f, g, o); ``proj_size`` must be 0."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False, proj_size: int = 0,
                 device=None, dtype=None) -> None:
        super().__init__(_LSTM, input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         proj_size, device, dtype)


class GRU(RNNBase):
    """GRU with torch.nn.GRU's API (gates r, z, n; ``b_hn`` inside the reset product)."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 device=None, dtype=None) -> None:
        super().__init__(_GRU, input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, 0,
                         device, dtype)
