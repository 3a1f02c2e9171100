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
# torch.nn's ``mode`` names (the public attribute) → the engine's cell numbers (what the time loop takes).
_ENGINE_MODES = {"RNN_TANH": _RNN_TANH, "RNN_RELU": _RNN_RELU, "LSTM": _LSTM, "GRU": _GRU}
# The regularisation options, each with what its probability means (for messages and extra_repr).
_REGULARISERS = {
    "weight_drop": "the probability of zeroing a recurrent weight, DropConnect on W_hh",
    "input_dropout": "the probability of zeroing an input feature for a whole sequence, locked dropout",
    "locked_dropout": "the probability of zeroing a feature between stacked layers for a whole sequence",
    "output_dropout": "the probability of zeroing an output feature for a whole sequence, locked dropout",
    "recurrent_dropout": "the probability of zeroing a unit of h_{t-1} on its way into W_hh for a whole sequence",
    "zoneout": "the probability that a unit keeps its previous value at a step",
}


class _NoStepsError(ValueError, RuntimeError):
    """An input with no time step (T = 0). torch.nn raises RuntimeError for it, rnnlab's input checks raise
    ValueError; this is both, so code written against either catches it."""


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
    """Shared machinery of RNN, LSTM and GRU; use those classes.

    Besides the call, it carries torch.nn.RNNBase's public surface, so code written against torch.nn's layers runs
    unchanged: ``mode`` (torch.nn's cell name), ``proj_size`` (always 0), ``all_weights``, ``flatten_parameters``
    (a no-op), ``check_input``, ``get_expected_hidden_size``, ``check_hidden_size``, ``check_forward_args``,
    ``permute_hidden``, and the private lists ``_all_weights``, ``_flat_weights_names`` and ``_flat_weights`` that
    some libraries read. The lists are computed on access from the sizes and ``getattr``, never stored: they cannot
    go stale when a parameter is replaced (a parametrization, ``torch.func.functional_call``, ``.to()``).
    """

    def __init__(self, mode: str, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False, proj_size: int = 0,
                 device=None, dtype=None, *, weight_drop: float = 0.0, input_dropout: float = 0.0,
                 locked_dropout: float = 0.0, output_dropout: float = 0.0, recurrent_dropout: float = 0.0,
                 zoneout: float | tuple[float, float] = 0.0) -> None:
        super().__init__()
        if mode not in _ENGINE_MODES:
            raise ValueError(f"mode must be one of torch.nn's cell names {', '.join(map(repr, _ENGINE_MODES))}; got "
                             f"{mode!r}. Use rnnlab.RNN, LSTM or GRU rather than RNNBase itself.")
        self.mode = mode  # torch.nn's name; the engine's number is _engine_mode
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
        gate_size = _GATES[self._engine_mode] * hidden_size
        factory = {"device": device, "dtype": dtype}
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else hidden_size * num_directions
            for direction in range(num_directions):
                suffix = f"_l{layer}" + ("_reverse" if direction == 1 else "")
                params = [("weight_ih" + suffix, (gate_size, layer_input)), ("weight_hh" + suffix, (gate_size, hidden_size))]
                if bias:
                    params += [("bias_ih" + suffix, (gate_size,)), ("bias_hh" + suffix, (gate_size,))]
                for name, shape in params:
                    setattr(self, name, nn.Parameter(torch.empty(shape, **factory)))
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
            if self.mode != "LSTM" or len(zoneout) != 2:
                raise ValueError(f"zoneout as a pair is (p_h, p_c) for an LSTM's h and c; got {zoneout!r} for a "
                                 f"{kind}. Give one number" + (" (a GRU or RNN has no cell state)."
                                                                if self.mode != "LSTM" else ", or two."))
            self.zoneout_h, self.zoneout_c = (_probability("zoneout", v) for v in zoneout)
        else:
            self.zoneout_h = _probability("zoneout", zoneout)
            self.zoneout_c = self.zoneout_h if self.mode == "LSTM" else 0.0
        self.zoneout = self.zoneout_h if self.zoneout_h == self.zoneout_c or self.mode != "LSTM" \
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

    @property
    def _engine_mode(self) -> int:
        """The engine's number for this cell (what ``function.run`` takes), from torch.nn's name in ``mode``."""
        return _ENGINE_MODES[self.mode]

    # -- torch.nn.RNNBase's surface ------------------------------------------------------------------------------
    @property
    def _all_weights(self) -> list[list[str]]:
        """The parameter names per layer and direction, in torch.nn's order: ``[[weight_ih_l0, weight_hh_l0,
        bias_ih_l0, bias_hh_l0], [..._l0_reverse], [..._l1], ...]`` (no biases when ``bias=False``)."""
        kinds = ("weight_ih", "weight_hh") + (("bias_ih", "bias_hh") if self.bias else ())
        return [[f"{kind}_l{layer}" + ("_reverse" if direction == 1 else "") for kind in kinds]
                for layer in range(self.num_layers) for direction in range(self.num_directions)]

    @property
    def _flat_weights_names(self) -> list[str]:
        """``_all_weights`` flattened: every parameter name in torch.nn's order."""
        return [name for names in self._all_weights for name in names]

    @property
    def _flat_weights(self) -> list[Tensor | None]:
        """The tensors the forward runs with, in ``_flat_weights_names``' order (None for a name that is not set).

        torch.nn keeps this list as a cache that ``__setattr__``, ``_apply`` and its forward refresh; here it is read
        on access, so it is always what ``getattr`` gives now — the weight a parametrization computes
        (``torch.nn.utils.parametrize``, ``weight_norm``, ``spectral_norm``), a tensor that
        ``torch.func.functional_call`` swapped in, a parameter replaced by assignment — exactly what forward reads."""
        return [getattr(self, name, None) for name in self._flat_weights_names]

    @property
    def all_weights(self) -> list[list[Tensor]]:
        """torch.nn's ``all_weights``: per layer and direction (layer 0, layer 0 reverse, layer 1, ...), the list
        ``[weight_ih, weight_hh, bias_ih, bias_hh]`` (``[weight_ih, weight_hh]`` when ``bias=False``)."""
        return [[getattr(self, name) for name in names] for names in self._all_weights]

    def flatten_parameters(self) -> None:
        """Nothing to do; kept so that code written for torch.nn runs unchanged (a reloaded model's
        ``model.rnn.flatten_parameters()``, the call many models make at the top of forward under DataParallel).

        torch.nn's copies the weights into one contiguous cuDNN buffer on a GPU. rnnlab's engine reads each parameter
        where it is, so there is no flat buffer to rebuild (nor torch.nn's "weights are not part of single
        contiguous chunk of memory" warning to avoid)."""

    def check_input(self, input: Tensor, batch_sizes: Tensor | None) -> None:
        """torch.nn's check of the tensor its time loop reads: ``input`` is the padded 3-D batch, or a
        PackedSequence's 2-D ``data`` when ``batch_sizes`` is given. Raises ValueError when the dtype differs from the
        weights' — always: unlike torch.nn, autocast does not relax it, as rnnlab's forward does not cast — and
        RuntimeError, as torch.nn does, for the wrong rank or feature size. forward checks the same rules itself."""
        weight = self._flat_weights[0]
        if input.dtype != weight.dtype:
            raise ValueError(f"{type(self).__name__}: input dtype must equal the weights' ({weight.dtype}); got "
                             f"{input.dtype}. Convert the input, input.to({weight.dtype}), or the model, "
                             f"model.to({input.dtype}).")
        rank = 2 if batch_sizes is not None else 3
        if input.dim() != rank:
            raise RuntimeError(f"{type(self).__name__}: input must have {rank} dimensions ("
                               + ("a PackedSequence's data (N, input_size)" if rank == 2 else "a padded batch")
                               + f"); got {input.dim()}.")
        if input.size(-1) != self.input_size:
            raise RuntimeError(f"{type(self).__name__}: input.size(-1) must equal input_size, {self.input_size}; got "
                               f"{input.size(-1)}.")

    def get_expected_hidden_size(self, input: Tensor, batch_sizes: Tensor | None) -> tuple[int, int, int]:
        """The shape h0 must have for this input: (num_layers * num_directions, batch, hidden_size), the batch being
        ``batch_sizes[0]`` for a PackedSequence's data, else the input's batch dimension (0 with batch_first)."""
        if batch_sizes is not None:
            batch = int(batch_sizes[0])
        else:
            batch = input.size(0) if self.batch_first else input.size(1)
        return self.num_layers * self.num_directions, batch, self.hidden_size

    def check_hidden_size(self, hx: Tensor, expected_hidden_size: tuple[int, int, int],
                          msg: str = "Expected hidden size {}, got {}") -> None:
        """RuntimeError ``msg.format(expected, got)`` unless ``hx`` has ``expected_hidden_size`` (torch.nn's
        signature and message, which callers may replace)."""
        if hx.size() != expected_hidden_size:
            raise RuntimeError(msg.format(expected_hidden_size, list(hx.size())))

    def check_forward_args(self, input: Tensor, hidden: Tensor, batch_sizes: Tensor | None) -> None:
        """``check_input`` and ``check_hidden_size`` of the state ``hidden`` (for an LSTM, the pair (h, c))."""
        self.check_input(input, batch_sizes)
        self.check_hidden_size(hidden, self.get_expected_hidden_size(input, batch_sizes))

    def permute_hidden(self, hx: Tensor, permutation: Tensor | None) -> Tensor:
        """``hx`` with its batch dimension (1) in the order ``permutation`` (None: as it is) — how torch.nn moves a
        state between the caller's batch order and a PackedSequence's sorted one."""
        if permutation is None:
            return hx
        return hx.index_select(1, permutation)

    def __setstate__(self, state: dict) -> None:
        """Unpickling a whole model (``torch.load``). A layer pickled before ``mode`` held torch.nn's name stored the
        engine's number there and a ``_flat_weights_names`` list, now computed: both are brought up to date."""
        state = dict(state)
        state.pop("_flat_weights_names", None)
        if isinstance(state.get("mode"), int):
            state["mode"] = {number: name for name, number in _ENGINE_MODES.items()}[state["mode"]]
        super().__setstate__(state)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if self.mode == "RNN_RELU":
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
        has_c = self.mode == "LSTM"
        D, L, H = self.num_directions, self.num_layers, self.hidden_size
        packed = isinstance(input, PackedSequence)
        x, batch_sizes, sorted_idx, unsorted_idx, T, B, unbatched = flat_input(self, input, empty_batch=True)
        h0, c0 = self._initial_state(hx, B, x, unbatched, sorted_idx)  # x: (N, I); h0, c0: (L*D, B, H)
        if B == 0:
            return self._empty_batch(x, h0, c0, T)

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
                out, hn, cn = function.run(self._engine_mode, d == 1, batch_sizes, x, h0[k],
                                           c0[k] if has_c else x.new_empty(0), w_ih, w_hh, b_ih, b_hh, slot=slot,
                                           **options)
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

    def _empty_batch(self, x: Tensor, h0: Tensor, c0: Tensor, T: int):
        """forward of a padded batch of no sequences — x (0, I), h0 and c0 (L*D, 0, H) — answered as torch.nn
        answers it: output (T, 0, D*H) (batch_first: (0, T, D*H)) and states (L*D, 0, H), all empty.

        The engine is not called (it has no rows to loop over). Each layer and direction computes one step's affine
        maps on the no rows instead, ``x W_ih^T + b_ih + h0 W_hh^T + b_hh`` (0, G*H): empty, but it ties the input,
        the initial state and every parameter into the graph, so backward runs and leaves gradients of zeros (not
        None) everywhere, as torch.nn's does — an optimizer then steps exactly as after torch.nn's empty batch. No
        dropout mask is drawn."""
        has_c = self.mode == "LSTM"
        D, H = self.num_directions, self.hidden_size
        h_n, c_n = [], []
        for layer in range(self.num_layers):
            outs = []
            for d in range(D):
                k = layer * D + d
                w_ih, w_hh, b_ih, b_hh = self._weights(layer, d)
                gates = F.linear(x, w_ih, b_ih if self.bias else None) \
                    + F.linear(h0[k], w_hh, b_hh if self.bias else None)  # (0, G*H)
                h = gates[:, :H]  # (0, H)
                outs.append(h)
                h_n.append(h)
                c_n.append(c0[k] + h if has_c else None)
            x = torch.cat(outs, dim=1)  # (0, D*H)
        output = x.view(T, 0, D * H)  # (T, 0, D*H)
        if self.batch_first:
            output = output.transpose(0, 1)  # (0, T, D*H)
        h_n = torch.stack(h_n)  # (L*D, 0, H)
        return output, ((h_n, torch.stack(c_n)) if has_c else h_n)

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
        return initial_state(self, hx, B, x, unbatched, sorted_idx, has_c=self.mode == "LSTM")

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
        super().__init__("RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU", input_size, hidden_size, num_layers,
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
        super().__init__("LSTM", input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         proj_size, device, dtype, weight_drop=weight_drop, input_dropout=input_dropout,
                         locked_dropout=locked_dropout, output_dropout=output_dropout,
                         recurrent_dropout=recurrent_dropout, zoneout=zoneout)

    def get_expected_cell_size(self, input: Tensor, batch_sizes: Tensor | None) -> tuple[int, int, int]:
        """The shape c0 must have: (num_layers * num_directions, batch, hidden_size), as h0 (no projection here)."""
        return self.get_expected_hidden_size(input, batch_sizes)

    def check_forward_args(self, input: Tensor, hidden: tuple[Tensor, Tensor],  # type: ignore[override]
                           batch_sizes: Tensor | None) -> None:
        """``check_input``, then the shapes of h0 and c0 in ``hidden`` = (h0, c0), with torch.nn's messages."""
        self.check_input(input, batch_sizes)
        self.check_hidden_size(hidden[0], self.get_expected_hidden_size(input, batch_sizes),
                               "Expected hidden[0] size {}, got {}")
        self.check_hidden_size(hidden[1], self.get_expected_cell_size(input, batch_sizes),
                               "Expected hidden[1] size {}, got {}")

    def permute_hidden(self, hx: tuple[Tensor, Tensor],  # type: ignore[override]
                       permutation: Tensor | None) -> tuple[Tensor, Tensor]:
        """``RNNBase.permute_hidden`` of h and of c."""
        if permutation is None:
            return hx
        return hx[0].index_select(1, permutation), hx[1].index_select(1, permutation)


class GRU(RNNBase):
    """GRU with torch.nn.GRU's API (gates r, z, n; ``b_hn`` inside the reset product), plus the regularisation
    keywords of the module doc (``zoneout`` is one number; ``recurrent_dropout`` masks the h_{t-1} of W_hh's three
    products, not the ``z ⊙ h_{t-1}`` term)."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 device=None, dtype=None, *, weight_drop: float = 0.0, input_dropout: float = 0.0,
                 locked_dropout: float = 0.0, output_dropout: float = 0.0, recurrent_dropout: float = 0.0,
                 zoneout: float = 0.0) -> None:
        super().__init__("GRU", input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, 0,
                         device, dtype, weight_drop=weight_drop, input_dropout=input_dropout,
                         locked_dropout=locked_dropout, output_dropout=output_dropout,
                         recurrent_dropout=recurrent_dropout, zoneout=zoneout)


def safe_globals(*extra: type) -> list[type]:
    """The classes ``torch.load(path, weights_only=True)`` must be allowed to rebuild a whole pickled model
    (``torch.save(model)``) that holds rnnlab layers, plus ``extra`` (your own model classes, any other torch.nn
    class it holds). For ``torch.serialization.safe_globals`` (a context manager) or ``add_safe_globals`` (for the
    process)::

        with torch.serialization.safe_globals(rnnlab.safe_globals(MyLM)):
            model = torch.load("model.pt", weights_only=True)

    The list: rnnlab's layers (RNN, LSTM, GRU and the variants LayerNormLSTM, LayerNormGRU, SkipRNN, DilatedRNN),
    its models (RecurrentLM, NGramLM, SequenceClassifier, SequenceTagger, Seq2Seq with its Attention,
    ConditionalDecoder, BiRNNTagger), and the torch.nn classes those models are built from or that usually hold a
    layer (Embedding, Linear, Dropout, Sequential, ModuleList, ModuleDict) — so a saved rnnlab model loads with this
    alone. weights_only loading rebuilds only allowed classes and refuses anything else; when it names a missing
    one, pass that class in ``extra`` (``torch.serialization.get_unsafe_globals_in_checkpoint(path)`` lists them
    all). Loading a state_dict (``model.load_state_dict(torch.load(path))``) needs none of this."""
    from . import variants  # here, not at the top: both import this module
    from .models import classifier, lm, seq2seq, tagger

    return [RNN, LSTM, GRU, variants.LayerNormLSTM, variants.LayerNormGRU, variants.SkipRNN, variants.DilatedRNN,
            lm.RecurrentLM, lm.NGramLM, classifier.SequenceClassifier, classifier.SequenceTagger, seq2seq.Seq2Seq,
            seq2seq.Attention, seq2seq.ConditionalDecoder, tagger.BiRNNTagger,
            nn.Embedding, nn.Linear, nn.Dropout, nn.Sequential, nn.ModuleList, nn.ModuleDict, *extra]


def flat_input(module: nn.Module, input, empty_batch: bool = False) -> tuple:
    """A recurrent layer's input as its time loop reads it: ``(x (N, I), batch_sizes (T,), sorted_idx, unsorted_idx,
    T, B, unbatched)`` — x holds step t's rows together (a padded (T, B, I) input becomes T*B rows; a PackedSequence
    is taken as it is, T None). Checks what torch.nn checks — a Tensor or PackedSequence, rank 2 or 3, the feature
    size, at least one step (``_NoStepsError``) and one sequence — and that the dtype equals the parameters'.
    ``empty_batch`` lets a padded batch of no sequences (B = 0) through, for a caller that answers it without the
    engine (``RNNBase``; torch.nn accepts it). ``module`` has torch.nn's ``input_size`` and ``batch_first`` and a
    ``_shape_error``; shared by ``RNNBase`` and the variant layers."""
    name = type(module).__name__
    T = None
    if isinstance(input, PackedSequence):
        x, batch_sizes, sorted_idx, unsorted_idx = input
        if batch_sizes.numel() == 0:  # built by hand: torch's packing functions refuse empty input
            raise _NoStepsError(f"{name}: a PackedSequence must have at least one time step; got empty batch_sizes. "
                                "Leave empty batches out before packing.")
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
        if T == 0:  # torch.nn refuses it too ("Expected sequence length to be larger than 0")
            raise _NoStepsError(f"{name}: input must have at least one time step; got shape {tuple(input.shape)} "
                                f"(time is dimension {1 if module.batch_first and not unbatched else 0}). Leave empty "
                                "sequences out of the call.")
        if B == 0 and not empty_batch:
            raise ValueError(f"{name}: input must have at least one sequence; got shape {tuple(input.shape)}.")
        x = seq.reshape(T * B, module.input_size)  # (T*B, I): step t owns rows [t*B, (t+1)*B)
        batch_sizes = torch.full((T,), B, dtype=torch.int64)
        sorted_idx = unsorted_idx = None
    w0 = next(module.parameters())
    if x.dtype != w0.dtype:
        raise ValueError(f"{name}: input dtype must equal the parameters' ({w0.dtype}); got {x.dtype}. "
                         f"Convert one of them, e.g. module.to({x.dtype}).")
    return x, batch_sizes, sorted_idx, unsorted_idx, T, B, unbatched
