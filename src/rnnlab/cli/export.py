"""``rnnlab export RUN_DIR --onnx OUT.onnx``: write a trained language model ('rnnlab train lm'), sequence classifier
or per-step model ('rnnlab train classify', 'rnnlab task') or tagger ('rnnlab train tag') as an ONNX graph that takes
any batch size and sequence length, then check it in onnxruntime against PyTorch.

The graphs are described in EPILOG (``rnnlab export --help``) and in ``rnnlab.export``.
"""
from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path

from ..train.checkpoint import CheckpointError, load_checkpoint
from .options import UsageError

EPILOG = """\
graphs (padding is handled inside them, from the lengths):
  language model   tokens (T, B) int64, h0 (L, B, H) [, c0 for an LSTM] -> logits (T, B, V), hn [, cn];
                   T = 1 is one step of generation: feed hn (and cn) back in; zeros start a stream
  classifier       x (B, T) int64 ids (or (B, T, F) float features), lengths (B,) int64 -> logits (B, classes)
  per-step model   x, lengths -> logits (B, T, outputs), zeros past each sequence's end
  tagger           words (B, T) int64, chars (B, T, C) int64 (0-padded), lengths (B,) int64 -> logits (B, T, tags)
  The vocabularies (token, word and character ids, labels) stay in the checkpoint's checkpoint.json.

examples:
  rnnlab export runs/ptb --onnx ptb.onnx     a language model (its best/ weights, else last/)
  rnnlab export runs/sst2/last --onnx sst2.onnx
                                             a particular checkpoint of a classifier
  rnnlab export runs/upos --onnx upos.onnx --no-check
                                             a tagger; skip the onnxruntime comparison
  python -c "import onnxruntime as ort; print([i.name for i in ort.InferenceSession('ptb.onnx').get_inputs()])"
                                             the graph's input names

needs: pip install rnnlab[onnx]   (onnx, onnxscript; onnxruntime for the check)
"""

# Model kinds in checkpoint.json → what they are called in messages.
KINDS = {"rnn": "language model", "sequence_classifier": "classifier", "sequence_tagger": "per-step model",
         "bi_rnn_tagger": "tagger"}


def add_parser(subparsers, parents) -> argparse.ArgumentParser:
    p = subparsers.add_parser("export", parents=parents, help="write a trained LM, classifier or tagger as ONNX "
                              "(dynamic batch size and sequence length)",
                              description=__doc__.split("\n\n")[0].replace("``", "'"),
                              epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", metavar="RUN_DIR", help="a run directory (its best/ is used, else last/) or a "
                   "checkpoint directory of 'rnnlab train lm|classify|tag' or 'rnnlab task'")
    p.add_argument("--onnx", required=True, metavar="OUT.onnx", help="the ONNX file to write (replaced if it exists)")
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
        else:
            what = "an n-gram language model" if kind == "ngram" else f"a model of kind {kind!r}"
            raise UsageError(f"RUN_DIR holds {what}; export writes language models ('rnnlab train lm'), "
                             "classifiers ('rnnlab train classify', 'rnnlab task') and taggers ('rnnlab train tag')")
    except CheckpointError as exc:
        raise UsageError(f"RUN_DIR {exc}") from None
    return model, kind, ckpt


def run(args: argparse.Namespace) -> int:
    out = Path(args.onnx)
    if out.suffix.lower() != ".onnx":
        raise UsageError(f"--onnx {args.onnx}: name the file *.onnx")
    if not out.parent.is_dir():
        raise UsageError(f"--onnx {args.onnx}: the directory {out.parent} does not exist")
    if args.check and importlib.util.find_spec("onnxruntime") is None:
        raise UsageError("the check needs onnxruntime: pip install rnnlab[onnx] (or pass --no-check)")
    from ..export import ExportError, check_onnx, example_inputs, export_onnx

    model, kind, ckpt = _load(args.checkpoint)
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
