"""``rnnlab export RUN_DIR --onnx OUT.onnx``: write a trained language model ('rnnlab train lm'), sequence classifier,
regressor or per-step model ('rnnlab train classify', 'rnnlab train regress', 'rnnlab task') or tagger ('rnnlab
train tag') as an ONNX graph that takes any batch size and sequence length, or an encoder-decoder ('rnnlab train
seq2seq') as two graphs, OUT.encoder.onnx and OUT.decoder_step.onnx; then check it in onnxruntime against PyTorch.

The graphs are described in EPILOG (``rnnlab export --help``) and in ``rnnlab.export``.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from .._optional import require
from ..train.checkpoint import CheckpointError, load_checkpoint
from .options import UsageError

EPILOG = """\
graphs (padding is handled inside them, from the lengths):
  language model   tokens (T, B) int64, h0 (L, B, H) [, c0 for an LSTM] -> logits (T, B, V), hn [, cn];
                   T = 1 is one step of generation: feed hn (and cn) back in; zeros start a stream
  classifier       x (B, T) int64 ids (or (B, T, F) float features), lengths (B,) int64 -> logits (B, classes)
  per-step model   x, lengths -> logits (B, T, outputs), zeros past each sequence's end
  tagger           words (B, T) int64, chars (B, T, C) int64 (0-padded), lengths (B,) int64 -> logits (B, T, tags)
  seq2seq          two files beside OUT.onnx (OUT.onnx itself is not written):
                   OUT.encoder.onnx       src (B, S) int64, src_lengths (B,) int64 -> memory (B, S, M),
                                          [keys (B, S, K)], mask (B, S) bool, h0 (L, B, H) [, c0 for an LSTM]
                   OUT.decoder_step.onnx  one decoder step: y_prev (B,) int64, h [, c] [, feed (B, H)]
                                          [, memory, keys, mask] -> logits (B, V), h_next [, c_next]
                                          [, feed_next] [, attention (B, S)]
                   keys, memory/keys/mask in and attention out exist with attention; feed with input feeding
                   (start it at zeros). Decode: y_prev = <bos> (id 2) first, then the chosen token, each X_next
                   fed back as X, until <eos> (id 3); rnnlab.export.onnx_greedy is such a loop in Python.
  The vocabularies (token, word and character ids, labels) stay in the checkpoint's checkpoint.json.

examples:
  rnnlab export runs/ptb --onnx ptb.onnx     a language model (its best/ weights, else last/)
  rnnlab export runs/sst2/last --onnx sst2.onnx
                                             a particular checkpoint of a classifier
  rnnlab export runs/upos --onnx upos.onnx --no-check
                                             a tagger; skip the onnxruntime comparison
  rnnlab export runs/reverse --onnx reverse.onnx
                                             an encoder-decoder: reverse.encoder.onnx, reverse.decoder_step.onnx;
                                             the check decodes greedily in onnxruntime against PyTorch
  python -c "import onnxruntime as ort; print([i.name for i in ort.InferenceSession('ptb.onnx').get_inputs()])"
                                             the graph's input names

needs: pip install rnnlab[onnx]   (onnx, onnxscript; onnxruntime for the check)
"""

# Model kinds in checkpoint.json → what they are called in messages.
KINDS = {"rnn": "language model", "sequence_classifier": "classifier", "sequence_tagger": "per-step model",
         "bi_rnn_tagger": "tagger", "seq2seq": "encoder-decoder"}


def add_parser(subparsers, parents) -> argparse.ArgumentParser:
    p = subparsers.add_parser("export", parents=parents, help="write a trained LM, classifier, tagger or "
                              "encoder-decoder as ONNX (dynamic batch size and sequence length)",
                              description=__doc__.split("\n\n")[0].replace("``", "'"),
                              epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", metavar="RUN_DIR", help="a run directory (its best/ is used, else last/) or a "
                   "checkpoint directory of 'rnnlab train lm|classify|regress|tag|seq2seq' or 'rnnlab task'")
    p.add_argument("--onnx", required=True, metavar="OUT.onnx", help="the ONNX file to write (replaced if it exists); "
                   "for an encoder-decoder, OUT.encoder.onnx and OUT.decoder_step.onnx instead")
    p.add_argument("--no-check", dest="check", action="store_false",
                   help="do not run the graph in onnxruntime against PyTorch on random inputs of two sizes")
    p.set_defaults(run=run)
    return p


def _load(path: str):
    """(model, checkpoint) of any exportable kind; UsageError for the others."""
    try:
        config = load_checkpoint(path, prefer="best").meta.get("model")
        kind = config.get("kind") if isinstance(config, dict) else None
        if kind == "rnn":
            from ..train.lm import load_lm

            model, _, ckpt = load_lm(path, prefer="best")
        elif kind in ("sequence_classifier", "sequence_tagger"):
            from ..train.supervised import load_sequence_model

            model, ckpt = load_sequence_model(path, prefer="best")
        elif kind == "bi_rnn_tagger":
            from ..train.tagging import load_tagger

            model, _, ckpt = load_tagger(path, prefer="best")
        elif kind == "seq2seq":
            from ..train.seq2seq import load_seq2seq

            model, _, ckpt = load_seq2seq(path, prefer="best")
        else:
            what = "an n-gram language model" if kind == "ngram" else f"a model of kind {kind!r}"
            raise UsageError(f"RUN_DIR holds {what}; export writes language models ('rnnlab train lm'), "
                             "classifiers and regressors ('rnnlab train classify', 'rnnlab train regress', "
                             "'rnnlab task'), taggers ('rnnlab train tag') and encoder-decoders ('rnnlab train "
                             "seq2seq')")
    except CheckpointError as exc:
        raise UsageError(f"RUN_DIR {exc}") from None
    return model, kind, ckpt


def run(args: argparse.Namespace) -> int:
    out = Path(args.onnx)
    if out.suffix.lower() != ".onnx":
        raise UsageError(f"--onnx {args.onnx}: name the file *.onnx")
    if not out.parent.is_dir():
        raise UsageError(f"--onnx {args.onnx}: the directory {out.parent} does not exist")
    # Before loading anything: a missing package of rnnlab[onnx] is one line (rnnlab.cli.main prints it).
    for package in ("onnx", "onnxscript"):
        require(package, purpose="ONNX export (--onnx)")
    if args.check:
        require("onnxruntime", purpose="the check in onnxruntime", alternative="or pass --no-check")
    from ..export import ExportError, check_onnx, example_inputs, export_onnx

    model, kind, ckpt = _load(args.checkpoint)
    if kind == "seq2seq":
        return _run_seq2seq(args, out, model, ckpt)
    start = time.monotonic()
    try:
        inputs, outputs = export_onnx(model, out)
    except ExportError as exc:
        raise UsageError(str(exc)) from None
    line = (f"wrote {out} ({KINDS[kind]} from {ckpt.path}; inputs {', '.join(inputs)} → outputs "
            f"{', '.join(outputs)}) in {time.monotonic() - start:.1f} s")
    if args.check:
        # Two sizes other than the traced one, the second with padding in the batch.
        diff = max(check_onnx(model, out, example_inputs(model, batch=b, steps=t, seed=s))
                   for s, (b, t) in enumerate(((1, 1), (4, 9))))
        line += f"; onnxruntime matches PyTorch to {diff:.1e}"
        if diff > 1e-4:  # not the user's doing: exit code 1, as other failures
            raise RuntimeError(f"{line}, but that is more than 1e-4: the graph is wrong; please report it")
    print(line)
    return 0


def _run_seq2seq(args: argparse.Namespace, out: Path, model, ckpt) -> int:
    """An encoder-decoder: two graphs, checked by greedy decoding in onnxruntime against PyTorch's."""
    import torch

    from ..export import ExportError, check_seq2seq, export_seq2seq

    start = time.monotonic()
    try:
        written = export_seq2seq(model, out)
    except ExportError as exc:
        raise UsageError(str(exc)) from None
    enc, step = written["encoder"], written["decoder_step"]
    line = (f"wrote {enc[0]} (inputs {', '.join(enc[1])} → outputs {', '.join(enc[2])}) and {step[0]} (one decoder "
            f"step: inputs {', '.join(step[1])} → outputs {', '.join(step[2])}); {KINDS['seq2seq']} from {ckpt.path} "
            f"in {time.monotonic() - start:.1f} s")
    if args.check:
        # Greedy decoding of random sources at two sizes other than the traced one, the second with padding.
        g = torch.Generator().manual_seed(0)
        lo = 4 if model.src_vocab > 4 else 1
        same, diff, n = True, 0.0, 0
        for lengths in ([1], [9, 4, 7, 1]):
            lengths = torch.tensor(lengths)
            src = torch.randint(lo, model.src_vocab, (len(lengths), int(lengths.max())), generator=g)
            ok, d = check_seq2seq(model, enc[0], step[0], src, lengths)
            same, diff, n = same and ok, max(diff, d), n + len(lengths)
        if not same:
            raise RuntimeError(f"{line}; but greedy decoding in onnxruntime gave other tokens than PyTorch's: the "
                               "graphs are wrong; please report it")
        line += (f"; greedy decoding in onnxruntime gives PyTorch's tokens ({n} sources), scores and attention "
                 f"weights to {diff:.1e}")
        if diff > 1e-4:
            raise RuntimeError(f"{line}, but that is more than 1e-4: the graphs are wrong; please report it")
    print(line)
    return 0
