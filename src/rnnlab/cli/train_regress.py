"""``rnnlab train regress``: forecast a numeric series from a CSV file (stock prices, physiological signals, sensor
readings): windows of --window past rows of the feature columns → the next --horizon values of the --target
column(s), once per window or at every step (--per-step); a recurrent model trained on the oldest rows, with
per-epoch summaries, ``last/`` and ``best/`` checkpoints in ``--out`` and metrics in ``OUT/metrics.jsonl``; at the
end, the validation and test MSE and MAE in the target's own units next to the naive last-value forecast's.
``--resume DIR`` continues a stopped run exactly where it stopped.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ..data.series import LastValue, Normalizer, SeriesDataset, read_series, sha256_file
from ..data.text import DataError
from ..models.classifier import SequenceClassifier, SequenceTagger, build
from ..train.metrics import MetricsLog
from ..train.supervised import RegressionTask, evaluate_regression
from ..variants import ALL_CELLS
from .common import FINISHED, add_kind_parser, add_output_group, add_training_group, default_text, engine_name, \
    fit_with_stop_handler, flag_name, given_flags, load_best_weights, make_trainer, out_dir, refuse_existing_run, \
    resume_run, torch_device, train_line, train_options
from . import regularisation
from . import structure
from .options import UsageError, float_range, int_range, resume_error

# Every default next to its reason. Flags default to None in argparse so that "given" can be told from "default".
DEFAULTS = {
    "header": "auto",  # a first row with no number in it is a header
    "time_column": None,  # auto: a first column named date/time/... or holding dates
    "window": 50,  # past steps per prediction: a few cycles of a daily/hourly pattern; longer = slower
    "horizon": 1,  # one step ahead, the usual forecast
    "valid_fraction": 0.1,  # the last 20% of the rows, in time order: 10% validation, then 10% test
    "test_fraction": 0.1,
    "batch_size": 32,  # windows per update: many updates per epoch on series of a few thousand rows
    "eval_batch_size": 256,  # no backward pass when evaluating: large batches cost little memory
    "cell": "lstm",  # gated: keeps a level or a trend over the whole window
    "hidden": 64,  # a handful of numeric inputs need far fewer units than a vocabulary
    "layers": 1,
    "dropout": 0.0,  # small models on short series; 0.1-0.3 with --layers 2+ on long noisy ones
    "epochs": 20,  # each epoch reads every training window once
    "optimizer": "adam",
    "lr": 1e-3,  # Adam's default: stable on normalised targets
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
             "device", "resume"}
_FLAGS = ("train", "target", "features", "time_column", "header", "window", "horizon", "per_step", "valid_fraction",
          "test_fraction", "batch_size", "eval_batch_size", "cell", "hidden", "layers", "dropout", "epochs",
          "optimizer", "lr", "weight_decay", "clip_norm", "patience", "seed", "max_minutes", "max_steps", "device",
          "threads", "out", "resume", "log_every", "checkpoint_every", "quiet", *regularisation.FLAGS,
          *structure.FLAGS)

EPILOG = """\
examples:
  rnnlab train regress --train prices.csv --target close --window 30 --out runs/close
                                                   next-day close from the last 30 rows of every numeric column
                                                   (a 'date' column is skipped); test MSE/MAE vs the last value
  rnnlab train regress --train prices.csv --target close --features close,volume --horizon 5
                                                   the next 5 closes at once from close and volume
  rnnlab train regress --train ecg.csv --target 2 --header no --window 200 --per-step --hidden 32
                                                   a headerless signal: the next value of column 2 at every step
  rnnlab train regress --train hr.csv --target heart_rate --features spo2,resp --patience 3
                                                   heart rate from two other signals; stop after 3 epochs
                                                   without a better validation loss
  rnnlab train regress --resume runs/close --epochs 40
                                                   continue a stopped run (same epoch, batch and RNG)

  Try it on a generated noisy sine wave:
  python -c "import math, random; random.seed(0); print('t,value'); [print(f'{i},{math.sin(i / 5) + \\
      random.gauss(0, 0.2):.4f}') for i in range(2000)]" > sine.csv
  rnnlab train regress --train sine.csv --target value --features value --window 30 --hidden 32 --epochs 5
"""


def add_train_parser(sub, parents) -> argparse.ArgumentParser:
    helptext = "forecast a numeric series from a CSV: past windows → the next value(s) of a target column"
    return add_kind_parser(sub, "regress", parents, helptext=helptext, doc=__doc__, epilog=EPILOG,
                           add_options=_add_options, run=run)


def _d(name: str) -> str:
    return default_text(DEFAULTS, name)


def _add_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--train", metavar="FILE", help="the series: a CSV with one row per time step, oldest first; "
                   "split in time order into train, validation and test parts")
    g.add_argument("--target", metavar="COLS", help="the column(s) to predict: header names or numbers from 1, "
                   "comma-separated (required)")
    g.add_argument("--features", metavar="COLS", help="the input columns, comma-separated (default: every column "
                   "but the time column, the target included)")
    g.add_argument("--time-column", metavar="COL", help="a date/time column, not a feature (default: the first "
                   "column when it is named date, time, timestamp ... or holds dates or times)")
    g.add_argument("--header", choices=("auto", "yes", "no"), help="whether the first row names the columns; auto: "
                   "when none of its cells is a number" + _d("header"))
    g.add_argument("--window", type=int_range(1, 1_000_000), metavar="W", help="past rows each prediction reads"
                   + _d("window"))
    g.add_argument("--horizon", type=int_range(1, 100_000), metavar="H", help="predict the next H values of each "
                   "target" + _d("horizon"))
    g.add_argument("--per-step", action="store_true", default=None, help="many-to-many: predict the next value(s) "
                   "at every step of the window, not only at its end")
    g.add_argument("--valid-fraction", type=float_range(0.0, 0.8, lo_open=False), metavar="F",
                   help="share of the rows, before the test part, for validation (best/, --patience); 0 = none"
                   + _d("valid_fraction"))
    g.add_argument("--test-fraction", type=float_range(0.0, 0.8, lo_open=False), metavar="F",
                   help="share of the newest rows for the final test; 0 = none" + _d("test_fraction"))
    g.add_argument("--batch-size", type=int_range(1, 100_000), metavar="B", help="windows per update"
                   + _d("batch_size"))
    g.add_argument("--eval-batch-size", type=int_range(1, 100_000), metavar="B", help="windows per batch when "
                   "evaluating" + _d("eval_batch_size"))

    g = p.add_argument_group("model")
    g.add_argument("--cell", choices=ALL_CELLS, help=structure.CELL_HELP + _d("cell"))
    g.add_argument("--hidden", type=int_range(1, 65536), metavar="H", help="hidden units" + _d("hidden"))
    g.add_argument("--layers", type=int_range(1, 64), metavar="L", help="stacked layers" + _d("layers"))
    g.add_argument("--dropout", type=float_range(0.0, 0.99, lo_open=False), metavar="P",
                   help="dropout between layers and before the output" + _d("dropout"))

    regularisation.add_flags(p, DEFAULTS)
    structure.add_flags(p, DEFAULTS)
    add_training_group(p, DEFAULTS, epochs_help="passes over the training windows",
                       patience_help="stop after N epochs without a better validation loss (needs a "
                       "--valid-fraction above 0)",
                       seed_help="random seed of the weights and the window order; the same seed repeats a run "
                       "exactly")
    add_output_group(p, DEFAULTS, default_out="runs/regress-<target>-<time>")


# -- resolving options ---------------------------------------------------------------------------------------------
def _columns(text: str | None, flag: str) -> list[str] | None:
    if text is None:
        return None
    cols = [c.strip() for c in text.split(",")]
    if not all(cols):
        raise UsageError(f"{flag_name(flag)} {text!r}: an empty column name; give names or numbers from 1 separated by "
                         "commas, e.g. close,volume")
    return cols


def _resolve(given: dict) -> dict:
    o = {**DEFAULTS, "train": None, "target": None, "features": None, "per_step": False, "quiet": False,
         "out": None, **given}
    o["kind"] = "regress"
    if not o["train"]:
        raise UsageError("--train FILE is required (or --resume DIR); e.g. 'rnnlab train regress --train "
                         "series.csv --target value'")
    if not o["target"]:
        raise UsageError("--target COLS is required: the column(s) to predict, by header name or number from 1; "
                         f"e.g. 'rnnlab train regress --train {Path(o['train']).name} --target 2'")
    if o["patience"] and not o["valid_fraction"]:
        raise UsageError(f"--patience {o['patience']} watches the validation loss; give a --valid-fraction above 0 "
                         "or drop --patience")
    if o["valid_fraction"] + o["test_fraction"] >= 0.9:
        raise UsageError(f"--valid-fraction {o['valid_fraction']:g} + --test-fraction {o['test_fraction']:g} leave "
                         "less than 10% of the rows to train on; lower them")
    return o


def _model(o: dict, data: SeriesDataset, variant: dict):
    kw = {"input_size": data.input_size, "cell": o["cell"], "hidden": o["hidden"], "layers": o["layers"],
          "dropout": o["dropout"], "task": "regress", "rnn_options": regularisation.rnn_options(o) or None, **variant}
    if data.per_step:
        return SequenceTagger(data.n_outputs, **kw)
    return SequenceClassifier(data.n_outputs, pooling="last", **kw)


def _dataset(o: dict, checkpoint) -> SeriesDataset:
    header = {"auto": None, "yes": True, "no": False}[o["header"]]
    try:
        table = read_series(o["train"], header=header, time_column=o["time_column"])
    except DataError as exc:
        raise UsageError(f"--train {exc}") from None
    normalizer = None
    if checkpoint is not None:
        try:
            normalizer = Normalizer.from_json(checkpoint.meta["series"]["normalizer"])
        except (KeyError, TypeError, ValueError) as exc:
            raise resume_error(checkpoint, f"checkpoint.json has no readable series normalizer ({exc!r})") from None
    try:
        return SeriesDataset(table, _columns(o["target"], "target"), _columns(o["features"], "features"),
                             window=o["window"], horizon=o["horizon"], per_step=o["per_step"],
                             valid_fraction=o["valid_fraction"], test_fraction=o["test_fraction"],
                             normalizer=normalizer)
    except ValueError as exc:  # DataError is a ValueError
        raise UsageError(str(exc)) from None


def _out_dir(o: dict) -> Path:
    target = "".join(c if c.isalnum() or c in "-_" else "_" for c in o["target"])[:40]
    return out_dir(o["out"], f"regress-{target}")


def _eval_stride(data: SeriesDataset) -> int:
    # Per step, consecutive windows would predict each row W times over; non-overlapping windows predict it once.
    return data.window if data.per_step else 1


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def evaluate_forecast(model, data: SeriesDataset, split: str, batch_size: int, device) -> dict:
    """MSE and MAE of ``model`` on ``split`` in the target's original units (``evaluate_regression`` on the
    de-normalised model), next to the last-value forecast's (``baseline_mse``, ``baseline_mae``)."""
    stride = _eval_stride(data)
    m = evaluate_regression(data.denormalized(model), data.windows(split, batch_size, units="original",
                                                                    stride=stride), device=device)
    b = evaluate_regression(LastValue(data.horizon, data.per_step), data.baseline_windows(split, batch_size, stride),
                            device="cpu")
    return {**m, "baseline_mse": b["mse"], "baseline_mae": b["mae"], "beats_baseline": m["mse"] < b["mse"]}


def _report(split: str, weights: str, m: dict, data: SeriesDataset) -> str:
    h = data.horizon
    naive = "x[t+1] = x[t]" if h == 1 else f"x[t+1..t+{h}] = x[t]"
    target = ", ".join(data.target_names)
    verdict = (f"the model beats the last-value baseline (MSE {100 * (1 - m['mse'] / m['baseline_mse']):.1f}% lower)"
               if m["beats_baseline"] else "the model does NOT beat the last-value baseline")
    windows = _plural(m["n"], "window") + (f" of {data.window} steps" if data.per_step else "")
    return (f"{split} ({weights} weights): {windows}, {target} in its own units: MSE "
            f"{m['mse']:.6g}  MAE {m['mae']:.6g} | last value ({naive}): MSE {m['baseline_mse']:.6g}  MAE "
            f"{m['baseline_mae']:.6g} -> {verdict}")


# -- the run -------------------------------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> int:
    given = given_flags(args, _FLAGS)
    o, checkpoint = resume_run(given, "regress", RESUMABLE) if "resume" in given else (_resolve(given), None)
    variant = structure.model_options(o, given)
    out = _out_dir(o)
    refuse_existing_run(out, checkpoint)
    device = torch_device(o["device"], o["threads"])

    data = _dataset(o, checkpoint)
    sources = {"train": {"name": o["train"], "sha256": sha256_file(o["train"]), "rows": data.n_rows}}
    want = (checkpoint.meta.get("sources", {}).get("train") or {}).get("sha256") if checkpoint else None
    if want is not None and want != sources["train"]["sha256"]:
        raise UsageError(f"{o['train']}: the file changed since the checkpoint was written; resuming needs the same "
                         "data")
    stride = _eval_stride(data)
    train = data.windows("train", o["batch_size"], shuffle=True, seed=o["seed"])
    valid = data.windows("valid", o["eval_batch_size"], stride=stride) if o["valid_fraction"] else None

    torch.manual_seed(o["seed"])  # the initial weights
    try:
        model = build(checkpoint.meta.get("model")) if checkpoint else _model(o, data, variant)
        options = train_options(o)
    except ValueError as exc:
        raise resume_error(checkpoint, exc) if checkpoint else UsageError(str(exc)) from None
    model.to(device)
    task = structure.budget_task(RegressionTask(model, device=device), model)
    meta = {"task": "series", "run": o, "sources": sources, "series": data.to_json()}
    trainer = make_trainer(model, task, train, valid, options, out, meta, checkpoint)

    time_col = f"; time column {data.time_column!r} (not a feature)" if data.time_column else ""
    ahead = f"the next {data.horizon} values" if data.horizon > 1 else "the next value"
    print(f"data: {o['train']}: {_plural(data.n_rows, 'row')}; features {', '.join(data.feature_names)}; target "
          f"{', '.join(data.target_names)}{time_col}; {data.window} rows → {ahead}"
          + (" at every step" if data.per_step else "") + f"; {data.describe()}; normalised with the train rows' "
          "mean and std", flush=True)
    engine = engine_name(device)
    c = model.config
    n_params = sum(p.numel() for p in model.parameters())
    shape = "a value at every step" if data.per_step else "last state → values"
    print(f"model: {c['layers']} x rnnlab {c['cell'].upper().replace('RNN_', 'RNN-')}({c['hidden']})"
          f"{structure.describe(c)}, {shape} "
          f"({_plural(c['n_outputs'], 'output')}{' per step' if data.per_step else ''})"
          + (f", dropout {c['dropout']:g}" if c["dropout"] else "")
          + f"; {n_params:,} parameters; batches of {o['batch_size']} windows; engine {engine}; the loss is the MSE "
          "in normalised units", flush=True)
    print(train_line(options, trainer, out, checkpoint), flush=True)

    summary = fit_with_stop_handler(trainer)
    if summary["stopped"] not in FINISHED:
        return 0  # stopped early (max-steps, max-minutes, Ctrl-C): resume it; evaluate at the real end
    best_dir = load_best_weights(out, model)
    log = MetricsLog(out / "metrics.jsonl")
    for split, fraction in (("valid", o["valid_fraction"]), ("test", o["test_fraction"])):
        if not fraction:
            continue
        m = evaluate_forecast(model, data, split, o["eval_batch_size"], device)
        print(_report(split, best_dir.name, m, data))
        log.write({"kind": split, "step": summary["steps"], "weights": best_dir.name, **m})
    return 0
