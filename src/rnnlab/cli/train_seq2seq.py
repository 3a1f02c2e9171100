"""``rnnlab train seq2seq``: train an encoder–decoder with attention (source embedding → rnnlab (Bi)LSTM encoder →
attention decoder → target tokens) on a built-in task generated on the fly (``--task reverse|sort|copy|dates``) or on
``source<TAB>target`` files, with per-epoch summaries, ``last/`` and ``best/`` checkpoints in ``--out`` and metrics
in ``OUT/metrics.jsonl``; at the end, token accuracy and exact-match accuracy (overall and by source length) on the
validation and test data with the best weights. ``--resume DIR`` continues a stopped run exactly.

``--compare-attention`` trains the same task twice, with ``--attention none`` and with the chosen attention, under
the same budget, and draws exact match against source length of both in one figure (``report.plot_length_curves``).
"""
from __future__ import annotations

import argparse
import json

import torch

from ..data.seq2seq import HOLDOUTS, LEVELS, TASKS, DateTask, Seq2SeqVocab, SymbolTask, collate_pairs, \
    encode_pairs, read_pairs
from ..data.series import sha256_file
from ..data.text import DataError
from ..models.seq2seq import ATTENTIONS, Seq2Seq, build_seq2seq
from ..train.metrics import MetricsLog
from ..train.compat import check_kind, check_vocab_fits
from ..train.seq2seq import Seq2SeqTask, evaluate_seq2seq, seq2seq_sizes
from ..train.tagging import SentenceBatches
from ..variants import ALL_CELLS
from .common import FINISHED, add_kind_parser, add_output_group, add_training_group, default_text, engine_name, \
    fit_with_stop_handler, flag_name, given_flags, load_best_weights, make_trainer, out_dir, refuse_existing_run, \
    resume_run, torch_device, train_line, train_options
from . import regularisation
from . import structure
from .options import UsageError, float_range, int_range, positive_int, resume_error

# Every default next to its reason. Flags default to None in argparse so that "given" can be told from "default".
DEFAULTS = {
    "task": None,  # a built-in task, or --train FILE
    "level": "char",  # pairs files: characters need no tokeniser and have no unknown words
    "min_count": 1,  # keep every training token
    "min_len": 5,  # built-in symbol tasks: source lengths 5-50, long enough that attention matters
    "max_len": 50,
    "alphabet": 10,  # 10 symbols: chance is 10% per symbol
    "holdout": "dates",  # dates task: valid/test dates never seen in training; 'formats' also holds out a format
    "batches": 100,  # built-in tasks: batches per epoch of fresh data (how often to validate and save)
    "valid_size": 1000,  # built-in tasks: sequences in the fixed validation set (and the test set)
    "batch_size": 64,  # pairs per update: full matrix kernels, many updates per minute
    "eval_batch_size": 256,  # evaluation has no backward: bigger batches, fewer steps
    "emb": 64,  # vocabularies of tens of symbols need few dimensions
    "cell": "lstm",
    "hidden": 128,  # encoder units per direction and decoder units: ample for the built-in tasks on a CPU
    "layers": 1,
    "bidirectional": True,  # every memory vector sees the whole source (Bahdanau et al.)
    "attention": "multiplicative",  # Luong's general score: one batched product per target (additive is ~3x slower)
    "input_feeding": False,  # off: the decoder runs in one call of the C++ loop, ~3x faster on a CPU
    "dropout": 0.0,  # generated data never repeats; raise it (0.2-0.3) for small files
    "sampling_prob": 0.0,  # scheduled sampling off: plain teacher forcing
    "beam": 1,  # final evaluation by greedy decoding (batched); --beam K searches K hypotheses per sequence
    "length_penalty": 1.0,  # beam: rank by mean log-probability per token
    "bucket_width": 10,  # exact match reported per source-length bucket of 10
    "epochs": 10,  # 10 x 100 x 64 = 64k generated pairs
    "optimizer": "adam",
    "lr": 2e-3,  # a safe Adam rate for small recurrent models
    "momentum": 0.0,
    "weight_decay": None,
    "clip_value": None,
    "lr_decay": None,  # step decay factor 0.5, plateau factor 0.25 (as 'rnnlab train lm')
    "decay_start": None,
    "plateau": False,
    "clip_norm": 1.0,  # caps the occasional exploding gradient of long sequences; ordinary steps are below
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
             "device", "resume", "test", "beam", "length_penalty", "bucket_width"}
_FLAGS = ("task", "train", "valid", "test", "level", "min_count", "min_len", "max_len", "alphabet", "holdout",
          "batches", "valid_size", "batch_size", "eval_batch_size", "emb", "cell", "hidden", "layers",
          "bidirectional", "attention", "input_feeding", "dropout", "sampling_prob", "beam", "length_penalty",
          "bucket_width", "epochs", "optimizer", "lr", "momentum", "weight_decay", "clip_norm", "clip_value",
          "lr_decay", "decay_start", "plateau", "patience", "seed", "max_minutes",
          "max_steps", "device", "threads", "out", "resume", "log_every", "checkpoint_every", "quiet",
          *regularisation.FLAGS, *structure.FLAGS)
_TASK_ONLY = ("min_len", "max_len", "alphabet", "holdout", "batches", "valid_size")
_FILE_ONLY = ("level", "min_count")

EPILOG = """\
examples:
  rnnlab train seq2seq --task reverse --out runs/reverse
                                                   reverse strings of 10 symbols, lengths 5-50, BiLSTM encoder,
                                                   multiplicative attention; exact match by length at the end
  rnnlab train seq2seq --task reverse --attention none --max-len 20
                                                   the same without attention (a fixed-size bottleneck)
  rnnlab train seq2seq --task dates --holdout formats
                                                   'Tue 5 Mar 19' → '2019-03-05'; the test set uses a format
                                                   never seen in training
  rnnlab train seq2seq --train pairs.tsv --valid dev.tsv --test test.tsv --level word --dropout 0.2
                                                   your own 'source<TAB>target' lines, word tokens
  rnnlab train seq2seq --task sort --attention additive --input-feeding --sampling-prob 0.25
                                                   Bahdanau's score, Luong's input feeding, scheduled sampling
  rnnlab train seq2seq --task reverse --epochs 50 --lr-decay 0.8 --decay-start 30 --threads 1 --out runs/reverse-att
                                                   99.8% held-out exact match on lengths 5-50 in about half an
                                                   hour on one CPU thread
  rnnlab train seq2seq --task reverse --max-len 30 --compare-attention --out runs/attn
                                                   with and without attention, same budget: exact match by
                                                   length in runs/attn/length-curves.png
  rnnlab train seq2seq --resume runs/reverse       continue a stopped run (same epoch, batch and RNG)
  rnnlab translate runs/reverse --file inputs.txt --beam 5
                                                   decode new sources, one per line
"""


def add_train_parser(sub, parents) -> argparse.ArgumentParser:
    helptext = "encoder–decoder with attention: built-in tasks (reverse, sort, copy, dates) or source<TAB>target files"
    return add_kind_parser(sub, "seq2seq", parents, helptext=helptext, doc=__doc__, epilog=EPILOG,
                           add_options=_add_options, run=run)


def _d(name: str) -> str:
    return default_text(DEFAULTS, name)


def _add_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--task", choices=TASKS, help="a built-in task generated on the fly (instead of --train): reverse, "
                   "sort or copy strings of symbols; dates: human-written dates → YYYY-MM-DD")
    g.add_argument("--train", metavar="FILE", help="training pairs, one 'source<TAB>target' per line (UTF-8)")
    g.add_argument("--valid", metavar="FILE", help="validation pairs: the best/ checkpoint, --patience and the final "
                   "accuracy use them")
    g.add_argument("--test", metavar="FILE", help="test pairs, decoded once with the best weights at the end")
    g.add_argument("--level", choices=LEVELS, help="pairs files: character or whitespace-word tokens" + _d("level"))
    g.add_argument("--min-count", type=positive_int, metavar="N", help="pairs files: training tokens seen fewer than N "
                   "times become <unk>" + _d("min_count"))
    g.add_argument("--min-len", type=int_range(1, 10_000), metavar="N", help="symbol tasks: shortest source"
                   + _d("min_len"))
    g.add_argument("--max-len", type=int_range(1, 10_000), metavar="N", help="symbol tasks: longest source"
                   + _d("max_len"))
    g.add_argument("--alphabet", type=int_range(2, 26), metavar="K", help="symbol tasks: symbols a, b, ... (at most "
                   "26)" + _d("alphabet"))
    g.add_argument("--holdout", choices=HOLDOUTS, help="dates task: hold out dates only, or dates and (in the test "
                   "set) one whole format" + _d("holdout"))
    g.add_argument("--batches", type=positive_int, metavar="N", help="built-in tasks: batches per epoch"
                   + _d("batches"))
    g.add_argument("--valid-size", type=positive_int, metavar="N", help="built-in tasks: sequences in the validation "
                   "set and in the test set" + _d("valid_size"))
    g.add_argument("--batch-size", type=int_range(1, 100_000), metavar="B", help="pairs per update"
                   + _d("batch_size"))
    g.add_argument("--eval-batch-size", type=int_range(1, 100_000), metavar="B", help="pairs per batch when "
                   "evaluating" + _d("eval_batch_size"))

    g = p.add_argument_group("model")
    g.add_argument("--emb", type=int_range(1, 65536), metavar="E", help="source and target embedding size"
                   + _d("emb"))
    g.add_argument("--cell", choices=ALL_CELLS, help=structure.CELL_HELP + ", of encoder and decoder (--dilations "
                   "and --skip shape the encoder only: the decoder runs step by step)" + _d("cell"))
    g.add_argument("--hidden", type=int_range(1, 65536), metavar="H", help="encoder units per direction; decoder "
                   "units" + _d("hidden"))
    g.add_argument("--layers", type=int_range(1, 64), metavar="L", help="stacked layers of encoder and decoder"
                   + _d("layers"))
    g.add_argument("--bidirectional", action=argparse.BooleanOptionalAction, default=None,
                   help="a backward direction in every encoder layer" + _d("bidirectional"))
    g.add_argument("--attention", choices=ATTENTIONS, help="none, additive (Bahdanau et al. 2015) or "
                   "multiplicative (Luong et al. 2015's general score)" + _d("attention"))
    g.add_argument("--input-feeding", action=argparse.BooleanOptionalAction, default=None,
                   help="feed the previous attentional vector into the decoder (Luong et al.; decodes step by step)"
                   + _d("input_feeding"))
    g.add_argument("--dropout", type=float_range(0.0, 0.99, lo_open=False), metavar="P",
                   help="dropout on embeddings, between layers and before the output layer" + _d("dropout"))
    g.add_argument("--sampling-prob", type=float_range(0.0, 1.0, lo_open=False), metavar="P",
                   help="scheduled sampling (Bengio et al. 2015): feed the model's own previous token with "
                   "probability P in training" + _d("sampling_prob"))

    g = p.add_argument_group("evaluation")
    g.add_argument("--beam", type=int_range(1, 1000), metavar="K", help="final evaluation: 1 = greedy decoding, K > 1 "
                   "= beam search of width K" + _d("beam"))
    g.add_argument("--length-penalty", type=float_range(0.0, 10.0, lo_open=False), metavar="A",
                   help="beam search ranks by log p / length^A (0: raw log-probability)" + _d("length_penalty"))
    g.add_argument("--bucket-width", type=int_range(1, 10_000), metavar="W", help="exact match is reported per "
                   "source-length bucket of W" + _d("bucket_width"))
    g.add_argument("--compare-attention", action="store_true", help="train twice under the same budget (data, "
                   "seed, epochs, sizes): with --attention none and with the chosen --attention, into OUT/none and "
                   "OUT/KIND; then write OUT/length-curves.png (exact match against source length, both runs) and "
                   "print both curves")

    regularisation.add_flags(p, DEFAULTS)
    structure.add_flags(p, DEFAULTS)
    add_training_group(p, DEFAULTS, schedule=True)
    add_output_group(p, DEFAULTS, default_out="runs/seq2seq-<task>-<time>")


# -- resolving options ---------------------------------------------------------------------------------------------
def _resolve(given: dict) -> dict:
    o = {**DEFAULTS, "train": None, "valid": None, "test": None, "quiet": False, "out": None, **given}
    o["kind"] = "seq2seq"
    if o["task"] and o["train"]:
        raise UsageError(f"--task {o['task']} generates its data; drop it or drop --train {o['train']}")
    if not o["task"] and not o["train"]:
        raise UsageError("give --task reverse|sort|copy|dates or --train FILE (or --resume DIR); e.g. 'rnnlab train "
                         "seq2seq --task reverse'")
    if o["task"]:
        for k in ("valid", "test") + _FILE_ONLY:
            if k in given:
                raise UsageError(f"{flag_name(k)} applies to --train files; --task {o['task']} generates its own "
                                 "validation and test data. Drop it")
        if o["task"] == "dates":
            for k in ("min_len", "max_len", "alphabet"):
                if k in given:
                    raise UsageError(f"{flag_name(k)} shapes the symbol tasks; the dates task has fixed formats. Drop "
                                     "it")
        elif "holdout" in given:
            raise UsageError(f"--holdout applies to --task dates; got --task {o['task']}. Drop it")
        if o["min_len"] > o["max_len"]:
            raise UsageError(f"--min-len {o['min_len']} is above --max-len {o['max_len']}; swap them")
    else:
        for k in _TASK_ONLY:
            if k in given:
                raise UsageError(f"{flag_name(k)} shapes a built-in --task; with --train files drop it")
    if o["patience"] and not (o["valid"] or o["task"]):
        raise UsageError(f"--patience {o['patience']} watches the validation loss; give --valid FILE or drop it")
    if "clip_value" in given and "clip_norm" not in given:
        o["clip_norm"] = None  # --clip-value replaces the default norm clipping
    if o["plateau"] and not (o["valid"] or o["task"]):
        raise UsageError("--plateau watches the validation loss; give --valid FILE or drop it")
    if o["decay_start"] is not None and o["lr_decay"] is None and not o["plateau"]:
        raise UsageError(f"--decay-start {o['decay_start']} needs --lr-decay F (the factor of the step decay)")
    if o["attention"] == "none" and o["input_feeding"]:
        raise UsageError("--input-feeding feeds back the attentional vector, and --attention none has none; drop one")
    return o


def _tasks(o: dict):
    """(train, valid, test) data and the vocabulary of a built-in task."""
    if o["task"] == "dates":
        make = (lambda bs, nb, split: DateTask(bs, nb, holdout=o["holdout"], seed=o["seed"], split=split))
    else:
        def make(bs, nb, split):
            # Evaluation batches span every length (one bucket), so a small set still covers the whole range.
            width = 5 if split == "train" else o["max_len"] - o["min_len"] + 1
            return SymbolTask(o["task"], bs, nb, min_len=o["min_len"], max_len=o["max_len"], alphabet=o["alphabet"],
                              bucket_width=width, seed=o["seed"], split=split)
    train = make(o["batch_size"], o["batches"], "train")
    nb = -(-o["valid_size"] // o["eval_batch_size"])  # batches of equal size, together --valid-size or just over
    ebs = -(-o["valid_size"] // nb)
    return train, make(ebs, nb, "valid"), make(ebs, nb, "test"), train.vocab


def _read(o: dict, checkpoint):
    """(train, valid, test batches, vocabulary, sources record) of pairs files; with ``checkpoint`` (a resumed run)
    its vocabulary, and a check that train and valid did not change."""
    sources = checkpoint.meta.get("sources") if checkpoint else None
    pairs, record = {}, {}
    for split in ("train", "valid", "test"):
        path = o[split]
        if path is None:
            pairs[split] = None
            continue
        try:
            pairs[split] = read_pairs(path, o["level"])
        except DataError as exc:
            raise UsageError(f"{flag_name(split)} {exc}") from None
        record[split] = {"name": path, "sha256": sha256_file(path), "pairs": len(pairs[split])}
        want = ((sources or {}).get(split) or {}).get("sha256")
        if split != "test" and want is not None and want != record[split]["sha256"]:
            raise UsageError(f"{path}: the {split} file changed since the checkpoint was written; resuming needs "
                             "the same data")
    if checkpoint is not None:
        try:
            config = check_kind(checkpoint.path, checkpoint.meta, ("seq2seq",), "an encoder-decoder (seq2seq) model",
                                "rnnlab train seq2seq")
            vocab = Seq2SeqVocab.from_json(checkpoint.meta["vocab"])
            check_vocab_fits(checkpoint.path, config, seq2seq_sizes(vocab))
        except ValueError as exc:  # CheckpointError is a ValueError
            raise resume_error(checkpoint, exc) from None
    else:
        vocab = Seq2SeqVocab.build(pairs["train"], o["level"], o["min_count"])
    batches = {}
    for split in ("train", "valid", "test"):
        if pairs[split] is None:
            batches[split] = None
            continue
        size = o["batch_size"] if split == "train" else o["eval_batch_size"]
        batches[split] = SentenceBatches(encode_pairs(pairs[split], vocab), size, shuffle=split == "train",
                                         seed=o["seed"], pad_id=0, name=o[split], collate_fn=collate_pairs)
    return batches["train"], batches["valid"], batches["test"], vocab, record


def _new_model(o: dict, vocab: Seq2SeqVocab, variant: dict) -> Seq2Seq:
    return Seq2Seq(len(vocab.src), len(vocab.tgt), emb=o["emb"], cell=o["cell"], hidden=o["hidden"],
                   layers=o["layers"], bidirectional=o["bidirectional"], attention=o["attention"],
                   input_feeding=o["input_feeding"], dropout=o["dropout"],
                   rnn_options=regularisation.rnn_options(o) or None, **variant)


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def _summary(m: dict) -> str:
    return (f"exact match {_pct(m['exact_match'])} ({m['decoding']}, {m['n']:,} sequences)  token accuracy "
            f"{_pct(m['token_accuracy'])}  loss {m['loss']:.4f}")


def _by_length(m: dict) -> str:
    rows = ["  source length   sequences   exact match"]
    rows += [f"  {r['lengths']:>13}   {r['n']:>9,}   {_pct(r['exact_match']):>11}" for r in m["by_length"]]
    return "\n".join(rows)


# -- the run -------------------------------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> int:
    given = given_flags(args, _FLAGS, keep_false=True)  # --no-bidirectional is given as False
    if getattr(args, "compare_attention", False):
        return _compare_attention(given)
    _train(given)
    return 0


def _train(given: dict) -> dict | None:
    """One run from the given flags, evaluated at its end; None when it stopped early (resumable), else
    {"model" (best weights), "valid", "device", "out"}."""
    o, checkpoint = resume_run(given, "seq2seq", RESUMABLE) if "resume" in given else (_resolve(given), None)
    variant = structure.model_options(o, given)
    out = out_dir(o["out"], f"seq2seq-{o['task'] or 'pairs'}")
    refuse_existing_run(out, checkpoint)
    device = torch_device(o["device"], o["threads"])

    if o["task"]:
        train, valid, test, vocab = _tasks(o)
        sources = {"task": train.describe()}
        n_eval = valid.batch_size * valid.num_batches(0)
        data_line = (f"data: {train.describe()}, generated: {o['batches']} batches of {o['batch_size']} per epoch; "
                     f"valid and test {n_eval:,} each")
    else:
        train, valid, test, vocab, sources = _read(o, checkpoint)
        data_line = (f"data: {o['train']}: {sources['train']['pairs']:,} pairs"
                     + "".join(f"; {s} {sources[s]['pairs']:,}" for s in ("valid", "test") if s in sources)
                     + f"; {o['level']} tokens: {len(vocab.src):,} source, {len(vocab.tgt):,} target")

    torch.manual_seed(o["seed"])  # the initial weights
    try:
        model = build_seq2seq(checkpoint.meta.get("model")) if checkpoint else _new_model(o, vocab, variant)
        options = train_options(o)
    except ValueError as exc:
        raise resume_error(checkpoint, exc) if checkpoint else UsageError(str(exc)) from None
    model.to(device)
    task = structure.budget_task(Seq2SeqTask(model, device, sampling_prob=o["sampling_prob"]), model)
    meta = {"task": "seq2seq", "vocab": vocab.to_json(), "run": o, "sources": sources}
    trainer = make_trainer(model, task, train, valid, options, out, meta, checkpoint)

    print(data_line, flush=True)
    engine = engine_name(device)
    c = model.config
    n_params = sum(p.numel() for p in model.parameters())
    att = "no attention" if c["attention"] == "none" else \
        f"{c['attention']} attention{' with input feeding' if c['input_feeding'] else ''}"
    print(f"model: emb {c['emb']} → {c['layers']} x rnnlab {'Bi' if c['bidirectional'] else ''}{c['cell'].upper()}"
          f"({c['hidden']}){structure.describe(c)} encoder → {c['dec_layers']} x {c['cell'].upper()}"
          f"({c['dec_hidden']}) decoder, {att}"
          + (f", scheduled sampling {o['sampling_prob']:g}" if o["sampling_prob"] else "")
          + f"; {n_params:,} parameters; engine {engine}", flush=True)
    print(train_line(options, trainer, out, checkpoint, note=" (rates count target tokens)"), flush=True)

    summary = fit_with_stop_handler(trainer)
    if summary["stopped"] not in FINISHED:
        return None  # stopped early (max-steps, max-minutes, Ctrl-C): resume it; evaluate at the real end
    best_dir = load_best_weights(out, model)
    log = MetricsLog(out / "metrics.jsonl")
    for split, data in (("valid", valid), ("test", test)):
        if data is None:
            continue
        try:
            m = evaluate_seq2seq(model, data, beam=o["beam"], length_penalty=o["length_penalty"],
                                 bucket_width=o["bucket_width"], device=device)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        print(f"{split} ({best_dir.name} weights): {_summary(m)}")
        print(_by_length(m))
        log.write({"kind": split, "step": summary["steps"], "weights": best_dir.name, **m})
    return {"model": model, "valid": valid, "device": device, "out": out}


# -- --compare-attention -----------------------------------------------------------------------------------------
def _compare_attention(given: dict) -> int:
    """Train the same task twice under the same budget (data, seed, epochs, model size): with --attention none
    and with the chosen attention, into OUT/none and OUT/KIND; then exact match against source length of both
    on the same validation data: OUT/length-curves.png, OUT/length-curves.json and a table on stdout."""
    if "resume" in given:
        raise UsageError("--compare-attention starts two new runs; resume one of them on its own (--resume "
                         "OUT/none or OUT/KIND) and drop --compare-attention")
    o = _resolve(given)  # the usage errors of the runs, before any training
    structure.model_options(dict(o), given)
    kind = o["attention"]
    if kind == "none":
        raise UsageError("--compare-attention compares --attention none with additive or multiplicative attention; "
                         "choose one of those with --attention")
    if not (o["task"] or o["valid"]):
        raise UsageError("--compare-attention measures exact match by length on validation data; give --valid FILE")
    try:
        from ..diagnose import report

        report._figure(1, 1)  # fail before training when matplotlib is missing
    except ImportError as exc:
        raise UsageError(str(exc)) from None
    base = out_dir(o["out"], f"seq2seq-{o['task'] or 'pairs'}-compare")
    refuse_existing_run(base, None)
    curves, counts = {}, {}
    for att in ("none", kind):
        run_given = {**given, "attention": att, "out": str(base / att)}
        if att == "none":
            run_given.pop("input_feeding", None)  # nothing to feed back without attention
        print(f"== attention {att}: {base / att}", flush=True)
        result = _train(run_given)
        if result is None:
            print(f"the --attention {att} run stopped early; resume it with --resume {base / att} (the comparison "
                  "needs both runs finished)")
            return 0
        try:
            m = evaluate_seq2seq(result["model"], result["valid"], bucket_width=1, device=result["device"])
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        curves[att] = {int(r["lengths"]): r["exact_match"] for r in m["by_length"]}
        counts[att] = {int(r["lengths"]): r["n"] for r in m["by_length"]}
    figure = report.plot_length_curves(curves, base / "length-curves.png",
                                       title=f"exact match by source length: {o['task'] or 'pairs'}, "
                                       f"attention none vs {kind}")
    (base / "length-curves.json").write_text(json.dumps({"exact_match": {a: {str(k): v for k, v in c.items()}
                                                                          for a, c in curves.items()},
                                                          "n": {str(k): v for k, v in counts["none"].items()}},
                                                         indent=1) + "\n", encoding="utf-8")
    print(_curve_table(curves, counts["none"], o["bucket_width"], kind))
    print(f"wrote {figure} and {base / 'length-curves.json'}")
    return 0


def _curve_table(curves: dict, counts: dict, width: int, kind: str) -> str:
    """Exact match of both runs per bucket of ``width`` source lengths (weighted by the sequences in each)."""
    buckets: dict[int, list[int]] = {}
    for length in sorted(counts):
        buckets.setdefault(length // width, []).append(length)
    rows = [f"  source length   sequences   {'none':>11}   {kind:>14}"]
    for lengths in buckets.values():
        n = sum(counts[k] for k in lengths)
        acc = [sum(curves[a][k] * counts[k] for k in lengths) / n for a in ("none", kind)]
        name = f"{lengths[0]}-{lengths[-1]}" if len(lengths) > 1 else f"{lengths[0]}"
        rows.append(f"  {name:>13}   {n:>9,}   {_pct(acc[0]):>11}   {_pct(acc[1]):>14}")
    return "\n".join(["exact match by source length (valid, best weights of each run):", *rows])
