"""Hidden states and gates over a text: what a character- or word-level LM's units do at every token.

    from rnnlab.diagnose.hidden import hidden_states, interesting_units, units_html
    states = hidden_states(model, vocab, "the text")      # per token and layer: h (and c, gates)
    states.save_npz("states.npz")                         # tokens, ids, h_l0 (T, H), c_l0, gate_i_l0, ...
    html = units_html(states, "h", layer=0, units=interesting_units(states, "h", 0))

As in Karpathy, Johnson & Fei-Fei (2015), "Visualizing and understanding recurrent networks": each token of the
text is coloured by one unit's value at that token — red for -1, white for 0, blue for +1 (tanh-range values: h,
tanh(c), the LSTM's g and the GRU's n); gates (sigmoid, in [0, 1]) go red for 0 (closed), white for 0.5, blue for 1
(open). An LSTM's c is unbounded: it is shown as tanh(c), as in the paper (the .npz keeps c itself); a ReLU RNN's h
is scaled by its largest value over the text.

How: the LM's input (embedding or one-hot) for the text is computed once, then each recurrent layer is replayed step
by step in float64 with the cell functions of ``rnnlab.cells`` (``measure.replay``, the same math the engine runs),
from a zero initial state (the start of a stream), in eval mode (no dropout). The cell state is
c_t = f_t ⊙ c_(t-1) + i_t ⊙ g_t from the replayed gates.

Arrays in the .npz (``HiddenStates.save_npz``): ``tokens`` (T,) str, ``ids`` (T,) int64, and per layer l, each
(T, H) float32: ``h_l{l}``; LSTM ``c_l{l}``, ``gate_i_l{l}``, ``gate_f_l{l}``, ``gate_g_l{l}``, ``gate_o_l{l}``; GRU
``gate_r_l{l}``, ``gate_z_l{l}``, ``gate_n_l{l}``.
"""
from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .measure import cell_kind, replay

MAX_TOKENS = 10_000  # the float64 replay keeps ~11 values per unit and token: 10k tokens x 1024 units ~ 1 GB
DISPLAY_TOKENS = 2_000  # tokens coloured per unit in the HTML: a few pages of text, ~150 kB per unit
DEFAULT_UNITS = 4  # units shown when none are chosen: the most variable ones, enough to spot a pattern
VALUES = {"lstm": ("h", "c", "i", "f", "g", "o"), "gru": ("h", "r", "z", "n"), "rnn_tanh": ("h",),
          "rnn_relu": ("h",)}
SIGMOID = {"i", "f", "o", "r", "z"}  # gates in [0, 1]; the others are tanh-range (or unbounded: c, ReLU h)


@dataclass
class HiddenStates:
    """Per-token values of a text: ``tokens`` (display strings), ``ids``, ``cell``, ``layers`` and ``arrays``
    (name → (T, H) float32; names as in the module docstring)."""

    tokens: list
    ids: list
    cell: str
    layers: int
    level: str = "char"
    arrays: dict = field(default_factory=dict)

    @staticmethod
    def name(what: str, layer: int) -> str:
        """The array name of a value: 'h_l0', 'c_l1', 'gate_f_l0'."""
        return f"{what}_l{layer}" if what in ("h", "c") else f"gate_{what}_l{layer}"

    def values(self, what: str, layer: int) -> np.ndarray:
        """(T, H) values of ``what`` (h, c or a gate letter) in ``layer``; a ValueError naming the choices."""
        if what not in VALUES[self.cell]:
            raise ValueError(f"a {self.cell} layer has {', '.join(VALUES[self.cell])}; got {what!r}")
        if not 0 <= layer < self.layers:
            raise ValueError(f"layer must be from 0 to {self.layers - 1} (the model has {self.layers}); got {layer}")
        return self.arrays[self.name(what, layer)]

    def save_npz(self, path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, tokens=np.array(self.tokens, dtype=str), ids=np.array(self.ids, dtype=np.int64),
                            **self.arrays)
        return path if path.suffix == ".npz" else path.with_name(path.name + ".npz")  # numpy appends .npz


def display_tokens(vocab, ids: list[int]) -> list[str]:
    """How each token reads in the text: a character itself, a word, a BPE piece decoded on its own."""
    if vocab.level == "bpe":
        return [vocab.decode([i]) for i in ids]
    return [vocab.itos[i] for i in ids]


@torch.no_grad()
def hidden_states(model: nn.Module, vocab, text: str) -> HiddenStates:
    """Run a recurrent LM (``rnnlab.models.RecurrentLM``) over ``text`` from a zero state and keep, per token and
    layer, h (and an LSTM's c and gates i, f, g, o; a GRU's r, z, n). ``vocab`` encodes the text (a DataError for
    a character it cannot encode); at most MAX_TOKENS tokens."""
    rnn = getattr(model, "rnn", None)
    try:
        kind = cell_kind(rnn)
    except TypeError:
        raise ValueError(f"hidden states are read from a recurrent language model (rnnlab.RNN, LSTM or GRU layers, "
                         f"'rnnlab train lm'); {type(model).__name__} has none") from None
    if rnn.bidirectional:
        raise ValueError("a bidirectional layer's state at token t depends on the whole text; hidden states are "
                         "shown for unidirectional language models")
    ids = vocab.encode(text, name="text", final_eos=False)
    if not ids:
        raise ValueError("the text holds no tokens; give some text")
    if len(ids) > MAX_TOKENS:
        raise ValueError(f"the text has {len(ids):,} tokens; hidden states are collected for at most "
                         f"{MAX_TOKENS:,} (the replay keeps every value of every step); give a shorter text")
    device = next(model.parameters()).device
    x_ids = torch.tensor(ids, dtype=torch.long, device=device)[:, None]  # (T, 1)
    was_training = model.training
    model.eval()
    try:
        if getattr(model, "encoder", None) is None:  # one-hot input
            x = F.one_hot(x_ids, model.vocab_size).to(rnn.weight_hh_l0.dtype)  # (T, 1, V)
        else:
            x = model.encoder(x_ids)  # (T, 1, E)
        runs = replay(rnn, x)
    finally:
        model.train(was_training)
    H = rnn.hidden_size
    arrays = {}
    for layer in range(rnn.num_layers):
        run = runs[(layer, 0)]
        arrays[HiddenStates.name("h", layer)] = run.out[:, 0]  # (T, H)
        if kind == "lstm":
            c_prev = run.prev[:, 0, H:]  # (T, H): c_(t-1)
            g = run.gates
            arrays[HiddenStates.name("c", layer)] = g["f"][:, 0] * c_prev + g["i"][:, 0] * g["g"][:, 0]  # (T, H)
        for name in VALUES[kind][1:]:
            if name != "c":
                arrays[HiddenStates.name(name, layer)] = run.gates[name][:, 0]  # (T, H)
    arrays = {k: v.float().cpu().numpy() for k, v in arrays.items()}
    return HiddenStates(tokens=display_tokens(vocab, ids), ids=list(ids), cell=kind, layers=rnn.num_layers,
                        level=vocab.level, arrays=arrays)


def interesting_units(states: HiddenStates, what: str = "h", layer: int = 0, k: int = DEFAULT_UNITS) -> list[int]:
    """The ``k`` units whose ``what`` varies most over the text (largest variance; ties: lower index first). A unit
    that barely changes says nothing about the text; one that swings with it may track something (a quote, a line
    position, an indentation depth)."""
    v = states.values(what, layer)  # (T, H)
    var = v.astype(np.float64).var(axis=0)  # (H,)
    order = np.argsort(-var, kind="stable")
    return [int(u) for u in order[:k]]


# -- colouring ---------------------------------------------------------------------------------------------------
def _shown(values: np.ndarray, what: str, cell: str) -> tuple[np.ndarray, str]:
    """Values mapped to [-1, 1] for the colour (-1 red, 0 white, +1 blue), and what the scale means."""
    v = values.astype(np.float64)
    if what in SIGMOID:
        return 2.0 * v - 1.0, "0 (closed) red · 0.5 white · 1 (open) blue"
    if what == "c":
        return np.tanh(v), "tanh(c): -1 red · 0 white · +1 blue"
    if what == "h" and cell == "rnn_relu":
        top = float(np.abs(v).max()) or 1.0
        return v / top, f"0 white · {top:.3g} (the largest over the text) blue"
    return np.clip(v, -1.0, 1.0), "-1 red · 0 white · +1 blue"


def colour(s: float) -> str:
    """CSS rgb for s in [-1, 1]: red at -1, white at 0, blue at +1 (at most 80% saturated, so text stays legible)."""
    s = max(-1.0, min(1.0, float(s))) if math.isfinite(s) else 0.0
    a = 0.8 * abs(s)
    fade = round(255 * (1 - a))
    return f"rgb({fade},{fade},255)" if s >= 0 else f"rgb(255,{fade},{fade})"


def _text_of(token: str, level: str, first: bool) -> str:
    """The HTML of one token: line ends as ↵ and a line break, spaces kept (the block is pre-wrap)."""
    if level == "word":
        if token == "<eos>":
            return "↵\n"
        return ("" if first else " ") + html.escape(token)
    shown = html.escape(token).replace("\n", "↵\n").replace("\t", "⇥")
    return shown


def token_html(tokens: list[str], values: np.ndarray, *, what: str = "h", cell: str = "lstm", level: str = "char",
               label: str = "") -> str:
    """One HTML block: every token on a background coloured by ``values`` (T,) (see the module docstring), the
    exact value in its tooltip; the first DISPLAY_TOKENS tokens."""
    values = np.asarray(values)
    if values.shape != (len(tokens),):
        raise ValueError(f"values must have one entry per token, shape ({len(tokens)},); got {values.shape}")
    scaled, scale = _shown(values, what, cell)
    n = min(len(tokens), DISPLAY_TOKENS)
    spans, prev_eol = [], True
    for t in range(n):
        tok = tokens[t]
        text = _text_of(tok, level, first=prev_eol)
        prev_eol = text.endswith("\n")
        body, tail = (text[:-1], "\n") if prev_eol else (text, "")
        if level == "word" and body.startswith(" "):  # the gap between words stays uncoloured
            spans.append(" ")
            body = body[1:]
        title = html.escape(f"{tok!r} {what} = {float(values[t]):.4g}", quote=True)
        spans.append(f'<span style="background:{colour(scaled[t])}" title="{title}">{body}</span>{tail}')
    more = (f'<p style="color:#555;font-size:13px">… the first {n:,} of {len(tokens):,} tokens are shown; the '
            ".npz holds them all.</p>") if n < len(tokens) else ""
    head = f"<h3>{html.escape(label)}</h3>" if label else ""
    return (f'<div class="rnnlab-states">{head}<p style="color:#555;font-size:13px">{html.escape(scale)}; hover a '
            "token for its value</p>"
            '<div style="font-family:ui-monospace,monospace;white-space:pre-wrap;line-height:1.7;font-size:14px;'
            f'border:1px solid #ddd;padding:0.6em">{"".join(spans)}</div>{more}</div>')


def units_html(states: HiddenStates, what: str = "h", layer: int = 0, units: list[int] | None = None) -> str:
    """One ``token_html`` block per unit of ``units`` (default: ``interesting_units``), headed with the unit, its
    mean and its range over the text."""
    v = states.values(what, layer)  # (T, H)
    H = v.shape[1]
    units = interesting_units(states, what, layer) if units is None else list(units)
    bad = [u for u in units if not 0 <= u < H]
    if bad:
        raise ValueError(f"units must be from 0 to {H - 1} (the layer has {H}); got {bad[0]}")
    blocks = []
    for u in units:
        col = v[:, u]
        label = (f"layer {layer}, unit {u}: {what} (mean {col.mean():.3g}, from {col.min():.3g} to {col.max():.3g}"
                 f", variance {col.var():.3g})")
        blocks.append(token_html(states.tokens, col, what=what, cell=states.cell, level=states.level, label=label))
    return "\n".join(blocks)
