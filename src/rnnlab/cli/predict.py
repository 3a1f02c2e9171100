"""``rnnlab predict RUN_DIR --file FILE``: tag new sentences with a tagger trained by 'rnnlab train tag', classify
texts with a classifier trained by 'rnnlab train classify', or numeric series with one trained by 'rnnlab train
classify-series' (the checkpoint decides). Tagger input is CoNLL-U (its lines are written back with the predicted
tags in the trained column) or plain text (one sentence per line, tokens separated by whitespace); text classifier
input is one text per line, or a file in the training file's format (then the accuracy against its labels goes to
stderr), and the output is 'label<TAB>text' per line; series classifier input is a .ts or .npz file, and the output
one label per case (with the accuracy when the file has labels)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from ..data.conllu import format_conllu, format_slash, read_conllu_sentences, read_plain
from ..data.labeled import TextVocab, collate_labeled, encode_labeled, parse_labeled, parse_lines, read_file_text
from ..data.labeled import tokenize as text_words
from ..data.text import DataError
from ..train.checkpoint import CheckpointError, load_checkpoint
from ..train.compat import check_vocab_fits, damaged, describe, reader_hint
from ..train.supervised import classifier_sizes, load_sequence_model
from ..train.tagging import SentenceBatches, load_tagger, tag_sentences
from . import train_classify_series
from .options import UsageError, int_range, usable_device
from .unknown import check_input, say

CONLLU_SUFFIXES = (".conllu", ".conll")
CONFIG = "model config ('model')"

EPILOG = """\
examples:
  rnnlab predict runs/ewt-upos --file en_ewt-ud-test.conllu --output test.tagged.conllu
                                         CoNLL-U in, CoNLL-U out (the tag column filled in); prints the accuracy
                                         when the file already has tags
  rnnlab predict runs/ewt-upos --file sentences.txt --format slash
                                         one tokenised sentence per line in, word/TAG per line out (stdout)
  rnnlab predict runs/ewt-upos/last --file in.conllu --format slash
                                         a particular checkpoint; word/TAG output from CoNLL-U input
  rnnlab predict runs/sst2 --file reviews.txt --output labelled.tsv
                                         a classifier ('rnnlab train classify'): one text per line in,
                                         'label<TAB>text' per line out
  rnnlab predict runs/sst2 --file stsa.binary.test
                                         a file in the training format: also prints the accuracy against
                                         its labels (stderr)
  rnnlab predict runs/sst2-s0 --ensemble runs/sst2-s1 runs/sst2-s2 --file stsa.binary.test
                                         an ensemble of classifiers: their class probabilities averaged
  rnnlab predict runs/jv --file JapaneseVowels_TEST.ts
                                         a classifier of numeric series ('rnnlab train classify-series'):
                                         one label per case out; the accuracy when the file has labels
"""


def add_parser(subparsers, parents) -> argparse.ArgumentParser:
    p = subparsers.add_parser("predict", parents=parents, help="tag sentences (CoNLL-U or plain text) with a "
                              "trained tagger, or classify texts with a trained classifier",
                              description=__doc__.split("\n\n")[0].replace("``", "'"),
                              epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", metavar="RUN_DIR", help="a run directory of 'rnnlab train tag', 'rnnlab train "
                   "classify' or 'rnnlab train classify-series' (its best/ is used, else last/) or a checkpoint "
                   "directory")
    p.add_argument("--file", required=True, metavar="FILE", help="a tagger's input: CoNLL-U (*.conllu, *.conll) or "
                   "plain text, one sentence per line, whitespace-separated tokens; a text classifier's: one text "
                   "per line, or labelled lines in the training file's format; a series classifier's: a .ts or .npz "
                   "file")
    p.add_argument("--input-format", choices=("auto", "conllu", "text", "labeled"), default="auto",
                   help="how to read --file; text: one sentence / text per line; labeled (classifiers): the "
                   "training file's format; auto: CoNLL-U for *.conllu / *.conll with a tagger, with a classifier "
                   "labeled when every line parses so with a known label, else text (default: %(default)s)")
    p.add_argument("--format", choices=("conllu", "slash"), default=None,
                   help="tagger output: CoNLL-U with the predicted tags, or word/TAG per sentence line (default: "
                   "the input's kind: conllu for CoNLL-U input, slash for text); a classifier always writes "
                   "'label<TAB>text' lines")
    p.add_argument("--ensemble", nargs="+", default=[], metavar="RUN_DIR", help="classifiers only: more runs of "
                   "'rnnlab train classify' with the same labels; the prediction is the class of highest mean "
                   "probability over RUN_DIR and these (each model reads the text with its own vocabulary). Averaging "
                   "runs that differ only in their seed usually adds accuracy (default: RUN_DIR alone)")
    p.add_argument("--output", metavar="FILE", help="write the tagged / labelled text here (default: stdout)")
    p.add_argument("--batch-size", type=int_range(1, 100_000), default=64, metavar="B",
                   help="sentences per batch; changes speed, not the tags (default: %(default)s)")
    p.add_argument("--device", default="cpu", metavar="DEV", help="torch device (default: %(default)s)")
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    device = usable_device(args.device)
    try:
        ckpt = load_checkpoint(args.checkpoint, prefer="best")
    except CheckpointError as exc:
        raise UsageError(f"RUN_DIR {exc}") from None
    config = ckpt.meta.get("model")
    kind = config.get("kind") if isinstance(config, dict) else None
    if kind is None:
        raise UsageError(f"RUN_DIR {damaged(ckpt.path, CONFIG)}")
    if kind == "sequence_classifier":
        if train_classify_series.is_series_classifier(ckpt.meta):
            return train_classify_series.predict(args, device)
        return _classify(args, device)
    if kind != "bi_rnn_tagger":
        raise UsageError(f"RUN_DIR {ckpt.path}: holds {describe(ckpt.meta)}, not a tagger or a text classifier; "
                         f"{reader_hint(ckpt.meta)}pass a run directory written by 'rnnlab train tag' or 'rnnlab "
                         "train classify'")
    if args.ensemble:
        raise UsageError(f"--ensemble averages classifiers' class probabilities; RUN_DIR {ckpt.path} holds a tagger. "
                         "Drop --ensemble")
    if args.input_format == "labeled":
        raise UsageError("--input-format labeled reads a classifier's labelled lines; RUN_DIR holds a tagger: use "
                         "--input-format conllu or text")
    try:
        model, vocab, ckpt = load_tagger(args.checkpoint, prefer="best", device=device)
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

    say(check_input(vocab.words, (s.words for s in sentences), unit="words", where=f"--file {args.file}",
                    has_unk=vocab.words.unk_id is not None, fix="remove these words, or retrain on sentences that "
                    "contain them"))
    tags = tag_sentences(model, vocab, sentences, args.batch_size, device)
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


# -- classifiers ---------------------------------------------------------------------------------------------------
def _write(args, text: str) -> None:
    if args.output:
        try:
            Path(args.output).write_text(text, encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"--output {args.output}: cannot write ({exc.strerror})") from None
    else:
        sys.stdout.write(text)
        sys.stdout.flush()


def _read_classifier_input(args, vocab: TextVocab, spec: dict | None):
    """The examples of --file: labelled (the training file's format) or one text per line."""
    text = read_file_text(args.file, "text file")
    if args.input_format == "text":
        return parse_lines(text, args.file)
    opts = {"format": "auto", "label_column": None, "text_column": None, "header": None}
    if spec:
        opts.update({k: spec[k] for k in ("format", "label_column", "text_column") if k in spec})
    try:
        data = parse_labeled(text, args.file, **opts, require_labels=False)
    except DataError:
        if args.input_format == "labeled":
            raise
        return parse_lines(text, args.file)
    known = set(vocab.labels)
    if args.input_format == "auto" and not all(label in known for label in data.labels):
        return parse_lines(text, args.file)  # the 'labels' are no labels of the model: plain text
    return data


def _load_classifier(path, device):
    """(model, vocab, checkpoint) of a run of 'rnnlab train classify'; a UsageError naming ``path`` otherwise."""
    try:
        ckpt = load_checkpoint(path, prefer="best")
        vocab = TextVocab.from_json(ckpt.meta["vocab"])
    except CheckpointError as exc:
        raise UsageError(f"RUN_DIR {exc}") from None
    except (KeyError, TypeError, ValueError):
        raise UsageError(f"RUN_DIR {ckpt.path}: holds {describe(ckpt.meta)}: a sequence classifier without a text "
                         "vocabulary; predict reads text for classifiers trained by 'rnnlab train classify'") from None
    try:
        check_vocab_fits(ckpt.path, ckpt.meta.get("model"), classifier_sizes(vocab))
        model, ckpt = load_sequence_model(path, prefer="best", device=device)
    except CheckpointError as exc:
        raise UsageError(f"RUN_DIR {exc}") from None
    return model, vocab, ckpt


def _encode(data, vocab: TextVocab):
    try:
        return encode_labeled(data, vocab)
    except DataError as exc:
        raise UsageError(f"--file {exc}") from None


def _probabilities(model, vocab: TextVocab, encoded, batch_size: int, device, name: str) -> torch.Tensor:
    """(N, classes) class probabilities of the ``encoded`` examples (read with the model's own vocabulary)."""
    batches = SentenceBatches(encoded, batch_size, pad_id=vocab.pad_id, name=name, collate_fn=collate_labeled)
    probs = torch.zeros(len(encoded), len(vocab.labels))  # (N, K)
    with torch.no_grad():
        for index, (x, lengths, _) in zip(batches.order(0), batches.batches(0)):
            probs[index] = model(x.to(device), lengths).softmax(1).cpu()  # (B, K)
    return probs


def _classify(args, device) -> int:
    """``rnnlab predict`` for a checkpoint of 'rnnlab train classify' (and --ensemble): 'label<TAB>text' per input
    line."""
    if args.format is not None:
        raise UsageError(f"--format {args.format} is a tagger's output; a classifier writes 'label<TAB>text' lines. "
                         "Drop --format")
    if args.input_format == "conllu":
        raise UsageError("--input-format conllu is a tagger's input; RUN_DIR holds a text classifier: give one text "
                         "per line (--input-format text) or the training file's format (--input-format labeled)")
    model, vocab, ckpt = _load_classifier(args.checkpoint, device)
    members = [(model, vocab, ckpt)]
    for path in args.ensemble:
        member = _load_classifier(path, device)
        if member[1].labels != vocab.labels:
            raise UsageError(f"--ensemble {path}: its labels ({', '.join(member[1].labels)}) differ from RUN_DIR's "
                             f"({', '.join(vocab.labels)}); an ensemble averages the same classes: give runs trained "
                             "on the same labels")
        members.append(member)
    if args.output and Path(args.output).resolve() == Path(args.file).resolve():
        raise UsageError(f"--output {args.output} is the input file; write the labels to another file")
    try:
        data = _read_classifier_input(args, vocab, ckpt.meta.get("input_format"))
    except DataError as exc:
        raise UsageError(f"--file {exc}") from None

    notes = [check_input(v.words, (text_words(e.text, v.lowercase) for e in data.examples), unit="words",
                         where=f"--file {args.file}", has_unk=v.words.unk_id is not None,
                         whose="the model's vocabulary" if len(members) == 1 else f"the vocabulary of {c.path}",
                         fix="remove these words, or retrain on texts that contain them") for _, v, c in members]
    encoded = [_encode(data, v) for _, v, _ in members]  # each model reads the text with its own vocabulary
    for note in notes:  # once the labels have passed too
        say(note)
    each = [_probabilities(m, v, e, args.batch_size, device, args.file)
            for (m, v, _), e in zip(members, encoded)]  # M x (N, K)
    labels = [vocab.labels[k] for k in torch.stack(each).mean(0).argmax(1).tolist()]  # (M, N, K) → (N,)
    _write(args, "".join(f"{label}\t{e.text}\n" for label, e in zip(labels, data.examples)))

    words = [w for e in encoded[0] for w in e.words]
    unknown = sum(w == vocab.words.unk_id for w in words)
    who = f"{ckpt.path}" if len(members) == 1 else f"an ensemble of {len(members)} ({ckpt.path}, ...)"
    line = (f"classified {len(data.examples):,} texts, {len(words):,} words ({unknown:,} unknown to "
            f"the model) with {who}" + (f" into {args.output}" if args.output else ""))
    gold = data.labels
    if all(g is not None for g in gold):
        acc = sum(g == p for g, p in zip(gold, labels)) / len(gold)
        line += f"; accuracy against the file's labels {100 * acc:.2f}%"
        if len(members) > 1:  # each member alone, to show what averaging added
            alone = [sum(g == vocab.labels[k] for g, k in zip(gold, p.argmax(1).tolist())) / len(gold) for p in each]
            line += " (members alone: " + ", ".join(f"{100 * a:.2f}%" for a in alone) + ")"
    print(line, file=sys.stderr)
    return 0
