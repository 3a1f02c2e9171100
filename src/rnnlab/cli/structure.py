"""The recurrent-structure flags shared by the training commands (``rnnlab train lm|classify|tag|regress|seq2seq``
and ``rnnlab task``): ``--dilations`` (a dilated RNN, Chang et al. 2017), ``--skip`` and ``--skip-budget`` (a Skip
RNN, Campos et al. 2018). The layers, their equations and citations are in ``rnnlab.variants``; the one factory that
builds them is ``rnnlab.variants.recurrent_layer``. A command adds the flags with ``add_flags``, lists ``FLAGS``
among its flags, merges ``DEFAULTS`` into its own, checks a run's options with ``model_options(o)`` (which gives the
model's keyword arguments) and wraps its trainer task with ``budget_task`` (the Skip RNN's budget loss).
"""
from __future__ import annotations

import argparse

from ..variants import PLAIN_CELLS, SkipRNN, budget_loss
from . import regularisation
from .options import UsageError, float_range

# Every default the plain stack: a structure is a choice, and each changes what a model computes.
DEFAULTS = {
    "dilations": None,  # None: plain stacking of --layers layers
    "skip": False,  # off: every step updates the state
    "skip_budget": 0.0,  # Campos et al.'s baseline has no budget loss; they report λ from 1e-5 to 1e-2
}
FLAGS = tuple(DEFAULTS)
CELL_HELP = ("recurrent cell: plain (lstm, gru, rnn_tanh, rnn_relu) or layer-normalised (layernorm_lstm, "
             "layernorm_gru; Ba et al. 2016)")


def _dilations(text: str) -> list[int]:
    """D1,D2,...: one positive integer per layer."""
    parts = [p.strip() for p in text.split(",")]
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"got {text!r}; must be positive integers separated by commas, one per "
                                         "layer, e.g. 1,2,4,8") from None
    if not all(v > 0 for v in values):
        raise argparse.ArgumentTypeError(f"got {text!r}; every dilation must be an integer >= 1, e.g. 1,2,4,8")
    return values


_dilations.__name__ = "dilations"  # argparse names the type in some messages


def add_flags(p: argparse.ArgumentParser, defaults: dict | None = None) -> None:
    """The "recurrent structure" group of a training command's parser (``defaults``: the command's, for the help;
    every flag defaults to None in argparse, so "given" can be told from "default")."""
    d = {**DEFAULTS, **(defaults or {})}
    g = p.add_argument_group("recurrent structure (see rnnlab.variants for the equations)")
    g.add_argument("--dilations", type=_dilations, metavar="D1,D2,...", help="a dilated RNN (Chang et al. 2017): "
                   "layer l reads its own state from d_l steps back, h_t = cell(x_t, h_{t-d_l}); one dilation per "
                   "layer, e.g. 1,2,4,8 (it sets the number of layers; --layers, if given, must equal the count) "
                   "(default: plain stacking)")
    g.add_argument("--skip", action="store_true", default=None, help="a Skip RNN (Campos et al. 2018): a learned "
                   "binary gate per step decides whether the state is updated or copied; plain cells only "
                   "(default: off)")
    g.add_argument("--skip-budget", type=float_range(0.0, lo_open=False), metavar="λ", help="with --skip: add λ "
                   "times the number of state updates per sequence to the training loss, to learn to skip more "
                   f"(Campos et al. used 1e-5 to 1e-2) (default: {d['skip_budget']:g}, no budget)")


def model_options(o: dict, given: dict | None = None) -> dict:
    """The model's structure keywords (``dilations``, ``skip``, ``skip_budget``) from a run's resolved options —
    only those that differ from plain stacking — after checking that they fit the run's other options; a
    UsageError (one line: the rule, the value, the fix) when they do not. Call it for new and resumed runs alike.

    ``given``: the flags of the command line, when the command tells them from its defaults. With --dilations and
    no --layers given, ``o["layers"]`` becomes the number of dilations (a command's default --layers, e.g. the
    tagger's 2, does not conflict with them); without ``given`` --layers must be 1 or that number."""
    dilations, skip, budget = o.get("dilations"), bool(o.get("skip")), o.get("skip_budget") or 0.0
    if dilations is not None and given is not None and "layers" not in given:
        o["layers"] = len(dilations)
    cell, layers = o.get("cell", "lstm"), o.get("layers") or 1
    if budget and not skip:
        raise UsageError(f"--skip-budget {budget:g} weighs the Skip RNN's state updates; add --skip or drop "
                         "--skip-budget")
    if dilations is not None and skip:
        raise UsageError(f"--dilations {_text(dilations)} and --skip are two structures of the recurrent stack and do "
                         "not combine; choose one")
    if skip and cell not in PLAIN_CELLS:
        raise UsageError(f"--skip runs a Skip RNN over a plain cell ({', '.join(PLAIN_CELLS)}); got --cell {cell}. "
                         "Choose a plain --cell or drop --skip")
    if dilations is not None and layers not in (1, len(dilations)):
        raise UsageError(f"--dilations {_text(dilations)} gives {len(dilations)} layers (one dilation each), but "
                         f"--layers {layers}; drop --layers or give --layers {len(dilations)}")
    variant = dilations is not None or skip or cell not in PLAIN_CELLS
    if variant:
        what = f"--cell {cell}" if cell not in PLAIN_CELLS else ("--dilations" if dilations is not None else "--skip")
        given = [k for k in regularisation.FLAGS if o.get(k)]
        if given:
            raise UsageError(f"--{given[0].replace('_', '-')} is implemented by the plain stacked layers only, not "
                             f"with {what}; drop it, or use a plain --cell without --dilations and --skip")
        for flag in ("diagnose_every", "tensorboard"):
            if o.get(flag):
                raise UsageError(f"--{flag.replace('_', '-')} records the gradient flow of the plain rnnlab layers, "
                                 f"not with {what}; drop it for this model")
    out = {}
    if dilations is not None:
        out["dilations"] = list(dilations)
    if skip:
        out["skip"] = True
        if budget:
            out["skip_budget"] = float(budget)
    return out


def _text(dilations) -> str:
    return ",".join(str(d) for d in dilations)


def describe(config: dict) -> str:
    """The structure of a model's config for a command's "model:" line: '' for plain stacking."""
    if config.get("dilations"):
        return f", dilations {_text(config['dilations'])}"
    if config.get("skip"):
        return ", Skip RNN" + (f" (budget λ {config['skip_budget']:g})" if config.get("skip_budget") else "")
    return ""


class BudgetTask:
    """A trainer task whose training loss is the wrapped task's plus the Skip RNN budget loss λ Σ_t u_t of the
    model's SkipRNN layers (``rnnlab.variants.budget_loss``). Evaluation (the model in eval mode) reports the task's
    own loss, so validation losses stay comparable with a plain model's. Everything else is the wrapped task's."""

    def __init__(self, task, model) -> None:
        self.__dict__["_task"] = task
        self.__dict__["_model"] = model  # the unwrapped model: its SkipRNN layers hold the last call's gates

    def step(self, batch, state):
        loss, n, state = self._task.step(batch, state)
        extra = budget_loss(self._model) if self._model.training else None
        return (loss if extra is None else loss + extra), n, state

    def __getattr__(self, name):  # init_state, detach_state, metrics, batch_dim, model, logits: the wrapped task's
        return getattr(self.__dict__["_task"], name)

    def __setattr__(self, name, value) -> None:  # the trainer points task.model at a DDP wrapper: the wrapped task's
        setattr(self._task, name, value)


def budget_task(task, model):
    """``task`` itself when ``model`` has no Skip RNN with a budget, else ``BudgetTask(task, model)``."""
    if any(isinstance(m, SkipRNN) and m.budget > 0 for m in model.modules()):
        return BudgetTask(task, model)
    return task

