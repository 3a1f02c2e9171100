"""ONNX export of the trained models: ``RecurrentLM``, ``SequenceClassifier`` / ``SequenceTagger``, ``BiRNNTagger``
and ``Seq2Seq`` (two graphs: the encoder and one decoder step), with a variable sequence length and batch size.

    export_onnx(model, "model.onnx")          # any of the four; returns the graph's input and output names
    inputs = example_inputs(model, batch=3, steps=5)
    check_onnx(model, "model.onnx", inputs)   # max |onnxruntime - PyTorch| over the outputs
    export_seq2seq(seq2seq, "s2s.onnx")       # a Seq2Seq: s2s.encoder.onnx and s2s.decoder_step.onnx
    onnx_greedy("s2s.encoder.onnx", "s2s.decoder_step.onnx", src, lengths)   # greedy decoding in onnxruntime

The graphs (all dimensions named below are dynamic):

    RecurrentLM          tokens (T, B) int64, h0 (L, B, H) [, c0 (L, B, H) for an LSTM]
                         → logits (T, B, V), hn [, cn]     T = 1 is one step of generation; feed hn/cn back
    SequenceClassifier   x (B, T) int64 ids or (B, T, F) float features, lengths (B,) int64 → logits (B, n_outputs)
    SequenceTagger       x, lengths → logits (B, T, n_outputs), zeros past each sequence's end
    BiRNNTagger          words (B, T) int64, chars (B, T, C) int64, lengths (B,) int64 → logits (B, T, tags)
    Seq2Seq encoder      src (B, S) int64, src_lengths (B,) int64 → memory (B, S, M), [keys], mask (B, S), h0 [, c0]
    Seq2Seq step         y_prev (B,), h [, c] [, feed] [, memory, keys, mask] → logits (B, V), h_next [, c_next]
                         [, feed_next] [, attention (B, S)]: one decoder step; the Python loop is the caller's

How. The training path cannot be exported as it is: the layers call a custom ``torch.autograd.Function`` over the
C++ (or Python) time loop, which the exporter cannot see into, and padded batches go through ``PackedSequence``,
whose batch sizes are data on the CPU. So this module has its own forward of each model — same parameters, same
cell math (``rnnlab.cells``, one step each), eval mode, no dropout — in which

- each direction of each layer is one ``torch._higher_order_ops.scan`` over time (a prototype op of PyTorch), which
  the exporter turns into one ONNX ``Scan`` node whose body is one cell step, so T is dynamic;
- padding is a mask computed inside the graph from ``lengths``: at a padded step a sequence keeps its state and
  outputs zeros, so the forward direction ends holding the state of its last valid step and the reverse direction
  starts from its initial state at its own last valid step — what packing gives the PyTorch model.

Choice of exporter (torch 2.13): the default, ``torch.onnx.export(..., dynamo=True)`` (torch.export, then
onnxscript), translates ``scan`` into ``Scan`` natively. The legacy TorchScript exporter (``dynamo=False``) would
need ``torch.jit.script`` for the loop; both are deprecated in torch 2.13, so it is not used. The dynamo exporter
needs the ``onnx`` and ``onnxscript`` packages (``pip install 'rnnlab[onnx]'``, which adds ``onnxruntime`` for
``check_onnx``) and a torch whose exporter knows ``scan``; without them ``ExportError`` says so. Nothing here is
imported by training: the hot path is untouched.
"""
from __future__ import annotations

import contextlib
import logging
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from ._optional import MissingExtra, require
from .engine.unroll import _CELL, _OPTS
from .layers import RNNBase
from .models.classifier import SequenceClassifier, SequenceTagger
from .models.lm import RecurrentLM
from .models.seq2seq import Memory, Seq2Seq
from .models.tagger import BiRNNTagger
from .variants import PLAIN_CELLS, is_plain, recurrent_modules

INSTALL_HINT = "pip install 'rnnlab[onnx]'"


class ExportError(Exception):
    """The model cannot be exported (its kind, or a missing package); the message is one line for users."""


# -- the layers, as scans over time ----------------------------------------------------------------------------
def _scan():
    try:
        from torch._higher_order_ops.scan import scan
    except ImportError:  # torch too old for the scan operator
        raise ExportError(f"ONNX export needs torch's scan operator (torch._higher_order_ops.scan), which torch "
                          f"{torch.__version__} lacks; it was written for torch 2.13") from None
    return scan


def _direction(rnn: RNNBase, layer: int, d: int, x: Tensor, valid: Tensor | None, state: tuple[Tensor, ...]):
    """One direction of one layer: x (T, B, I), valid (T, B, 1) bool or None, state ((B, H)[, (B, H)]) →
    (out (T, B, H) with zeros at invalid steps, final state)."""
    cell, opts = _CELL[rnn._engine_mode], _OPTS[rnn._engine_mode]
    w_ih, w_hh, b_ih, b_hh = rnn._weights(layer, d)
    gi = x @ w_ih.t()  # (T, B, G*H): the input half of every step, one GEMM (as the engine does)
    if rnn.bias:
        gi = gi + b_ih
    else:
        b_hh = None

    # The body closes over weights and Python constants only: a tensor of symbolic shape in its closure (valid)
    # becomes a guard when scan's tracer meets the same body again, and that fixes the batch size.
    masked = valid is not None

    def step(carry, xs):
        gi_t, ok = xs if masked else (xs, None)
        new, _ = cell.forward(gi_t, carry, w_hh, b_hh, **opts)
        if ok is None:
            return new, new[0].clone()  # scan's body may not return one tensor twice
        # A padded step leaves the state as it was and outputs zeros.
        kept = tuple(torch.where(ok, n, c) for n, c in zip(new, carry))
        return kept, torch.where(ok, new[0], torch.zeros_like(new[0]))

    xs = (gi, valid) if masked else gi
    final, out = _scan()(step, state, xs, reverse=d == 1)
    return out, final


def run_rnn(rnn: RNNBase, x: Tensor, valid: Tensor | None = None, hx=None):
    """An rnnlab RNN/LSTM/GRU in eval mode over a time-major padded batch, without the engine: x (T, B, I),
    valid (T, B) bool (None: every step) → (out (T, B, D*H), h_n (L*D, B, H), c_n or None)."""
    has_c = rnn.mode == "LSTM"
    if getattr(rnn, "zoneout_h", 0) or getattr(rnn, "zoneout_c", 0):  # eval mode's h = p h_{t-1} + (1-p) h~: not here
        raise ExportError(f"the recurrent layer uses zoneout ({rnn.zoneout}), which the ONNX graph does not model yet")
    D, L, H = rnn.num_directions, rnn.num_layers, rnn.hidden_size
    B = x.shape[1]
    if hx is None:
        # Separate tensors: scan refuses initial carries that alias each other.
        hx = (x.new_zeros(L * D, B, H), x.new_zeros(L * D, B, H)) if has_c else x.new_zeros(L * D, B, H)
    h0, c0 = hx if has_c else (hx, None)
    valid = None if valid is None else valid.unsqueeze(2)  # (T, B, 1)
    h_n, c_n = [], []
    for layer in range(L):
        outs = []
        for d in range(D):
            k = layer * D + d
            # Clones, not views into h0: scan's tracer guards on a view's storage offset (k*B*H), which can fix B.
            init = (h0[k].clone(), c0[k].clone()) if has_c else (h0[k].clone(),)
            out, final = _direction(rnn, layer, d, x, valid, init)
            outs.append(out)
            h_n.append(final[0])
            if has_c:
                c_n.append(final[1])
        x = outs[0] if D == 1 else torch.cat(outs, dim=2)  # (T, B, D*H)
    return x, torch.stack(h_n), (torch.stack(c_n) if has_c else None)


def _valid(lengths: Tensor, T: int, time_major: bool) -> Tensor:
    """(B,) lengths → bool mask of the valid steps, (T, B) or (B, T)."""
    steps = torch.arange(T, device=lengths.device)
    return steps[:, None] < lengths[None, :] if time_major else steps[None, :] < lengths[:, None]


# -- one export forward per model ---------------------------------------------------------------------------------
class _LM(nn.Module):
    """RecurrentLM: tokens (T, B), h0 (L, B, H) → logits (T, B, V), h_n."""

    def __init__(self, model: RecurrentLM) -> None:
        super().__init__()
        self.model = model

    def logits(self, tokens: Tensor, hx):
        m = self.model
        if m.encoder is None:  # one-hot input, as a comparison (exports everywhere, unlike one_hot's op)
            x = (tokens[..., None] == torch.arange(m.vocab_size, device=tokens.device)).to(m.decoder.weight.dtype)
        else:
            x = m.encoder(tokens)  # (T, B, E)
        out, h_n, c_n = run_rnn(m.rnn, x, None, hx)
        return m.decoder(out), h_n, c_n  # (T, B, V)

    def forward(self, tokens: Tensor, h0: Tensor):
        logits, h_n, _ = self.logits(tokens, h0)
        return logits, h_n


class _LSTMLM(_LM):
    """RecurrentLM with an LSTM: tokens, h0, c0 → logits, h_n, c_n."""

    def forward(self, tokens: Tensor, h0: Tensor, c0: Tensor):
        return self.logits(tokens, (h0, c0))


class _Sequence(nn.Module):
    """SequenceClassifier (x, lengths → (B, n_outputs)) and SequenceTagger (→ (B, T, n_outputs))."""

    def __init__(self, model: SequenceClassifier | SequenceTagger) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, lengths: Tensor):
        m = self.model
        if m.input_size is not None:
            feats = x  # (B, T, F)
        elif m.embedding is not None:
            feats = m.embedding(x)  # (B, T, E)
        else:
            feats = (x[..., None] == torch.arange(m.vocab_size, device=x.device)).to(m.rnn.weight_ih_l0.dtype)
        T = x.shape[1]
        out, h_n, _ = run_rnn(m.rnn, feats.transpose(0, 1), _valid(lengths, T, time_major=True))
        out = out.transpose(0, 1)  # (B, T, D*H), zeros at padding
        mask = _valid(lengths, T, time_major=False)[..., None]  # (B, T, 1)
        if isinstance(m, SequenceTagger):
            return m.head(out).masked_fill(~mask, 0.0)  # (B, T, n_outputs)
        if m.pooling == "last":
            D = m.rnn.num_directions
            pooled = h_n[-D:].transpose(0, 1).reshape(-1, D * m.hidden)  # (B, D*H)
        elif m.pooling == "mean":
            pooled = (out * mask).sum(1) / mask.sum(1)
        else:
            pooled = out.masked_fill(~mask, float("-inf")).amax(1)
        return m.head(pooled)  # (B, n_outputs)


class _Tagger(nn.Module):
    """BiRNNTagger: words (B, T), chars (B, T, C), lengths (B,) → logits (B, T, tags)."""

    def __init__(self, model: BiRNNTagger) -> None:
        super().__init__()
        self.model = model

    def forward(self, words: Tensor, chars: Tensor, lengths: Tensor):
        m = self.model
        B, T = words.shape
        mask = _valid(lengths, T, time_major=False)  # (B, T)
        x = m.embed(words)  # (B, T, emb)
        if m.char_rnn is not None:
            flat = chars.reshape(B * T, chars.shape[2])  # (N, C), every position (padding too)
            char_len = (flat != 0).sum(1).clamp_min(1)  # as BiRNNTagger.char_features counts them
            ce = m.char_embed(flat).transpose(0, 1)  # (C, N, char_emb)
            _, h_n, _ = run_rnn(m.char_rnn, ce, _valid(char_len, flat.shape[1], time_major=True))
            feats = torch.cat([h_n[0], h_n[1]], dim=1).reshape(B, T, 2 * m.char_hidden)
            x = torch.cat([x, feats.masked_fill(~mask[..., None], 0.0)], dim=2)  # zeros at padding, as the model
        out, _, _ = run_rnn(m.rnn, x.transpose(0, 1), mask.t())
        logits = m.out(out.transpose(0, 1))  # (B, T, tags)
        return logits * mask.unsqueeze(2)


def _wrap(model: nn.Module) -> tuple[nn.Module, list[str], list[str]]:
    if isinstance(model, RecurrentLM):
        if model.cell == "lstm":
            return _LSTMLM(model), ["tokens", "h0", "c0"], ["logits", "hn", "cn"]
        return _LM(model), ["tokens", "h0"], ["logits", "hn"]
    if isinstance(model, (SequenceClassifier, SequenceTagger)):
        return _Sequence(model), ["x", "lengths"], ["logits"]
    if isinstance(model, BiRNNTagger):
        return _Tagger(model), ["words", "chars", "lengths"], ["logits"]
    raise ExportError(f"ONNX export supports RecurrentLM, SequenceClassifier, SequenceTagger and BiRNNTagger; got "
                      f"{type(model).__name__}")


def _refuse_variants(model: nn.Module) -> None:
    """An ExportError when a recurrent layer of ``model`` is not a plain stacked rnnlab layer (a layer-normalised
    cell, a dilated RNN or a Skip RNN of ``rnnlab.variants``): the graphs here rebuild the plain cells only."""
    for layer in recurrent_modules(model):
        if not is_plain(layer):
            raise ExportError(f"ONNX export rebuilds the plain rnnlab layers ({', '.join(PLAIN_CELLS)}, stacked), and "
                              f"this {type(model).__name__} has a {type(layer).__name__} layer (a variant of "
                              "rnnlab.variants), which it cannot export yet; export a model trained without "
                              "--cell layernorm_*, --dilations or --skip")


def example_inputs(model: nn.Module, batch: int = 3, steps: int = 5, chars: int = 4, seed: int = 0) -> tuple:
    """Valid inputs of the exported graph for ``model`` (the PyTorch model's own call takes the same tensors):
    random ids / features, random states, lengths from ``steps`` down (some padded), ``chars`` characters per word
    at most."""
    g = torch.Generator().manual_seed(seed)
    p = next(model.parameters())
    dev, dtype = p.device, p.dtype
    if isinstance(model, RecurrentLM):
        tokens = torch.randint(model.vocab_size, (steps, batch), generator=g).to(dev)
        shape = (model.layers, batch, model.hidden)
        state = [(0.5 * torch.randn(shape, generator=g)).to(dev, dtype) for _ in range(2 if model.cell == "lstm" else 1)]
        return (tokens, *state)
    lengths = torch.randint(1, steps + 1, (batch,), generator=g)
    lengths[0] = steps
    if isinstance(model, (SequenceClassifier, SequenceTagger)):
        if model.input_size is not None:
            x = torch.randn(batch, steps, model.input_size, generator=g).to(dev, dtype)
        else:
            x = torch.randint(model.vocab_size, (batch, steps), generator=g).to(dev)
        return x, lengths.to(dev)
    if isinstance(model, BiRNNTagger):
        valid = torch.arange(steps)[None, :] < lengths[:, None]  # (B, T)
        words = torch.randint(2, model.num_words, (batch, steps), generator=g).masked_fill(~valid, model.pad_id)
        n_chars = torch.randint(1, chars + 1, (batch, steps, 1), generator=g)
        ids = torch.randint(1, model.num_chars, (batch, steps, chars), generator=g)
        ids = ids.masked_fill(torch.arange(chars) >= n_chars, 0).masked_fill(~valid[..., None], 0)
        return words.to(dev), ids.to(dev), lengths.to(dev)
    raise ExportError(f"no example inputs for {type(model).__name__}")


def _trace_sizes(model: nn.Module) -> tuple[int, int, int]:
    """(B, T, C) of the example the exporter traces: distinct, >= 2 (torch.export fixes sizes 0 and 1) and none of
    the parameters' sizes (torch.export assumes that equal sizes are the same size and would fix the batch size to
    a hidden size that happens to equal it)."""
    taken = {d for p in model.parameters() for d in p.shape}
    sizes = [n for n in range(3, 3 + len(taken) + 3) if n not in taken]
    return sizes[0], sizes[1], sizes[2]


def _dynamic_shapes(model: nn.Module):
    from torch.export import Dim

    T, B = Dim("T", min=1), Dim("B", min=1)
    if isinstance(model, RecurrentLM):
        state = {1: B}
        return ({0: T, 1: B}, state, state) if model.cell == "lstm" else ({0: T, 1: B}, state)
    if isinstance(model, (SequenceClassifier, SequenceTagger)):
        return {0: B, 1: T}, {0: B}  # ids (B, T) or features (B, T, F)
    return {0: B, 1: T}, {0: B, 1: T, 2: Dim("C", min=1)}, {0: B}


def _require(*packages: str, purpose: str = "ONNX export") -> None:
    """An ExportError naming the extra to install (rnnlab[onnx]) when one of ``packages`` is missing."""
    for package in packages:
        try:
            require(package, purpose=purpose)
        except MissingExtra as exc:
            raise ExportError(str(exc)) from None


@contextlib.contextmanager
def _quiet_exporter():
    """Silence what torch.onnx's exporter says about itself, not about the model."""
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)  # "torchvision is not installed. Skipping torchvision::nms", per op
    try:
        with warnings.catch_warnings():
            # Warnings from inside torch.export / onnxscript in torch 2.13 that no caller can act on (pytest makes
            # warnings errors, and the CLI would print them): the exporter's own use of deprecated torch.jit and
            # pytree APIs, and its note that two inputs share the dimension name B (they do, on purpose).
            warnings.filterwarnings("ignore", message=r"`torch\.jit\.script_method` is deprecated",
                                    category=DeprecationWarning)
            warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                                    category=FutureWarning)
            warnings.filterwarnings("ignore", message=r"# The axis name: \w+ will not be used", category=UserWarning)
            yield
    finally:
        registration.setLevel(level)


def export_onnx(model: nn.Module, path: str | Path, *, opset_version: int | None = None) -> tuple[list[str], list[str]]:
    """Write ``model`` (RecurrentLM, SequenceClassifier, SequenceTagger or BiRNNTagger; in eval mode during the
    export, put back as it was) to the ONNX file ``path``, with dynamic batch size and sequence length (and word
    length for the tagger's characters). Returns (input names, output names). Raises ExportError. (A ``Seq2Seq`` is
    two graphs: ``export_seq2seq``.)"""
    if isinstance(model, Seq2Seq):
        raise ExportError("a Seq2Seq model is exported as two graphs (encoder and one decoder step): use "
                          "export_seq2seq(model, 'out.onnx')")
    _refuse_variants(model)
    wrapper, inputs, outputs = _wrap(model)
    _require("onnx", "onnxscript")
    _scan()
    B, T, C = _trace_sizes(model)
    _export(model, wrapper, example_inputs(model, batch=B, steps=T, chars=C), inputs, outputs,
            _dynamic_shapes(model), Path(path), opset_version)
    return inputs, outputs


def _export(model: nn.Module, wrapper: nn.Module, args: tuple, inputs: list[str], outputs: list[str], dynamic,
            path: Path, opset_version: int | None, varargs: bool = False) -> None:
    """torch.onnx.export of ``wrapper`` (holding ``model``) traced on ``args``, in eval mode, into ``path``;
    ``dynamic``: one dict of dynamic axes per input (``varargs``: the wrapper's forward takes ``*inputs``)."""
    was = model.training
    wrapper.eval()  # the model too: no dropout, and the exporter warns about modules in training mode
    try:
        # Weights go inside the .onnx file unless they would pass protobuf's 2 GiB limit.
        external = sum(p.numel() * p.element_size() for p in model.parameters()) > 1 << 30
        with torch.no_grad(), _quiet_exporter():
            program = torch.onnx.export(wrapper, args, dynamo=True, input_names=inputs, output_names=outputs,
                                        dynamic_shapes=(dynamic,) if varargs else dynamic,
                                        opset_version=opset_version, verbose=False)
            _check_dynamic(program.model.graph.inputs, dynamic)
            program.save(str(path), external_data=external)
    finally:
        model.train(was)


def _check_dynamic(graph_inputs, dynamic) -> None:
    """Refuse a graph whose batch or time axis came out fixed: the exporter falls back to fixed sizes silently
    when it cannot keep them symbolic."""
    for value, dims in zip(graph_inputs, dynamic):
        fixed = [axis for axis in dims if isinstance(value.shape[axis], int)]
        if fixed:
            raise ExportError(f"the exporter fixed axis {fixed[0]} of input {value.name!r} to "
                              f"{value.shape[fixed[0]]}, so the graph would not take other batch sizes or lengths "
                              f"(torch {torch.__version__}); please report it")


def _reference(model: nn.Module, inputs: tuple) -> list[Tensor]:
    """The PyTorch model's own outputs (its training-time forward: engine, packing) for the graph's inputs."""
    with torch.no_grad():
        if isinstance(model, RecurrentLM):
            state = inputs[1:] if model.cell == "lstm" else inputs[1]
            logits, state = model(inputs[0], tuple(state) if model.cell == "lstm" else state)
            return [logits, *state] if model.cell == "lstm" else [logits, state]
        return [model(*inputs)]


def check_onnx(model: nn.Module, path: str | Path, inputs: tuple) -> float:
    """Run the ONNX file ``path`` in onnxruntime on ``inputs`` (see ``example_inputs``) and return the largest
    absolute difference from the PyTorch model's outputs (in eval mode) over all outputs."""
    _require("onnxruntime", purpose="checking an ONNX graph")
    import onnxruntime

    was = model.training
    model.eval()
    try:
        expected = _reference(model, inputs)
    finally:
        model.train(was)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    got = session.run(None, {n: t.detach().cpu().numpy() for n, t in zip(names, inputs)})
    return max(float((torch.from_numpy(g) - e.cpu()).abs().max()) for g, e in zip(got, expected))


# -- sequence to sequence: two graphs ------------------------------------------------------------------------------
def seq2seq_paths(path: str | Path) -> tuple[Path, Path]:
    """``OUT.onnx`` → (``OUT.encoder.onnx``, ``OUT.decoder_step.onnx``): the two files of a Seq2Seq export."""
    path = Path(path)
    stem = path.name[:-5] if path.name.lower().endswith(".onnx") else path.name
    return path.with_name(f"{stem}.encoder.onnx"), path.with_name(f"{stem}.decoder_step.onnx")


def _seq2seq_names(model: Seq2Seq) -> dict:
    """The input and output names of both graphs: what exists depends on the cell (c for an LSTM), attention
    (memory, keys, mask, attention weights) and input feeding (feed)."""
    lstm, att, feeding = model.cell == "lstm", model.attention is not None, model.input_feeding
    enc_out = ["memory"] + (["keys"] if att else []) + ["mask", "h0"] + (["c0"] if lstm else [])
    state = ["h"] + (["c"] if lstm else []) + (["feed"] if feeding else [])
    step_in = ["y_prev", *state] + (["memory", "keys", "mask"] if att else [])
    step_out = ["logits", *(f"{n}_next" for n in state)] + (["attention"] if att else [])
    return {"encoder": (["src", "src_lengths"], enc_out), "decoder_step": (step_in, step_out)}


class _Seq2SeqEncoder(nn.Module):
    """src (B, S) int64, src_lengths (B,) int64 → memory (B, S, M) (zeros at padding), [keys (B, S, K)], mask
    (B, S) bool, h0 (L_d, B, H_d) [, c0]: ``Seq2Seq.encode`` without packing."""

    def __init__(self, model: Seq2Seq) -> None:
        super().__init__()
        self.model = model

    def forward(self, src: Tensor, src_lengths: Tensor):
        m = self.model
        S = src.shape[1]
        e = m.src_embedding(src).transpose(0, 1)  # (S, B, E)
        out, h_n, c_n = run_rnn(m.encoder, e, _valid(src_lengths, S, time_major=True))
        memory = out.transpose(0, 1)  # (B, S, M), zeros at padding as pad_packed_sequence gives
        outs = [memory]
        if m.attention is not None:
            outs.append(m.attention.keys(memory))  # (B, S, K)
        outs.append(_valid(src_lengths, S, time_major=False))  # (B, S)
        outs.append(m._bridge(h_n, m.bridge_h, True))  # (L_d, B, H_d)
        if c_n is not None:
            outs.append(m._bridge(c_n, m.bridge_c, False))
        return tuple(outs)


class _Seq2SeqStep(nn.Module):
    """One decoder step, ``_DecoderModel._step`` in eval mode: the inputs and outputs named by
    ``_seq2seq_names``, in that order."""

    def __init__(self, model: Seq2Seq) -> None:
        super().__init__()
        self.model = model

    def forward(self, *inputs: Tensor):
        m = self.model
        rnn = m.decoder
        lstm = m.cell == "lstm"
        it = iter(inputs)
        y, h = next(it), next(it)  # (B,), (L, B, H)
        c = next(it) if lstm else None
        feed = next(it) if m.input_feeding else None
        mem = Memory(next(it), next(it), next(it), None) if m.attention is not None else None
        x = m.tgt_embedding(y)  # (B, E)
        if feed is not None:
            x = torch.cat([x, feed], -1)  # (B, E + H_d)
        cell, opts = _CELL[rnn._engine_mode], _OPTS[rnn._engine_mode]
        hs, cs = [], []
        for layer in range(rnn.num_layers):
            w_ih, w_hh, b_ih, b_hh = rnn._weights(layer, 0)
            gi = x @ w_ih.t()  # (B, G*H)
            if rnn.bias:
                gi = gi + b_ih
            else:
                b_hh = None
            new, _ = cell.forward(gi, (h[layer], c[layer]) if lstm else (h[layer],), w_hh, b_hh, **opts)
            hs.append(new[0])
            if lstm:
                cs.append(new[1])
            x = new[0]  # (B, H_d): the next layer's input (no dropout in eval mode)
        out = [None, torch.stack(hs)] + ([torch.stack(cs)] if lstm else [])
        h_tilde, weights = m._attend(x[:, None, :], mem)  # (B, 1, H_d), (B, 1, S)
        out[0] = m.out(h_tilde[:, 0])  # (B, V)
        if feed is not None:
            out.append(h_tilde[:, 0])  # (B, H_d): h~_t, fed to the next step
        if mem is not None:
            out.append(weights[:, 0])  # (B, S)
        return tuple(out)


def _seq2seq_examples(model: Seq2Seq, batch: int, steps: int, seed: int = 0) -> tuple[tuple, tuple]:
    """Valid inputs of the encoder graph (src, src_lengths; garbage ids in the padding) and of the step graph."""
    g = torch.Generator().manual_seed(seed)
    p = next(model.parameters())
    dev, dtype = p.device, p.dtype
    lo = 4 if model.src_vocab > 4 else 1  # real symbols after the specials, where there are any
    src = torch.randint(lo, model.src_vocab, (batch, steps), generator=g).to(dev)
    lengths = torch.randint(1, steps + 1, (batch,), generator=g)
    lengths[0] = steps
    L, H = model.dec_layers, model.dec_hidden
    step = [torch.randint(model.tgt_vocab, (batch,), generator=g).to(dev)]
    step += [(0.5 * torch.randn(L, batch, H, generator=g)).to(dev, dtype)
             for _ in range(2 if model.cell == "lstm" else 1)]
    if model.input_feeding:
        step.append((0.5 * torch.randn(batch, H, generator=g)).to(dev, dtype))
    if model.attention is not None:
        memory = torch.randn(batch, steps, model.memory_size, generator=g).to(dev, dtype)
        mask = torch.arange(steps)[None, :] < lengths[:, None]
        memory = memory.masked_fill(~mask[..., None].to(dev), 0.0)
        with torch.no_grad():
            keys = model.attention.keys(memory)
        step += [memory, keys, mask.to(dev)]
    return (src, lengths.to(dev)), tuple(step)


def _seq2seq_dynamic(model: Seq2Seq):
    from torch.export import Dim

    B, S = Dim("B", min=1), Dim("S", min=1)
    enc = ({0: B, 1: S}, {0: B})
    state = [{1: B}] * (2 if model.cell == "lstm" else 1) + ([{0: B}] if model.input_feeding else [])
    step = [{0: B}, *state] + ([{0: B, 1: S}] * 3 if model.attention is not None else [])
    return enc, tuple(step)


def export_seq2seq(model: nn.Module, path: str | Path, *, opset_version: int | None = None) -> dict:
    """Write a ``Seq2Seq`` as two ONNX files beside ``path`` (``OUT.onnx`` → ``OUT.encoder.onnx`` and
    ``OUT.decoder_step.onnx``, see ``seq2seq_paths``), with dynamic batch size and source length:

        encoder        src (B, S) int64, src_lengths (B,) int64
                       → memory (B, S, M), [keys (B, S, K)], mask (B, S) bool, h0 (L, B, H) [, c0 (L, B, H)]
        decoder step   y_prev (B,) int64, h [, c] [, feed (B, H)] [, memory, keys, mask]
                       → logits (B, V), h_next [, c_next] [, feed_next] [, attention (B, S)]

    [keys], memory/keys/mask into the step and the attention weights exist with attention; c with an LSTM; feed
    with input feeding (start it at zeros). Decode by feeding y_prev = <bos> first, then each step's choice, and
    each X_next back as X (``onnx_greedy`` does it). Returns {"encoder": (path, inputs, outputs),
    "decoder_step": (...)}. Raises ExportError."""
    if not isinstance(model, Seq2Seq):
        raise ExportError(f"export_seq2seq writes encoder-decoder (Seq2Seq) models; got {type(model).__name__}")
    _refuse_variants(model)
    _require("onnx", "onnxscript")
    _scan()
    names = _seq2seq_names(model)
    B, S, _ = _trace_sizes(model)
    enc_args, step_args = _seq2seq_examples(model, B, S)
    enc_dyn, step_dyn = _seq2seq_dynamic(model)
    enc_path, step_path = seq2seq_paths(path)
    _export(model, _Seq2SeqEncoder(model), enc_args, *names["encoder"], enc_dyn, enc_path, opset_version)
    _export(model, _Seq2SeqStep(model), step_args, *names["decoder_step"], step_dyn, step_path, opset_version,
            varargs=True)
    return {"encoder": (enc_path, *names["encoder"]), "decoder_step": (step_path, *names["decoder_step"])}


def onnx_greedy(encoder_path: str | Path, step_path: str | Path, src: Tensor, src_lengths: Tensor, *,
                max_len: int | None = None, bos_id: int = 2, eos_id: int = 3) -> list:
    """Greedy decoding with the two graphs of ``export_seq2seq`` in onnxruntime — a Python loop over the decoder
    step, as ``Seq2Seq.greedy`` does it: the most likely token each step until <eos> or ``max_len`` tokens
    (default 2 x the source length + 10, per sequence). Returns ``rnnlab.models.seq2seq.Decoded``s (ids,
    finished, total log-probability, attention weights (steps, source length) or (steps, 0))."""
    import numpy as np

    from .models.seq2seq import Decoded

    _require("onnxruntime", purpose="running an ONNX graph")
    import onnxruntime

    opts = {"providers": ["CPUExecutionProvider"]}
    enc = onnxruntime.InferenceSession(str(encoder_path), **opts)
    step = onnxruntime.InferenceSession(str(step_path), **opts)
    src_np = src.detach().cpu().numpy().astype(np.int64)
    lengths = src_lengths.detach().cpu().numpy().astype(np.int64)
    B = src_np.shape[0]
    values = dict(zip([o.name for o in enc.get_outputs()], enc.run(None, {"src": src_np, "src_lengths": lengths})))
    values["h"] = values.pop("h0")
    if "c0" in values:
        values["c"] = values.pop("c0")
    values["feed"] = np.zeros_like(values["h"][0])  # h~_0 = 0 (used with input feeding only)
    limits = [max_len] * B if max_len is not None else [2 * int(n) + 10 for n in lengths]
    y = np.full((B,), bos_id, dtype=np.int64)
    done = np.zeros(B, dtype=bool)
    scores = np.zeros(B, dtype=np.float64)
    step_in = [i.name for i in step.get_inputs()]
    step_out = [o.name for o in step.get_outputs()]
    steps, attn = [], []
    for t in range(max(limits)):
        out = dict(zip(step_out, step.run(None, {n: (y if n == "y_prev" else values[n]) for n in step_in})))
        for n in step_out:
            if n.endswith("_next"):
                values[n[:-5]] = out[n]
        logits = out["logits"].astype(np.float64)
        logp = logits - logits.max(-1, keepdims=True)
        logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
        y = out["logits"].argmax(-1).astype(np.int64)
        scores += np.where(done, 0.0, logp[np.arange(B), y])
        steps.append(y)
        attn.append(out["attention"] if "attention" in out else np.zeros((B, 0), dtype=np.float32))
        done |= (y == eos_id) | np.array([t + 1 >= n for n in limits])
        if done.all():
            break
    ids, attn_all = np.stack(steps, 1), np.stack(attn, 1)  # (B, steps), (B, steps, S)
    result = []
    for b in range(B):
        row = ids[b, :limits[b]].tolist()
        finished = eos_id in row
        n = row.index(eos_id) + 1 if finished else len(row)
        S = int(lengths[b]) if attn_all.shape[2] else 0  # without attention: (steps, 0)
        result.append(Decoded(row[:n - 1] if finished else row[:n], finished, float(scores[b]),
                              torch.from_numpy(attn_all[b, :n, :S].copy())))
    return result


def check_seq2seq(model: Seq2Seq, encoder_path: str | Path, step_path: str | Path, src: Tensor,
                  src_lengths: Tensor) -> tuple[bool, float]:
    """Greedy decoding of ``src`` by ``onnx_greedy`` against ``model.greedy``: (the same tokens and <eos> for every
    sequence, the largest difference of the sequence scores and attention weights where the tokens agree)."""
    expected = model.greedy(src, src_lengths)
    got = onnx_greedy(encoder_path, step_path, src, src_lengths, bos_id=model.bos_id, eos_id=model.eos_id)
    same, diff = True, 0.0
    for g, e in zip(got, expected):
        if g.ids != e.ids or g.finished != e.finished:
            same = False
            continue
        diff = max(diff, abs(g.score - e.score))
        if e.attention.numel():
            diff = max(diff, float((g.attention.double() - e.attention.double()).abs().max()))
    return same and len(got) == len(expected), diff
