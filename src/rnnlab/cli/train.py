"""``rnnlab train lm|ngram``: train a language model on a text file (or on the Python standard library's source with
``--stdlib-demo``), with a progress bar, per-epoch summaries, ``last/`` and ``best/`` checkpoints in ``--out`` and
metrics in ``OUT/metrics.jsonl``. ``--resume DIR`` continues a stopped run exactly where it stopped. The other
model kinds (``rnnlab train tag``) have modules of their own, listed in ``OTHER_KINDS``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ..data import token_cache
from ..data.text import DEFAULT_BPE_VOCAB, LEVELS, DataError, LMStream, Vocab, build_corpus, check_file, read_text, \
    sha256_of, stdlib_corpus
from ..models.lm import build_model
from ..variants import ALL_CELLS
from ..train.lm import LM_KINDS, LMTask, evaluate
from ..train.metrics import MetricsLog, lm_metrics
from ..train.compat import check_kind, check_vocab_fits
from . import regularisation
from . import structure
from . import train_classify
from . import train_classify_series
from . import train_regress
from . import train_seq2seq
from . import train_tag
from .common import FINISHED, add_output_group, add_training_group, default_text, engine_name, fit_with_stop_handler, \
    flag_name, given_flags, load_best_weights, make_trainer, out_dir, refuse_existing_run, resume_run, torch_device, \
    train_line, train_options
from .options import UsageError, float_range, int_range, positive_int, resume_error
from .unknown import say

# Every default next to its reason. Flags default to None in argparse so that "given on the command line" can be
# told from "left at its default" (it matters for --resume and --stdlib-demo).
DEFAULTS = {
    "level": "char",
    "valid_fraction": 0.1,  # nanoGPT's split: the last 10% of the text is the validation set
    "min_count": 1,  # keep every word seen in training
    "max_vocab": None,  # no cap
    "bpe_vocab": DEFAULT_BPE_VOCAB,
    "cell": "lstm",
    "layers": 1,
    "hidden": 256,  # learns visibly within minutes on a 2-core CPU at char level
    "emb": None,  # None: equal to --hidden (so --tie works); 64 for the n-gram model
    "dropout": 0.0,  # small data, short runs: little to regularise; 0.2-0.5 for PTB-size runs
    "order": 3,  # n-gram: a trigram, the classic small baseline
    "bptt": 64,  # steps per chunk: a line or two of text at char level; gradients reach back this far
    "batch_size": 32,  # columns read in parallel: enough rows for the CPU's matrix kernels
    "eval_batch_size": 10,  # pytorch word_language_model's evaluation batch size
    "epochs": 10,  # a small corpus flattens out by then; --patience or --max-minutes can end sooner
    "optimizer": "adam",  # trains RNN LMs without tuning; 'sgd' with --lr 20 --clip-norm 0.25 is the classic PTB recipe
    "lr": 2e-3,  # Karpathy's char-rnn rate; safe for Adam on small recurrent LMs
    "momentum": 0.0,
    "weight_decay": None,
    "clip_norm": 1.0,  # caps the occasional exploding RNN gradient (Pascanu et al. 2013); ordinary steps are below
    "clip_value": None,
    "lr_decay": None,  # step decay factor 0.5 (Zaremba et al.), plateau factor 0.25 (word_language_model's /4)
    "decay_start": None,  # step decay: the first E epochs run at --lr (default 1)
    "patience": None,
    "seed": 0,
    "log_every": 100,
    "max_steps": None,
    "max_minutes": None,
    "checkpoint_every": None,
    "samples": 0,
    "sample_tokens": 300,  # a few lines of text
    "stdlib_bytes": 400_000,  # ~10k lines of Python: several epochs in a minute, enough variety to not memorise
    "device": "cpu",  # rnnlab's fast engine is its C++ CPU loop; on a GPU the layers run the pure-PyTorch loop
    "threads": None,
    **regularisation.DEFAULTS,  # 0: off; the reasons and AWD-LSTM's values are in cli/regularisation.py
    **structure.DEFAULTS,  # plain stacking; the reasons are in cli/structure.py
}
NGRAM_EMB = 64  # --emb of 'rnnlab train ngram' when not given: Bengio et al. used 30-100 features per word
# What --stdlib-demo changes when the flag is not given: a run that shows learning within a minute.
DEMO = {"max_minutes": 1.0, "epochs": 100, "samples": 3, "lr": 3e-3, "log_every": 50}
# Flags a resumed run may change: they bound or display the run, they do not change what it computes.
RESUMABLE = {"epochs", "max_minutes", "max_steps", "quiet", "out", "log_every", "checkpoint_every", "samples",
             "sample_tokens", "threads", "device", "resume"}

EPILOG = """\
examples:
  rnnlab train lm --stdlib-demo                    char LSTM on Python's own standard library source for 1 minute,
                                                   then print samples
  rnnlab train lm --train input.txt --max-minutes 5 --samples 3
                                                   char-level LSTM on one file (last 10% = validation)
  rnnlab train lm --train ptb.train.txt --valid ptb.valid.txt --test ptb.test.txt --level word \\
      --hidden 200 --layers 2 --bptt 20 --batch-size 20 --optimizer sgd --lr 20 --clip-norm 0.25 \\
      --lr-decay 0.5 --decay-start 4 --epochs 13 --out runs/ptb-small
                                                   Zaremba et al.'s small PTB model (their lr 1 and clip 5 on
                                                   the loss summed over 20 steps = lr 20, clip 0.25 on our mean)
  rnnlab train lm --train ptb.train.txt --valid ptb.valid.txt --test ptb.test.txt --level word \\
      --hidden 200 --layers 2 --tie --bptt 20 --batch-size 20 --optimizer sgd --lr 20 --clip-norm 0.25 \\
      --lr-decay 0.5 --decay-start 4 --epochs 13 --weight-drop 0.2 --input-dropout 0.2 --locked-dropout 0.2 \\
      --output-dropout 0.2 --out runs/ptb-tied-awd
                                                   the same tied model with AWD-LSTM's regularisers (weight drop
                                                   on W_hh, locked dropout) in place of --dropout; AWD-LSTM's own
                                                   (larger) rates are in --help
  rnnlab train lm --train input.txt --level bpe --bpe-vocab 2000 --cell gru --tie --dropout 0.2
  rnnlab train lm --resume runs/ptb-small          continue a stopped run (same epoch, batch and RNG)
  rnnlab train ngram --train input.txt --level word --order 4 --direct
                                                   Bengio et al.'s feed-forward 4-gram LM
"""


DESCRIPTION = """\
'rnnlab train MODEL': train a recurrent language model (lm), a feed-forward n-gram language model (ngram), a
part-of-speech tagger (tag), a forecaster of a numeric series (regress), a text classifier (classify), a
classifier of numeric sequences (classify-series) or an encoder-decoder (seq2seq), with per-epoch summaries,
'last/' and 'best/' checkpoints in '--out' and metrics in 'OUT/metrics.jsonl'. '--resume DIR' continues a stopped
run exactly where it stopped. 'rnnlab train MODEL --help' lists a model's options and examples."""


# Other model kinds live in modules of their own (cli/train_<kind>.py); each provides
# add_train_parser(sub, parents), which adds its `rnnlab train <kind>` parser and sets its run function.
OTHER_KINDS: tuple = (train_tag, train_regress, train_classify, train_classify_series,
                      train_seq2seq)


def add_parser(subparsers, parents) -> argparse.ArgumentParser:
    p = subparsers.add_parser("train", parents=parents, help="train a model (lm: recurrent LM; ngram: "
                              "feed-forward n-gram LM; see 'rnnlab train --help' for the others)",
                              description=DESCRIPTION,
                              epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(run=_no_model)
    sub = p.add_subparsers(dest="model_kind", metavar="MODEL", title="models", parser_class=type(p))
    for kind, helptext in (("lm", "recurrent LM: embedding → rnnlab LSTM/GRU/RNN → linear decoder"),
                           ("ngram", "feed-forward n-gram LM (Bengio et al. 2003)")):
        q = sub.add_parser(kind, parents=parents, help=helptext, description=helptext, epilog=EPILOG,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        _add_options(q, kind)
        q.set_defaults(run=run, model_kind=kind)
    for module in OTHER_KINDS:
        module.add_train_parser(sub, parents)
    return p


def _d(name: str) -> str:
    return default_text(DEFAULTS, name)


def _add_options(p: argparse.ArgumentParser, kind: str) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--train", metavar="FILE", help="training text (UTF-8)")
    g.add_argument("--valid", metavar="FILE", help="validation text; without it the last --valid-fraction of "
                   "--train is used")
    g.add_argument("--test", metavar="FILE", help="test text, evaluated once with the best weights at the end")
    g.add_argument("--level", choices=LEVELS, help="tokens: characters, whitespace words (one <eos> per line), or "
                   "a byte-level BPE trained on --train" + _d("level"))
    g.add_argument("--valid-fraction", type=float_range(0.0, 0.9, lo_open=False), metavar="F",
                   help="share of --train held out for validation when --valid is not given; 0 = none"
                   + _d("valid_fraction"))
    g.add_argument("--min-count", type=positive_int, metavar="N", help="word level: rarer words become <unk>"
                   + _d("min_count"))
    g.add_argument("--max-vocab", type=int_range(3), metavar="N", help="word level: keep the N-2 most frequent "
                   "words plus <unk>, <eos>" + _d("max_vocab"))
    g.add_argument("--bpe-vocab", type=int_range(257, 1_000_000), metavar="N", help="BPE vocabulary size"
                   + _d("bpe_vocab"))
    add_cache_flags(g, "--train, --valid and --test are")
    if kind == "lm":
        g.add_argument("--stdlib-demo", action="store_true", help="train on the Python standard library's own "
                       f"source (no --train needed); defaults become {_demo_text()}")
        g.add_argument("--stdlib-bytes", type=int_range(1000), metavar="N", help="--stdlib-demo: bytes of source"
                       + _d("stdlib_bytes"))

    g = p.add_argument_group("model")
    if kind == "lm":
        g.add_argument("--cell", choices=ALL_CELLS, help=structure.CELL_HELP + _d("cell"))
        g.add_argument("--layers", type=int_range(1, 64), metavar="L", help="stacked layers" + _d("layers"))
        g.add_argument("--tie", action="store_true", default=None, help="share the embedding with the decoder "
                       "(needs --emb equal to --hidden)")
        g.add_argument("--one-hot", action="store_true", default=None, help="one-hot input instead of an embedding")
    else:
        g.add_argument("--order", type=int_range(2, 64), metavar="N", help="n-gram order: predict from the N-1 "
                       "previous tokens" + _d("order"))
        g.add_argument("--direct", action="store_true", default=None, help="add direct connections from the "
                       "context embeddings to the output (Bengio et al.'s W)")
    g.add_argument("--hidden", type=int_range(1, 65536), metavar="H", help="hidden units" + _d("hidden"))
    g.add_argument("--emb", type=int_range(1, 65536), metavar="E", help="embedding size (default: "
                   + ("--hidden)" if kind == "lm" else f"{NGRAM_EMB})"))
    g.add_argument("--dropout", type=float_range(0.0, 0.99, lo_open=False), metavar="P",
                   help="dropout on non-recurrent connections" + _d("dropout"))
    if kind == "lm":
        regularisation.add_flags(p, DEFAULTS)
        structure.add_flags(p, DEFAULTS)

    g = p.add_argument_group("batches")
    g.add_argument("--bptt", type=int_range(1, 100_000), metavar="T", help=("time steps per chunk (truncated BPTT "
                   "length)" if kind == "lm" else "tokens per chunk of the training stream") + _d("bptt"))
    g.add_argument("--random-bptt", action="store_true", default=None, help="AWD-LSTM's randomised chunk length "
                   "(bptt with p=0.95 else bptt/2, then N(that, 5))")
    g.add_argument("--batch-size", type=int_range(1, 100_000), metavar="B", help="parallel columns of the "
                   "training stream" + _d("batch_size"))
    g.add_argument("--eval-batch-size", type=int_range(1, 100_000), metavar="B", help="columns for validation "
                   "and test" + _d("eval_batch_size"))

    add_training_group(p, DEFAULTS, patience_help="stop after N epochs without a better validation loss",
                       schedule=True)
    add_output_group(p, DEFAULTS, default_out="runs/<model>-<level>-<time>", more=_add_output_options)


def add_cache_flags(g, files: str) -> None:
    """--cache-dir and --no-cache (also on 'rnnlab eval'; ``files``: what is cached, with its verb). Not run options:
    a resumed run may change them."""
    g.add_argument("--cache-dir", metavar="DIR", help=f"token cache: {files} tokenised once into DIR and "
                   "memory-mapped by later runs, --resume and eval (default: $RNNLAB_CACHE/tokens, else "
                   f"~/.cache/rnnlab/tokens, for files of {token_cache.MIN_BYTES // 1_000_000} MB or more: smaller "
                   "ones tokenise in memory in well under a second; with --cache-dir any size is cached)")
    g.add_argument("--no-cache", action="store_true", help="tokenise in memory; read and write no token cache")


def cache_dir_of(args, paths) -> Path | None:
    """The token cache directory of a command's --cache-dir / --no-cache for ``paths`` (None: in memory)."""
    if getattr(args, "no_cache", False) and getattr(args, "cache_dir", None) is not None:
        raise UsageError(f"--no-cache and --cache-dir {args.cache_dir}: cache in a directory or not at all; drop one")
    return token_cache.choose_cache_dir(getattr(args, "cache_dir", None), getattr(args, "no_cache", False), paths)


def _add_output_options(g) -> None:
    g.add_argument("--samples", type=int_range(0, 100), metavar="N", help="print N generated samples at the end"
                   + _d("samples"))
    g.add_argument("--sample-tokens", type=positive_int, metavar="N", help="tokens per sample" + _d("sample_tokens"))


def _demo_text() -> str:
    return ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in DEMO.items())


def _no_model(args) -> int:
    raise UsageError("choose a model, e.g. 'rnnlab train lm ...' (see 'rnnlab train --help' for all of them)")


# -- resolving options ---------------------------------------------------------------------------------------------
_FLAGS = ("train", "valid", "test", "level", "valid_fraction", "min_count", "max_vocab", "bpe_vocab", "stdlib_demo",
          "stdlib_bytes", "cell", "layers", "tie", "one_hot", "order", "direct", "hidden", "emb", "dropout", "bptt",
          "random_bptt", "batch_size", "eval_batch_size", "epochs", "optimizer", "lr", "momentum", "weight_decay",
          "clip_norm", "clip_value", "lr_decay", "decay_start", "plateau", "patience", "seed", "max_minutes",
          "max_steps", "device", "threads", "out", "resume", "log_every", "checkpoint_every", "samples",
          "sample_tokens", "quiet", *regularisation.FLAGS, *structure.FLAGS)


def _resolve(kind: str, given: dict) -> dict:
    o = {**DEFAULTS, "train": None, "valid": None, "test": None, "stdlib_demo": False, "tie": False,
         "one_hot": False, "direct": False, "random_bptt": False, "plateau": False, "quiet": False, "out": None}
    if given.get("stdlib_demo"):
        o.update(DEMO)
    o.update(given)
    o["kind"] = kind
    if kind == "ngram" and "emb" not in given:
        o["emb"] = NGRAM_EMB
    if "clip_value" in given and "clip_norm" not in given:
        o["clip_norm"] = None  # --clip-value replaces the default norm clipping
    if o["clip_norm"] is not None and o["clip_value"] is not None:
        raise UsageError(f"--clip-norm {o['clip_norm']:g} and --clip-value {o['clip_value']:g}: clip by norm or by "
                         "value, not both; keep one")
    if o["decay_start"] is not None and o["lr_decay"] is None and not o["plateau"]:
        raise UsageError(f"--decay-start {o['decay_start']} needs --lr-decay F (the factor of the step decay)")
    if o["decay_start"] is not None and o["plateau"]:
        raise UsageError("--decay-start belongs to the step decay; --plateau decays whenever validation stalls. "
                         "Use one of them")
    if o["stdlib_demo"] and o["train"]:
        raise UsageError(f"--stdlib-demo trains on the standard library's source; drop it or drop --train "
                         f"{o['train']}")
    if not o["stdlib_demo"] and not o["train"]:
        raise UsageError("--train FILE is required (or --stdlib-demo, or --resume DIR); e.g. 'rnnlab train "
                         f"{kind} --train input.txt'")
    if "valid_fraction" in given and o["valid"]:
        raise UsageError(f"--valid-fraction {o['valid_fraction']:g} splits --train, but --valid {o['valid']} is given; "
                         "drop one")
    for flag, level in (("min_count", "word"), ("max_vocab", "word"), ("bpe_vocab", "bpe")):
        if flag in given and o["level"] != level:
            raise UsageError(f"{flag_name(flag)} applies to --level {level}; got --level {o['level']}. Drop it")
    if "stdlib_bytes" in given and not o["stdlib_demo"]:
        raise UsageError("--stdlib-bytes sizes the --stdlib-demo corpus; add --stdlib-demo or drop it")
    if kind == "lm" and o["tie"]:
        emb = o["hidden"] if o["emb"] is None else o["emb"]
        if emb != o["hidden"]:
            raise UsageError(f"--tie shares the embedding with the decoder, so --emb must equal --hidden; got --emb "
                             f"{emb}, --hidden {o['hidden']}. Set --emb {o['hidden']} or drop --tie")
    if kind == "lm" and o["one_hot"] and (o["tie"] or "emb" in given):
        raise UsageError("--one-hot input has no embedding; drop --emb and --tie")
    if (o["patience"] or o["plateau"]) and o["valid_fraction"] == 0 and not o["valid"]:
        raise UsageError("--patience and --plateau watch the validation loss; give --valid FILE or a "
                         "--valid-fraction above 0")
    return o


def _model_config(o: dict, vocab_size: int, variant: dict) -> dict:
    if o["kind"] == "ngram":
        return {"kind": "ngram", "vocab_size": vocab_size, "order": o["order"], "emb": o["emb"],
                "hidden": o["hidden"], "direct": o["direct"], "dropout": o["dropout"]}
    config = {"kind": "rnn", "vocab_size": vocab_size, "cell": o["cell"], "layers": o["layers"],
              "hidden": o["hidden"], "emb": None if o["one_hot"] else o["emb"], "dropout": o["dropout"],
              "tie": o["tie"], "one_hot": o["one_hot"]}
    options = regularisation.rnn_options(o)
    if options:  # only when used: a plain run's config has no such key
        config["rnn_options"] = options
    return {**config, **variant}  # likewise: the structure keywords only when used


# -- the run -------------------------------------------------------------------------------------------------------
def _texts(o: dict, sources: dict | None = None):
    """(train, valid, test) texts and their names; with ``sources`` (a resumed run) check they did not change."""
    if o["stdlib_demo"]:
        texts = [stdlib_corpus(o["stdlib_bytes"]), None, None]
        names = [f"the Python standard library ({o['stdlib_bytes']} bytes of *.py)", "", ""]
    else:
        texts, names = [], []
        for flag in ("train", "valid", "test"):
            path = o[flag]
            if path is None:
                texts.append(None)
            else:
                try:
                    texts.append(read_text(path))
                except DataError as exc:
                    raise UsageError(f"{flag_name(flag)} {exc}") from None
            names.append(path or "")
    if sources:
        _check_unchanged(sources, {s: sha256_of(t) for s, t in zip(("train", "valid", "test"), texts)
                                   if t is not None}, names)
    return texts, tuple(names)


def _check_unchanged(sources: dict, now: dict, names) -> None:
    """A resumed run's data must be the checkpoint's: ``now`` maps each split to the sha256 of its text."""
    for split, name in zip(("train", "valid", "test"), names):
        want = (sources.get(split) or {}).get("sha256")
        if split in now and want is not None and now[split] != want:
            raise UsageError(f"{name}: the {split} text changed since the checkpoint was written; resuming needs the "
                             "same data")


def _cached_corpus(o: dict, cache_dir: Path, vocab, sources: dict | None):
    """(corpus, CacheInfo) through the token cache, or None when the cache directory cannot be used (said in a
    note: the run then tokenises in memory)."""
    names = tuple(o[flag] or "" for flag in ("train", "valid", "test"))
    try:
        return token_cache.cached_corpus(
            o["train"], o["valid"], o["test"], cache_dir=cache_dir, level=o["level"],
            valid_fraction=o["valid_fraction"], min_count=o["min_count"], max_vocab=o["max_vocab"],
            bpe_vocab=o["bpe_vocab"], vocab=vocab, names=names, note=say,
            check=(lambda now: _check_unchanged(sources, now, names)) if sources else None)
    except token_cache.SourceError as exc:
        raise UsageError(f"{flag_name(exc.split)} {exc}") from None
    except DataError as exc:
        raise UsageError(str(exc)) from None
    except token_cache.CacheUnavailable as exc:
        say(f"the token cache cannot be used ({exc}); tokenising in memory this time (give --cache-dir DIR, a "
            "writable directory, or --no-cache)")
        return None


def _streams(o: dict, corpus):
    try:
        train = LMStream(corpus.train, o["batch_size"], o["bptt"], random_bptt=o["random_bptt"], seed=o["seed"],
                         name=f"training text ({corpus.sources['train']['name']})")
    except DataError as exc:
        raise UsageError(f"--batch-size {o['batch_size']}: {exc}") from None
    out = [train]
    for split in ("valid", "test"):
        tokens = getattr(corpus, split)
        if tokens is None:
            out.append(None)
            continue
        try:
            out.append(LMStream(tokens, o["eval_batch_size"], o["bptt"], name=corpus.sources[split]["name"]))
        except DataError as exc:
            raise UsageError(f"--eval-batch-size {o['eval_batch_size']}: {exc}") from None
    return out


def run(args: argparse.Namespace) -> int:
    kind = args.model_kind
    given = given_flags(args, _FLAGS)
    o, checkpoint = resume_run(given, kind, RESUMABLE) if "resume" in given else (_resolve(kind, given), None)
    variant = structure.model_options(o, given)
    if variant.get("dilations"):
        raise UsageError(f"--dilations {','.join(map(str, variant['dilations']))}: a language model carries its state "
                         "from one --bptt chunk to the next, and a dilated layer would need its last d states per "
                         "layer, which the dilated RNN does not return; drop --dilations (--skip works with the LM)")
    out = out_dir(o["out"], f"{o['kind']}-{o['level']}")
    refuse_existing_run(out, checkpoint)
    device = torch_device(o["device"], o["threads"])

    sources = checkpoint.meta.get("sources") if checkpoint else None
    if o["stdlib_demo"] and getattr(args, "cache_dir", None) is not None:
        raise UsageError(f"--cache-dir {args.cache_dir} keeps tokenised files; --stdlib-demo reads none. Drop "
                         "--cache-dir")
    cache_dir = None if o["stdlib_demo"] else cache_dir_of(args, [o["train"], o["valid"], o["test"]])
    if cache_dir is None:
        texts, names = _texts(o, sources)
    else:  # the files are read by the token cache; what _texts says first about a missing one is said here
        for flag in ("train", "valid", "test"):
            try:
                if o[flag] is not None:
                    check_file(o[flag])
            except DataError as exc:
                raise UsageError(f"{flag_name(flag)} {exc}") from None
    vocab = None
    if checkpoint is not None:
        try:
            config = check_kind(checkpoint.path, checkpoint.meta, LM_KINDS, "a language model", "rnnlab train lm")
            vocab = Vocab.from_json(checkpoint.meta["vocab"])
            check_vocab_fits(checkpoint.path, config, [("vocabulary", len(vocab), "vocab_size")])
        except ValueError as exc:  # CheckpointError is a ValueError
            raise resume_error(checkpoint, exc) from None
    cached = _cached_corpus(o, cache_dir, vocab, sources) if cache_dir is not None else None
    if cached is not None:
        corpus, cache_info = cached
    else:
        if cache_dir is not None:  # the cache could not be used after all
            texts, names = _texts(o, sources)
        cache_info = None
        try:
            corpus = build_corpus(*texts, level=o["level"], valid_fraction=o["valid_fraction"],
                                  min_count=o["min_count"], max_vocab=o["max_vocab"], bpe_vocab=o["bpe_vocab"],
                                  vocab=vocab, names=names)
        except DataError as exc:
            raise UsageError(str(exc)) from None
    train, valid, test = _streams(o, corpus)

    torch.manual_seed(o["seed"])  # the initial weights
    try:
        config = checkpoint.meta.get("model") if checkpoint else _model_config(o, len(corpus.vocab), variant)
        model = build_model(config)
        options = train_options(o)
    except ValueError as exc:
        raise resume_error(checkpoint, exc) if checkpoint else UsageError(str(exc)) from None
    model.to(device)
    task = structure.budget_task(LMTask(model, char_level=o["level"] == "char", device=device), model)
    meta = {"vocab": corpus.vocab.to_json(), "run": o, "sources": corpus.sources}
    trainer = make_trainer(model, task, train, valid, options, out, meta, checkpoint)

    n_params = sum(p.numel() for p in model.parameters())
    print(f"data: {corpus.sources['train']['name']}: {corpus.train.numel():,} train tokens"
          + (f", {corpus.valid.numel():,} valid" if corpus.valid is not None else "")
          + (f", {corpus.test.numel():,} test" if corpus.test is not None else "")
          + f"; {o['level']} vocabulary of {len(corpus.vocab):,}"
          + (f"; {cache_info.describe()}" if cache_info else ""), flush=True)
    engine = engine_name(device) if o["kind"] == "lm" else "-"
    print(f"model: {_describe(model)}, {n_params:,} parameters; batches {o['batch_size']} x {o['bptt']} steps"
          + (" (random length)" if o["random_bptt"] else "") + (f"; engine {engine}" if engine != "-" else ""),
          flush=True)
    print(train_line(options, trainer, out, checkpoint), flush=True)

    summary = fit_with_stop_handler(trainer)
    best = summary["best_valid_loss"]
    if best is not None:
        print(f"best validation: {_fmt(lm_metrics(best, o['level'] == 'char'))}")
    if test is not None and summary["stopped"] in FINISHED:
        best_dir = load_best_weights(out, model)
        m = evaluate(model, test, o["level"])
        print(f"test ({best_dir.name} weights): {_fmt(m)}")
        MetricsLog(out / "metrics.jsonl").write({"kind": "test", "step": summary["steps"], **m})
    if o["samples"]:
        from ..generate import generate

        gen = torch.Generator().manual_seed(o["seed"])
        prompts = ["def ", "class ", "    if "] if o["stdlib_demo"] else [""]
        for i in range(o["samples"]):
            prompt = prompts[i % len(prompts)]
            text = generate(model, corpus.vocab, prompt, o["sample_tokens"], "sample", temperature=0.8,
                            generator=gen)
            print(f"\n--- sample {i + 1} (temperature 0.8) ---\n{prompt}{text}")
    return 0


def _describe(model) -> str:
    c = model.config
    if c["kind"] == "ngram":
        return (f"{c['order']}-gram feed-forward LM (emb {c['emb']}, hidden {c['hidden']}"
                + (", direct connections" if c["direct"] else "") + ")")
    extras = [f"emb {model.emb}" if not c["one_hot"] else "one-hot input"]
    extras += ["tied"] if c["tie"] else []
    extras += [f"dropout {c['dropout']:g}"] if c["dropout"] else []
    extras += [f"{k.replace('_', ' ')} {v if isinstance(v, list) else f'{v:g}'}"
               for k, v in c.get("rnn_options", {}).items()]
    return f"{c['layers']} x rnnlab {c['cell'].upper()}({c['hidden']}){structure.describe(c)} LM ({', '.join(extras)})"


def _fmt(m: dict) -> str:
    parts = [f"loss {m['loss']:.4f}", f"ppl {m['ppl']:.2f}"]
    if "bpc" in m:
        parts.append(f"bpc {m['bpc']:.3f}")
    return "  ".join(parts)
