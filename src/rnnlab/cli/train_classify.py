"""``rnnlab train classify``: train a text classifier (word embedding → stacked, optionally bidirectional rnnlab
RNN/LSTM/GRU → last / mean / max over the words → classes) on labelled text files — ``label<TAB>text``,
``text<TAB>label``, ``label text`` or CSV — with per-epoch summaries, ``last/`` and ``best/`` checkpoints in
``--out`` and metrics in ``OUT/metrics.jsonl``; at the end, accuracy, per-class precision / recall / F1 and the
confusion matrix on --valid and --test with the best weights. ``--resume DIR`` continues a stopped run exactly.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ..data.labeled import FORMATS, TextVocab, collate_labeled, detect_format, encode_labeled, parse_labeled, \
    read_file_text
from ..data.series import sha256_file
from ..data.text import DataError
from ..models.classifier import INITS, POOLINGS, SequenceClassifier, build
from ..train.metrics import MetricsLog
from ..train.compat import check_kind, check_vocab_fits
from ..train.supervised import ClassificationTask, classifier_sizes, evaluate_classification
from ..train.tagging import SentenceBatches
from ..variants import ALL_CELLS
from .common import FINISHED, add_kind_parser, add_output_group, add_training_group, default_text, engine_name, \
    fit_with_stop_handler, flag_name, given_flags, load_best_weights, make_trainer, out_dir, refuse_existing_run, \
    resume_run, torch_device, train_line, train_options
from . import embeddings, regularisation
from . import structure
from .options import UsageError, float_range, int_range, positive_int, resume_error

# Every default next to its reason. Flags default to None in argparse so that "given" can be told from "default".
DEFAULTS = {
    "format": "auto",  # csv for *.csv, tsv when the first line has a tab, else 'label text'
    "label_column": None,  # detected: the column of few repeated values without spaces
    "text_column": None,  # detected: the other column
    "header": "auto",  # detected from the first line (names such as 'label', 'sentence'; or a word over numbers)
    "lowercase": False,  # keep the text as given (the SST copies are lowercased already)
    "min_count": 2,  # words seen once become <unk>, so <unk> is trained on rare words: what unseen words look like
    "batch_size": 32,  # sentences per update: many updates per epoch on a few thousand sentences
    "eval_batch_size": 256,  # evaluation has no backward: bigger batches, fewer steps
    "emb": 128,  # word embedding, trained from scratch (no pretrained vectors)
    "cell": "lstm",
    "hidden": 128,  # per direction; sentence classification saturates early
    "layers": 1,  # one layer: a few thousand sentences do not feed a deeper stack
    "bidirectional": True,  # every word's feature sees both sides of it
    "pooling": "max",  # max over the words of a BiLSTM: Conneau et al. 2017's best sentence encoder
    "dropout": 0.5,  # Kim 2014's rate: small labelled sets overfit within a few epochs
    "init": "default",
    "epochs": 10,  # SST-2 size data reaches its best validation loss within a few epochs
    "optimizer": "adam",
    "lr": 1e-3,  # Adam's default rate
    "weight_decay": None,
    "clip_norm": 5.0,  # the usual cap for LSTM text models; ordinary steps stay below it
    "patience": None,
    "seed": 0,
    "log_every": 100,
    "max_steps": None,
    "max_minutes": None,
    "checkpoint_every": None,
    "device": "cpu",  # rnnlab's fast engine is its C++ CPU loop
    "threads": None,
    **regularisation.DEFAULTS,  # 0: off; the reasons and AWD-LSTM's values are in cli/regularisation.py
    **structure.DEFAULTS,  # plain stacking; the reasons are in cli/structure.py
    **embeddings.DEFAULTS,  # no pretrained vectors; the reasons are in cli/embeddings.py
}
# Flags a resumed run may change: they bound or display the run, they do not change what it computes.
RESUMABLE = {"epochs", "max_minutes", "max_steps", "quiet", "out", "log_every", "checkpoint_every", "threads",
             "device", "resume", "test"}
_FLAGS = ("train", "valid", "test", "format", "label_column", "text_column", "header", "lowercase", "min_count",
          "batch_size", "eval_batch_size", "emb", "cell", "hidden", "layers", "bidirectional", "pooling", "dropout",
          "init", "epochs", "optimizer", "lr", "weight_decay", "clip_norm", "patience", "seed", "max_minutes",
          "max_steps", "device", "threads", "out", "resume", "log_every", "checkpoint_every", "quiet",
          *regularisation.FLAGS, *structure.FLAGS, *embeddings.FLAGS)

EPILOG = """\
examples:
  rnnlab train classify --train DATA/sst2/stsa.binary.train --valid DATA/sst2/stsa.binary.dev \\
      --test DATA/sst2/stsa.binary.test --patience 3 --out runs/sst2
                                                   SST-2 sentiment ('label text' lines): BiLSTM, max pooling;
                                                   stops after 3 epochs without a better validation loss
  rnnlab train classify --train sentiment-train --valid sentiment-dev --test sentiment-test
                                                   SentEval's SST-2 copy ('text<TAB>label' lines, detected)
  rnnlab train classify --train reviews.csv --text-column review --label-column sentiment --lowercase
                                                   a CSV file with a header, columns by name
  rnnlab train classify --train data.tsv --label-column 0 --header no --cell gru --pooling last
                                                   label in the first tab-separated column, no header line
  rnnlab train classify --resume runs/sst2         continue a stopped run (same epoch, batch and RNG)
  rnnlab predict runs/sst2 --file sentences.txt    classify new text, one per line: 'label<TAB>text' out
"""


def add_train_parser(sub, parents) -> argparse.ArgumentParser:
    helptext = "text classifier from labelled lines or CSV: words → (Bi)LSTM → pooling → classes"
    return add_kind_parser(sub, "classify", parents, helptext=helptext, doc=__doc__, epilog=EPILOG,
                           add_options=_add_options, run=run)


def _d(name: str) -> str:
    return default_text(DEFAULTS, name)


def _add_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--train", metavar="FILE", help="training examples, one per line (or CSV record)")
    g.add_argument("--valid", metavar="FILE", help="validation examples: the best/ checkpoint, --patience and the "
                   "final accuracy use them")
    g.add_argument("--test", metavar="FILE", help="test examples, classified once with the best weights at the end")
    g.add_argument("--format", choices=FORMATS, help="tsv: 'label<TAB>text' or 'text<TAB>label'; space: 'label "
                   "text' (split at the first space); csv: comma-separated with quoting; auto: csv for *.csv, tsv "
                   "when the first line has a tab, else space" + _d("format"))
    g.add_argument("--label-column", metavar="COL", help="the label: first, last, a 0-based column index or (with "
                   "a header) a column name (default: detected — the column of few repeated values)")
    g.add_argument("--text-column", metavar="COL", help="the text: first, last, a 0-based index or a header name "
                   "(default: the other column)")
    g.add_argument("--header", choices=("auto", "yes", "no"), help="whether the first line names the columns"
                   + _d("header"))
    g.add_argument("--lowercase", action="store_true", default=None, help="lowercase the text before splitting it "
                   "into words at whitespace (default: as given)")
    g.add_argument("--min-count", type=positive_int, metavar="N", help="training words seen fewer than N times "
                   "become <unk>" + _d("min_count"))
    g.add_argument("--batch-size", type=int_range(1, 100_000), metavar="B", help="sentences per update"
                   + _d("batch_size"))
    g.add_argument("--eval-batch-size", type=int_range(1, 100_000), metavar="B", help="sentences per batch when "
                   "evaluating" + _d("eval_batch_size"))

    g = p.add_argument_group("model")
    g.add_argument("--emb", type=int_range(1, 65536), metavar="E", help="word embedding size" + _d("emb"))
    g.add_argument("--cell", choices=ALL_CELLS, help=structure.CELL_HELP + _d("cell"))
    g.add_argument("--hidden", type=int_range(1, 65536), metavar="H", help="units per direction" + _d("hidden"))
    g.add_argument("--layers", type=int_range(1, 64), metavar="L", help="stacked layers" + _d("layers"))
    g.add_argument("--bidirectional", action=argparse.BooleanOptionalAction, default=None,
                   help="a backward direction in every layer" + _d("bidirectional"))
    g.add_argument("--pooling", choices=POOLINGS, help="how the outputs over the words become one vector: the last "
                   "state of each direction, the mean or the max" + _d("pooling"))
    g.add_argument("--dropout", type=float_range(0.0, 0.99, lo_open=False), metavar="P",
                   help="dropout between layers and before the output layer" + _d("dropout"))
    # Not 'chrono': it spreads the forget-gate time constants over a task's longest dependency, which text has none of
    g.add_argument("--init", choices=[i for i in INITS if i != "chrono"], help="recurrent weights: torch.nn's "
                   "default, orthogonal, or identity (IRNN; needs --cell rnn_relu or rnn_tanh)" + _d("init"))
    embeddings.add_flags(g)
    regularisation.add_flags(p, DEFAULTS)
    structure.add_flags(p, DEFAULTS)

    add_training_group(p, DEFAULTS)
    add_output_group(p, DEFAULTS, default_out="runs/classify-<time>")


# -- resolving options ---------------------------------------------------------------------------------------------
def _resolve(given: dict) -> dict:
    o = {**DEFAULTS, "train": None, "valid": None, "test": None, "quiet": False, "out": None, **given}
    o["kind"] = "classify"
    if not o["train"]:
        raise UsageError("--train FILE is required (or --resume DIR); e.g. 'rnnlab train classify --train "
                         "train.tsv --valid dev.tsv'")
    if o["patience"] and not o["valid"]:
        raise UsageError(f"--patience {o['patience']} watches the validation loss; give --valid FILE or drop it")
    if o["init"] == "identity" and not o["cell"].startswith("rnn_"):
        raise UsageError(f"--init identity is the IRNN initialisation of an Elman RNN; got --cell {o['cell']}. Use "
                         "--cell rnn_relu with it, or --init orthogonal for LSTM/GRU")
    return o


def _new_model(o: dict, vocab: TextVocab, variant: dict) -> SequenceClassifier:
    return SequenceClassifier(len(vocab.labels), vocab_size=len(vocab), emb=o["emb"], cell=o["cell"],
                              hidden=o["hidden"], layers=o["layers"], bidirectional=o["bidirectional"],
                              pooling=o["pooling"], dropout=o["dropout"], init=o["init"],
                              rnn_options=regularisation.rnn_options(o) or None, **variant)


def read_options(o: dict, spec: dict | None = None, text: str = "", name: str = "") -> dict:
    """The ``parse_labeled`` options of a run: the user's. With ``spec`` (how the training file was read) for a
    valid / test file (``text`` read from ``name``) in the training file's format — given, or detected the same —
    the training file's columns too, unless given; its header is still detected unless --header was given."""
    header = {"auto": None, "yes": True, "no": False}[o["header"]]
    opts = {"format": o["format"], "label_column": o["label_column"], "text_column": o["text_column"],
            "header": header}
    if spec is not None and (o["format"] != "auto" or detect_format(text, name) == spec["format"]):
        opts["format"] = spec["format"]
        for k in ("label_column", "text_column"):
            if opts[k] is None:
                opts[k] = spec[k]
    return opts


def _read(o: dict, sources: dict | None):
    """({split: LabeledData or None}, the sources record); with ``sources`` (a resumed run) check that train and
    valid did not change."""
    data, record, spec = {}, {}, None
    for split in ("train", "valid", "test"):
        path = o[split]
        if path is None:
            data[split] = None
            continue
        if Path(path).suffix.lower() in (".ts", ".npz"):
            raise UsageError(f"{flag_name(split)} {path}: a file of numeric series (.ts, .npz); 'rnnlab train "
                             "classify' reads labelled text: use 'rnnlab train classify-series' for it")
        try:
            text = read_file_text(path)
            data[split] = parse_labeled(text, path, **read_options(o, spec, text, path))
        except DataError as exc:
            raise UsageError(f"{flag_name(split)} {exc}") from None
        if split == "train":
            spec = data[split].spec
        record[split] = {"name": path, "sha256": sha256_file(path), "examples": len(data[split]),
                         "labels": dict(sorted(data[split].label_counts().items()))}
        want = ((sources or {}).get(split) or {}).get("sha256")
        if split != "test" and want is not None and want != record[split]["sha256"]:
            raise UsageError(f"{path}: the {split} file changed since the checkpoint was written; resuming needs "
                             "the same data")
    return data, record


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def _summary(m: dict) -> str:
    return f"accuracy {_pct(m['accuracy'])}  macro F1 {100 * m['macro_f1']:.2f}  loss {m['loss']:.4f}  ({m['n']:,} " \
           "examples)"


def per_class_table(m: dict, labels: list[str]) -> str:
    """Per-class precision / recall / F1 / support, then the confusion matrix (rows: true, columns: predicted)."""
    w = max(10, max(len(s) for s in labels) + 1)
    rows = [f"  {'class':<{w}} precision  recall     F1  support"]
    for k, label in enumerate(labels):
        rows.append(f"  {label:<{w}} {100 * m['precision'][k]:>9.2f} {100 * m['recall'][k]:>7.2f} "
                    f"{100 * m['f1'][k]:>6.2f} {m['support'][k]:>8,}")
    cw = max(8, max(len(s) for s in labels) + 2, max(len(f"{v:,}") for r in m["confusion"] for v in r) + 2)
    rows.append("  confusion matrix (rows: true class, columns: predicted class)")
    rows.append(f"  {'':<{w}}" + "".join(f"{label:>{cw}}" for label in labels))
    for label, r in zip(labels, m["confusion"]):
        rows.append(f"  {label:<{w}}" + "".join(f"{v:>{cw},}" for v in r))
    return "\n".join(rows)


# -- the run -------------------------------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> int:
    given = given_flags(args, _FLAGS, keep_false=True)  # --no-bidirectional is given as False
    o, checkpoint = resume_run(given, "classify", RESUMABLE) if "resume" in given else (_resolve(given), None)
    variant = structure.model_options(o, given)
    out = out_dir(o["out"], "classify")
    refuse_existing_run(out, checkpoint)
    device = torch_device(o["device"], o["threads"])

    data, sources = _read(o, checkpoint.meta.get("sources") if checkpoint else None)
    if checkpoint is not None:
        try:
            config = check_kind(checkpoint.path, checkpoint.meta, ("sequence_classifier",), "a text classifier",
                                "rnnlab train classify")
            vocab = TextVocab.from_json(checkpoint.meta["vocab"])
            check_vocab_fits(checkpoint.path, config, classifier_sizes(vocab))
        except ValueError as exc:  # CheckpointError is a ValueError
            raise resume_error(checkpoint, exc) from None
        vectors = None  # a resumed run: its embedding is in the checkpoint
    else:
        try:
            vocab, vectors = embeddings.vocabulary(o, given, lambda min_count, keep: TextVocab.build(
                data["train"], min_count, o["lowercase"], keep=keep))  # vectors: (V, E) rows or None
        except DataError as exc:
            raise UsageError(f"--train {exc}") from None
    batches = {}
    for split in ("train", "valid", "test"):
        if data[split] is None:
            batches[split] = None
            continue
        try:
            encoded = encode_labeled(data[split], vocab)
        except DataError as exc:
            raise UsageError(f"{flag_name(split)} {exc}") from None
        size = o["batch_size"] if split == "train" else o["eval_batch_size"]
        batches[split] = SentenceBatches(encoded, size, shuffle=split == "train", seed=o["seed"],
                                         pad_id=vocab.pad_id, name=o[split], collate_fn=collate_labeled)
    train, valid, test = batches["train"], batches["valid"], batches["test"]

    torch.manual_seed(o["seed"])  # the initial weights
    try:
        model = build(checkpoint.meta.get("model")) if checkpoint else _new_model(o, vocab, variant)
        options = train_options(o)
    except ValueError as exc:
        raise resume_error(checkpoint, exc) if checkpoint else UsageError(str(exc)) from None
    loaded = embeddings.load(model.embedding, vectors, o, vocab.pad_id)
    embeddings.freeze(model.embedding, o)
    model.to(device)
    task = structure.budget_task(ClassificationTask(model, device), model)
    meta = {"task": "classification", "vocab": vocab.to_json(), "run": o, "sources": sources,
            "input_format": data["train"].spec}
    trainer = make_trainer(model, task, train, valid, options, out, meta, checkpoint)

    spec, s = data["train"].spec, sources["train"]
    how = {"tsv": "tab-separated", "space": "'label text' lines", "csv": "CSV"}[spec["format"]]
    if spec["format"] == "space":
        how = "'text label' lines" if spec["label_column"] == 1 else how
    else:
        names = spec.get("names")
        col = (lambda c: repr(names[c]) if names else str(c))
        how += f", label column {col(spec['label_column'])}, text column {col(spec['text_column'])}"
    how += ", header line skipped" if spec["header"] else ""
    print(f"data: {o['train']}: {s['examples']:,} examples ({how}); labels "
          + ", ".join(f"{label}: {n:,}" for label, n in s["labels"].items())
          + "".join(f"; {split} {sources[split]['examples']:,}" for split in ("valid", "test") if split in sources)
          + f"; {len(vocab):,} words (min count {o['min_count']}{', lowercased' if vocab.lowercase else ''}), "
          f"{len(vocab.labels)} classes", flush=True)
    engine = engine_name(device)
    c = model.config
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: emb {c['emb']} → {c['layers']} x rnnlab {'Bi' if c['bidirectional'] else ''}{c['cell'].upper()}"
          f"({c['hidden']}){structure.describe(c)} → {c['pooling']} pooling → {c['n_outputs']} classes, "
          f"dropout {c['dropout']:g}"
          + "".join(f", {k.replace('_', ' ')} {v}" for k, v in c.get("rnn_options", {}).items()) + "; "
          f"{n_params:,} parameters; batches of {o['batch_size']} sentences; engine {engine}", flush=True)
    if loaded:
        print(loaded, flush=True)
    print(train_line(options, trainer, out, checkpoint, note=" (rates count sentences)"), flush=True)

    summary = fit_with_stop_handler(trainer)
    if summary["stopped"] not in FINISHED:
        return 0  # stopped early (max-steps, max-minutes, Ctrl-C): resume it; evaluate at the real end
    best_dir = load_best_weights(out, model)
    log = MetricsLog(out / "metrics.jsonl")
    last_split = "test" if test is not None else "valid"
    for split, split_batches in (("valid", valid), ("test", test)):
        if split_batches is None:
            continue
        m = evaluate_classification(model, split_batches, device=device)
        print(f"{split} ({best_dir.name} weights): {_summary(m)}")
        if split == last_split:
            print(per_class_table(m, vocab.labels))
        log.write({"kind": split, "step": summary["steps"], "weights": best_dir.name, "labels": vocab.labels, **m})
    return 0
