"""``rnnlab diagnose``: see how the gradient flows back through time — does it vanish, explode, or reach far back? —
in a trained run of 'rnnlab task' or in a fresh model on a built-in task, and write the figures and one HTML report.

It measures on one batch: ||dL/dh_t|| at every step (the probe), its decay with the distance k from the last step
and the effective memory horizon, the exact Jacobian product ||ds_T/ds_(T-k)||, the spectral norm and radius of
W_hh, the saturated gate fractions and the global gradient norm; then it names the verdict (vanishing, exploding,
healthy) with the numbers and the remedies that fit (clipping threshold, gated cells, IRNN, truncation). --compare
trains a tanh RNN, an LSTM and an IRNN with the same budget and sets their loss and gradient-decay curves side by
side.

Writes to --out: decay.png (gradient and Jacobian-product decay against k), saturation.png (gate histograms),
loss.png and history*.png (training loss; a heatmap of log ||dL/dh_t|| over training steps x time steps) when it
trained, diagnostics.json (every number) and report.html (everything, self-contained). The verdict goes to stdout.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from ..data.synthetic import Adding
from ..engine.probe import probe
from ..models.lm import CELLS
from ..models.classifier import INITS
from ..train.checkpoint import CheckpointError
from ..train.compat import describe
from ..train.supervised import load_sequence_model
from ..train.trainer import Trainer
from . import task as task_cmd
from .common import engine_name, out_dir, refuse_existing_run, run_dir, torch_device, train_options
from .options import UsageError, float_range, int_range

TASKS = task_cmd.SYNTHETIC  # generated on the fly: nothing to download
# --compare: the three classic answers to the adding problem (Le et al. 2015 compare exactly these).
COMPARE = (("tanh RNN", "rnn_tanh", "default"), ("LSTM", "lstm", "default"), ("IRNN", "rnn_relu", "identity"))
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
"""


def add_parser(subparsers, parents) -> argparse.ArgumentParser:
    p = subparsers.add_parser("diagnose", parents=parents, help="see how the gradient flows back through time: "
                              "vanishing, exploding or healthy, with figures and an HTML report",
                              description=__doc__.split("\n\n")[0].replace("``", "'"), epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", nargs="?", metavar="RUN_DIR", help="a run directory (or its best/ or last/) of "
                   "'rnnlab task'; without it, a fresh model on --task")
    g = p.add_argument_group("a fresh model (no RUN_DIR)")
    g.add_argument("--task", choices=TASKS, default=None, help=f"the built-in task (default: {DEFAULTS['task']})")
    g.add_argument("--cell", choices=CELLS, default=None, help=f"recurrent cell (default: {DEFAULTS['cell']})")
    g.add_argument("--init", choices=INITS, default=None, help="recurrent weights: torch.nn's default, orthogonal, "
                   "or identity (IRNN: with --cell rnn_relu)")
    g.add_argument("--length", type=int_range(2, 100_000), default=None, metavar="T", help="sequence length "
                   "(adding: T, default 100; parity: strings of exactly T symbols; copy: T = 2 x symbols + delay + 1)")
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
    g = p.add_argument_group("output")
    g.add_argument("--out", metavar="DIR", default=None, help="where the PNGs, diagnostics.json and report.html go "
                   "(default: runs/diagnose-<time>)")
    g.add_argument("--device", default="cpu", metavar="DEV", help="torch device (default: cpu)")
    g.add_argument("--threads", type=int_range(1, 1024), default=None, metavar="N",
                   help="torch CPU threads (default: torch's)")
    p.set_defaults(run=run)
    return p


# -- the model flags -----------------------------------------------------------------------------------------------
MODEL_FLAGS = ("task", "cell", "init", "length", "hidden", "layers", "steps", "lr", "clip_norm", "seed")


def _check(args) -> None:
    given = [k for k in MODEL_FLAGS if getattr(args, k) is not None]
    if args.run_dir is not None:
        if args.compare:
            raise UsageError("--compare trains its own three models; drop RUN_DIR or --compare")
        if given:
            raise UsageError(f"RUN_DIR is diagnosed with its own options; drop --{given[0].replace('_', '-')} (it "
                             "applies to a fresh model, without RUN_DIR)")
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
    what = (f"tanh RNN vs LSTM vs IRNN on the {ns.task} task, " + (f"{steps} updates each" if steps else "untrained")
            + f" (batch {ns.batch_size}, lr {ns.lr:g}, clip {ns.clip_norm:g}, hidden {ns.hidden})")
    top = [(report.plot_decay(runs, out / "decay.png", title=what), "gradient (left) and exact Jacobian product "
            "(right) against the distance k back in time, the three models side by side")]
    if curves and any(c[0] for c in curves.values()):
        top.insert(0, (report.plot_losses(curves, out / "loss.png", **_baseline(ns)), "training loss, same budget"))
    summary = _compare_table(runs, verdicts)
    _write(out, "diagnostics.json", {"what": what, "runs": {k: {"diagnostics": d.to_dict(),
                                                                 "verdict": verdicts[k].to_dict()}
                                                             for k, d in runs.items()}})
    html = report.write_html(out / "report.html", f"rnnlab diagnose --compare: {what}",
                             [("side by side", summary, top)] + sections, intro=_intro(next(iter(runs.values()))))
    print(f"diagnose --compare: {what}")
    print(summary)
    for label, v in verdicts.items():
        print(f"\n== {label} ==")
        print(v.text())
    print(f"\nwrote {html} and the figures in {out}")
    return 0


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
        model, ckpt = load_sequence_model(args.run_dir, prefer="best", device=device)
    except (CheckpointError, OSError, ValueError) as exc:
        raise UsageError(f"RUN_DIR {' '.join(str(exc).split())}") from None
    stored = ckpt.meta.get("run")
    if not isinstance(stored, dict) or stored.get("kind") != "task" or "task" not in stored:
        raise UsageError(f"RUN_DIR {ckpt.path}: holds {describe(ckpt.meta)}, not a run of 'rnnlab task' (diagnose "
                         "regenerates a batch of the run's task from its stored options); pass a run directory "
                         "written by 'rnnlab task', or no RUN_DIR to diagnose a fresh model")
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
    _write(out, "diagnostics.json", {"what": what, "diagnostics": diag.to_dict(), "verdict": v.to_dict()})
    html = report.write_html(out / "report.html", f"rnnlab diagnose: {what}", [("verdict", v.text(), figs)],
                             intro=_intro(diag))
    print(f"diagnose: {what}; measured on {len(batch[0])} {'validation' if data is valid else 'test'} sequences")
    print(v.text())
    print(f"wrote {html} and {len(figs)} figures in {out}")
    return 0
