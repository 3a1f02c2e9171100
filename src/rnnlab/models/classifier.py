"""Sequence models over padded batches: many-to-one (classification or regression) and many-to-many (one output
per step). No training code here (that is ``rnnlab.train.supervised``).

    SequenceClassifier   x (B, T) ids or (B, T, F) features, lengths (B,) → (B, n_outputs)
                         input → stacked, optionally bidirectional rnnlab RNN/LSTM/GRU → pooling over the valid
                         steps → dropout → linear head. task="classify": logits (no softmax; cross-entropy takes
                         them); task="regress": the predicted values themselves (MSE).
    SequenceTagger       x, lengths → (B, T, n_outputs): the same encoder, a linear head at every step
                         (zeros at padded steps); task="classify": logits per step, task="regress": values per
                         step (e.g. the next value of a numeric series at every step)

    model.config         a JSON-able dict; build(config) rebuilds the model (checkpoints store it)

Input: token ids through an embedding (``vocab_size``), or one-hot (``vocab_size, one_hot=True``), or real-valued
features (``input_size``; e.g. the adding problem's (value, marker) pairs). Batches are batch first and padded;
``lengths`` says where each sequence ends. The batch is packed (``pack_padded_sequence``) before the recurrent
layers, so padding is never read: a sequence gets the same output alone as in a batch padded to any length.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ..layers import check_rnn_options
from ..variants import ALL_CELLS, check_dilations, init_recurrent_, recurrent_layer, structure_config

CELLS = ALL_CELLS  # the cells the encoder takes, as the language model (rnnlab.variants)
POOLINGS = ("last", "mean", "max")
TASKS = ("classify", "regress")
INITS = ("default", "orthogonal", "identity", "chrono")


def _check_int(name: str, value, lo: int = 1, fix: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ValueError(f"{name} must be an integer >= {lo}; got {value!r}" + (f". {fix}" if fix else ""))
    return value


def _check_choice(name: str, value, choices: tuple) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
    return value


class _Encoder(nn.Module):
    """Input stage and recurrent stack shared by the classifier and the tagger."""

    def __init__(self, *, vocab_size: int | None, input_size: int | None, one_hot: bool, emb: int | None,
                 cell: str, hidden: int, layers: int, bidirectional: bool, dropout: float, init: str,
                 rnn_options: dict | None = None, init_length: int | None = None, dilations=None,
                 skip: bool = False, skip_budget: float = 0.0) -> None:
        super().__init__()
        self.rnn_options = check_rnn_options(rnn_options)
        if (vocab_size is None) == (input_size is None):
            raise ValueError(f"give exactly one of vocab_size (token ids in) and input_size (real-valued features "
                             f"in); got vocab_size={vocab_size!r}, input_size={input_size!r}")
        self.vocab_size = None if vocab_size is None else _check_int("vocab_size", vocab_size)
        self.input_size = None if input_size is None else _check_int("input_size", input_size)
        self.one_hot = bool(one_hot)
        if self.input_size is not None and (one_hot or emb is not None):
            raise ValueError(f"one_hot and emb apply to token ids (vocab_size); with input_size={input_size} the "
                             f"features go straight into the recurrent layers; got one_hot={one_hot!r}, emb={emb!r}. "
                             "Drop them")
        if self.one_hot and emb is not None:
            raise ValueError(f"one_hot input has size vocab_size ({vocab_size}) and no embedding; got emb={emb!r}. "
                             "Leave emb unset with one_hot=True")
        self.cell = _check_choice("cell", cell, ALL_CELLS)
        self.hidden = _check_int("hidden", hidden)
        self.layers = _check_int("layers", layers)
        dilations = check_dilations(dilations)
        self.bidirectional = bool(bidirectional)
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
            raise ValueError(f"dropout must be a number in [0, 1) (the probability of zeroing an activation); "
                             f"got {dropout!r}")
        self.dropout = float(dropout)
        self.init = _check_choice("init", init, INITS)
        if init == "identity" and not cell.startswith("rnn_"):
            raise ValueError(f"init='identity' is the IRNN initialisation (Le et al. 2015) of an Elman RNN; got "
                             f"cell={cell!r}. Use cell='rnn_relu' with it, or init='orthogonal' for LSTM/GRU")
        if init == "chrono" and cell != "lstm":  # layernorm_lstm too: its biases are its LN shifts
            raise ValueError(f"init='chrono' (Tallec & Ollivier 2018) sets an LSTM's forget- and input-gate biases; "
                             f"got cell={cell!r}. Use cell='lstm' with it")
        self.init_length = _check_int("init_length", init_length, 3, "init='chrono' needs the longest dependency "
                                      "in steps, e.g. the sequence length") if init == "chrono" else None
        if self.vocab_size is not None and not self.one_hot:
            self.emb = _check_int("emb", hidden if emb is None else emb)  # None: as hidden, as RecurrentLM does
            self.embedding = nn.Embedding(self.vocab_size, self.emb)
        else:
            self.emb = None
            self.embedding = None
        rnn_in = self.input_size if self.input_size is not None else (self.emb or self.vocab_size)
        self.rnn = recurrent_layer(cell, rnn_in, hidden, self.layers, batch_first=True, dropout=self.dropout,
                                   bidirectional=self.bidirectional, dilations=dilations, skip=skip,
                                   skip_budget=skip_budget, rnn_options=self.rnn_options)
        self.layers = self.rnn.num_layers  # a dilated stack has one layer per dilation
        init_recurrent_(self.rnn, init, self.init_length)
        self.drop = nn.Dropout(self.dropout)
        self.features = hidden * (2 if self.bidirectional else 1)  # D*H: what the head reads

    def _encoder_config(self) -> dict:
        config = {"vocab_size": self.vocab_size, "input_size": self.input_size, "one_hot": self.one_hot,
                  "emb": self.emb, "cell": self.cell, "hidden": self.hidden, "layers": self.layers,
                  "bidirectional": self.bidirectional, "dropout": self.dropout, "init": self.init}
        if self.init_length is not None:
            config["init_length"] = self.init_length
        if self.rnn_options:  # only when used: a plain model's config (and checkpoint) has no such key
            config["rnn_options"] = dict(self.rnn_options)
        config.update(structure_config(self.rnn))  # likewise: dilations / skip only when used
        return config

    def _inputs(self, x: Tensor) -> Tensor:
        if self.input_size is not None:
            if x.dim() != 3 or x.shape[2] != self.input_size or not x.is_floating_point():
                raise ValueError(f"x must be a (B, T, {self.input_size}) float tensor of features; got "
                                 f"{x.dim()}-D {x.dtype} of shape {tuple(x.shape)}")
            return x  # (B, T, F)
        if x.dim() != 2 or x.dtype != torch.long:
            raise ValueError(f"x must be a (B, T) tensor of int64 token ids; got {x.dim()}-D {x.dtype} of shape "
                             f"{tuple(x.shape)}")
        if self.embedding is not None:
            return self.embedding(x)  # (B, T, E)
        return F.one_hot(x, self.vocab_size).to(next(self.rnn.parameters()).dtype)  # (B, T, V)

    def encode(self, x: Tensor, lengths: Tensor | None):
        """(out (B, T, D*H) with zeros at padded steps, mask (B, T) of valid steps, last (B, D*H)): ``last`` is
        the forward direction's state at each sequence's last valid step, then (bidirectional) the backward
        direction's state at step 0 — both have read the whole sequence."""
        feats = self._inputs(x)  # (B, T, I)
        B, T = feats.shape[:2]
        if B == 0 or T == 0:
            raise ValueError(f"x must hold at least one sequence of at least one step; got shape {tuple(x.shape)}")
        if lengths is None:
            lengths = torch.full((B,), T, dtype=torch.long)
        lengths = torch.as_tensor(lengths)
        if lengths.shape != (B,) or lengths.is_floating_point() or lengths.dtype == torch.bool:
            raise ValueError(f"lengths must be a (B,) = ({B},) integer tensor; got {lengths.dtype} of shape "
                             f"{tuple(lengths.shape)}")
        lengths = lengths.to("cpu", torch.long)  # pack_padded_sequence wants them on the CPU
        if int(lengths.min()) < 1 or int(lengths.max()) > T:
            raise ValueError(f"every length must be in [1, T] = [1, {T}] (T: the padded length of x); got lengths "
                             f"from {int(lengths.min())} to {int(lengths.max())}")
        # packed.data: (N, I), N = sum(lengths): only the valid steps, so padding never reaches the layers
        packed = pack_padded_sequence(feats, lengths, batch_first=True, enforce_sorted=False)
        out, state = self.rnn(packed)  # out.data (N, D*H); h_n (L*D, B, H)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=T)  # (B, T, D*H), zeros at padding
        h_n = state[0] if isinstance(state, tuple) else state  # (L*D, B, H), in the caller's batch order
        D = 2 if self.bidirectional else 1
        last = h_n[-D:].transpose(0, 1).reshape(B, D * self.hidden)  # (B, D*H): the last layer's directions
        mask = torch.arange(T, device=out.device)[None, :] < lengths.to(out.device)[:, None]  # (B, T)
        return out, mask, last


class SequenceClassifier(_Encoder):
    """Many-to-one: ``model(x, lengths) -> (B, n_outputs)``.

    x: (B, T) int64 token ids (``vocab_size``; embedding, or one-hot with ``one_hot=True``) or (B, T, input_size)
    float features (``input_size``); lengths: (B,) valid steps per sequence (None: all T).
    Pooling of the last layer's outputs over the valid steps: ``last`` (the forward direction's state at the last
    valid step, concatenated with the backward direction's state at step 0 when bidirectional), ``mean`` or
    ``max``. Then dropout and a linear head: logits for ``task="classify"`` (``n_outputs`` classes), values for
    ``task="regress"`` (``n_outputs`` numbers, no activation). ``rnn_options``: the recurrent layers' regularisation
    keywords (``rnnlab.layers``: weight_drop, input_dropout, locked_dropout, output_dropout, recurrent_dropout,
    zoneout). ``cell`` is any of ``rnnlab.variants.ALL_CELLS``; ``dilations`` (one per layer) makes the stack a
    ``DilatedRNN``, ``skip=True`` a ``SkipRNN`` (budget loss weight ``skip_budget``; ``rnnlab.variants``). Every
    structure reads the batch packed, so padding still changes no prediction.
    """

    def __init__(self, n_outputs: int, *, vocab_size: int | None = None, input_size: int | None = None,
                 one_hot: bool = False,
                 emb: int | None = None,  # None: the same as hidden (RecurrentLM's rule)
                 cell: str = "lstm",  # gated: it keeps a bit or a value over many steps where an Elman RNN forgets
                 hidden: int = 128,  # ample for parity/adding/copy at the CLI's lengths, quick on a 2-core CPU
                 layers: int = 1,  # one layer solves the memory tasks; stack more for harder data
                 bidirectional: bool = False,
                 pooling: str = "last",  # the classic many-to-one readout: the state after the whole sequence
                 dropout: float = 0.0,  # generated data never repeats, so nothing to regularise against
                 task: str = "classify",
                 init: str = "default",  # torch.nn's uniform init; 'identity' makes an IRNN
                 rnn_options: dict | None = None,  # None: the plain layers
                 init_length: int | None = None,  # init='chrono' only: the longest dependency, in steps
                 dilations=None,  # None: plain stacking; one dilation per layer makes a DilatedRNN
                 skip: bool = False, skip_budget: float = 0.0) -> None:  # True: a SkipRNN, budget loss weight λ
        super().__init__(vocab_size=vocab_size, input_size=input_size, one_hot=one_hot, emb=emb, cell=cell,
                         hidden=hidden, layers=layers, bidirectional=bidirectional, dropout=dropout, init=init,
                         rnn_options=rnn_options, init_length=init_length, dilations=dilations, skip=skip,
                         skip_budget=skip_budget)
        self.task = _check_choice("task", task, TASKS)
        self.n_outputs = _check_int("n_outputs", n_outputs, 2 if task == "classify" else 1,
                                    "A classifier needs at least two classes" if task == "classify" else "")
        self.pooling = _check_choice("pooling", pooling, POOLINGS)
        self.head = nn.Linear(self.features, self.n_outputs)

    @property
    def config(self) -> dict:
        return {"kind": "sequence_classifier", "n_outputs": self.n_outputs, **self._encoder_config(),
                "pooling": self.pooling, "task": self.task}

    def pool(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """The pooled features the head reads: (B, D*H)."""
        out, mask, last = self.encode(x, lengths)  # (B, T, D*H), (B, T), (B, D*H)
        if self.pooling == "last":
            return last
        m = mask[..., None]  # (B, T, 1)
        if self.pooling == "mean":
            return (out * m).sum(1) / m.sum(1)  # (B, D*H)
        return out.masked_fill(~m, float("-inf")).amax(1)  # (B, D*H)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        return self.head(self.drop(self.pool(x, lengths)))  # (B, n_outputs)

    @torch.no_grad()
    def predict(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Class ids (B,) for ``classify``, values (B, n_outputs) for ``regress``; in eval mode."""
        was = self.training
        self.eval()
        try:
            out = self(x, lengths)  # (B, n_outputs)
        finally:
            self.train(was)
        return out.argmax(1) if self.task == "classify" else out  # (B,) or (B, n_outputs)


class SequenceTagger(_Encoder):
    """Many-to-many: ``model(x, lengths) -> (B, T, n_outputs)`` at every step (zeros at padded steps), from the same
    input stage and recurrent stack as ``SequenceClassifier`` (all its options but pooling): logits for
    ``task="classify"`` (``n_outputs`` classes), values for ``task="regress"`` (``n_outputs`` numbers per step, no
    activation; MSE)."""

    def __init__(self, n_outputs: int, *, vocab_size: int | None = None, input_size: int | None = None,
                 one_hot: bool = False, emb: int | None = None, cell: str = "lstm", hidden: int = 128,
                 layers: int = 1, bidirectional: bool = False, dropout: float = 0.0, init: str = "default",
                 task: str = "classify", rnn_options: dict | None = None, init_length: int | None = None,
                 dilations=None, skip: bool = False, skip_budget: float = 0.0) -> None:
        # The defaults and their reasons are SequenceClassifier's.
        super().__init__(vocab_size=vocab_size, input_size=input_size, one_hot=one_hot, emb=emb, cell=cell,
                         hidden=hidden, layers=layers, bidirectional=bidirectional, dropout=dropout, init=init,
                         rnn_options=rnn_options, init_length=init_length, dilations=dilations, skip=skip,
                         skip_budget=skip_budget)
        self.task = _check_choice("task", task, TASKS)
        self.n_outputs = _check_int("n_outputs", n_outputs, 2 if task == "classify" else 1,
                                    "The per-step head classifies; give at least two classes" if task == "classify"
                                    else "")
        self.head = nn.Linear(self.features, self.n_outputs)

    @property
    def config(self) -> dict:
        return {"kind": "sequence_tagger", "n_outputs": self.n_outputs, **self._encoder_config(), "task": self.task}

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        out, mask, _ = self.encode(x, lengths)  # (B, T, D*H), (B, T)
        logits = self.head(self.drop(out))  # (B, T, n_outputs)
        return logits.masked_fill(~mask[..., None], 0.0)  # (B, T, n_outputs)

    @torch.no_grad()
    def predict(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Class ids (B, T) at every step for ``classify``, values (B, T, n_outputs) for ``regress`` (meaningless
        at padded steps); in eval mode."""
        was = self.training
        self.eval()
        try:
            out = self(x, lengths)  # (B, T, n_outputs)
        finally:
            self.train(was)
        return out.argmax(-1) if self.task == "classify" else out  # (B, T) or (B, T, n_outputs)


_KINDS = {"sequence_classifier": SequenceClassifier, "sequence_tagger": SequenceTagger}


def build(config: dict) -> nn.Module:
    """The model a ``config`` dict describes (``model.config`` of a SequenceClassifier or SequenceTagger)."""
    if not isinstance(config, dict) or config.get("kind") not in _KINDS:
        got = config.get("kind") if isinstance(config, dict) else config
        raise ValueError(f"model config 'kind' must be one of {', '.join(_KINDS)}; got {got!r}")
    kwargs = {k: v for k, v in config.items() if k != "kind"}
    try:
        return _KINDS[config["kind"]](**kwargs)
    except TypeError as exc:  # an unknown or missing key
        raise ValueError(f"bad {config['kind']} model config: {exc}") from None
