"""The training loop. It knows nothing about RNNs or language: it gets a model (for its parameters, train/eval mode
and checkpoints), a *task* that computes the loss of one batch, and data that can be read from any (epoch, batch).

A task is any object with

    step(batch, state) -> (loss, n_tokens, state)   loss: a scalar tensor, the mean over the batch's n_tokens
    init_state(batch_size) -> state                 optional: what an epoch starts from (default None)
    detach_state(state) -> state                    optional: called after every update (default: unchanged)
    metrics(loss) -> dict                           optional: what to report for a mean loss (default {"loss"})

The state is whatever the task carries from one batch to the next (an RNN's hidden state); the trainer only
passes it along, stores it in mid-epoch checkpoints and calls ``detach_state`` — the task says what that means.
A plain callable ``loss_fn(batch) -> loss`` (or ``-> (loss, n)``) also works as a stateless task.

Data is an object with ``batches(epoch, start) -> iterator``, ``num_batches(epoch)`` and ``batch_size`` (like
``rnnlab.data.LMStream``), or a list of batches.

What it does: SGD / Adam / AdamW; constant, step-decay or divide-on-plateau learning rate; clipping by norm or value
(the pre-clip total norm is logged); evaluation each epoch; early stopping; ``last/`` and ``best/`` checkpoints;
a progress bar (tqdm on a terminal) and one summary line per epoch; metrics in ``metrics.jsonl``; exact repeats
(same seed → same metrics) and exact resumes (same weights as an uninterrupted run).

Faults do not abort a run and never reach the weights. A batch whose loss is NaN or infinite, whose gradient norm is
NaN or infinite, or whose loss is a *spike* (above ``spike_factor`` times the largest loss of the last ``spike_window``
good batches) is skipped: no ``optimizer.step()``, and the carried state goes on from the batch's input state when
the batch left it non-finite. After ``fault_patience`` bad batches in a row the trainer rolls back to its rollback
point — weights and optimizer state copied to CPU memory after every ``spike_window`` fault-free updates (and at the
start) — and multiplies the learning rate by ``fault_lr_factor``. Each event is a ``{"kind": "fault", ...}`` record
in metrics.jsonl (what happened, what was done) and a progress line. When a rollback would be the
``max_rollbacks + 1``-th, the run gives up: it rolls back, saves ``last/`` (best/ is left as it was) and raises
``TrainingError``; resume it with a larger ``max_rollbacks`` or change what the message suggests. The fault counters,
the recent losses and the rollback point are saved in ``last/``, so a resumed run handles faults exactly as the
uninterrupted one would. A skipped batch still counts as a step (``step`` is the position in the batch stream).

Callbacks (``callbacks=[...]``) watch the loop without changing it; each may define

    step_context(trainer) -> context manager | None   entered around one batch's forward and backward (e.g. a
                                                      gradient probe); None: nothing to enter for this batch
    after_step(trainer, info) -> dict | None          after the update; ``info``: step, epoch, batch, loss,
                                                      grad_norm (pre-clip), clipped, fault. A returned dict is
                                                      written to metrics.jsonl (give it a "kind")

Several processes (``distributed=``, a ``rnnlab.train.distributed.Distributed`` from a torchrun launch): the trainer
wraps the model in DistributedDataParallel and points ``task.model`` at the wrapper (the task's forward must go
through it); each rank takes its slice of every global batch along the task's ``batch_dim`` (default 0) and weights
its loss by its share of the batch's tokens, so an update equals single-process training with the same global batch.
The loss the fault checks see, the validation loss and the stop requests are reduced across ranks, so every rank
makes the same decisions; the carried state is gathered into the checkpoints; only rank 0 prints and writes.
Details in ``rnnlab.train.distributed``.
"""
from __future__ import annotations

import contextlib
import math
import random
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from .checkpoint import DAMAGED, META, Checkpoint, CheckpointError, rng_state, save_checkpoint, set_rng_state
from .metrics import MetricsLog

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "step", "plateau")


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. the loss stayed NaN through every rollback); the message says what to change."""


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators (model init, dropout, shuffles)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class TrainOptions:
    """Everything the loop needs to know besides model, task and data. Invalid values fail at construction."""

    epochs: int = 10  # enough for a small model on a small corpus to flatten out; early stopping can end sooner
    optimizer: str = "adam"  # Adam trains RNN LMs of any size without tuning; SGD needs its lr and clip tuned
    lr: float = 2e-3  # Karpathy's char-rnn default; a safe Adam rate for small recurrent LMs
    momentum: float = 0.0  # SGD only; the classic RNN LM recipes (Zaremba 2014, AWD-LSTM) use none
    weight_decay: float | None = None  # None: the optimizer's own default (0 for SGD/Adam, 0.01 for AdamW)
    clip_norm: float | None = None  # rescale the whole gradient when its norm exceeds this (e.g. 0.25 or 5)
    clip_value: float | None = None  # clamp each gradient element to [-v, v] (char-rnn's 5); not with clip_norm
    schedule: str = "constant"
    lr_decay: float = 0.5  # the factor of 'step' and 'plateau' (Zaremba et al.'s small model halves the rate)
    decay_start: int = 1  # 'step': the first decay_start epochs run at lr; then lr *= lr_decay after each epoch
    patience: int | None = None  # stop after this many epochs without a better validation loss (None: never)
    seed: int = 0
    log_every: int = 100  # steps between metric records (and progress lines without a bar)
    max_steps: int | None = None  # stop (and save last/) after this many steps (batches, skipped ones included) in
    # this call to fit()
    max_minutes: float | None = None  # stop (and save last/) once this much wall time has passed in this call
    checkpoint_every: int | None = None  # also save last/ every this many steps mid-epoch (None: at epoch ends)
    quiet: bool = False  # no progress bar and no interval lines; the per-epoch summary line is still printed
    progress: bool | None = None  # the bar: None = when stderr is a terminal and not quiet
    # Faults (see the module doc): skip the bad batch; after fault_patience in a row, roll back and lower the lr.
    spike_factor: float | None = 10.0  # a loss above 10x the largest recent good loss is a spike: hard batches stay
    # within that, a blow-up is orders of magnitude above it; None: no spike check (NaN/Inf are always faults)
    spike_window: int = 50  # good losses whose largest the spike check compares with, and fault-free updates
    # between rollback points: enough to span ordinary batch noise, short enough that a rollback loses little work;
    # no spike check before it is full
    fault_patience: int = 3  # bad batches in a row skipped before rolling back: one or two is an odd batch, three in
    # a row means the weights or the optimizer state went bad
    fault_lr_factor: float = 0.5  # lr multiplier at each rollback: halving is the usual first remedy for divergence
    max_rollbacks: int = 5  # give up (TrainingError) when a 6th rollback is needed: by then the lr is 1/32 of its
    # value and the run still diverges, so the cause is elsewhere (data, model, loss)

    def __post_init__(self) -> None:
        def positive_int(name, allow_none=False, lo=1):
            v = getattr(self, name)
            if v is None and allow_none:
                return
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"{name} must be an integer >= {lo}{' or None' if allow_none else ''}; got {v!r}")

        def positive_float(name, allow_none=False, hi=None):
            v = getattr(self, name)
            if v is None and allow_none:
                return
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0 or \
                    (hi is not None and v > hi):
                rule = f"a number > 0{f' and <= {hi}' if hi is not None else ''}"
                raise ValueError(f"{name} must be {rule}{' or None' if allow_none else ''}; got {v!r}")

        positive_int("epochs")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}; got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}; got {self.schedule!r}")
        positive_float("lr")
        positive_float("lr_decay", hi=1.0)
        positive_int("decay_start", lo=0)
        positive_float("clip_norm", allow_none=True)
        positive_float("clip_value", allow_none=True)
        positive_float("max_minutes", allow_none=True)
        for name in ("patience", "max_steps", "checkpoint_every"):
            positive_int(name, allow_none=True)
        positive_int("log_every")
        positive_int("seed", lo=0)
        positive_int("spike_window")
        positive_int("fault_patience")
        positive_int("max_rollbacks", lo=0)
        positive_float("fault_lr_factor", hi=1.0)
        sf = self.spike_factor
        if sf is not None and (isinstance(sf, bool) or not isinstance(sf, (int, float)) or not math.isfinite(sf)
                               or sf <= 1):
            raise ValueError(f"spike_factor must be a number > 1 (a loss that many times the largest recent good loss is a spike) "
                             f"or None (no spike check); got {sf!r}")
        if self.clip_norm is not None and self.clip_value is not None:
            raise ValueError(f"clip by norm or by value, not both; got clip_norm={self.clip_norm} and "
                             f"clip_value={self.clip_value}. Keep one")
        if not isinstance(self.momentum, (int, float)) or not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be a number in [0, 1); got {self.momentum!r}")
        if self.momentum and self.optimizer != "sgd":
            raise ValueError(f"momentum is an SGD option; got momentum={self.momentum} with optimizer "
                             f"{self.optimizer!r}. Drop it or use optimizer 'sgd'")
        if self.weight_decay is not None and (not isinstance(self.weight_decay, (int, float)) or self.weight_decay < 0):
            raise ValueError(f"weight_decay must be a number >= 0 or None; got {self.weight_decay!r}")

    @classmethod
    def from_dict(cls, d: dict) -> TrainOptions:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown training options {unknown}; known: {sorted(names)}")
        return cls(**d)


class _FunctionTask:
    """A plain loss function as a stateless task."""

    def __init__(self, fn: Callable) -> None:
        self.fn = fn

    def step(self, batch, state):
        out = self.fn(batch)
        loss, n = out if isinstance(out, tuple) else (out, 1)
        return loss, n, None


class _ListData:
    def __init__(self, items) -> None:
        self.items = list(items)
        self.batch_size = None

    def num_batches(self, epoch: int = 0) -> int:
        return len(self.items)

    def batches(self, epoch: int = 0, start: int = 0):
        return iter(self.items[start:])


def _as_data(data):
    if data is None or hasattr(data, "batches"):
        return data
    return _ListData(data)


def _init_state(task, data, distributed=None):
    """What an epoch of ``data`` starts from; under ``distributed``, the state of this rank's slice of a batch."""
    if not hasattr(task, "init_state"):
        return None
    batch_size = data.batch_size
    if distributed is not None and batch_size is not None:
        batch_size = distributed.local_batch_size(batch_size)
    return task.init_state(batch_size)


def _metrics(task, loss: float) -> dict:
    return task.metrics(loss) if hasattr(task, "metrics") else {"loss": loss}


@torch.no_grad()
def evaluate_task(model: nn.Module, task, data, distributed=None) -> float:
    """Mean loss per token of ``task`` over all batches of ``data`` (epoch 0), in eval mode (no dropout). Under
    ``distributed`` each rank evaluates its slice of every batch and the sums are all-reduced: every rank gets the
    mean over the whole data."""
    task = task if hasattr(task, "step") else _FunctionTask(task)
    data = _as_data(data)
    dim = getattr(task, "batch_dim", 0)
    was_training = model.training
    model.eval()
    try:
        state = _init_state(task, data, distributed)
        total, count = 0.0, 0
        for batch in data.batches(0):
            real = True
            if distributed is not None:
                batch, real = distributed.shard(batch, dim)
            loss, n, state = task.step(batch, state)
            if real:  # an empty slice ran the batch's first example for nothing: it does not count
                total += float(loss) * n
                count += n
    finally:
        model.train(was_training)
    if distributed is not None:
        total, count = distributed.sum([total, count])
    if count == 0:
        raise ValueError("evaluation data has no batches")
    return total / count


def _fmt(metrics: dict) -> str:
    out = []
    for k, v in metrics.items():
        digits = {"loss": 4, "ppl": 2, "bpc": 3}.get(k, 4)
        out.append(f"{k} {v:.{digits}f}")
    return " ".join(out)


def _rate(tokens: float, seconds: float) -> str:
    r = tokens / max(seconds, 1e-9)
    return f"{r / 1e3:.1f}k tok/s" if r >= 1e3 else f"{r:.0f} tok/s"


class Trainer:
    """Runs ``fit()``; ``restore(checkpoint)`` first to continue a stopped run exactly where it stopped.

    ``out_dir`` (optional) receives ``last/``, ``best/`` and ``metrics.jsonl``; ``meta`` (JSON-able) is stored in
    every checkpoint next to the trainer's own state (put the model config, vocabulary and run options there).
    """

    def __init__(self, model: nn.Module, task, train, valid=None, options: TrainOptions | None = None,
                 out_dir: str | Path | None = None, meta: dict | None = None,
                 print_fn: Callable[[str], None] | None = None, callbacks=(), distributed=None) -> None:
        self.model = model  # the model itself, unwrapped: its parameters, its state_dict in checkpoints
        self.callbacks = list(callbacks)
        self.task = task if hasattr(task, "step") else _FunctionTask(task)
        self.train_data, self.valid_data = _as_data(train), _as_data(valid)
        self.options = options or TrainOptions()
        o = self.options
        if o.schedule == "plateau" and self.valid_data is None:
            raise ValueError("schedule 'plateau' lowers the lr when the validation loss stops improving, but there "
                             "is no validation data; give some or use another schedule")
        if o.patience is not None and self.valid_data is None:
            raise ValueError("patience (early stopping) watches the validation loss, but there is no validation "
                             "data; give some or drop patience")
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.meta = dict(meta or {})
        self.dist = distributed
        self.is_main = distributed is None or distributed.is_main  # the process that prints and writes
        self._batch_dim = getattr(self.task, "batch_dim", 0)  # where a batch (and a carried state) is sliced
        self._net = model  # what the task calls and what train()/eval() switch: the DDP wrapper when distributed
        if distributed is not None:
            if not hasattr(self.task, "model"):
                raise ValueError("distributed training needs a task with a 'model' attribute, which the trainer "
                                 "points at the DistributedDataParallel wrapper (its forward arms the gradient "
                                 f"all-reduce); got {type(self.task).__name__}. Give the task the model as "
                                 "task.model and call it from step()")
            if self.train_data.batch_size is not None:
                distributed.check_batch_size(self.train_data.batch_size)
            self._net = distributed.wrap(model)
            self.task.model = self._net
        self.log = MetricsLog(self.out_dir / "metrics.jsonl") if self.out_dir is not None and self.is_main else None
        self._print = print_fn or (lambda s: print(s, flush=True))
        if not self.is_main:
            self._print = lambda s: None
        self.optimizer = self._build_optimizer()
        self.progress = {"epoch": 0, "batch": 0, "step": 0, "lr": o.lr, "best_valid_loss": None, "bad_epochs": 0,
                         "stopped": None, "acc": self._zero_acc(), "last_valid_loss": None,
                         "faults": self._zero_faults()}
        self._carry = None
        self._restored = False
        self._stop_requested = False
        self._stop_note = ""
        self._rollback_point = None  # {"step", "model", "optim"}: CPU copies, taken by _take_rollback_point

    # -- set-up ----------------------------------------------------------------------------------------------------
    def _build_optimizer(self) -> torch.optim.Optimizer:
        o = self.options
        params = list(self.model.parameters())
        wd = {} if o.weight_decay is None else {"weight_decay": o.weight_decay}
        if o.optimizer == "sgd":
            return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, **wd)
        if o.optimizer == "adam":
            return torch.optim.Adam(params, lr=o.lr, **wd)
        return torch.optim.AdamW(params, lr=o.lr, **wd)

    @staticmethod
    def _zero_acc() -> dict:
        return {"epoch_loss": 0.0, "epoch_tokens": 0, "loss": 0.0, "tokens": 0, "steps": 0, "norm_sum": 0.0,
                "norm_max": 0.0, "clipped": 0, "skipped": 0}

    @staticmethod
    def _zero_faults() -> dict:
        """The fault tracking saved with the trainer state: the recent good losses (the spike test's window), bad
        batches in a row, fault-free updates since the rollback point, rollbacks and skipped batches so far."""
        return {"recent": [], "in_a_row": 0, "clean": 0, "rollbacks": 0, "skipped": 0}

    def restore(self, checkpoint: Checkpoint) -> None:
        """Continue from ``checkpoint`` (written by this trainer): weights, optimizer, schedule, position in the
        data, the carried state, the RNG states and the running sums — so the rest of the run is the same as if it
        had never stopped. A checkpoint whose trainer state, RNG states, optimizer state or rollback point is
        missing or does not fit raises ``CheckpointError`` naming the checkpoint, what is wrong and what to do;
        the trainer is left as it was when the trainer state or the RNG states are at fault."""
        meta, where = checkpoint.meta, checkpoint.path / META
        if "trainer" not in meta:
            raise CheckpointError(f"{where}: holds no trainer state ('trainer'), so training cannot resume from it; "
                                  "resume from a checkpoint a training run wrote (OUT/last or OUT/best) or retrain")
        progress = _checked_progress(meta["trainer"], where)
        rng = meta.get("rng")
        _check_rng(rng, where)
        checkpoint.load_model(self.model)
        try:
            self.optimizer.load_state_dict(checkpoint.optimizer_state())
        except (ValueError, KeyError, TypeError, IndexError, RuntimeError) as exc:
            if isinstance(exc, CheckpointError):
                raise
            why = " ".join(str(exc).split())[:150]
            raise CheckpointError(f"{checkpoint.path}: its optimizer state does not fit the {self.options.optimizer} "
                                  f"optimizer of this model ({why}); {DAMAGED}") from None
        extra = checkpoint.extra() or {}
        point = extra.get("rollback_point") if isinstance(extra, dict) else None
        if point is not None and not (isinstance(point, dict) and _is_int(point.get("step"))
                                      and isinstance(point.get("model"), dict)
                                      and isinstance(point.get("optim"), dict)):
            raise CheckpointError(f"{where}: its rollback point ('extra' → 'rollback_point') is malformed; {DAMAGED}")
        self.progress = progress
        # None: a checkpoint without one (best/, or one saved without a rollback point); fit() takes one from the restored state.
        self._rollback_point = None if point is None else {"step": point["step"], "model": point["model"],
                                                           "optim": point["optim"]}
        carry = checkpoint.carry()
        device = next(self.model.parameters()).device
        self._carry = _to_device(carry, device)
        if self.dist is not None and self._carry is not None:  # checkpoints hold every column: take this rank's
            self._carry = self.dist.shard(self._carry, self._batch_dim)[0]
        set_rng_state(rng)
        if self.log is not None:
            try:
                self.log.rewind(self.progress["step"])
            except (ValueError, AttributeError) as exc:  # a damaged line (UnicodeDecodeError is a ValueError)
                why = " ".join(str(exc).split())[:100]
                raise CheckpointError(f"{self.log.path}: not a metrics log that can be rewound to step "
                                      f"{self.progress['step']} ({why}); move it aside and resume again (a new log "
                                      "is started)") from None
        self._restored = True

    def request_stop(self, note: str = "") -> None:
        """Ask the loop to stop after the current batch (it saves last/ first); e.g. from a SIGINT or SIGTERM
        handler. ``note`` (e.g. "by SIGTERM") goes into the 'stopped: interrupted' line."""
        self._stop_note = note
        self._stop_requested = True

    # -- the loop --------------------------------------------------------------------------------------------------
    def fit(self) -> dict:
        """Train until the epochs are done or a stop condition hits; returns a summary dict."""
        o, p = self.options, self.progress
        if not self._restored:
            seed_everything(o.seed)
        if p["stopped"] == "patience":
            self._print(f"the run already stopped early (no better validation loss for {p['bad_epochs']} epochs)")
            return self._summary("patience")
        if p["epoch"] >= o.epochs:
            self._print(f"nothing to do: the run has finished its {p['epoch']} epochs (train longer with more epochs)")
            return self._summary("done")
        show_bar = self.is_main and (o.progress if o.progress is not None else (not o.quiet and sys.stderr.isatty()))
        self._t0 = time.monotonic()
        self._steps_this_call = 0
        self._set_lr(p["lr"])
        p.setdefault("faults", self._zero_faults())
        if self._rollback_point is None:
            self._take_rollback_point()
        stopped = None
        while p["epoch"] < o.epochs and stopped is None:
            stopped = self._run_epoch(show_bar)
        if self.dist is not None:
            self.dist.barrier()  # rank 0's checkpoints are complete when fit() returns on any rank
        reason = stopped or p.get("stopped") or "done"
        return self._summary(reason)

    def _run_epoch(self, show_bar: bool) -> str | None:
        o, p, acc = self.options, self.progress, self.progress["acc"]
        epoch = p["epoch"]
        self._net.train()
        state = self._carry if p["batch"] > 0 else _init_state(self.task, self.train_data, self.dist)
        self._carry = None
        total = self.train_data.num_batches(epoch)
        bar = tqdm(total=total, initial=p["batch"], desc=f"epoch {epoch + 1}/{o.epochs}", file=sys.stderr,
                   disable=not show_bar, dynamic_ncols=True, leave=False, unit="batch")
        epoch_t0 = interval_t0 = time.monotonic()
        epoch_tokens0, stop = acc["epoch_tokens"], None
        try:
            for batch in self.train_data.batches(epoch, p["batch"]):
                real = True
                if self.dist is not None:
                    batch, real = self.dist.shard(batch, self._batch_dim)  # this rank's slice of the global batch
                self.optimizer.zero_grad(set_to_none=True)
                state_in = state
                with contextlib.ExitStack() as watching:
                    for cb in self.callbacks:
                        cm = cb.step_context(self) if hasattr(cb, "step_context") else None
                        if cm is not None:
                            watching.enter_context(cm)
                    loss, n, state = self.task.step(batch, state)
                    value, weight = float(loss.detach()), 1.0
                    if self.dist is not None:  # the global batch's mean loss and tokens, the same on every rank
                        value, n, weight = self._global_loss(value, n if real else 0)
                    fault, norm = None, 0.0
                    if not math.isfinite(value):
                        fault = "nonfinite_loss"
                    elif self._is_spike(value):
                        fault = "spike"
                    else:
                        (loss * weight if weight != 1.0 else loss).backward()
                        norm = self._clip()
                        if not math.isfinite(norm):
                            fault = "nonfinite_grad"
                clipped = fault is None and self._clipped(norm)
                if fault is None:
                    self.optimizer.step()
                del loss
                state = self.task.detach_state(state) if hasattr(self.task, "detach_state") else state
                if fault is not None and not _all_finite(state):
                    state = state_in  # do not carry NaN/Inf into the next batch
                p["batch"] += 1
                p["step"] += 1
                self._steps_this_call += 1
                if fault is None:
                    acc["epoch_loss"] += value * n
                    acc["epoch_tokens"] += n
                    acc["loss"] += value * n
                    acc["tokens"] += n
                    acc["steps"] += 1
                    acc["norm_sum"] += norm
                    acc["norm_max"] = max(acc["norm_max"], norm)
                    acc["clipped"] = acc.get("clipped", 0) + int(clipped)
                    self._good_update(value)
                else:
                    self._fault(fault, value, norm, state)
                if self.callbacks:
                    self._after_step({"step": p["step"], "epoch": p["epoch"] + 1, "batch": p["batch"],
                                      "loss": value, "grad_norm": norm, "clipped": clipped, "fault": fault})
                now = time.monotonic()
                if show_bar:
                    m = _metrics(self.task, acc["epoch_loss"] / acc["epoch_tokens"])
                    bar.set_postfix_str(f"{_fmt(m)} | {_rate(acc['epoch_tokens'] - epoch_tokens0, now - epoch_t0)}",
                                        refresh=False)
                    bar.update(1)
                if p["step"] % o.log_every == 0:
                    self._log_interval(now - interval_t0, show_bar)
                    interval_t0 = now
                    if show_bar:
                        bar.refresh()  # tqdm redraws at most every 0.1 s; show each interval's numbers at least
                time_up = o.max_minutes is not None and now - self._t0 >= 60 * o.max_minutes
                requested = self._stop_requested
                if self.dist is not None:  # rank 0's clock; a Ctrl-C or SIGTERM on any rank: all stop here
                    time_up, requested = self.dist.any([time_up and self.is_main, requested])
                if o.max_steps is not None and self._steps_this_call >= o.max_steps:
                    stop = "max_steps"
                elif time_up:
                    stop = "max_minutes"
                elif requested:
                    stop = "interrupted"
                if stop is not None or (o.checkpoint_every and p["step"] % o.checkpoint_every == 0
                                        and p["batch"] < total):
                    self._save("last", carry=state)
                if stop is not None:
                    break
        finally:
            bar.close()
        if stop is not None:
            self._stopped_midway(stop)
            return stop
        return self._end_epoch(time.monotonic() - epoch_t0, acc["epoch_tokens"] - epoch_tokens0)

    def _global_loss(self, value: float, n: int) -> tuple[float, int, float]:
        """(the mean loss over every rank's tokens, their number N, this rank's loss weight W * n / N) from this
        rank's mean ``value`` over its ``n`` tokens. With the weight, DDP's average of the ranks' gradients is the
        gradient of the global mean, however the tokens fall. A non-finite loss on any rank makes the mean
        non-finite on all, so every rank skips the batch."""
        total, count, plain = self.dist.sum([value * n, n, value])
        W = self.dist.world_size
        if count == 0:  # no tokens anywhere (the loss is a placeholder): the plain mean, every rank alike
            return plain / W, 0, 1.0
        return total / count, int(round(count)), W * n / count

    # -- faults ----------------------------------------------------------------------------------------------------
    def _recent_mean(self) -> float | None:
        recent = self.progress["faults"]["recent"]
        return sum(recent) / len(recent) if recent else None

    def _is_spike(self, value: float) -> bool:
        o, f = self.options, self.progress["faults"]
        if o.spike_factor is None or len(f["recent"]) < o.spike_window:
            return False
        # Against the largest recent good loss, not the mean: once a model fits well (mean 0.01), an ordinary hard
        # batch at 10x the mean is information, not a fault; a blow-up is still orders of magnitude above the max.
        ceiling = max(f["recent"])
        return ceiling > 0 and value > o.spike_factor * ceiling  # a ratio means nothing at <= 0 (e.g. an NLL)

    def _good_update(self, value: float) -> None:
        o, f = self.options, self.progress["faults"]
        f["recent"].append(value)
        del f["recent"][:-o.spike_window]
        f["in_a_row"] = 0
        f["clean"] += 1
        if f["clean"] >= o.spike_window:
            self._take_rollback_point()

    def _take_rollback_point(self) -> None:
        """Copy weights and optimizer state to CPU memory: where the next rollback returns to."""
        self._rollback_point = {"step": self.progress["step"], "model": _copy_tree(self.model.state_dict()),
                                "optim": _copy_tree(self.optimizer.state_dict())}
        self.progress["faults"]["clean"] = 0

    def _rollback(self) -> None:
        point = self._rollback_point
        self.model.load_state_dict(point["model"])
        self.optimizer.load_state_dict(_copy_tree(point["optim"]))  # a copy: the optimizer updates its state in place
        self.progress["lr"] *= self.options.fault_lr_factor
        self._set_lr(self.progress["lr"])

    def _fault(self, kind: str, value: float, norm: float, state) -> None:
        """Handle a skipped batch: count it, roll back after fault_patience in a row, give up after max_rollbacks;
        log and print what happened and what was done."""
        o, p, f = self.options, self.progress, self.progress["faults"]
        f["in_a_row"] += 1
        f["skipped"] += 1
        f["clean"] = 0
        p["acc"]["skipped"] = p["acc"].get("skipped", 0) + 1
        mean = self._recent_mean()
        if kind == "nonfinite_loss":
            what = f"the loss became {value}"
        elif kind == "spike":
            what = f"loss spike: {value:.4g} > {o.spike_factor:g} x the largest recent loss {max(f['recent']):.4g}"
        else:
            what = f"the gradient norm became {norm}"
        rec = {"kind": "fault", "epoch": p["epoch"] + 1, "batch": p["batch"], "step": p["step"], "fault": kind,
               "loss": value, "grad_norm": norm if kind == "nonfinite_grad" else None, "recent_mean": mean,
               "in_a_row": f["in_a_row"]}
        total = self.train_data.num_batches(p["epoch"])
        where = f"epoch {p['epoch'] + 1} batch {p['batch']}/{total} (step {p['step']})"
        if f["in_a_row"] < o.fault_patience:
            self._report_fault({**rec, "action": "skipped", "lr": p["lr"]},
                               f"  fault at {where}: {what}; skipped the update ({f['in_a_row']} in a row; a rollback "
                               f"after {o.fault_patience})")
            return
        f["in_a_row"] = 0
        f["rollbacks"] += 1
        lr_before = p["lr"]
        self._rollback()
        to = self._rollback_point["step"]
        if f["rollbacks"] <= o.max_rollbacks:
            self._report_fault({**rec, "action": "rolled_back", "rolled_back_to_step": to, "lr": p["lr"],
                                "rollbacks": f["rollbacks"]},
                               f"  fault at {where}: {what}; {o.fault_patience} bad batches in a row: rolled back to "
                               f"step {to}, lr {lr_before:.3g} -> {p['lr']:.3g} (rollback {f['rollbacks']} of at "
                               f"most {o.max_rollbacks})")
            return
        self._report_fault({**rec, "action": "aborted", "rolled_back_to_step": to, "lr": p["lr"],
                            "rollbacks": f["rollbacks"]},
                           f"  fault at {where}: {what}; {o.fault_patience} bad batches in a row once more after "
                           f"{o.max_rollbacks} rollbacks: giving up")
        self._save("last", carry=state)
        if self.log is not None:
            self.log.write({"kind": "stop", "reason": "faults", "epoch": p["epoch"] + 1, "batch": p["batch"],
                            "step": p["step"]})
        saved = (f" Saved {self.out_dir / 'last'} (rolled back to step {to}, lr {p['lr']:.3g}; resume from it) and "
                 f"kept {self.out_dir / 'best'}." if self.out_dir is not None else "")
        raise TrainingError(f"training keeps failing: {what} at {where}; {o.fault_patience} bad batches in a row "
                            f"came back after {o.max_rollbacks} rollbacks (lr now {p['lr']:g}).{saved} Lower the "
                            "learning rate or clip the gradient norm (for spikes of a noisy loss: a larger "
                            "spike_factor); to keep trying, resume with a larger max_rollbacks")

    def _report_fault(self, rec: dict, line: str) -> None:
        if self.log is not None:
            self.log.write(rec)
        self._print(line)

    def _clip(self) -> float:
        """Clip as the options say; return the total gradient norm before clipping."""
        o = self.options
        params = [q for q in self.model.parameters() if q.grad is not None]
        if not params:
            return 0.0
        if o.clip_norm is not None:
            return float(torch.nn.utils.clip_grad_norm_(params, o.clip_norm))
        norm = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(q.grad) for q in params])))
        if o.clip_value is not None:
            torch.nn.utils.clip_grad_value_(params, o.clip_value)
        return norm

    def _clipped(self, norm: float) -> bool:
        """Whether clipping changed this batch's gradient: by norm, when the norm exceeded the threshold; by value,
        when some element was beyond it (known only as 'the norm exceeds the threshold' — a lower bound)."""
        o = self.options
        limit = o.clip_norm if o.clip_norm is not None else o.clip_value
        return limit is not None and norm > limit

    def _after_step(self, info: dict) -> None:
        for cb in self.callbacks:
            rec = cb.after_step(self, info) if hasattr(cb, "after_step") else None
            if rec and self.log is not None:
                self.log.write(rec)

    def _set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def _log_interval(self, seconds: float, show_bar: bool) -> None:
        p, acc = self.progress, self.progress["acc"]
        if acc["tokens"] == 0:
            return
        m = _metrics(self.task, acc["loss"] / acc["tokens"])
        rec = {"kind": "train", "epoch": p["epoch"] + 1, "batch": p["batch"], "step": p["step"], **m, "lr": p["lr"],
               "grad_norm": acc["norm_sum"] / acc["steps"], "grad_norm_max": acc["norm_max"],
               "clip_fraction": acc.get("clipped", 0) / acc["steps"],
               "tokens": acc["tokens"], "tokens_per_s": acc["tokens"] / max(seconds, 1e-9),
               "elapsed_s": time.monotonic() - self._t0}
        if self.log is not None:
            self.log.write(rec)
        if not show_bar and not self.options.quiet:
            total = self.train_data.num_batches(p["epoch"])
            self._print(f"  epoch {p['epoch'] + 1} batch {p['batch']}/{total}  {_fmt(m)}  grad norm "
                        f"{rec['grad_norm']:.3g}  {_rate(acc['tokens'], seconds)}")
        for k in ("loss", "tokens", "steps", "norm_sum", "norm_max", "clipped"):
            acc[k] = type(acc.get(k, 0))(0)

    def _end_epoch(self, seconds: float, tokens: int) -> str | None:
        o, p, acc = self.options, self.progress, self.progress["acc"]
        epoch = p["epoch"]
        # nan (null in metrics.jsonl): every batch of the epoch was skipped as a fault
        train_m = _metrics(self.task, acc["epoch_loss"] / acc["epoch_tokens"] if acc["epoch_tokens"] else math.nan)
        valid_loss, improved = None, False
        if self.valid_data is not None:
            valid_loss = evaluate_task(self._net, self.task, self.valid_data, self.dist)
            best = p["best_valid_loss"]
            improved = math.isfinite(valid_loss) and (best is None or valid_loss < best)
            if improved:
                p["best_valid_loss"], p["bad_epochs"] = valid_loss, 0
            else:
                p["bad_epochs"] += 1
            # checkpoint.json is strict JSON (no NaN): a non-finite validation loss is stored as "none measured"
            p["last_valid_loss"] = valid_loss if math.isfinite(valid_loss) else None
        lr_used = p["lr"]
        if (o.schedule == "step" and epoch + 1 >= o.decay_start) or (o.schedule == "plateau" and not improved):
            p["lr"] = p["lr"] * o.lr_decay
            self._set_lr(p["lr"])
        p["epoch"], p["batch"] = epoch + 1, 0
        p["acc"] = self._zero_acc()
        stop = "patience" if o.patience is not None and p["bad_epochs"] >= o.patience else None
        p["stopped"] = stop
        rec = {"kind": "epoch", "epoch": epoch + 1, "step": p["step"],
               **{f"train_{k}": v for k, v in train_m.items()}}
        if valid_loss is not None:
            rec.update({f"valid_{k}": v for k, v in _metrics(self.task, valid_loss).items()})
            rec["best"] = improved
        rec.update({"lr": lr_used, "skipped_batches": acc.get("skipped", 0),
                    "tokens_per_s": tokens / max(seconds, 1e-9), "epoch_s": seconds})
        if self.log is not None:
            self.log.write(rec)
        line = f"epoch {epoch + 1:>3}/{o.epochs}  train {_fmt(train_m)}"
        if valid_loss is not None:
            line += f" | valid {_fmt(_metrics(self.task, valid_loss))}"
        line += f" | lr {lr_used:.3g} | {_rate(tokens, seconds)} | {seconds:.1f} s" + ("  *best*" if improved else "")
        if acc.get("skipped"):
            line += f"  ({acc['skipped']} bad batches skipped)"
        if p["lr"] != lr_used:
            line += f"  (lr -> {p['lr']:.3g})"
        self._print(line)
        self._save("last", carry=None)
        if improved:
            self._save("best", carry=None)
        if stop:
            self._print(f"stopping: no better validation loss for {p['bad_epochs']} epochs (patience {o.patience})")
        return stop

    def _stopped_midway(self, reason: str) -> None:
        p = self.progress
        if reason == "max_steps":
            what = f"reached max_steps={self.options.max_steps}"
        elif reason == "max_minutes":
            what = f"reached the time limit of {self.options.max_minutes:g} min"
        else:
            what = "interrupted" + (f" {self._stop_note}" if self._stop_note else "")
        total = self.train_data.num_batches(p["epoch"])
        where = f"epoch {p['epoch'] + 1}, batch {p['batch']}/{total}, step {p['step']}"
        saved = f"; saved {self.out_dir / 'last'} (resume from it)" if self.out_dir is not None else ""
        self._print(f"stopped: {what} at {where}{saved}")
        if self.log is not None:
            self.log.write({"kind": "stop", "reason": reason, "epoch": p["epoch"] + 1, "batch": p["batch"],
                            "step": p["step"]})

    def _save(self, which: str, carry) -> None:
        if self.dist is not None:
            carry = self.dist.gather(carry, self._batch_dim)  # every rank takes part; rank 0 saves all columns
        if self.out_dir is None or not self.is_main:
            return
        meta = {**self.meta, "model": getattr(self.model, "config", None), "trainer": self.progress,
                "rng": rng_state(), "train_options": asdict(self.options)}
        # last/ keeps the rollback point too, so a resumed run rolls back to the same state as an uninterrupted one.
        extra = {"rollback_point": self._rollback_point} if which == "last" and self._rollback_point else None
        save_checkpoint(self.out_dir / which, self.model, self.optimizer, meta, carry=carry, extra=extra)

    def _summary(self, reason: str) -> dict:
        p = self.progress
        f = p.get("faults") or self._zero_faults()
        return {"stopped": reason, "epochs": p["epoch"], "batch": p["batch"], "steps": p["step"],
                "best_valid_loss": p["best_valid_loss"], "last_valid_loss": p["last_valid_loss"], "lr": p["lr"],
                "skipped_batches": f["skipped"], "rollbacks": f["rollbacks"]}


def _copy_tree(obj):
    """A copy of nested dicts/lists/tuples in which every tensor is copied to the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _copy_tree(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_copy_tree(v) for v in obj)
    return obj


def _all_finite(obj) -> bool:
    """No NaN or Inf in any floating-point tensor of a nested state."""
    if isinstance(obj, torch.Tensor):
        return not obj.is_floating_point() or bool(torch.isfinite(obj).all())
    if isinstance(obj, dict):
        return all(_all_finite(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return all(_all_finite(v) for v in obj)
    return True


def _to_device(state, device):
    if state is None:
        return None
    if isinstance(state, torch.Tensor):
        return state.to(device)
    if isinstance(state, (tuple, list)):
        return type(state)(_to_device(s, device) for s in state)
    return state


# -- checking a checkpoint's trainer state --------------------------------------------------------------------------
def _is_int(v, lo: int = 0) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= lo


def _short(v) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# What the trainer state of a checkpoint holds: key -> (test, what it must be, the value where it is missing:
# REQUIRED, or what a fresh trainer starts from, for a key a checkpoint may lack).
REQUIRED = object()
_COUNT = (_is_int, "an integer >= 0")
_NUMBER_OR_NONE = (lambda v: v is None or _is_number(v), "a number or null")
_PROGRESS = {
    "epoch": (*_COUNT, REQUIRED), "batch": (*_COUNT, REQUIRED), "step": (*_COUNT, REQUIRED),
    "lr": (lambda v: _is_number(v) and v >= 0, "a number >= 0", REQUIRED),
    "acc": (lambda v: isinstance(v, dict), "a mapping", REQUIRED),
    "best_valid_loss": (*_NUMBER_OR_NONE, None), "last_valid_loss": (*_NUMBER_OR_NONE, None),
    "bad_epochs": (*_COUNT, 0), "stopped": (lambda v: v is None or isinstance(v, str), "a string or null", None),
}
_ACC = {"epoch_loss": _is_number, "epoch_tokens": _is_int, "loss": _is_number, "tokens": _is_int, "steps": _is_int,
        "norm_sum": _is_number, "norm_max": _is_number}
_FAULTS = {"recent": lambda v: isinstance(v, list) and all(_is_number(x) for x in v), "in_a_row": _is_int,
           "clean": _is_int, "rollbacks": _is_int, "skipped": _is_int}


def _checked_progress(state, where: Path) -> dict:
    """A copy of a checkpoint's trainer state, checked (a CheckpointError naming the key and the fix otherwise);
    a key a checkpoint lacks (the fault counters, the skipped count) gets its starting value."""
    def bad(what: str) -> CheckpointError:
        return CheckpointError(f"{where}: the trainer state ('trainer') {what}; {DAMAGED}")

    if not isinstance(state, dict):
        raise bad(f"is a {type(state).__name__}, not a mapping")
    progress = dict(state)
    for key, (ok, rule, missing) in _PROGRESS.items():
        if key not in state:
            if missing is REQUIRED:
                raise bad(f"has no {key!r}")
            progress[key] = missing
        elif not ok(state[key]):
            raise bad(f"has {key!r} = {_short(state[key])}, not {rule}")
    progress["acc"] = acc = dict(state["acc"])
    acc.setdefault("skipped", 0)
    acc.setdefault("clipped", 0)  # not saved before the clip-fired count existed
    _check_fields(acc, {**_ACC, "skipped": _is_int, "clipped": _is_int}, "acc", bad)
    faults = state.get("faults")
    if faults is None:  # a checkpoint from before fault handling
        progress["faults"] = Trainer._zero_faults()
    else:
        if not isinstance(faults, dict):
            raise bad(f"has 'faults' = {_short(faults)}, not a mapping")
        _check_fields(faults, _FAULTS, "faults", bad)
        progress["faults"] = {**faults, "recent": list(faults["recent"])}
    return progress


def _check_fields(d: dict, tests: dict, name: str, bad) -> None:
    for key, ok in tests.items():
        if key not in d:
            raise bad(f"has no {name + '.' + key!r}")
        if not ok(d[key]):
            rule = ("a list of finite numbers" if key == "recent" else "a count" if ok is _is_int else
                    "a finite number")
            raise bad(f"has {name + '.' + key!r} = {_short(d[key])}, not {rule}")


def _check_rng(rng, where: Path) -> None:
    """A CheckpointError unless ``rng`` (a checkpoint's 'rng') can be set; the RNG states are left as they were."""
    if rng is None:
        raise CheckpointError(f"{where}: holds no RNG states ('rng'), so the run cannot continue exactly; {DAMAGED}")
    before = rng_state()
    try:
        set_rng_state(rng)
    except (KeyError, TypeError, ValueError, IndexError, RuntimeError, OverflowError) as exc:
        why = f"{exc.args[0]!r} is missing" if isinstance(exc, KeyError) else " ".join(str(exc).split())[:100]
        raise CheckpointError(f"{where}: its RNG states ('rng') are malformed ({why}); {DAMAGED}") from None
    finally:
        set_rng_state(before)
