"""``rnnlab train tag``: train a part-of-speech tagger (word embedding ⊕ character features → stacked bidirectional
rnnlab LSTM → tags) on CoNLL-U files, with per-epoch summaries, ``last/`` and ``best/`` checkpoints in ``--out`` and
metrics in ``OUT/metrics.jsonl``; at the end, accuracy and unknown-word accuracy on --valid and --test with the best
weights. ``--resume DIR`` continues a stopped run exactly where it stopped.
"""
from __future__ import annotations

import argparse

import torch

from ..data.conllu import COLUMNS, TaggingVocab, read_conllu_sentences
from ..data.series import sha256_file
from ..data.text import DataError
from ..models.tagger import CELLS, CHAR_CELLS, build_tagger
from ..train.metrics import MetricsLog
from ..train.compat import check_kind, check_vocab_fits
from ..train.tagging import SentenceBatches, TaggingTask, encode, evaluate_tagger, tagger_sizes
from .common import FINISHED, add_kind_parser, add_output_group, add_training_group, default_text, engine_name, \
    fit_with_stop_handler, flag_name, given_flags, load_best_weights, make_trainer, out_dir, refuse_existing_run, \
    resume_run, torch_device, train_line, train_options
from . import embeddings, regularisation
from . import structure
from .options import UsageError, float_range, int_range, positive_int, resume_error

# Every default next to its reason. Flags default to None in argparse so that "given" can be told from "default".
DEFAULTS = {
    "column": "upos",  # the 17 universal tags: comparable across treebanks
    "min_count": 1,  # keep every training word: the char features already cover rare ones
    "emb": 100,  # word embedding (Plank et al. 2016 used 64-128)
    "char_emb": 32,  # ~100 distinct characters need few dimensions
    "char_hidden": 64,  # per direction, 128 spelling features per word; 0 = no character features
    "char_cell": "lstm",
    "hidden": 128,  # per direction; POS tagging saturates early
    "layers": 2,  # stacked BiLSTM (Dozat et al. 2017 used 2-3)
    "cell": "lstm",
    "dropout": 0.33,  # Dozat & Manning's rate; tagging data overfits quickly
    "word_dropout": 0.0,  # off; 0.05-0.25 trains <unk> in the contexts unknown words appear in
    "batch_size": 32,  # sentences per update (~500 words on EWT): frequent updates, full matrix kernels
    "eval_batch_size": 128,  # evaluation has no backward: bigger batches, fewer steps
    "epochs": 10,  # EWT-size data reaches its best validation accuracy within ~10 epochs
    "optimizer": "adam",
    "lr": 2e-3,  # Adam with a slightly raised rate, as Dozat & Manning's tagger
    "momentum": 0.0,
    "weight_decay": None,
    "clip_value": None,
    "lr_decay": None,  # constant lr unless requested: step decay factor 0.5, plateau factor 0.25 (as 'rnnlab train lm')
    "decay_start": None,
    "plateau": False,
    "clip_norm": 5.0,  # the usual cap for LSTM taggers; ordinary steps stay below it
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
    **embeddings.DEFAULTS,  # no pretrained vectors (Plank et al.'s 94.6 used none); reasons in cli/embeddings.py
}
# Flags a resumed run may change: they bound or display the run, they do not change what it computes.
RESUMABLE = {"epochs", "max_minutes", "max_steps", "quiet", "out", "log_every", "checkpoint_every", "threads",
             "device", "resume", "test"}
_FLAGS = ("train", "valid", "test", "column", "min_count", "emb", "char_emb", "char_hidden", "char_cell", "hidden",
          "layers", "cell", "dropout", "word_dropout", "batch_size", "eval_batch_size", "epochs", "optimizer", "lr",
          "momentum", "weight_decay", "clip_norm", "clip_value", "lr_decay", "decay_start", "plateau", "patience",
          "seed", "max_minutes", "max_steps", "device", "threads", "out", "resume", "log_every", "checkpoint_every",
          "quiet", *regularisation.FLAGS, *structure.FLAGS, *embeddings.FLAGS)

EPILOG = """\
examples:
  rnnlab train tag --train en_ewt-ud-train.conllu --valid en_ewt-ud-dev.conllu --test en_ewt-ud-test.conllu \\
      --patience 3 --out runs/ewt-upos
                                                   UPOS tagger on UD English-EWT; stops after 3 epochs
                                                   without a better validation loss
  rnnlab train tag --train train.conllu --valid dev.conllu --column xpos --word-dropout 0.1
                                                   treebank-specific tags (e.g. Penn tags), word dropout
  rnnlab train tag --train train.conllu --valid dev.conllu --char-hidden 0
                                                   word embeddings only (no character features)
  rnnlab train tag --resume runs/ewt-upos          continue a stopped run (same epoch, batch and RNG)
  rnnlab predict runs/ewt-upos --file new.txt --format slash
                                                   tag new text with the trained model
"""


def add_train_parser(sub, parents) -> argparse.ArgumentParser:
    helptext = "part-of-speech tagger from CoNLL-U: word ⊕ char features → BiLSTM → tags"
    return add_kind_parser(sub, "tag", parents, helptext=helptext, doc=__doc__, epilog=EPILOG,
                           add_options=_add_options, run=run)


def _d(name: str) -> str:
    return default_text(DEFAULTS, name)


def _add_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--train", metavar="FILE", help="training sentences (CoNLL-U)")
    g.add_argument("--valid", metavar="FILE", help="validation sentences (CoNLL-U): the best/ checkpoint, "
                   "--patience and the final accuracy use them")
    g.add_argument("--test", metavar="FILE", help="test sentences (CoNLL-U), tagged once with the best weights at "
                   "the end")
    g.add_argument("--column", choices=tuple(COLUMNS), help="the tag column: universal (upos) or treebank-specific "
                   "(xpos) tags" + _d("column"))
    g.add_argument("--min-count", type=positive_int, metavar="N", help="training words seen fewer than N times "
                   "become <unk> (their char features stay)" + _d("min_count"))
    g.add_argument("--batch-size", type=int_range(1, 100_000), metavar="B", help="sentences per update"
                   + _d("batch_size"))
    g.add_argument("--eval-batch-size", type=int_range(1, 100_000), metavar="B", help="sentences per batch when "
                   "evaluating" + _d("eval_batch_size"))

    g = p.add_argument_group("model")
    g.add_argument("--emb", type=int_range(1, 65536), metavar="E", help="word embedding size" + _d("emb"))
    g.add_argument("--char-emb", type=int_range(1, 65536), metavar="E", help="character embedding size"
                   + _d("char_emb"))
    g.add_argument("--char-hidden", type=int_range(0, 65536), metavar="H", help="units per direction of the "
                   "character BiRNN; 0 = no character features" + _d("char_hidden"))
    g.add_argument("--char-cell", choices=CHAR_CELLS, help="character BiRNN cell" + _d("char_cell"))
    g.add_argument("--hidden", type=int_range(1, 65536), metavar="H", help="units per direction of the sentence "
                   "BiRNN" + _d("hidden"))
    g.add_argument("--layers", type=int_range(1, 64), metavar="L", help="stacked bidirectional layers"
                   + _d("layers"))
    g.add_argument("--cell", choices=CELLS, help="sentence BiRNN cell: lstm, gru or layer-normalised "
                   "(layernorm_lstm, layernorm_gru; Ba et al. 2016)" + _d("cell"))
    g.add_argument("--dropout", type=float_range(0.0, 0.99, lo_open=False), metavar="P",
                   help="dropout on the word features, between layers and before the output" + _d("dropout"))
    g.add_argument("--word-dropout", type=float_range(0.0, 0.99, lo_open=False), metavar="P",
                   help="replace a training word by <unk> with probability P (helps unknown words)"
                   + _d("word_dropout"))
    embeddings.add_flags(g)

    regularisation.add_flags(p, DEFAULTS)
    structure.add_flags(p, DEFAULTS)
    add_training_group(p, DEFAULTS, schedule=True)
    add_output_group(p, DEFAULTS, default_out="runs/tag-<column>-<time>")


# -- resolving options ---------------------------------------------------------------------------------------------
def _resolve(given: dict) -> dict:
    o = {**DEFAULTS, "train": None, "valid": None, "test": None, "quiet": False, "out": None, **given}
    o["kind"] = "tag"
    if not o["train"]:
        raise UsageError("--train FILE is required (or --resume DIR); e.g. 'rnnlab train tag --train "
                         "train.conllu --valid dev.conllu'")
    if o["patience"] and not o["valid"]:
        raise UsageError(f"--patience {o['patience']} watches the validation loss; give --valid FILE or drop it")
    if "clip_value" in given and "clip_norm" not in given:
        o["clip_norm"] = None  # --clip-value replaces the default norm clipping
    if o["plateau"] and not o["valid"]:
        raise UsageError("--plateau watches the validation loss; give --valid FILE or drop it")
    if o["decay_start"] is not None and o["lr_decay"] is None and not o["plateau"]:
        raise UsageError(f"--decay-start {o['decay_start']} needs --lr-decay F (the factor of the step decay)")
    return o


def _model_config(o: dict, vocab: TaggingVocab, variant: dict) -> dict:
    config = {"kind": "bi_rnn_tagger", "num_words": len(vocab.words), "num_chars": len(vocab.chars),
              "num_tags": len(vocab.tags), "emb": o["emb"], "char_emb": o["char_emb"],
              "char_hidden": o["char_hidden"], "char_cell": o["char_cell"], "hidden": o["hidden"],
              "layers": o["layers"], "cell": o["cell"], "dropout": o["dropout"], "word_dropout": o["word_dropout"],
              "pad_id": vocab.words.pad_id, "unk_id": vocab.words.unk_id}
    options = regularisation.rnn_options(o)
    if options:  # only when used: a plain model's config (and checkpoint) has no such key
        config["rnn_options"] = options
    return {**config, **variant}  # likewise: the structure keywords only when used


def _read(o: dict, sources: dict | None):
    """{split: sentences or None} and the sources record; with ``sources`` (a resumed run) check that train and
    valid did not change."""
    data, record = {}, {}
    for split in ("train", "valid", "test"):
        path = o[split]
        if path is None:
            data[split] = None
            continue
        try:
            data[split] = read_conllu_sentences(path, o["column"])
        except DataError as exc:
            raise UsageError(f"{flag_name(split)} {exc}") from None
        record[split] = {"name": path, "sha256": sha256_file(path), "sentences": len(data[split]),
                         "words": sum(len(s.words) for s in data[split])}
        want = ((sources or {}).get(split) or {}).get("sha256")
        if split != "test" and want is not None and want != record[split]["sha256"]:
            raise UsageError(f"{path}: the {split} file changed since the checkpoint was written; resuming needs "
                             "the same data")
    return data, record


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


def _summary(m: dict) -> str:
    return (f"accuracy {_pct(m['accuracy'])}  unknown words {_pct(m['unknown_accuracy'])} "
            f"({m['unknown_tokens']:,} of {m['tokens']:,} words)  macro F1 {100 * m['macro_f1']:.2f}  "
            f"loss {m['loss']:.4f}")


def _per_tag_table(m: dict) -> str:
    rows = ["  tag        precision  recall     F1  support"]
    for tag, r in sorted(m["per_tag"].items(), key=lambda kv: -kv[1]["support"]):
        rows.append(f"  {tag:<10} {100 * r['precision']:>9.2f} {100 * r['recall']:>7.2f} {100 * r['f1']:>6.2f} "
                    f"{r['support']:>8,}")
    return "\n".join(rows)


# -- the run -------------------------------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> int:
    given = given_flags(args, _FLAGS)
    o, checkpoint = resume_run(given, "tag", RESUMABLE) if "resume" in given else (_resolve(given), None)
    variant = structure.model_options(o, given)
    out = out_dir(o["out"], f"tag-{o['column']}")
    refuse_existing_run(out, checkpoint)
    device = torch_device(o["device"], o["threads"])

    data, sources = _read(o, checkpoint.meta.get("sources") if checkpoint else None)
    if checkpoint is not None:
        try:
            config = check_kind(checkpoint.path, checkpoint.meta, ("bi_rnn_tagger",), "a tagger", "rnnlab train tag")
            vocab = TaggingVocab.from_json(checkpoint.meta["vocab"])
            check_vocab_fits(checkpoint.path, config, tagger_sizes(vocab))
        except ValueError as exc:  # CheckpointError is a ValueError
            raise resume_error(checkpoint, exc) from None
        vectors = None  # a resumed run: its embedding is in the checkpoint
    else:
        try:
            vocab, vectors = embeddings.vocabulary(o, given, lambda min_count, keep: TaggingVocab.build(
                data["train"], o["column"], min_count, keep=keep))  # vectors: (V, E) rows or None
        except ValueError as exc:
            raise UsageError(f"--train {o['train']}: {exc}") from None
    pad = vocab.words.pad_id
    train = SentenceBatches(encode(data["train"], vocab), o["batch_size"], shuffle=True, seed=o["seed"], pad_id=pad,
                            name=o["train"])
    valid, test = (SentenceBatches(encode(data[s], vocab), o["eval_batch_size"], pad_id=pad, name=o[s])
                   if data[s] is not None else None for s in ("valid", "test"))

    torch.manual_seed(o["seed"])  # the initial weights
    try:
        model = build_tagger(checkpoint.meta.get("model") if checkpoint else _model_config(o, vocab, variant))
        options = train_options(o)
    except ValueError as exc:
        raise resume_error(checkpoint, exc) if checkpoint else UsageError(str(exc)) from None
    loaded = embeddings.load(model.embed, vectors, o, pad)
    embeddings.freeze(model.embed, o)
    model.to(device)
    task = structure.budget_task(TaggingTask(model, device), model)
    meta = {"task": "tagging", "vocab": vocab.to_json(), "run": o, "sources": sources}
    trainer = make_trainer(model, task, train, valid, options, out, meta, checkpoint)

    s = sources["train"]
    print(f"data: {o['train']}: {s['sentences']:,} sentences, {s['words']:,} words"
          + "".join(f"; {split} {sources[split]['sentences']:,} sentences" for split in ("valid", "test")
                    if split in sources)
          + f"; {len(vocab.words):,} words, {len(vocab.chars):,} characters, {len(vocab.tags)} "
          f"{o['column'].upper()} tags", flush=True)
    engine = engine_name(device)
    c = model.config
    chars = (f"char Bi{c['char_cell'].upper()}({c['char_hidden']}) ⊕ " if c["char_hidden"] else "")
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: emb {c['emb']} ⊕ {chars}{c['layers']} x rnnlab Bi{c['cell'].upper()}({c['hidden']})"
          f"{structure.describe(c)} tagger, "
          f"dropout {c['dropout']:g}" + (f", word dropout {c['word_dropout']:g}" if c["word_dropout"] else "")
          + f"; {n_params:,} parameters; batches of {o['batch_size']} sentences; engine {engine}", flush=True)
    if loaded:
        print(loaded, flush=True)
    print(train_line(options, trainer, out, checkpoint), flush=True)

    summary = fit_with_stop_handler(trainer)
    if summary["stopped"] not in FINISHED:
        return 0  # stopped early (max-steps, max-minutes, Ctrl-C): resume it; evaluate at the real end
    best_dir = load_best_weights(out, model)
    log = MetricsLog(out / "metrics.jsonl")
    for split, batches in (("valid", valid), ("test", test)):
        if batches is None:
            continue
        m = evaluate_tagger(model, batches, vocab, device)
        print(f"{split} ({best_dir.name} weights): {_summary(m)}")
        if split == "test" and not o["quiet"]:
            print(_per_tag_table(m))
        log.write({"kind": split, "step": summary["steps"], "weights": best_dir.name, **m})
    return 0
