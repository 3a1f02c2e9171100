"""The recurrent-regularisation flags shared by the training commands
(``rnnlab train lm|classify|tag|regress|seq2seq``):
``--weight-drop``, ``--input-dropout``, ``--locked-dropout``, ``--output-dropout``, ``--recurrent-dropout`` and
``--zoneout``, which become the model's ``rnn_options`` (the layer keywords of ``rnnlab.layers``, where the
equations and citations are). A command adds them with ``add_flags``, lists ``FLAGS`` among its flags, merges
``DEFAULTS`` into its own and builds the model with ``rnn_options(o)``.
"""
from __future__ import annotations

import argparse

from .options import UsageError

# Every default 0, the plain layer: regularisation is a choice for data that overfits, and these interact with
# --dropout. AWD-LSTM's values (Merity et al. 2017; salesforce/awd-lstm-lm, PTB command of its README) are in each
# flag's help.
DEFAULTS = {
    "weight_drop": 0.0,  # AWD-LSTM wdrop: 0.5
    "input_dropout": 0.0,  # AWD-LSTM dropouti: 0.4 for PTB (0.65 its code's default)
    "locked_dropout": 0.0,  # AWD-LSTM dropouth: 0.25 for PTB (0.3 its code's default, 0.2 for WikiText-2)
    "output_dropout": 0.0,  # AWD-LSTM dropout: 0.4
    "recurrent_dropout": 0.0,  # AWD-LSTM drops the recurrent path through --weight-drop instead
    "zoneout": 0.0,
}
FLAGS = tuple(DEFAULTS)


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"got {text!r}; must be a number >= 0 and < 1") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"got {text}; must be a number >= 0 and < 1")
    return value


def _zoneout(text: str):
    """P (h, and c for an LSTM) or P_H,P_C (an LSTM's h and c)."""
    parts = text.split(",")
    if len(parts) > 2:
        raise argparse.ArgumentTypeError(f"got {text!r}; must be P or P_H,P_C with numbers >= 0 and < 1")
    values = [_probability(p.strip()) for p in parts]
    return values[0] if len(values) == 1 or values[0] == values[1] else values


_probability.__name__ = _zoneout.__name__ = "number"  # argparse names the type in some messages


def add_flags(p: argparse.ArgumentParser, defaults: dict, *, cell_flag: str = "--cell") -> None:
    """The "regularisation" group of a training command's parser."""
    def d(name: str) -> str:
        return f" (default: {defaults[name]:g}, off)"

    g = p.add_argument_group("recurrent regularisation (random masks in training, expectations in evaluation; see "
                             "rnnlab.layers for the equations)")
    g.add_argument("--weight-drop", type=_probability, metavar="P", help="DropConnect on the recurrent weights W_hh "
                   "(AWD-LSTM's weight drop; its value: 0.5): one mask per batch" + d("weight_drop"))
    g.add_argument("--input-dropout", type=_probability, metavar="P", help="variational (locked) dropout on the "
                   "first recurrent layer's input: one mask per sequence and feature, the same at every step "
                   "(AWD-LSTM's dropouti: 0.4 on PTB)" + d("input_dropout"))
    g.add_argument("--locked-dropout", type=_probability, metavar="P", help="variational (locked) dropout between "
                   "stacked layers (AWD-LSTM's dropouth: 0.25 on PTB); not with --dropout, which also drops there"
                   + d("locked_dropout"))
    g.add_argument("--output-dropout", type=_probability, metavar="P", help="variational (locked) dropout on the "
                   "last recurrent layer's output (AWD-LSTM's dropout: 0.4)" + d("output_dropout"))
    g.add_argument("--recurrent-dropout", type=_probability, metavar="P", help="variational dropout on the "
                   "recurrent state h_{t-1} on its way into W_hh, one mask per sequence (Gal & Ghahramani 2016)"
                   + d("recurrent_dropout"))
    g.add_argument("--zoneout", type=_zoneout, metavar="P[,P_C]", help="zoneout (Krueger et al. 2016): each unit "
                   "keeps its previous value with probability P at each step; for an LSTM, P_C for the cell state "
                   f"(P alone: both); GRU and RNN cells (see {cell_flag}) take one P" + d("zoneout"))


def rnn_options(o: dict) -> dict:
    """The model's ``rnn_options`` from a run's resolved options (only the options that are on)."""
    options = {k: o[k] for k in FLAGS if o.get(k)}
    if isinstance(options.get("zoneout"), list) and o.get("cell", "lstm") != "lstm":
        raise UsageError(f"--zoneout {','.join(f'{v:g}' for v in options['zoneout'])}: two values are an LSTM's h and "
                         f"c, and --cell {o['cell']} has no cell state; give one value")
    if options.get("locked_dropout") and o.get("dropout") and o.get("layers", 1) > 1:
        raise UsageError(f"--dropout {o['dropout']:g} and --locked-dropout {options['locked_dropout']:g} both drop "
                         "between the stacked layers; use one of them")
    return options
