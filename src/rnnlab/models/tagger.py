"""A sequence tagger (part of speech): one tag per word, read off a bidirectional recurrent network.

    word ids ─▶ embedding ────────────────────────────┐
    char ids ─▶ char embedding ─▶ char BiLSTM/BiGRU ─▶ ⊕ ─▶ dropout ─▶ stacked BiLSTM ─▶ dropout ─▶ linear ─▶ logits
               (each word's characters; its final       (over the sentence, packed: padding is never read)
                states of both directions)

The character features (Ling et al. 2015; Plank et al. 2016) give a word unseen in training — which the word
embedding can only map to ``<unk>`` — a representation from its spelling: suffixes (-ly, -ing, -ed), capitals,
digits, hyphens. Sentences of different lengths share a batch through ``PackedSequence``, so a sentence's tags do
not depend on what else is in its batch or how much padding it gets.

    logits = model(words, chars, lengths)   # words (B, T), chars (B, T, C), lengths (B,) → logits (B, T, tags)
    model.config                             # a JSON-able dict; build_tagger(config) rebuilds the model

No training code here (that is ``rnnlab.train.tagging``).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ..layers import GRU, LSTM, check_rnn_options
from ..variants import check_dilations, recurrent_layer, structure_config

CHAR_CELLS = ("lstm", "gru")  # the small character BiRNN stays a plain layer
CELLS = ("lstm", "gru", "layernorm_lstm", "layernorm_gru")  # the sentence BiRNN: gated cells, plain or LN
_RNN = {"lstm": LSTM, "gru": GRU}


def _check_int(name: str, value, lo: int = 1, fix: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ValueError(f"{name} must be an integer >= {lo}; got {value!r}{fix}")
    return value


def _check_prob(name: str, value, meaning: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"{name} must be a number in [0, 1) ({meaning}); got {value!r}. Use e.g. 0.33, or 0 for "
                         "none")
    return float(value)


def _check_cell(name: str, value, cells: tuple = CELLS) -> str:
    if value not in cells:
        raise ValueError(f"{name} must be one of {', '.join(cells)}; got {value!r}")
    return value


class BiRNNTagger(nn.Module):
    """Word embedding ⊕ character-level word features → stacked bidirectional rnnlab LSTM (or GRU) → dropout →
    linear → tag logits.

    ``char_hidden=0`` leaves the character features out (word embeddings only: every unknown word then looks
    the same). ``word_dropout`` replaces each training word by ``<unk>`` with that probability (its characters
    stay), so the ``<unk>`` embedding is trained in the contexts unknown words appear in (Kiperwasser & Goldberg
    2016). ``pad_id`` / ``unk_id`` are the word vocabulary's; character id 0 is the characters' padding.
    ``rnn_options``: the sentence-level recurrent layers' regularisation keywords (``rnnlab.layers``: weight_drop,
    input_dropout, locked_dropout, output_dropout, recurrent_dropout, zoneout); the character layer stays plain.
    The sentence BiRNN's ``cell`` may also be 'layernorm_lstm' or 'layernorm_gru', and its structure a dilated
    stack (``dilations``, one per layer) or a Skip RNN (``skip``, budget loss weight ``skip_budget``); see
    ``rnnlab.variants``.
    """

    def __init__(self, num_words: int, num_chars: int, num_tags: int, *,
                 emb: int = 100,  # Plank et al. (2016) used 64-128 for words; 100 is the usual middle
                 char_emb: int = 32,  # ~100 distinct characters in English text need few dimensions
                 char_hidden: int = 64,  # per direction: 128 spelling features per word (Plank et al. used 100)
                 char_cell: str = "lstm",
                 hidden: int = 128,  # per direction; POS tagging saturates early (Plank et al. used 100)
                 layers: int = 2,  # a second layer helps a little (Dozat et al. 2017 used 2-3) at 2x the cost
                 cell: str = "lstm",
                 dropout: float = 0.33,  # Dozat & Manning's tagger/parser rate; POS data overfits quickly
                 word_dropout: float = 0.0,  # off: the plain model; 0.05-0.25 helps unknown words a little
                 pad_id: int = 0, unk_id: int = 1,
                 rnn_options: dict | None = None,  # None: the plain layers
                 dilations=None,  # None: plain stacking; one dilation per layer makes a DilatedRNN
                 skip: bool = False, skip_budget: float = 0.0) -> None:  # True: a SkipRNN, budget loss weight λ
        super().__init__()
        self.rnn_options = check_rnn_options(rnn_options)
        self.num_words = _check_int("num_words", num_words, 2, " (the vocabulary has <pad> and <unk> at least)")
        self.num_chars = _check_int("num_chars", num_chars, 2, " (the vocabulary has <pad> and <unk> at least)")
        self.num_tags = _check_int("num_tags", num_tags)
        self.emb = _check_int("emb", emb)
        self.char_emb = _check_int("char_emb", char_emb)
        self.char_hidden = _check_int("char_hidden", char_hidden, 0, "; use 0 for no character features")
        self.hidden = _check_int("hidden", hidden)
        self.layers = _check_int("layers", layers)
        self.cell, self.char_cell = _check_cell("cell", cell), _check_cell("char_cell", char_cell, CHAR_CELLS)
        dilations = check_dilations(dilations)
        self.dropout = _check_prob("dropout", dropout, "the probability of zeroing an activation")
        self.word_dropout = _check_prob("word_dropout", word_dropout, "the probability of replacing a training "
                                        "word by <unk>")
        for name, value in (("pad_id", pad_id), ("unk_id", unk_id)):
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < num_words:
                raise ValueError(f"{name} must be a word id in [0, num_words={num_words}); got {value!r}. Pass the "
                                 "word vocabulary's own id")
        if pad_id == unk_id:
            raise ValueError(f"pad_id and unk_id must differ (padding is not an unknown word); got {pad_id} for both")
        self.pad_id, self.unk_id = pad_id, unk_id

        self.embed = nn.Embedding(num_words, emb, padding_idx=pad_id)
        if char_hidden:
            self.char_embed = nn.Embedding(num_chars, char_emb, padding_idx=0)
            self.char_rnn = _RNN[char_cell](char_emb, char_hidden, 1, bidirectional=True)
        else:
            self.char_embed = self.char_rnn = None
        self.features = emb + 2 * char_hidden
        self.drop = nn.Dropout(self.dropout)
        self.rnn = recurrent_layer(cell, self.features, hidden, layers, dropout=self.dropout, bidirectional=True,
                                   dilations=dilations, skip=skip, skip_budget=skip_budget,
                                   rnn_options=self.rnn_options)
        self.layers = self.rnn.num_layers  # a dilated stack has one layer per dilation
        self.out = nn.Linear(2 * hidden, num_tags)

    @property
    def config(self) -> dict:
        config = {"kind": "bi_rnn_tagger", "num_words": self.num_words, "num_chars": self.num_chars,
                  "num_tags": self.num_tags, "emb": self.emb, "char_emb": self.char_emb,
                  "char_hidden": self.char_hidden, "char_cell": self.char_cell, "hidden": self.hidden,
                  "layers": self.layers, "cell": self.cell, "dropout": self.dropout,
                  "word_dropout": self.word_dropout, "pad_id": self.pad_id, "unk_id": self.unk_id}
        if self.rnn_options:  # only when used: a plain model's config (and checkpoint) has no such key
            config["rnn_options"] = dict(self.rnn_options)
        config.update(structure_config(self.rnn))  # likewise: dilations / skip only when used
        return config

    def char_features(self, chars: Tensor) -> Tensor:
        """(N, C) character ids of N words (0-padded after each word) → (N, 2 * char_hidden): the final states of
        the forward (read up to the last character) and backward (read back to the first) directions. Each
        distinct word is run once."""
        uniq, inverse = torch.unique(chars, dim=0, return_inverse=True)  # (U, C), (N,)
        lengths = (uniq != 0).sum(1).clamp_min(1)  # (U,)
        x = self.char_embed(uniq)  # (U, C, char_emb)
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, state = self.char_rnn(packed)
        h = state[0] if isinstance(state, tuple) else state  # (2, U, char_hidden): forward, backward
        feats = torch.cat([h[0], h[1]], dim=1)  # (U, 2 * char_hidden)
        return feats[inverse]  # (N, 2 * char_hidden)

    def forward(self, words: Tensor, chars: Tensor, lengths: Tensor) -> Tensor:
        """words (B, T) ids (``pad_id`` after a sentence's end), chars (B, T, C) character ids (0 = padding),
        lengths (B,) words per sentence → logits (B, T, num_tags); positions past a sentence's length are 0."""
        if words.dim() != 2 or chars.dim() != 3 or chars.shape[:2] != words.shape:
            raise ValueError(f"words must be (B, T) and chars (B, T, C) with the same B and T; got words "
                             f"{tuple(words.shape)}, chars {tuple(chars.shape)}")
        B, T = words.shape
        lengths = torch.as_tensor(lengths).cpu()  # (B,); packing reads the lengths on the CPU
        if lengths.shape != (B,) or int(lengths.min()) < 1 or int(lengths.max()) > T:
            raise ValueError(f"lengths must hold B={B} sentence lengths in [1, T={T}]; got {lengths.tolist()}")
        if self.training and self.word_dropout > 0:
            drop = torch.rand(words.shape, device=words.device) < self.word_dropout  # (B, T)
            words = words.masked_fill(drop & (words != self.pad_id), self.unk_id)
        mask = torch.arange(T, device=words.device) < lengths.to(words.device)[:, None]  # (B, T): real words
        x = self.embed(words)  # (B, T, emb)
        if self.char_rnn is not None:
            feats = x.new_zeros(B, T, 2 * self.char_hidden)  # (B, T, 2 * char_hidden)
            feats[mask] = self.char_features(chars[mask])  # (N, C) → (N, 2 * char_hidden), N = sum(lengths)
            x = torch.cat([x, feats], dim=2)  # (B, T, emb + 2 * char_hidden)
        packed = pack_padded_sequence(self.drop(x), lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.rnn(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=T)  # (B, T, 2 * hidden)
        logits = self.out(self.drop(out))  # (B, T, num_tags)
        return logits * mask.unsqueeze(2)  # (B, T, num_tags): zeros past each sentence's end


def build_tagger(config: dict) -> BiRNNTagger:
    """The tagger a ``config`` dict describes (``model.config``)."""
    if not isinstance(config, dict) or config.get("kind") != "bi_rnn_tagger":
        got = config.get("kind") if isinstance(config, dict) else config
        raise ValueError(f"tagger config 'kind' must be 'bi_rnn_tagger'; got {got!r}")
    kwargs = {k: v for k, v in config.items() if k != "kind"}
    try:
        return BiRNNTagger(**kwargs)
    except TypeError as exc:  # an unknown or missing key
        raise ValueError(f"bad tagger config: {exc}") from None
