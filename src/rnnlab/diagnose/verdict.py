"""Name what a measurement shows — vanishing, exploding or healthy — with the numbers behind it and the remedies
that fit.

Per direction of each layer, with f = the measurement's ``horizon_fraction`` (default 1e-3):

- **exploding** when the global gradient norm or any measured norm is not finite, or the exact Jacobian product
  ||ds_T/ds_{T-k}||_2 exceeds 1/f at some distance k (a gradient at step T can come back 1/f times larger), or the
  gradient ratio ||dL/dh_{T-k}|| / ||dL/dh_T|| exceeds 1/f;
- **vanishing** otherwise, when the gradient ratio falls below f within the sequence (the effective memory horizon
  is set) or the Jacobian product's norm — the largest gain any gradient can have — falls below f;
- **healthy** otherwise: within the sequence the gradient neither dies nor blows up by a factor 1/f.

The model's verdict is exploding if any layer explodes, else vanishing if any vanishes, else healthy.

Remedies: clipping the global norm at a threshold from the measured norms (Pascanu et al. 2013: about the average
pre-clip norm over many updates; they found 0.5x-10x of it to work alike), gated cells (LSTM/GRU), identity
initialisation with ReLU (IRNN, Le et al. 2015), orthogonal initialisation, the LSTM forget-gate bias (Jozefowicz
et al. 2015), and the truncation length of BPTT against the measured horizon.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from .measure import Diagnostics, LayerDiagnostics

STATUSES = ("vanishing", "exploding", "healthy")
SATURATED_MANY = 0.5  # more than half of a gate's values saturated: worth a remedy of its own
DEAD_MANY = 0.5  # more than half of the ReLU units inactive
SPIKE = 20.0  # a pre-clip norm this many times the median during training: a burst of exploding gradient


@dataclass
class LayerVerdict:
    label: str
    status: str
    numbers: list = field(default_factory=list)  # lines of text, each one measured fact

    def to_dict(self) -> dict:
        return {"label": self.label, "status": self.status, "numbers": list(self.numbers)}


@dataclass
class Verdict:
    """``status`` (one of STATUSES), ``summary`` (one sentence), ``layers`` (a LayerVerdict each), ``numbers``
    (model-level facts) and ``remedies`` (lines of advice, the most fitting first)."""

    status: str
    summary: str
    layers: list
    numbers: list
    remedies: list

    def text(self) -> str:
        lines = [f"verdict: {self.status.upper()} — {self.summary}", "numbers:"]
        lines += [f"  {n}" for n in self.numbers]
        for lv in self.layers:
            lines.append(f"  {lv.label}: {lv.status}")
            lines += [f"    {n}" for n in lv.numbers]
        lines.append("remedies:" if self.remedies else "remedies: none needed")
        lines += [f"  - {r}" for r in self.remedies]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"status": self.status, "summary": self.summary, "numbers": list(self.numbers),
                "layers": [lv.to_dict() for lv in self.layers], "remedies": list(self.remedies)}


def _g(v) -> str:
    if v is None:
        return "n/a"
    v = float(v)
    if not math.isfinite(v):
        return str(v)
    return f"{v:.3g}" if 1e-3 <= abs(v) < 1e4 or v == 0 else f"{v:.2e}"


def _first(curve, pred, ks=None) -> int | None:
    """The first distance k (``ks[i]``, default i) whose value satisfies ``pred``."""
    for i, v in enumerate(curve.tolist()):
        if pred(v):
            return int(ks[i]) if ks is not None else i
    return None


def _finite(t) -> bool:
    return bool(t.isfinite().all()) if t.numel() else True


def _classify(layer: LayerDiagnostics, fraction: float) -> tuple[str, dict]:
    big = 1.0 / fraction
    jac, dec = layer.jacobian_norms, layer.decay
    facts = {
        "jac_explode_k": _first(jac, lambda v: not math.isfinite(v) or v > big, layer.jacobian_distances),
        "jac_vanish_k": _first(jac, lambda v: v < fraction, layer.jacobian_distances),
        "grad_explode_k": _first(dec, lambda v: not math.isfinite(v) or v > big),
        "finite": _finite(jac) and _finite(dec) and _finite(layer.grad_norms),
    }
    if not facts["finite"] or facts["jac_explode_k"] is not None or facts["grad_explode_k"] is not None:
        return "exploding", facts
    if layer.horizon is not None or facts["jac_vanish_k"] is not None:
        return "vanishing", facts
    return "healthy", facts


def _layer_numbers(layer: LayerDiagnostics, fraction: float, facts: dict) -> list[str]:
    out = []
    dec, jac = layer.decay, layer.jacobian_norms
    K = len(dec) - 1
    if float(dec.abs().sum()) == 0:
        out.append("no gradient reaches this layer's states (||dL/dh_t|| = 0 at every step)")
    elif layer.horizon is not None:
        out.append(f"||dL/dh_(T-k)|| / ||dL/dh_T|| falls below {fraction:g} at k = {layer.horizon} (effective memory "
                   f"horizon; T = {len(dec)} steps); x{_g(layer.grad_factor)} per step on average")
    else:
        out.append(f"||dL/dh_(T-k)|| / ||dL/dh_T|| stays above {fraction:g} over all {len(dec)} steps "
                   f"(at k = {K}: {_g(dec[-1])}, largest {_g(dec.max())}); x{_g(layer.grad_factor)} per step")
    ks = layer.jacobian_distances.tolist()
    n_seq = layer.jacobian_per_sequence.shape[0]
    mid = min(range(len(ks)), key=lambda i: abs(ks[i] - 10))
    out.append(f"||ds_T/ds_(T-k)||_2 (exact Jacobian product, median of {n_seq} sequences): {_g(jac[mid])} at "
               f"k = {ks[mid]}, {_g(jac[-1])} at k = {ks[-1]}; x{_g(layer.jacobian_factor)} per step"
               + (f"; passes {1 / fraction:g} at k = {facts['jac_explode_k']}" if facts["jac_explode_k"] is not None
                  else "")
               + (f"; below {fraction:g} from k = {facts['jac_vanish_k']}" if facts["jac_vanish_k"] is not None
                  else ""))
    if layer.cell.startswith("rnn_"):
        out.append(f"W_hh: spectral norm {_g(layer.spectral_norm['W_hh'])}, spectral radius "
                   f"{_g(layer.spectral_radius['W_hh'])}")
    else:
        blocks = ", ".join(f"{g} {_g(layer.spectral_norm[g])}/{_g(layer.spectral_radius[g])}"
                           for g in layer.spectral_radius)
        out.append(f"W_hh per gate, spectral norm/radius: {blocks}; whole W_hh spectral norm "
                   f"{_g(layer.spectral_norm['all'])}")
    sat = ", ".join(f"{g} {100 * v:.1f}%" for g, v in layer.saturation.items())
    what = "inactive ReLU units (z <= 0)" if layer.cell == "rnn_relu" else "saturated gate values"
    out.append(f"{what}: {sat}")
    return out


def _round_sig(v: float) -> float:
    if v <= 0 or not math.isfinite(v):
        return v
    return float(f"{v:.2g}")


def _mean(layer: LayerDiagnostics, gate: str) -> float | None:
    s = layer.gate_samples.get(gate)
    return float(s.double().mean()) if s is not None and s.numel() else None


def verdict(diag: Diagnostics, *, grad_norm_history=None, truncation: int | None = None) -> Verdict:
    """The verdict on ``diag`` (from ``measure``). ``grad_norm_history``: pre-clip global gradient norms seen
    during training (e.g. the ``grad_norm`` records of ``metrics.jsonl``), for the clipping threshold; without it
    the norm measured on this batch stands in. ``truncation``: the BPTT truncation length in use, if any."""
    fraction = diag.horizon_fraction
    layer_verdicts, classified = [], []
    for layer in diag.layers:
        status, facts = _classify(layer, fraction)
        classified.append((layer, status, facts))
        layer_verdicts.append(LayerVerdict(f"{layer.label} ({layer.cell}, H={layer.hidden})", status,
                                           _layer_numbers(layer, fraction, facts)))
    statuses = [s for _, s, _ in classified]
    finite_norm = math.isfinite(diag.grad_norm)
    if not finite_norm or "exploding" in statuses:
        status = "exploding"
    elif "vanishing" in statuses:
        status = "vanishing"
    else:
        status = "healthy"

    history = [float(v) for v in (grad_norm_history or []) if v is not None and math.isfinite(float(v))]
    numbers = [f"loss {_g(diag.loss)} on a batch of sequences of up to T = {diag.length} steps",
               f"global gradient norm before clipping: {_g(diag.grad_norm)}"
               + (f" (during training: median {_g(sorted(history)[len(history) // 2])}, largest {_g(max(history))} "
                  f"over {len(history)} records)" if history else "")]

    # The summary sentence names the worst layer.
    if status == "exploding":
        worst = [(layer, f) for layer, s, f in classified if s == "exploding"]
        if not finite_norm or not worst:
            summary = "the gradient norm is not finite"
        else:
            layer, f = worst[0]
            k = f["jac_explode_k"] if f["jac_explode_k"] is not None else f["grad_explode_k"]
            summary = (f"in {layer.label} the gradient can grow by more than {1 / fraction:g}x within {k} steps back "
                       f"through time (x{_g(layer.jacobian_factor)} per step)" if k is not None else
                       f"{layer.label} has non-finite gradient norms")
    elif status == "vanishing":
        layer, f = next((layer, f) for layer, s, f in classified if s == "vanishing")
        k = layer.horizon if layer.horizon is not None else f["jac_vanish_k"]
        summary = (f"in {layer.label} the gradient falls below {fraction:g} of its value at the last step within "
                   f"{k} steps (x{_g(layer.grad_factor if layer.horizon is not None else layer.jacobian_factor)} "
                   f"per step); dependencies longer than that get no learning signal")
    else:
        summary = (f"the gradient neither falls below {fraction:g} nor grows beyond {1 / fraction:g}x over the "
                   f"{diag.length} steps of the batch")

    remedies = _remedies(diag, classified, status, history, truncation)
    return Verdict(status, summary, layer_verdicts, numbers, remedies)


def _remedies(diag: Diagnostics, classified, status: str, history: list, truncation: int | None) -> list[str]:
    fraction = diag.horizon_fraction
    cells = {layer.cell for layer, _, _ in classified}
    out: list[str] = []
    if status == "exploding":
        typical = (sorted(history)[len(history) // 2] if history else diag.grad_norm)
        if math.isfinite(typical) and typical > 0:
            src = (f"the median pre-clip norm over {len(history)} training records is {_g(typical)}" if history else
                   f"the norm measured on this batch is {_g(typical)} (an exploding batch inflates it: prefer the "
                   "average over many updates, the grad_norm records of metrics.jsonl)")
            out.append(f"clip the global gradient norm at about the typical pre-clip norm ({src}): --clip-norm "
                       f"{_g(_round_sig(typical))}; Pascanu et al. 2013 found thresholds from 0.5x to 10x the "
                       f"average norm to work alike (here {_g(_round_sig(0.5 * typical))} to "
                       f"{_g(_round_sig(10 * typical))})")
        else:
            out.append("clip the global gradient norm (--clip-norm, e.g. 1) and lower the learning rate: the "
                       "gradient is not finite, so no threshold can be derived from it")
        ks = [f["jac_explode_k"] for _, s, f in classified if s == "exploding" and f["jac_explode_k"] is not None]
        if ks:
            out.append(f"shorter truncation: the Jacobian product passes {1 / fraction:g} after {min(ks)} steps; "
                       f"truncated BPTT with k2 of about {max(1, min(ks))} steps (rnnlab.tbptt) bounds the product's "
                       "length and with it the blow-up")
        if cells & {"rnn_tanh", "rnn_relu"}:
            radius = max(layer.spectral_radius.get("W_hh", 0.0) for layer, _, _ in classified)
            out.append(f"bring W_hh's spectral radius (now up to {_g(radius)}) to 1: orthogonal initialisation "
                       "(--init orthogonal, rnnlab.init.orthogonal_), or a gated cell (--cell lstm or gru)")
        out.append("lower the learning rate if the loss spikes even with clipping")
        return out
    if status == "vanishing":
        vanishing = [(layer, f) for layer, s, f in classified if s == "vanishing"]
        if "rnn_tanh" in {layer.cell for layer, _ in vanishing}:
            out.append("use a gated cell (--cell lstm or --cell gru): the LSTM's cell state is carried by the forget "
                       "gate alone, without a W_hh·tanh' factor per step, so its gradient can survive hundreds of steps")
            out.append("or an IRNN: ReLU with identity initialisation (--cell rnn_relu --init identity; Le et al. "
                       "2015): each step starts as the identity map, so the product starts at 1")
            out.append("orthogonal initialisation (--init orthogonal) puts every singular value of W_hh at 1, so "
                       "only tanh' shrinks the product")
        for layer, _ in vanishing:
            if layer.cell == "rnn_relu":
                dead = layer.saturation.get("relu", 0.0)
                radius = layer.spectral_radius.get("W_hh", 0.0)
                if radius < 0.9:
                    out.append(f"{layer.label}: W_hh's spectral radius is {_g(radius)}; identity initialisation "
                               "(--init identity) starts it at 1")
                if dead > DEAD_MANY:
                    out.append(f"{layer.label}: {100 * dead:.0f}% of the ReLU units are inactive and pass no "
                               "gradient; lower the learning rate or use a gated cell")
            if layer.cell == "lstm":
                f_mean = _mean(layer, "f")
                if f_mean is not None and f_mean < 0.9:
                    per = f_mean
                    out.append(f"{layer.label}: the forget gate averages {_g(f_mean)}, so the cell state keeps only "
                               f"~{_g(per)}^k of itself after k steps; initialise the forget-gate bias to 1 "
                               "(rnnlab.init.forget_bias_(lstm, 1.0); Jozefowicz et al. 2015) or higher for longer "
                               "memories")
            if layer.cell == "gru":
                z_mean = _mean(layer, "z")
                if z_mean is not None and z_mean < 0.9:
                    out.append(f"{layer.label}: the update gate z averages {_g(z_mean)} (the state keeps z of "
                               "itself each step); a positive bias on z's rows lengthens the memory")
        horizons = [layer.horizon for layer, _ in vanishing if layer.horizon is not None]
        if horizons:
            h = min(horizons)
            out.append(f"truncation: the gradient is gone {h} steps back, so backpropagating through more than ~{h} "
                       f"steps (TBPTT k2 > {h}) costs compute for no signal — and a dependency spanning more than "
                       f"{h} steps cannot be learnt until the decay is fixed by the remedies above")
    else:
        if truncation is not None and truncation < diag.length:
            out.append(f"the gradient still carries {fraction:g} of its value after {diag.length - 1} steps: a "
                       f"longer truncation than the current {truncation} steps would let it reach further back")
        elif all(layer.horizon is None for layer, _, _ in classified):
            out.append(f"the gradient survives the whole sequence (T = {diag.length}): longer sequences or a longer "
                       "BPTT truncation can use a longer memory; measure again at the length you train on")
    if history and status != "exploding":
        median = sorted(history)[len(history) // 2]
        if median > 0 and max(history) > SPIKE * median:
            out.append(f"during training the pre-clip gradient norm reached {_g(max(history))}, "
                       f"{max(history) / median:.0f}x its median {_g(median)}: occasional exploding gradients "
                       f"(Pascanu et al. 2013) even though this batch looks {status}; keep clipping on (about "
                       f"--clip-norm {_g(_round_sig(median))}, the median norm)")
    for layer, _, _ in classified:
        for g, v in layer.saturation.items():
            if layer.gate_kinds.get(g) in ("sigmoid", "tanh") and v > SATURATED_MANY:
                out.append(f"{layer.label}: {100 * v:.0f}% of the {g} values are saturated (derivative under a "
                           "tenth to a fifth of its peak): scale the inputs down, lower the learning rate, or "
                           "normalise the pre-activations")
    return out
