"""``rnnlab task parity|adding|copy|mnist``: train a recurrent model on a synthetic memory task generated on the fly
or on sequential MNIST, with the project's trainer (progress, per-epoch lines, ``last/`` and ``best/`` checkpoints and
``metrics.jsonl`` in ``--out``), then report the test metric: parity — accuracy per length bucket and overall on
longer strings than those trained on (40-80 against 1-20 by default); adding — test MSE next to the 0.167 of always
predicting 1; copy — per-symbol accuracy next to chance; mnist — test accuracy and per-digit precision/recall/F1.
"""
from __future__ import annotations

import argparse
import math

import torch

from ..data.mnist import MODES, VALID_SIZE, default_data_dir, mnist_splits
from ..data.synthetic import Adding, Copy, Parity
from ..models.classifier import INITS, POOLINGS, SequenceClassifier, SequenceTagger
from ..train.checkpoint import load_checkpoint
from ..train.metrics import MetricsLog
from ..train.supervised import ClassificationTask, PerStepTask, RegressionTask, evaluate_classification, \
    evaluate_per_step, evaluate_regression
from ..train.trainer import OPTIMIZERS
from ..variants import ALL_CELLS
from . import regularisation, structure
from .common import DIAGNOSE_FLAGS, FAULT_FLAGS, add_checkpoint_every, add_diagnose_flags, add_fault_flags, \
    cannot_change, engine_name, fit_with_stop_handler, holds_other_run, make_trainer, open_checkpoint, out_dir, \
    refuse_existing_run, run_dir, torch_device, train_line, train_options
from .options import UsageError, float_range, int_range, positive_float, positive_int

TASKS = ("parity", "adding", "copy", "mnist")
SYNTHETIC = ("parity", "adding", "copy")  # generated on the fly: --batches, --valid-size and --test-size apply
EVAL_BATCH = 256  # validation and test batches: no backward pass, so large batches cost little memory
PARITY_BUCKET = 10  # parity test accuracy is reported per bucket of 10 lengths (40-49, 50-59, ...)

# Defaults shared by the tasks, each next to its reason.
COMMON = {
    "cell": "lstm",  # gated: keeps a bit or a value over many steps, where an Elman RNN's memory fades
    "hidden": 128,  # ample for these tasks at the default lengths; a step takes milliseconds on a 2-core CPU
    "layers": 1,  # one layer solves all three tasks
    "dropout": 0.0,  # generated data never repeats: there is no overfitting to regularise against
    "init": "default",  # torch.nn's uniform init; --init identity with --cell rnn_relu is Le et al.'s IRNN
    "optimizer": "adam",  # trains without tuning; the papers' RMSProp/SGD recipes need their lr tuned
    "clip_norm": 1.0,  # caps the rare exploding gradient of long sequences (Pascanu et al. 2013)
    "batch_size": 64,  # enough rows for the CPU's matrix kernels; small enough for many updates per minute
    "batches": 100,  # one "epoch" = 100 fresh batches; validation and last/ checkpoints come at epoch ends
    "valid_size": 512,  # validation sequences (training distribution): picks best/ and shows progress per epoch
    "test_size": 2048,  # test sequences: accuracy to about ±1%
    "seed": 0,
    "log_every": 100,
}
# Per task: what differs from COMMON, and the task's own options.
TASK_DEFAULTS = {
    # Parity: one bit carried over the whole string; 20 epochs x 100 batches usually reaches 100% on lengths 1-20.
    "parity": {"lr": 3e-3, "epochs": 20, "min_len": 1, "max_len": 20, "test_min_len": 40, "test_max_len": 80,
               "pooling": "last"},
    # Adding at T = 100 (Hochreiter & Schmidhuber's shortest): an LSTM leaves the 0.167 plateau within a few
    # thousand updates; Le et al. go to T = 750 with an IRNN.
    "adding": {"lr": 1e-3, "epochs": 30, "length": 100, "pooling": "last"},
    # Copy 10 symbols of 8 (Arjovsky et al. 2016) after 20 blanks: within reach of an LSTM on a CPU in minutes;
    # Arjovsky et al. use delays of 100-2000 to show where LSTMs fail.
    "copy": {"lr": 2e-3, "epochs": 30, "symbols": 10, "alphabet": 8, "delay": 20, "max_delay": None},
    # Sequential MNIST, row by row (28 steps of 28 pixels): an LSTM(128) with Adam at 1e-3 — the usual baseline —
    # reaches ~98.5-99% test accuracy in 10-20 passes over the 55,000 training images. Pixel by pixel (784 steps)
    # is 28x longer per image and needs many more epochs; lower --lr there if the loss stalls or spikes.
    "mnist": {"lr": 1e-3,
              "epochs": 20,  # one epoch = one pass over the training images (not --batches fresh batches)
              "batch_size": 128,  # 430 updates per epoch on 55,000 images; fuller GEMMs than 64 on a CPU
              "mode": "row", "permute_seed": 0,  # one fixed permutation for every --seed: they solve the same task
              "valid_size": VALID_SIZE,  # the last 5,000 training images, as is common
              "pooling": "last"},
}

# Flags a resumed run may change: they bound or display the run, they do not change what it computes; and the
# fault flags (common.FAULT_FLAGS), which say what a bad batch does, not what a good one computes.
RESUMABLE = {"epochs", "max_steps", "max_minutes", "quiet", "threads", "log_every", "checkpoint_every", "device",
             "out", "resume", "data_dir", *FAULT_FLAGS, *DIAGNOSE_FLAGS}

EPILOG = """\
examples:
  rnnlab task parity                          LSTM on a/b strings of lengths 1-20; test accuracy on lengths 40-80
  rnnlab task parity --cell gru --hidden 32 --max-minutes 2 --out runs/parity-gru
  rnnlab task parity --max-len 10 --test-min-len 11 --test-max-len 30
  rnnlab task adding --length 200 --epochs 50  the adding problem at T = 200; test MSE vs the 0.167 baseline
  rnnlab task adding --cell rnn_relu --init identity --lr 1e-4 --length 50
                                              Le et al.'s IRNN
  rnnlab task copy --delay 50 --symbols 5     recall 5 symbols after 50 blanks; per-symbol accuracy vs chance
  rnnlab task copy --bidirectional --layers 2 --max-steps 500 --out runs/copy
  rnnlab task adding --cell layernorm_lstm    a layer-normalised LSTM (Ba et al. 2016)
  rnnlab task parity --dilations 1,2,4 --max-len 40
                                              a dilated RNN: layer l reads its state from d_l steps back
  rnnlab task adding --skip --skip-budget 1e-4
                                              a Skip RNN that learns to skip state updates
  rnnlab task copy --weight-drop 0.2 --recurrent-dropout 0.1
                                              recurrent regularisation (rnnlab.layers)
  rnnlab task copy --resume runs/copy --epochs 40
                                              continue a stopped run exactly (same batches, same RNG)
  rnnlab task mnist                           row MNIST: LSTM(128) reads 28 rows of 28 pixels; test accuracy
  rnnlab task mnist --limit 2000 --epochs 3   a quick run on the first 2,000 images of each split
  rnnlab task mnist --mode pixel --permute --hidden 128 --lr 5e-4 --out runs/pmnist
                                              permuted pixel MNIST: 784 steps of one pixel each
  rnnlab task mnist --data-dir ~/data/mnist   read the IDX files from another folder (or set RNNLAB_DATA)
"""


def add_parser(subparsers, parents) -> argparse.ArgumentParser:
    p = subparsers.add_parser("task", parents=parents, help="train on a synthetic memory task (parity, adding, "
                              "copy) or sequential MNIST and report its test metric",
                              description=__doc__.split("\n\n")[0]
                              .replace("``", "'"), epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(run=_no_task)
    sub = p.add_subparsers(dest="task", metavar="TASK", title="tasks", parser_class=type(p))
    helps = {
        "parity": "strings over {a, b}: is the number of b's even? Train on short strings, test on longer ones",
        "adding": "the adding problem: the sum of the two marked values of a long sequence (regression)",
        "copy": "copy / delayed recall: output K symbols after a delay and a 'go' marker (one output per step)",
        "mnist": "sequential MNIST: classify a digit read row by row (28 steps) or pixel by pixel (784 steps), "
                 "optionally in a fixed permuted order",
    }
    for name in TASKS:
        q = sub.add_parser(name, parents=parents, help=helps[name], description=helps[name], epilog=EPILOG,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        _add_options(q, name)
        q.set_defaults(run=run, task=name)
    return p


def _no_task(args) -> int:
    raise UsageError(f"choose a task: {', '.join(TASKS)}; e.g. 'rnnlab task parity' (see 'rnnlab task --help')")


def _add_options(p: argparse.ArgumentParser, task: str) -> None:
    d = {**COMMON, **TASK_DEFAULTS[task]}
    g = p.add_argument_group("data")
    if task == "parity":
        g.add_argument("--min-len", type=int_range(1, 100_000), default=d["min_len"], metavar="N",
                       help="shortest training string (default: %(default)s)")
        g.add_argument("--max-len", type=int_range(1, 100_000), default=d["max_len"], metavar="N",
                       help="longest training string (default: %(default)s)")
        g.add_argument("--test-min-len", type=int_range(1, 100_000), default=d["test_min_len"], metavar="N",
                       help="shortest test string (default: %(default)s)")
        g.add_argument("--test-max-len", type=int_range(1, 100_000), default=d["test_max_len"], metavar="N",
                       help="longest test string (default: %(default)s)")
    elif task == "adding":
        g.add_argument("--length", type=int_range(2, 100_000), default=d["length"], metavar="T",
                       help="sequence length T (default: %(default)s)")
    elif task == "copy":
        g.add_argument("--symbols", type=int_range(1, 10_000), default=d["symbols"], metavar="K",
                       help="symbols to remember and copy (default: %(default)s)")
        g.add_argument("--alphabet", type=int_range(2, 10_000), default=d["alphabet"], metavar="N",
                       help="distinct symbols (default: %(default)s)")
        g.add_argument("--delay", type=int_range(0, 100_000), default=d["delay"], metavar="D",
                       help="blanks between the last symbol and the 'go' marker (default: %(default)s)")
        g.add_argument("--max-delay", type=int_range(0, 100_000), default=d["max_delay"], metavar="D",
                       help="draw each sequence's delay from [--delay, D] (variable lengths; default: fixed)")
    else:
        g.add_argument("--mode", choices=MODES, default=d["mode"], help="row: 28 steps of one 28-pixel row; pixel: "
                       "784 steps of one pixel (default: %(default)s)")
        g.add_argument("--permute", action="store_true", help="read the pixels in a fixed random order, the same for "
                       "every image (permuted MNIST; with --mode pixel, Le et al.'s pMNIST)")
        g.add_argument("--permute-seed", type=int_range(0), default=d["permute_seed"], metavar="S",
                       help="seed of the --permute order, independent of --seed (default: %(default)s)")
        g.add_argument("--data-dir", metavar="DIR", default=None, help="folder with the four MNIST IDX files, gzip'd "
                       f"or not (default: $RNNLAB_DATA/mnist if set, else {default_data_dir()})")
        g.add_argument("--limit", type=int_range(1), default=None, metavar="N", help="use only the first N images "
                       "of each split (train, validation, test) for a quick run (default: all)")
    g.add_argument("--batch-size", type=int_range(1, 100_000), default=d["batch_size"], metavar="B",
                   help="training sequences per batch (default: %(default)s)")
    if task in SYNTHETIC:
        g.add_argument("--batches", type=int_range(1, 10_000_000), default=d["batches"], metavar="N",
                       help="batches per epoch, each freshly generated (default: %(default)s)")
        g.add_argument("--valid-size", type=int_range(1, 10_000_000), default=d["valid_size"], metavar="N",
                       help="validation sequences (rounded up to whole batches; default: %(default)s)")
        g.add_argument("--test-size", type=int_range(1, 10_000_000), default=d["test_size"], metavar="N",
                       help="test sequences (rounded up to whole batches; default: %(default)s)")
    else:
        g.add_argument("--valid-size", type=int_range(0, 59_999), default=d["valid_size"], metavar="N",
                       help="validation images: the last N of the training file, kept out of training; 0 trains on "
                       "all and tests the last weights (default: %(default)s)")

    g = p.add_argument_group("model")
    g.add_argument("--cell", choices=ALL_CELLS, default=d["cell"], help=structure.CELL_HELP
                   + " (default: %(default)s)")
    g.add_argument("--hidden", type=int_range(1, 65536), default=d["hidden"], metavar="H",
                   help="hidden units (default: %(default)s)")
    g.add_argument("--layers", type=int_range(1, 64), default=d["layers"], metavar="L",
                   help="stacked layers (default: %(default)s)")
    g.add_argument("--bidirectional", action="store_true", help="add a backward direction to every layer")
    if task != "copy":
        g.add_argument("--pooling", choices=POOLINGS, default=d["pooling"], help="how the outputs over the valid "
                       "steps become one vector: the last state of each direction, the mean or the max "
                       "(default: %(default)s)")
    if task not in ("adding", "mnist"):  # token ids in; adding and mnist feed real-valued features
        g.add_argument("--emb", type=int_range(1, 65536), default=None, metavar="E",
                       help="embedding size (default: --hidden)")
        g.add_argument("--one-hot", action="store_true", help="one-hot input instead of an embedding")
    g.add_argument("--dropout", type=float_range(0.0, 0.99, lo_open=False), default=d["dropout"], metavar="P",
                   help="dropout between layers and before the head (default: %(default)s)")
    g.add_argument("--init", choices=INITS, default=d["init"], help="recurrent weights: torch.nn's default, "
                   "orthogonal (Saxe et al.), identity (IRNN, Le et al.; needs --cell rnn_relu or rnn_tanh), or chrono "
                   "(LSTM forget/input-gate biases spread over the task's length, Tallec & Ollivier 2018; needs "
                   "--cell lstm) "
                   "(default: %(default)s)")
    regularisation.add_flags(p, regularisation.DEFAULTS)  # default None: not given = off
    structure.add_flags(p)  # default None: plain stacking

    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=int_range(1, 1_000_000), default=d["epochs"], metavar="N",
                   help=("epochs of --batches batches" if task in SYNTHETIC else "passes over the training images")
                   + " (default: %(default)s)")
    g.add_argument("--optimizer", choices=OPTIMIZERS, default=d["optimizer"], help="optimizer (default: %(default)s)")
    g.add_argument("--lr", type=float_range(0.0, 1000.0), default=d["lr"], metavar="LR",
                   help="learning rate (default: %(default)g)")
    g.add_argument("--clip-norm", type=positive_float, default=d["clip_norm"], metavar="C",
                   help="rescale gradients whose total norm exceeds C (default: %(default)g)")
    g.add_argument("--seed", type=int_range(0), default=d["seed"], metavar="S",
                   help="random seed of the weights and the data; the same seed repeats a run (default: %(default)s)")
    g.add_argument("--max-steps", type=positive_int, default=None, metavar="N", help="stop after N updates")
    g.add_argument("--max-minutes", type=positive_float, default=None, metavar="M", help="stop after M minutes")
    g.add_argument("--device", default="cpu", metavar="DEV", help="torch device, e.g. cpu, cuda (default: cpu)")
    g.add_argument("--threads", type=int_range(1, 1024), default=None, metavar="N",
                   help="torch CPU threads (default: torch's)")
    add_fault_flags(g)  # default None: not given = TrainOptions' defaults (see common.train_options)
    add_diagnose_flags(g)  # default None: off, and on --resume the run's own

    g = p.add_argument_group("output")
    g.add_argument("--out", metavar="DIR", default=None, help="run directory for last/, best/ and metrics.jsonl "
                   "(default: runs/task-<task>-<time>)")
    resumable = RESUMABLE - {"resume"} - ({"data_dir"} if task in SYNTHETIC else set())
    g.add_argument("--resume", metavar="DIR", default=None, help="continue the run saved in DIR (a run directory "
                   "or its last/) with its own options; only " + ", ".join(f"--{k.replace('_', '-')}" for k in
                                                                          sorted(resumable))
                   + " may be given anew")
    g.add_argument("--log-every", type=positive_int, default=d["log_every"], metavar="N",
                   help="steps between metric records (default: %(default)s)")
    add_checkpoint_every(g)  # default None: last/ at epoch ends only
    g.add_argument("--quiet", action="store_true", help="no progress bar or interval lines")


# -- the run -------------------------------------------------------------------------------------------------------
def _check(args) -> None:
    if args.task == "parity":
        for lo, hi, what in (("min_len", "max_len", ""), ("test_min_len", "test_max_len", "test-")):
            a, b = getattr(args, lo), getattr(args, hi)
            if a > b:
                raise UsageError(f"--{what}min-len {a} is larger than --{what}max-len {b}; the shortest string must "
                                 "not be longer than the longest")
    if args.task == "copy" and args.max_delay is not None and args.max_delay < args.delay:
        raise UsageError(f"--max-delay {args.max_delay} is smaller than --delay {args.delay}; give --max-delay >= "
                         "--delay, or drop it for a fixed delay")
    if args.init == "chrono" and args.cell != "lstm":
        raise UsageError(f"--init chrono sets an LSTM's forget- and input-gate biases (Tallec & Ollivier 2018); got "
                         f"--cell {args.cell}. Use --cell lstm with it")
    if args.init == "identity" and not args.cell.startswith("rnn_"):
        raise UsageError(f"--init identity is the IRNN initialisation of an Elman RNN; got --cell {args.cell}. Use "
                         "--cell rnn_relu with it (Le et al.), or --init orthogonal for LSTM/GRU")
    if args.task in ("parity", "copy") and args.one_hot and args.emb is not None:
        raise UsageError(f"--one-hot input has no embedding; drop --emb {args.emb} or --one-hot")
    structure.model_options(vars(args))  # a run stored before these flags existed has none of them: plain
    regularisation.rnn_options(vars(args))


def _eval_data(cls, size: int, seed: int, split: str, **kwargs):
    n_batches = math.ceil(size / EVAL_BATCH)
    batch = math.ceil(size / n_batches)  # equal batches of at most EVAL_BATCH that hold at least `size` sequences
    return cls(batch, n_batches, seed=seed, split=split, **kwargs)


SOLVED_MSE = 0.04  # the adding problem counts as solved below this test MSE (Pascanu et al. 2013's criterion)


def _adding_verdict(mse: float, baseline: float) -> str:
    """Solved (below SOLVED_MSE), learning (clearly under the baseline: below 90% of it) or not (within 10% of it:
    a model that predicts about 1 whatever the input, whose MSE moves around the baseline's with the sample)."""
    if mse < SOLVED_MSE:
        return f"solved (MSE < {SOLVED_MSE:g})"
    if mse < 0.9 * baseline:
        return f"beats the baseline, not yet solved (MSE < {SOLVED_MSE:g} counts as solved)"
    return "no better than the baseline: the model predicts about the mean (train longer, or see 'rnnlab diagnose')"


def _longest_dependency(a) -> int:
    """The most steps a task's answer can depend back: the string (parity), the sequence (adding), delay and symbols
    (copy), the image (mnist: 28 rows or 784 pixels)."""
    if a.task == "parity":
        return max(3, a.max_len)
    if a.task == "adding":
        return max(3, a.length)
    if a.task == "copy":
        return max(3, (a.max_delay if a.max_delay is not None else a.delay) + 2 * a.symbols + 1)
    return 28 if a.mode == "row" else 784


def _setup(args):
    """(train, valid, test data, model, trainer task) for the chosen task."""
    a, s = args, args.seed
    enc = {"cell": a.cell, "hidden": a.hidden, "layers": a.layers, "bidirectional": a.bidirectional,
           "dropout": a.dropout, "init": a.init, "rnn_options": regularisation.rnn_options(vars(a)) or None,
           **structure.model_options(vars(a))}
    if a.init == "chrono":  # the forget gates' time constants spread up to the task's longest dependency
        enc["init_length"] = _longest_dependency(a)
    if a.task == "parity":
        train = Parity(a.batch_size, a.batches, min_len=a.min_len, max_len=a.max_len, seed=s)
        valid = _eval_data(Parity, a.valid_size, s, "valid", min_len=a.min_len, max_len=a.max_len)
        test = _eval_data(Parity, a.test_size, s, "test", min_len=a.test_min_len, max_len=a.test_max_len)
        model = SequenceClassifier(2, vocab_size=Parity.vocab_size, one_hot=a.one_hot, emb=a.emb,
                                   pooling=a.pooling, **enc)
        return train, valid, test, model, ClassificationTask
    if a.task == "mnist":
        train, valid, test = mnist_splits(a.data_dir, mode=a.mode, permute=a.permute, permute_seed=a.permute_seed,
                                          valid_size=a.valid_size, limit=a.limit, batch_size=a.batch_size,
                                          eval_batch_size=EVAL_BATCH, seed=s)
        model = SequenceClassifier(train.n_classes, input_size=train.input_size, pooling=a.pooling, **enc)
        return train, valid, test, model, ClassificationTask
    if a.task == "adding":
        train = Adding(a.batch_size, a.batches, length=a.length, seed=s)
        valid = _eval_data(Adding, a.valid_size, s, "valid", length=a.length)
        test = _eval_data(Adding, a.test_size, s, "test", length=a.length)
        model = SequenceClassifier(1, input_size=Adding.input_size, pooling=a.pooling, task="regress", **enc)
        return train, valid, test, model, RegressionTask
    kw = {"n_symbols": a.symbols, "alphabet": a.alphabet, "delay": a.delay, "max_delay": a.max_delay}
    train = Copy(a.batch_size, a.batches, seed=s, **kw)
    valid = _eval_data(Copy, a.valid_size, s, "valid", **kw)
    test = _eval_data(Copy, a.test_size, s, "test", **kw)
    model = SequenceTagger(train.n_classes, vocab_size=train.vocab_size, one_hot=a.one_hot, emb=a.emb, **enc)
    return train, valid, test, model, PerStepTask


def _options(args) -> dict:
    skip = {"run", "debug", "command", "kind"}
    return {k: v for k, v in vars(args).items() if k not in skip}


def _defaults(task: str) -> dict:
    p = argparse.ArgumentParser(add_help=False)
    _add_options(p, task)
    return vars(p.parse_args([]))


def _resumed(args):
    """(the stored run's options with the RESUMABLE flags of this command line, its checkpoint)."""
    checkpoint = open_checkpoint(args.resume)
    stored = checkpoint.meta.get("run")
    if not isinstance(stored, dict) or "trainer" not in checkpoint.meta:
        raise UsageError(f"--resume {checkpoint.path}: not a checkpoint written by 'rnnlab task' or 'rnnlab train'")
    if stored.get("kind") != "task" or stored.get("task") != args.task:
        raise holds_other_run(checkpoint, stored)
    defaults = _defaults(args.task)
    for k, v in _options(args).items():
        if k not in RESUMABLE and k in stored and v != stored[k] and v != defaults.get(k):
            raise cannot_change(k, stored[k])
    o = {k: v for k, v in stored.items() if k != "kind"}
    for k in RESUMABLE:
        if not hasattr(args, k):  # a flag of another task (--data-dir is mnist's)
            continue
        v = getattr(args, k)
        # The budget is per call (as 'rnnlab train'); the other flags keep the run's value unless given anew.
        if k in ("max_steps", "max_minutes") or v != defaults.get(k):
            o[k] = v
    if not args.out:
        o["out"] = run_dir(checkpoint)
    return argparse.Namespace(**o), checkpoint


def run(args: argparse.Namespace) -> int:
    checkpoint = None
    if args.resume:
        args, checkpoint = _resumed(args)
    _check(args)
    out = out_dir(args.out, f"task-{args.task}")
    refuse_existing_run(out, checkpoint)
    device = torch_device(args.device, args.threads)
    engine = engine_name(device)

    torch.manual_seed(args.seed)  # the initial weights
    try:
        train, valid, test, model, task_cls = _setup(args)
        options = train_options(args)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    model.to(device)
    task = structure.budget_task(task_cls(model, device=device), model)
    meta = {"run": {"kind": "task", **_options(args)}, "data": repr(train)}
    permutation = getattr(train, "permutation", None)  # permuted MNIST: the pixel order, stored with the weights
    if permutation is not None:
        meta["permutation"] = permutation.tolist()
        stored = checkpoint.meta.get("permutation") if checkpoint is not None else None
        if stored is not None and stored != meta["permutation"]:
            raise UsageError(f"--resume {checkpoint.path}: the run's pixel permutation differs from the one drawn "
                             f"now from --permute-seed {args.permute_seed} (another numpy version?); the run cannot "
                             "continue on the same task")
    trainer = make_trainer(model, task, train, valid, options, out, meta, checkpoint)

    n_params = sum(p.numel() for p in model.parameters())
    print(_describe_data(args, train, valid, test), flush=True)
    print(f"model: {_describe(model)}, {n_params:,} parameters; engine {engine}", flush=True)
    print(train_line(options, trainer, out, checkpoint), flush=True)

    summary = fit_with_stop_handler(trainer)
    # Test with the best validation weights when an epoch ended; otherwise with the weights training stopped at.
    weights = "last"
    if (out / "best").exists():
        load_checkpoint(out / "best").load_model(model)
        weights = "best/"
    m = _report(args, model, test, weights, device)
    MetricsLog(out / "metrics.jsonl").write({"kind": "test", "step": summary["steps"], "weights": weights, **m})
    return 0


def _describe_data(args, train, valid, test) -> str:
    if args.task == "mnist":
        limit = f" (--limit {args.limit})" if args.limit else ""
        order = f", pixel order permuted with seed {args.permute_seed}" if args.permute else ""
        return (f"data: {train.describe()}{order}; {len(train):,} training images in {train.num_batches()} batches "
                f"of {args.batch_size} per epoch, {len(valid) if valid else 0:,} validation and {len(test):,} test "
                f"images{limit}")
    return (f"data: {train.describe()}; {args.batches} fresh batches of {args.batch_size} per epoch, "
            f"{valid.num_batches() * valid.batch_size} validation and {test.num_batches() * test.batch_size} test "
            f"sequences ({test.describe()})")


def _report(args, model, test, weights: str, device) -> dict:
    if args.task == "parity":
        m = evaluate_classification(model, test, bucket_width=PARITY_BUCKET, device=device)
        print(f"test ({weights} weights): {m['n']} strings of lengths {args.test_min_len}-{args.test_max_len} "
              f"(trained on {args.min_len}-{args.max_len})")
        for b in m["by_length"]:
            print(f"  lengths {b['lengths']:>9}: accuracy {100 * b['accuracy']:5.1f}%  ({b['n']} strings)")
        print(f"  overall: accuracy {100 * m['accuracy']:.1f}% (chance 50%), loss {m['loss']:.4f}")
        for c, name in enumerate(("odd b's", "even b's")):
            print(f"  class {c} ({name}): precision {m['precision'][c]:.3f}  recall {m['recall'][c]:.3f}  "
                  f"F1 {m['f1'][c]:.3f}  ({m['support'][c]} strings)")
        (a, b), (c, d) = m["confusion"]
        print(f"  confusion (rows: true class 0, 1; columns: predicted): [[{a}, {b}], [{c}, {d}]]")
        return m
    if args.task == "adding":
        m = evaluate_regression(model, test, baseline=1.0, device=device)
        print(f"test ({weights} weights): {m['n']} sequences of T = {args.length}: MSE {m['mse']:.4f}, MAE "
              f"{m['mae']:.4f}; always predicting 1: MSE {m['baseline_mse']:.4f} on the same sequences "
              f"(expected {Adding.BASELINE_MSE:.3f})  -> {_adding_verdict(m['mse'], m['baseline_mse'])}")
        return m
    if args.task == "mnist":
        m = evaluate_classification(model, test, device=device)
        print(f"test ({weights} weights): {m['n']:,} images{' (--limit)' if args.limit else ''}: accuracy "
              f"{100 * m['accuracy']:.2f}% (chance 10%), loss {m['loss']:.4f}, macro F1 {m['macro_f1']:.4f}")
        for c in range(len(m["support"])):
            print(f"  digit {c}: precision {m['precision'][c]:.3f}  recall {m['recall'][c]:.3f}  F1 {m['f1'][c]:.3f}"
                  f"  ({m['support'][c]} images)")
        print("  confusion (rows: true digit 0-9; columns: predicted 0-9):")
        for c, row in enumerate(m["confusion"]):
            print(f"    {c}: " + " ".join(f"{v:5d}" for v in row))
        return m
    m = evaluate_per_step(model, test, device=device)
    print(f"test ({weights} weights): {m['n']} sequences: per-symbol accuracy {100 * m['accuracy']:.1f}% (chance "
          f"{100 / args.alphabet:.1f}%), all {args.symbols} symbols right in {100 * m['sequence_accuracy']:.1f}% "
          f"of sequences, loss {m['loss']:.4f}")
    return m


def _describe(model) -> str:
    c = model.config
    cell = c["cell"].upper().replace("RNN_", "RNN-")
    parts = [f"{c['layers']} x {'bidirectional ' if c['bidirectional'] else ''}rnnlab {cell}({c['hidden']})"
             + structure.describe(c)]
    if c["vocab_size"] is not None:
        parts.append("one-hot input" if c["one_hot"] else f"embedding {c['emb']}")
    if c["init"] != "default":
        parts.append(f"{c['init']} init")
    if c["kind"] == "sequence_classifier":
        parts.append(f"{c['pooling']} pooling → {'logits' if c['task'] == 'classify' else 'value'}")
    else:
        parts.append("logits at every step")
    return ", ".join(parts)
