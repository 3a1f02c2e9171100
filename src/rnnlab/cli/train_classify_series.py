"""``rnnlab train classify-series``: classify numeric sequences (sensor recordings, speech features, motion traces)
from the UEA/UCR archive's ``.ts`` files or an NPZ file: frames of F features → stacked, optionally bidirectional
rnnlab RNN/LSTM/GRU → last / mean / max over the steps → classes, with per-epoch summaries, ``last/`` and ``best/``
checkpoints in ``--out`` and metrics in ``OUT/metrics.jsonl``; at the end, accuracy, per-class precision / recall /
F1 and the confusion matrix on the validation cases and --test with the best weights. ``--resume DIR`` continues a
stopped run exactly.

A command of its own rather than a mode of ``rnnlab train classify``: that one reads text (formats, columns,
vocabulary, embeddings), this one numbers (no embedding; every feature normalised with the mean and std of the
training cases, stored in the checkpoint so that ``rnnlab predict`` reads new files the same way). The reader and
the file layouts are in ``rnnlab.data.uea``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from ..data.series import Normalizer, sha256_file
from ..data.text import DataError
from ..data.uea import MISSING_POLICIES, SERIES_FORMATS, CaseBatches, LabeledSeries, SeriesClassData, label_ids, \
    make_cases, read_labeled_series
from ..models.classifier import INITS, POOLINGS, SequenceClassifier, build
from ..train.checkpoint import CheckpointError, load_checkpoint
from ..train.compat import check_kind, damaged
from ..train.metrics import MetricsLog
from ..train.supervised import ClassificationTask, evaluate_classification, load_sequence_model
from ..variants import ALL_CELLS
from .common import FINISHED, add_kind_parser, add_output_group, add_training_group, default_text, engine_name, \
    fit_with_stop_handler, flag_name, given_flags, load_best_weights, make_trainer, out_dir, refuse_existing_run, \
    resume_run, torch_device, train_line, train_options
from . import regularisation
from . import structure
from .options import UsageError, float_range, int_range, resume_error

KIND = "classify-series"
TASK = "series_classification"  # checkpoint.json 'task': how rnnlab predict tells this classifier from a text one
META = "series_classes"  # checkpoint.json: labels, feature count, normaliser, held-out cases (SeriesClassData)

# Every default next to its reason. Flags default to None in argparse so that "given" can be told from "default".
# The model and training defaults are the recipe measured on JapaneseVowels and BasicMotions (docs/tasks.md).
DEFAULTS = {
    "format": "auto",  # .npz by its name or its zip signature, else .ts
    "missing": "refuse",  # a filled gap is invented data, and the right fill depends on the data: the user's call
    # Without --valid: the share of each class's training cases held out to pick best/ and stop on --patience. The
    # archive's splits give no validation file, and its sets are small (10-30 cases a class): a fifth keeps 80% to
    # train on and still gives every class at least one held-out case.
    "valid_fraction": 0.2,
    "batch_size": 16,  # cases per update: small sets (40-300 cases) need many updates per epoch
    "eval_batch_size": 256,  # evaluation has no backward: bigger batches, fewer steps
    # GRU: as accurate as an LSTM of the same width on JapaneseVowels and BasicMotions and steadier across seeds,
    # with a quarter fewer weights (docs/tasks.md)
    "cell": "gru",
    "hidden": 64,  # per direction; a dozen features and a few hundred cases do not feed a wider layer
    "layers": 1,  # one layer: a second one was no better on these sets and less steady across seeds
    "bidirectional": True,  # each step's output sees the whole recording, both sides of it
    # max over the steps: a class shows in a few telling moments anywhere in a recording (a badminton swing), which
    # a mean dilutes and the last state may have forgotten; mean pooling was unstable across seeds on BasicMotions
    "pooling": "max",
    "dropout": 0.3,  # before the output layer: sets of 40-300 cases overfit within a few dozen epochs
    "init": "default",
    "epochs": 60,  # small sets: an epoch is a few updates, the best validation loss comes after dozens
    "optimizer": "adam",
    "lr": 3e-3,  # above Adam's 1e-3: small sets give few updates an epoch; 1e-3 needed 100 epochs for the same
    "weight_decay": None,
    "clip_norm": 1.0,  # caps the occasional exploding recurrent gradient (Pascanu et al. 2013)
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
}
# Flags a resumed run may change: they bound or display the run, they do not change what it computes.
RESUMABLE = {"epochs", "max_minutes", "max_steps", "quiet", "out", "log_every", "checkpoint_every", "threads",
             "device", "resume", "test"}
_FLAGS = ("train", "valid", "test", "format", "missing", "valid_fraction", "batch_size", "eval_batch_size", "cell",
          "hidden", "layers", "bidirectional", "pooling", "dropout", "init", "epochs", "optimizer", "lr",
          "weight_decay", "clip_norm", "patience", "seed", "max_minutes", "max_steps", "device", "threads", "out",
          "resume", "log_every", "checkpoint_every", "quiet", *regularisation.FLAGS, *structure.FLAGS)

EPILOG = """\
examples:
  rnnlab train classify-series --train JapaneseVowels_TRAIN.ts --test JapaneseVowels_TEST.ts --out runs/jv
                                                   UEA .ts files: 12 features a frame, 7-29 frames; a stratified
                                                   20% of the training file picks best/; test accuracy at the end
  rnnlab train classify-series --train BasicMotions_TRAIN.ts --test BasicMotions_TEST.ts --cell lstm \\
      --hidden 128 --out runs/bm                   6-axis motion, 100 steps a case; a wider LSTM
  rnnlab train classify-series --train train.ts --valid dev.ts --patience 10
                                                   a validation file of its own; stop after 10 epochs without a
                                                   better validation loss
  rnnlab train classify-series --train data.npz --valid-fraction 0 --epochs 30
                                                   NPZ: X (N, T, F), lengths, y, classes; no validation
  rnnlab train classify-series --train gaps.ts --missing fill
                                                   fill '?' with the previous value of its dimension
  rnnlab train classify-series --resume runs/jv    continue a stopped run (same epoch, batch and RNG)
  rnnlab predict runs/jv --file JapaneseVowels_TEST.ts
                                                   one predicted label per case; the accuracy when the file has
                                                   labels (stderr)
"""


def add_train_parser(sub, parents) -> argparse.ArgumentParser:
    helptext = "classifier of numeric sequences (.ts, .npz): feature frames → (Bi)GRU/LSTM → pooling → classes"
    return add_kind_parser(sub, KIND, parents, helptext=helptext, doc=__doc__, epilog=EPILOG,
                           add_options=_add_options, run=run)


def _d(name: str) -> str:
    return default_text(DEFAULTS, name)


def _add_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--train", metavar="FILE", help="training cases: a UEA/UCR .ts file (or .npz)")
    g.add_argument("--valid", metavar="FILE", help="validation cases for best/ and --patience (default: a stratified "
                   "--valid-fraction of --train)")
    g.add_argument("--test", metavar="FILE", help="test cases, classified once with the best weights at the end")
    g.add_argument("--format", choices=SERIES_FORMATS, help="ts: the UEA/UCR archive's text format; npz: X (N, T, F), "
                   "lengths (N,), y (N,), classes (K,); auto: npz for *.npz or a zip file, else ts" + _d("format"))
    g.add_argument("--missing", choices=MISSING_POLICIES, help="missing values ('?', NaN): refuse names the file, "
                   "line and dimension; fill ends a case before steps missing in every dimension (padding) and "
                   "gives every other gap the previous value of its dimension" + _d("missing"))
    g.add_argument("--valid-fraction", type=float_range(0.0, 0.5, lo_open=False), metavar="F",
                   help="without --valid: hold out this share of each class's training cases for validation; 0 = "
                   "none (best/ is then the last epoch)" + _d("valid_fraction"))
    g.add_argument("--batch-size", type=int_range(1, 100_000), metavar="B", help="cases per update"
                   + _d("batch_size"))
    g.add_argument("--eval-batch-size", type=int_range(1, 100_000), metavar="B", help="cases per batch when "
                   "evaluating" + _d("eval_batch_size"))

    g = p.add_argument_group("model")
    g.add_argument("--cell", choices=ALL_CELLS, help=structure.CELL_HELP + _d("cell"))
    g.add_argument("--hidden", type=int_range(1, 65536), metavar="H", help="units per direction" + _d("hidden"))
    g.add_argument("--layers", type=int_range(1, 64), metavar="L", help="stacked layers" + _d("layers"))
    g.add_argument("--bidirectional", action=argparse.BooleanOptionalAction, default=None,
                   help="a backward direction in every layer" + _d("bidirectional"))
    g.add_argument("--pooling", choices=POOLINGS, help="how the outputs over the steps become one vector: the last "
                   "state of each direction, the mean or the max" + _d("pooling"))
    g.add_argument("--dropout", type=float_range(0.0, 0.99, lo_open=False), metavar="P",
                   help="dropout between layers and before the output layer" + _d("dropout"))
    g.add_argument("--init", choices=INITS, help="recurrent weights: torch.nn's default, orthogonal, identity (IRNN; "
                   "needs --cell rnn_relu or rnn_tanh) or chrono (LSTM forget biases spread over the longest "
                   "training case; needs --cell lstm)" + _d("init"))
    regularisation.add_flags(p, DEFAULTS)
    structure.add_flags(p, DEFAULTS)

    add_training_group(p, DEFAULTS, epochs_help="passes over the training cases",
                       patience_help="stop after N epochs without a better validation loss (needs --valid or a "
                       "--valid-fraction above 0)",
                       seed_help="random seed of the weights, the case order and the held-out validation cases; "
                       "the same seed repeats a run exactly")
    add_output_group(p, DEFAULTS, default_out="runs/classify-series-<time>")


# -- resolving options ---------------------------------------------------------------------------------------------
def _resolve(given: dict) -> dict:
    o = {**DEFAULTS, "train": None, "valid": None, "test": None, "quiet": False, "out": None, **given}
    o["kind"] = KIND
    if not o["train"]:
        raise UsageError("--train FILE is required (or --resume DIR); e.g. 'rnnlab train classify-series --train "
                         "JapaneseVowels_TRAIN.ts --test JapaneseVowels_TEST.ts'")
    if o["valid"] and "valid_fraction" in given:
        raise UsageError(f"--valid-fraction {given['valid_fraction']:g} holds out part of --train when no --valid is "
                         "given; with --valid FILE drop --valid-fraction")
    if o["valid"]:
        o["valid_fraction"] = 0.0  # the validation file replaces the held-out share
    if o["patience"] and not o["valid"] and not o["valid_fraction"]:
        raise UsageError(f"--patience {o['patience']} watches the validation loss; give --valid FILE or a "
                         "--valid-fraction above 0, or drop --patience")
    if o["init"] == "identity" and not o["cell"].startswith("rnn_"):
        raise UsageError(f"--init identity is the IRNN initialisation of an Elman RNN; got --cell {o['cell']}. Use "
                         "--cell rnn_relu with it, or --init orthogonal for LSTM/GRU")
    if o["init"] == "chrono" and o["cell"] != "lstm":
        raise UsageError(f"--init chrono sets an LSTM's forget-gate biases; got --cell {o['cell']}. Use --cell lstm "
                         "with it, or --init orthogonal")
    return o


def _read_file(flag: str, path: str, fmt: str, missing: str, require_labels: bool = True) -> LabeledSeries:
    try:
        return read_labeled_series(path, fmt, missing=missing, require_labels=require_labels)
    except DataError as exc:
        raise UsageError(f"{flag} {exc}") from None


def _read(o: dict, checkpoint) -> tuple[SeriesClassData, dict]:
    """(the data ready to train on, the sources record); resuming, check that train and valid did not change and
    reuse the run's normaliser."""
    files, record = {}, {}
    stored = (checkpoint.meta.get("sources") or {}) if checkpoint else {}
    for split in ("train", "valid", "test"):
        path = o[split]
        if path is None:
            files[split] = None
            continue
        files[split] = data = _read_file(flag_name(split), path, o["format"], o["missing"])
        record[split] = {"name": path, "sha256": sha256_file(path), "cases": len(data),
                         "labels": data.label_counts()}
        want = (stored.get(split) or {}).get("sha256")
        if split != "test" and want is not None and want != record[split]["sha256"]:
            raise UsageError(f"{path}: the {split} file changed since the checkpoint was written; resuming needs the "
                             "same data")
    normalizer = None
    if checkpoint is not None:
        try:
            normalizer = Normalizer.from_json(checkpoint.meta[META]["normalizer"])
        except (KeyError, TypeError, ValueError) as exc:
            raise resume_error(checkpoint, f"checkpoint.json has no readable normaliser ({exc!r})") from None
    try:
        data = SeriesClassData(files["train"], files["valid"], files["test"], valid_fraction=o["valid_fraction"],
                               seed=o["seed"], normalizer=normalizer)
    except DataError as exc:
        msg = str(exc)
        flag = next((flag_name(s) for s in ("train", "valid", "test")
                     if files[s] is not None and msg.startswith(files[s].path + ":")), "--train")
        raise UsageError(f"{flag} {msg}") from None
    except ValueError as exc:  # a stored normaliser that does not fit the data
        raise resume_error(checkpoint, exc) from None
    if checkpoint is not None and checkpoint.meta[META].get("labels") != data.labels:
        raise resume_error(checkpoint, f"the run's labels {checkpoint.meta[META].get('labels')} differ from the "
                           f"training file's {data.labels}")
    return data, record


def _new_model(o: dict, data: SeriesClassData, variant: dict) -> SequenceClassifier:
    init_length = max(3, max(data.files["train"].lengths)) if o["init"] == "chrono" else None
    return SequenceClassifier(len(data.labels), input_size=data.n_features, cell=o["cell"], hidden=o["hidden"],
                              layers=o["layers"], bidirectional=o["bidirectional"], pooling=o["pooling"],
                              dropout=o["dropout"], init=o["init"], init_length=init_length,
                              rnn_options=regularisation.rnn_options(o) or None, **variant)


def _describe_data(o: dict, data: SeriesClassData, sources: dict) -> str:
    train = data.files["train"]
    name = f" {train.problem}" if train.problem else ""
    n = data.split_counts()
    if data.files["valid"] is not None:
        valid = f"; valid {n['valid']:,} cases ({o['valid']})"
    elif data.valid_index:
        valid = (f"; {n['train']:,} to train on, {n['valid']:,} held out for validation (a stratified "
                 f"{data.valid_fraction:g} of each class, seed {o['seed']})")
    else:
        valid = "; no validation (best/ is the last epoch)"
    test = f"; test {n['test']:,} cases" if "test" in n else ""
    return (f"data: {o['train']} (.{train.format}{name}): {train.describe()}; labels "
            + ", ".join(f"{label}: {sources['train']['labels'].get(label, 0):,}" for label in data.labels)
            + f"{valid}{test}; {len(data.labels)} classes; every feature normalised with the mean and std of the "
            f"{n['train']:,} training cases")


# -- the run -------------------------------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> int:
    from .train_classify import _summary, per_class_table

    given = given_flags(args, _FLAGS, keep_false=True)  # --no-bidirectional is given as False
    o, checkpoint = resume_run(given, KIND, RESUMABLE) if "resume" in given else (_resolve(given), None)
    variant = structure.model_options(o, given)
    out = out_dir(o["out"], KIND)
    refuse_existing_run(out, checkpoint)
    device = torch_device(o["device"], o["threads"])

    data, sources = _read(o, checkpoint)
    train = data.batches("train", o["batch_size"], shuffle=True, seed=o["seed"])
    valid = data.batches("valid", o["eval_batch_size"])
    test = data.batches("test", o["eval_batch_size"])

    torch.manual_seed(o["seed"])  # the initial weights
    try:
        if checkpoint is not None:
            config = check_kind(checkpoint.path, checkpoint.meta, ("sequence_classifier",),
                                "a classifier of numeric series", f"rnnlab train {KIND}", vocab=False)
            model = build(config)
        else:
            model = _new_model(o, data, variant)
        options = train_options(o)
    except ValueError as exc:  # CheckpointError is a ValueError
        raise resume_error(checkpoint, exc) if checkpoint else UsageError(str(exc)) from None
    if checkpoint is not None and (model.input_size != data.n_features or model.n_outputs != len(data.labels)):
        raise resume_error(checkpoint, f"the model reads {model.input_size} features into {model.n_outputs} classes; "
                           f"the data has {data.n_features} and {len(data.labels)}")
    model.to(device)
    task = structure.budget_task(ClassificationTask(model, device), model)
    meta = {"task": TASK, "run": o, "sources": sources, META: {**data.to_json(), "missing": o["missing"]}}
    trainer = make_trainer(model, task, train, valid, options, out, meta, checkpoint)

    print(_describe_data(o, data, sources), flush=True)
    engine = engine_name(device)
    c = model.config
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {c['input_size']} features → {c['layers']} x rnnlab {'Bi' if c['bidirectional'] else ''}"
          f"{c['cell'].upper()}({c['hidden']}){structure.describe(c)} → {c['pooling']} pooling → {c['n_outputs']} "
          f"classes, dropout {c['dropout']:g}"
          + "".join(f", {k.replace('_', ' ')} {v}" for k, v in c.get("rnn_options", {}).items()) + "; "
          f"{n_params:,} parameters; batches of {o['batch_size']} cases; engine {engine}", flush=True)
    print(train_line(options, trainer, out, checkpoint, note=" (rates count cases)"), flush=True)

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
        print(f"{split} ({best_dir.name} weights): {_summary(m).replace('examples', 'cases')}")
        if split == last_split:
            print(per_class_table(m, data.labels))
        log.write({"kind": split, "step": summary["steps"], "weights": best_dir.name, "labels": data.labels, **m})
    return 0


# -- rnnlab predict ------------------------------------------------------------------------------------------------
def is_series_classifier(meta: dict) -> bool:
    """Whether a checkpoint's meta is a run of this command (``rnnlab predict`` routes it here)."""
    return meta.get("task") == TASK


def _load(path, device):
    """(model, labels, normaliser, missing policy, checkpoint) of a run of this command; a UsageError naming
    ``path`` otherwise."""
    try:
        ckpt = load_checkpoint(path, prefer="best")
        if not is_series_classifier(ckpt.meta):
            raise UsageError(f"RUN_DIR {ckpt.path}: not a classifier of numeric series; an ensemble averages runs of "
                             f"'rnnlab train {KIND}' with the same labels")
        info = ckpt.meta.get(META)
        try:
            labels, normalizer = list(info["labels"]), Normalizer.from_json(info["normalizer"])
            missing = info.get("missing", "refuse")
            if missing not in MISSING_POLICIES or not all(isinstance(s, str) for s in labels):
                raise ValueError(missing)
        except (KeyError, TypeError, ValueError):
            raise damaged(ckpt.path, f"series classifier data ({META!r}: labels, normalizer)") from None
        model, ckpt = load_sequence_model(path, prefer="best", device=device)
    except CheckpointError as exc:
        raise UsageError(f"RUN_DIR {exc}") from None
    if model.input_size != len(normalizer.names) or model.n_outputs != len(labels):
        raise UsageError(f"RUN_DIR {damaged(ckpt.path, f'series classifier data ({META!r}) that fits the model')}")
    return model, labels, normalizer, missing, ckpt


def predict(args, device) -> int:
    """``rnnlab predict RUN_DIR --file FILE`` for a run of this command: one predicted label per case of a .ts or
    .npz file, in the file's order; with labels in the file, the accuracy against them (stderr)."""
    from .predict import _write

    if args.format is not None:
        raise UsageError(f"--format {args.format} is a tagger's output; a classifier of numeric series writes one "
                         "label per case. Drop --format")
    if args.input_format not in ("auto", "labeled"):
        raise UsageError(f"--input-format {args.input_format} reads text; RUN_DIR holds a classifier of numeric "
                         "series, which reads .ts or .npz files: drop --input-format")
    model, labels, normalizer, missing, ckpt = _load(args.checkpoint, device)
    members = [(model, normalizer)]
    for path in args.ensemble:
        m, other_labels, other_norm, _, other = _load(path, device)
        if other_labels != labels or len(other_norm.names) != len(normalizer.names):
            raise UsageError(f"--ensemble {path}: its labels ({', '.join(other_labels)}) or feature count "
                             f"({len(other_norm.names)}) differ from RUN_DIR's ({', '.join(labels)}; "
                             f"{len(normalizer.names)}); an ensemble averages the same classes of the same data")
        members.append((m, other_norm))
    if args.output and Path(args.output).resolve() == Path(args.file).resolve():
        raise UsageError(f"--output {args.output} is the input file; write the labels to another file")
    data = _read_file("--file", args.file, "auto", missing, require_labels=False)
    if data.n_features != len(normalizer.names):
        raise UsageError(f"--file {args.file}: {data.n_features} dimensions per case where the model was trained on "
                         f"{len(normalizer.names)}; give a file of the same data set")
    gold = None
    if data.labelled:
        try:
            gold = label_ids(data, labels, "model's")
        except DataError as exc:
            raise UsageError(f"--file {exc}") from None
    probs = []
    with torch.no_grad():
        for m, norm in members:
            batches = CaseBatches(make_cases(data, norm, None), args.batch_size, name=args.file)
            probs.append(torch.cat([m(x.to(device), lengths).softmax(1).cpu() for x, lengths, _ in batches.batches(0)]))
    pred = torch.stack(probs).mean(0).argmax(1).tolist()  # (M, N, K) → (N,)
    _write(args, "".join(f"{labels[k]}\n" for k in pred))
    who = f"{ckpt.path}" if len(members) == 1 else f"an ensemble of {len(members)} ({ckpt.path}, ...)"
    line = f"classified {data.describe()} with {who}" + (f" into {args.output}" if args.output else "")
    if gold is not None:
        acc = sum(g == p for g, p in zip(gold, pred)) / len(gold)
        line += f"; accuracy against the file's labels {100 * acc:.2f}%"
    print(line, file=sys.stderr)
    return 0
