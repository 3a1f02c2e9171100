"""``rnnlab translate RUN_DIR``: decode source lines with an encoder–decoder trained by 'rnnlab train seq2seq' —
one source per line from --file or stdin, one output line per input line (greedy, or beam search with --beam K).
A line 'source<TAB>target' is decoded from its source, and the exact-match accuracy against the targets goes to
stderr."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..data.seq2seq import detokenize, parse_pairs, read_pairs, tokenize
from ..data.text import DataError
from ..train.checkpoint import CheckpointError
from ..train.seq2seq import load_seq2seq, translate
from .options import UsageError, float_range, int_range, usable_device
from .unknown import check_input, say

EPILOG = """\
examples:
  rnnlab translate runs/reverse --file inputs.txt  one source per line in, one decoded line out (greedy)
  echo abcdef | rnnlab translate runs/reverse      read stdin
  rnnlab translate runs/dates --file test.tsv --beam 5 --output out.txt
                                                   beam search of width 5; 'source<TAB>target' lines also
                                                   print the exact-match accuracy (stderr)
  rnnlab translate runs/reverse --file in.txt --show-attention
                                                   after each output line, the source position each output
                                                   token attended to most
  rnnlab translate runs/reverse --file in.txt --attention-png attn.png --attention-lines 3
                                                   heatmaps of the attention weights (output x source tokens)
                                                   of the first 3 lines: attn-1.png, attn-2.png, attn-3.png
"""


def add_parser(subparsers, parents) -> argparse.ArgumentParser:
    p = subparsers.add_parser("translate", parents=parents, help="decode source lines with a model trained by "
                              "'rnnlab train seq2seq' (greedy or beam search)",
                              description=__doc__.split("\n\n")[0].replace("``", "'"),
                              epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", metavar="RUN_DIR", help="a run directory of 'rnnlab train seq2seq' (its best/ is "
                   "used, else last/) or a checkpoint directory")
    p.add_argument("--file", metavar="FILE", help="sources, one per line (or 'source<TAB>target'); default: stdin")
    p.add_argument("--beam", type=int_range(1, 1000), default=1, metavar="K", help="1: greedy decoding (batched); "
                   "K > 1: beam search of width K, one sequence at a time (default: %(default)s)")
    p.add_argument("--length-penalty", type=float_range(0.0, 10.0, lo_open=False), default=1.0, metavar="A",
                   help="beam search ranks by log p / length^A; 0 = raw log-probability (default: %(default)s)")
    p.add_argument("--max-len", type=int_range(1, 100_000), metavar="N", help="at most N output tokens, <eos> "
                   "included (default: 2 x the source length + 10)")
    p.add_argument("--show-attention", action="store_true", help="print, after each output line, the source "
                   "position of each output token's largest attention weight")
    p.add_argument("--attention-png", metavar="OUT.png", help="write a heatmap of the attention weights (output "
                   "tokens x source tokens) of the first input line to this PNG (needs matplotlib)")
    p.add_argument("--attention-lines", type=int_range(1, 1000), default=1, metavar="N",
                   help="with --attention-png: a heatmap for each of the first N lines, OUT-1.png ... OUT-N.png "
                   "(default: %(default)s, written to OUT.png itself)")
    p.add_argument("--output", metavar="FILE", help="write the outputs here (default: stdout)")
    p.add_argument("--batch-size", type=int_range(1, 100_000), default=64, metavar="B",
                   help="sources per batch of greedy decoding; changes speed, not the outputs (default: %(default)s)")
    p.add_argument("--device", default="cpu", metavar="DEV", help="torch device (default: %(default)s)")
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    device = usable_device(args.device)
    try:
        model, vocab, ckpt = load_seq2seq(args.checkpoint, prefer="best", device=device)
    except CheckpointError as exc:
        raise UsageError(f"RUN_DIR {exc}") from None
    png = _check_png(args, model)
    try:
        if args.file:
            if args.output and Path(args.output).resolve() == Path(args.file).resolve():
                raise UsageError(f"--output {args.output} is the input file; write the outputs to another file")
            pairs = read_pairs(args.file, vocab.level, require_target=False)
        else:
            pairs = parse_pairs(sys.stdin.read(), "<stdin>", vocab.level, require_target=False)
            if not pairs:
                raise DataError("<stdin>: no input lines; give one source per line (or --file FILE)")
    except DataError as exc:
        raise UsageError(f"--file {exc}" if args.file else str(exc)) from None
    unit = "characters" if vocab.level == "char" else "words"
    say(check_input(vocab.src, (vocab.source_tokens(p.source) for p in pairs), unit=unit,
                    where=f"--file {args.file}" if args.file else "stdin", has_unk=vocab.src.unk_id is not None,
                    fix=f"remove these {unit} from the sources, or retrain on pairs whose sources contain them"))

    decoded = translate(model, vocab, [p.source for p in pairs], beam=args.beam,
                        length_penalty=args.length_penalty, max_len=args.max_len, batch_size=args.batch_size,
                        device=device)
    lines = []
    for d in decoded:
        lines.append(vocab.decode_target(d.ids))
        if args.show_attention:
            where = d.attention.argmax(-1).tolist() if d.attention.numel() else []
            lines.append("# attention: " + (" ".join(str(i) for i in where) if where else "(none: no attention)"))
    text = "".join(line + "\n" for line in lines)
    if args.output:
        try:
            Path(args.output).write_text(text, encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"--output {args.output}: cannot write ({exc.strerror})") from None
    else:
        sys.stdout.write(text)
        sys.stdout.flush()

    written = _attention_figures(png, args.attention_lines, pairs, decoded, vocab) if png else []

    unfinished = sum(not d.finished for d in decoded)
    how = "greedy" if args.beam == 1 else f"beam {args.beam}"
    line = (f"decoded {len(decoded):,} lines ({how}) with {ckpt.path}" + (f" into {args.output}" if args.output else "")
            + (f"; {unfinished:,} reached the length limit without <eos>" if unfinished else ""))
    if written:
        line += "; attention heatmap" + ("s " if len(written) > 1 else " ") + ", ".join(str(w) for w in written)
    gold = [p.target for p in pairs]
    if all(g is not None for g in gold):
        outputs = [vocab.decode_target(d.ids) for d in decoded]
        gold = [detokenize(tokenize(g, vocab.level), vocab.level) for g in gold]  # words: spacing normalised
        exact = sum(d.finished and o == g for d, o, g in zip(decoded, outputs, gold)) / len(gold)
        line += f"; exact match against the targets {100 * exact:.2f}%"
    print(line, file=sys.stderr)
    return 0


def _check_png(args: argparse.Namespace, model) -> Path | None:
    """--attention-png as a path, refused early (before decoding) when it cannot be written or means nothing."""
    if args.attention_png is None:
        if args.attention_lines != 1:
            raise UsageError(f"--attention-lines {args.attention_lines} needs --attention-png OUT.png")
        return None
    png = Path(args.attention_png)
    if png.suffix.lower() != ".png":
        raise UsageError(f"--attention-png {png}: name the file *.png")
    if not png.parent.is_dir():
        raise UsageError(f"--attention-png {png}: the directory {png.parent} does not exist")
    if model.attention is None:
        raise UsageError("--attention-png: this model has no attention (trained with --attention none), so there "
                         "are no weights to draw")
    try:
        from ..diagnose import report

        report._figure(1, 1)  # matplotlib present?
    except ImportError as exc:
        raise UsageError(str(exc)) from None
    return png


def _attention_figures(png: Path, n: int, pairs, decoded, vocab) -> list[Path]:
    """One heatmap per line for the first ``n`` lines: PNG itself for one, PNG-1, PNG-2, ... for more."""
    from ..diagnose import report
    from ..models.seq2seq import EOS_ID

    written = []
    count = min(n, len(decoded))
    for i in range(count):
        d = decoded[i]
        target = [vocab.tgt.itos[t] for t in d.ids] + ([vocab.tgt.itos[EOS_ID]] if d.finished else [])
        source = vocab.source_tokens(pairs[i].source)
        path = png if n == 1 else png.with_name(f"{png.stem}-{i + 1}{png.suffix}")
        title = f"line {i + 1}" + ("" if d.finished else " (stopped at the length limit, no <eos>)")
        try:
            written.append(report.plot_attention(d.attention, source, target, path, title=title))
        except OSError as exc:
            raise UsageError(f"--attention-png {path}: cannot write ({exc.strerror})") from None
    return written
