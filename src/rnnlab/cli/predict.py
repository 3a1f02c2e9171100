"""``rnnlab predict RUN_DIR --file FILE``: tag new sentences with a tagger trained by 'rnnlab train tag'. The input
is CoNLL-U (its lines are written back with the predicted tags in the trained column) or plain text (one sentence
per line, tokens separated by whitespace)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from ..data.conllu import format_conllu, format_slash, read_conllu_sentences, read_plain
from ..data.text import DataError
from ..train.checkpoint import CheckpointError
from ..train.tagging import load_tagger, tag_sentences
from .options import UsageError, int_range

CONLLU_SUFFIXES = (".conllu", ".conll")

EPILOG = """\
examples:
  rnnlab predict runs/ewt-upos --file en_ewt-ud-test.conllu --output test.tagged.conllu
                                         CoNLL-U in, CoNLL-U out (the tag column filled in); prints the accuracy
                                         when the file already has tags
  rnnlab predict runs/ewt-upos --file sentences.txt --format slash
                                         one tokenised sentence per line in, word/TAG per line out (stdout)
  rnnlab predict runs/ewt-upos/last --file in.conllu --format slash
                                         a particular checkpoint; word/TAG output from CoNLL-U input
"""


def add_parser(subparsers, parents) -> argparse.ArgumentParser:
    p = subparsers.add_parser("predict", parents=parents, help="tag sentences (CoNLL-U or plain text) with a "
                              "trained tagger", description=__doc__.split("\n\n")[0].replace("``", "'"),
                              epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", metavar="RUN_DIR", help="a run directory of 'rnnlab train tag' (its best/ is used, "
                   "else last/) or a checkpoint directory")
    p.add_argument("--file", required=True, metavar="FILE", help="sentences to tag: CoNLL-U (*.conllu, *.conll) or "
                   "plain text, one sentence per line, whitespace-separated tokens")
    p.add_argument("--input-format", choices=("auto", "conllu", "text"), default="auto",
                   help="how to read --file; auto: CoNLL-U for *.conllu / *.conll, else text (default: %(default)s)")
    p.add_argument("--format", choices=("conllu", "slash"), default=None,
                   help="output: CoNLL-U with the predicted tags, or word/TAG per sentence line (default: the "
                   "input's kind: conllu for CoNLL-U input, slash for text)")
    p.add_argument("--output", metavar="FILE", help="write the tagged text here (default: stdout)")
    p.add_argument("--batch-size", type=int_range(1, 100_000), default=64, metavar="B",
                   help="sentences per batch; changes speed, not the tags (default: %(default)s)")
    p.add_argument("--device", default="cpu", metavar="DEV", help="torch device (default: %(default)s)")
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    try:
        model, vocab, ckpt = load_tagger(args.checkpoint, prefer="best", device=torch.device(args.device))
    except CheckpointError as exc:
        raise UsageError(f"RUN_DIR {exc}") from None
    kind = args.input_format
    if kind == "auto":
        kind = "conllu" if Path(args.file).suffix.lower() in CONLLU_SUFFIXES else "text"
    try:
        if kind == "conllu":
            sentences = read_conllu_sentences(args.file, vocab.column, require_tags=False)
        else:
            sentences = read_plain(args.file)
    except DataError as exc:
        hint = (" (reading it as CoNLL-U because of its name; pass --input-format text for plain text)"
                if args.input_format == "auto" and kind == "conllu" else "")
        raise UsageError(f"--file {exc}{hint}") from None
    fmt = args.format or ("conllu" if kind == "conllu" else "slash")
    if args.output and Path(args.output).resolve() == Path(args.file).resolve():
        raise UsageError(f"--output {args.output} is the input file; write the tags to another file")

    tags = tag_sentences(model, vocab, sentences, args.batch_size, torch.device(args.device))
    text = format_conllu(sentences, tags, vocab.column) if fmt == "conllu" else format_slash(sentences, tags)
    if args.output:
        try:
            Path(args.output).write_text(text, encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"--output {args.output}: cannot write ({exc.strerror})") from None
    else:
        sys.stdout.write(text)
        sys.stdout.flush()

    words = sum(len(s.words) for s in sentences)
    unknown = sum(vocab.is_unknown(w) for s in sentences for w in s.words)
    line = (f"tagged {len(sentences):,} sentences, {words:,} words ({unknown:,} unknown to the model) with "
            f"{ckpt.path}" + (f" into {args.output}" if args.output else ""))
    gold = [s for s in sentences if s.tags is not None]
    if gold and len(gold) == len(sentences):  # the file has the column filled: compare
        pairs = [(g, p) for s, t in zip(sentences, tags) for g, p in zip(s.tags, t)]
        acc = sum(g == p for g, p in pairs) / len(pairs)
        line += f"; accuracy against the file's {vocab.column.upper()} column {100 * acc:.2f}%"
    print(line, file=sys.stderr)
    return 0
