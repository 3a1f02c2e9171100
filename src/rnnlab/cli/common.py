"""What the training commands share (``rnnlab train lm|ngram|tag|classify|regress`` and, in part, ``rnnlab task``):
the "training" and "output" option groups, the flags given on the command line, resuming a run, the device, the
``TrainOptions`` of a run, the ``train:`` line, and ``Trainer.fit()`` under a Ctrl-C / SIGTERM handler.

Each command keeps its own DEFAULTS (every default next to its reason), its RESUMABLE flags and its help texts where
they differ; the option groups here take them as arguments. Flags default to None in argparse so that "given on the
command line" can be told from "left at its default" (``given_flags``), which ``resume_run`` relies on.
"""
from __future__ import annotations

import argparse
import signal
import threading
import time
from dataclasses import fields
from pathlib import Path
from typing import Callable, Iterable

import torch

from ..engine import backend_name
from ..train import distributed
from ..train.checkpoint import Checkpoint, CheckpointError, load_checkpoint
from ..train.trainer import OPTIMIZERS, Trainer, TrainingError, TrainOptions
from .options import UsageError, float_range, int_range, positive_float, positive_int, usable_device

# How Trainer.fit() ended when the run reached its real end (not max-steps, max-minutes or Ctrl-C).
FINISHED = ("done", "patience")
# The fault-handling flags of the training group (TrainOptions' fields; their defaults and reasons are there). Every
# training command takes them, and a resumed run may change them: e.g. a larger --max-rollbacks after a run gave up.
FAULT_FLAGS = ("spike_factor", "spike_window", "fault_patience", "fault_lr_factor", "max_rollbacks")
_FAULT_DEFAULTS = {f.name: f.default for f in fields(TrainOptions) if f.name in FAULT_FLAGS}
# The diagnostics flags (rnnlab.diagnose.during): every training command takes them, and a resumed run keeps the
# run's own unless given anew (they watch the training, they do not change what it computes).
DIAGNOSE_FLAGS = ("diagnose_every", "tensorboard")


def _spike_factor(text: str) -> float:
    """--spike-factor: a number > 1, or 0 for no spike check."""
    if text.strip() in ("0", "0.0", "off"):
        return 0.0
    return float_range(1.0)(text)


_spike_factor.__name__ = "number"


# -- options -------------------------------------------------------------------------------------------------------
def add_kind_parser(sub, kind: str, parents, *, helptext: str, doc: str, epilog: str,
                    add_options: Callable[[argparse.ArgumentParser], None],
                    run: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
    """The ``rnnlab train KIND`` parser of a model kind with a module of its own: described by the first paragraph
    of the module's ``doc``, its options added by ``add_options``, run by ``run``."""
    p = sub.add_parser(kind, parents=parents, help=helptext, description=doc.split("\n\n")[0].replace("``", "'"),
                       epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_options(p)
    p.set_defaults(run=run, model_kind=kind)
    return p


def flag_name(name: str) -> str:
    """``max_steps`` → ``--max-steps``."""
    return "--" + name.replace("_", "-")


def default_text(defaults: dict, name: str) -> str:
    """`` (default: V)`` for the end of a help text; ``none`` for None."""
    v = defaults[name]
    return f" (default: {'none' if v is None else v})"


def add_training_group(p: argparse.ArgumentParser, defaults: dict, *, epochs_help: str = "passes over the data",
                       patience_help: str = "stop after N epochs without a better validation loss (needs --valid)",
                       seed_help: str = "random seed; the same seed repeats a run exactly",
                       schedule: bool = False) -> argparse._ArgumentGroup:
    """The "training" group: --epochs, --optimizer, --lr, --weight-decay, --clip-norm, --patience, --seed,
    --max-minutes, --max-steps, --device, --threads. ``schedule`` adds SGD momentum, --clip-value and the lr decay
    flags (--lr-decay, --decay-start, --plateau)."""
    def d(name: str) -> str:
        return default_text(defaults, name)

    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=int_range(1, 1_000_000), metavar="N", help=epochs_help + d("epochs"))
    g.add_argument("--optimizer", choices=OPTIMIZERS, help="optimizer" + d("optimizer"))
    g.add_argument("--lr", type=float_range(0.0, 1000.0), metavar="LR", help="learning rate" + d("lr"))
    if schedule:
        g.add_argument("--momentum", type=float_range(0.0, 0.999, lo_open=False), metavar="M", help="SGD momentum"
                       + d("momentum"))
    g.add_argument("--weight-decay", type=float_range(0.0, lo_open=False), metavar="W",
                   help="weight decay (default: the optimizer's own)")
    g.add_argument("--clip-norm", type=positive_float, metavar="C", help="rescale gradients whose total norm "
                   "exceeds C" + d("clip_norm"))
    if schedule:
        g.add_argument("--clip-value", type=positive_float, metavar="V", help="clamp every gradient element to "
                       "[-V, V] instead of --clip-norm")
        g.add_argument("--lr-decay", type=float_range(0.0, 1.0), metavar="F", help="multiply the lr by F after each "
                       "epoch from --decay-start on (or on a plateau with --plateau); default 0.5, 0.25 with "
                       "--plateau")
        g.add_argument("--decay-start", type=int_range(0), metavar="E", help="step decay: the first E epochs run at "
                       "--lr (default: 1)")
        g.add_argument("--plateau", action="store_true", default=None, help="multiply the lr by --lr-decay whenever "
                       "the validation loss does not improve")
    g.add_argument("--patience", type=positive_int, metavar="N", help=patience_help)
    g.add_argument("--seed", type=int_range(0), metavar="S", help=seed_help + d("seed"))
    g.add_argument("--max-minutes", type=positive_float, metavar="M", help="stop after M minutes (saves last/)")
    g.add_argument("--max-steps", type=positive_int, metavar="N", help="stop after N updates (saves last/)")
    g.add_argument("--device", metavar="DEV", help="torch device, e.g. cpu, cuda" + d("device"))
    g.add_argument("--threads", type=int_range(1, 1024), metavar="N", help="torch CPU threads (default: torch's)")
    add_fault_flags(g)
    add_diagnose_flags(g)
    return g


def add_diagnose_flags(g) -> None:
    """--diagnose-every N, --tensorboard DIR: diagnostics records while training (rnnlab.diagnose.during)."""
    from ..diagnose.during import DEFAULT_EVERY

    g.add_argument("--diagnose-every", type=int_range(0), metavar="N", help="every N steps (and at step 1) record "
                   "||dL/dh_t|| per time step, layer and direction, the pre-clip gradient norm and clip fraction, "
                   "the W_hh spectral norm and radius and the gate saturation to metrics.jsonl; 'rnnlab diagnose "
                   f"RUN_DIR' draws them; 0 = off (default: off; {DEFAULT_EVERY} with --tensorboard)")
    g.add_argument("--tensorboard", metavar="DIR", help="also write the diagnostics to TensorBoard event files in "
                   "DIR (needs: pip install tensorboard)")


def add_fault_flags(g) -> None:
    """--spike-factor, --spike-window, --fault-patience, --fault-lr-factor, --max-rollbacks: what a bad batch (NaN
    or Inf loss or gradient, or a loss spike) does. Their defaults are TrainOptions'."""
    def d(name: str) -> str:
        return default_text(_FAULT_DEFAULTS, name)

    g.add_argument("--spike-factor", type=_spike_factor, metavar="F", help="a batch loss above F times the largest of "
                   "the last --spike-window good batch losses is a spike: its update is skipped, like a NaN/Inf loss or "
                   "gradient; 0 = no spike check" + d("spike_factor"))
    g.add_argument("--spike-window", type=positive_int, metavar="N", help="how many of the latest good batch losses "
                   "the spike check takes the largest of (no spike check until N good batches have passed); also the "
                   "fault-free updates between in-memory rollback points" + d("spike_window"))
    g.add_argument("--fault-patience", type=positive_int, metavar="K", help="after K bad batches in a row, roll "
                   "back to the last rollback point and multiply the lr by --fault-lr-factor" + d("fault_patience"))
    g.add_argument("--fault-lr-factor", type=float_range(0.0, 1.0), metavar="F", help="lr multiplier at each "
                   "rollback" + d("fault_lr_factor"))
    g.add_argument("--max-rollbacks", type=int_range(0), metavar="N", help="give up (saving last/, keeping best/) "
                   "when rollback N+1 is needed" + d("max_rollbacks"))


def add_output_group(p: argparse.ArgumentParser, defaults: dict, *, default_out: str,
                     more: Callable[[argparse._ArgumentGroup], None] | None = None) -> argparse._ArgumentGroup:
    """The "output" group: --out (``default_out`` names the directory used without it), --resume, --log-every,
    --checkpoint-every, the command's own output flags (``more(group)``), --quiet."""
    g = p.add_argument_group("output")
    g.add_argument("--out", metavar="DIR", help=f"run directory for last/, best/ and metrics.jsonl (default: "
                   f"{default_out})")
    g.add_argument("--resume", metavar="DIR", help="continue the run saved in DIR (a run directory or its last/)")
    g.add_argument("--log-every", type=positive_int, metavar="N", help="steps between metric records"
                   + default_text(defaults, "log_every"))
    add_checkpoint_every(g)
    if more is not None:
        more(g)
    g.add_argument("--quiet", action="store_true", default=None, help="no progress bar or interval lines (one "
                   "summary line per epoch remains)")
    return g


def add_checkpoint_every(g) -> None:
    """--checkpoint-every N: also save a resumable last/ every N steps within an epoch (every training command; a
    resumed run may change it)."""
    g.add_argument("--checkpoint-every", type=positive_int, metavar="N", help="also save last/ every N steps within "
                   "an epoch, to resume from (default: only at epoch ends and when the run stops)")


def given_flags(args: argparse.Namespace, flags: Iterable[str], *, keep_false: bool = False) -> dict:
    """The flags given on the command line: argparse left the others at None (and a plain ``store_true`` flag at
    False, dropped unless ``keep_false``: --no-X of a BooleanOptionalAction is given as False). --train, --valid and
    --test become absolute paths, so a resumed run can be compared and continued from any directory."""
    flags = (*flags, *(k for k in FAULT_FLAGS + DIAGNOSE_FLAGS if k not in flags))  # every training command has them
    given = {k: getattr(args, k) for k in flags if getattr(args, k, None) is not None
             and (keep_false or getattr(args, k) is not False)}
    for k in ("train", "valid", "test", "tensorboard"):
        if k in given:
            given[k] = str(Path(given[k]).resolve())
    return given


def train_options(o) -> TrainOptions:
    """The ``TrainOptions`` of a run's resolved options (a dict, or the Namespace of 'rnnlab task'): the training
    flags the command has; the others keep TrainOptions' defaults. With the lr schedule flags (``schedule=True`` in
    ``add_training_group``): --plateau, else a step decay when --lr-decay is given, else a constant lr."""
    o = vars(o) if isinstance(o, argparse.Namespace) else o
    kw = {k: o[k] for k in ("epochs", "optimizer", "lr", "momentum", "weight_decay", "clip_norm", "clip_value",
                            "patience", "seed", "log_every", "max_steps", "max_minutes", "checkpoint_every", "quiet")
          if k in o}
    kw.update({k: o[k] for k in FAULT_FLAGS if o.get(k) is not None})  # not given: TrainOptions' defaults
    if kw.get("spike_factor") == 0:
        kw["spike_factor"] = None  # --spike-factor 0: no spike check
    if "lr_decay" in o:
        schedule = "plateau" if o["plateau"] else ("step" if o["lr_decay"] is not None else "constant")
        kw.update(schedule=schedule,
                  lr_decay=o["lr_decay"] if o["lr_decay"] is not None else (0.25 if schedule == "plateau" else 0.5),
                  decay_start=o["decay_start"] if o["decay_start"] is not None else 1)
    return TrainOptions(**kw)


# -- resuming ------------------------------------------------------------------------------------------------------
def open_checkpoint(path: str) -> Checkpoint:
    """The checkpoint --resume names (a run directory: its last/)."""
    try:
        return load_checkpoint(path, prefer="last")
    except CheckpointError as exc:
        raise UsageError(f"--resume {exc}") from None


def run_dir(checkpoint: Checkpoint) -> str:
    """The run directory a checkpoint belongs to (the parent of last/ or best/)."""
    path = checkpoint.path
    return str(path.parent if path.name in ("last", "best") else path)


def cannot_change(name: str, used) -> UsageError:
    return UsageError(f"{flag_name(name)} cannot change when resuming (the run used {used!r}); drop it — a resumed run "
                      "continues with its own options")


def run_command(stored) -> str | None:
    """The command that wrote a checkpoint's ``run`` options: ``rnnlab train lm``, ``rnnlab task parity``; None when
    they name none."""
    stored = stored if isinstance(stored, dict) else {}
    kind, task = stored.get("kind"), stored.get("task")
    if kind == "task":
        return f"rnnlab task {task}" if isinstance(task, str) else None
    return f"rnnlab train {kind}" if isinstance(kind, str) else None


def holds_other_run(checkpoint: Checkpoint, stored) -> UsageError:
    """The error for --resume given a checkpoint of another command's run: ``holds an 'rnnlab train tag' run; use
    'rnnlab train tag --resume ...'``."""
    command = run_command(stored)
    if command is None:
        return UsageError(f"--resume {checkpoint.path}: its checkpoint.json names no command ('run' has no 'kind'); "
                          "resume a run directory that 'rnnlab train' or 'rnnlab task' wrote, or retrain")
    return UsageError(f"--resume {checkpoint.path}: holds an '{command}' run; use '{command} --resume ...'")


def resume_run(given: dict, kind: str, resumable: set) -> tuple[dict, Checkpoint]:
    """(the options of the 'rnnlab train KIND' run in ``given["resume"]`` with the ``resumable`` flags of this
    command line, its checkpoint). Another flag given with a value other than the run's is an error. The budget
    (--max-steps, --max-minutes) is per call: not given = none."""
    checkpoint = open_checkpoint(given["resume"])
    stored = checkpoint.meta.get("run")
    if not isinstance(stored, dict) or "trainer" not in checkpoint.meta:
        raise UsageError(f"--resume {checkpoint.path}: not a checkpoint written by 'rnnlab train'")
    if stored.get("kind") != kind:
        raise holds_other_run(checkpoint, stored)
    resumable = set(resumable) | set(FAULT_FLAGS) | set(DIAGNOSE_FLAGS)  # they do not change what a step computes
    for k, v in given.items():
        if k not in resumable and stored.get(k) != v:
            raise cannot_change(k, stored.get(k))
    o = {**stored, **{k: given.get(k) for k in ("max_minutes", "max_steps")},
         **{k: v for k, v in given.items() if k in resumable}}
    o["out"] = given.get("out") or run_dir(checkpoint)
    return o, checkpoint


def diagnostics_callbacks(model, run) -> list:
    """[TrainingDiagnostics] when a run's options (``meta["run"]``) ask for diagnostics (--diagnose-every N > 0,
    or --tensorboard DIR, which implies the default interval); else []. A UsageError when they cannot be had."""
    from ..diagnose.during import DEFAULT_EVERY, MissingTensorBoard, TrainingDiagnostics

    run = run if isinstance(run, dict) else {}
    every, board = run.get("diagnose_every"), run.get("tensorboard")
    if every == 0 or (every is None and board is None):
        return []
    try:
        return [TrainingDiagnostics(model, every=every or DEFAULT_EVERY, tensorboard_dir=board)]
    except MissingTensorBoard as exc:
        raise UsageError(f"--tensorboard {board}: {exc} (or drop --tensorboard)") from None
    except ValueError as exc:
        raise UsageError(f"--diagnose-every {every or DEFAULT_EVERY}: {exc}; drop it for this model") from None


def make_trainer(model, task, train, valid, options: TrainOptions, out: Path, meta: dict,
                 checkpoint: Checkpoint | None, callbacks=()) -> Trainer:
    """The Trainer of every training command, restored from ``checkpoint`` when resuming (see ``restore``);
    ``callbacks`` are the trainer's, plus the diagnostics the run's options ask for (``diagnostics_callbacks``)."""
    dist = distributed_run(train)
    if dist is None or dist.is_main:  # under torchrun rank 0 diagnoses (its slice of each batch) and writes them
        callbacks = [*callbacks, *diagnostics_callbacks(model, meta.get("run"))]
    trainer = Trainer(model, task, train, valid, options, out_dir=out, meta=meta, callbacks=callbacks,
                      distributed=dist)
    restore(trainer, checkpoint)
    return trainer


def distributed_run(train) -> distributed.Distributed | None:
    """This process's place in a torchrun launch (``torch_device`` joined it), or None for a single process. A
    UsageError for a --batch-size the processes cannot share evenly, and for a second run in one launch (the other
    ranks left after the first: ``fit_with_stop_handler``)."""
    dist = distributed.current()
    if dist is None:
        return None
    if dist.finished:
        raise UsageError("under torchrun a launch trains one run, and this command starts another after it (e.g. "
                         "--compare-attention trains two); run it without torchrun, or launch each run on its own")
    try:
        dist.check_batch_size(train.batch_size, "--batch-size")
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return dist


def restore(trainer: Trainer, checkpoint: Checkpoint | None) -> None:
    """Continue ``trainer`` from ``checkpoint`` (None: a new run). A checkpoint whose weights, trainer state, RNG
    states or optimizer state do not fit (``Trainer.restore`` names the file, what is wrong and the fix) is a
    UsageError."""
    if checkpoint is None:
        return
    try:
        trainer.restore(checkpoint)
    except CheckpointError as exc:
        raise UsageError(f"--resume {' '.join(str(exc).split())}") from None


# -- the run -------------------------------------------------------------------------------------------------------
def out_dir(out: str | None, stem: str) -> Path:
    """--out, or runs/STEM-<time>."""
    return Path(out) if out else Path("runs") / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"


def refuse_existing_run(out: Path, checkpoint: Checkpoint | None, flag: str = "--out") -> None:
    """Refuse an --out the run must not write to — the one rule every training command calls, before anything is
    written: a file (or a path under one); for a new run (``checkpoint`` None), a checkpoint directory (OUT/last)
    or a directory that already holds a run, whose checkpoints it would overwrite; when resuming ``checkpoint``
    into a directory other than its own, one that holds another run."""
    out = Path(out)
    for p in (out, *out.parents):
        if p.exists():
            if not p.is_dir():
                what = "is a file" if p == out else f"is inside {p}, which is a file"
                raise UsageError(f"{flag} {out}: {what}, not a directory; choose a directory for the run")
            break
    holds_run = (out / "last").exists() or (out / "best").exists()
    if checkpoint is None:
        if (out / "checkpoint.json").is_file():
            raise UsageError(f"{flag} {out}: is a checkpoint directory (it holds checkpoint.json); give the run "
                             "directory for the new checkpoints, e.g. its parent or a new one")
        if holds_run:
            raise UsageError(f"{flag} {out}: already holds a run; continue it with --resume {out}, or choose another "
                             f"{flag}")
        return
    run = Path(run_dir(checkpoint))
    if holds_run and out.resolve() != run.resolve():
        raise UsageError(f"{flag} {out}: already holds another run, whose checkpoints resuming {run} there would "
                         f"overwrite; drop {flag} to continue in {run}, or choose an empty directory")


def torch_device(name: str, threads: int | None) -> torch.device:
    """Set --threads (per process) and check that --device works here (``options.usable_device``). Launched by
    torchrun: join the launch (``distributed.setup``) and return this rank's device (cuda: cuda:LOCAL_RANK)."""
    if threads:
        torch.set_num_threads(threads)
    distributed.pin_local_gpu(name)  # before anything touches a GPU: every rank would open one on cuda:0
    try:
        return distributed.setup(usable_device(name))
    except ValueError as exc:
        raise UsageError(" ".join(str(exc).split())) from None


def engine_name(device: torch.device) -> str:
    """The engine backend; asking builds the C++ engine now (first use only), not inside the --max-minutes budget."""
    try:
        return backend_name(device)
    except (ValueError, RuntimeError) as exc:  # a bad RNNLAB_BACKEND, or a forced backend that cannot run
        raise UsageError(" ".join(str(exc).split())) from None


def train_line(options: TrainOptions, trainer: Trainer, out: Path, checkpoint: Checkpoint | None,
               note: str = "") -> str:
    """``train: OPTIMIZER lr LR, N epochs[, at most S steps][, at most M min][NOTE]; writing OUT[; resuming ...]``"""
    budget = "".join([f", at most {options.max_steps} steps" if options.max_steps else "",
                      f", at most {options.max_minutes:g} min" if options.max_minutes else ""])
    resumed = (f"; resuming {checkpoint.path} at epoch {trainer.progress['epoch'] + 1}, batch "
               f"{trainer.progress['batch']}") if checkpoint else ""
    return (f"train: {options.optimizer} lr {trainer.progress['lr']:g}, {options.epochs} epochs{budget}{note}; "
            f"writing {out}{resumed}")


# The signals that stop a run gracefully: Ctrl-C, and what schedulers, `kill` and container runtimes send first.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def fit_with_stop_handler(trainer: Trainer) -> dict:
    """``trainer.fit()``'s summary. The first Ctrl-C (SIGINT) or SIGTERM finishes the batch, saves a resumable last/
    and stops (the summary says 'interrupted'); a second one of the same signal acts as it did before (Ctrl-C
    raises KeyboardInterrupt, SIGTERM terminates); under torchrun a signal to any rank stops every rank at the same
    step. A TrainingError (training kept failing through its rollbacks) is a UsageError. Under torchrun, ranks other
    than 0 exit when training ends (``distributed.finish_run``)."""
    in_main_thread = threading.current_thread() is threading.main_thread()  # only there can signals be handled
    # getsignal() is None for a handler not set from Python: treat it as the default action.
    previous = {s: signal.getsignal(s) or signal.SIG_DFL for s in STOP_SIGNALS} if in_main_thread else {}

    def on_signal(signum, frame):
        signal.signal(signum, previous[signum])
        trainer.request_stop("by SIGTERM" if signum == signal.SIGTERM else "")

    for s in previous:
        signal.signal(s, on_signal)
    try:
        summary = trainer.fit()
    except TrainingError as exc:
        raise UsageError(str(exc)) from None
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    distributed.finish_run()  # under torchrun ranks other than 0 exit here: what follows training is rank 0's
    return summary


def load_best_weights(out: Path, model) -> Path:
    """Load best/ (or last/ when no validation picked a best) of the run in ``out`` into ``model``; the directory."""
    weights = out / "best" if (out / "best").exists() else out / "last"
    load_checkpoint(weights).load_model(model)
    return weights
