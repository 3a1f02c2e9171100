"""Language models over token ids: a recurrent LM and Bengio et al.'s (2003) feed-forward n-gram LM.

Both have the same call, so one training step, one evaluation and one generator serve both:

    logits, state = model(tokens, state)      # tokens (T, B) ids → logits (T, B, V) for the NEXT token
    state = model.init_state(B)                # what a fresh stream starts from
    state = model.reorder_state(state, index)  # pick/duplicate streams along the batch (beam search)
    model.config                               # a JSON-able dict; build_model(config) rebuilds the model

The state is what the model carries from one chunk of a stream to the next: the recurrent layers' hidden state for
``RecurrentLM``; for ``NGramLM`` the last tokens it needs as context for the next chunk's first positions.
No training code here (that is ``rnnlab.train``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..layers import check_rnn_options
from ..variants import ALL_CELLS, has_cell_state, recurrent_layer, structure_config

CELLS = ALL_CELLS  # the cells the model takes: the plain four and the layer-normalised two (rnnlab.variants)


def _check_int(name: str, value, lo: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ValueError(f"{name} must be an integer >= {lo}; got {value!r}")
    return value


def _check_dropout(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"dropout must be a number in [0, 1) (the probability of zeroing an activation); "
                         f"got {value!r}")
    return float(value)


def _check_tokens(tokens: Tensor, vocab_size: int) -> None:
    if tokens.dim() != 2 or tokens.dtype != torch.long:
        raise ValueError(f"tokens must be a (T, B) tensor of int64 ids; got {tokens.dim()}-D {tokens.dtype}")


class RecurrentLM(nn.Module):
    """Embedding (or one-hot input) → dropout → stacked rnnlab RNN/LSTM/GRU (dropout between layers) → dropout →
    linear decoder → logits. Dropout is applied to the non-recurrent connections only (Zaremba et al. 2014).

    ``tie`` shares the embedding matrix with the decoder (Press & Wolf 2017; Inan et al. 2017): it needs
    ``emb == hidden``, since the decoder maps hidden vectors into the embedding's rows.

    ``rnn_options`` are the recurrent layers' regularisation keywords (``rnnlab.layers``: weight_drop,
    input_dropout, locked_dropout, output_dropout, recurrent_dropout, zoneout), e.g. AWD-LSTM's PTB recipe
    (Merity et al. 2017) ``{"weight_drop": 0.5, "input_dropout": 0.4, "locked_dropout": 0.25,
    "output_dropout": 0.4}`` with ``dropout=0`` — the locked dropouts take the places of ``dropout``'s three
    (embedding, between layers, before the decoder).

    ``cell`` is any of ``rnnlab.variants.ALL_CELLS`` (the plain four and 'layernorm_lstm', 'layernorm_gru'), and
    ``skip=True`` makes the stack a Skip RNN (``rnnlab.variants.SkipRNN``; a training loss adds its budget loss,
    weight ``skip_budget``, with ``rnnlab.variants.budget_loss``). Its ũ restarts at 1 on every call, so each TBPTT
    chunk's first step updates the state — and generation, one token per call, updates at every token.
    ``dilations`` are refused: a dilated layer l reads h_{t-d_l}, so carrying the state from one chunk to the next
    would need the last d_l states of each layer, which ``DilatedRNN`` does not return.
    """

    def __init__(self, vocab_size: int, *, cell: str = "lstm", layers: int = 1,
                 # 256 units: big enough for visible learning on characters, small enough for a 2-core CPU.
                 hidden: int = 256,
                 emb: int | None = None,  # None: the same as hidden, so that tie=True works without another option
                 dropout: float = 0.0,  # 0: small models on small data barely overfit; raise it (0.2-0.5) for PTB
                 tie: bool = False, one_hot: bool = False,
                 rnn_options: dict | None = None,  # None: the plain layers
                 dilations=None,  # refused (see the class doc); accepted as a keyword to say why
                 skip: bool = False, skip_budget: float = 0.0) -> None:  # False, 0: plain stacking
        super().__init__()
        self.vocab_size = _check_int("vocab_size", vocab_size)
        self.rnn_options = check_rnn_options(rnn_options)
        if cell not in ALL_CELLS:
            raise ValueError(f"cell must be one of {', '.join(ALL_CELLS)}; got {cell!r}")
        if dilations is not None:
            raise ValueError(f"dilations={dilations!r}: a language model carries its state from one TBPTT chunk to "
                             "the next, and a dilated layer would need its last d states per layer, which DilatedRNN "
                             "does not return; drop dilations for the LM (use skip or a plain stack)")
        self.cell, self.layers = cell, _check_int("layers", layers)
        self.hidden = _check_int("hidden", hidden)
        if one_hot:
            if emb is not None and emb != vocab_size:
                raise ValueError(f"one_hot input has size vocab_size ({vocab_size}); emb={emb} contradicts it: "
                                 "leave emb unset with one-hot input")
            if tie:
                raise ValueError("tie=True shares the embedding with the decoder, but one-hot input has no embedding; "
                                 "drop one_hot or tie")
            emb = vocab_size
        self.emb = _check_int("emb", hidden if emb is None else emb)
        self.dropout, self.tie, self.one_hot = _check_dropout(dropout), bool(tie), bool(one_hot)
        if tie and self.emb != self.hidden:
            raise ValueError(f"tie=True uses the embedding matrix (vocab × emb) as the decoder (vocab × hidden), so "
                             f"emb must equal hidden; got emb={self.emb}, hidden={self.hidden}. Set emb = hidden "
                             "or drop tie")
        self.encoder = None if one_hot else nn.Embedding(vocab_size, self.emb)
        self.drop = nn.Dropout(self.dropout)
        self.rnn = recurrent_layer(cell, self.emb, hidden, layers, dropout=self.dropout, skip=skip,
                                   skip_budget=skip_budget, rnn_options=self.rnn_options)
        self.decoder = nn.Linear(hidden, vocab_size)
        self._init_weights()
        if tie:
            self.decoder.weight = self.encoder.weight

    def _init_weights(self) -> None:
        # pytorch's word_language_model: small uniform embedding/decoder weights and a zero decoder bias make the
        # first softmax nearly uniform, so training starts at loss ≈ ln V instead of at a confident wrong guess.
        if self.encoder is not None:
            nn.init.uniform_(self.encoder.weight, -0.1, 0.1)
        nn.init.uniform_(self.decoder.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)

    @property
    def config(self) -> dict:
        config = {"kind": "rnn", "vocab_size": self.vocab_size, "cell": self.cell, "layers": self.layers,
                  "hidden": self.hidden, "emb": None if self.one_hot else self.emb, "dropout": self.dropout,
                  "tie": self.tie, "one_hot": self.one_hot}
        if self.rnn_options:  # only when used: a plain model's config (and checkpoint) has no such key
            config["rnn_options"] = dict(self.rnn_options)
        config.update(structure_config(self.rnn))  # likewise: only a Skip RNN adds its fields
        return config

    def init_state(self, batch_size: int, device=None):
        """Zeros: (h, c) for an LSTM (plain or layer-normalised), h otherwise; each (layers, B, hidden)."""
        w = self.decoder.weight
        h = torch.zeros(self.layers, batch_size, self.hidden, dtype=w.dtype, device=device or w.device)
        return (h, h.clone()) if has_cell_state(self.cell) else h

    @staticmethod
    def reorder_state(state, index: Tensor):
        """The state of streams ``index`` (batch is dim 1 of every state tensor)."""
        if isinstance(state, tuple):
            return tuple(s.index_select(1, index) for s in state)
        return state.index_select(1, index)

    def forward(self, tokens: Tensor, state=None):
        _check_tokens(tokens, self.vocab_size)
        if self.encoder is None:
            x = F.one_hot(tokens, self.vocab_size).to(self.decoder.weight.dtype)  # (T, B, V)
        else:
            x = self.encoder(tokens)  # (T, B, E)
        out, state = self.rnn(self.drop(x), state)  # (T, B, H)
        return self.decoder(self.drop(out)), state  # (T, B, V)


class NGramLM(nn.Module):
    """Bengio et al. (2003): the ``order - 1`` previous tokens' embeddings, concatenated (x), predict the next
    token through one tanh layer, ``logits = b + W x + U tanh(d + H x)``; ``W x`` (the direct connections) only
    with ``direct=True``.

    It reads the same chunked streams as the recurrent LM. Its "state" is the last ``order - 2`` input tokens of the
    previous chunk (the current token is the newest of the ``order - 1`` context tokens), so a position at the start
    of a chunk still sees its full context; at the very start of a stream the missing context is a padding token
    (id ``vocab_size``, an extra embedding row).
    """

    def __init__(self, vocab_size: int, *, order: int = 3,  # a trigram: the classic small n-gram baseline
                 emb: int = 64,  # Bengio et al. used 30-100 features per word
                 hidden: int = 256,  # as the recurrent LM's default, for comparable sizes
                 direct: bool = False, dropout: float = 0.0) -> None:
        super().__init__()
        self.vocab_size = _check_int("vocab_size", vocab_size)
        self.order = _check_int("order", order, 2)
        self.emb, self.hidden = _check_int("emb", emb), _check_int("hidden", hidden)
        self.direct, self.dropout = bool(direct), _check_dropout(dropout)
        context = self.order - 1
        self.embed = nn.Embedding(vocab_size + 1, self.emb)  # row vocab_size: "before the start of the stream"
        self.proj = nn.Linear(context * self.emb, self.hidden)  # H, d
        self.out = nn.Linear(self.hidden, vocab_size)  # U, b
        self.skip = nn.Linear(context * self.emb, vocab_size, bias=False) if direct else None  # W
        self.drop = nn.Dropout(self.dropout)

    @property
    def config(self) -> dict:
        return {"kind": "ngram", "vocab_size": self.vocab_size, "order": self.order, "emb": self.emb,
                "hidden": self.hidden, "direct": self.direct, "dropout": self.dropout}

    def init_state(self, batch_size: int, device=None):
        """(order - 2, B) padding ids: no token has been seen yet."""
        return torch.full((self.order - 2, batch_size), self.vocab_size, dtype=torch.long,
                          device=device or self.out.weight.device)

    @staticmethod
    def reorder_state(state: Tensor, index: Tensor) -> Tensor:
        return state.index_select(1, index)

    def forward(self, tokens: Tensor, state=None):
        _check_tokens(tokens, self.vocab_size)
        T, B = tokens.shape
        if state is None:
            state = self.init_state(B, tokens.device)
        seq = torch.cat([state, tokens])  # (order-2+T, B)
        ctx = seq.unfold(0, self.order - 1, 1)  # (T, B, order-1): position t sees tokens[t-order+2 .. t]
        x = self.drop(self.embed(ctx).flatten(2))  # (T, B, (order-1)*emb)
        h = torch.tanh(self.proj(x))  # (T, B, hidden)
        logits = self.out(self.drop(h))  # (T, B, V)
        if self.skip is not None:
            logits = logits + self.skip(x)
        return logits, seq[seq.shape[0] - (self.order - 2):]  # (order-2, B)


_KINDS = {"rnn": RecurrentLM, "ngram": NGramLM}


def build_model(config: dict) -> nn.Module:
    """The model a ``config`` dict describes (``model.config`` of a RecurrentLM or NGramLM)."""
    if not isinstance(config, dict) or config.get("kind") not in _KINDS:
        got = config.get("kind") if isinstance(config, dict) else config
        raise ValueError(f"model config 'kind' must be one of {', '.join(_KINDS)}; got {got!r}")
    kwargs = {k: v for k, v in config.items() if k != "kind"}
    cls = _KINDS[config["kind"]]
    try:
        return cls(**kwargs)
    except TypeError as exc:  # an unknown or missing key
        raise ValueError(f"bad {config['kind']} model config: {exc}") from None
