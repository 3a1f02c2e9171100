"""``rnnlab diagnose``: see how the gradient flows back through time — does it vanish, explode, or reach far back? —
in a trained run of 'rnnlab task' (or of any command trained with --diagnose-every) or in a fresh model on a
built-in task, and write the figures and one HTML report.

It measures on one batch: ||dL/dh_t|| at every step (the probe), its decay with the distance k from the last step
and the effective memory horizon, the exact Jacobian product ||ds_T/ds_(T-k)||, the spectral norm and radius of
W_hh, the saturated gate fractions and the global gradient norm; then it names the verdict (vanishing, exploding,
healthy) with the numbers and the remedies that fit (clipping threshold, gated cells, IRNN, truncation). --compare
trains a tanh RNN, an LSTM and an IRNN with the same budget and sets their loss and gradient-decay curves side by
side.

RUN_DIR may also be any run trained with --diagnose-every N (every 'rnnlab train ...' command and 'rnnlab task'):
the diagnostics records of its metrics.jsonl become a heatmap of log10 ||dL/dh_t|| over training steps x time
steps per layer and curves of the pre-clip gradient norm, the clip fraction, W_hh's spectral norm and radius and the
gate saturation over training. For a language model ('rnnlab train lm'), --text colours each token of a text by
chosen units' h (or c, or a gate), Karpathy et al. (2015) style, and saves every per-token state to an .npz.

Writes to --out: decay.png (gradient and Jacobian-product decay against k), saturation.png (gate histograms),
loss.png and history*.png (training loss; a heatmap of log ||dL/dh_t|| over training steps x time steps) when it
trained, training.png and history*.png from a run's diagnostics records, states.npz with --text,
diagnostics.json (every number) and report.html (everything, self-contained). The verdict goes to stdout.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import torch

from ..data.synthetic import Adding
from ..data.text import DataError, read_text
from ..diagnose.during import read_records
from ..diagnose.hidden import DEFAULT_UNITS
from ..engine.probe import probe
from ..models.classifier import INITS
from ..train.checkpoint import CheckpointError, load_checkpoint
from ..train.compat import describe
from ..train.lm import load_lm
from ..train.supervised import load_sequence_model
from ..train import distributed
from ..train.trainer import Trainer
from ..variants import PLAIN_CELLS as CELLS  # the gradient-flow measurements read the plain layers only
from . import structure
from . import task as task_cmd
from .common import engine_name, out_dir, refuse_existing_run, run_dir, torch_device, train_options
from .options import UsageError, float_range, int_range

TASKS = task_cmd.SYNTHETIC  # generated on the fly: nothing to download
# --compare: the three classic answers to the adding problem (Le et al. 2015 compare exactly these). The LSTM gets
# the chrono init (forget-gate time constants up to T, Tallec & Ollivier 2018): with torch's default init its forget
# gates start near 0.5 and its gradient vanishes almost as fast as the tanh RNN's until it learns to remember, which
# takes more updates than the comparison's budget — the LSTM's remedy only shows once the gates are open.
COMPARE = (("tanh RNN", "rnn_tanh", "default"), ("LSTM", "lstm", "chrono"), ("IRNN", "rnn_relu", "identity"))
DEFAULTS = {
    "task": "adding",
    "cell": "lstm",  # as 'rnnlab task'
    "init": "default",
    "steps": 0,  # a single model: measured untrained unless --steps says otherwise
    "compare_steps": 1000,  # --compare: about 2 minutes for the three models at T = 100 on one busy CPU thread
    "batch_size": 64,  # the measured batch and the training batch
    "horizon_fraction": 1e-3,  # the gradient counts as gone at a thousandth of its value at the last step
    "jacobian_sequences": 8,  # exact Jacobian products of 8 sequences: a median with a spread, in seconds
}

EPILOG = """\
examples:
  rnnlab diagnose --task adding --cell rnn_tanh --length 100 --out /tmp/diag
                                      an untrained tanh RNN on the adding problem: vanishing within ~15 steps
  rnnlab diagnose --task adding --cell rnn_relu --init identity --steps 200
                                      an IRNN trained for 200 updates first, with a heatmap over training
  rnnlab diagnose runs/task-adding    a run of 'rnnlab task' (its best/ or last/ weights), on a batch of its
                                      own task regenerated from the run's options; its metrics.jsonl gives the
                                      loss curve and the pre-clip gradient norms for the clipping threshold
  rnnlab diagnose --compare --length 100 --steps 1500 --threads 1 --out /tmp/diag
                                      tanh RNN vs LSTM vs IRNN on the adding problem, same budget, one report
  rnnlab diagnose --task parity --length 50 --cell gru
                                      parity strings of exactly 50 symbols (copy: --length sets the delay)
  rnnlab train lm --train input.txt --diagnose-every 100 --out runs/lm && rnnlab diagnose runs/lm
                                      the gradient through time, clipping, W_hh spectra and gate saturation
                                      over the training of a run, from its metrics.jsonl
  rnnlab diagnose runs/lm --text input.txt --units 5,17 --npz states.npz
                                      colour a text by units 5 and 17 of the LM's last layer; every state to .npz
  rnnlab diagnose runs/lm --text "def f(x):" --show c --layer 0
                                      the 4 most variable units' cell state c in layer 0 over a literal text
"""


def add_parser(subparsers, parents) -> argparse.ArgumentParser:
    p = subparsers.add_parser("diagnose", parents=parents, help="see how the gradient flows back through time: "
                              "vanishing, exploding or healthy, with figures and an HTML report",
                              description=__doc__.split("\n\n")[0].replace("``", "'"), epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", nargs="?", metavar="RUN_DIR", help="a run directory (or its best/ or last/) of "
                   "'rnnlab task', of any run trained with --diagnose-every, or of 'rnnlab train lm' with --text; "
                   "without it, a fresh model on --task")
    g = p.add_argument_group("a fresh model (no RUN_DIR)")
    g.add_argument("--task", choices=TASKS, default=None, help=f"the built-in task (default: {DEFAULTS['task']})")
    g.add_argument("--cell", choices=CELLS, default=None, help=f"recurrent cell (default: {DEFAULTS['cell']})")
    g.add_argument("--init", choices=INITS, default=None, help="recurrent weights: torch.nn's default, orthogonal "
                   "(Saxe et al.), identity (IRNN, Le et al.; needs --cell rnn_relu or rnn_tanh), or chrono (LSTM "
                   "forget/input-gate biases spread over the task's length, Tallec & Ollivier 2018; needs --cell lstm) "
                   f"(default: {DEFAULTS['init']})")
    g.add_argument("--length", type=int_range(2, 100_000), default=None, metavar="T", help="sequence length "
                   "(adding: T, default 100; parity: strings of exactly T symbols; copy: T = 2 x symbols + delay + 1)")
    g.add_argument("--lengths", type=_lengths, default=None, metavar="T1,T2", help="--compare on the adding task: "
                   "train and measure the three models at each of these lengths (e.g. 100,200), side by side in one "
                   "report")
    g.add_argument("--hidden", type=int_range(1, 65536), default=None, metavar="H", help="hidden units (default: "
                   "the task's, 128)")
    g.add_argument("--layers", type=int_range(1, 64), default=None, metavar="L", help="stacked layers (default: 1)")
    g.add_argument("--steps", type=int_range(0, 10_000_000), default=None, metavar="N", help="train N updates "
                   f"before measuring (default: {DEFAULTS['steps']}, untrained; with --compare "
                   f"{DEFAULTS['compare_steps']})")
    g.add_argument("--lr", type=float_range(0.0, 1000.0), default=None, metavar="LR", help="learning rate (default: "
                   "the task's)")
    g.add_argument("--clip-norm", type=float_range(0.0), default=None, metavar="C", help="training: clip the global "
                   "gradient norm at C (default: the task's, 1)")
    g.add_argument("--seed", type=int_range(0), default=None, metavar="S", help="seed of the weights and the data "
                   "(default: 0)")
    g.add_argument("--compare", action="store_true", help="train a tanh RNN, an LSTM and an IRNN with the same "
                   "budget and compare their loss and gradient-decay curves in one report")
    g = p.add_argument_group("measurement")
    g.add_argument("--batch-size", type=int_range(1, 100_000), default=DEFAULTS["batch_size"], metavar="B",
                   help="sequences in the measured batch (and the training batch) (default: %(default)s)")
    g.add_argument("--horizon-fraction", type=float_range(0.0, 0.999), default=DEFAULTS["horizon_fraction"],
                   metavar="F", help="the memory horizon is the first k at which ||dL/dh_(T-k)|| / ||dL/dh_T|| < F "
                   "(default: %(default)g)")
    g.add_argument("--jacobian-sequences", type=int_range(1, 4096), default=DEFAULTS["jacobian_sequences"],
                   metavar="N", help="sequences whose exact Jacobian products are computed (default: %(default)s)")
    g.add_argument("--history-every", type=int_range(1), default=None, metavar="N", help="while training, record "
                   "||dL/dh_t|| every N updates for the heatmap (default: about 60 records)")
    g = p.add_argument_group("hidden states over a text (RUN_DIR of 'rnnlab train lm')")
    g.add_argument("--text", metavar="FILE_OR_TEXT", default=None, help="a text file (when the path exists), else "
                   "the text itself: run the LM over it and colour each token by the chosen units")
    g.add_argument("--units", type=_units, default=None, metavar="U,U,...", help="units to show, e.g. 5,17 "
                   f"(default: the {DEFAULT_UNITS} with the largest variance over the text)")
    g.add_argument("--show", default="h", metavar="WHAT", help="the value that colours the tokens: h; LSTM also "
                   "c (as tanh(c)), i, f, g, o; GRU r, z, n (default: %(default)s)")
    g.add_argument("--layer", type=int_range(0), default=None, metavar="L", help="the layer (default: the last)")
    g.add_argument("--npz", metavar="FILE", default=None, help="where the per-token states go (default: "
                   "OUT/states.npz): tokens, ids, h_l0 (T, H), c_l0, gate_i_l0, ... per layer")
    g = p.add_argument_group("output")
    g.add_argument("--out", metavar="DIR", default=None, help="where the PNGs, diagnostics.json and report.html go "
                   "(default: runs/diagnose-<time>)")
    g.add_argument("--device", default="cpu", metavar="DEV", help="torch device (default: cpu)")
    g.add_argument("--threads", type=int_range(1, 1024), default=None, metavar="N",
                   help="torch CPU threads (default: torch's)")
    p.set_defaults(run=run)
    return p


def _units(text: str) -> list[int]:
    """--units: comma-separated unit indices >= 0."""
    try:
        units = [int(u) for u in text.split(",") if u.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"got {text!r}; must be unit numbers separated by commas, e.g. 5,17") \
            from None
    if not units or min(units) < 0:
        raise argparse.ArgumentTypeError(f"got {text!r}; must be unit numbers >= 0 separated by commas, e.g. 5,17")
    return units


_units.__name__ = "unit list"


# -- the model flags -----------------------------------------------------------------------------------------------
MODEL_FLAGS = ("task", "cell", "init", "length", "lengths", "hidden", "layers", "steps", "lr", "clip_norm", "seed")
TEXT_FLAGS = ("units", "layer", "npz")  # (and --show, which has a default) only with --text


def _lengths(text: str) -> list[int]:
    """--lengths: comma-separated sequence lengths, each 2..100000, no repeats."""
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 100,200; got {text!r}") from None
    if not values or any(not 2 <= v <= 100_000 for v in values) or len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"expected distinct lengths from 2 to 100000, e.g. 100,200; got {text!r}")
    return values


def _check(args) -> None:
    given = [k for k in MODEL_FLAGS if getattr(args, k) is not None]
    if args.text is None:
        extra = [k for k in TEXT_FLAGS if getattr(args, k) is not None] + (["show"] if args.show != "h" else [])
        if extra:
            raise UsageError(f"--{extra[0]} chooses what --text shows; add --text FILE_OR_TEXT (with a RUN_DIR of "
                             "'rnnlab train lm') or drop it")
    elif args.run_dir is None:
        raise UsageError("--text runs a trained language model over a text; give its RUN_DIR (a run of 'rnnlab "
                         "train lm'), e.g. 'rnnlab diagnose runs/lm --text input.txt'")
    if args.run_dir is not None:
        if args.compare:
            raise UsageError("--compare trains its own three models; drop RUN_DIR or --compare")
        if given:
            raise UsageError(f"RUN_DIR is diagnosed with its own options; drop --{given[0].replace('_', '-')} (it "
                             "applies to a fresh model, without RUN_DIR)")
    if args.lengths is not None:
        if not args.compare:
            raise UsageError("--lengths compares the three models at several lengths; add --compare, or give one "
                             "--length")
        if args.length is not None:
            raise UsageError("give the lengths once: --lengths T1,T2,... or --length T, not both")
        if (args.task or DEFAULTS["task"]) != "adding":
            raise UsageError(f"--lengths applies to the adding task (its sequence length); got --task {args.task}. "
                             "Use --length with the other tasks")
    if args.compare and (args.cell is not None or args.init is not None):
        raise UsageError("--compare trains a tanh RNN, an LSTM and an IRNN; drop --"
                         + ("cell" if args.cell is not None else "init"))


def _task_namespace(args, cell: str, init: str, steps: int, out: Path | None) -> argparse.Namespace:
    """The options 'rnnlab task TASK' would have with these flags: task.py's own defaults, overridden."""
    name = args.task or DEFAULTS["task"]
    ns = argparse.Namespace(**task_cmd._defaults(name))
    ns.task, ns.cell, ns.init = name, cell, init
    for k in ("hidden", "layers", "lr", "clip_norm", "seed"):
        if getattr(args, k) is not None:
            setattr(ns, k, getattr(args, k))
    ns.batch_size = args.batch_size
    if args.length is not None:
        if name == "adding":
            ns.length = args.length
        elif name == "parity":
            ns.min_len = ns.max_len = args.length
        else:  # copy: T = 2K + delay + 1
            delay = args.length - 2 * ns.symbols - 1
            if delay < 0:
                raise UsageError(f"--length {args.length} is too short for the copy task's {ns.symbols} symbols: "
                                 f"T = 2 x {ns.symbols} + delay + 1 needs T >= {2 * ns.symbols + 1}")
            ns.delay = delay
    ns.max_steps = steps if steps > 0 else None
    ns.epochs = max(1, math.ceil(steps / ns.batches))
    ns.log_every = max(1, steps // 100) if steps > 0 else ns.log_every
    ns.quiet = True
    ns.device = args.device
    ns.threads = args.threads
    ns.out = str(out) if out is not None else None
    task_cmd._check(ns)
    return ns


def _setup(ns):
    torch.manual_seed(ns.seed)  # the initial weights, as 'rnnlab task'
    try:
        return task_cmd._setup(ns)
    except (ValueError, OSError) as exc:
        raise UsageError(" ".join(str(exc).split())) from None


def _first_batch(data, n: int):
    """The first batch of ``data`` (epoch 0), cut to at most ``n`` sequences."""
    batch = next(iter(data.batches(0)))
    cut = [t[:n] for t in batch]
    return type(batch)(*cut) if hasattr(batch, "_fields") else tuple(cut)


# -- recording the gradient through time while training ------------------------------------------------------------
class _Recorder:
    """A trainer task around another: every ``every``-th training batch runs under a probe, so the backward pass
    that the trainer then runs leaves ||dL/dh_t|| of that batch behind; ``history`` maps each layer's probe key to
    [(updates before that batch, norms (T,)), ...]. The trainer itself is unchanged."""

    def __init__(self, task, model, every: int) -> None:
        self.task, self.model, self.every = task, model, every
        self.history: dict = {}
        self._pending = None
        self._step = 0

    def _collect(self) -> None:
        if self._pending is not None:
            step, p = self._pending
            for key, norms in p.grad_norms.items():
                self.history.setdefault(key, []).append((step, norms.detach().cpu()))
            self._pending = None

    def step(self, batch, state):
        self._collect()
        if not self.model.training:  # evaluation: not a training step
            return self.task.step(batch, state)
        record = self._step % self.every == 0
        self._step += 1
        if not record:
            return self.task.step(batch, state)
        with probe(self.model) as p:
            out = self.task.step(batch, state)
        self._pending = (self._step - 1, p)
        return out

    def metrics(self, loss: float) -> dict:
        return self.task.metrics(loss)

    def __getattr__(self, name):  # init_state / detach_state: the wrapped task's, when it has them
        if name in ("init_state", "detach_state"):
            return getattr(self.task, name)
        raise AttributeError(name)

    def finish(self) -> dict:
        self._collect()
        return self.history


def _read_metrics(path: Path) -> tuple[list, list, list]:
    """(steps, losses, pre-clip grad norms) of the 'train' records of a metrics.jsonl (empty when absent)."""
    steps, losses, norms = [], [], []
    if not path.exists():
        return steps, losses, norms
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if rec.get("kind") == "train" and rec.get("loss") is not None:
            steps.append(rec["step"])
            losses.append(rec["loss"])
            norms.append(rec.get("grad_norm"))
    return steps, losses, norms


def _train(ns, model, train, task, run_out: Path, history_every: int | None, label: str) -> tuple:
    """Train ``model`` for ns.max_steps updates with the project's Trainer, recording the gradient profile;
    (history, (steps, losses), grad norms)."""
    steps = ns.max_steps
    every = history_every or max(1, steps // 60)
    recorder = _Recorder(task, model, every)
    refuse_existing_run(run_out, None)
    options = train_options(ns)
    meta = {"run": {"kind": "task", **task_cmd._options(ns)}, "data": repr(train)}
    trainer = Trainer(model, recorder, train, None, options, out_dir=run_out, meta=meta, print_fn=lambda s: None)
    t0 = time.monotonic()
    try:
        trainer.fit()
    except Exception as exc:  # a loss gone NaN: say so, keep what was measured
        from ..train.trainer import TrainingError

        if not isinstance(exc, TrainingError):
            raise
        print(f"  {label}: training stopped: {exc}", flush=True)
    s, losses, norms = _read_metrics(run_out / "metrics.jsonl")
    last = f", last logged loss {losses[-1]:.4g}" if losses else ""
    print(f"  {label}: {trainer.progress['step']} updates in {time.monotonic() - t0:.0f} s{last}; saved {run_out}",
          flush=True)
    return recorder.finish(), (s, losses), norms


# -- the run -------------------------------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> int:
    if distributed.launched() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # Every rank would train the same probe models and write the same report: one process does the job.
        raise UsageError(f"rnnlab diagnose runs in one process; torchrun started {os.environ['WORLD_SIZE']} "
                         "(WORLD_SIZE). Run it without torchrun (diagnose a DDP run's RUN_DIR from one process)")
    _check(args)
    device = torch_device(args.device, args.threads)
    engine_name(device)
    out = out_dir(args.out, "diagnose")
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: is a file; give a directory")
    try:
        from ..diagnose import report  # noqa: F401 - fail early, before any training, when matplotlib is missing
        report._figure(1, 1)
    except ImportError as exc:
        raise UsageError(str(exc)) from None
    if args.run_dir is not None:
        return _run_dir(args, out, device)
    if args.compare:
        return _compare(args, out, device)
    return _fresh(args, out, device)


def _measure(model, batch, task, args):
    from ..diagnose.measure import measure

    return measure(model, batch, task, horizon_fraction=args.horizon_fraction,
                   jacobian_sequences=args.jacobian_sequences)


def _history_figures(report, history: dict, out: Path, prefix: str, title: str) -> list:
    figs = []
    for (name, layer, d), records in history.items():
        suffix = "" if len(history) == 1 else f"-{name}-l{layer}{'-rev' if d else ''}".replace(".", "_")
        path = report.plot_history(records, out / f"{prefix}{suffix}.png",
                                   title=f"{title}: log10 ||dL/dh_t|| of {name} layer {layer}"
                                   + (" reverse" if d else "") + " over training")
        figs.append((path, f"{title}: the gradient reaching each time step t (columns) at recorded training steps "
                           "(rows); dark = small"))
    return figs


def _write(out: Path, name: str, payload: dict) -> None:
    (out / name).write_text(json.dumps(payload, indent=1), encoding="utf-8")


def _fresh(args, out: Path, device) -> int:
    from ..diagnose import report
    from ..diagnose.verdict import verdict

    cell, init = args.cell or DEFAULTS["cell"], args.init or DEFAULTS["init"]
    steps = args.steps if args.steps is not None else DEFAULTS["steps"]
    ns = _task_namespace(args, cell, init, steps, out / "run" if steps else None)
    train, valid, test, model, task_cls = _setup(ns)
    model.to(device)
    task = task_cls(model, device=device)
    label = f"{cell}{' (' + init + ' init)' if init != 'default' else ''}"
    out.mkdir(parents=True, exist_ok=True)
    history, curve, norms = {}, None, []
    if steps:
        print(f"training {label} on {train.describe()} for {steps} updates ...", flush=True)
        history, curve, norms = _train(ns, model, train, task, out / "run", args.history_every, label)
    batch = _first_batch(valid, args.batch_size)
    diag = _measure(model, batch, task, args)
    v = verdict(diag, grad_norm_history=norms)
    what = f"{label} on the {ns.task} task ({train.describe()}), " + (f"after {steps} updates" if steps else
                                                                       "untrained")
    figs = [(report.plot_decay({label: diag}, out / "decay.png", title=what), "gradient and Jacobian-product decay "
             "against the distance k back in time (log scale)"),
            (report.plot_saturation(diag, out / "saturation.png"), "gate values and their saturated fractions")]
    if curve and curve[0]:
        figs.append((report.plot_losses({label: curve}, out / "loss.png", **_baseline(ns)), "training loss"))
    figs += _history_figures(report, history, out, "history", label)
    _write(out, "diagnostics.json", {"what": what, "diagnostics": diag.to_dict(), "verdict": v.to_dict()})
    html = report.write_html(out / "report.html", f"rnnlab diagnose: {what}", [("verdict", v.text(), figs)],
                             intro=_intro(diag))
    print(f"diagnose: {what}; measured on {len(batch[0])} validation sequences")
    print(v.text())
    print(f"wrote {html} and {len(figs)} figures in {out}")
    return 0


def _baseline(ns) -> dict:
    if ns.task == "adding":
        return {"baseline": Adding.BASELINE_MSE, "baseline_label": "always predicting 1", "ylabel": "training MSE"}
    return {"ylabel": "training loss (cross-entropy)"}


def _intro(diag) -> str:
    return (f"Measured on one batch in eval mode. Horizon fraction {diag.horizon_fraction:g}: the memory horizon is "
            "the first distance k at which ||dL/dh_(T-k)|| / ||dL/dh_T|| falls below it. Saturation thresholds: "
            "sigmoid gates below 0.05 or above 0.95, tanh values with |g| > 0.95. s is the recurrent state: h, or "
            "(h, c) for an LSTM.")


def _compare(args, out: Path, device) -> int:
    """--compare: one length (--length), or several (--lengths T1,T2,...) side by side in one report, each length's
    runs, figures and diagnostics.json in OUT/T<length> when there are several."""
    from ..diagnose import report

    lengths = args.lengths or [args.length]
    out.mkdir(parents=True, exist_ok=True)
    parts = []
    for length in lengths:
        where = out / f"T{length}" if len(lengths) > 1 else out
        parts.append(_compare_one(argparse.Namespace(**{**vars(args), "length": length}), where, device))
    if len(lengths) == 1:
        what, summary, top, sections, runs, verdicts = parts[0]
        html = report.write_html(out / "report.html", f"rnnlab diagnose --compare: {what}",
                                 [("side by side", summary, top)] + sections,
                                 intro=_intro(next(iter(runs.values()))))
    else:
        what = "; ".join(p[0] for p in parts)
        sections = [(f"T = {t}: side by side", f"{p[0]}\n\n{p[1]}", p[2]) for t, p in zip(lengths, parts)]
        sections += [(f"T = {t}, {heading}", text, figs)
                     for t, p in zip(lengths, parts) for heading, text, figs in p[3]]
        html = report.write_html(out / "report.html", "rnnlab diagnose --compare: tanh RNN vs LSTM vs IRNN at T = "
                                 + ", ".join(str(t) for t in lengths), sections,
                                 intro=_intro(next(iter(parts[0][4].values()))))
    for length, (what, summary, _, _, _, verdicts) in zip(lengths, parts):
        print(f"diagnose --compare: {what}")
        print(summary)
        for label, v in verdicts.items():
            print(f"\n== {label} ==")
            print(v.text())
        print()
    print(f"wrote {html} and the figures in {out}")
    return 0


def _compare_one(args, out: Path, device) -> tuple:
    """Train (or not, --steps 0) and measure the three models at one length: (what, summary table, top figures,
    per-model sections, diagnostics, verdicts); writes the figures and diagnostics.json into ``out``."""
    from ..diagnose import report
    from ..diagnose.verdict import verdict

    steps = args.steps if args.steps is not None else DEFAULTS["compare_steps"]
    out.mkdir(parents=True, exist_ok=True)
    runs, curves, verdicts, sections, histories = {}, {}, {}, [], {}
    ns = None
    for label, cell, init in COMPARE:
        slug = label.lower().replace(" ", "-")
        ns = _task_namespace(args, cell, init, steps, out / "runs" / slug if steps else None)
        train, valid, test, model, task_cls = _setup(ns)
        model.to(device)
        task = task_cls(model, device=device)
        if steps:
            print(f"training {label} on {train.describe()} for {steps} updates ...", flush=True)
            history, curve, norms = _train(ns, model, train, task, out / "runs" / slug, args.history_every, label)
            curves[label] = curve
            histories[label] = history
        else:
            norms = []
        batch = _first_batch(valid, args.batch_size)
        diag = _measure(model, batch, task, args)
        runs[label] = diag
        verdicts[label] = verdict(diag, grad_norm_history=norms)
        figs = [(report.plot_saturation(diag, out / f"saturation-{slug}.png", name=label), f"{label}: gate values")]
        figs += _history_figures(report, histories.get(label, {}), out, f"history-{slug}", label)
        sections.append((label, verdicts[label].text(), figs))
    length = f" at T = {ns.length}" if ns.task == "adding" else ""
    what = (f"tanh RNN vs LSTM (chrono init) vs IRNN on the {ns.task} task{length}, "
            + (f"{steps} updates each" if steps else "untrained")
            + f" (batch {ns.batch_size}, lr {ns.lr:g}, clip {ns.clip_norm:g}, hidden {ns.hidden})")
    top = [(report.plot_decay(runs, out / "decay.png", title=what), "gradient (left) and exact Jacobian product "
            "(right) against the distance k back in time, the three models side by side")]
    if curves and any(c[0] for c in curves.values()):
        top.insert(0, (report.plot_losses(curves, out / "loss.png", **_baseline(ns)), "training loss, same budget"))
    summary = _compare_table(runs, verdicts)
    _write(out, "diagnostics.json", {"what": what, "runs": {k: {"diagnostics": d.to_dict(),
                                                                 "verdict": verdicts[k].to_dict()}
                                                             for k, d in runs.items()}})
    return what, summary, top, sections, runs, verdicts


def _compare_table(runs: dict, verdicts: dict) -> str:
    frac = next(iter(runs.values())).horizon_fraction
    lines = [f"{'model':<10} {'verdict':<10} {'horizon k':>10} {'grad x/step':>12} {'||ds_T/ds_0||':>14} "
             f"{'loss':>8}   (horizon: first k with ratio < {frac:g}; '-' = never within T)"]
    for label, d in runs.items():
        layer = d.layers[0]
        h = "-" if layer.horizon is None else str(layer.horizon)
        gf = "n/a" if layer.grad_factor is None else f"{layer.grad_factor:.3g}"
        jn = f"{float(layer.jacobian_norms[-1]):.3g}"
        lines.append(f"{label:<10} {verdicts[label].status:<10} {h:>10} {gf:>12} {jn:>14} {d.loss:>8.4g}")
    return "\n".join(lines)


def _run_dir(args, out: Path, device) -> int:
    from ..diagnose import report
    from ..diagnose.verdict import verdict

    try:
        ckpt = load_checkpoint(args.run_dir, prefer="best")
    except (CheckpointError, OSError, ValueError) as exc:
        raise UsageError(f"RUN_DIR {' '.join(str(exc).split())}") from None
    stored = ckpt.meta.get("run")
    if not isinstance(stored, dict) or stored.get("kind") != "task" or "task" not in stored:
        return _other_run(args, out, device, ckpt)
    if args.text is not None:
        raise UsageError(f"--text: RUN_DIR {ckpt.path} holds {describe(ckpt.meta)}, not a language model; hidden "
                         "states over a text need a run of 'rnnlab train lm'")
    variant = structure.describe(stored) or (f", --cell {stored.get('cell')}" if stored.get("cell", "lstm")
                                             not in CELLS else "")
    if variant:
        raise UsageError(f"RUN_DIR {ckpt.path}: diagnose measures the gradient flow of the plain rnnlab layers "
                         f"({', '.join(CELLS)}, stacked), and this run's model has{variant[1:]}; diagnose a run "
                         "with a plain cell and no --dilations or --skip")
    try:
        model, ckpt = load_sequence_model(ckpt.path, device=device)
    except (CheckpointError, OSError, ValueError) as exc:
        raise UsageError(f"RUN_DIR {' '.join(str(exc).split())}") from None
    ns = argparse.Namespace(**{k: v for k, v in stored.items() if k != "kind"})
    _, valid, test, _, task_cls = _setup(ns)
    data = valid if valid is not None else test
    batch = _first_batch(data, args.batch_size)
    task = task_cls(model, device=device)
    steps, losses, norms = _read_metrics(Path(run_dir(ckpt)) / "metrics.jsonl")
    diag = _measure(model, batch, task, args)
    v = verdict(diag, grad_norm_history=norms)
    step = ckpt.meta.get("trainer", {}).get("step")
    what = (f"{ns.cell} on the {ns.task} task, {ckpt.path.name}/ weights of {run_dir(ckpt)}"
            + (f" (step {step})" if step is not None else ""))
    out.mkdir(parents=True, exist_ok=True)
    figs = [(report.plot_decay({ns.cell: diag}, out / "decay.png", title=what), "gradient and Jacobian-product "
             "decay against the distance k back in time (log scale)"),
            (report.plot_saturation(diag, out / "saturation.png"), "gate values and their saturated fractions")]
    if steps:
        figs.append((report.plot_losses({ns.cell: (steps, losses)}, out / "loss.png", **_baseline(ns)),
                     "training loss (metrics.jsonl)"))
    sections = [("verdict", v.text(), figs)]
    records = read_records(Path(run_dir(ckpt)) / "metrics.jsonl")
    if records:
        sections.append(_training_section(report, records, out))
    _write(out, "diagnostics.json", {"what": what, "diagnostics": diag.to_dict(), "verdict": v.to_dict()})
    html = report.write_html(out / "report.html", f"rnnlab diagnose: {what}", sections, intro=_intro(diag))
    print(f"diagnose: {what}; measured on {len(batch[0])} {'validation' if data is valid else 'test'} sequences")
    print(v.text())
    if records:
        print(f"\n{sections[-1][1]}")
    n_figs = sum(len(sec[2]) for sec in sections)
    print(f"wrote {html} and {n_figs} figures in {out}")
    return 0


# -- any run: diagnostics recorded while training; a language model's hidden states over a text ---------------------
def _other_run(args, out: Path, device, ckpt) -> int:
    """RUN_DIR of a run other than 'rnnlab task': its diagnostics records (--diagnose-every) and, for a language
    model, --text."""
    from ..diagnose import report

    where = Path(run_dir(ckpt))
    records = read_records(where / "metrics.jsonl")
    if args.text is None and not records:
        raise UsageError(f"RUN_DIR {ckpt.path}: holds {describe(ckpt.meta)}, not a run of 'rnnlab task' (diagnose "
                         "regenerates a batch of the run's task from its stored options), and its metrics.jsonl "
                         "holds no diagnostics records; pass a run directory written by 'rnnlab task', a run trained "
                         "with --diagnose-every N, a language model's run with --text, or no RUN_DIR to diagnose a "
                         "fresh model")
    what = f"{describe(ckpt.meta)} in {where}"
    out.mkdir(parents=True, exist_ok=True)
    sections, payload = [], {"what": what}
    if args.text is not None:
        section, payload["hidden_states"] = _hidden_section(args, out, device, ckpt)
        sections.append(section)
    if records:
        sections.append(_training_section(report, records, out))
        payload["training_records"] = len(records)
    _write(out, "diagnostics.json", payload)
    html = report.write_html(out / "report.html", f"rnnlab diagnose: {what}", sections)
    print(f"diagnose: {what}")
    for heading, text, *_ in sections:
        print(f"\n== {heading} ==\n{text}")
    n_figs = sum(len(sec[2]) for sec in sections)
    print(f"\nwrote {html}" + (f" and {n_figs} figures" if n_figs else "") + f" in {out}")
    return 0


def _text_arg(text: str) -> tuple[str, str]:
    """(the text, what it is) of --text: the file's content when the path is a file, else the string itself."""
    path = Path(text)
    try:
        is_file = path.is_file()
    except OSError:  # a string too long or odd to be a path: the text itself
        is_file = False
    if is_file:
        try:
            return read_text(path), str(path)
        except DataError as exc:
            raise UsageError(f"--text {exc}") from None
    if not text:
        raise UsageError("--text is empty; give a text file or the text itself")
    return text, "the text given"


def _hidden_section(args, out: Path, device, ckpt) -> tuple:
    """(report section, JSON summary) of --text: the LM's states over the text, saved to the .npz and coloured."""
    from ..diagnose.hidden import hidden_states, interesting_units, units_html

    try:
        model, vocab, _ = load_lm(ckpt.path, device=device)
    except (CheckpointError, OSError, ValueError) as exc:
        raise UsageError(f"--text needs a language model: RUN_DIR {' '.join(str(exc).split())}") from None
    text, source = _text_arg(args.text)
    try:
        states = hidden_states(model, vocab, text)
    except DataError as exc:
        raise UsageError(f"--text {' '.join(str(exc).split())}") from None
    except ValueError as exc:
        raise UsageError(f"--text: {' '.join(str(exc).split())}") from None
    layer = states.layers - 1 if args.layer is None else args.layer
    if layer >= states.layers:
        raise UsageError(f"--layer {layer}: the model has {states.layers} layer(s), numbered from 0; give --layer "
                         f"0 to {states.layers - 1}")
    try:
        states.values(args.show, layer)
    except ValueError as exc:
        raise UsageError(f"--show {args.show}: {exc}") from None
    H = states.arrays[states.name("h", layer)].shape[1]
    if args.units is not None and max(args.units) >= H:
        raise UsageError(f"--units {','.join(map(str, args.units))}: the layer has {H} units, numbered 0 to {H - 1}")
    chosen = args.units if args.units is not None else interesting_units(states, args.show, layer)
    npz = states.save_npz(Path(args.npz) if args.npz else out / "states.npz")
    block = units_html(states, args.show, layer, chosen)
    how = "chosen" if args.units is not None else f"the {len(chosen)} with the largest variance over the text"
    values = states.values(args.show, layer)
    lines = [f"{len(states.tokens):,} {vocab.level} tokens of {source}; {states.cell} with {states.layers} "
             f"layer(s) of {H} units", f"showing {args.show} of layer {layer}, units {how}:"]
    for u in chosen:
        col = values[:, u]
        lines.append(f"  unit {u:>5}: mean {col.mean():+.3f}, from {col.min():+.3f} to {col.max():+.3f}, "
                     f"variance {col.var():.3g}")
    lines.append(f"every per-token state: {npz} ({', '.join(sorted(states.arrays))})")
    summary = {"tokens": len(states.tokens), "layer": layer, "show": args.show, "units": chosen, "npz": str(npz)}
    return ("hidden states over a text", "\n".join(lines), [], block), summary


def _training_section(report, records: list, out: Path) -> tuple:
    """The report section of the diagnostics recorded while training: a summary, training.png and one heatmap of
    log10 ||dL/dh_t|| (training step x time step) per layer and direction."""
    from ..diagnose.during import history, layer_label

    steps = [r["step"] for r in records]
    norms = [(r["grad_norm"], r["step"]) for r in records if r.get("grad_norm") is not None]
    lines = [f"{len(records)} diagnostics records from metrics.jsonl, steps {steps[0]} to {steps[-1]}"]
    if norms:
        top = max(norms)
        lines.append(f"pre-clip gradient norm: {norms[0][0]:.3g} at step {norms[0][1]}, {norms[-1][0]:.3g} at step "
                     f"{norms[-1][1]}, largest {top[0]:.3g} (step {top[1]})")
    latest = {}  # windows that grow (step 1, then 1..N) count once: the record that closes each
    for r in records:
        if r.get("clip_fraction") is not None:
            latest[r.get("window_from", r["step"])] = (r["clip_fraction"], r.get("window_steps") or 0)
    windows = list(latest.values())
    total = sum(n for _, n in windows)
    if total:
        lines.append(f"updates clipped: {100 * sum(f * n for f, n in windows) / total:.1f}% of the {total} updates "
                     "in the recorded windows")
    last = records[-1]
    for layer in last["layers"]:
        name = layer_label(layer["module"], layer["layer"], layer["direction"])
        first = next((x for r in records for x in r["layers"] if (x["module"], x["layer"], x["direction"])
                      == (layer["module"], layer["layer"], layer["direction"])), layer)
        parts = []
        if (layer.get("spectral_norm") or {}).get("all") is not None:
            parts.append(f"||W_hh||_2 {first['spectral_norm']['all']:.3g} -> {layer['spectral_norm']['all']:.3g}")
        g = layer.get("grad_norms")
        if g and g[0] and g[-1]:  # the first step this direction processes over the last one (reverse: t = 0)
            ratio = g[-1] / g[0] if layer["direction"] else g[0] / g[-1]
            parts.append(f"gradient at its first step / at its last step {ratio:.3g} at step {last['step']}")
        sat = {k: v for k, v in (layer.get("saturation") or {}).items() if v is not None}
        if sat:
            parts.append("saturated " + ", ".join(f"{k} {100 * v:.1f}%" for k, v in sat.items()))
        lines.append(f"{name}: " + "; ".join(parts))
    figs = [(report.plot_training(records, out / "training.png", title="diagnostics recorded while training"),
             "pre-clip gradient norm, clip fraction, W_hh spectral norm and radius, gate saturation over training")]
    hist = history(records)
    for (name, layer, d), rows in hist.items():
        suffix = "" if len(hist) == 1 else f"-{name}-l{layer}{'-rev' if d else ''}".replace(".", "_")
        label = layer_label(name, layer, d)
        path = report.plot_history(rows, out / f"history-training{suffix}.png",
                                   title=f"log10 ||dL/dh_t|| of {label} over training")
        figs.append((path, f"{label}: the gradient reaching each time step t (columns) of the batch at each "
                           "recorded training step (rows); dark = small"))
    return ("diagnostics recorded while training", "\n".join(lines), figs)
