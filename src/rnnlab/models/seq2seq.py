"""Encoder–decoder models with attention (many-to-many, unaligned lengths) and a conditional decoder (one-to-many).
No training code here (that is ``rnnlab.train.seq2seq``).

    Seq2Seq              source ids (B, S), lengths (B,) → target logits (B, T, V_tgt)
                         source embedding → stacked, optionally bidirectional rnnlab RNN/LSTM/GRU encoder
                         (packed: padding is never read) → bridge → rnnlab decoder with attention → output layer
    ConditionalDecoder   a fixed-size input (a class id through an embedding, or a float vector) → the decoder's
                         initial state → the same decoder without attention (there is no memory to attend to)

    model(src, src_lengths, tgt_in)           teacher forcing: logits (B, T, V) for tgt_out; the attention
                                              weights of that pass are left in ``model.last_attention`` (B, T, S)
    model.greedy(src, src_lengths)            [Decoded(ids, finished, score, attention)] per sequence, batched
    model.beam_search(src, src_lengths, k)    the same, by beam search (rnnlab.generate.beam_search per sequence)
    model.config                              a JSON-able dict; build_seq2seq(config) rebuilds the model

Notation: source memory m_1..m_S (the encoder's last-layer outputs, D*H_e each: forward ⊕ backward when
bidirectional), decoder state s_t (H_d), target embedding e(y). One decoder step t (inputs y_{t-1}, with y_0 = <bos>):

    x_t      = e(y_{t-1})  ⊕  h~_{t-1}                  input feeding (Luong et al. 2015 §3.3); h~_0 = 0
    s_t      = RNN(x_t, s_{t-1})                         rnnlab layer, ``.step``
    a_{t,i}  = score(s_t, m_i)                           for the valid source positions i
                 additive (Bahdanau et al. 2015):  v^T tanh(W_q s_t + W_k m_i)
                 multiplicative ("general", Luong et al. 2015):  s_t^T W_a m_i
    α_t      = softmax over i of a_{t,i}, with a_{t,i} = -inf at padded positions, so their weight is exactly 0
    c_t      = Σ_i α_{t,i} m_i                           context vector (D*H_e)
    h~_t     = tanh(W_c [c_t ⊕ s_t])                     attentional vector (H_d)
    p(y_t | y_<t, x) = softmax(W_o h~_t + b_o)

With ``attention="none"``, h~_t = s_t (a plain encoder–decoder, Sutskever et al. 2014 / Cho et al. 2014), and there
is no input feeding. The query is the *current* state s_t (Luong's placement for both scores); Bahdanau et al.
query with s_{t-1} and feed c_t into the cell — input feeding of h~_{t-1} plays that role here.

Step-wise or whole-sequence: with input feeding, step t needs h~_{t-1}, which needs the attention of step t-1, so
the decoder runs one ``.step`` per target position (T calls of the recurrent layer). Without input feeding
(``input_feeding=False``) and without scheduled sampling, teacher forcing runs the decoder over the whole target
in ONE call of the layer (the C++ time loop) and attends for all T steps in one batched product — several times
faster to train on a CPU; both give the same logits for the same weights when input feeding is off
(tests/test_seq2seq.py checks it). The default is no input feeding: on one CPU thread it trains reversal about 3×
faster per token (measured: 19k vs 6k target tokens/s, multiplicative attention, H = 128, lengths 5-50) and
still learns it within ~10k sequences; Luong et al. report input feeding gains ~1 BLEU on translation, so turn it
on (``input_feeding=True``) where the decoder should see its previous alignment.

Bridge: the decoder's initial state comes from the encoder's final states (forward direction after the last valid
step ⊕ backward direction after step 0, per layer). Decoder layer l takes encoder layer l when both stacks have the
same depth, else every decoder layer takes the encoder's top layer. When D*H_e equals H_d the states pass through;
otherwise a linear map: h_0 = tanh(W_h h_enc + b_h) (Bahdanau et al.'s s_0 = tanh(W_s h←_1)), c_0 = W_c' c_enc + b.

Variants (``rnnlab.variants``): ``cell`` may be 'layernorm_lstm' or 'layernorm_gru' (encoder and decoder; the
decoder's ``.step`` is the layer run on one step, as for the plain cells). The encoder's structure may be a dilated
stack (``dilations``, one per layer, which sets ``layers``) or a Skip RNN (``skip``, budget loss weight
``skip_budget``); the decoder stays a plain stack of the cell, since it runs step by step in decoding, where a
dilated layer would need its last d states and a Skip RNN restarts its update gate at every call.

Recurrent regularisation: ``rnn_options`` (weight_drop, input_dropout, locked_dropout, output_dropout,
recurrent_dropout, zoneout; see ``rnnlab.layers``) go to the encoder's and the decoder's layers alike. Their masks
are drawn per call of a layer, so when the decoder runs step-wise (input feeding, scheduled sampling) the
"same mask at every step" of weight_drop, recurrent_dropout and the locked dropouts holds within one step only: each
target step draws afresh. The one-call decoder (the default) keeps them for the whole target.

Scheduled sampling (Bengio et al. 2015): in training, with probability ``sampling_prob`` per sequence and step, the
decoder reads its own previous most likely token (argmax of the previous step's logits, no gradient through the
choice) instead of the true y_{t-1}. Any ``sampling_prob`` > 0 makes the decoder run step-wise.

Decoding: greedy (batched) and beam search. Beam search is ``rnnlab.generate.beam_search`` — the language models'
beam — run on one source sequence at a time through a small adapter; its length normalisation is simple length
division, score = log p(y) / |y|^α with α = ``length_penalty`` (0: raw log-probability, 1: mean per token), where
|y| counts the <eos>. The beam narrows as hypotheses finish (``keep_width=False``: W - finished extensions are
read per step), so a beam of width 1 is exactly greedy decoding. (GNMT's lp = ((5 + |y|) / 6)^α differs only in its shape; not implemented.) Each result
carries the attention weights (steps, S) of the chosen sequence: a teacher-forced pass over that sequence, which
gives exactly the weights the search computed, since every step is a function of the prefix.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ..layers import check_rnn_options
from ..variants import ALL_CELLS, check_dilations, has_cell_state, recurrent_layer, structure_config

ATTENTIONS = ("none", "additive", "multiplicative")
# The ids of the specials in every rnnlab seq2seq vocabulary (rnnlab.data.seq2seq.SPECIALS: <pad> <unk> <bos> <eos>).
PAD_ID, BOS_ID, EOS_ID = 0, 2, 3


def _check_int(name: str, value, lo: int = 1, fix: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ValueError(f"{name} must be an integer >= {lo}; got {value!r}" + (f". {fix}" if fix else ""))
    return value


def _check_choice(name: str, value, choices: tuple) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
    return value


def _check_prob(name: str, value, hi_open: bool = True) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value and \
        (value < 1 if hi_open else value <= 1)
    if not ok:
        raise ValueError(f"{name} must be a number in [0, 1{')' if hi_open else ']'}; got {value!r}")
    return float(value)


def _rnn(cell: str, input_size: int, hidden: int, layers: int, bidirectional: bool, dropout: float,
         rnn_options: dict, **structure) -> nn.Module:
    """A recurrent layer (``rnnlab.variants.recurrent_layer``), batch first, dropout only between layers;
    ``structure``: the encoder's dilations / skip / skip_budget."""
    return recurrent_layer(cell, input_size, hidden, layers, batch_first=True, dropout=dropout if layers > 1 else 0.0,
                           bidirectional=bidirectional, rnn_options=rnn_options, **structure)


@dataclass
class Decoded:
    """One decoded sequence: ``ids`` (without the final <eos>), ``finished`` (it ended with <eos>, not at the
    length limit), ``score`` (greedy: total log-probability; beam: the length-normalised score the beam ranked it
    by) and ``attention`` (steps, S) — one row per output step including the <eos> step; (steps, 0) without
    attention."""

    ids: list[int]
    finished: bool
    score: float
    attention: Tensor


@dataclass
class Memory:
    """What the decoder reads from the encoder for a batch: ``memory`` (B, S, M) and its precomputed attention
    keys (B, S, K), ``mask`` (B, S) of valid source positions (None without attention), and ``state``, the
    decoder's initial recurrent state."""

    memory: Tensor | None
    keys: Tensor | None
    mask: Tensor | None
    state: object

    def expand(self, n: int) -> "Memory":
        """The memory of a single sequence (B = 1) repeated for ``n`` beams (the state is not touched)."""
        if self.keys is None:  # no attention: the decoder never reads the memory
            return self
        return Memory(self.memory.expand(n, -1, -1), self.keys.expand(n, -1, -1), self.mask.expand(n, -1),
                      self.state)  # (n, S, M), (n, S, K), (n, S)


class Attention(nn.Module):
    """Additive (Bahdanau) or multiplicative/general (Luong) attention over a masked memory; see the module doc."""

    def __init__(self, kind: str, query_size: int, memory_size: int, attn_size: int) -> None:
        super().__init__()
        self.kind = _check_choice("attention", kind, ATTENTIONS[1:])
        if kind == "additive":
            self.key = nn.Linear(memory_size, attn_size, bias=False)  # W_k
            self.query = nn.Linear(query_size, attn_size)  # W_q (its bias is the b inside tanh)
            self.v = nn.Linear(attn_size, 1, bias=False)  # v
        else:
            self.key = nn.Linear(memory_size, query_size, bias=False)  # W_a, applied to the memory once

    def keys(self, memory: Tensor) -> Tensor:
        """The per-sequence part of the score, computed once: W_k m_i (B, S, A) or W_a m_i (B, S, H_d)."""
        return self.key(memory)

    def forward(self, query: Tensor, keys: Tensor, memory: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """query (B, T, H_d) → (context (B, T, M), weights (B, T, S)); padded source positions get weight 0."""
        if self.kind == "additive":
            q = self.query(query)  # (B, T, A)
            scores = self.v(torch.tanh(q[:, :, None, :] + keys[:, None, :, :])).squeeze(-1)  # (B, T, S, A) → (B, T, S)
        else:
            scores = query @ keys.transpose(1, 2)  # (B, T, H_d) @ (B, H_d, S) → (B, T, S)
        scores = scores.masked_fill(~mask[:, None, :], float("-inf"))  # (B, T, S)
        weights = scores.softmax(-1)  # (B, T, S): exp(-inf) = 0 exactly at padding
        return weights @ memory, weights  # (B, T, M), (B, T, S)


class _DecoderModel(nn.Module):
    """The decoder, teacher forcing, scheduled sampling, greedy and beam decoding. Subclasses provide ``encode``
    (→ ``Memory``) and ``memory_size`` (0: nothing to attend to)."""

    def _init_decoder(self, tgt_vocab: int, *, emb: int, cell: str, dec_hidden: int, dec_layers: int,
                      attention: str, attn_size: int | None, input_feeding: bool, dropout: float, memory_size: int,
                      pad_id: int, bos_id: int, eos_id: int, rnn_options: dict | None = None) -> None:
        self.rnn_options = check_rnn_options(rnn_options)
        self.tgt_vocab = _check_int("tgt_vocab", tgt_vocab, 4, "The target vocabulary holds at least the four "
                                    "specials <pad> <unk> <bos> <eos>")
        self.emb = _check_int("emb", emb)
        self.cell = _check_choice("cell", cell, ALL_CELLS)
        self.dec_hidden = _check_int("dec_hidden", dec_hidden)
        self.dec_layers = _check_int("dec_layers", dec_layers)
        self.attention_kind = _check_choice("attention", attention, ATTENTIONS)
        if attention != "none" and memory_size == 0:
            raise ValueError(f"attention={attention!r} needs an encoder memory to attend to, and a conditional "
                             "decoder has none; use attention='none'")
        self.input_feeding = bool(input_feeding) and attention != "none"
        self.dropout = _check_prob("dropout", dropout)
        for name, v in (("pad_id", pad_id), ("bos_id", bos_id), ("eos_id", eos_id)):
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < tgt_vocab:
                raise ValueError(f"{name} must be a token id in [0, tgt_vocab) = [0, {tgt_vocab}); got {v!r}")
        self.pad_id, self.bos_id, self.eos_id = pad_id, bos_id, eos_id
        self.tgt_embedding = nn.Embedding(tgt_vocab, emb)
        self.decoder = _rnn(cell, emb + (dec_hidden if self.input_feeding else 0), dec_hidden, dec_layers, False,
                            self.dropout, self.rnn_options)
        if attention != "none":
            self.attn_size = _check_int("attn_size", dec_hidden if attn_size is None else attn_size)
            self.attention = Attention(attention, dec_hidden, memory_size, self.attn_size)
            self.combine = nn.Linear(memory_size + dec_hidden, dec_hidden, bias=False)  # W_c
        else:
            self.attn_size = None
            self.attention = None
            self.combine = None
        self.out = nn.Linear(dec_hidden, tgt_vocab)  # W_o, b_o
        self.drop = nn.Dropout(self.dropout)
        self.last_attention: Tensor | None = None

    def _decoder_config(self) -> dict:
        config = {"tgt_vocab": self.tgt_vocab, "emb": self.emb, "cell": self.cell, "dec_hidden": self.dec_hidden,
                  "dec_layers": self.dec_layers, "attention": self.attention_kind, "attn_size": self.attn_size,
                  "input_feeding": self.input_feeding, "dropout": self.dropout, "pad_id": self.pad_id,
                  "bos_id": self.bos_id, "eos_id": self.eos_id}
        if self.rnn_options:  # only when used: a plain model's config (and checkpoint) has no such key
            config["rnn_options"] = dict(self.rnn_options)
        return config

    @property
    def _is_lstm(self) -> bool:
        """Whether the state is (h, c): an LSTM, plain or layer-normalised."""
        return has_cell_state(self.cell)

    # -- one step -----------------------------------------------------------------------------------------------
    def _attend(self, s: Tensor, mem: Memory) -> tuple[Tensor, Tensor]:
        """Decoder outputs s (B, T, H_d) → (h~ (B, T, H_d), attention weights (B, T, S))."""
        if self.attention is None:
            return s, s.new_zeros(s.shape[0], s.shape[1], 0)  # h~_t = s_t; (B, T, 0)
        context, weights = self.attention(s, mem.keys, mem.memory, mem.mask)  # (B, T, M), (B, T, S)
        return torch.tanh(self.combine(torch.cat([context, s], -1))), weights  # (B, T, H_d), (B, T, S)

    def _step(self, y_prev: Tensor, state, feed: Tensor | None, mem: Memory):
        """One decoder step: y_{t-1} (B,) → (logits (B, V), state, h~_t (B, H_d), weights (B, S))."""
        x = self.drop(self.tgt_embedding(y_prev))  # (B, E)
        if self.input_feeding:
            x = torch.cat([x, feed], -1)  # (B, E + H_d)
        s, state = self.decoder.step(x, state)  # (B, H_d)
        h, weights = self._attend(s[:, None, :], mem)  # (B, 1, H_d), (B, 1, S)
        h, weights = h[:, 0], weights[:, 0]  # (B, H_d), (B, S)
        return self.out(self.drop(h)), state, h, weights  # (B, V)

    def _zero_feed(self, mem: Memory, B: int) -> Tensor | None:
        if not self.input_feeding:
            return None
        return self.out.weight.new_zeros(B, self.dec_hidden)  # (B, H_d): h~_0 = 0

    # -- teacher forcing ------------------------------------------------------------------------------------------
    def decode(self, mem: Memory, tgt_in: Tensor, sampling_prob: float = 0.0) -> Tensor:
        """Logits (B, T, V) for the targets after ``tgt_in`` (B, T) = <bos> y_1 ... (teacher forcing); with
        ``sampling_prob`` > 0 in training mode, scheduled sampling. Sets ``last_attention`` (B, T, S)."""
        if tgt_in.dim() != 2 or tgt_in.dtype != torch.long or tgt_in.shape[1] == 0:
            raise ValueError(f"tgt_in must be a (B, T) int64 tensor of target ids starting with <bos>, T >= 1; got "
                             f"{tgt_in.dim()}-D {tgt_in.dtype} of shape {tuple(tgt_in.shape)}")
        p = _check_prob("sampling_prob", sampling_prob, hi_open=False)
        sampling = p > 0 and self.training
        if not self.input_feeding and not sampling:  # the whole target in one call of the recurrent layer
            e = self.drop(self.tgt_embedding(tgt_in))  # (B, T, E)
            s, _ = self.decoder(e, mem.state)  # (B, T, H_d)
            h, weights = self._attend(s, mem)  # (B, T, H_d), (B, T, S)
            self.last_attention = weights
            return self.out(self.drop(h))  # (B, T, V)
        B, T = tgt_in.shape
        state, feed = mem.state, self._zero_feed(mem, B)
        logits, attn = [], []
        y = tgt_in[:, 0]  # (B,)
        for t in range(T):
            if t > 0:
                y = tgt_in[:, t]
                if sampling:
                    own = logits[-1].detach().argmax(-1)  # (B,): the model's previous most likely token
                    coin = torch.rand(B, device=y.device) < p  # (B,)
                    y = torch.where(coin, own, y)  # (B,)
            out, state, feed, weights = self._step(y, state, feed, mem)  # (B, V), ..., (B, S)
            logits.append(out)
            attn.append(weights)
        self.last_attention = torch.stack(attn, 1)  # (B, T, S)
        return torch.stack(logits, 1)  # (B, T, V)

    def forward(self, src: Tensor, src_lengths: Tensor | None, tgt_in: Tensor, sampling_prob: float = 0.0) -> Tensor:
        """Teacher forcing: logits (B, T, V) of y_1 ... y_T <eos> given ``tgt_in`` = <bos> y_1 ... y_T."""
        return self.decode(self.encode(src, src_lengths), tgt_in, sampling_prob)

    # -- decoding ---------------------------------------------------------------------------------------------------
    def _max_len(self, max_len: int | None, src_lengths: Tensor | None, B: int) -> list[int]:
        if max_len is not None:
            _check_int("max_len", max_len, 1, "It is the most target tokens to produce, counting <eos>")
            return [max_len] * B
        if src_lengths is None:
            raise ValueError("max_len is needed when there is no source length to derive it from; give max_len")
        return [2 * int(n) + 10 for n in src_lengths.tolist()]  # default: room for outputs twice the source, plus 10

    @torch.no_grad()
    def greedy(self, src: Tensor, src_lengths: Tensor | None = None, max_len: int | None = None) -> list[Decoded]:
        """Greedy decoding of a batch: at each step the most likely token, until <eos> or ``max_len`` tokens
        (default 2 × source length + 10, per sequence). In eval mode."""
        was = self.training
        self.eval()
        try:
            mem = self.encode(src, src_lengths)
            B = src.shape[0]
            limits = self._max_len(max_len, self._lengths_or_none(src, src_lengths), B)
            state, feed = mem.state, self._zero_feed(mem, B)
            y = torch.full((B,), self.bos_id, dtype=torch.long, device=src.device)  # (B,)
            done = torch.zeros(B, dtype=torch.bool)
            steps, scores, attn = [], torch.zeros(B, dtype=torch.float64), []
            for t in range(max(limits)):
                logits, state, feed, weights = self._step(y, state, feed, mem)  # (B, V), ..., (B, S)
                logp = F.log_softmax(logits.double(), -1).cpu()  # (B, V)
                y = logits.argmax(-1)  # (B,)
                yc = y.cpu()
                scores += torch.where(done, torch.zeros(B, dtype=torch.float64), logp[torch.arange(B), yc])
                steps.append(yc)
                attn.append(weights.cpu())
                done |= (yc == self.eos_id) | torch.tensor([t + 1 >= n for n in limits])
                if bool(done.all()):
                    break
        finally:
            self.train(was)
        ids = torch.stack(steps, 1)  # (B, steps)
        attn_all = torch.stack(attn, 1)  # (B, steps, S)
        out = []
        for b in range(B):
            row = ids[b, :limits[b]].tolist()
            finished = self.eos_id in row
            n = row.index(self.eos_id) + 1 if finished else len(row)
            out.append(Decoded(row[:n - 1] if finished else row[:n], finished, float(scores[b]),
                               attn_all[b, :n, :self._src_len(src_lengths, b, attn_all.shape[2])]))
        return out

    @torch.no_grad()
    def beam_search(self, src: Tensor, src_lengths: Tensor | None = None, beam_width: int = 5,
                    length_penalty: float = 1.0, max_len: int | None = None) -> list[Decoded]:
        """Beam search for each sequence of the batch (``rnnlab.generate.beam_search``, one sequence at a time):
        the best hypothesis by log p(y) / |y|^length_penalty, |y| counting <eos> (1: mean per token, 0: raw
        log-probability). A wide enough beam is exhaustive search. In eval mode."""
        from ..generate import beam_search  # generate imports the data modules; keep the model import light

        was = self.training
        self.eval()
        try:
            B = src.shape[0]
            lengths = self._lengths_or_none(src, src_lengths)
            limits = self._max_len(max_len, lengths, B)
            out = []
            for b in range(B):
                one = src[b:b + 1]
                n = None if lengths is None else lengths[b:b + 1]
                if n is not None and one.dim() == 2:
                    one = one[:, :int(n)]  # drop the batch's padding: the sequence alone
                mem = self.encode(one, n)
                hyps = beam_search(_BeamAdapter(self, mem), [self.bos_id], limits[b], beam_width, length_penalty,
                                   self.eos_id, keep_width=False)
                seq, score = hyps[0]
                finished = seq[-1] == self.eos_id
                self.decode(mem, torch.tensor([[self.bos_id] + seq[:-1]], device=src.device))
                attention = self.last_attention[0].cpu()  # (steps, S)
                out.append(Decoded(seq[:-1] if finished else seq, finished, float(score), attention))
        finally:
            self.train(was)
        return out

    def _lengths_or_none(self, src: Tensor, src_lengths):
        if src_lengths is None:  # every sequence is the whole padded length
            return torch.full((src.shape[0],), src.shape[1], dtype=torch.long) if src.dim() == 2 else None
        return torch.as_tensor(src_lengths).to("cpu", torch.long)

    @staticmethod
    def _src_len(src_lengths, b: int, S: int) -> int:
        return S if src_lengths is None or S == 0 else int(src_lengths[b])


class _BeamAdapter:
    """A single source sequence as the language-model interface ``rnnlab.generate.beam_search`` expects:
    ``model(tokens (1, W), state) -> (logits (1, W, V), state)``, ``init_state``, ``reorder_state``; the state is
    (recurrent state, h~ of input feeding)."""

    def __init__(self, model: _DecoderModel, mem: Memory) -> None:
        self.model, self.mem, self._expanded = model, mem, {}

    def parameters(self):
        return self.model.parameters()

    def init_state(self, batch_size: int, device=None):
        return self.mem.state, self.model._zero_feed(self.mem, 1)

    def reorder_state(self, state, index: Tensor):
        rnn_state, feed = state
        if isinstance(rnn_state, tuple):
            rnn_state = tuple(s.index_select(1, index) for s in rnn_state)  # (L, W, H) each
        else:
            rnn_state = rnn_state.index_select(1, index)  # (L, W, H)
        return rnn_state, None if feed is None else feed.index_select(0, index)  # (W, H_d)

    def __call__(self, tokens: Tensor, state):
        if tokens.shape[0] != 1:
            raise ValueError(f"the seq2seq beam reads one token per step; got {tokens.shape[0]}")
        W = tokens.shape[1]
        if W not in self._expanded:
            self._expanded[W] = self.mem.expand(W)
        rnn_state, feed = state
        logits, rnn_state, feed, _ = self.model._step(tokens[0], rnn_state, feed, self._expanded[W])  # (W, V)
        return logits[None], (rnn_state, feed)  # (1, W, V)


class Seq2Seq(_DecoderModel):
    """Encoder–decoder with attention: ``model(src, src_lengths, tgt_in) -> logits (B, T, V_tgt)``; see the module
    doc for the equations, the bridge, input feeding, scheduled sampling and decoding.

    src: (B, S) int64 source ids padded with anything (``src_lengths`` (B,) says where each ends; None: all S);
    tgt_in: (B, T) int64, <bos> then the target tokens (teacher forcing); the logits predict tgt_in shifted left
    with <eos> at the end.
    """

    def __init__(self, src_vocab: int, tgt_vocab: int, *,
                 emb: int = 64,  # source and target embeddings: vocabularies of tens of symbols need few dimensions
                 cell: str = "lstm",  # gated: reversal carries each symbol across the whole sequence
                 hidden: int = 128,  # encoder units per direction: ample for the built-in tasks on a CPU
                 layers: int = 1,  # one layer solves reverse / sort / copy / dates; stack more for real data
                 bidirectional: bool = True,  # every memory vector m_i sees the whole source (Bahdanau et al.)
                 dec_hidden: int | None = None,  # None: the same as hidden (a BiRNN's 2H states are bridged)
                 dec_layers: int | None = None,  # None: the same as layers (layer l's state → decoder layer l)
                 attention: str = "multiplicative",  # one batched product per target; additive's tanh over
                 # (B, T, S, A) costs ~3x the training time on a CPU at these sizes (measured, lengths 5-50)
                 attn_size: int | None = None,  # additive scores' inner size A; None: dec_hidden
                 input_feeding: bool = False,  # off: the decoder runs in one call (see the module doc)
                 dropout: float = 0.0,  # generated data never repeats, so nothing to regularise against
                 pad_id: int = PAD_ID, bos_id: int = BOS_ID, eos_id: int = EOS_ID,
                 rnn_options: dict | None = None,  # None: the plain layers (encoder and decoder)
                 dilations=None,  # None: a plain encoder stack; one dilation per layer: a dilated encoder
                 skip: bool = False, skip_budget: float = 0.0) -> None:  # True: a Skip RNN encoder, budget λ
        super().__init__()
        self.src_vocab = _check_int("src_vocab", src_vocab, 2, "The source vocabulary holds at least <pad> and "
                                    "one symbol")
        self.hidden = _check_int("hidden", hidden)
        self.layers = _check_int("layers", layers)
        dilations = check_dilations(dilations)
        if dilations is not None and self.layers == 1:
            self.layers = len(dilations)  # one encoder layer per dilation (and as many decoder layers by default)
        self.bidirectional = bool(bidirectional)
        dec_hidden = self.hidden if dec_hidden is None else dec_hidden
        dec_layers = self.layers if dec_layers is None else dec_layers
        D = 2 if self.bidirectional else 1
        self.memory_size = D * self.hidden  # M
        self._init_decoder(tgt_vocab, emb=emb, cell=cell, dec_hidden=dec_hidden, dec_layers=dec_layers,
                           attention=attention, attn_size=attn_size, input_feeding=input_feeding, dropout=dropout,
                           memory_size=self.memory_size, pad_id=pad_id, bos_id=bos_id, eos_id=eos_id,
                           rnn_options=rnn_options)
        self.src_embedding = nn.Embedding(self.src_vocab, self.emb)
        self.encoder = _rnn(self.cell, self.emb, self.hidden, self.layers, self.bidirectional, self.dropout,
                            self.rnn_options, dilations=dilations, skip=skip, skip_budget=skip_budget)
        if self.memory_size != self.dec_hidden:
            self.bridge_h = nn.Linear(self.memory_size, self.dec_hidden)  # W_h, b_h
            self.bridge_c = nn.Linear(self.memory_size, self.dec_hidden) if self._is_lstm else None
        else:
            self.bridge_h = self.bridge_c = None

    @property
    def config(self) -> dict:
        return {"kind": "seq2seq", "src_vocab": self.src_vocab, **self._decoder_config(), "hidden": self.hidden,
                "layers": self.layers, "bidirectional": self.bidirectional,
                **structure_config(self.encoder)}  # dilations / skip only when used: a plain config has neither

    def _bridge(self, h_n: Tensor, linear: nn.Linear | None, squash: bool) -> Tensor:
        """Encoder final states (L_e*D, B, H_e) → the decoder's initial states (L_d, B, H_d)."""
        D, L = (2 if self.bidirectional else 1), self.layers
        B = h_n.shape[1]
        h = h_n.view(L, D, B, self.hidden).permute(0, 2, 1, 3).reshape(L, B, D * self.hidden)  # (L_e, B, D*H_e)
        if L != self.dec_layers:
            h = h[-1:].expand(self.dec_layers, B, D * self.hidden)  # (L_d, B, D*H_e): the top layer for each
        if linear is None:
            return h.contiguous()  # (L_d, B, H_d)
        h = linear(h)  # (L_d, B, H_d)
        return torch.tanh(h) if squash else h

    def encode(self, src: Tensor, src_lengths: Tensor | None = None) -> Memory:
        if src.dim() != 2 or src.dtype != torch.long:
            raise ValueError(f"src must be a (B, S) tensor of int64 source ids; got {src.dim()}-D {src.dtype} of "
                             f"shape {tuple(src.shape)}")
        B, S = src.shape
        if B == 0 or S == 0:
            raise ValueError(f"src must hold at least one sequence of at least one token; got shape {tuple(src.shape)}")
        lengths = torch.full((B,), S, dtype=torch.long) if src_lengths is None else \
            torch.as_tensor(src_lengths).to("cpu", torch.long)
        if lengths.shape != (B,) or int(lengths.min()) < 1 or int(lengths.max()) > S:
            raise ValueError(f"src_lengths must be a ({B},) integer tensor with every length in [1, S] = [1, {S}] "
                             f"(S: the padded source length); got shape {tuple(lengths.shape)}, values "
                             f"{lengths.tolist()[:8]}")
        e = self.drop(self.src_embedding(src))  # (B, S, E)
        packed = pack_padded_sequence(e, lengths, batch_first=True, enforce_sorted=False)  # data (N, E), N = Σ lengths
        out, state = self.encoder(packed)  # data (N, M); h_n (L*D, B, H_e)
        memory, _ = pad_packed_sequence(out, batch_first=True, total_length=S)  # (B, S, M), zeros at padding
        mask = torch.arange(S, device=src.device)[None, :] < lengths.to(src.device)[:, None]  # (B, S)
        if self._is_lstm:
            init = (self._bridge(state[0], self.bridge_h, True), self._bridge(state[1], self.bridge_c, False))
        else:
            init = self._bridge(state, self.bridge_h, True)  # (L_d, B, H_d)
        keys = self.attention.keys(memory) if self.attention is not None else None  # (B, S, K)
        return Memory(memory, keys, mask, init)


class ConditionalDecoder(_DecoderModel):
    """One-to-many: a decoder whose initial state comes from a fixed-size input instead of an encoder —
    ``model(cond, None, tgt_in) -> logits (B, T, V_tgt)``, decoded with the same ``greedy`` / ``beam_search``
    (``max_len`` required).

    cond: (B,) int64 condition ids (``n_conditions``, e.g. a class label, through an embedding of size
    ``cond_size``) or (B, cond_size) float vectors (``n_conditions=None``). Initial state, per decoder layer l:
    h_0^l = tanh(W_h^l v + b_h^l) and, for an LSTM, c_0^l = W_c^l v + b_c^l, with v the condition's vector. No
    attention (there is no sequence to attend to).
    """

    memory_size = 0

    def __init__(self, tgt_vocab: int, *, n_conditions: int | None = None,
                 cond_size: int = 32,  # the condition's vector: a label embedding needs few dimensions
                 emb: int = 64, cell: str = "lstm", dec_hidden: int = 128, dec_layers: int = 1,  # as Seq2Seq's
                 dropout: float = 0.0, pad_id: int = PAD_ID, bos_id: int = BOS_ID, eos_id: int = EOS_ID,
                 rnn_options: dict | None = None) -> None:  # None: the plain decoder layers
        super().__init__()
        self.n_conditions = None if n_conditions is None else _check_int("n_conditions", n_conditions)
        self.cond_size = _check_int("cond_size", cond_size)
        self._init_decoder(tgt_vocab, emb=emb, cell=cell, dec_hidden=dec_hidden, dec_layers=dec_layers,
                           attention="none", attn_size=None, input_feeding=False, dropout=dropout, memory_size=0,
                           pad_id=pad_id, bos_id=bos_id, eos_id=eos_id, rnn_options=rnn_options)
        self.cond_embedding = nn.Embedding(self.n_conditions, self.cond_size) if self.n_conditions else None
        self.init_h = nn.Linear(self.cond_size, self.dec_layers * self.dec_hidden)  # W_h, b_h for every layer
        self.init_c = nn.Linear(self.cond_size, self.dec_layers * self.dec_hidden) if self._is_lstm else None

    @property
    def config(self) -> dict:
        d = self._decoder_config()
        for k in ("attention", "attn_size", "input_feeding"):
            d.pop(k)
        return {"kind": "conditional_decoder", "n_conditions": self.n_conditions, "cond_size": self.cond_size, **d}

    def encode(self, cond: Tensor, src_lengths=None) -> Memory:
        if self.cond_embedding is not None:
            if cond.dim() != 1 or cond.dtype != torch.long:
                raise ValueError(f"cond must be a (B,) int64 tensor of condition ids in [0, {self.n_conditions}); "
                                 f"got {cond.dim()}-D {cond.dtype} of shape {tuple(cond.shape)}")
            v = self.cond_embedding(cond)  # (B, C)
        else:
            if cond.dim() != 2 or cond.shape[1] != self.cond_size or not cond.is_floating_point():
                raise ValueError(f"cond must be a (B, {self.cond_size}) float tensor (cond_size); got {cond.dim()}-D "
                                 f"{cond.dtype} of shape {tuple(cond.shape)}. Give n_conditions for class ids")
            v = cond  # (B, C)
        B, L, H = v.shape[0], self.dec_layers, self.dec_hidden
        h0 = torch.tanh(self.init_h(v)).view(B, L, H).transpose(0, 1).contiguous()  # (B, L*H) → (L, B, H)
        if self._is_lstm:
            c0 = self.init_c(v).view(B, L, H).transpose(0, 1).contiguous()  # (L, B, H)
            return Memory(None, None, None, (h0, c0))
        return Memory(None, None, None, h0)

    def _lengths_or_none(self, src, src_lengths):
        return None


_KINDS = {"seq2seq": Seq2Seq, "conditional_decoder": ConditionalDecoder}


def build_seq2seq(config: dict) -> nn.Module:
    """The model a ``config`` dict describes (``model.config`` of a Seq2Seq or ConditionalDecoder)."""
    if not isinstance(config, dict) or config.get("kind") not in _KINDS:
        got = config.get("kind") if isinstance(config, dict) else config
        raise ValueError(f"model config 'kind' must be one of {', '.join(_KINDS)}; got {got!r}")
    kwargs = {k: v for k, v in config.items() if k != "kind"}
    cls = _KINDS[config["kind"]]
    try:
        if cls is Seq2Seq:
            return Seq2Seq(kwargs.pop("src_vocab"), kwargs.pop("tgt_vocab"), **kwargs)
        return ConditionalDecoder(kwargs.pop("tgt_vocab"), **kwargs)
    except (TypeError, KeyError) as exc:  # an unknown or missing key
        raise ValueError(f"bad {config['kind']} model config: {exc}") from None
