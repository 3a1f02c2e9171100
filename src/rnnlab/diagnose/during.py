"""Diagnostics while training: every N steps, how the gradient flows back through time on that step's own batch.

    from rnnlab.diagnose.during import TrainingDiagnostics
    Trainer(model, task, train, valid, options, out_dir=out, callbacks=[TrainingDiagnostics(model, every=100)])

``rnnlab train ... --diagnose-every N [--tensorboard DIR]`` (and ``rnnlab task ...``) adds it. At steps 1, N, 2N,
... (the trainer's step count after the update, as in its other records) one ``{"kind": "diagnostics", ...}`` record
goes to metrics.jsonl:

- ``layers``: per rnnlab layer, layer index and direction (``module``, ``layer``, ``direction``, ``cell``):
  ``grad_norms`` — ||dL/dh_t|| for every time step t of the batch (real time; 6 significant digits), read off the
  ordinary backward pass by ``rnnlab.probe`` (no second forward or backward; a layer run several times in one batch,
  e.g. a decoder step by step, has its calls concatenated in forward order, ``calls`` says how many);
  ``spectral_norm`` / ``spectral_radius`` of each gate's H x H block of W_hh and the norm of the whole W_hh ("all")
  (``measure.weight_spectra``); ``saturation`` — the fraction of saturated gate values per gate type (thresholds:
  ``measure.SIGMOID_LOW``/``SIGMOID_HIGH``/``TANH_HIGH``), from a float64 replay (``measure.replay``, no autograd)
  of the layer on the first ``saturation_sequences`` sequences of the batch.
- ``grad_norm``: the global gradient norm before clipping, ``clipped``: whether clipping changed it, ``loss``,
  ``lr``; ``clip_fraction``: the share of the window's updates that were clipped — the window runs from step
  ``window_from`` to this one (the steps since the last multiple of N in this call of ``fit``, so with N equal to
  --log-every it is the "train" record's clip_fraction; the step-1 record's window is step 1, and the step-N
  record's includes it again), ``window_steps`` counts its updates (skipped batches are not updates);
  ``fault``: the trainer's fault kind when the batch was skipped (then no backward ran: ``grad_norms`` is null).
- ``seconds``: the wall time the diagnostics themselves took at this step.

Everything describes the start of that step: the weights before its update and the gradient of its batch. The
spectra and the replay are taken after the backward pass and before ``optimizer.step()`` (the step context's exit).

With ``tensorboard_dir`` the same numbers go to TensorBoard as scalars (``torch.utils.tensorboard``; needs the
``tensorboard`` package, ``MissingTensorBoard`` says how to install it), plus the ratio of ||dL/dh_t|| at the first
step a direction processes to that at its last, and a histogram of log10 ||dL/dh_t|| over t.
``read_records`` / ``history`` read the records back for ``rnnlab diagnose`` (the heatmap over training).
"""
from __future__ import annotations

import importlib.util
import json
import math
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from ..engine.probe import probe
from .measure import SATURATION_GATES, cell_kind, gate_saturation, replay, rnn_modules, weight_spectra

# Every 100 steps: the trainer's default --log-every, so one diagnostics record falls on each "train" record and
# their clip fractions cover the same updates; and the cost of a record (the spectra of every W_hh and a small
# replay: ~0.35 s for a 2 x 256 LSTM) is a few percent of 100 steps: +2.3% at 150 ms CPU steps, +4.2% at 81 ms GPU
# steps (benchmarks/diagnose_overhead.py).
DEFAULT_EVERY = 100
# Gate saturation is replayed on 4 sequences of the batch: 4 x T x H gate values per gate (65k for T = 64, H = 256)
# pin a fraction down to well under a percent, at an eighth of the cost of replaying a 32-sequence batch.
SATURATION_SEQUENCES = 4
# A layer run many times in one batch (a decoder step by step) is replayed for its first 64 calls only.
MAX_REPLAY_CALLS = 64
DIGITS = 6  # significant digits kept of each ||dL/dh_t||: plenty for a log-scale heatmap, half the JSON


class MissingTensorBoard(ImportError):
    """The tensorboard package is not installed; the message says how to get it."""


def tensorboard_available() -> bool:
    return importlib.util.find_spec("tensorboard") is not None


def _round(v: float) -> float | None:
    v = float(v)
    return float(f"{v:.{DIGITS}g}") if math.isfinite(v) else None


def _slice(inp, hx, n: int, batch_first: bool):
    """(input, hx) of the first ``n`` sequences of what a layer was called with (detached)."""
    def cut_state(s):  # (L*D, B, H), or (L*D, H) unbatched
        return s.detach()[:, :n] if s.dim() == 3 else s.detach()

    if hx is not None:
        hx = tuple(cut_state(s) for s in hx) if isinstance(hx, (tuple, list)) else cut_state(hx)
    if isinstance(inp, PackedSequence):
        x, lengths = pad_packed_sequence(inp)  # (T, B, I) in the caller's batch order
        x, lengths = x.detach()[:, :n], lengths[:n]  # (T, n, I)
        return pack_padded_sequence(x, lengths, enforce_sorted=False), hx
    x = inp.detach()
    if x.dim() == 3:
        x = x[:n] if batch_first else x[:, :n]  # (n, T, I) or (T, n, I)
    return x, hx


class _Watch:
    """The context around one recorded batch: a probe, and forward hooks keeping each rnnlab layer's input for the
    replay. On exit (backward done, update not yet applied) it takes the spectra and gate saturation."""

    def __init__(self, owner: TrainingDiagnostics) -> None:
        self.owner = owner
        self.calls: dict[int, list] = {}
        self.handles = []
        self.probe = None
        self.layers: dict | None = None
        self.seconds = 0.0

    def __enter__(self):
        t0 = time.perf_counter()
        o = self.owner

        def hook(module, args, kwargs, output):
            calls = self.calls.setdefault(id(module), [])
            if len(calls) < MAX_REPLAY_CALLS:
                inp = args[0] if args else kwargs.get("input")
                hx = args[1] if len(args) > 1 else kwargs.get("hx")
                calls.append(_slice(inp, hx, o.saturation_sequences, module.batch_first))

        self.handles = [m.register_forward_hook(hook, with_kwargs=True) for _, m in o.modules]
        self.probe = probe(o.model).__enter__()
        self.seconds += time.perf_counter() - t0
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        t0 = time.perf_counter()
        self.probe.__exit__(exc_type, exc, tb)
        for h in self.handles:
            h.remove()
        if exc_type is None:
            self.layers = self.owner._measure(self.probe, self.calls)
        self.calls = {}
        self.seconds += time.perf_counter() - t0


class TrainingDiagnostics:
    """A trainer callback (``Trainer(..., callbacks=[...])``): every ``every`` steps, the gradient through time,
    the pre-clip norm and clipping, the W_hh spectra and the gate saturation of ``model``'s rnnlab layers, as a
    ``{"kind": "diagnostics", ...}`` record for metrics.jsonl (module docstring) and, with ``tensorboard_dir``,
    TensorBoard scalars.

    Args:
        model: the model the trainer trains (its rnnlab RNN/LSTM/GRU layers are watched).
        every: record at step 1 and every ``every`` steps (default ``DEFAULT_EVERY``, the reason is there).
        tensorboard_dir: also write TensorBoard event files there (needs the ``tensorboard`` package).
        saturation_sequences: sequences of the batch replayed for the gate saturation.
    """

    def __init__(self, model: nn.Module, every: int = DEFAULT_EVERY, tensorboard_dir: str | Path | None = None,
                 saturation_sequences: int = SATURATION_SEQUENCES) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be an integer >= 1 (steps between diagnostics records); got {every!r}")
        if isinstance(saturation_sequences, bool) or not isinstance(saturation_sequences, int) \
                or saturation_sequences < 1:
            raise ValueError(f"saturation_sequences must be an integer >= 1; got {saturation_sequences!r}")
        self.model, self.every, self.saturation_sequences = model, every, saturation_sequences
        self.modules = rnn_modules(model)
        if not self.modules:
            raise ValueError(f"{type(model).__name__} contains no rnnlab recurrent layer (rnnlab.RNN, LSTM or GRU); "
                             "there is no gradient through time to watch")
        self.writer = None
        if tensorboard_dir is not None:
            if not tensorboard_available():
                raise MissingTensorBoard("TensorBoard logging needs the tensorboard package: pip install tensorboard")
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(tensorboard_dir))
        self._watch: _Watch | None = None
        self._window = {"from": None, "steps": 0, "clipped": 0}  # the updates since the last multiple of `every`

    # -- the trainer's hooks ---------------------------------------------------------------------------------------
    def _records(self, step: int) -> bool:
        return step == 1 or step % self.every == 0

    def step_context(self, trainer):
        if not self._records(trainer.progress["step"] + 1):  # the step this batch will become
            return None
        self._watch = _Watch(self)
        return self._watch

    def after_step(self, trainer, info: dict) -> dict | None:
        if self._window["from"] is None:
            self._window["from"] = info["step"]
        if info["fault"] is None:
            self._window["steps"] += 1
            self._window["clipped"] += int(bool(info["clipped"]))
        watch, self._watch = self._watch, None
        if watch is None:
            return None
        t0 = time.perf_counter()
        steps, clipped = self._window["steps"], self._window["clipped"]
        rec = {"kind": "diagnostics", "step": info["step"], "epoch": info["epoch"], "batch": info["batch"],
               "loss": info["loss"], "lr": trainer.progress.get("lr"),
               "grad_norm": info["grad_norm"] if info["fault"] is None else None, "clipped": bool(info["clipped"]),
               "clip_fraction": clipped / steps if steps else None, "window_steps": steps,
               "window_from": self._window["from"], "fault": info["fault"],
               "layers": watch.layers or []}
        if info["step"] % self.every == 0:
            self._window = {"from": None, "steps": 0, "clipped": 0}
        if self.writer is not None:
            self._tensorboard(rec)
        rec["seconds"] = round(watch.seconds + time.perf_counter() - t0, 4)
        return rec

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    # -- measuring -------------------------------------------------------------------------------------------------
    def _measure(self, p: probe, calls: dict) -> list[dict]:
        """The per-layer part of a record, after the backward pass of the watched batch."""
        norms: dict = {}
        for key, n in p.calls:  # forward order: successive calls of one layer concatenate along time
            norms.setdefault(key, []).append(n.detach().double().cpu())
        out = []
        for name, module in self.modules:
            try:
                kind = cell_kind(module)
            except TypeError:  # a layer kind measure does not replay: its gradient norms only
                kind = None
            if not calls.get(id(module)) and not any(k[0] == name for k in norms):
                continue  # not used by this batch
            runs = [replay(module, inp, hx) for inp, hx in calls.get(id(module), [])] if kind else []
            for layer in range(module.num_layers):
                for d in range(module.num_directions):
                    s_norm, s_radius, sat = {}, {}, {}
                    if kind is not None:
                        s_norm, s_radius = weight_spectra(module._weights(layer, d)[1], kind)
                        gates = {}
                        for g in SATURATION_GATES[kind]:
                            vals = [r[(layer, d)].gates[g][r[(layer, d)].mask] for r in runs]  # valid steps only
                            gates[g] = torch.cat([v.reshape(-1) for v in vals]) if vals else torch.zeros(0)
                        sat = gate_saturation(gates, SATURATION_GATES[kind])
                    parts = norms.get((name, layer, d))
                    g_norms = None if parts is None else [_round(v) for v in torch.cat(parts).tolist()]
                    out.append({"module": name, "layer": layer, "direction": d, "cell": kind,
                                "grad_norms": g_norms, "calls": len(parts or ()),
                                "spectral_norm": {k: _round(v) for k, v in s_norm.items()},
                                "spectral_radius": {k: _round(v) for k, v in s_radius.items()},
                                "saturation": {k: _round(v) for k, v in sat.items()}})
        return out

    def _tensorboard(self, rec: dict) -> None:
        w, step = self.writer, rec["step"]
        for k in ("loss", "grad_norm", "clip_fraction"):
            if rec.get(k) is not None:
                w.add_scalar(f"diagnostics/{k}", rec[k], step)
        for layer in rec["layers"]:
            tag = f"{layer['module']}/l{layer['layer']}" + ("_reverse" if layer["direction"] else "")
            for what in ("spectral_norm", "spectral_radius", "saturation"):
                for k, v in layer[what].items():
                    if v is not None:
                        w.add_scalar(f"{what}/{tag}/{k}", v, step)
            g = layer["grad_norms"]
            if g:
                first, last = (g[-1], g[0]) if layer["direction"] else (g[0], g[-1])  # in processing order
                if first and last:  # how much of the gradient that enters at the last step reaches the first
                    w.add_scalar(f"grad_ratio_first_last/{tag}", first / last, step)
                logs = torch.tensor([math.log10(v) for v in g if v], dtype=torch.float64)
                if logs.numel():
                    w.add_histogram(f"log10_grad_norm_over_t/{tag}", logs, step)
        w.flush()


# -- reading the records back --------------------------------------------------------------------------------------
def read_records(path: str | Path) -> list[dict]:
    """The ``{"kind": "diagnostics"}`` records of a metrics.jsonl (or of a run directory's), in step order; empty
    when there is none. A damaged line is skipped (a run killed mid-write leaves at most one)."""
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.jsonl"
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and rec.get("kind") == "diagnostics" and isinstance(rec.get("layers"), list):
            out.append(rec)
    return sorted(out, key=lambda r: r.get("step", 0))


def layer_label(module: str, layer: int, direction: int) -> str:
    return f"{module} layer {layer}" + (" reverse" if direction else "")


def history(records: list[dict]) -> dict:
    """{(module, layer, direction): [(training step, tensor (T,) of ||dL/dh_t||), ...]} from diagnostics records
    (``report.plot_history``'s input); records without gradient norms (a skipped batch) are left out. A missing
    value (null: not finite) becomes NaN."""
    out: dict = {}
    for rec in records:
        for layer in rec["layers"]:
            g = layer.get("grad_norms")
            if not g:
                continue
            key = (layer["module"], layer["layer"], layer["direction"])
            norms = torch.tensor([math.nan if v is None else v for v in g], dtype=torch.float64)
            out.setdefault(key, []).append((rec["step"], norms))
    return out


__all__ = ["DEFAULT_EVERY", "MissingTensorBoard", "TrainingDiagnostics", "history", "layer_label", "read_records",
           "tensorboard_available"]
