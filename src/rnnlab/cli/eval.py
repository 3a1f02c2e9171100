"""``rnnlab eval CHECKPOINT --file FILE``: a trained language model's loss, perplexity (and bits per character for
a character model) on a text file, read as one stream with the state carried from chunk to chunk."""
from __future__ import annotations

import argparse

import torch

from ..data import token_cache
from ..data.text import DataError, LMStream, read_text
from ..train.checkpoint import CheckpointError
from ..train.lm import evaluate, load_lm
from .options import UsageError, int_range, usable_device
from .train import add_cache_flags, cache_dir_of
from .unknown import check_lm_text, lm_unknown_note, say

EPILOG = """\
examples:
  rnnlab eval runs/ptb --file ptb.test.txt          the run's best/ weights on the test file
  rnnlab eval runs/ptb/last --file ptb.valid.txt    a particular checkpoint
  rnnlab eval runs/shakespeare --file input.txt --batch-size 1 --bptt 256
"""


def add_parser(subparsers, parents) -> argparse.ArgumentParser:
    p = subparsers.add_parser("eval", parents=parents, help="loss, perplexity and bits per char of a trained LM on a "
                              "text file", description=__doc__.split("\n\n")[0].replace("``", "'"), epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="a checkpoint directory, or a run directory (its best/ "
                   "is used, else last/)")
    p.add_argument("--file", required=True, metavar="FILE", help="UTF-8 text to evaluate on")
    p.add_argument("--batch-size", type=int_range(1, 100_000), default=10, metavar="B",
                   help="parallel columns (default: %(default)s, as pytorch's word_language_model evaluates; the "
                   "last < B tokens are left out)")
    p.add_argument("--bptt", type=int_range(1, 100_000), default=64, metavar="T",
                   help="steps per chunk; the state is carried across chunks, so this changes speed, not the result "
                   "(default: %(default)s)")
    p.add_argument("--device", default="cpu", metavar="DEV", help="torch device (default: %(default)s)")
    add_cache_flags(p, "--file is")
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    device = usable_device(args.device)
    try:
        model, vocab, ckpt = load_lm(args.checkpoint, prefer="best", device=device)
    except CheckpointError as exc:
        raise UsageError(f"CHECKPOINT {exc}") from None
    cache_dir = cache_dir_of(args, [args.file])
    try:
        cached = _cached(args, vocab, cache_dir) if cache_dir is not None else None
        if cached is not None:
            tokens, note, n_unk = cached
        else:
            text = read_text(args.file)
            note = check_lm_text(vocab, text, f"--file {args.file}")
            tokens = torch.tensor(vocab.encode(text, name=args.file), dtype=torch.long)  # (N,)
            n_unk = int((tokens == vocab.unk_id).sum()) if vocab.unk_id is not None else 0
            del text
        stream = LMStream(tokens, args.batch_size, args.bptt, name=args.file)
    except DataError as exc:
        raise UsageError(f"--file {exc}") from None
    say(note)
    m = evaluate(model, stream, vocab.level)
    used = stream.tokens_per_epoch + args.batch_size
    unk = f", {n_unk:,} of them <unk>" if vocab.unk_id is not None else ""
    line = f"{args.file}: loss {m['loss']:.4f}  ppl {m['ppl']:.2f}"
    if "bpc" in m:
        line += f"  bpc {m['bpc']:.3f}"
    print(f"{line}  ({used:,} of {tokens.numel():,} {vocab.level} tokens{unk}; model {ckpt.path})")
    return 0


def _cached(args, vocab, cache_dir):
    """(tokens mapped from the token cache, the unknown-token note, the number of <unk> ids), or None when the cache
    directory cannot be used (said in a note)."""
    try:
        c = token_cache.cached_stream(args.file, vocab, cache_dir=cache_dir, note=say)
    except token_cache.CacheUnavailable as exc:
        say(f"the token cache cannot be used ({exc}); tokenising in memory this time (give --cache-dir DIR, a "
            "writable directory, or --no-cache)")
        return None
    note = lm_unknown_note(vocab, c.unknown, c.total, f"--file {args.file}")  # a UsageError when unreadable
    return c.tokens, note, c.unk_ids
